"""White-collar activities, found wanting by exploratory QA (session 10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import InboxItem


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


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


def test_an_activity_can_be_cancelled_after_someone_checked_in(client, new_activity, make_user, user_token, staff,
                                                               staff_headers, db):
    """Check-in opens two hours before the start; an activity called off after the first scan (a storm, a fire
    alarm) must still cancel, and those not yet there must be told."""
    aid = new_activity(capacity=3)
    early, late = make_user(), make_user()
    rid_early = _reg(client, aid, user_token(early)).get_json()["id"]
    rid_late = _reg(client, aid, user_token(late)).get_json()["id"]
    _starts_in(aid, timedelta(minutes=30))
    _scan(client, user_token, early, rid_early, staff_headers, staff)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Activity, aid).status == "cancelled"
    assert db.get(Registration, rid_late).status == "cancelled"
    assert db.get(Registration, rid_early).status == "attended"  # they came: the record stays
    told = db.scalars(select(InboxItem.user_id).where(InboxItem.kind == "registration_cancelled")).all()
    assert late.id in told
