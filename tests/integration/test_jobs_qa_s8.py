"""QA session 8, background jobs: retries that must not spend twice, transient failures that must be retried."""

from __future__ import annotations

import pytest

from wxapp_backend.wechat.client import WeChatAPIError
from wxapp_backend.wechat.jobs import open_window, window_key

CUSTOM = "/cgi-bin/message/custom/send"
MEDIA = "/cgi-bin/media/get"


@pytest.fixture(autouse=True)
def _no_backoff(app_ctx, monkeypatch):
    """Busy (-1) retries inside a call without waiting."""
    from wxapp_backend.wechat import client

    monkeypatch.setitem(app_ctx.extensions, "wxapp_wechat_apis", {})
    real = client.build_api
    monkeypatch.setattr(client, "build_api", lambda *a, **kw: real(*a, **{**kw, "sleep": lambda s: None}))


# --------------------------------------------------------------------------- late replies (客服消息)

def test_a_retried_late_reply_spends_one_window_slot(app_ctx, standin):
    """WeChat busy, then the RQ retry sends it: one message went out, so one of the user's 5 sends is spent
    (each retry used to take another slot: three busy answers left the user one late reply and no
    notification)."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oRetry", kind="message")
    text = {"msgtype": "text", "text": {"content": "稍等，答案来了"}}
    standin.fail_next(CUSTOM, -1, times=3)  # the call's own busy backoff is used up: the job raises
    with pytest.raises(WeChatAPIError):
        wechat_jobs.send_customer_message("wxa", "oRetry", text, "wxa-retry-0")
    assert wechat_jobs.send_customer_message("wxa", "oRetry", text, "wxa-retry-0") == "sent"  # the RQ retry
    assert int(r.hget(window_key("wxa", "oRetry"), "sent")) == 1
    assert wechat_jobs.send_customer_message("wxa", "oRetry", text, "wxa-retry-0") == "already_sent"


def test_different_late_replies_each_spend_a_slot(app_ctx, standin):
    """Control: the slot is kept per send, not per user."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oTwo", kind="message")
    text = {"msgtype": "text", "text": {"content": "答案"}}
    assert wechat_jobs.send_customer_message("wxa", "oTwo", text, "wxa-two-0") == "sent"
    assert wechat_jobs.send_customer_message("wxa", "oTwo", text, "wxa-two-1") == "sent"
    assert int(r.hget(window_key("wxa", "oTwo"), "sent")) == 2
