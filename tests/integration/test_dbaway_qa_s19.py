"""QA of the chat with the database briefly away (nineteenth pass, dbaway): PostgreSQL restarting, every connection
refused. The knowledge base is held in memory and the conversation in Redis, so a question still gets its answer, its
“您是不是想问” list or the fallback, in WeChat (the real signed, encrypted webhook) and in POST /api/v1/chat; the turn's
log (and a fallback's place in staff's unanswered queue) is queued and written once the database is back; what only the
database knows (我的诉求, 我的报名) says the system is busy instead of “小二刚才开了个小差”."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat9_qa_s14 import _unanswered
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatact_qa_s17 import _linked_follower
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.chat import FALLBACK
from wxapp_backend.knowledge_store.models import ChatTurn
from wxapp_backend.wechat.pipeline import CRASH_TEXT, user_cache_key

LICENSE_Q, LICENSE = "营业执照丢了怎么办", "startup-license-lost"
TALENT = "人才"  # three choices; the first is the R visa
R_VISA = "R 字签证"
UNKNOWN_Q = "火星基地的企业怎么缴纳社保"


def _busy(reply: str, what: str) -> bool:
    """“系统暂时繁忙…请过一两分钟再回复“我的诉求”试试”: honest, and says what to send again."""
    return reply.startswith("系统暂时繁忙") and f"再回复“{what}”" in reply


@pytest.fixture
def db_away(monkeypatch):
    """`with db_away():` every transaction fails to connect, as with PostgreSQL restarting (a real psycopg
    “connection refused” from the first statement, not a stub). The knowledge-base index is built before, as a
    running server holds it."""
    from wxapp_backend import db as db_module
    from wxapp_backend.knowledge_store.services import get_runtime

    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", poolclass=NullPool,
                         connect_args={"connect_timeout": 2})
    real = db_module.Database.session_scope

    @contextlib.contextmanager
    def refused(self):
        session = Session(dead)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextlib.contextmanager
    def switch(*apps):
        for application in apps:
            with application.app_context():
                get_runtime().get()
        monkeypatch.setattr(db_module.Database, "session_scope", refused)
        try:
            yield
        finally:
            monkeypatch.setattr(db_module.Database, "session_scope", real)

    yield switch
    dead.dispose()


def _turns(application, **where) -> list[ChatTurn]:
    with application.app_context(), session_scope() as s:
        return list(s.scalars(select(ChatTurn).filter_by(**where).order_by(ChatTurn.id)))


def _follower(oa, make_user, openid: str) -> int:
    """A follower who wrote before (known to the webhook), whose one-minute user cache has since run out."""
    user_id = _linked_follower(make_user, openid)
    say(oa, openid, "你好")
    oa.extensions["wxapp"].redis.delete(user_cache_key("oa", openid))
    return user_id


# ------------------------------------------------------------------------------------------------ 1. WeChat chat


def test_a_question_in_wechat_is_answered_and_its_turn_logged_once_the_database_is_back(oa_kb, make_user,  # noqa: F811
                                                                                       db_away, run_jobs):
    """The answer was found (in memory) and then the turn's log write raised: the user got “小二刚才开了个小差” (and so
    for the user look-up before it, once the one-minute user cache had run out). Now answered; the turn is queued
    and logged, under the user and at the time asked, when the database is back."""
    openid = "oDbAwayAnswer"
    user_id = _follower(oa_kb, make_user, openid)
    asked = datetime.now(UTC)
    with db_away(oa_kb):
        reply = say(oa_kb, openid, LICENSE_Q)
    assert reply != CRASH_TEXT and "一网通办" in reply, reply
    assert _turns(oa_kb, entry_id=LICENSE) == []  # not yet: the database was away
    assert run_jobs() >= 1
    turns = _turns(oa_kb, entry_id=LICENSE)
    assert [(t.channel, t.user_id, t.decision, t.question) for t in turns] == [("oa", user_id, "answer", LICENSE_Q)]
    created = turns[0].created_at if turns[0].created_at.tzinfo else turns[0].created_at.replace(tzinfo=UTC)
    assert asked - timedelta(seconds=1) <= created <= asked + timedelta(seconds=30)
    run_jobs()
    assert len(_turns(oa_kb, entry_id=LICENSE)) == 1


def test_a_choice_picked_and_votes_with_the_database_away(oa_kb, make_user, db_away):  # noqa: F811
    """“人才” offers choices (state in Redis), “1” picks the first, “没用” then gets the apology and the other
    guesses, which “1” then picks: each failed (the log write; for “没用” also the look-up of an appeal waiting for its
    rating, and for “1” that of a 办结 notice the digit might answer)."""
    openid = "oDbAwayPick"
    _follower(oa_kb, make_user, openid)
    with db_away(oa_kb):
        listed = say(oa_kb, openid, TALENT)
        picked = say(oa_kb, openid, "1")
        useless = say(oa_kb, openid, "没用")
        again = say(oa_kb, openid, "1")
    assert "您是不是想问" in listed and R_VISA in listed, listed
    assert R_VISA in picked and CRASH_TEXT not in picked, picked
    assert "抱歉" in useless and "您是不是想问" in useless and CRASH_TEXT not in useless, useless
    assert "梯度化的人才政策" in again, again  # the first of the guesses offered after “没用”


def test_wrong_after_an_answer_given_with_the_database_away_offers_the_next_guesses(oa_kb, make_user,  # noqa: F811
                                                                                   db_away):
    """The answer's turn could not be logged (no turn id yet): a “不对” next still gets the apology and the next
    guesses, which a digit picks; “有用” gets its thanks (the vote has no turn to go on; logged)."""
    openid = "oDbAwayWrong"
    _follower(oa_kb, make_user, openid)
    with db_away(oa_kb):
        assert "一网通办" in say(oa_kb, openid, LICENSE_Q)
        wrong = say(oa_kb, openid, "不对")
        picked = say(oa_kb, openid, "1")
        assert "一网通办" in say(oa_kb, openid, LICENSE_Q)
        thanks = say(oa_kb, openid, "有用")
    assert "抱歉" in wrong and "电子营业执照" in wrong, wrong
    assert "电子营业执照" in picked, picked
    assert thanks and CRASH_TEXT not in thanks and "抱歉" not in thanks, thanks


def test_an_unanswerable_question_gets_the_fallback_and_reaches_the_unanswered_queue_later(oa_kb, make_user,  # noqa: F811
                                                                                          db_away, run_jobs):
    openid = "oDbAwayFallback"
    _follower(oa_kb, make_user, openid)
    before = _unanswered(oa_kb)
    with db_away(oa_kb):
        reply = say(oa_kb, openid, UNKNOWN_Q)
        human = say(oa_kb, openid, "人工")
    assert reply.startswith(FALLBACK[:12]), reply
    assert human != CRASH_TEXT, human
    run_jobs()
    assert _unanswered(oa_kb) == before + 1
    assert [t.decision for t in _turns(oa_kb, channel="oa", question=UNKNOWN_Q)] == ["fallback"]


def test_my_appeals_and_registrations_say_the_system_is_busy(oa_kb, make_user, db_away):  # noqa: F811
    """They can only come from the database: “系统暂时繁忙…请过一两分钟再回复…”, not “小二刚才开了个小差”. The menu, the
    greeting, 活动 (a link to the mini-program) and the appeal intake's start go on as they are."""
    openid = "oDbAwayMine"
    _follower(oa_kb, make_user, openid)
    with db_away(oa_kb):
        appeals = say(oa_kb, openid, "我的诉求")
        registrations = say(oa_kb, openid, "我的报名")
        menu = say(oa_kb, openid, "菜单")
        activities = say(oa_kb, openid, "活动")
        intake = say(oa_kb, openid, "我要反映")
    assert _busy(appeals, "我的诉求") and _busy(registrations, "我的报名"), (appeals, registrations)
    assert "人工服务" in menu and "白领活动" in activities and "登记诉求" in intake, (menu, activities, intake)


