"""Knowledge-base console and unanswered queue (session 11, second pass): conflicts, paging, the queue after a
save, percentages in spreadsheets."""

from __future__ import annotations

import html
import re

import openpyxl
import pytest

from knowledge.loaders import load_file
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import KBEntry, UnansweredQuestion


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


def test_a_percentage_cell_in_an_xlsx_is_imported_as_the_sheet_shows_it(tmp_path):
    """A 支持内容 cell typed as 30% (Excel stores 0.3 and formats it 百分比) was imported as “0.3”: the bot would
    answer 补贴比例 0.3. A percentage-formatted number is read as the text the sheet shows."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.append(["id", "question", "answer", "benefit", "window"])
    ws.append(["p1", "补贴比例是多少", "按投入给予补贴。", 0.3, 0.125])
    ws.append(["p2", "另一个问题", "另一个答案。", 0.5, 7])
    ws["D2"].number_format = "0%"
    ws["E2"].number_format = "0.0%"
    ws["D3"].number_format = "0.00%"
    path = tmp_path / "kb.xlsx"
    book.save(path)
    entries = {e.id: e for e in load_file(path)}
    assert entries["p1"].benefit == "30%"
    assert entries["p1"].window == "12.5%"
    assert entries["p2"].benefit == "50.00%"
    assert entries["p2"].window == "7"  # a plain number stays as it was


def test_the_unanswered_queue_pages_through_every_question_with_suggestions(client, kb, make_staff, console_login,
                                                                          db):
    """The queue showed the 200 most asked questions and no more (nothing said there were others), and suggested
    entries for the first 50 only. It now pages (with the counts of each tab and of pages), and every question on
    the page shown has its suggestions."""
    console_login(make_staff(role="staff"))
    db.add_all([UnansweredQuestion(norm=f"噪声{i}", text=f"噪声问题{i}号", count=5) for i in range(259)])
    entry = db.get(KBEntry, "building-venue")
    db.add(UnansweredQuestion(norm="real", text=entry.question, count=1))
    db.add(UnansweredQuestion(norm="done", text="已处理的问题", count=1, status="resolved"))
    db.commit()
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert "共 260 个问题" in page and "第 1 / 6 页" in page and "已处理（1）" in page
    assert "?status=open&amp;page=2" in page or "page=2" in page
    last = client.get("/console/kb/unanswered", query_string={"page": 6}).get_data(as_text=True)
    assert entry.question in last
    assert f'name="entry_id" value="{entry.id}"' in last  # its suggestion, on page 6
    assert last.count("<tr>") - 1 == 10
    # A page past the end (questions handled meanwhile) shows the last page, not an empty one.
    assert entry.question in client.get("/console/kb/unanswered", query_string={"page": 99}).get_data(as_text=True)


def _form(page: str) -> dict[str, str]:
    """The hidden fields of a console form as the browser would send them back."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


def test_after_an_edit_conflict_the_form_shows_the_colleagues_version_beside_the_unsaved_text(
        client, kb, make_staff, console_login, db):
    """Two staff edit one entry; the first saves a new answer and a new phrasing, the second then saves a new
    question from the page opened earlier and gets the 409. The form only said a colleague had saved, asking them
    to copy their text, reopen the entry and find the changes themselves. Now the colleague's saved version is
    shown beside the unsaved text field by field (question, answer, phrasings), the unsaved text stays in the form,
    and saving it again once merged is accepted."""
    entry_id = "talent-foreign-work-permit"
    first, second = make_staff(role="staff"), make_staff(role="staff")
    console_login(first)
    page_first = client.get(f"/console/kb/{entry_id}/edit").get_data(as_text=True)
    token = console_login(second)
    page_second = client.get(f"/console/kb/{entry_id}/edit").get_data(as_text=True)
    row = db.get(KBEntry, entry_id)
    base = {"question": row.question, "answer": row.answer, "similar": "\n".join(row.similar),
            "category": row.category, "tags": ", ".join(row.tags)}
    token_first = console_login(first)
    theirs = {**base, **_form(page_first), "csrf_token": token_first, "answer": "同事更新后的答案：10 个工作日。",
              "similar": base["similar"] + "\n老外来上班要办什么证"}
    assert client.post(f"/console/kb/{entry_id}/edit", data=theirs).status_code == 302
    token = console_login(second)
    mine = {**base, **_form(page_second), "csrf_token": token, "question": "我改的标准问题：外籍人才怎么办工作许可"}
    stale = client.post(f"/console/kb/{entry_id}/edit", data=mine)
    assert stale.status_code == 409
    page = html.unescape(stale.get_data(as_text=True))
    card = page[page.index('id="kb-conflict"'):page.index("</table>", page.index('id="kb-conflict"'))]
    cells = {label: (saved, unsaved) for label, saved, unsaved in re.findall(
        r"<tr class=\"conflict-\w+\">\s*<th>([^<\s]+).*?</th>\s*<td><div[^>]*>(.*?)</div></td>\s*"
        r"<td><div[^>]*>(.*?)</div></td>", card, re.S)}
    assert cells["答案"] == ("同事更新后的答案：10 个工作日。", base["answer"])
    assert "老外来上班要办什么证" in cells["相似问法"][0] and "老外来上班要办什么证" not in cells["相似问法"][1]
    assert cells["标准问题"] == (base["question"], mine["question"])
    # The unsaved question is still in the form (nothing typed is lost)...
    assert f'name="question" value="{mine["question"]}"' in page
    # ...and, merged with the colleague's answer and phrasing, it saves.
    merged = {**mine, **_form(stale.get_data(as_text=True)), "answer": theirs["answer"], "similar": theirs["similar"]}
    assert client.post(f"/console/kb/{entry_id}/edit", data=merged).status_code == 302
    db.expire_all()
    row = db.get(KBEntry, entry_id)
    assert (row.question, row.answer) == (mine["question"], theirs["answer"])
    assert "老外来上班要办什么证" in row.similar


