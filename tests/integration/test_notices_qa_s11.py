"""Notices QA (session 11): customer-service windows opened only by the pushes that open them, the reminder
credit kept for the nearer reminder, 活动调整 as a kind of its own, and credits / inbox / retries on failures."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

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
SHANGHAI_TZ = ZoneInfo("Asia/Shanghai")

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
    # Reports on our own sends come from the user's openid too (every recipient of a template or mass message).
    ("TEMPLATESENDJOBFINISH", {"MsgID": "200163836", "Status": "success"}),
    ("MASSSENDJOBFINISH", {"MsgID": "1000001625", "Status": "send success"}),
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


# --- 2. the reminder credit goes to the nearer reminder --------------------------------------------------------

def _registered(make_activity, user, start) -> int:
    from wxapp_backend.activities.models import Registration

    a = make_activity(starts_at=start)
    with session_scope() as s:
        s.add(Registration(activity_id=a.id, user_id=user.id, status="confirmed", active_key=f"{a.id}:{user.id}"))
    return a.id


def _remind(activity_id: int, label: str, now) -> list[str]:
    """Make the label's reminders and deliver them; the statuses, in the order made."""
    from wxapp_backend.activities import jobs

    jobs.send_reminders(activity_id, label, now=now)
    with session_scope() as s:
        ids = s.scalars(select(Notification.id).where(Notification.dedup_key.like(f"reminder:%:{label}:%"),
                                                      Notification.status == "pending")
                        .order_by(Notification.id)).all()
    return [deliver_notification(i) for i in ids]


def _reminder_credits(user) -> int:
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import SubscribeCredit

    with session_scope() as s:
        return s.scalar(select(SubscribeCredit.credits).where(
            SubscribeCredit.user_id == user.id,
            SubscribeCredit.template_id == get_kind("activity_reminder").template_id))


def _give(user, n: int, kind: str = "activity_reminder") -> None:
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.kinds import get_kind

    with session_scope() as s:
        for _ in range(n):
            credits.add_credit(s, user.id, get_kind(kind).template_id)


def test_the_24_hour_reminder_leaves_the_only_credit_to_the_1_hour_reminder(app_ctx, make_activity, make_user,
                                                                              standin, db):
    """A user who allowed one reminder when registering got it the day before, and then nothing an hour before
    the start (the reminder that gets people there). The 24-hour one now goes to 消息 (or by customer-service
    message when a window is open) and the credit waits for the 1-hour one."""
    from wxapp_backend.notices.models import InboxItem, NotificationAttempt

    start = utcnow().replace(microsecond=0) + timedelta(hours=30)
    user = make_user()
    aid = _registered(make_activity, user, start)
    _give(user, 1)
    sent = len(standin.calls_to(SUBSCRIBE))
    assert _remind(aid, "24h", start - timedelta(hours=24)) == ["inbox_only"]
    assert len(standin.calls_to(SUBSCRIBE)) == sent and _reminder_credits(user) == 1
    assert db.scalar(select(NotificationAttempt.outcome)) == "skipped"
    assert db.query(InboxItem).filter_by(user_id=user.id).count() == 1
    assert _remind(aid, "1h", start - timedelta(hours=1)) == ["sent_subscribe"]
    assert len(standin.calls_to(SUBSCRIBE)) == sent + 1 and _reminder_credits(user) == 0


def test_with_two_credits_both_reminders_go_as_subscribe_messages(app_ctx, make_activity, make_user, standin):
    start = utcnow().replace(microsecond=0) + timedelta(hours=30)
    user = make_user()
    aid = _registered(make_activity, user, start)
    _give(user, 2)
    assert _remind(aid, "24h", start - timedelta(hours=24)) == ["sent_subscribe"]
    assert _reminder_credits(user) == 1
    assert _remind(aid, "1h", start - timedelta(hours=1)) == ["sent_subscribe"]
    assert _reminder_credits(user) == 0


def test_the_24_hour_reminder_goes_by_customer_service_message_when_a_window_is_open(
        app_ctx, make_activity, make_user, standin):
    start = utcnow().replace(microsecond=0) + timedelta(hours=30)
    user = make_user(last_message_at=utcnow() - timedelta(minutes=10))
    aid = _registered(make_activity, user, start)
    _give(user, 1)
    assert _remind(aid, "24h", start - timedelta(hours=24)) == ["sent_custom"]
    assert _reminder_credits(user) == 1


