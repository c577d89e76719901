"""Knowledge base as staff keep it (session 16, kbc5): clicks that arrive twice or from a page a colleague has
overtaken (a new entry saved twice, a queue question handled meanwhile)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from wxapp_backend.audit import AuditLog
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.models import KBEntry, UnansweredQuestion


@pytest.fixture
def kb(app_ctx):
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


def _entry(db, entry_id: str, question: str, answer: str = "请到一网通办办理。") -> None:
    db.add(KBEntry(id=entry_id, question=question, answer=answer, similar=[], tags=[], category="政策"))
    db.commit()


def _audits(db, action: str) -> int:
    return db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == action))


def test_a_double_click_on_save_of_a_new_entry_lands_on_the_entry_not_on_id_already_taken(
    client, kb, make_staff, console_login, db
):
    """The browser shows the answer to the second click: it said 编号已存在，请换一个编号 for the entry just made by
    the first, and a staff member who believed it saved the same entry again under another id (two entries
    answering one question)."""
    token = console_login(make_staff(role="staff"))
    form = {
        "csrf_token": token,
        "id": "parking-fee",
        "question": "园区停车怎么收费",
        "answer": "每小时 10 元。",
    }
    assert client.post("/console/kb/new", data=form).status_code == 302
    r = client.post("/console/kb/new", data=form)
    assert r.status_code == 302, r.get_data(as_text=True)
    assert "q=parking-fee" in r.headers["Location"]
    db.expire_all()
    assert db.scalar(select(func.count(KBEntry.id))) == 1
    assert _audits(db, "kb.entry_created") == 1
    # another entry under a taken id is still refused, its text kept in the form
    r = client.post("/console/kb/new", data={**form, "answer": "免费停车两小时。"})
    assert r.status_code == 409 and "已存在" in r.get_data(as_text=True)
    db.expire_all()
    assert db.get(KBEntry, "parking-fee").answer == "每小时 10 元。"


def _queue_question(db, text: str) -> int:
    q = UnansweredQuestion(norm=re.sub(r"\W", "", text), text=text, count=3)
    db.add(q)
    db.commit()
    return q.id


def _second_browser(app, staff):
    from tests.integration.test_ent6_qa_s16 import _second_browser as login

    return login(app, staff)


def _token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _phrasing_form(page: str, qid: int, entry_id: str) -> dict[str, str]:
    """The hidden fields of the queue's “＋ 加到” button for `entry_id`, as the browser would send them."""
    action = f'/console/kb/unanswered/{qid}/phrasing"'
    for form in page.split("<form")[1:]:
        if action in form.split(">")[0] and f'name="entry_id" value="{entry_id}"' in form:
            return dict(
                re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.split("</form>")[0])
            )
    raise AssertionError(f"no button for {entry_id}")


def test_a_queue_question_a_colleague_handled_meanwhile_is_not_added_to_a_second_entry(
    app, client, kb, make_staff, console_login, db
):
    """Two staff on the same queue page: the first added the question to one entry, the second (page not reloaded)
    to another. Both entries then held the same words and the question's record named only the last; the
    colleague's work was silently written over. Now the second click is refused with who handled it with what; a
    double click on the same button is no error and no second audit row; on the 已处理 tab staff may still add a
    handled question to another entry on purpose."""
    _entry(db, "park-a", "园区停车怎么收费", "每小时 10 元。")
    _entry(db, "park-b", "园区停车位可以包月吗", "可以，每月 600 元。")
    qid = _queue_question(db, "园区里停车要交钱吗")
    console_login(make_staff(role="staff"))
    other = _second_browser(app, make_staff(role="staff"))
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    theirs = other.get("/console/kb/unanswered").get_data(as_text=True)
    mine_a = {"csrf_token": _token(page), **_phrasing_form(page, qid, "park-a"), "entry_id": "park-a"}
    mine_b = {"csrf_token": _token(page), **_phrasing_form(page, qid, "park-b"), "entry_id": "park-b"}
    # the colleague adds it to park-a first
    r = other.post(
        f"/console/kb/unanswered/{qid}/phrasing",
        data={"csrf_token": _token(theirs), **_phrasing_form(theirs, qid, "park-a"), "entry_id": "park-a"},
    )
    assert r.status_code == 302
    # this staff member, from the page loaded before, picks park-b
    r = client.post(f"/console/kb/unanswered/{qid}/phrasing", data=mine_b)
    assert r.status_code == 409, r.status_code
    said = r.get_data(as_text=True)
    assert "同事" in said and "park-a" in said, said
    db.expire_all()
    assert db.get(KBEntry, "park-b").similar == []
    assert (db.get(UnansweredQuestion, qid).status, db.get(UnansweredQuestion, qid).resolved_entry_id) == (
        "resolved",
        "park-a",
    )
    # the same choice as the colleague's (or one's own double click) is no error and no second record
    assert client.post(f"/console/kb/unanswered/{qid}/phrasing", data=mine_a).status_code == 302
    assert _audits(db, "kb.unanswered_resolved") == 1 and _audits(db, "kb.phrasing_added") == 1
    # on the 已处理 tab, adding it to another entry is a deliberate choice: allowed
    done = client.get("/console/kb/unanswered?status=resolved").get_data(as_text=True)
    assert f"/console/kb/unanswered/{qid}/phrasing" in done
    r = client.post(
        f"/console/kb/unanswered/{qid}/phrasing",
        data={"csrf_token": _token(done), "status": "resolved", "entry_id": "park-b"},
    )
    assert r.status_code == 302
    db.expire_all()
    assert db.get(KBEntry, "park-b").similar == ["园区里停车要交钱吗"]


