"""QA session 13, background jobs: sends that survive a lost completion, dead workers found sooner, and the rest."""

from __future__ import annotations

import pytest
import redis

from wxapp_backend.wechat.jobs import open_window, window_key

CUSTOM = "/cgi-bin/message/custom/send"
TEXT = {"msgtype": "text", "text": {"content": "小二来回复您啦"}}


@pytest.fixture(autouse=True)
def _no_backoff(app_ctx, monkeypatch):
    """Busy (-1) retries inside a call without waiting."""
    from wxapp_backend.wechat import client

    monkeypatch.setitem(app_ctx.extensions, "wxapp_wechat_apis", {})
    real = client.build_api
    monkeypatch.setattr(client, "build_api", lambda *a, **kw: real(*a, **{**kw, "sleep": lambda s: None}))


class _RedisOutage:
    """The application's Redis client stops answering (ConnectionError on every command) while `down` is set."""

    def __init__(self, client: redis.Redis, monkeypatch) -> None:
        self.down = False
        real = client.execute_command

        def execute_command(*args, **kwargs):
            if self.down:
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            return real(*args, **kwargs)

        monkeypatch.setattr(client, "execute_command", execute_command)


def _api_then(monkeypatch, after_send=None, before_send=None):
    """Wrap the customer-service API of wechat.jobs: `before_send` runs before the call (it may raise: the process
    died before WeChat had the message), `after_send` after WeChat answered ok."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    real_api = wechat_jobs._api

    class Api:
        def __init__(self, account):
            self.real = real_api(account)

        def send_custom(self, openid, payload):
            if before_send is not None:
                before_send()
            resp = self.real.send_custom(openid, payload)
            if after_send is not None:
                after_send()
            return resp

    monkeypatch.setattr(wechat_jobs, "_api", Api)


# --------------------------------------------------------------------------- 1. a send's completion lost with Redis


def test_a_customer_message_whose_completion_was_lost_with_redis_is_not_sent_again(app_ctx, standin, monkeypatch):
    """WeChat took the message, then Redis stopped answering before the job could note it was sent (the note was
    a Redis key): the job raised, RQ ran it again once Redis was back, the slot it had taken let it through and
    the user got the same reply twice. The send is now recorded in the database, which a re-run reads."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oLostDone", kind="message")
    outage = _RedisOutage(r, monkeypatch)
    _api_then(monkeypatch, after_send=lambda: setattr(outage, "down", standin.count(CUSTOM) == 1))
    try:
        wechat_jobs.send_customer_message("wxa", "oLostDone", TEXT, "wxa-lost-done-0")
    except redis.ConnectionError:
        pass  # the job fails; RQ cannot even record that (Redis is away): it runs again later
    assert standin.count(CUSTOM) == 1
    outage.down = False
    assert wechat_jobs.send_customer_message("wxa", "oLostDone", TEXT, "wxa-lost-done-0") == "already_sent"
    assert standin.count(CUSTOM) == 1, "the user got the same message twice"
    assert int(r.hget(window_key("wxa", "oLostDone"), "sent")) == 1


def test_a_customer_message_whose_job_died_before_sending_is_still_sent_once(app_ctx, standin, monkeypatch):
    """The other side: a run that took its window slot and died before WeChat had the message (killed, Redis gone
    before the call) leaves no record of a send: the re-run sends it, on the same slot, once."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oDiedBefore", kind="message")
    runs = {"n": 0}

    def die_first_time():
        runs["n"] += 1
        if runs["n"] == 1:
            raise SystemExit("killed before the call")

    _api_then(monkeypatch, before_send=die_first_time)
    with pytest.raises(SystemExit):
        wechat_jobs.send_customer_message("wxa", "oDiedBefore", TEXT, "wxa-died-before-0")
    assert standin.count(CUSTOM) == 0
    assert wechat_jobs.send_customer_message("wxa", "oDiedBefore", TEXT, "wxa-died-before-0") == "sent"
    assert wechat_jobs.send_customer_message("wxa", "oDiedBefore", TEXT, "wxa-died-before-0") == "already_sent"
    assert standin.count(CUSTOM) == 1
    assert int(r.hget(window_key("wxa", "oDiedBefore"), "sent")) == 1


def test_a_notification_whose_completion_was_lost_with_redis_is_not_sent_again(app_ctx, standin, monkeypatch,
                                                                               make_user):
    """The same for a notification (its outcome is a database row already): Redis gone right after WeChat's ok
    (the job cannot release its lock nor be marked finished), the re-run sends nothing."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import jobs as notice_jobs
    from wxapp_backend.notices.models import Notification
    from wxapp_backend.notices.services import notify

    user = make_user(oa_openid="oOaLostDone")
    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "oa", "oOaLostDone", kind="message")
    with session_scope() as s:
        note = notify(s, user.id, "appeal_progress", {}, title="您的诉求有新进展", body="已受理")
    outage = _RedisOutage(r, monkeypatch)
    real_call = notice_jobs._call

    def call_then_lose_redis(step):
        resp = real_call(step)
        outage.down = True
        return resp

    monkeypatch.setattr(notice_jobs, "_call", call_then_lose_redis)
    try:
        notice_jobs.deliver_notification(note.id)
    except redis.ConnectionError:
        pass
    sent = standin.count()
    outage.down = False
    monkeypatch.setattr(notice_jobs, "_call", real_call)
    # Outside RQ the lock the first run could not release makes this run come back later ("busy"); inside RQ the
    # job's rerun takes its own lock over. Either way nothing is sent again.
    assert notice_jobs.deliver_notification(note.id) in ("skipped", "busy")
    r.delete(f"wxapp:notify:lock:{note.id}")  # the lock's expiry
    assert notice_jobs.deliver_notification(note.id) == "skipped"
    assert standin.count() == sent
    with session_scope() as s:
        assert s.get(Notification, note.id).status == "sent_custom"


def test_the_record_of_customer_sends_is_kept_a_month_then_dropped(app_ctx, standin):
    """The send records outlive any job that could run again (a failed job can be requeued for 30 days), then the
    daily clean-up drops them."""
    from datetime import timedelta

    from wxapp_backend.db import session_scope, utcnow
    from wxapp_backend.periodic import PERIODIC
    from wxapp_backend.wechat import jobs as wechat_jobs
    from wxapp_backend.wechat.models import CustomSend

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oOld", kind="message")
    assert wechat_jobs.send_customer_message("wxa", "oOld", TEXT, "wxa-old-0") == "sent"
    assert wechat_jobs.send_customer_message("wxa", "oOld", TEXT, "wxa-month-0") == "sent"
    with session_scope() as s:
        s.get(CustomSend, "wxa-old-0").sent_at = utcnow() - timedelta(days=32)
        s.get(CustomSend, "wxa-month-0").sent_at = utcnow() - timedelta(days=29)
    assert wechat_jobs.forget_old_sends() == 1
    with session_scope() as s:
        assert s.get(CustomSend, "wxa-old-0") is None and s.get(CustomSend, "wxa-month-0") is not None
    assert "wxapp_backend.wechat.jobs.forget_old_sends" in {p.func for p in PERIODIC}
