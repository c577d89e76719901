"""QA session 17, customer-service (客服) sends from jobs: a reply that meets WeChat's daily quota (45009) waits for the
quota's reset (midnight, China time) while the user's 48-hour window will still be open then, and is recorded as lost
(audit row with the reason in Chinese, metric, log) when it will not; every other way a reply is lost (45015, 45047,
40003, busy to the last retry, a credential refused to the last retry) is recorded the same way; an access token that
expires mid-job costs nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.client import WeChatAPIError

CUSTOM = "/cgi-bin/message/custom/send"
TEXT = {"msgtype": "text", "text": {"content": "您好，您问的营业执照办理材料如下……"}}
# 2026-12-07 15:00 in Shanghai: the quota resets 9 hours later, at 2026-12-08 00:00 (16:00 UTC).
T0 = datetime(2026, 12, 7, 7, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 12, 7, 16, 0, tzinfo=UTC).timestamp()
HOUR = 3600


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app_ctx, monkeypatch):
    """The kefu jobs' clock; busy (-1) retries inside a call without waiting."""
    from wxapp_backend.wechat import client
    from wxapp_backend.wechat import jobs as wechat_jobs

    monkeypatch.setitem(app_ctx.extensions, "wxapp_wechat_apis", {})
    real = client.build_api
    monkeypatch.setattr(client, "build_api", lambda *a, **kw: real(*a, **{**kw, "sleep": lambda s: None}))
    c = Clock(T0)
    monkeypatch.setattr(wechat_jobs, "clock", c, raising=False)
    return c


def _open(openid: str, hours_ago: float, account: str = "oa") -> None:
    from wxapp_backend.wechat.jobs import open_window

    r = _redis()
    with r.pipeline() as pipe:
        open_window(pipe, account, openid, kind="message", now=T0 - hours_ago * HOUR)
        pipe.execute()


def _redis():
    from flask import current_app

    return current_app.extensions["wxapp"].redis


def _sent(openid: str, account: str = "oa") -> int:
    from wxapp_backend.wechat.jobs import window_key

    return int(_redis().hget(window_key(account, openid), "sent") or 0)


def _scheduled() -> list[Job]:
    from flask import current_app

    q = current_app.extensions["wxapp"].queue
    return [q.fetch_job(i) for i in ScheduledJobRegistry(queue=q).get_job_ids()]


def _lost_rows() -> list[AuditLog]:
    with session_scope() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == "wechat.kefu_lost").order_by(AuditLog.id)))


def _delivered(standin, openid: str) -> int:
    return sum(1 for c in standin.calls_to(CUSTOM) if (c.body or {}).get("touser") == openid)


def _release_after_reset(clock, account: str = "oa") -> None:
    """Midnight in Shanghai has passed: WeChat's quota is new (the client's quota mark expires then) and RQ's
    scheduler hands the waiting job to the queue (done here as its enqueue_scheduled_jobs does)."""
    from flask import current_app

    from wxapp_backend.wechat.client import get_api

    clock.now = MIDNIGHT + 120
    state = current_app.extensions["wxapp"]
    state.redis.delete(get_api(account).quota_key("custom_send"))
    registry = ScheduledJobRegistry(queue=state.queue)
    for job_id in registry.get_job_ids():
        job = state.queue.fetch_job(job_id)
        registry.remove(job_id)
        state.queue._enqueue_job(job)


# --------------------------------------------------------------------------- 45009: wait for the quota's reset

