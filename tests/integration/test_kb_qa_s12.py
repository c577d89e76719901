"""Knowledge-base console, unanswered queue and answer votes (session 12): the queue's marks at scale, votes on
the choices a turn offered, and the other defects found on the way."""

from __future__ import annotations

import html
import re

import pytest

from knowledge.index import SearchIndex
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import KBEntry, UnansweredQuestion


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


@pytest.fixture
def searches(monkeypatch):
    """How many searches of the index have been made (each KnowledgeBase.search runs one search_docs)."""
    calls = []
    real = SearchIndex.search_docs

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SearchIndex, "search_docs", counted)
    return calls


def _badged(page: str) -> list[str]:
    return [r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if "now-answerable" in r]


def test_the_unanswered_queue_searches_each_question_once_per_knowledge_base_content(
        app, client, kb, make_staff, console_login, db, redis_client, searches):
    """Each load of the queue searched every question on the page two or three times (its suggestions, then the
    bot's decision for the 现在能回答 mark): 100-150 searches per load, about 0.8 s at 100k entries, and the page is
    loaded again after every click. Now one search per question gives both, and the marks are kept in Redis
    under the index's content (version and rows' stamp): another load, or another process, searches nothing until
    an entry changes; then the marks follow the change, even when the version in Redis could not be bumped."""
    token = console_login(make_staff(role="staff"))
    texts = [f"第{i}号园区的停车位怎么收费" for i in range(49)] + ["外卖小哥能进写字楼吗"]
    db.add_all([UnansweredQuestion(norm=f"q{i}", text=t, count=50 - i) for i, t in enumerate(texts)])
    db.commit()
    kb.get()
    searches.clear()
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert page.count("＋ 加到") > 0 and not _badged(page)
    assert len(searches) <= len(texts) + 5, len(searches)  # was 2-3 per question
    searches.clear()
    assert client.get("/console/kb/unanswered").get_data(as_text=True) == page
    assert searches == []
    # Another process (a new runtime, its own index of the same rows) uses the marks the first one made.
    app.extensions.pop("wxapp_kb")
    services.get_runtime().check_interval = 0
    searches.clear()
    assert client.get("/console/kb/unanswered").get_data(as_text=True) == page
    assert searches == []
    # An entry that answers one of them: the next load searches again and marks it.
    resp = client.post("/console/kb/new", data={
        "csrf_token": token, "id": "delivery-riders", "question": "外卖员可以进入写字楼送餐吗",
        "similar": "外卖小哥能进写字楼吗", "answer": "可以。外卖员在一楼登记后即可进入写字楼送餐。"})
    assert resp.status_code == 302
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert [("外卖小哥能进写字楼吗" in r) for r in _badged(page)] == [True]
    # Taken offline with the bump to Redis lost (the version key put back): the table's stamp moved, the
    # index is rebuilt on the periodic look at the table, and the mark goes with it.
    version = redis_client.get(services.VERSION_KEY)
    row = db.get(KBEntry, "delivery-riders")
    row.retired, row.revision = True, row.revision + 1
    db.commit()
    redis_client.set(services.VERSION_KEY, version)
    services.get_runtime().full_check_interval = 0
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert not _badged(page) and "外卖员可以进入写字楼送餐吗" not in page