def test_credits_are_kept_for_every_1_hour_reminder_still_to_come(app_ctx, make_activity, make_user, standin):
    """Two activities tomorrow and two credits: each 1-hour reminder has its credit; the 24-hour ones take none.
    Once a 1-hour reminder has gone out, the credit it no longer needs is not held back for it."""
    start = utcnow().replace(microsecond=0) + timedelta(hours=30)
    user = make_user()
    first = _registered(make_activity, user, start)
    second = _registered(make_activity, user, start + timedelta(hours=3))
    _give(user, 2)
    assert _remind(first, "24h", start - timedelta(hours=24)) == ["inbox_only"]
    assert _remind(second, "24h", start - timedelta(hours=21)) == ["inbox_only"]
    assert _reminder_credits(user) == 2
    assert _remind(first, "1h", start - timedelta(hours=1)) == ["sent_subscribe"]
    assert _remind(second, "1h", start + timedelta(hours=2)) == ["sent_subscribe"]
    assert _reminder_credits(user) == 0
    # Another activity the day after: its 24-hour reminder needs to leave one credit (for its own 1-hour one).
    third = _registered(make_activity, user, start + timedelta(hours=30))
    _give(user, 2)
    assert _remind(third, "24h", start + timedelta(hours=6)) == ["sent_subscribe"]
    assert _reminder_credits(user) == 1


# --- 3. 活动调整 has a kind of its own --------------------------------------------------------------------------

def _move(application, activity_id: int, hours: int = 24) -> None:
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.activities.services import update_activity
    from wxapp_backend.audit import SYSTEM

    with application.app_context(), session_scope() as s:
        a = s.get(Activity, activity_id)
        update_activity(s, SYSTEM, activity_id, {"starts_at": (a.starts_at + timedelta(hours=hours)).isoformat(),
                                                 "ends_at": (a.ends_at + timedelta(hours=hours)).isoformat()})


def _changed_notes(application) -> list[str]:
    with application.app_context():
        with session_scope() as s:
            ids = s.scalars(select(Notification.id).where(Notification.dedup_key.like("activity_changed:%"))
                            .order_by(Notification.id)).all()
        return [deliver_notification(i) for i in ids]


def test_a_change_of_time_goes_with_the_activity_changed_template(app, app_ctx, make_activity, make_user, standin,
                                                                  db):
    """活动调整 was sent as a generic notice (template "notice", its title and note fields): a template for the
    change (活动名称 / 新时间 / 地点 / 说明) could not be configured for it, and the registrant's credit for notices
    was spent on it. It is the kind activity_changed now, with its own template and field mapping."""
    from wxapp_backend.notices.kinds import get_kind

    start = utcnow().replace(microsecond=0) + timedelta(days=3)
    user = make_user()
    aid = _registered(make_activity, user, start)
    _give(user, 1, "activity_changed")
    _give(user, 1, "notice")
    sent = len(standin.calls_to(SUBSCRIBE))
    _move(app, aid)
    assert db.scalar(select(Notification.kind).where(Notification.dedup_key.like("activity_changed:%"))) == \
        "activity_changed"
    assert _changed_notes(app) == ["sent_subscribe"]
    (call,) = standin.calls_to(SUBSCRIBE)[sent:]
    kind = get_kind("activity_changed")
    assert call.body["template_id"] == kind.template_id != get_kind("notice").template_id
    data = {k: v["value"] for k, v in call.body["data"].items()}
    new_start = (start + timedelta(days=1)).astimezone(SHANGHAI_TZ)
    assert data == {"thing1": "垂直马拉松", "time2": f"{new_start.year}年{new_start.month}月{new_start.day}日 "
                                                     f"{new_start:%H:%M}",
                    "thing3": "中心大厦", "thing4": "时间或地点有调整"}, data


def test_without_a_template_of_its_own_the_change_goes_with_the_notice_template(settings, app_ctx, make_activity,
                                                                               make_user, standin, tmp_path):
    """A deployment whose NOTIFY_TEMPLATES file names the notice template but none for activity_changed (made before
    the kind existed) keeps sending 活动调整 with the notice template and its fields, as before."""
    path = tmp_path / "kinds.yaml"
    path.write_text("notice:\n  template_id: REAL-notice-qa11\n", encoding="utf-8")
    application = create_app(settings.with_overrides(notify_templates_path=str(path)))
    start = utcnow().replace(microsecond=0) + timedelta(days=3)
    user = make_user()
    aid = _registered(make_activity, user, start)
    from wxapp_backend.notices import credits

    with session_scope() as s:
        credits.add_credit(s, user.id, "REAL-notice-qa11")
    sent = len(standin.calls_to(SUBSCRIBE))
    _move(application, aid)
    assert _changed_notes(application) == ["sent_subscribe"]
    (call,) = standin.calls_to(SUBSCRIBE)[sent:]
    assert call.body["template_id"] == "REAL-notice-qa11"
    assert {k: v["value"] for k, v in call.body["data"].items()}.keys() == {"thing1", "time2", "thing3"}
    assert call.body["data"]["thing1"]["value"] == "活动调整：垂直马拉松"
    assert call.body["data"]["thing3"]["value"] == "时间或地点有调整"


