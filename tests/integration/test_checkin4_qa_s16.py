"""Check-in, reminders and 我的报名 after registering, found wanting by exploratory QA (session 16, checkin4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from wxapp_backend.activities import jobs
from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import InboxItem


def _reg(client, aid, headers):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": {}}, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def _starts_in(aid, delta):
    with session_scope() as s:
        a = s.get(Activity, aid)
        a.starts_at = datetime.now(UTC) + delta
        a.ends_at = a.starts_at + timedelta(hours=2)
        a.registration_opens_at = a.registration_closes_at = a.cancel_deadline = None


def _scan(client, user_token, user, rid, staff_headers, staff):
    token = client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(user)).get_json()["token"]
    resp = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_a_check_in_made_before_the_activity_was_postponed_does_not_count_for_the_new_date(
    client, new_activity, make_user, user_token, staff, staff_headers, db
):
    """Check-in opens two hours before the start. Someone scanned at the door, then staff postponed the activity by
    a week (the speaker fell ill): they stayed “已签到” for an evening that had not happened, were not told the new
    date, got no reminder for it and could not be a no-show. Their check-in is for the old date: they are confirmed
    again, told and reminded like everyone else."""
    aid = new_activity(capacity=3)
    early, late = make_user(), make_user()
    rid_early = _reg(client, aid, user_token(early))
    _reg(client, aid, user_token(late))
    _starts_in(aid, timedelta(minutes=30))
    _scan(client, user_token, early, rid_early, staff_headers, staff)
    new_start = datetime.now(UTC) + timedelta(days=7)
    resp = client.patch(
        f"/api/v1/staff/activities/{aid}",
        headers=staff_headers(staff),
        json={"starts_at": new_start.isoformat(), "ends_at": (new_start + timedelta(hours=2)).isoformat()},
    )
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    reg = db.get(Registration, rid_early)
    assert reg.status == "confirmed" and reg.checked_in_at is None
    told = db.scalars(select(InboxItem.user_id).where(InboxItem.title.startswith("活动调整"))).all()
    assert early.id in told and late.id in told
    mine = client.get("/api/v1/me/registrations", headers=user_token(early)).get_json()["items"][0]
    assert mine["status"] == "confirmed" and mine["checked_in_at"] is None and mine["can_cancel"] is True
    # Reminded for the new date, as the others are.
    assert jobs.send_reminders(aid, "1h", new_start - timedelta(hours=1)) == 2


def test_a_start_put_back_a_little_keeps_those_already_checked_in(
    client, new_activity, make_user, user_token, staff, staff_headers, db
):
    """The negative control: the speaker is twenty minutes late and the start is put back while people wait at the
    door. Check-in for the new start is open: those scanned are there, and stay checked in."""
    aid = new_activity(capacity=3)
    u = make_user()
    rid = _reg(client, aid, user_token(u))
    _starts_in(aid, timedelta(minutes=30))
    _scan(client, user_token, u, rid, staff_headers, staff)
    start = db.get(Activity, aid).starts_at + timedelta(minutes=20)
    resp = client.patch(
        f"/api/v1/staff/activities/{aid}",
        headers=staff_headers(staff),
        json={"starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat()},
    )
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Registration, rid).status == "attended"
