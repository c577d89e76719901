"""White-collar activity flows found wanting by exploratory QA (session 7): cancellation, waitlist, reminders, check-in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from wxapp_backend.activities import jobs
from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import Notification


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def _move(aid, *, starts_at, ends_at):
    with session_scope() as s:
        a = s.get(Activity, aid)
        a.starts_at, a.ends_at = starts_at, ends_at
        a.registration_opens_at = a.registration_closes_at = a.cancel_deadline = None


def _status(db, rid):
    db.expire_all()
    return db.get(Registration, rid).status


# --- cancelled activities ------------------------------------------------------------------------------

def test_a_cancelled_activitys_registrants_are_not_no_shows(client, new_activity, make_user, user_token, staff,
                                                         staff_headers, db):
    """Staff cancel the activity; the delayed close_attendance job later marks its registrants no-show."""
    aid = new_activity(capacity=3)
    users = [make_user() for _ in range(2)]
    rids = [_reg(client, aid, user_token(u)).get_json()["id"] for u in users]
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=staff_headers(staff))
    assert resp.status_code == 200
    ends = db.get(Activity, aid).ends_at
    # the job scheduled at creation (act-noshow-...) fires one hour after the planned end
    marked = jobs.close_attendance(aid, now=ends + timedelta(hours=1, minutes=1))
    db.expire_all()
    no_shows = [db.get(User, u.id).no_show_count for u in users]
    statuses = [_status(db, r) for r in rids]
    assert marked == 0 and statuses != ["no_show", "no_show"] and no_shows == [0, 0], (marked, statuses, no_shows)


def test_cancelling_an_activity_cancels_and_tells_its_registrants(
        client, new_activity, make_user, user_token, staff, staff_headers, db, run_jobs):
    aid = new_activity(capacity=3)
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=staff_headers(staff))
    mine = client.get("/api/v1/me/registrations", headers=user_token(u)).get_json()["items"][0]
    inbox = client.get("/api/v1/me/inbox", headers=user_token(u)).get_json()["items"]
    qr = client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(u))
    problems = []
    if mine["status"] == "confirmed" and "status" not in mine.get("activity", {}):
        problems.append(f"my registrations still says {mine['status']!r} with no sign the activity was cancelled")
    if not any("取消" in (i.get("title", "") + i.get("body", "")) for i in inbox):
        problems.append(f"no inbox notice about the cancellation: {inbox}")
    if qr.status_code == 200:
        problems.append("a check-in QR code is still issued for a cancelled activity")
    assert not problems, problems


def test_a_cancelled_activity_promotes_nobody_from_its_waitlist(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    """Cancelling cancels the pending and the waitlisted registrations too: a later decision finds nothing to
    decide, and nobody is told “候补成功” for an activity that will not take place."""
    from wxapp_backend.activities import services
    from wxapp_backend.audit import SYSTEM

    aid = new_activity(capacity=1, requires_approval=True)
    a, b = make_user(), make_user()
    ra = _reg(client, aid, user_token(a)).get_json()
    rb = _reg(client, aid, user_token(b)).get_json()
    assert (ra["status"], rb["status"]) == ("pending_approval", "waitlisted")
    h = staff_headers(staff)
    assert client.patch(f"/api/v1/staff/activities/{aid}", json={"requires_approval": False}, headers=h).status_code == 200
    assert client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=h).status_code == 200
    assert client.post(f"/api/v1/staff/registrations/{ra['id']}/reject", json={}, headers=h).status_code == 409
    inbox = client.get("/api/v1/me/inbox", headers=user_token(b)).get_json()["items"]
    assert _status(db, rb["id"]) == "cancelled" and not any(i["title"] == "候补成功" for i in inbox)
    with session_scope() as s:  # and promote() itself moves nobody on a cancelled activity
        assert services.promote(s, s.get(Activity, aid), SYSTEM) == []


# --- promotion after the activity began ----------------------------------------------------------------

def test_a_seat_freed_after_the_start_goes_to_nobody(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    aid = new_activity(capacity=1)
    a, b = make_user(), make_user()
    ra = _reg(client, aid, user_token(a)).get_json()["id"]
    rb = _reg(client, aid, user_token(b)).get_json()["id"]
    now = datetime.now(UTC)
    _move(aid, starts_at=now - timedelta(hours=3), ends_at=now - timedelta(minutes=10))  # over ten minutes ago
    assert client.post(f"/api/v1/staff/registrations/{ra}/cancel", json={}, headers=staff_headers(staff)).status_code == 200
    promoted = _status(db, rb)
    inbox = [i["title"] for i in client.get("/api/v1/me/inbox", headers=user_token(b)).get_json()["items"]]
    jobs.close_attendance(aid, now=now + timedelta(hours=2))
    db.expire_all()
    assert promoted == "waitlisted" and db.get(User, b.id).no_show_count == 0, \
        (promoted, inbox, _status(db, rb), db.get(User, b.id).no_show_count)


# --- reminders -----------------------------------------------------------------------------------------

def test_a_postponed_activity_reminds_again_for_its_new_time(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    start = datetime.now(UTC) + timedelta(hours=23)
    aid = new_activity(capacity=3, start=start)
    u = make_user()
    _reg(client, aid, user_token(u))
    assert jobs.send_reminders(aid, "24h") == 1
    new_start = start + timedelta(days=7)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={
        "starts_at": new_start.isoformat(), "ends_at": (new_start + timedelta(hours=2)).isoformat()},
        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    sent_24 = jobs.send_reminders(aid, "24h", now=new_start - timedelta(hours=24))
    sent_1 = jobs.send_reminders(aid, "1h", now=new_start - timedelta(hours=1))
    notes = db.scalars(select(Notification).where(Notification.user_id == u.id)).all()
    assert sent_24 == 1, (sent_24, sent_1, [(n.kind, n.dedup_key) for n in notes])


# --- input hardening -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [10 ** 400, -(10 ** 400)], ids=["huge", "minus_huge"])
def test_number_answer_too_big_is_a_422_not_a_500(client, new_activity, make_user, user_token, value):
    aid = new_activity(capacity=3, questions=[{"key": "age", "label": "年龄", "type": "number"}])
    resp = _reg(client, aid, user_token(make_user()), answers={"age": value})
    assert resp.status_code == 422, (resp.status_code, resp.get_data(as_text=True)[:300])


@pytest.mark.parametrize("body", [
    {"capacity": 10 ** 400},
    {"per_enterprise_cap": 10 ** 30},
    {"starts_at": "2025-13-01T00:00:00"},
    {"questions": [{"key": "a", "label": "x", "type": "choice", "options": "abc"}]},
    {"questions": [{"key": "a", "label": "x", "type": "number", "required": True}, {"key": "a"}]},
    {"audience_building_ids": [10 ** 20]},
    {"building_id": 999999},
    {"title": "\x00\x01"},
])
def test_staff_create_bad_input_never_500(client, staff, staff_headers, body):
    start = datetime.now(UTC) + timedelta(days=2)
    base = {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(), "capacity": 2}
    resp = client.post("/api/v1/staff/activities", json={**base, **body}, headers=staff_headers(staff))
    assert resp.status_code in (400, 404, 409, 422), (resp.status_code, resp.get_data(as_text=True)[:300])


@pytest.mark.parametrize("answers", [
    {"when": "2025-02-30"}, {"when": 20250101}, {"when": ["x"]}, {"size": ["S", "S", "S"]}, {"size": "S"},
    {"size": [None]}, {"phone": 13800138000}, {"phone": {"a": 1}}, {"ok": "maybe"}, {"txt": {"a": 1}},
])
def test_registration_answers_never_500(client, new_activity, make_user, user_token, answers):
    aid = new_activity(capacity=3, questions=[
        {"key": "when", "label": "日期", "type": "date"}, {"key": "size", "label": "尺码", "type": "multi",
                                                          "options": ["S", "M"]},
        {"key": "phone", "label": "电话", "type": "phone"}, {"key": "ok", "label": "是否", "type": "bool"},
        {"key": "txt", "label": "备注", "type": "text"}])
    resp = _reg(client, aid, user_token(make_user()), answers=answers)
    assert resp.status_code in (201, 422), (resp.status_code, resp.get_data(as_text=True)[:300])


# --- check-in window, waitlist exits, silent promotions ------------------------------------------------

def test_no_checkin_after_attendance_closed(client, new_activity, make_user, user_token, make_staff,
                                               staff_headers, db):
    aid = new_activity(capacity=3)
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    now = datetime.now(UTC)
    _move(aid, starts_at=now - timedelta(days=3, hours=2), ends_at=now - timedelta(days=3))  # attendance not closed
    qr = client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(u))
    assert qr.status_code == 409 and qr.get_json()["error"] == "checkin_closed"  # no code is issued any more ...
    from wxapp_backend.activities.checkin import make_token

    token = make_token(client.application.extensions["wxapp"].settings.secret_key, rid)["token"]  # ... nor taken
    resp = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(make_staff(role="dept")))
    assert resp.status_code == 409, (resp.status_code, resp.get_json())


def test_a_waitlisted_user_may_leave_after_the_cancel_deadline(client, new_activity, make_user, user_token,
                                                                      staff, staff_headers, db):
    start = datetime.now(UTC) + timedelta(hours=12)
    aid = new_activity(capacity=1, start=start, cancel_deadline=(start - timedelta(days=1, hours=1)).isoformat(),
                       registration_closes_at=(start - timedelta(hours=1)).isoformat())
    a, b = make_user(), make_user()
    _reg(client, aid, user_token(a))  # takes the one seat
    rb = _reg(client, aid, user_token(b)).get_json()
    assert rb["status"] == "waitlisted"
    leave = client.post(f"/api/v1/registrations/{rb['id']}/cancel", json={}, headers=user_token(b))
    assert leave.status_code == 200, leave.get_json()


def test_promotion_into_pending_approval_is_told(client, new_activity, make_user, user_token, db):
    aid = new_activity(capacity=1, requires_approval=True)
    a, b = make_user(), make_user()
    ra = _reg(client, aid, user_token(a)).get_json()["id"]
    rb = _reg(client, aid, user_token(b)).get_json()["id"]
    assert client.post(f"/api/v1/registrations/{ra}/cancel", json={}, headers=user_token(a)).status_code == 200
    assert _status(db, rb) == "pending_approval"
    inbox = client.get("/api/v1/me/inbox", headers=user_token(b)).get_json()["items"]
    assert inbox, "the user moved from 候补 to 待审核 is not told"


def test_other_users_registration_is_invisible(client, new_activity, make_user, user_token, db):
    aid = new_activity(capacity=3)
    a, b = make_user(), make_user()
    ra = _reg(client, aid, user_token(a)).get_json()["id"]
    assert client.post(f"/api/v1/registrations/{ra}/cancel", json={}, headers=user_token(b)).status_code == 404
    assert client.get(f"/api/v1/registrations/{ra}/qr", headers=user_token(b)).status_code == 404
    assert client.get("/api/v1/me/registrations", headers=user_token(b)).get_json()["items"] == []
    assert _status(db, ra) == "confirmed"


def test_the_attendance_sweep_keeps_the_one_hour_grace(client, new_activity, make_user, user_token, db):
    aid = new_activity(capacity=3)
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    ends = db.get(Activity, aid).ends_at
    jobs.close_ended_activities(now=ends + timedelta(minutes=1))  # periodic safety net, every 15 minutes
    assert _status(db, rid) == "confirmed", "sweep marked a no-show one minute after the end (delayed job waits 1 h)"


def test_a_new_time_or_place_is_told_to_everyone_registered(client, new_activity, make_user, user_token, staff,
                                                             staff_headers):
    aid = new_activity(capacity=1)
    a, b = make_user(), make_user()
    _reg(client, aid, user_token(a))
    assert _reg(client, aid, user_token(b)).get_json()["status"] == "waitlisted"
    h = staff_headers(staff)

    def changes(user) -> list[str]:
        items = client.get("/api/v1/me/inbox", headers=user_token(user)).get_json()["items"]
        return [i["body"] for i in items if i["title"].startswith("活动调整")]

    later = datetime.now(UTC) + timedelta(days=9)
    move = {"starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=2)).isoformat()}
    assert client.patch(f"/api/v1/staff/activities/{aid}", json=move, headers=h).status_code == 200
    assert client.patch(f"/api/v1/staff/activities/{aid}", json=move, headers=h).status_code == 200  # saved twice
    assert client.patch(f"/api/v1/staff/activities/{aid}", json={"title": "新标题"}, headers=h).status_code == 200
    shown = later.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    for user in (a, b):
        told = changes(user)
        assert len(told) == 1 and shown in told[0], told
    assert client.patch(f"/api/v1/staff/activities/{aid}", json={"address": "另一座大厦三楼"}, headers=h).status_code == 200
    assert len(changes(a)) == 2 and "另一座大厦三楼" in changes(a)[0]


# --- status changes that would leave registrants without a word (session 8) ---------------------------

def test_a_published_activity_with_registrants_cannot_go_back_to_draft(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    aid, empty = new_activity(), new_activity()
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    h = staff_headers(staff)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "draft"}, headers=h)
    body = resp.get_json()
    assert resp.status_code == 422 and "已取消" in body["message"] and "status" in body.get("fields", {}), body
    db.expire_all()
    assert db.get(Activity, aid).status == "published" and _status(db, rid) == "confirmed"
    mine = client.get(f"/api/v1/activities/{aid}", headers=user_token(u))
    assert mine.status_code == 200  # still visible to the person who registered
    # nobody registered: going back to draft is fine
    assert client.patch(f"/api/v1/staff/activities/{empty}", json={"status": "draft"}, headers=h).status_code == 200


def test_a_cancelled_activity_stays_cancelled(client, new_activity, make_user, user_token, staff, staff_headers, db):
    aid = new_activity()
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    h = staff_headers(staff)
    assert client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=h).status_code == 200
    for to in ("published", "draft"):
        resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": to}, headers=h)
        assert resp.status_code == 422 and "新建" in resp.get_json()["message"], resp.get_json()
    db.expire_all()
    assert db.get(Activity, aid).status == "cancelled" and _status(db, rid) == "cancelled"
    # other edits of a cancelled activity (a note in the description, say) still save
    assert client.patch(f"/api/v1/staff/activities/{aid}", json={"description": "因故取消"}, headers=h).status_code == 200


def test_a_rejected_registrant_cannot_queue_again_but_a_cancelled_one_can(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    aid = new_activity(capacity=5, requires_approval=True)
    rejected, changed_mind = make_user(), make_user()
    ra = _reg(client, aid, user_token(rejected)).get_json()["id"]
    rb = _reg(client, aid, user_token(changed_mind)).get_json()["id"]
    h = staff_headers(staff)
    assert client.post(f"/api/v1/staff/registrations/{ra}/reject", json={"note": "仅限本楼企业"}, headers=h).status_code == 200
    again = _reg(client, aid, user_token(rejected))
    assert again.status_code == 409 and again.get_json()["error"] == "registration_rejected", again.get_json()
    assert "联系" in again.get_json()["message"]
    assert client.post(f"/api/v1/registrations/{rb}/cancel", json={}, headers=user_token(changed_mind)).status_code == 200
    back = _reg(client, aid, user_token(changed_mind))
    assert back.status_code == 201 and back.get_json()["status"] == "pending_approval", back.get_json()
    with session_scope() as s:
        rows = s.scalars(select(Registration).where(Registration.activity_id == aid,
                                                    Registration.user_id == rejected.id)).all()
        assert [r.status for r in rows] == ["rejected"]