def test_the_kinds_file_configures_activity_changed_like_the_other_kinds(tmp_path):
    from wxapp_backend.config import ConfigError
    from wxapp_backend.notices.kinds import DEFAULT_KINDS, parse_kinds

    own = parse_kinds({"notice": {"template_id": "REAL-notice"},
                       "activity_changed": {"template_id": "REAL-changed",
                                            "fields": {"thing1": "activity", "time3": "time"}}})
    assert (own["activity_changed"].template_id, own["activity_changed"].fields) == \
        ("REAL-changed", {"thing1": "activity", "time3": "time"})
    fell = parse_kinds({"notice": {"template_id": "REAL-notice"}})["activity_changed"]
    assert (fell.template_id, fell.fields, fell.page) == ("REAL-notice", DEFAULT_KINDS["notice"].fields,
                                                          "pages/activity/detail")
    off = parse_kinds({"notice": {"template_id": ""}})["activity_changed"]
    assert off.template_id == ""  # notices switched off: so is their stand-in
    assert parse_kinds({"activity_changed": {"fallback": ""},
                        "notice": {"template_id": "REAL-notice"}})["activity_changed"].template_id.startswith(
        "PLACEHOLDER-")
    with pytest.raises(ConfigError):
        parse_kinds({"activity_changed": {"fallback": "no_such_kind"}})
    with pytest.raises(ConfigError):
        parse_kinds({"activity_changed": {"fallback": 3}})


def test_registering_asks_for_the_change_template_too(app_ctx):
    from wxapp_backend.activities.services import subscribe_hint
    from wxapp_backend.notices.kinds import get_kind

    changed = get_kind("activity_changed").template_id
    for status in ("confirmed", "waitlisted", "pending_approval"):
        hint = subscribe_hint(status)
        assert hint["template_ids"][0] == get_kind("activity_reminder").template_id
        assert changed in hint["template_ids"] and len(hint["template_ids"]) <= 3, hint


# --- review: credits, retries, inbox ----------------------------------------------------------------------------

def test_a_reminder_whose_retry_finds_the_registration_cancelled_is_not_pushed_and_the_credit_comes_back(
        app_ctx, make_activity, make_user, standin, db):
    """A stale reminder (registration cancelled, activity moved) is not pushed when its delivery runs late, but
    only a first try checked it: the retry of a try WeChat answered "too fast" (45011) re-sent the stale reminder on
    the credit held for it. The retry now ends it in 消息 and gives the credit back."""
    from wxapp_backend.activities.models import Registration
    from wxapp_backend.notices.models import NotificationAttempt
    from wxapp_backend.wechat.client import WeChatAPIError

    start = utcnow().replace(microsecond=0) + timedelta(minutes=50)
    user = make_user()
    aid = _registered(make_activity, user, start)
    _give(user, 1)
    from wxapp_backend.activities import jobs

    assert jobs.send_reminders(aid, "1h") == 1
    nid = db.scalar(select(Notification.id).where(Notification.dedup_key.like("reminder:%:1h:%")))
    standin.fail_next(SUBSCRIBE, 45011)
    with pytest.raises(WeChatAPIError):
        deliver_notification(nid)
    assert _reminder_credits(user) == 0  # held for the retry
    with session_scope() as s:
        s.scalar(select(Registration).where(Registration.activity_id == aid)).status = "cancelled"
    sent = len(standin.calls_to(SUBSCRIBE))
    assert deliver_notification(nid) == "inbox_only"
    assert len(standin.calls_to(SUBSCRIBE)) == sent
    assert _reminder_credits(user) == 1
    db.expire_all()
    assert [a.outcome for a in db.scalars(select(NotificationAttempt))] == ["skipped"]


