"""Notices QA (session 16, notify9): a fan-out that meets a credential WeChat will not take (the access token cannot
be fetched, or is refused again after its one refresh)."""

from __future__ import annotations

import pytest

from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import OutboxRow
from wxapp_backend.notices.models import SubscribeCredit

SUBSCRIBE = "/cgi-bin/message/subscribe/send"
STABLE_TOKEN = "/cgi-bin/stable_token"


def _rows(db, nid):
    db.expire_all()
    return db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").order_by(OutboxRow.id).all()


@pytest.mark.parametrize("fault", ["fetch", "refused"])
def test_a_credential_wechat_refuses_holds_the_fan_out_instead_of_failing_everyone(
    published_notice, run_jobs, standin, db, app, redis_client, monkeypatch, fault
):
    """The mini-program's AppSecret reset in WeChat's admin (stable_token answers 40125) or a token refused again after
    its one refresh (40001): nothing is wrong with any recipient, yet every row of the fan-out failed for good as
    “微信拒绝发送”, in seconds, and once the secret was fixed nothing could send them. They wait (credit kept, no try
    spent), staff read why, and they go out once the credential works."""
    monkeypatch.setitem(app.extensions["wxapp"].settings.extra, "fanout_backoff_override", 0)
    nid = published_notice(3)
    for key in redis_client.scan_iter("*token*"):
        redis_client.delete(key)  # no cached token: the fan-out fetches one
    if fault == "fetch":
        standin.fail_next(STABLE_TOKEN, 40125)  # the others read the failure it left
    else:
        standin.fail_next(SUBSCRIBE, 40001, times=2)
    broadcast.expand_notice(nid)
    broadcast.send_notice(nid)
    rows = _rows(db, nid)
    assert [r.status for r in rows] == ["pending"] * 3, [(r.status, r.detail) for r in rows]
    assert all(r.attempts == 0 for r in rows)
    assert all(c.credits == 1 for c in db.query(SubscribeCredit).all())
    with app.app_context():
        waiting = broadcast.progress(db, nid)["waiting"]
    assert waiting and "凭证" in waiting[0]["detail"] and waiting[0]["count"] == 3
    # The credential works again: the next turn sends each once.
    for key in redis_client.scan_iter("*token*"):
        redis_client.delete(key)
    broadcast.send_notice(nid)
    run_jobs()
    rows = _rows(db, nid)
    assert [r.status for r in rows] == ["sent"] * 3
    taken = [c.body["touser"] for c in standin.calls_to(SUBSCRIBE) if c.errcode == 0]
    assert len(taken) == len(set(taken)) == 3  # each once
