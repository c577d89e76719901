"""Notices QA (session 11): customer-service windows opened only by the pushes that open them, the reminder
credit kept for the nearer reminder, 活动调整 as a kind of its own, and credits / inbox / retries on failures."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from wxapp_backend import create_app
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.notices.jobs import deliver_notification
from wxapp_backend.notices.models import Notification
from wxapp_backend.notices.services import notify
from wxapp_backend.wechat.chat import make_push, seal_push
from wxapp_backend.wechat.jobs import event_window_key, window_key
from wxapp_backend.wechat.pipeline import account_from_settings, user_cache_key

CUSTOM = "/cgi-bin/message/custom/send"
SUBSCRIBE = "/cgi-bin/message/subscribe/send"

_apps: dict = {}


@pytest.fixture
def oa(settings):
    """An Official Account taking plain pushes (sharing the session's database and Redis)."""
    if "oa" not in _apps:
        _apps["oa"] = create_app(settings.with_overrides(wechat_token="qa11token", wechat_require_encryption=False))
    return _apps["oa"]


def _push(application, openid: str, **kw) -> None:
    acct = account_from_settings(application.extensions["wxapp"].settings, "oa")
    args, body = seal_push(acct, make_push(acct, openid, **kw))
    resp = application.test_client().post("/wechat?" + urlencode(args), data=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)


def _follower(make_user, name: str, *, wrote_ago: timedelta = timedelta(days=3)) -> User:
    """An Official Account follower (never in the mini-program) who last wrote `wrote_ago` ago."""
    oid = f"oQa11{name}".ljust(28, "x")
    return make_user(openid=f"oa:{oid}", oa_openid=oid, last_message_at=utcnow() - wrote_ago)


def _tell(application, user_id: int) -> int:
    with application.app_context(), session_scope() as s:
        return notify(s, user_id, "registration_cancelled", {"title": "楼宇音乐会", "result": "已取消"},
                      title="活动已取消", body="很抱歉，您报名的活动已取消。").id


def _last_message_at(db, user_id: int):
    db.expire_all()
    return db.get(User, user_id).last_message_at


# --- 1. which pushes open a customer-service window ------------------------------------------------------------

@pytest.mark.parametrize("event, extra", [
    ("LOCATION", {"Latitude": "31.2", "Longitude": "121.4", "Precision": "30.0"}),
    ("VIEW", {"EventKey": "https://example.org/policy"}),
])
def test_a_location_report_or_a_menu_link_opens_no_window(oa, app_ctx, make_user, standin, db, event, extra):
    """An Official Account's LOCATION report (sent by itself on entering the chat) and a VIEW menu link set
    last_message_at, from which a notification restored a 48-hour window: the customer-service send that followed
    was refused by WeChat with 45015 (WeChat opens no window for either)."""
    user = _follower(make_user, event)
    before = _last_message_at(db, user.id)
    _push(oa, user.oa_openid, event=event, extra=extra)
    assert _last_message_at(db, user.id) == before
    calls = len(standin.calls_to(CUSTOM))
    nid = _tell(oa, user.id)
    with oa.app_context():
        assert deliver_notification(nid) == "inbox_only"
    assert len(standin.calls_to(CUSTOM)) == calls


@pytest.mark.parametrize("event, key", [("CLICK", "menu_policy"), ("scancode_push", "scan_1"),
                                        ("scancode_waitmsg", "scan_2"), ("subscribe", None), ("SCAN", "lobby")])
def test_a_menu_click_a_scan_or_a_follow_opens_the_window(oa, app_ctx, make_user, standin, db, event, key):
    """The other side: the events WeChat opens the window for still do, in Redis and in last_message_at (the two
    scan-code menu buttons opened none before)."""
    user = _follower(make_user, event.lower())
    before = _last_message_at(db, user.id)
    _push(oa, user.oa_openid, event=event, event_key=key)
    assert _last_message_at(db, user.id) > before
    r = oa.extensions["wxapp"].redis
    assert r.exists(event_window_key("oa", user.oa_openid))
    calls = len(standin.calls_to(CUSTOM))
    nid = _tell(oa, user.id)
    with oa.app_context():
        assert deliver_notification(nid) == "sent_custom"
    assert len(standin.calls_to(CUSTOM)) == calls + 1
    # Redis lost (a restart): the 48-hour window is restored from the click's last_message_at.
    r.delete(event_window_key("oa", user.oa_openid), window_key("oa", user.oa_openid))
    nid = _tell(oa, user.id)
    with oa.app_context():
        assert deliver_notification(nid) == "sent_custom"


def test_a_message_after_a_location_report_still_opens_the_window(oa, app_ctx, make_user, standin, db):
    user = _follower(make_user, "both")
    _push(oa, user.oa_openid, event="LOCATION", extra={"Latitude": "31.2", "Longitude": "121.4"})
    oa.extensions["wxapp"].redis.delete(user_cache_key("oa", user.oa_openid))
    _push(oa, user.oa_openid, text="你好")
    assert utcnow() - _last_message_at(db, user.id).replace(tzinfo=utcnow().tzinfo) < timedelta(minutes=1)
    nid = _tell(oa, user.id)
    with oa.app_context():
        assert deliver_notification(nid) == "sent_custom"
    assert db.scalar(select(Notification.status).where(Notification.id == nid)) == "sent_custom"
