"""Knowledge base as staff keep it (session 11): the list, the forms, spreadsheets, the unanswered queue, rates."""

from __future__ import annotations

import re
from datetime import date

import pytest

from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import KBEntry, UnansweredQuestion


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


def _total(page: str) -> int:
    return int(re.search(r"共 (\d+) 条", page).group(1))


def _alerts(page: str) -> list[str]:
    return re.findall(r'class="alert"[^>]*>([^<]*)<', page)


def test_the_list_finds_an_entry_by_one_of_its_phrasings_or_tags(client, kb, make_staff, console_login, db):
    """A staff member remembers the phrasing they added from the unanswered queue (or a tag) and types it into the
    list's search box: the list said 共 0 条, as if the entry did not exist, because only the id, the standard
    question and the answer were searched. Phrasings and tags are searched too (stored as JSON, Chinese escaped)."""
    console_login(make_staff(role="staff"))
    row = db.get(KBEntry, "appeal-how-to-submit")
    phrasing = "有问题找谁反映"
    assert phrasing in row.similar and phrasing not in row.question + row.answer
    page = client.get("/console/kb/", query_string={"q": phrasing}).get_data(as_text=True)
    assert _total(page) == 1 and "<code>appeal-how-to-submit</code>" in page
    tag = "反映渠道"
    assert tag in row.tags
    page = client.get("/console/kb/", query_string={"q": tag, "show": "all"}).get_data(as_text=True)
    assert "<code>appeal-how-to-submit</code>" in page, _total(page)
    # A quote or a backslash typed into the box is just a character (it is escaped inside the stored JSON).
    assert client.get("/console/kb/", query_string={"q": '"\\'}).status_code == 200


@pytest.mark.parametrize(("form", "field", "message"), [
    ({"id": "外籍 人才"}, "id", "编号不能含空白"),
    ({"url": "www.shanghai.gov.cn/zc"}, "url", "原文链接必须以 http:// 或 https:// 开头"),
    ({"valid_from": "2025-05-01", "valid_until": "2025-01-31"}, "valid_from", "生效日期（2025-05-01）晚于截止日期（2025-01-31）"),
])
def test_a_mistake_on_the_entry_form_is_explained_in_chinese_beside_its_field(client, kb, make_staff, console_login,
                                                                             form, field, message):
    """An id with a space, a link typed without http://, or dates the wrong way round: the form answered with one
    line at the top naming the field in English (“url”（链接）, “valid_from”, 'a b' in Python quotes), nothing
    beside the field, and the console's own label for the link (原文链接) nowhere. Each problem is now said in
    Chinese under its field, with the label the form shows."""
    token = console_login(make_staff(role="staff"))
    data = {"csrf_token": token, "id": "new-entry", "question": "新问题", "answer": "新答案", **form}
    resp = client.post("/console/kb/new", data=data)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert not re.search(r"“(id|url|valid_from|valid_until)”|&#39;", page), _alerts(page)
    # beside the field: inside the same <label> as its input
    label = next(b for b in re.findall(r"<label>.*?</label>", page, re.S) if f'name="{field}"' in b)
    assert message in label, _alerts(page)