def test_reply_meeting_the_daily_quota_is_sent_once_after_midnight(clock, standin, run_jobs):
    """45009 at 15:00 with the window open until tomorrow afternoon: the reply waits (a scheduled RQ job, kept in
    Redis whatever happens to the worker), its window slot is given back, and after midnight it goes out once."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oQuota", hours_ago=1)
    standin.fail_next(CUSTOM, 45009)
    assert wechat_jobs.send_customer_message("oa", "oQuota", TEXT, "oa-quota-0") == "waiting_quota"
    assert _sent("oQuota") == 0, "WeChat took nothing: the window slot is given back"
    # The job's process dies right after (before RQ marks it finished): its rerun meets the known quota and
    # schedules the same retry again, not a second one, and gives back no second slot.
    assert wechat_jobs.send_customer_message("oa", "oQuota", TEXT, "oa-quota-0") == "waiting_quota"
    waiting = _scheduled()
    assert [j.id for j in waiting] == ["kf-oa-quota-0-quota1"]
    assert _sent("oQuota") == 0
    due = ScheduledJobRegistry(queue=_redis_queue()).get_scheduled_time(waiting[0])
    assert due.timestamp() - datetime.now(UTC).timestamp() >= MIDNIGHT - T0 - 60  # not before the reset
    assert not _lost_rows()

    _release_after_reset(clock)
    assert run_jobs() == 1
    assert _delivered(standin, "oQuota") == 2  # the refused call and the one after midnight
    assert _sent("oQuota") == 1
    # Run again (a rerun, a requeue): the send id's record stops it.
    assert wechat_jobs.send_customer_message("oa", "oQuota", TEXT, "oa-quota-0", quota_waits=1) == "already_sent"
    assert _delivered(standin, "oQuota") == 2
    assert not _lost_rows()


def _redis_queue():
    from flask import current_app

    return current_app.extensions["wxapp"].queue


def test_quota_retry_does_not_send_a_reply_that_went_out_meanwhile(clock, standin, run_jobs):
    """The retry is deduplicated on the send id kept in wechat_custom_sends."""
    from wxapp_backend.wechat import jobs as wechat_jobs
    from wxapp_backend.wechat.models import CustomSend

    _open("oQuotaDup", hours_ago=1)
    standin.fail_next(CUSTOM, 45009)
    assert wechat_jobs.send_customer_message("oa", "oQuotaDup", TEXT, "oa-quotadup-0") == "waiting_quota"
    with session_scope() as s:  # a requeued copy of the job went out meanwhile
        s.add(CustomSend(send_id="oa-quotadup-0", account="oa"))
    _release_after_reset(clock)
    run_jobs()
    assert _delivered(standin, "oQuotaDup") == 1  # only the refused call


def test_reply_is_recorded_lost_when_the_window_closes_before_the_reset(clock, standin, run_jobs):
    """The user wrote 40 hours ago: the window closes at 23:00, before the quota resets. No retry (WeChat would
    refuse it with 45015); the loss is in the audit log with its reason in Chinese, in /metrics and in the log."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oQuotaLate", hours_ago=40)
    standin.fail_next(CUSTOM, 45009)
    assert wechat_jobs.send_customer_message("oa", "oQuotaLate", TEXT, "oa-quotalate-0") == "lost_45009"
    assert not _scheduled()
    rows = _lost_rows()
    assert len(rows) == 1
    row = rows[0]
    assert row.target_type == "wechat_custom_sends" and row.target_id == "oa-quotalate-0"
    assert row.data["errcode"] == 45009 and row.data["openid"] == "oQuotaLate"
    assert "额度" in row.data["reason"] and "48" in row.data["reason"]
    assert row.data["reply"].startswith("您好")
    from wxapp_backend.console.audit_log import TARGET_LABELS, action_label

    assert action_label("wechat.kefu_lost") != "wechat.kefu_lost"
    assert TARGET_LABELS["wechat_custom_sends"]
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("wechat_kefu_lost_total", {"account": "oa", "errcode": "45009"}) >= 1