def test_a_new_entry_made_from_a_queue_question_a_colleague_handled_meanwhile_says_so_and_can_still_be_saved(
    app, client, kb, make_staff, console_login, db
):
    """新建条目 from the queue while a colleague added the question to an existing entry: the new entry was saved
    and took the question over from the colleague's entry without a word. Now the save is refused saying so, with
    the form kept; saved again, the entry is made on its own and the colleague's handling stays."""
    _entry(db, "park-a", "园区停车怎么收费", "每小时 10 元。")
    qid = _queue_question(db, "园区里停车要交钱吗")
    console_login(make_staff(role="staff"))
    other = _second_browser(app, make_staff(role="staff"))
    page = client.get(f"/console/kb/new?question=园区里停车要交钱吗&from_unanswered={qid}").get_data(
        as_text=True
    )
    assert f'name="from_unanswered" value="{qid}"' in page
    theirs = other.get("/console/kb/unanswered").get_data(as_text=True)
    assert (
        other.post(
            f"/console/kb/unanswered/{qid}/phrasing",
            data={"csrf_token": _token(theirs), "entry_id": "park-a"},
        ).status_code
        == 302
    )
    form = {
        "csrf_token": _token(page),
        "from_unanswered": str(qid),
        "id": "park-free",
        "question": "园区里停车要交钱吗",
        "answer": "前两小时免费。",
    }
    r = client.post("/console/kb/new", data=form)
    assert r.status_code == 409, r.status_code
    said = r.get_data(as_text=True)
    assert "park-a" in said and "前两小时免费" in said, said
    assert 'name="from_unanswered" value=""' in said
    db.expire_all()
    assert db.get(KBEntry, "park-free") is None
    r = client.post("/console/kb/new", data={**form, "from_unanswered": ""})
    assert r.status_code == 302
    db.expire_all()
    assert db.get(KBEntry, "park-free") is not None
    assert db.get(UnansweredQuestion, qid).resolved_entry_id == "park-a"


def test_a_phrasing_that_is_another_entrys_question_is_saved_with_a_warning_naming_that_entry(
    client, kb, make_staff, console_login, db
):
    """A phrasing typed on a second entry that is word for word another entry's question (or one of its
    phrasings) was saved without a word: the bot answers those words with one of the two only (here the second
    took the first entry's own question away from it). Now the save says which entry already holds them."""
    _entry(db, "park-a", "园区停车怎么收费", "每小时 10 元。")
    token = console_login(make_staff(role="staff"))
    form = {
        "csrf_token": token,
        "id": "park-b",
        "question": "园区停车位可以包月吗",
        "answer": "可以，每月 600 元。",
        "similar": "停车能包月吗\n园区停车怎么收费？",
    }
    r = client.post("/console/kb/new", data=form, follow_redirects=True)
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert "park-a" in page and "园区停车怎么收费？" in page and "重复" in page, page
    db.expire_all()
    assert db.get(KBEntry, "park-b") is not None  # saved all the same: the staff member decides
    # a phrasing held by no other entry says nothing
    r = client.post(
        "/console/kb/park-b/edit",
        data={**form, "similar": "停车能包月吗", "revision": str(db.get(KBEntry, "park-b").revision)},
        follow_redirects=True,
    )
    assert r.status_code == 200 and "重复" not in r.get_data(as_text=True)