def test_dates_that_a_spreadsheet_holds_as_numbers_are_read_as_the_dates_they_show(app, kb, tmp_path, db):
    """A date typed into a cell formatted 常规 (or pasted as values) is saved by Excel / WPS as its serial number
    (2025-12-31 is 46022), and 20251231 typed without separators is a number too. The import refused the whole
    sheet (“不是有效日期：46022”) though the staff member sees a date. Both are read as the date."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["编号", "标准问题", "答案", "生效日期", "截止日期"])
    ws.append(["sheet-serial", "以序号保存的日期", "答案一", 45658, 46022.0])
    ws.append(["sheet-digits", "不带分隔符的日期", "答案二", 20250101, "20251231"])
    path = tmp_path / "dates.xlsx"
    wb.save(path)
    result = app.test_cli_runner().invoke(args=["kb", "import", str(path)])
    assert result.exit_code == 0, result.output
    for entry_id in ("sheet-serial", "sheet-digits"):
        row = db.get(KBEntry, entry_id)
        assert (row.valid_from, row.valid_until) == (date(2025, 1, 1), date(2025, 12, 31)), entry_id


def test_entries_on_a_second_worksheet_are_not_silently_left_out(app, kb, tmp_path, db):
    """The team keeps 政策 on one sheet and 常见问题 on another. The import read the first sheet only and said
    导入完成, so every entry on the second sheet was missing without a word. A workbook whose other sheets hold
    entries is refused, naming the sheet, and nothing changes; a sheet of notes (no id/question/answer columns)
    is no reason to refuse."""
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "政策"
    wb.active.append(["id", "question", "answer"])
    wb.active.append(["sheet-one", "第一页的问题", "第一页的答案"])
    notes = wb.create_sheet("填写说明")
    notes.append(["每行一个条目，编号不能重复。"])
    path = tmp_path / "notes.xlsx"
    wb.save(path)
    assert app.test_cli_runner().invoke(args=["kb", "import", str(path)]).exit_code == 0
    faq = wb.create_sheet("常见问题")
    faq.append(["编号", "标准问题", "答案"])
    faq.append(["sheet-two", "第二页的问题", "第二页的答案"])
    wb["政策"].append(["sheet-one-b", "第一页的第二个问题", "答案"])
    path = tmp_path / "two.xlsx"
    wb.save(path)
    result = app.test_cli_runner().invoke(args=["kb", "import", str(path)])
    assert result.exit_code == 1 and "知识库未改动" in result.output and "常见问题" in result.output, result.output
    assert db.get(KBEntry, "sheet-one-b") is None and db.get(KBEntry, "sheet-two") is None


@pytest.mark.parametrize("how", ["retired", "expired"])
def test_a_question_is_not_marked_handled_by_a_phrasing_on_an_entry_the_bot_will_not_use(client, kb, make_staff,
                                                                                        console_login, db, how):
    """The queue offers entries that fit; a colleague takes one offline (or its 截止日期 passes) before the click.
    Adding the question to it said 已把这个问法加到条目 and moved the question to 已处理, yet the bot still could
    not answer it. The click is refused with the reason, and the question stays in the queue."""
    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    token = console_login(make_staff(role="staff"))
    assert client.post("/api/v1/chat", json={"text": "园区停车费多少"}).get_json()["decision"] == "fallback"
    question = db.query(UnansweredQuestion).filter_by(status="open").one()
    state = client.application.extensions["wxapp"]
    with session_scope() as s:
        if how == "retired":
            services.set_retired(s, state.redis, SYSTEM, "building-park", True)
        else:
            s.get(KBEntry, "building-park").valid_until = date(2020, 12, 31)
    before = list(db.get(KBEntry, "building-park").similar)
    resp = client.post(f"/console/kb/unanswered/{question.id}/phrasing",
                       data={"csrf_token": token, "entry_id": "building-park"})
    assert resp.status_code == 409
    assert ("已下线" if how == "retired" else "2020-12-31") in resp.get_data(as_text=True)
    db.expire_all()
    assert db.get(UnansweredQuestion, question.id).status == "open"
    assert db.get(KBEntry, "building-park").similar == before


def test_a_new_entry_made_from_the_queue_answers_the_question_as_it_was_asked(client, kb, make_staff,
                                                                              console_login, db):
    """新建条目 from the queue opens the form with the question as asked; staff then write it the standard way
    (外卖小哥能进写字楼吗 → 外卖配送人员进入商务楼宇有什么规定) and save. The question was marked 已处理, but the
    words people actually used were not kept anywhere, so asking them again still got “我还没学会”. The asked
    text is added to the new entry as a phrasing (audited), and the chat answers it at once."""
    token = console_login(make_staff(role="staff"))
    asked = "外卖小哥能进写字楼吗"
    assert client.post("/api/v1/chat", json={"text": asked}).get_json()["decision"] == "fallback"
    question = db.query(UnansweredQuestion).filter_by(text=asked).one()
    page = client.get("/console/kb/new", query_string={"question": asked, "from_unanswered": question.id})
    assert asked in page.get_data(as_text=True)
    resp = client.post("/console/kb/new", data={
        "csrf_token": token, "id": "building-delivery-riders", "question": "外卖配送人员进入商务楼宇有什么规定",
        "answer": "外卖配送人员可在大堂登记后进入，部分楼宇设有外卖柜，请以物业规定为准。",
        "from_unanswered": str(question.id)})
    assert resp.status_code == 302
    body = client.post("/api/v1/chat", json={"text": asked}).get_json()
    assert (body["decision"], body["entry_id"]) == ("answer", "building-delivery-riders"), body
    db.expire_all()
    assert db.get(UnansweredQuestion, question.id).status == "resolved"
    assert asked in db.get(KBEntry, "building-delivery-riders").similar


def test_the_same_question_typed_in_full_width_letters_is_one_row_in_the_queue(client, kb, db):
    """A Chinese input method in full-width mode types ＡＰＰ and ２０２５ for APP and 2025. The same question
    asked both ways made two rows in the unanswered queue, each with half the count, so it ranked lower than it
    should. Questions are grouped after NFKC normalisation too."""
    for text in ("楼宇ＡＰＰ能订会议室吗２０２５", "楼宇app能订会议室吗2025？", "楼宇 App 能订会议室吗 2025"):
        assert client.post("/api/v1/chat", json={"text": text}).get_json()["decision"] == "fallback", text
    rows = db.query(UnansweredQuestion).all()
    assert [r.count for r in rows] == [3], [(r.text, r.count) for r in rows]


def test_a_formula_whose_result_is_an_excel_error_is_refused_not_imported_as_text(app, kb, tmp_path, db):
    """The answers were pulled from another sheet with a formula (=VLOOKUP(...)); for one row the lookup failed and
    the cell shows #N/A. The import took “#N/A” as that entry's answer and the bot would have said it to users.
    A cell holding an Excel error is refused, naming the row and the column."""
    import openpyxl

    path = tmp_path / "lookup.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["id", "question", "answer"])
    wb.active.append(["lookup-ok", "查得到的问题", "查得到的答案"])
    wb.active.append(["lookup-failed", "查不到的问题", "#N/A"])
    wb.active["C3"].data_type = "e"  # as Excel saves a formula's error result: <c t="e"><v>#N/A</v></c>
    wb.save(path)
    result = app.test_cli_runner().invoke(args=["kb", "import", str(path)])
    assert result.exit_code == 1, result.output
    assert "lookup.xlsx：第 3 行 “answer”" in result.output and "#N/A" in result.output, result.output
    assert db.get(KBEntry, "lookup-failed") is None and db.get(KBEntry, "lookup-ok") is None


def test_replying_with_the_number_of_a_choice_is_not_counted_as_another_question(client, kb, db, make_user,
                                                                                 user_token):
    """One person asks “税务”, the bot offers choices, they reply “1” and get the answer. The figures counted two
    questions, one answered directly: 近 30 天提问 2, 直接回答率 50 %, though the bot answered no question
    directly. And when the chosen entry had gone offline in between, the reply “1” landed in the unanswered queue
    as a question for staff. A reply picking a choice is logged as such: neither a question nor unanswered; a vote
    on the answer it gave still counts."""
    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    headers = user_token(make_user())
    first = client.post("/api/v1/chat", json={"text": "税务"}, headers=headers).get_json()
    assert first["decision"] == "suggest" and len(first["suggestions"]) >= 2, first
    picked = client.post("/api/v1/chat", json={"text": "1"}, headers=headers).get_json()
    assert picked["decision"] == "answer" and picked["entry_id"] == first["suggestions"][0]["id"]
    vote = client.post("/api/v1/kb/feedback", headers=headers,
                       json={"entry_id": picked["entry_id"], "useful": True, "turn_id": picked["turn_id"]})
    assert vote.status_code == 200, vote.get_json()
    rates = services.answer_rates(db)
    assert (rates["asked"], rates["answered"], rates["suggested"]) == (1, 0, 1), rates
    assert (rates["useful_votes"], rates["votes"]) == (1, 1)

    again = client.post("/api/v1/chat", json={"text": "税务"}, headers=headers).get_json()
    with session_scope() as s:
        services.set_retired(s, client.application.extensions["wxapp"].redis, SYSTEM,
                             again["suggestions"][1]["id"], True)
    gone = client.post("/api/v1/chat", json={"text": "2"}, headers=headers).get_json()
    assert gone["decision"] == "fallback" and "下线" in gone["reply"]
    assert db.query(UnansweredQuestion).count() == 0, [q.text for q in db.query(UnansweredQuestion)]
    assert services.answer_rates(db)["asked"] == 2


@pytest.mark.parametrize(("change", "shown"), [
    ({"retired": True}, "已下线"),
    ({"valid_until": date(2020, 12, 31)}, "已于 2020-12-31 截止"),
    ({"valid_from": date(2999, 1, 1)}, "2999-01-01 起"),
])
def test_the_edit_page_says_when_the_bot_does_not_use_the_entry(client, kb, make_staff, console_login, db, change,
                                                                 shown):
    """Opening an entry from a search (or from the audit log) showed the form and nothing else: a staff member
    polished the answer of an entry that was offline, or past its 截止日期, and wondered why users never saw it.
    The page says so above the form."""
    from wxapp_backend.db import session_scope

    console_login(make_staff(role="staff"))
    with session_scope() as s:
        row = s.get(KBEntry, "building-park")
        for k, v in change.items():
            setattr(row, k, v)
    page = client.get("/console/kb/building-park/edit").get_data(as_text=True)
    assert shown in page
    assert "已下线" not in client.get("/console/kb/startup-cancel/edit").get_data(as_text=True)


def test_the_list_shows_each_entrys_useful_and_useless_votes(client, kb, make_staff, console_login, db, make_user,
                                                            user_token):
    """Users tap 没用 under an answer; the list showed one 有用率 for the whole knowledge base, so nobody could
    find which answer they meant. Each row shows its own 有用 / 没用 of the last 30 days, as the vote rows say."""
    from datetime import timedelta

    from wxapp_backend.db import utcnow
    from wxapp_backend.knowledge_store.models import AnswerFeedback

    console_login(make_staff(role="staff"))
    for useful in (True, False, False):
        headers = user_token(make_user())
        assert client.post("/api/v1/kb/feedback", headers=headers,
                           json={"entry_id": "building-park", "useful": useful}).status_code == 200
    db.add(AnswerFeedback(entry_id="building-park", useful=False, created_at=utcnow() - timedelta(days=40)))
    db.commit()
    page = client.get("/console/kb/", query_string={"q": "building-park"}).get_data(as_text=True)
    row = next(r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if "<code>building-park</code>" in r)
    assert re.search(r"有用\s*1\s*/\s*没用\s*2", re.sub(r"<[^>]+>", "", row)), row


def test_entries_without_a_category_can_be_listed_on_their_own(client, kb, make_staff, console_login, db):
    """Entries imported from a sheet without a 分类 column have none; the list's category menu offers （未分类）,
    but choosing it sent an empty value, which means 全部分类: all entries came back and the uncategorised ones
    could not be found to sort them."""
    from knowledge.schema import Entry
    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        services.save_entry(s, client.application.extensions["wxapp"].redis, SYSTEM,
                            Entry(id="no-category", question="没有分类的问题", answer="答案"), create=True)
    console_login(make_staff(role="staff"))
    page = client.get("/console/kb/").get_data(as_text=True)
    value = re.search(r'<option value="([^"]*)"[^>]*>（未分类）</option>', page).group(1)
    page = client.get("/console/kb/", query_string={"category": value}).get_data(as_text=True)
    assert _total(page) == 1 and "<code>no-category</code>" in page, _total(page)


def test_a_question_ignored_by_mistake_can_be_put_back_and_a_stale_ignore_does_not_undo_a_colleagues_work(
        client, kb, make_staff, console_login, db):
    """忽略 was final: a question ignored by a slip of the mouse stayed in 已忽略 for good (asked again, it is only
    counted there), with no way back to 待处理. And a colleague's 忽略 from a page opened earlier overwrote a
    question another had just handled, forgetting the entry it was handled with. Handled questions can be put back
    (audited); 忽略 of a question already handled is refused."""
    from wxapp_backend.audit import AuditLog

    token = console_login(make_staff(role="staff"))
    for text in ("园区停车费多少", "楼宇里有没有母婴室"):
        assert client.post("/api/v1/chat", json={"text": text}).get_json()["decision"] == "fallback"
    parking = db.query(UnansweredQuestion).filter_by(text="园区停车费多少").one()
    nursery = db.query(UnansweredQuestion).filter_by(text="楼宇里有没有母婴室").one()

    assert client.post(f"/console/kb/unanswered/{parking.id}/ignore", data={"csrf_token": token}).status_code == 302
    page = client.get("/console/kb/unanswered", query_string={"status": "ignored"}).get_data(as_text=True)
    assert f"/console/kb/unanswered/{parking.id}/reopen" in page
    resp = client.post(f"/console/kb/unanswered/{parking.id}/reopen", data={"csrf_token": token})
    assert resp.status_code == 302
    db.expire_all()
    assert db.get(UnansweredQuestion, parking.id).status == "open"
    assert db.query(AuditLog).filter_by(action="kb.unanswered_reopened", target_id=str(parking.id)).count() == 1

    client.post(f"/console/kb/unanswered/{nursery.id}/phrasing", data={"csrf_token": token, "entry_id": "building-venue"})
    stale = client.post(f"/console/kb/unanswered/{nursery.id}/ignore", data={"csrf_token": token})
    assert stale.status_code == 409 and "已被处理" in stale.get_data(as_text=True)
    db.expire_all()
    row = db.get(UnansweredQuestion, nursery.id)
    assert (row.status, row.resolved_entry_id) == ("resolved", "building-venue")


def test_a_users_long_question_pasted_into_the_list_search_is_searched(client, kb, make_staff, console_login):
    """To see how the bot matches what a user wrote, staff paste the user's question into the list's search box.
    A question longer than 128 characters (a standard question may have 300) answered with an error page
    (搜索不能超过 128 个字) instead of the list and the bot's matches."""
    console_login(make_staff(role="staff"))
    question = "您好，我们是一家刚从外省迁到长宁的科技型中小企业，" * 6 + "请问外籍人才工作许可怎么办？"
    assert 128 < len(question) <= 300
    resp = client.get("/console/kb/", query_string={"q": question})
    assert resp.status_code == 200
    assert "机器人会怎么匹配" in resp.get_data(as_text=True)