def test_negative_control_no_quota_no_wait(clock, standin):
    """Control: a send WeChat takes goes out at once, nothing waits, nothing is recorded lost."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oQuotaNo", hours_ago=1)
    assert wechat_jobs.send_customer_message("oa", "oQuotaNo", TEXT, "oa-quotano-0") == "sent"
    assert not _scheduled() and not _lost_rows()
    assert _sent("oQuotaNo") == 1 and _delivered(standin, "oQuotaNo") == 1


# --------------------------------------------------------------------------- the other ways a reply is lost

@pytest.mark.parametrize(("errcode", "outcome", "words"), [
    (45015, "refused_45015", "48小时"),
    (45047, "refused_45047", "上限"),
    (40003, "failed_40003", "openid"),
])
def test_refusals_are_recorded_for_staff(clock, standin, errcode, outcome, words):
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oRefused", hours_ago=1)
    standin.fail_next(CUSTOM, errcode)
    assert wechat_jobs.send_customer_message("oa", "oRefused", TEXT, f"oa-ref{errcode}-0") == outcome
    rows = _lost_rows()
    assert len(rows) == 1 and rows[0].data["errcode"] == errcode
    assert words in rows[0].data["reason"]
    assert not _scheduled()


def test_bad_openid_gives_the_window_slot_back(clock, standin):
    """WeChat took nothing (40003): the window's five sends are not spent on it."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oBadOpenid", hours_ago=1)
    standin.fail_next(CUSTOM, 40003)
    assert wechat_jobs.send_customer_message("oa", "oBadOpenid", TEXT, "oa-badopenid-0") == "failed_40003"
    assert _sent("oBadOpenid") == 0


def test_local_window_refusal_is_recorded(clock, standin):
    """No window at all (the user never wrote, or 48 hours have passed): refused here, never sent; recorded."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    assert wechat_jobs.send_customer_message("oa", "oNoWindow", TEXT, "oa-nowindow-0") == "refused_45015"
    assert [r.data["errcode"] for r in _lost_rows()] == [45015]
    assert _delivered(standin, "oNoWindow") == 0


def _as_rq_job(monkeypatch, retries_left: int) -> None:
    import rq

    class Current:
        id = "kf-test"

    Current.retries_left = retries_left
    monkeypatch.setattr(rq, "get_current_job", lambda *a, **kw: Current())


def test_busy_to_the_last_retry_is_recorded_lost(clock, standin, monkeypatch):
    """-1 after the call's own backoff: RQ tries again (not recorded); the last retry still busy is a loss."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oBusy", hours_ago=1)
    _as_rq_job(monkeypatch, retries_left=2)
    standin.fail_next(CUSTOM, -1, times=3)
    with pytest.raises(WeChatAPIError):
        wechat_jobs.send_customer_message("oa", "oBusy", TEXT, "oa-busy-0")
    assert not _lost_rows()
    _as_rq_job(monkeypatch, retries_left=0)
    standin.fail_next(CUSTOM, -1, times=3)
    with pytest.raises(WeChatAPIError):
        wechat_jobs.send_customer_message("oa", "oBusy", TEXT, "oa-busy-0")
    rows = _lost_rows()
    assert len(rows) == 1 and rows[0].data["errcode"] == -1 and "繁忙" in rows[0].data["reason"]
    assert _sent("oBusy") == 0, "the slot is given back: WeChat took nothing"


def test_token_expiring_mid_job_costs_nothing(clock, standin):
    """42001 on the send: one refresh, one retry, one message."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oToken", hours_ago=1)
    _open("oToken2", hours_ago=1)
    assert wechat_jobs.send_customer_message("oa", "oToken", TEXT, "oa-token-0") == "sent"
    standin.expire_tokens()
    assert wechat_jobs.send_customer_message("oa", "oToken2", TEXT, "oa-token2-0") == "sent"
    ok = [c for c in standin.calls_to(CUSTOM) if (c.body or {}).get("touser") == "oToken2"]
    assert len(ok) == 2  # 42001, then the retry with the new token
    assert not _lost_rows()


def test_refused_credential_is_retried_not_dropped(clock, standin, monkeypatch):
    """A token still refused after the one refresh is the account's problem, not the reply's: RQ tries again
    (it used to end failed_40001, the reply lost at the first try); the last retry records the loss."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    _open("oCred", hours_ago=1)
    _as_rq_job(monkeypatch, retries_left=2)
    standin.fail_next(CUSTOM, 40001, times=2)
    with pytest.raises(WeChatAPIError):
        wechat_jobs.send_customer_message("oa", "oCred", TEXT, "oa-cred-0")
    assert not _lost_rows()
    assert wechat_jobs.send_customer_message("oa", "oCred", TEXT, "oa-cred-0") == "sent"  # RQ's retry
    assert _sent("oCred") == 1
