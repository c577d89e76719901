"""White-collar activities, a demanding user's QA pass (session 14, seventh): a 电话 question turned into a text
question, a registration rejected after the evening was over, and an audience narrowed after people registered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tests.integration.test_activities6_qa_s14 import _notes, _pending, _reg
from wxapp_backend.activities.models import Registration


def test_a_phone_question_turned_into_text_stays_masked_for_a_department(
        client, make_activity, make_user, user_token, make_staff, staff, staff_headers, console_login):
    """A 电话 question changed to a text question (not removed) after it was answered: its answers, read under a
    question no longer typed 电话, were shown whole to a department account. They stay masked, as when removed."""
    questions = [{"key": "contact", "label": "紧急联系电话", "type": "phone"}]
    a = make_activity(questions=questions)
    _reg(client, a.id, user_token(make_user()), {"contact": "13912345678"})
    resp = client.patch(f"/api/v1/staff/activities/{a.id}",
                        json={"questions": [{"key": "contact", "label": "紧急联系人", "type": "text"}]},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    dept = make_staff(role="dept")
    listed = client.get(f"/api/v1/staff/activities/{a.id}/registrations", headers=staff_headers(dept)).get_json()
    assert listed["items"][0]["answers"] == {"contact": "139****5678"}, listed
    console_login(dept)
    page = client.get(f"/console/activities/{a.id}/registrations").get_data(as_text=True)
    assert "13912345678" not in page and "139****5678" in page
    # Staff still read it whole.
    listed = client.get(f"/api/v1/staff/activities/{a.id}/registrations", headers=staff_headers(staff)).get_json()
    assert listed["items"][0]["answers"] == {"contact": "13912345678"}, listed
    # Then removed too: its last form was text, but its answers are still phone numbers.
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"questions": []}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    listed = client.get(f"/api/v1/staff/activities/{a.id}/registrations", headers=staff_headers(dept)).get_json()
    assert listed["items"][0]["answers"] == {"contact": "139****5678"}, listed


def test_rejecting_after_the_activity_ended_tells_nobody(client, make_activity, make_user, staff, staff_headers, db):
    """报名需审核: rejecting, in the hour after the evening ended, a registration nobody decided on pushed
    “未通过审核” about an event that was over, while approving it then is silent. Rejection is silent too."""
    start = datetime.now(UTC) - timedelta(hours=3, minutes=30)
    a = make_activity(starts_at=start, requires_approval=True)
    u = make_user()
    reg_id = _pending(a, u)
    h = staff_headers(staff)
    resp = client.post(f"/api/v1/staff/registrations/{reg_id}/reject", json={"note": "未到场"}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["status"] == "rejected", resp.get_json()
    assert not [n for n in _notes(db, reg_id) if n.kind == "registration_rejected"]
    # Before the end, the rejection is told as ever.
    b = make_activity(requires_approval=True)
    other = _pending(b, u)
    resp = client.post(f"/api/v1/staff/registrations/{other}/reject", json={}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    assert [n for n in _notes(db, other) if n.kind == "registration_rejected"]


def test_narrowing_the_audience_tells_the_editor_how_many_registrants_no_longer_match(
        client, make_activity, make_building, make_user, user_token, staff, staff_headers, console_login, db):
    """面向楼宇 narrowed after people registered: those outside it stayed registered and nobody said a word. They
    are not cancelled (staff decide), but the editor says how many no longer match, and the audit row records it."""
    from wxapp_backend.audit import AuditLog

    east, west = make_building(), make_building()
    a = make_activity(capacity=5)
    inside = _reg(client, a.id, user_token(make_user(building_id=east.id)))
    outside = [_reg(client, a.id, user_token(make_user(building_id=west.id))) for _ in range(2)]
    page = _narrow_in_console(client, a, console_login(staff), east.id)
    assert "2 位报名者不在新的报名范围内" in page, page
    assert "候补中" not in page, page  # nobody outside is waiting
    db.expire_all()
    assert all(db.get(Registration, r["id"]).status == "confirmed" for r in [inside, *outside])
    row = db.scalars(select(AuditLog).where(AuditLog.action == "activity.updated",
                                            AuditLog.target_id == str(a.id))).all()[-1]
    assert row.data.get("out_of_audience") == 2, row.data
    # The API's editor hears it too.
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"verified_only": True},
                        headers=staff_headers(staff))
    assert resp.status_code == 200 and resp.get_json()["out_of_audience"] == 3, resp.get_json()


def _narrow_in_console(client, a, csrf, building_id) -> str:
    """Saves the activity's console form unchanged but for 面向楼宇 (one building); the page staff land on."""
    from wxapp_backend.activities.console import _local_input

    form = {"csrf_token": csrf, "category": a.category, "title": a.title, "description": "", "address": a.address,
            "capacity": str(a.capacity), "building_id": "", "per_enterprise_cap": "",
            "starts_at": _local_input(a.starts_at), "ends_at": _local_input(a.ends_at), "registration_opens_at": "",
            "registration_closes_at": "", "cancel_deadline": "", "status": "published", "audience_industries": "",
            "audience_tags": "", "cover_image": "", "questions": "", "waitlist_enabled": "y",
            "audience_building_ids": [str(building_id)]}
    resp = client.post(f"/console/activities/{a.id}/edit", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client.get(resp.headers["Location"]).get_data(as_text=True)


def test_narrowing_says_how_many_of_those_outside_are_waiting_and_where_they_now_stand(
        client, make_activity, make_building, make_user, user_token, staff, console_login):
    """Those outside the narrowed audience who are on the waitlist now go after the waiting people inside it
    (session 15); the editor's message said nothing of it. It says how many wait and that those inside go first."""
    east, west = make_building(), make_building()
    a = make_activity(capacity=1, waitlist_enabled=True)
    assert _reg(client, a.id, user_token(make_user(building_id=east.id)))["status"] == "confirmed"
    queued = [_reg(client, a.id, user_token(make_user(building_id=west.id))) for _ in range(2)]
    assert [r["status"] for r in queued] == ["waitlisted", "waitlisted"], queued
    page = _narrow_in_console(client, a, console_login(staff), east.id)
    assert "2 位报名者不在新的报名范围内" in page, page
    assert "其中 2 位在候补中：有名额空出时，范围内的候补者先递补。" in page, page


def test_lowering_the_per_enterprise_cap_below_an_enterprise_registered_is_refused(
        client, make_activity, make_enterprise, make_user, user_token, staff, staff_headers):
    """每家企业名额上限 lowered to 1 while three people of one enterprise had registered: saved without a word, they
    all kept their seats over the new cap. As the capacity below the seats taken, it is refused with the count."""
    ent = make_enterprise()
    a = make_activity(capacity=10, per_enterprise_cap=5)
    for _ in range(3):
        _reg(client, a.id, user_token(make_user(enterprise_id=ent.id, binding_state="verified")))
    h = staff_headers(staff)
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"per_enterprise_cap": 1}, headers=h)
    body = resp.get_json()
    assert resp.status_code == 422 and "3" in body["fields"]["per_enterprise_cap"], body
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"per_enterprise_cap": 3}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["per_enterprise_cap"] == 3, resp.get_json()


