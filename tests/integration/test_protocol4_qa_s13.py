"""QA pass 13 on WeChat's daily quota (45009), follow-ups: in a fan-out the row WeChat answered 45009 spent a try
at each cool-down's end until it failed for good, and every cool-down that ended on a still used-up quota alerted
a person again."""

from __future__ import annotations

import logging
import time
import types

import pytest

from wxapp_backend.db import session_scope
from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import OutboxRow
from wxapp_backend.notices.models import SubscribeCredit
from wxapp_backend.wechat import client as client_module
from wxapp_backend.wechat.client import QuotaReached, build_api

CUSTOM = "/cgi-bin/message/custom/send"
SUBSCRIBE = "/cgi-bin/message/subscribe/send"


@pytest.fixture
def state(app_ctx):
    return app_ctx.extensions["wxapp"]


def _end_cool_down(state) -> None:
    """The cool-down over (its mark expired) with the quota maybe still used up."""
    for key in state.redis.scan_iter("wxapp:wechat:quota:*"):
        state.redis.delete(key)


def _alerts(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "alert", False)]


# ------------------------------------------------------------------------------------------ the row that got 45009
# The quota used up all day: each cool-down's end, the first row sent got 45009 again and spent one of its
# MAX_ATTEMPTS tries (the others waited untried), so after ~2.5 hours it failed for good as 多次重试仍失败, though
# the message was never at fault and the quota came back at midnight.


def test_a_row_answered_45009_waits_for_the_quota_without_spending_a_try(published_notice, app, state, make_user, make_staff,
                                                                         run_jobs, standin, db, monkeypatch):
    from sqlalchemy import update

    nid = published_notice(2, fanout_send_chunk=2)
    rounds = broadcast.MAX_ATTEMPTS + 2
    for n in range(rounds):
        standin.fail_next(SUBSCRIBE, 45009)
        if n:  # the cool-down ends, the rows are due, and WeChat still says the quota is used up
            _end_cool_down(state)
            with session_scope() as s:
                s.execute(update(OutboxRow).where(OutboxRow.notice_id == nid).values(next_attempt_at=None))
            broadcast.send_notice(nid)
        run_jobs()
        db.expire_all()
        rows = db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").order_by(OutboxRow.id).all()
        assert [r.status for r in rows] == ["pending", "pending"], n
        assert [r.attempts for r in rows] == [0, 0], n  # a 45009 is the quota's doing, not the message's
        assert all(r.errcode == 45009 and r.detail == broadcast.QUOTA_WAIT_DETAIL and r.next_attempt_at
                   for r in rows), n
        assert [c.credits for c in db.query(SubscribeCredit).all()] == [1, 1], n  # kept
    assert standin.count(SUBSCRIBE) == rounds  # one call per cool-down, as before
    # The quota back (WeChat's midnight), both go out.
    _end_cool_down(state)
    with session_scope() as s:
        s.execute(update(OutboxRow).where(OutboxRow.notice_id == nid).values(next_attempt_at=None))
    broadcast.send_notice(nid)
    run_jobs()
    db.expire_all()
    assert [r.status for r in db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe")] == ["sent"] * 2
    assert [c.credits for c in db.query(SubscribeCredit).all()] == [0, 0]


# ------------------------------------------------------------------------------------------ one alert a day
# Every cool-down that ended on a quota still used up started a new one, and its 45009 alerted a person again:
# one alert every 30 minutes until midnight, for a fact they already knew.


def test_45009_alerts_a_person_once_per_wechat_day(state, standin, monkeypatch, caplog):
    wxa = build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=lambda s: None)
    monkeypatch.setitem(state.settings.extra, "wechat_quota_cooldown", 600)
    quota_logs = []
    with caplog.at_level(logging.INFO, logger="wxapp_backend.wechat.client"):
        for n in range(4):
            standin.fail_next(CUSTOM, 45009)
            with pytest.raises(QuotaReached) as info:
                wxa.send_text("o-user-1", "hi")
            assert info.value.called
            if n == 0:
                assert len(_alerts(caplog)) == 1  # the first one at once
            _end_cool_down(state)
        quota_logs = [r for r in caplog.records if "45009" in r.getMessage()]
    assert standin.count(CUSTOM) == 4
    assert len(_alerts(caplog)) == 1
    assert [r.levelno for r in quota_logs] == [logging.ERROR] + [logging.WARNING] * 3
    # Each API has its own quota, and its own alert.
    standin.fail_next("/cgi-bin/message/subscribe/send", 45009)
    with caplog.at_level(logging.WARNING, logger="wxapp_backend.wechat.client"):
        with pytest.raises(QuotaReached):
            wxa.send_subscribe("o-user-1", "TPL", {"thing1": "活动"})
    assert [r.api for r in _alerts(caplog)] == ["custom_send", "subscribe_send"]
    # The next WeChat day (China's midnight) a used-up quota is news again.
    now = time.time()
    tomorrow = now + 86400 - (now + client_module.CHINA_OFFSET) % 86400 + 60
    fake = types.SimpleNamespace(time=lambda: tomorrow + (time.time() - now), perf_counter=time.perf_counter,
                                 sleep=time.sleep, monotonic=time.monotonic)
    monkeypatch.setattr(client_module, "time", fake)
    _end_cool_down(state)
    standin.fail_next(CUSTOM, 45009)
    with caplog.at_level(logging.WARNING, logger="wxapp_backend.wechat.client"):
        with pytest.raises(QuotaReached):
            wxa.send_text("o-user-1", "hi")
    assert [r.api for r in _alerts(caplog)] == ["custom_send", "subscribe_send", "custom_send"]


def test_the_day_alert_falls_back_to_alerting_without_redis(state, standin, monkeypatch, caplog):
    """Redis down when the 45009 comes: better an alert too many than none."""
    wxa = build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=lambda s: None)
    wxa.access_token()
    standin.fail_next(CUSTOM, 45009)

    def down(*a, **k):
        raise ConnectionError("redis down")

    monkeypatch.setattr(wxa.tokens.redis, "set", down)
    with caplog.at_level(logging.WARNING, logger="wxapp_backend.wechat.client"):
        with pytest.raises(QuotaReached):
            wxa.send_text("o-user-1", "hi")
    assert len(_alerts(caplog)) == 1