# ------------------------------------------------------------------------------------------------ 2. in-app chat


def test_the_app_chat_answers_with_the_database_away(app, oa_kb, client, user_token, make_user,  # noqa: F811
                                                     db_away, run_jobs):
    """POST /api/v1/chat was a 500 “服务开了个小差” for every question (the log write), and for a logged-in caller for
    everything (the look-up that the token's account still exists). Now the answer, the choices, a pick, “没用”;
    turn_id and vote_token are null (no turn yet); the turn is logged later; 我的诉求 / 我的报名 say busy."""
    user = make_user()
    h = user_token(user)
    with db_away(app):
        bodies = {t: _app(client, h, t) for t in (LICENSE_Q, TALENT, "1", "没用", "你好", "人工", "我的诉求", "我的报名")}
        anon = client.post("/api/v1/chat", json={"text": LICENSE_Q, "session": "dbaway-session-1"})
    assert bodies[LICENSE_Q]["decision"] == "answer" and "一网通办" in bodies[LICENSE_Q]["reply"], bodies[LICENSE_Q]
    assert bodies[LICENSE_Q]["turn_id"] is None and bodies[LICENSE_Q]["vote_token"] is None
    assert bodies[TALENT]["decision"] == "suggest"
    assert bodies["1"]["decision"] == "answer" and R_VISA in bodies["1"]["reply"], bodies["1"]
    assert "抱歉" in bodies["没用"]["reply"], bodies["没用"]
    assert bodies["人工"]["decision"] == "handoff"
    assert _busy(bodies["我的诉求"]["reply"], "我的诉求") and _busy(bodies["我的报名"]["reply"], "我的报名"), bodies
    assert anon.status_code == 200 and anon.get_json()["decision"] == "answer", anon.get_data(as_text=True)
    run_jobs()
    assert [t.decision for t in _turns(app, channel="api", user_id=user.id, question=LICENSE_Q)] == ["answer"]
    assert [t.decision for t in _turns(app, channel="api", user_id=None, question=LICENSE_Q)] == ["answer"]