def test_staff_cancelling_a_registration_after_the_end_tells_nobody(
        client, make_activity, make_user, staff, staff_headers, db):
    """A registration cancelled by staff in the hour after the evening ended (someone who had phoned to say they
    could not come, kept off the no-show list): they were pushed “报名已由工作人员取消” about an evening that was
    over, as approving or rejecting then no longer does. The cancellation is recorded, nobody is told."""
    from wxapp_backend.db import session_scope

    start = datetime.now(UTC) - timedelta(hours=3, minutes=30)
    a = make_activity(starts_at=start)
    u = make_user()
    with session_scope() as s:
        reg = Registration(activity_id=a.id, user_id=u.id, status="confirmed", answers={},
                           active_key=f"{a.id}:{u.id}", queue_hour=0, penalty=0)
        s.add(reg)
        s.flush()
        reg_id = reg.id
    h = staff_headers(staff)
    resp = client.post(f"/api/v1/staff/registrations/{reg_id}/cancel", json={}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled", resp.get_json()
    assert not _notes(db, reg_id)
    # Before the end, the user is told as ever.
    b = make_activity()
    with session_scope() as s:
        reg = Registration(activity_id=b.id, user_id=u.id, status="confirmed", answers={},
                           active_key=f"{b.id}:{u.id}", queue_hour=0, penalty=0)
        s.add(reg)
        s.flush()
        other = reg.id
    resp = client.post(f"/api/v1/staff/registrations/{other}/cancel", json={}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    assert _notes(db, other)
