"""White-collar activities, a demanding user's QA pass (session 14, fifth): an approval given at the last minute,
a draft published after its date, and registrants' phone numbers in a department account's hands."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.audit import AuditLog


def _reg(client, aid, headers, answers=None):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def test_an_approval_given_minutes_before_the_start_is_not_held_against_a_worker_who_missed_it(
        client, make_activity, make_user, user_token, staff, staff_headers, db):
    """报名需审核: staff approving a registration ten minutes before the start (or at the door, after it) pushed
    “审核通过” to a worker at their desk; not there in time, they were counted a no-show like anyone who had held the
    seat for days (no_show_count, and behind everyone on every waitlist for 90 days), the very case a seat promoted
    from the waitlist that late is spared. An approval that late is now a seat given late."""
    from wxapp_backend.activities import jobs
    from wxapp_backend.auth.models import User

    late = make_user()
    start = datetime.now(UTC) + timedelta(minutes=10)
    aid = make_activity(capacity=5, starts_at=start, requires_approval=True).id
    mine = _reg(client, aid, user_token(late))
    assert mine["status"] == "pending_approval"
    resp = client.post(f"/api/v1/staff/registrations/{mine['id']}/approve", json={"note": "临时通过"},
                       headers=staff_headers(staff))
    assert resp.status_code == 200 and resp.get_json()["status"] == "confirmed", resp.get_json()
    assert jobs.close_attendance(aid, now=start + timedelta(hours=4, minutes=5)) == 1
    db.expire_all()
    assert db.get(Registration, mine["id"]).status == "no_show"  # what happened stays on record
    assert db.get(User, late.id).no_show_count == 0
    # Nor when staff switch 报名需审核 off minutes before the start, confirming those waiting.
    start = datetime.now(UTC) + timedelta(minutes=10)
    aid = make_activity(capacity=5, starts_at=start, requires_approval=True).id
    mine = _reg(client, aid, user_token(late))
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"requires_approval": False},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    assert jobs.close_attendance(aid, now=start + timedelta(hours=4, minutes=5)) == 1
    db.expire_all()
    assert db.get(User, late.id).no_show_count == 0
    # Approved days ahead and missed still counts.
    start = datetime.now(UTC) + timedelta(days=1)
    aid = make_activity(capacity=5, starts_at=start, requires_approval=True).id
    mine = _reg(client, aid, user_token(late))
    client.post(f"/api/v1/staff/registrations/{mine['id']}/approve", json={}, headers=staff_headers(staff))
    assert jobs.close_attendance(aid, now=start + timedelta(hours=4, minutes=5)) == 1
    db.expire_all()
    assert db.get(User, late.id).no_show_count == 1


def test_a_draft_whose_start_has_passed_cannot_be_published(client, new_activity, staff, staff_headers, db):
    """A draft left over past its date and then published answered 200 (“活动已保存” in the console): nobody could
    ever register for it, attendance closed at once with nobody in it, and the mini-program never listed it, the
    mistake a new activity with a past start is already refused for. Publishing it now says the date has passed."""
    start = datetime.now(UTC) + timedelta(hours=3)
    aid = new_activity(start=start, status="draft")
    with db.begin():
        db.get(Activity, aid).starts_at = datetime.now(UTC) - timedelta(hours=1)  # the draft's date has come
    h = staff_headers(staff)
    before = db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "activity.updated"))
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "published"}, headers=h)
    assert resp.status_code == 422, resp.get_json()
    assert "已经过去" in resp.get_json()["message"] and "starts_at" in resp.get_json()["fields"], resp.get_json()
    db.expire_all()
    assert db.get(Activity, aid).status == "draft"
    assert db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "activity.updated")) == before
    # With a new date in the same save it is published.
    new_start = datetime.now(UTC) + timedelta(days=1)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=h, json={
        "status": "published", "starts_at": new_start.isoformat(),
        "ends_at": (new_start + timedelta(hours=2)).isoformat()})
    assert resp.status_code == 200 and resp.get_json()["status"] == "published", resp.get_json()