def test_a_question_can_be_added_to_an_entry_the_queue_did_not_suggest(client, kb, make_staff, console_login, db):
    """The queue offers the entries the bot finds closest; when the right one is not among them, the only way was
    to open that entry, type the question in by hand, and then 忽略 the question (so it counted as ignored, not
    handled, and nothing tied it to the entry). The queue takes the number of any entry."""
    token = console_login(make_staff(role="staff"))
    asked = "外卖小哥能进写字楼吗"
    assert client.post("/api/v1/chat", json={"text": asked}).get_json()["decision"] == "fallback"
    question = db.query(UnansweredQuestion).one()
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    forms = re.findall(rf'<form method="post" action="/console/kb/unanswered/{question.id}/phrasing".*?</form>',
                       page, re.S)
    inputs = [i for f in forms for i in re.findall(r"<input[^>]*>", f) if 'name="entry_id"' in i]
    assert any('type="hidden"' not in i for i in inputs), inputs
    resp = client.post(f"/console/kb/unanswered/{question.id}/phrasing",
                       data={"csrf_token": token, "entry_id": " building-venue "})
    assert resp.status_code == 302
    body = client.post("/api/v1/chat", json={"text": asked}).get_json()
    assert (body["decision"], body["entry_id"]) == ("answer", "building-venue")
    db.expire_all()
    assert db.get(UnansweredQuestion, question.id).resolved_entry_id == "building-venue"


