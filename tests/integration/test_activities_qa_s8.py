"""White-collar activities from the worker's side, found wanting by exploratory QA (session 8): cancelling a
seat given late, reminders' wording, answers to sign-up questions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from wxapp_backend.activities import jobs
from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import InboxItem

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def _cancel(client, rid, headers):
    return client.post(f"/api/v1/registrations/{rid}/cancel", json={}, headers=headers)


def _deadline_passed(aid):
    with session_scope() as s:
        s.get(Activity, aid).cancel_deadline = datetime.now(UTC) - timedelta(minutes=1)


# --- the cancel deadline ---------------------------------------------------------------------------------

def test_a_seat_given_from_the_waitlist_after_the_cancel_deadline_can_be_given_back(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    """A waitlisted user may leave until the start; once staff free a seat after the deadline, the waitlist
    head is made a participant without being asked, and must not then be stuck with it (and a no-show)."""
    aid = new_activity(capacity=1, cancel_deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    a, b = make_user(), make_user()
    ra = _reg(client, aid, user_token(a)).get_json()["id"]
    rb = _reg(client, aid, user_token(b)).get_json()["id"]
    _deadline_passed(aid)
    assert client.post(f"/api/v1/staff/registrations/{ra}/cancel", json={},
                       headers=staff_headers(staff)).status_code == 200
    db.expire_all()
    assert db.get(Registration, rb).status == "confirmed"
    resp = _cancel(client, rb, user_token(b))
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled", resp.get_json()


def test_a_seat_held_before_the_cancel_deadline_still_cannot_be_given_back_after_it(
        client, new_activity, make_user, user_token, db):
    aid = new_activity(capacity=1, cancel_deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    _deadline_passed(aid)
    resp = _cancel(client, rid, user_token(u))
    assert resp.status_code == 409 and resp.get_json()["error"] == "cancel_deadline_passed"


def test_registrants_may_cancel_once_the_activity_moved_after_its_cancel_deadline(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    """The change notice says “如不能参加，请在小程序中取消报名”; the passed deadline must not then refuse it."""
    start = datetime.now(UTC) + timedelta(hours=5)
    aid = new_activity(start=start, cancel_deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    _deadline_passed(aid)
    later = start + timedelta(days=1)
    moved = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff), json={
        "starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=2)).isoformat()})
    assert moved.status_code == 200, moved.get_json()
    resp = _cancel(client, rid, user_token(u))
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled", resp.get_json()


def test_a_new_cancel_deadline_given_with_the_move_is_kept(client, new_activity, make_user, user_token, staff,
                                                           staff_headers, db):
    start = datetime.now(UTC) + timedelta(hours=5)
    aid = new_activity(start=start, cancel_deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    _deadline_passed(aid)
    later = start + timedelta(days=2)
    deadline = later - timedelta(days=1)
    moved = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff), json={
        "starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=2)).isoformat(),
        "cancel_deadline": deadline.isoformat()})
    assert moved.status_code == 200, moved.get_json()
    db.expire_all()
    assert db.get(Activity, aid).cancel_deadline == deadline


def test_moving_it_in_the_console_lifts_a_passed_cancel_deadline_too(
        client, new_activity, make_user, user_token, make_staff, console_login, db):
    """The console's edit form sends every field back, the passed deadline included."""
    start = datetime.now(UTC) + timedelta(hours=5)
    aid = new_activity(start=start, cancel_deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    _deadline_passed(aid)
    db.expire_all()
    a = db.get(Activity, aid)
    later = (start + timedelta(days=1)).astimezone(SHANGHAI)
    csrf = console_login(make_staff(role="staff"))
    form = {"csrf_token": csrf, "category": a.category, "title": a.title, "address": a.address,
            "starts_at": later.strftime("%Y-%m-%dT%H:%M"), "ends_at": (later + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
            "cancel_deadline": a.cancel_deadline.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M"),
            "capacity": str(a.capacity), "waitlist_enabled": "on", "status": "published"}
    edit = client.post(f"/console/activities/{aid}/edit", data=form)
    assert edit.status_code == 302, edit.get_data(as_text=True)
    resp = _cancel(client, rid, user_token(u))
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled", resp.get_json()


# --- reminders -----------------------------------------------------------------------------------------

def test_the_24_hour_reminder_says_today_when_the_activity_is_today(app_ctx, make_activity, make_user, db):
    """An activity moved to this evening (or a registration a few hours before it) still gets the
    24-hour reminder at once; it must not tell the user the activity is “明天”."""
    start = datetime(2030, 1, 10, 20, 0, tzinfo=SHANGHAI)
    a = make_activity(starts_at=start.astimezone(UTC))
    early, late = make_user(), make_user()
    with session_scope() as s:  # the late one is not yet confirmed at the on-time reminder, the evening before
        for u, status in ((early, "confirmed"), (late, "waitlisted")):
            s.add(reg := Registration(activity_id=a.id, user_id=u.id, status=status, active_key=f"{a.id}:{u.id}"))
        s.flush()
        late_id = reg.id
    assert jobs.send_reminders(a.id, "24h", now=(start - timedelta(hours=24)).astimezone(UTC)) == 1
    with session_scope() as s:
        s.get(Registration, late_id).status = "confirmed"
    assert jobs.send_reminders(a.id, "24h", now=datetime(2030, 1, 10, 9, 0, tzinfo=SHANGHAI).astimezone(UTC)) == 1
    bodies = {i.user_id: i.body for i in db.scalars(select(InboxItem)).all()}
    assert "明天（2030-01-10 20:00）" in bodies[early.id], bodies
    assert "明天" not in bodies[late.id] and "今天（2030-01-10 20:00）" in bodies[late.id], bodies


# --- answers to sign-up questions ----------------------------------------------------------------------

def test_a_required_multiple_choice_question_needs_at_least_one_choice(client, new_activity, make_user,
                                                                        user_token, db):
    aid = new_activity(questions=[{"key": "topics", "label": "感兴趣的课程", "type": "multi",
                                   "options": ["书法", "手作"], "required": True}])
    for answers in ({"topics": []}, {"topics": [""]}):
        resp = _reg(client, aid, user_token(make_user()), answers)
        assert resp.status_code == 422 and "answers.topics" in resp.get_json()["fields"], resp.get_json()
    assert db.query(Registration).count() == 0
    ok = _reg(client, aid, user_token(make_user()), {"topics": ["手作"]})
    assert ok.status_code == 201 and ok.get_json()["answers"] == {"topics": ["手作"]}
    optional = new_activity(questions=[{"key": "topics", "label": "感兴趣的课程", "type": "multi",
                                        "options": ["书法", "手作"]}])
    assert _reg(client, optional, user_token(make_user()), {"topics": []}).status_code == 201
