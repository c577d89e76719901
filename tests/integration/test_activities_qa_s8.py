"""White-collar activities from the worker's side, found wanting by exploratory QA (session 8): cancelling a
seat given late, reminders' wording, answers to sign-up questions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.db import session_scope


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