def test_an_offline_entry_is_not_lost_from_the_list_after_a_save_or_a_search(client, kb, make_staff, console_login,
                                                                             db):
    """Saving an entry that is offline led to the list searched by its id, showing 在线 entries only: 共 0 条, as if
    the save had lost it. Searching for an offline entry said 共 0 条 the same way. After a save the list shows the
    entry whatever its state, and a search says how many offline entries match too."""
    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    token = console_login(make_staff(role="staff"))
    with session_scope() as s:
        services.set_retired(s, client.application.extensions["wxapp"].redis, SYSTEM, "building-park", True)
    page = client.get("/console/kb/building-park/edit").get_data(as_text=True)
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    row = db.get(KBEntry, "building-park")
    resp = client.post("/console/kb/building-park/edit", data={
        **form, "csrf_token": token, "question": row.question, "answer": row.answer + "（已更新）",
        "similar": "\n".join(row.similar), "category": row.category, "tags": ", ".join(row.tags)},
        follow_redirects=True)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "<code>building-park</code>" in page, _total(page)
    page = client.get("/console/kb/", query_string={"q": "building-park"}).get_data(as_text=True)
    assert _total(page) == 0 and "另有 1 条已下线" in page


def test_one_anonymous_caller_tapping_useless_again_and_again_does_not_move_the_useful_share(client, kb, db):
    """A logged-in user has one vote per entry, and a chat turn one vote; a caller without a login voting on an
    entry without a turn got a new vote row each time (30 a minute from one address), so one person could drive
    an answer's 有用率 wherever they liked. Such a vote needs the chat turn it is about, or a login."""
    for _ in range(3):
        resp = client.post("/api/v1/kb/feedback", json={"entry_id": "building-park", "useful": False})
        assert resp.status_code == 401 and "登录" in resp.get_json()["message"], resp.get_json()
    assert services.answer_rates(db)["votes"] == 0
    body = client.post("/api/v1/chat", json={"text": "外籍人才工作许可怎么办"}).get_json()
    resp = client.post("/api/v1/kb/feedback", json={"entry_id": body["entry_id"], "useful": True,
                                                    "turn_id": body["turn_id"], "vote_token": body["vote_token"]})
    assert resp.status_code == 200
    assert services.answer_rates(db)["votes"] == 1


