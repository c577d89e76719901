"""QA session 21: what a stalled fan-out worker takes back after its lease (no push twice, nothing lost), and how a
worker tells that another worker's process has died (a reused pid, a start time it cannot read)."""

from __future__ import annotations

import pytest

from wxapp_backend.db import session_scope
from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import OutboxRow

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


# --------------------------------------------------------------------------- 1. fan-out: _reclaim_unsent


class _DiesAfterWeChatTookIt:
    """Worker B's WeChat client: WeChat takes the message, then B is killed before it marks the row sent."""

    def __init__(self, api) -> None:
        self._api = api

    def send_subscribe(self, *args, **kwargs):
        self._api.send_subscribe(*args, **kwargs)
        raise SystemExit("worker B killed right after WeChat took the message")


def _chunk_args(nid: int) -> tuple[str, dict, str]:
    with session_scope() as s:
        notice = broadcast._get(s, nid)
        return notice.template_id, broadcast._fanout_values(s, notice), notice.page


def _calls_for(standin, openid: str) -> int:
    return sum(1 for c in standin.calls_to(SUBSCRIBE) if c.body["touser"] == openid)


def test_a_stalled_worker_does_not_take_back_a_row_another_worker_has_sent_since(
        app_ctx, published_notice, run_jobs, standin, db, redis_client, monkeypatch):
    """Worker A moves a row to 'sending' and stalls before calling WeChat, past two lease periods. The sweeper gives
    the row back (A never called it); worker B claims it, WeChat takes it, B is killed before marking it sent; the
    next sweep fails it as 结果未知 (WeChat may have it). A wakes up, finds its lease gone and the row failed as
    结果未知, and took it back as "never sent by me": pending again, and the next worker pushed it a second time. A now
    takes back only a row failed under its own lease."""
    nid = published_notice(1, fanout_claim_batch=10, fanout_send_chunk=10)
    broadcast.expand_notice(nid)
    api = broadcast._api()
    template, data, page = _chunk_args(nid)
    limiter = broadcast.RateLimiter(redis_client, 10000, 100)
    token_a, rows_a = broadcast._claim(nid, 10)
    ((row_id, _user_id, openid),) = rows_a
    real_acquire = broadcast.RateLimiter.acquire
    seen: dict[str, int] = {}

    def a_stalls_here(self) -> None:
        if not seen:  # A, between moving the row to 'sending' and calling WeChat
            seen["first_sweep"] = broadcast.sweep_leases(lease_seconds=-1)["returned"]
            token_b, rows_b = broadcast._claim(nid, 10)
            seen["b_claimed"] = len(rows_b)
            with pytest.raises(SystemExit):
                broadcast._send_chunk(_DiesAfterWeChatTookIt(api), limiter, token_b, rows_b, template, data, page,
                                      notice_id=nid)
            seen["second_sweep"] = broadcast.sweep_leases(lease_seconds=-1)["unknown"]
        real_acquire(self)

    monkeypatch.setattr(broadcast.RateLimiter, "acquire", a_stalls_here)
    outcomes = broadcast._send_chunk(api, limiter, token_a, rows_a, template, data, page, notice_id=nid)
    monkeypatch.setattr(broadcast.RateLimiter, "acquire", real_acquire)
    assert seen == {"first_sweep": 1, "b_claimed": 1, "second_sweep": 1}, seen
    assert outcomes == ["lost_lease"]
    assert _calls_for(standin, openid) == 1  # B's call

    broadcast.sweep_leases(force=True)  # the tick (or 重新启动): restarts the fan-out if anything is open
    run_jobs()
    assert _calls_for(standin, openid) == 1, "the user got the notice twice"
    db.expire_all()
    row = db.get(OutboxRow, row_id)
    assert (row.status, row.errcode) == ("failed", broadcast.UNKNOWN_RESULT)  # at most once: B's call may have gone


def test_control_a_stalled_worker_still_takes_back_the_rows_it_never_sent_when_redis_lost_its_record(
        app_ctx, published_notice, run_jobs, standin, db, redis_client, monkeypatch):
    """The other side (nothing lost): Redis lost the record of which rows A handed to WeChat, so the sweeper failed all
    of A's chunk as 结果未知. A, still alive, sends the row in hand (unknown to the sweeper) and finds at its next
    renewal that it lost the lease of the row it never called: that one it takes back (its own lease), and it goes out
    once, later. Without _reclaim_unsent that user never got the notice."""
    nid = published_notice(2, fanout_claim_batch=10, fanout_send_chunk=10)
    broadcast.expand_notice(nid)
    monkeypatch.setattr(broadcast, "LEASE_SECONDS", 0)  # A renews (and so learns what it lost) before every send
    api = broadcast._api()
    template, data, page = _chunk_args(nid)
    limiter = broadcast.RateLimiter(redis_client, 10000, 100)
    token_a, rows_a = broadcast._claim(nid, 10)
    (first, second) = rows_a
    real_acquire = broadcast.RateLimiter.acquire
    seen: dict[str, int] = {}

    def a_stalls_here(self) -> None:
        if not seen:
            redis_client.delete(broadcast.CALLED_KEY.format(token_a))  # Redis restarted empty meanwhile
            seen["unknown"] = broadcast.sweep_leases(lease_seconds=-1)["unknown"]
        real_acquire(self)

    monkeypatch.setattr(broadcast.RateLimiter, "acquire", a_stalls_here)
    outcomes = broadcast._send_chunk(api, limiter, token_a, rows_a, template, data, page, notice_id=nid)
    monkeypatch.setattr(broadcast.RateLimiter, "acquire", real_acquire)
    assert seen == {"unknown": 2}
    assert outcomes == ["sent", "lost_lease"]
    db.expire_all()
    assert db.get(OutboxRow, second[0]).status == "pending"  # taken back, its credit with it

    monkeypatch.setattr(broadcast, "LEASE_SECONDS", 120)
    broadcast.sweep_leases(force=True)
    run_jobs()
    db.expire_all()
    assert (db.get(OutboxRow, first[0]).status, db.get(OutboxRow, second[0]).status) == ("failed", "sent")
    assert _calls_for(standin, first[2]) == 1 and _calls_for(standin, second[2]) == 1  # each once, none lost