def test_questions_the_bot_now_answers_are_marked_in_the_queue_and_handled_in_one_click(
        client, kb, make_staff, console_login, db):
    """A question came into the queue when the bot could not answer it; a colleague then added an entry that
    answers it, but the question stayed open, among the others, until someone found and handled it by hand. The
    queue now says which open questions the bot answers now (the chat's own answer decision) and with which entry,
    and one click marks them handled with that entry, audited; what it does not answer stays open."""
    from wxapp_backend.audit import AuditLog

    staff = make_staff(role="staff")
    token = console_login(staff)
    asked = "外卖小哥能进写字楼吗"
    assert client.post("/api/v1/chat", json={"text": asked}).get_json()["decision"] == "fallback"
    other = "附近哪里能停共享单车"
    assert client.post("/api/v1/chat", json={"text": other}).get_json()["decision"] == "fallback"
    question = db.query(UnansweredQuestion).filter_by(text=asked).one()
    still = db.query(UnansweredQuestion).filter_by(text=other).one()
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert "现在能回答" not in page
    # A colleague adds an entry that answers it (the new-entry form, not from the queue).
    resp = client.post("/console/kb/new", data={
        "csrf_token": token, "id": "delivery-riders", "question": "外卖员可以进入写字楼送餐吗",
        "similar": "外卖小哥能进写字楼吗\n外卖能送上楼吗", "answer": "可以。外卖员在一楼登记后即可进入写字楼送餐。"})
    assert resp.status_code == 302
    assert client.post("/api/v1/chat", json={"text": asked}).get_json()["entry_id"] == "delivery-riders"
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert page.count("现在能回答") == 2  # the card above the table, and the badge on its row
    badge_row = next(r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if "now-answerable" in r)
    assert asked in badge_row and "外卖员可以进入写字楼送餐吗" in badge_row
    bulk = re.search(r'<form method="post" action="(/console/kb/unanswered/resolve-answerable)".*?</form>', page,
                     re.S)
    assert re.findall(r'name="qid" value="(\d+)"', bulk.group(0)) == [str(question.id)]
    # The other question posted too (a stale page, or by hand): judged again, it stays open.
    resp = client.post(bulk.group(1), data={"csrf_token": token, "qid": [question.id, still.id]})
    assert resp.status_code == 302
    db.expire_all()
    assert (db.get(UnansweredQuestion, question.id).status,
            db.get(UnansweredQuestion, question.id).resolved_entry_id) == ("resolved", "delivery-riders")
    assert db.get(UnansweredQuestion, still.id).status == "open"
    row = db.query(AuditLog).filter_by(action="kb.unanswered_resolved", target_id=str(question.id)).one()
    assert (row.actor_id, row.data["entry_id"], row.data["via"]) == (str(staff.id), "delivery-riders",
                                                                     "now_answerable")
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert "已把 1 个" in page and "now-answerable" not in page and 'id="kb-answerable"' not in page
