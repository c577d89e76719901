"""Knowledge base as staff and users meet it: the calendar day, retired choices, console edits, feedback, files."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from knowledge.schema import Entry
from wxapp_backend.audit import SYSTEM
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import KBEntry


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


def _chat(client, text, headers=None):
    resp = client.post("/api/v1/chat", json={"text": text}, headers=headers or {})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    return resp.get_json()


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_a_policy_that_ended_yesterday_in_shanghai_is_not_current_on_a_utc_server(client, kb, app_ctx,
                                                                                  monkeypatch):
    """Servers keep UTC, which is still "yesterday" until 08:00 in Shanghai: validity is judged by the centre's
    day, so a policy that ended yesterday (Shanghai) is never answered as current in those eight hours."""
    yesterday = services.today_shanghai() - timedelta(days=1)

    class UTCClock(date):
        @classmethod
        def today(cls):
            return yesterday  # what date.today() says at 07:00 in Shanghai on a UTC server

    monkeypatch.setattr("knowledge.search.date", UTCClock)
    state = app_ctx.extensions["wxapp"]
    entry = Entry(id="policy-ended-yesterday", question="青浦区临时稳岗补贴申领怎么办理",
                           answer="向区人社局申领稳岗补贴。", valid_until=yesterday)
    with session_scope() as s:
        services.save_entry(s, state.redis, SYSTEM, entry, create=True)
    body = _chat(client, "青浦区临时稳岗补贴申领怎么办理")
    assert not (body["decision"] == "answer" and body["entry_id"] == "policy-ended-yesterday"), body
    results = client.get("/api/v1/kb/search", query_string={"q": "青浦区临时稳岗补贴申领怎么办理"}).get_json()
    assert "policy-ended-yesterday" not in [r["id"] for r in results["results"]]


def test_a_number_reply_never_answers_an_entry_retired_since_the_choices_were_offered(client, kb, app_ctx,
                                                                                      make_user, user_token):
    h = user_token(make_user())
    body = _chat(client, "融资", h)
    assert body["decision"] == "suggest", body
    first = body["suggestions"][0]["id"]
    with session_scope() as s:
        services.set_retired(s, app_ctx.extensions["wxapp"].redis, SYSTEM, first, True)
    picked = _chat(client, "1", h)
    assert picked["entry_id"] != first and "下线" in picked["reply"], picked


def test_editing_a_retired_entry_in_the_console_keeps_it_retired(client, kb, make_staff, console_login, db):
    """Fixing a typo in a withdrawn policy must not put it back in front of users; 恢复 is its own button."""
    token = console_login(make_staff(role="staff"))
    form = {"csrf_token": token, "question": "旧政策问题", "answer": "旧政策答案"}
    assert client.post("/console/kb/new", data={**form, "id": "old-policy"}).status_code == 302
    assert client.post("/console/kb/old-policy/retire", data={"csrf_token": token, "retire": "1"}).status_code == 302
    page = client.get("/console/kb/old-policy/edit").get_data(as_text=True)
    resp = client.post("/console/kb/old-policy/edit", data={**form, "csrf_token": _csrf(page),
                                                            "answer": "旧政策答案（已改错字）"})
    assert resp.status_code == 302
    db.expire_all()
    row = db.get(KBEntry, "old-policy")
    assert row.answer == "旧政策答案（已改错字）" and row.retired is True


def test_feedback_on_a_turn_counts_only_for_the_entry_that_turn_answered(client, kb, db):
    from wxapp_backend.knowledge_store.models import AnswerFeedback

    answered = _chat(client, "外籍人才工作许可怎么办")
    assert answered["decision"] == "answer"
    other = db.query(KBEntry).filter(KBEntry.id != answered["entry_id"]).first().id
    wrong = client.post("/api/v1/kb/feedback", json={"entry_id": other, "useful": True,
                                                     "turn_id": answered["turn_id"],
                                                     "vote_token": answered["vote_token"]})
    assert wrong.status_code == 422 and "entry_id" in wrong.get_json()["fields"], wrong.get_json()
    unanswered = _chat(client, "明天股票会涨吗")
    assert unanswered["decision"] == "fallback"
    stuffed = client.post("/api/v1/kb/feedback", json={"entry_id": answered["entry_id"], "useful": True,
                                                       "turn_id": unanswered["turn_id"],
                                                       "vote_token": unanswered["vote_token"]})
    assert stuffed.status_code == 422, stuffed.get_json()
    assert db.query(AnswerFeedback).count() == 0
    right = client.post("/api/v1/kb/feedback", json={"entry_id": answered["entry_id"], "useful": False,
                                                     "turn_id": answered["turn_id"],
                                                     "vote_token": answered["vote_token"]})
    assert right.status_code == 200 and db.query(AnswerFeedback).count() == 1


def test_import_names_the_row_and_field_of_a_value_too_long_for_its_column(app, kb, tmp_path, db):
    """PostgreSQL refuses a 41-character category (VARCHAR(40)) with a traceback; the loader must say where."""
    before = db.query(KBEntry).count()
    f = tmp_path / "long.csv"
    f.write_text("id,question,answer,category\nok-1,问题一,答案一,企业开办\n"
                 f"long-1,问题二,答案二,{'分' * 41}\nlong-2,{'问' * 301},答案三,\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(f)])
    assert result.exit_code == 1 and "未改动" in result.output, result.output
    assert "long.csv：第 3 行" in result.output and "category" in result.output and "40" in result.output
    assert "long.csv：第 4 行" in result.output and "question" in result.output and "300" in result.output
    db.expire_all()
    assert db.query(KBEntry).count() == before and db.get(KBEntry, "ok-1") is None


def test_control_characters_pasted_from_word_survive_an_xlsx_export_and_import(app, kb, tmp_path, db):
    """Word's soft line break is \\x0b; the console drops such characters, the file import kept them and then
    `kb export x.xlsx` died with openpyxl's IllegalCharacterError."""
    f = tmp_path / "word.jsonl"
    f.write_text('{"id": "word-1", "question": "社保\\u0007怎么交", "answer": "第一段\\u000b第二段",'
                 ' "similar": ["社保\\u000c缴费"]}\n', encoding="utf-8")
    cli = app.test_cli_runner()
    result = cli.invoke(args=["kb", "import", str(f)])
    assert result.exit_code == 0, result.output
    db.expire_all()
    row = db.get(KBEntry, "word-1")
    assert (row.question, row.answer, row.similar) == ("社保怎么交", "第一段第二段", ["社保缴费"])
    out = tmp_path / "kb.xlsx"
    result = cli.invoke(args=["kb", "export", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    result = cli.invoke(args=["kb", "import", str(out)])
    assert result.exit_code == 0 and "新增 0 条，更新 0 条" in result.output, result.output


def test_text_that_starts_with_an_equals_sign_round_trips_through_xlsx(app, kb, tmp_path, db):
    """openpyxl writes a string starting with "=" as a formula, which reads back empty."""
    f = tmp_path / "eq.csv"
    f.write_text("id,question,answer,similar\neq-1,=号开头的问题,=见附件一,=另一种问法\n", encoding="utf-8")
    cli = app.test_cli_runner()
    assert cli.invoke(args=["kb", "import", str(f)]).exit_code == 0
    out = tmp_path / "kb.xlsx"
    assert cli.invoke(args=["kb", "export", str(out)]).exit_code == 0
    result = cli.invoke(args=["kb", "import", str(out)])
    assert result.exit_code == 0 and "新增 0 条，更新 0 条" in result.output, result.output


def test_export_to_a_folder_that_does_not_exist_is_a_clear_error(app, kb, tmp_path):
    result = app.test_cli_runner().invoke(args=["kb", "export", str(tmp_path / "no-such-dir" / "kb.csv")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "无法写入" in result.output


def test_an_id_with_a_slash_is_refused_because_its_pages_could_never_be_opened(app, client, kb, tmp_path, db,
                                                                               make_staff, console_login):
    """/console/kb/<id>/edit, …/retire and /api/v1/kb/entries/<id> cannot carry a "/": such an entry could be
    created but never edited, retired or shown."""
    token = console_login(make_staff(role="staff"))
    resp = client.post("/console/kb/new", data={"csrf_token": token, "id": "policy/2025-01", "question": "问题",
                                                "answer": "答案"})
    assert resp.status_code == 422 and "编号不能含" in resp.get_data(as_text=True)
    f = tmp_path / "slash.csv"
    f.write_text("id,question,answer\npolicy/2025-02,问题,答案\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(f)])
    assert result.exit_code == 1 and "slash.csv：第 2 行" in result.output and "/" in result.output, result.output
    db.expire_all()
    assert db.query(KBEntry).filter(KBEntry.id.like("policy/%")).count() == 0


def test_an_edit_whose_version_bump_was_lost_still_reaches_other_processes(app_ctx, kb):
    """The bump after commit is best effort (Redis can blink); other processes must still see the edit on their
    periodic look at the table, not only at the next edit that happens to bump."""
    import redis

    class RedisDown:
        def incr(self, key):
            raise redis.ConnectionError("Redis is restarting")

        def set(self, key, value, **kw):
            raise redis.ConnectionError("Redis is restarting")

    state = app_ctx.extensions["wxapp"]
    other = services.KBRuntime(state.db, state.redis, check_interval=0)
    other.full_check_interval = 0  # production looks once a minute
    assert "洋专家来华工作要办啥手续" not in other.get().get("talent-foreign-work-permit").similar
    with session_scope() as s:
        services.add_phrasing(s, RedisDown(), SYSTEM, "talent-foreign-work-permit", "洋专家来华工作要办啥手续")
    assert "洋专家来华工作要办啥手续" in other.get().get("talent-foreign-work-permit").similar


@pytest.mark.postgres
def test_two_people_asking_the_same_new_question_at_once_are_both_counted(app_ctx):
    """The first asker's queue row is not committed yet when the second looks: the second's insert waits on the
    unique key and fails once the first commits; it used to fail that chat (a 500) instead of counting."""
    import threading
    import time

    from wxapp_backend.db import get_db
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    question = "楼下的共享单车停放点可以搬走吗"
    first = get_db().Session()
    services.log_turn(first, channel="api", user_id=None, question=question, decision="fallback",
                      entry_id=None, confidence=0.1)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with app_ctx.app_context(), session_scope() as s:
                services.log_turn(s, channel="api", user_id=None, question=question + "？", decision="fallback",
                                  entry_id=None, confidence=0.1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.5)  # the second asker is now waiting on the first's uncommitted row
    first.commit()
    first.close()
    t.join(10)
    assert not errors, errors
    with session_scope() as s:
        rows = s.query(UnansweredQuestion).all()
        assert [(r.count, r.status) for r in rows] == [(2, "open")]


def test_a_handled_question_asked_again_reopens_and_counts(app_ctx):
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    for _ in range(2):
        with session_scope() as s:
            services.log_turn(s, channel="api", user_id=None, question="园区食堂几点开门", decision="fallback",
                              entry_id=None, confidence=0.1)
    with session_scope() as s:
        row = s.query(UnansweredQuestion).one()
        services.resolve_unanswered(s, SYSTEM, row.id, None, ignore=False)
    with session_scope() as s:
        services.log_turn(s, channel="api", user_id=None, question="园区食堂几点开门？", decision="fallback",
                          entry_id=None, confidence=0.1)
    with session_scope() as s:
        row = s.query(UnansweredQuestion).one()
        assert (row.count, row.status) == (3, "open")
