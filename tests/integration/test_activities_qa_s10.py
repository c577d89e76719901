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


def test_a_rejected_registrant_gets_the_result_template_they_subscribed_to(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, run_jobs, db):
    """Registering for an approval activity asks credit for the registration-result template (registration_approved);
    a rejection is the other answer to the same question and goes out through it, as a cancellation does."""
    from wxapp_backend.notices import credits

    aid = new_activity(capacity=2, requires_approval=True)
    u = make_user()
    reg = _reg(client, aid, user_token(u)).get_json()
    assert reg["status"] == "pending_approval"
    template = "PLACEHOLDER-registration-result"
    assert template in reg["subscribe"]["template_ids"]
    with session_scope() as s:
        credits.add_credit(s, u.id, template)
    resp = client.post(f"/api/v1/staff/registrations/{reg['id']}/reject", json={"note": "名额调整"},
                       headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    sent = standin.calls_to("/cgi-bin/message/subscribe/send")
    assert [c.body["template_id"] for c in sent] == [template], sent
    assert sent[0].body["touser"] == u.openid
    assert sent[0].body["data"]["phrase2"]["value"] == "未通过"
