"""The mini-program API under /api/v1, QA session 13: a registration key sent again after a cancel, whole-number
questions, optional login in the OpenAPI document, paging, other users' rows, emoji answers."""

from __future__ import annotations

from wxapp_backend.activities.models import Registration


def _register(client, aid, headers, answers=None, key=None):
    h = {**headers, "Idempotency-Key": key} if key else dict(headers)
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=h)


def _cancel(client, rid, headers):
    return client.post(f"/api/v1/registrations/{rid}/cancel", json={}, headers=headers)


# --- 1. the registration's key, sent again after a cancel ----------------------------------------------------

def test_a_key_sent_again_after_a_cancel_does_not_replay_the_cancelled_registration(client, make_activity,
                                                                                     make_user, user_token, db):
    """报名 (key K), 取消, then 报名 again from a page that kept K: answered 200 with the cancelled registration, the
    page read a 2xx as 报名成功 while the user held no seat. A key names one request: the new registration is
    another, so K is refused (409 idempotency_key_reused) with words that say the earlier one was cancelled and
    what to do; nothing is registered, and a fresh key registers again."""
    a = make_activity()
    h = user_token(make_user())
    first = _register(client, a.id, h, key="reg-k1")
    assert first.status_code == 201, first.get_json()
    assert _cancel(client, first.get_json()["id"], h).status_code == 200
    again = _register(client, a.id, h, key="reg-k1")
    assert again.status_code == 409, again.get_json()
    body = again.get_json()
    assert body["error"] == "idempotency_key_reused", body
    assert "已取消" in body["message"] and "重新" in body["message"], body["message"]
    assert "Idempotency-Key" not in body["message"]
    assert body["fields"].get("registration_id") == str(first.get_json()["id"]), body
    db.expire_all()
    assert [r.status for r in db.query(Registration).filter_by(activity_id=a.id)] == ["cancelled"]
    fresh = _register(client, a.id, h, key="reg-k2")
    assert fresh.status_code == 201 and fresh.get_json()["status"] == "confirmed", fresh.get_json()
    # the new key replays the new registration as before
    replay = _register(client, a.id, h, key="reg-k2")
    assert replay.status_code == 200 and replay.get_json()["id"] == fresh.get_json()["id"]


def test_a_key_of_a_registration_staff_cancelled_is_refused_too(client, make_activity, make_user, user_token,
                                                                 make_staff, staff_headers):
    a = make_activity()
    h = user_token(make_user())
    first = _register(client, a.id, h, key="reg-s1")
    rid = first.get_json()["id"]
    staff = staff_headers(make_staff(role="staff"))
    assert client.post(f"/api/v1/staff/registrations/{rid}/cancel", json={}, headers=staff).status_code == 200
    again = _register(client, a.id, h, key="reg-s1")
    assert again.status_code == 409 and again.get_json()["error"] == "idempotency_key_reused", again.get_json()
