"""QA of follow / unfollow with the database briefly away (nineteenth pass, followaway): PostgreSQL restarting, every
connection refused. The user look-up of a follow (subscribe) or unfollow (unsubscribe) push raised: the webhook logged
“chat handler failed” and answered an empty “success”, which WeChat does not retry, so the follower had no welcome and
the follow / unfollow was never recorded (nor was the unfollower's customer-service window shut, which keeps notices
from being sent to them). Now the welcome is sent (it needs no database), the window is shut, a Redis mark of the
latest follow / unfollow is kept, and the change is queued (RQ, with retries) and recorded once the database is
back, in the order the user did it."""

from __future__ import annotations

import logging
import time

from sqlalchemy import select

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_dbaway_qa_s19 import db_away  # noqa: F401  (every connection refused)
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.jobs import take_window
from wxapp_backend.wechat.pipeline import CRASH_TEXT

FOLLOW_JOB = "wxapp_backend.wechat.jobs.record_follow_later"


def _rows(application, openid: str) -> list[tuple[int, bool]]:
    with application.app_context(), session_scope() as s:
        return [(u.id, u.followed) for u in s.scalars(select(User).where(User.oa_openid == openid))]


def _queued(application) -> list:
    """The follow / unfollow jobs waiting on the queue, oldest first."""
    return [j for j in application.extensions["wxapp"].queue.get_jobs() if j.func_name == FOLLOW_JOB]


def _perform(application, jobs) -> None:
    with application.app_context():
        for job in jobs:
            job.perform()


def test_a_follow_with_the_database_away_gets_its_welcome_and_is_recorded_later(oa_kb, db_away,  # noqa: F811
                                                                              run_jobs):
    """The follow got an empty “success” (no retry from WeChat): no welcome, no user row. Now the welcome, and the
    follower's row (followed) once the database is back."""
    from handlers.bot import WELCOME

    openid = "oFollowAwayNew"
    with db_away(oa_kb):
        reply = say(oa_kb, openid, event="subscribe", event_key="qrscene_building_7")
    assert reply == WELCOME, reply
    assert _rows(oa_kb, openid) == []  # not yet: the database was away
    assert len(_queued(oa_kb)) == 1
    assert run_jobs() >= 1
    rows = _rows(oa_kb, openid)
    assert len(rows) == 1 and rows[0][1] is True, rows
    assert say(oa_kb, openid, "你好") != CRASH_TEXT  # and the follower is known from now on


def test_an_unfollow_with_the_database_away_stops_pushes_at_once_and_is_recorded_later(oa_kb, make_user,  # noqa: F811
                                                                                     db_away, run_jobs):
    """The unfollow failed before its handler shut the customer-service window: notices kept being sent to someone
    who had left (WeChat refusing them), and followed stayed true. The window is now shut at once (Redis), and
    followed=false is recorded by the job."""
    openid = "oFollowAwayLeave"
    make_user(openid="oMini" + openid, oa_openid=openid, unionid="u" + openid, followed=True)
    say(oa_kb, openid, "你好")  # opens the 48-hour window
    r = oa_kb.extensions["wxapp"].redis
    with db_away(oa_kb):
        reply = say(oa_kb, openid, event="unsubscribe")
    assert reply == "", reply  # nobody can read it
    assert take_window(r, "oa", openid) == 45015  # no notice goes out to them any more, database or not
    assert [f for _, f in _rows(oa_kb, openid)] == [True]
    run_jobs()
    assert [f for _, f in _rows(oa_kb, openid)] == [False]


def test_a_retried_push_and_a_job_run_twice_record_the_follow_once(oa_kb, db_away, run_jobs):  # noqa: F811
    """WeChat sends the same push again (same FromUserName, CreateTime and Event) when an answer is slow, and a worker
    dying after its commit runs the job again: one row, followed."""
    openid = "oFollowAwayTwice"
    at = int(time.time())
    with db_away(oa_kb):
        first = say(oa_kb, openid, event="subscribe", now=at)
        again = say(oa_kb, openid, event="subscribe", now=at)
    from handlers.bot import WELCOME

    assert first == again == WELCOME, (first, again)
    jobs = _queued(oa_kb)
    assert len(jobs) == 1
    _perform(oa_kb, jobs + jobs)  # the same job twice
    run_jobs()
    rows = _rows(oa_kb, openid)
    assert len(rows) == 1 and rows[0][1] is True, rows


def test_an_unfollow_after_a_follow_is_not_undone_by_the_follow_job_running_later(oa_kb, db_away):  # noqa: F811
    """Follow, then unfollow five seconds later, both with the database away; RQ's retries may run the follow's job
    after the unfollow's. The user left: followed stays false."""
    openid = "oFollowAwayOrder"
    at = int(time.time())
    with db_away(oa_kb):
        say(oa_kb, openid, event="subscribe", now=at)
        say(oa_kb, openid, event="unsubscribe", now=at + 5)
    follow, unfollow = _queued(oa_kb)
    _perform(oa_kb, [unfollow, follow])
    rows = _rows(oa_kb, openid)
    assert len(rows) == 1 and rows[0][1] is False, rows
    # Both within one second (one CreateTime): the one WeChat pushed last is what the user did last.
    tied = "oFollowAwayTie"
    with db_away(oa_kb):
        say(oa_kb, tied, event="subscribe", now=at)
        say(oa_kb, tied, event="unsubscribe", now=at)
    follow, unfollow = [j for j in _queued(oa_kb) if tied in j.args]
    _perform(oa_kb, [unfollow, follow])
    assert [f for _, f in _rows(oa_kb, tied)] == [False]


def test_a_queued_unfollow_does_not_undo_a_later_follow_made_with_the_database_back(oa_kb, db_away,  # noqa: F811
                                                                                   run_jobs):
    """Unfollow with the database away, follow again once it is back (recorded at once); the unfollow's job then
    runs: the user follows."""
    openid = "oFollowAwayBack"
    at = int(time.time())
    say(oa_kb, openid, event="subscribe", now=at - 60)
    with db_away(oa_kb):
        say(oa_kb, openid, event="unsubscribe", now=at)
    assert len(_queued(oa_kb)) == 1
    say(oa_kb, openid, event="subscribe", now=at + 10)
    assert [f for _, f in _rows(oa_kb, openid)] == [True]
    run_jobs()
    assert [f for _, f in _rows(oa_kb, openid)] == [True]


def test_with_the_queue_away_too_the_follow_is_kept_in_a_warning(oa_kb, db_away, monkeypatch, caplog):  # noqa: F811
    """Redis refusing the job as well: the welcome still goes out; the warning says what to record (account, openid,
    follow or unfollow, when)."""
    import redis

    from handlers.bot import WELCOME
    from wxapp_backend import queue

    def refused(*a, **kw):
        raise redis.ConnectionError("connection refused")

    openid = "oFollowAwayQueue"
    at = int(time.time())
    monkeypatch.setattr(queue, "enqueue", refused)
    with caplog.at_level(logging.WARNING), db_away(oa_kb):
        reply = say(oa_kb, openid, event="subscribe", now=at)
    assert reply == WELCOME, reply
    lost = [r for r in caplog.records if "follow not recorded" in r.getMessage()]
    assert lost, caplog.text
    assert (lost[0].account, lost[0].openid, lost[0].followed, lost[0].at) == ("oa", openid, True, at)