def _chat(client, text: str) -> dict:
    resp = client.post("/api/v1/chat", json={"text": text, "session": "qa12-kbscale"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_a_vote_on_a_suggestion_turn_is_taken_only_for_the_entries_that_turn_offered(client, kb, db):
    """A 'suggest' turn (您是不是想问 1. 2. 3.) logged no entry, and a vote on it was taken for any entry id: a script
    holding one such turn could move the 有用 share of whichever entry it liked. Only the entries the turn offered
    now take its vote; another is a clear Chinese 422 naming entry_id."""
    from wxapp_backend.knowledge_store.models import AnswerFeedback, ChatTurn

    body = _chat(client, "融资")
    assert body["decision"] == "suggest" and body["suggestions"], body
    offered = [s["id"] for s in body["suggestions"]]
    other = db.query(KBEntry).filter(KBEntry.id.notin_(offered), KBEntry.retired.is_(False)).first().id
    vote = {"turn_id": body["turn_id"], "vote_token": body["vote_token"], "useful": True}
    wrong = client.post("/api/v1/kb/feedback", json={**vote, "entry_id": other})
    assert wrong.status_code == 422, wrong.get_json()
    err = wrong.get_json()
    assert "entry_id" in err["fields"] and re.search(r"[\u4e00-\u9fff]", err["message"]), err
    assert db.query(AnswerFeedback).count() == 0
    assert db.get(ChatTurn, body["turn_id"]).offered == offered
    right = client.post("/api/v1/kb/feedback", json={**vote, "entry_id": offered[-1]})
    assert right.status_code == 200, right.get_json()
    assert [(f.entry_id, f.useful) for f in db.query(AnswerFeedback)] == [(offered[-1], True)]



def _browser_form(page: str) -> dict[str, str]:
    """Every field of the entry form as a browser sends it: blank inputs are sent too, as empty strings."""
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    form.update(re.findall(r'<input(?: type="date")? name="([^"]+)" value="([^"]*)"', page))
    form.update(re.findall(r'<textarea name="([^"]+)"[^>]*>([^<]*)</textarea>', page))
    return {k: html.unescape(v) for k, v in form.items()}


def test_the_entry_form_saves_as_a_browser_sends_it_with_its_dates_left_blank(
        client, kb, make_staff, console_login, db):
    """A browser sends a date input left empty as valid_from= (an empty string), and the form refused it: 生效日期
    日期格式不对 / 截止日期日期格式不对, so no entry without dates could be created or edited in the console, and a
    policy extended indefinitely could not have its 截止日期 removed. A blank date is now no date."""
    from datetime import date

    console_login(make_staff(role="staff"))
    form = _browser_form(client.get("/console/kb/new").get_data(as_text=True))
    assert form["valid_from"] == "" and form["valid_until"] == ""
    form.update({"id": "qa12-canteen", "question": "园区食堂几点开门", "answer": "园区食堂 7:00-19:00 开放。"})
    resp = client.post("/console/kb/new", data=form)
    assert resp.status_code == 302, re.findall(r'class="alert"[^>]*>([^<]+)', resp.get_data(as_text=True))
    row = db.get(KBEntry, "qa12-canteen")
    assert (row.valid_from, row.valid_until) == (None, None)
    # A policy with an end date, extended without one: its 截止日期 is emptied and saved.
    row.valid_until = date(2020, 12, 31)
    row.revision += 1
    db.commit()
    form = _browser_form(client.get("/console/kb/qa12-canteen/edit").get_data(as_text=True))
    assert form["valid_until"] == "2020-12-31"
    form["valid_until"] = ""
    resp = client.post("/console/kb/qa12-canteen/edit", data=form)
    assert resp.status_code == 302, re.findall(r'class="alert"[^>]*>([^<]+)', resp.get_data(as_text=True))
    db.expire_all()
    assert db.get(KBEntry, "qa12-canteen").valid_until is None


def test_a_save_or_import_that_changes_nothing_does_not_make_every_process_rebuild_its_index(
        app, client, kb, make_staff, console_login, db, redis_client, tmp_path):
    """Saving an entry's form unchanged (a second click on 保存, a save to check) and re-importing the file just
    exported each set a new version in Redis, so every process threw its index away and rebuilt it from the
    whole table (tens of seconds of CPU per process at 100k entries) and the queue's cached marks were
    recomputed. Only a change moves the version now."""
    console_login(make_staff(role="staff"))
    entry_id = "talent-foreign-work-permit"
    form = _browser_form(client.get(f"/console/kb/{entry_id}/edit").get_data(as_text=True))
    row = db.get(KBEntry, entry_id)
    version = redis_client.get(services.VERSION_KEY)
    assert version
    resp = client.post(f"/console/kb/{entry_id}/edit", data=form)
    assert resp.status_code == 302, re.findall(r'class="alert"[^>]*>([^<]+)', resp.get_data(as_text=True))
    db.expire_all()
    assert db.get(KBEntry, entry_id).revision == row.revision  # nothing changed...
    assert redis_client.get(services.VERSION_KEY) == version  # ...and nobody is told to reload
    exported = tmp_path / "kb.jsonl"
    runner = app.test_cli_runner()
    assert runner.invoke(args=["kb", "export", str(exported), "--include-retired"]).exit_code == 0
    result = runner.invoke(args=["kb", "import", str(exported)])
    assert "新增 0 条，更新 0 条" in result.output, result.output
    assert redis_client.get(services.VERSION_KEY) == version
    # A real change still moves it.
    form["answer"] = row.answer + "（已更新）"
    form["revision"] = str(row.revision)
    assert client.post(f"/console/kb/{entry_id}/edit", data=form).status_code == 302
    assert redis_client.get(services.VERSION_KEY) != version


def test_taking_offline_the_last_entry_of_the_last_page_does_not_leave_an_empty_page(
        client, kb, make_staff, console_login, db):
    """The list goes back to the page it was on after 下线 (the referrer). Taking offline the only entry on the last
    page of 在线 (or opening an old link past the end) showed 共 N 条 over an empty table, as if entries were lost,
    with no 下一页 and only 上一页 to click. A page past the end now shows the last page, as the queue does."""
    token = console_login(make_staff(role="staff"))
    total = db.query(KBEntry).filter(KBEntry.retired.is_(False)).count()
    extra = (1 - total % 30) % 30  # leave exactly one entry on the last page
    db.add_all([KBEntry(id=f"zz-qa12-{i:02d}", question=f"第{i}个问题", answer="答案。") for i in range(extra)])
    db.commit()
    total = db.query(KBEntry).filter(KBEntry.retired.is_(False)).count()
    assert total % 30 == 1
    last_page = total // 30 + 1
    last = client.get("/console/kb/", query_string={"page": last_page}).get_data(as_text=True)
    ids = re.findall(r"<td><code>([^<]+)</code></td>", last)
    assert len(ids) == 1
    resp = client.post(f"/console/kb/{ids[0]}/retire", data={"csrf_token": token, "retire": "1"},
                       headers={"Referer": f"http://localhost/console/kb/?page={last_page}"})
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert len(re.findall(r"<td><code>([^<]+)</code></td>", page)) == 30, "the page before, now the last"
    assert f"共 {total - 1} 条" in page
    far = client.get("/console/kb/", query_string={"page": 999}).get_data(as_text=True)
    assert len(re.findall(r"<td><code>([^<]+)</code></td>", far)) == 30
