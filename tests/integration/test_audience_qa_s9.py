"""Who gets what (session 9 QA): notice and activity audiences, subscriptions and reminders, checked with several
users in different situations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def _changes(client, headers) -> list[str]:
    items = client.get("/api/v1/me/inbox", headers=headers).get_json()["items"]
    return [i["body"] for i in items if i["title"].startswith("活动调整")]


# --- activity changes ------------------------------------------------------------------------------------

def test_an_activity_moved_to_a_time_told_before_is_told_again(client, new_activity, make_user, user_token,
                                                                staff, staff_headers):
    """Moved to next week, back, and to next week again: the registrant last heard "this week", so the third
    move must be told too (the notice was keyed by the new time and place only, and that one was told before)."""
    start = datetime.now(UTC) + timedelta(days=2)
    aid = new_activity(start=start)
    u = make_user()
    assert _reg(client, aid, user_token(u)).status_code == 201
    h = staff_headers(staff)

    def move(to):
        body = {"starts_at": to.isoformat(), "ends_at": (to + timedelta(hours=2)).isoformat()}
        assert client.patch(f"/api/v1/staff/activities/{aid}", json=body, headers=h).status_code == 200

    later = start + timedelta(days=7)
    move(later)
    move(start)
    told = _changes(client, user_token(u))
    assert len(told) == 2, told
    assert start.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") in told[0]  # the newest first
    move(later)
    assert len(_changes(client, user_token(u))) == 3


# --- one person, two rows --------------------------------------------------------------------------------

def test_a_notice_that_reached_both_rows_of_one_person_is_in_their_inbox_once(
        app_ctx, client, standin, make_staff, staff_headers, run_jobs, monkeypatch):
    """An Official Account follower and their mini-program row, not yet linked, are two users: a notice to
    everyone reaches both. Linking them kept one outbox row but moved both inbox copies, so the person read
    the same notice twice in 消息."""
    from sqlalchemy import select

    from wxapp_backend.audit import AuditLog
    from wxapp_backend.auth import linking
    from wxapp_backend.auth.models import User
    from wxapp_backend.db import session_scope

    monkeypatch.setattr(linking, "QUIET_SECONDS", 0)
    resp = client.post("/api/v1/auth/login", json={"code": "erin~1"})
    assert resp.status_code == 200, resp.get_json()
    mp_headers = {"Authorization": f"Bearer {resp.get_json()['token']}"}
    with session_scope() as s:  # a follower from before linking (no link job queued for it)
        oa = standin.oa_openid_for("erin")
        follower = User(openid=f"oa:{oa}", oa_openid=oa)
        s.add(follower)
        s.flush()
        follower_id = follower.id
    h = staff_headers(make_staff(role="staff"))
    n = client.post("/api/v1/staff/notices", json={"title": "稳岗补贴开始申报", "audience": {"all": True}},
                    headers=h).get_json()
    assert n["reach"]["recipients"] == 2  # two rows of one person, as far as anyone can tell yet
    assert client.post(f"/api/v1/staff/notices/{n['id']}/publish", json={}, headers=h).status_code == 200
    run_jobs()
    assert linking.link_oa_user(follower_id) == "merged"
    items = client.get("/api/v1/me/inbox", headers=mp_headers).get_json()["items"]
    assert [i["title"] for i in items].count("稳岗补贴开始申报") == 1, items
    with session_scope() as s:
        row = s.scalar(select(AuditLog).where(AuditLog.action == "user.merged"))
        assert row.data["dropped"].get("inbox_items") == 1


# --- audiences naming buildings that do not exist -----------------------------------------------------------

def test_an_activity_audience_naming_a_missing_building_is_refused(client, staff, staff_headers, make_building,
                                                                   make_user, user_token, db):
    """A mistyped building id in 面向楼宇 (the JSON API takes any number) was stored as it came: the workers of
    the building meant were refused ("您所在的楼宇不在范围内"), and an audience of only such ids refused everyone,
    with nothing to tell staff why. It is now a 422 naming the field."""
    from wxapp_backend.activities.models import Activity

    b = make_building()
    start = datetime.now(UTC) + timedelta(days=2)
    body = {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "capacity": 5,
            "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat(),
            "audience_building_ids": [b.id, 999999]}
    h = staff_headers(staff)
    resp = client.post("/api/v1/staff/activities", json=body, headers=h)
    assert resp.status_code == 422, resp.get_json()
    assert "audience_building_ids" in resp.get_json()["fields"] and "楼宇" in resp.get_json()["message"]
    assert db.query(Activity).count() == 0
    resp = client.post("/api/v1/staff/activities", json={**body, "audience_building_ids": [b.id]}, headers=h)
    assert resp.status_code == 201
    aid = resp.get_json()["id"]
    bad = client.patch(f"/api/v1/staff/activities/{aid}", json={"audience_building_ids": [999999]}, headers=h)
    assert bad.status_code == 422 and "audience_building_ids" in bad.get_json()["fields"]
    assert _reg(client, aid, user_token(make_user(building_id=b.id))).status_code == 201


def test_a_notice_audience_naming_a_missing_building_or_activity_is_refused(client, make_staff, staff_headers,
                                                                            make_building, make_user, db):
    """The same for a notice: building 999999 beside a real one gave a reach that looked plausible, and the
    workers of the building meant were left out of the push."""
    from wxapp_backend.notices.broadcast_models import Notice

    b = make_building()
    make_user(building_id=b.id)
    h = staff_headers(make_staff(role="staff"))

    def create(audience):
        return client.post("/api/v1/staff/notices", json={"title": "楼宇停电通知", "audience": audience}, headers=h)

    bad = create({"building_ids": [b.id, 999999]})
    assert bad.status_code == 422 and "audience.building_ids" in bad.get_json()["fields"], bad.get_json()
    bad = create({"registrants_of": 999999})
    assert bad.status_code == 422 and "audience.registrants_of" in bad.get_json()["fields"], bad.get_json()
    assert db.query(Notice).count() == 0
    ok = create({"building_ids": [b.id]})
    assert ok.status_code == 201 and ok.get_json()["reach"]["recipients"] == 1
    edit = client.patch(f"/api/v1/staff/notices/{ok.get_json()['id']}", json={"audience": {"building_ids": [999999]}},
                        headers=h)
    assert edit.status_code == 422 and "audience.building_ids" in edit.get_json()["fields"]


# --- followers who left ----------------------------------------------------------------------------------------

def test_a_follower_who_unfollowed_gets_no_customer_service_message(app, settings, standin, db):
    """They wrote to the Official Account (its 48-hour window opened), then unfollowed: WeChat takes no
    customer-service message to someone who left (43004), yet a notification for them (a registration cancelled
    with its activity, an appeal's progress) was still sent there, spending a send of the window for a
    refusal. The unfollow now shuts the window: the notification stays in 消息 only."""
    from urllib.parse import urlencode

    from wxapp_backend import create_app
    from wxapp_backend.auth.models import User
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.notices.models import Notification
    from wxapp_backend.notices.services import notify
    from wxapp_backend.wechat.chat import make_push, seal_push
    from wxapp_backend.wechat.pipeline import account_from_settings

    oa = create_app(settings.with_overrides(wechat_token="pamtest", wechat_appid="wxb11529c136998cb6",
                                            wechat_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"))
    acct = account_from_settings(oa.extensions["wxapp"].settings, "oa")

    def push(**kw):
        args, body = seal_push(acct, make_push(acct, "oLeaver1", **kw))
        assert oa.test_client().post("/wechat?" + urlencode(args), data=body).status_code == 200

    push(text="你好")
    push(event="unsubscribe")
    with oa.app_context():
        with session_scope() as s:
            uid = s.query(User).filter_by(oa_openid="oLeaver1").one().id
            note = notify(s, uid, "registration_cancelled", {"title": "楼宇音乐会", "result": "已取消"},
                          title="活动已取消", body="很抱歉，您报名的活动已取消。")
            nid = note.id
        before = len(standin.calls_to("/cgi-bin/message/custom/send"))
        assert deliver_notification(nid) == "inbox_only"
    assert len(standin.calls_to("/cgi-bin/message/custom/send")) == before
    assert db.get(Notification, nid).status == "inbox_only"


# --- reminders that arrive late ---------------------------------------------------------------------------------

def test_a_reminder_still_waiting_to_go_out_is_not_pushed_after_the_registration_is_cancelled(
        client, app_ctx, new_activity, make_user, user_token, run_jobs, standin, db):
    """The reminder job makes the notification; its delivery is a job of its own (retried, or re-queued by the
    sweep after a lost worker or a Redis outage). Cancelled in between, the user was still pushed "活动将于明天
    开始" for a seat they had given back."""
    from wxapp_backend.activities import jobs
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import Notification

    start = datetime.now(UTC) + timedelta(days=2)
    aid = new_activity(start=start)
    keep, leave = make_user(), make_user()
    rids = {u.id: _reg(client, aid, user_token(u)).get_json()["id"] for u in (keep, leave)}
    template = get_kind("activity_reminder").template_id
    with session_scope() as s:  # two acceptances: a single one is kept for the 1-hour reminder (session 11)
        for u in (keep, leave):
            credits.add_credit(s, u.id, template)
            credits.add_credit(s, u.id, template)
    run_jobs()  # what creating the activity and registering queued (nothing is due yet)
    sent_before = len(standin.calls_to("/cgi-bin/message/subscribe/send"))
    assert jobs.send_reminders(aid, "24h", now=start - timedelta(hours=24)) == 2  # their deliveries wait queued
    assert client.post(f"/api/v1/registrations/{rids[leave.id]}/cancel", json={},
                       headers=user_token(leave)).status_code == 200
    run_jobs()
    calls = standin.calls_to("/cgi-bin/message/subscribe/send")[sent_before:]
    assert len(calls) == 1, calls
    statuses = {n.user_id: n.status for n in db.query(Notification).filter_by(kind="activity_reminder")}
    assert statuses == {keep.id: "sent_subscribe", leave.id: "inbox_only"}


# --- who may register --------------------------------------------------------------------------------------------

def test_a_worker_with_no_building_is_told_to_fill_it_in_not_that_it_is_out_of_range(
        client, new_activity, make_building, make_user, user_token):
    """A new user has no building yet: the building-limited activity told them "您所在的楼宇不在范围内", about a
    building they never gave. They are now told what to fill in; someone of another building still hears the
    range."""
    b, other = make_building(), make_building()
    aid = new_activity(audience_building_ids=[b.id])
    r = _reg(client, aid, user_token(make_user()))
    assert r.status_code == 403 and r.get_json()["error"] == "not_eligible"
    assert "不在范围内" not in r.get_json()["message"] and "填写" in r.get_json()["message"], r.get_json()
    r = _reg(client, aid, user_token(make_user(building_id=other.id)))
    assert r.status_code == 403 and "不在范围内" in r.get_json()["message"]
    assert _reg(client, aid, user_token(make_user(building_id=b.id))).status_code == 201


# --- leaving the audience while the notice is on its way ------------------------------------------------------

def test_a_user_who_unsubscribed_or_was_blocked_after_the_expansion_is_not_pushed(
        app_ctx, client, make_user, make_staff, staff_headers, user_token, standin, db, monkeypatch):
    """The outbox is written first and sent afterwards (at the rate limit, with retries up to hours later for
    a busy WeChat). Someone who unsubscribed from the category, or was blocked, in between was still pushed:
    the send now re-checks the audience and leaves them out."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import broadcast, credits
    from wxapp_backend.notices.broadcast_models import OutboxRow
    from wxapp_backend.notices.kinds import get_kind

    extra = client.application.extensions["wxapp"].settings.extra
    for k, v in {"fanout_rate": 10000, "fanout_burst": 100, "fanout_jobs": 1}.items():
        monkeypatch.setitem(extra, k, v)
    stay, leave, blocked = make_user(), make_user(), make_user()
    template = get_kind("notice").template_id
    for u in (stay, leave, blocked):
        assert client.put("/api/v1/me/subscriptions", json={"categories": ["fitness"]},
                          headers=user_token(u)).status_code == 200
        with session_scope() as s:
            credits.add_credit(s, u.id, template)
    h = staff_headers(make_staff(role="staff"))
    nid = client.post("/api/v1/staff/notices", json={"title": "健身季报名开启", "audience": {"categories": ["fitness"]}},
                      headers=h).get_json()["id"]
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=h).status_code == 200
    broadcast.expand_notice(nid)  # the outbox for all three; nothing sent yet
    assert client.put("/api/v1/me/subscriptions", json={"categories": []}, headers=user_token(leave)).status_code == 200
    with session_scope() as s:
        s.get(type(blocked), blocked.id).blocked = True
    before = len(standin.calls_to("/cgi-bin/message/subscribe/send"))
    broadcast.send_notice(nid)
    sent = [c.body["touser"] for c in standin.calls_to("/cgi-bin/message/subscribe/send")[before:]]
    assert sent == [stay.openid], sent
    rows = {r.user_id: r.status for r in db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe")}
    assert rows == {stay.id: "sent", leave.id: "skipped", blocked.id: "skipped"}
    assert client.get(f"/api/v1/staff/notices/{nid}/progress", headers=h).get_json()["finished"]
    with session_scope() as s:  # the credits of those left out were not spent
        assert {u.id: credits.credits_by_template(s, u.id)[template].credits for u in (stay, leave, blocked)} == \
            {stay.id: 0, leave.id: 1, blocked.id: 1}


def test_a_reminder_still_waiting_to_go_out_is_not_pushed_after_the_activity_moved(
        client, app_ctx, new_activity, make_user, user_token, run_jobs, standin, db):
    """The same wait, and the activity moved meanwhile: the reminder named the old time ("活动将于明天开始 …
    10:00") while the activity now starts another day; the new time gets its own reminder."""
    from wxapp_backend.activities import jobs
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import Notification

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    aid = new_activity(start=start)
    user = make_user()
    _reg(client, aid, user_token(user))
    with session_scope() as s:
        credits.add_credit(s, user.id, get_kind("activity_reminder").template_id)
    run_jobs()
    assert jobs.send_reminders(aid, "24h", now=start - timedelta(hours=24)) == 1  # its delivery waits queued
    with session_scope() as s:  # moved a week later (the console's and the API's edits both end so)
        s.get(Activity, aid).starts_at = start + timedelta(days=7)
        s.get(Activity, aid).ends_at = start + timedelta(days=7, hours=2)
    run_jobs()
    old = db.query(Notification).filter(Notification.kind == "activity_reminder",
                                        Notification.dedup_key.like(f"%:{int(start.timestamp())}")).one()
    assert old.status == "inbox_only"
    assert not standin.calls_to("/cgi-bin/message/subscribe/send")