def test_rows_a_stalled_worker_never_sent_get_their_credit_back_and_go_out_once(published_notice, app_ctx, make_user, make_staff,
                                                                                run_jobs, standin, db, monkeypatch):
    """A fan-out worker that stalls past its lease (a long pause mid-chunk) finds at its next renewal that the sweeper
    has failed its chunk's 'sending' rows as 结果未知. The rows it had not sent yet were left so, for good: the users
    never got the notice and the credit claimed for them was gone. They now get the credit back and go out once."""
    from wxapp_backend.notices import broadcast
    from wxapp_backend.notices.broadcast_models import OutboxRow
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import SubscribeCredit

    template = get_kind("notice").template_id
    users = [make_user() for _ in range(3)]
    nid = published_notice(users, fanout_claim_batch=3, fanout_send_chunk=3)
    broadcast.expand_notice(nid)
    monkeypatch.setattr(broadcast, "LEASE_SECONDS", 0)  # the worker renews its lease before every send
    real = broadcast.RateLimiter.acquire
    stalls = []

    def stall_once(self):
        if not stalls:  # the worker stalls before its first send: the sweeper takes the chunk meanwhile
            stalls.append(broadcast.sweep_leases(lease_seconds=-1))
        return real(self)

    monkeypatch.setattr(broadcast.RateLimiter, "acquire", stall_once)
    broadcast.send_notice(nid)
    # none of the chunk was handed to WeChat yet: all three back to 'pending', and the stalled worker sends none
    # of them afterwards (QA s18; they were 结果未知, the first sent all the same)
    assert stalls[0]["unknown"] == 0 and stalls[0]["returned"] == 3
    monkeypatch.setattr(broadcast.RateLimiter, "acquire", real)
    run_jobs()
    db.expire_all()
    rows = sorted((r.status, r.errcode) for r in db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe"))
    assert rows == [("sent", 0)] * 3, rows
    sent = [c.body["touser"] for c in standin.calls_to(SUBSCRIBE) if c.body.get("template_id") == template]
    assert sorted(sent) == sorted(u.openid for u in users)  # everyone once
    assert [c.credits for c in db.query(SubscribeCredit).filter(
        SubscribeCredit.user_id.in_([u.id for u in users]))] == [0] * 3


def test_a_test_send_shows_the_template_values_staff_wrote(app_ctx, client, make_user, make_staff, staff_headers,
                                                          run_jobs, standin):
    """The test send made its subscribe message from the title and summary again, so a staff member who wrote the
    template values themselves previewed something other than what the notice would send."""
    from wxapp_backend.notices.kinds import get_kind

    staff = make_staff(role="staff")
    h = staff_headers(staff)
    me = make_user()
    _give(me, 1, "notice")
    given = {"thing1": "补贴申报提醒", "time2": "2025年03月01日 09:00", "thing3": "请在月底前提交材料"}
    nid = client.post("/api/v1/staff/notices", json={"title": "稳岗补贴开始申报", "summary": "本周五前提交材料",
                                                     "audience": {"all": True}, "template_fields": given},
                      headers=h).get_json()["id"]
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": me.id}, headers=h).status_code == 200
    assert client.post(f"/api/v1/staff/notices/{nid}/test", json={}, headers=h).get_json()["sent"] is True
    sent = len(standin.calls_to(SUBSCRIBE))
    run_jobs()
    (call,) = standin.calls_to(SUBSCRIBE)[sent:]
    assert call.body["template_id"] == get_kind("notice").template_id
    assert {k: v["value"] for k, v in call.body["data"].items()} == given


def test_a_day_before_reminder_delivered_within_the_last_hour_is_not_pushed(app_ctx, make_activity, make_user,
                                                                            standin, db):
    """The 24-hour reminder's delivery waited (a queue backlog, a retry after WeChat's -1) until the 1-hour reminder
    was due: it still went out, saying 明天 an hour before the start, on a second credit for the same news."""
    from wxapp_backend.activities import jobs

    start = utcnow().replace(microsecond=0) + timedelta(minutes=50)
    user = make_user()
    aid = _registered(make_activity, user, start)
    _give(user, 2)
    assert jobs.send_reminders(aid, "24h", now=start - timedelta(hours=24)) == 1
    nid = db.scalar(select(Notification.id).where(Notification.dedup_key.like("reminder:%:24h:%")))
    sent = len(standin.calls_to(SUBSCRIBE))
    assert deliver_notification(nid) == "inbox_only"
    assert len(standin.calls_to(SUBSCRIBE)) == sent and _reminder_credits(user) == 2
    assert _remind(aid, "1h", start - timedelta(hours=1)) == ["sent_subscribe"]
    assert _reminder_credits(user) == 1