def test_fixing_an_answer_does_not_quietly_split_a_tag_that_came_from_a_file(app, client, kb, make_staff,
                                                                              console_login, db, tmp_path):
    """A sheet tagged an entry “高新、专精特新”. A colleague later fixed a typo in its answer in the console: the save
    also changed the tags (the form splits tags at “、” and “，”), an edit nobody made, in the audit as theirs. Files
    read tags with the form's separators, so the form gives back what it was shown."""
    from wxapp_backend.audit import AuditLog

    sheet = tmp_path / "tags.csv"
    sheet.write_text("id,question,answer,tags\ntagged,带标签的问题,带标签的答案,高新、专精特新|融资，贷款\n", encoding="utf-8")
    assert app.test_cli_runner().invoke(args=["kb", "import", str(sheet)]).exit_code == 0
    token = console_login(make_staff(role="staff"))
    page = client.get("/console/kb/tagged/edit").get_data(as_text=True)
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    shown = re.search(r'<input name="tags" value="([^"]*)"', page).group(1)
    resp = client.post("/console/kb/tagged/edit", data={**form, "csrf_token": token, "question": "带标签的问题",
                                                         "answer": "带标签的答案（已更正）", "tags": shown})
    assert resp.status_code == 302
    db.expire_all()
    edit = db.query(AuditLog).filter_by(action="kb.entry_updated", target_id="tagged").one()
    assert edit.data["fields"] == ["answer"], edit.data