# ------------------------------------------------------------------------------------------------ 3. the log itself


def test_with_the_queue_away_too_the_turn_is_logged_as_a_warning(oa_kb, make_user, db_away, monkeypatch,  # noqa: F811
                                                                caplog):
    """Redis refusing the job as well: the answer still goes out; the warning keeps what the turn was (the phone
    number masked, as the log keeps it)."""
    import redis

    from wxapp_backend import queue

    def refused(*a, **kw):
        raise redis.ConnectionError("connection refused")

    openid = "oDbAwayQueue"
    _follower(oa_kb, make_user, openid)
    monkeypatch.setattr(queue, "enqueue", refused)
    with caplog.at_level(logging.WARNING), db_away(oa_kb):
        reply = say(oa_kb, openid, UNKNOWN_Q + "，我电话13800138000")
    assert reply.startswith(FALLBACK[:12]), reply
    lost = [r for r in caplog.records if "chat turn not logged" in r.getMessage()]
    assert lost and lost[0].decision == "fallback" and lost[0].channel == "oa", caplog.text
    assert "138****8000" in lost[0].question and "13800138000" not in lost[0].question


def test_the_later_log_runs_twice_without_a_second_turn(oa_kb):  # noqa: F811
    """The job is safe to run twice (a worker dying after its commit runs it again)."""
    from wxapp_backend.knowledge_store.jobs import log_turn_later

    turn = {"channel": "oa", "user_id": None, "question": UNKNOWN_Q, "decision": "fallback", "entry_id": None,
            "confidence": 0.1, "offered": [], "unanswered": True, "at": datetime.now(UTC).isoformat()}
    before = _unanswered(oa_kb)
    with oa_kb.app_context():
        first, second = log_turn_later(dict(turn)), log_turn_later(dict(turn))
        with session_scope() as s:
            n = s.scalar(select(func.count(ChatTurn.id)).where(ChatTurn.question == UNKNOWN_Q))
    assert first == second and n == 1
    assert _unanswered(oa_kb) == before + 1
