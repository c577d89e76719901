"""White-collar activities: the gaps an earlier pass of session 11 left (waitlist at the door, promotion attribution,
the staff registrations API, the check-in code after check-in has closed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from wxapp_backend.activities.models import Activity, Registration, RegistrationEvent
from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope


def _reg(client, aid, headers):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": {}}, headers=headers)


def _starts_in(aid, delta, hours=2):
    with session_scope() as s:
        a = s.get(Activity, aid)
        a.starts_at = datetime.now(UTC) + delta
        a.ends_at = a.starts_at + timedelta(hours=hours)
        a.registration_opens_at = a.registration_closes_at = a.cancel_deadline = None


def test_staff_admit_a_waitlisted_person_at_the_door_when_a_seat_is_free(client, new_activity, make_user, user_token,
                                                                        staff, staff_headers, db):
    """Once the activity has started the waitlist stops moving, so a seat freed then stayed empty: the person
    waiting at the door could be neither checked in (该报名还在候补中) nor confirmed, and 我的报名 still said
    候补第 1 位 until attendance closed."""
    aid = new_activity(capacity=1)
    seated, queued, later = make_user(), make_user(), make_user()
    seat = _reg(client, aid, user_token(seated)).get_json()
    wait = _reg(client, aid, user_token(queued)).get_json()
    wait2 = _reg(client, aid, user_token(later)).get_json()
    assert wait["status"] == "waitlisted"
    _starts_in(aid, timedelta(minutes=-20))
    client.post(f"/api/v1/staff/registrations/{seat['id']}/cancel", json={}, headers=staff_headers(staff))

    # The user's view: the waitlist did not move, said plainly, no place in a queue that no longer moves.
    mine = client.get("/api/v1/me/registrations", headers=user_token(queued)).get_json()["items"][0]
    assert (mine["status"], mine["waitlist_position"]) == ("waitlisted", None)
    assert "候补未能递补" in mine["waitlist_note"] and mine["status_label"] == "候补未递补"
    detail = client.get(f"/api/v1/activities/{aid}", headers=user_token(queued)).get_json()["my_registration"]
    assert detail["waitlist_position"] is None and detail["waitlist_note"]
    chat = client.post("/api/v1/chat", json={"text": "我的报名"}, headers=user_token(queued)).get_json()["reply"]
    assert "候补未能递补" in chat and "候补中" not in chat

    url = f"/api/v1/staff/registrations/{wait['id']}/admit"
    assert client.post(url, json={}, headers=staff_headers(staff)).status_code == 422  # a note is required
    resp = client.post(url, json={"note": "现场有空位"}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "attended"
    audit_row = db.scalar(select(AuditLog).where(AuditLog.action == "registration.admitted_from_waitlist"))
    assert (audit_row.actor_type, audit_row.actor_id, audit_row.target_id) == ("staff", str(staff.id), str(wait["id"]))
    # The seat is taken now: the next one waiting is refused with a reason, not let in over capacity.
    full = client.post(f"/api/v1/staff/registrations/{wait2['id']}/admit", json={"note": "也来了"},
                       headers=staff_headers(staff))
    assert (full.status_code, full.get_json()["error"]) == (409, "activity_full")
    assert "名额已满" in full.get_json()["message"]
    # Not before check-in opens, nor after it closes.
    other = new_activity(capacity=1)
    _reg(client, other, user_token(make_user()))
    early = _reg(client, other, user_token(make_user())).get_json()
    resp = client.post(f"/api/v1/staff/registrations/{early['id']}/admit", json={"note": "x"},
                       headers=staff_headers(staff))
    assert resp.get_json()["error"] == "checkin_not_open"


def test_the_console_offers_admission_from_the_waitlist(client, new_activity, make_user, user_token, make_staff,
                                                        console_login, staff, staff_headers):
    aid = new_activity(capacity=1)
    seated, queued = make_user(), make_user()
    seat = _reg(client, aid, user_token(seated)).get_json()
    wait = _reg(client, aid, user_token(queued)).get_json()
    _starts_in(aid, timedelta(minutes=-20))
    client.post(f"/api/v1/staff/registrations/{seat['id']}/cancel", json={}, headers=staff_headers(staff))
    csrf = console_login(make_staff(role="staff"))
    page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
    assert "现场候补入场" in page
    resp = client.post(f"/console/registrations/{wait['id']}/admit",
                       data={"csrf_token": csrf, "note": "现场有空位"}, follow_redirects=True)
    assert "已现场候补入场并签到" in resp.get_data(as_text=True)
    with session_scope() as s:
        assert s.get(Registration, wait["id"]).status == "attended"


def test_a_promotion_is_the_systems_doing_with_a_reference_to_the_cancel(client, new_activity, make_user,
                                                                        user_token, staff, staff_headers, db):
    """The promotion's event and audit row named the user (or staff member) whose cancel freed the seat, as if
    they had confirmed someone else's registration."""
    aid = new_activity(capacity=1)
    seated, queued, queued2 = make_user(), make_user(), make_user()
    seat = _reg(client, aid, user_token(seated)).get_json()
    wait = _reg(client, aid, user_token(queued)).get_json()
    wait2 = _reg(client, aid, user_token(queued2)).get_json()
    client.post(f"/api/v1/registrations/{seat['id']}/cancel", json={}, headers=user_token(seated))
    client.post(f"/api/v1/staff/registrations/{wait['id']}/cancel", json={}, headers=staff_headers(staff))
    for moved, cancelled, by in ((wait, seat, f"user:{seated.id}"), (wait2, wait, f"staff:{staff.id}")):
        event = db.scalar(select(RegistrationEvent).where(RegistrationEvent.registration_id == moved["id"],
                                                          RegistrationEvent.to_status == "confirmed"))
        assert event.actor == "system:system"
        assert f"#{cancelled['id']}" in event.note
        row = db.scalar(select(AuditLog).where(AuditLog.action == "registration.confirmed",
                                               AuditLog.target_id == str(moved["id"])))
        assert row.actor_type == "system"
        assert row.data["cause"] == f"registration:{cancelled['id']}" and row.data["caused_by"] == by
    # The cancel itself is still the canceller's.
    row = db.scalar(select(AuditLog).where(AuditLog.action == "registration.cancelled",
                                           AuditLog.target_id == str(seat["id"])))
    assert (row.actor_type, row.actor_id) == ("user", str(seated.id))


def test_the_staff_registrations_api_reads_like_the_console(client, new_activity, make_user, user_token, make_staff,
                                                            staff_headers, make_enterprise, db):
    """GET /api/v1/staff/activities/<id>/registrations gave user ids only: no name, phone, enterprise or status
    label, and no waitlist place (the registration number is not the order the waitlist moves up in)."""
    ent = make_enterprise(name="黄浦测试科技有限公司")
    aid = new_activity(capacity=1)
    seated = make_user(nickname="小王", phone="13800000001")
    noisy, quiet = make_user(nickname="老爽约"), make_user(nickname="小李", phone="13800000002")
    _reg(client, aid, user_token(seated))
    first = _reg(client, aid, user_token(noisy)).get_json()
    second = _reg(client, aid, user_token(quiet)).get_json()
    with session_scope() as s:  # two no-shows put the first one behind the other of the same hour
        s.get(Registration, first["id"]).penalty = 1
        s.get(Registration, second["id"]).enterprise_id = ent.id
    resp = client.get(f"/api/v1/staff/activities/{aid}/registrations", headers=staff_headers(make_staff(role="staff")))
    assert resp.status_code == 200, resp.get_json()
    items = {i["id"]: i for i in resp.get_json()["items"]}
    assert items[second["id"]]["waitlist_position"] == 1
    assert items[first["id"]]["waitlist_position"] == 2
    assert items[second["id"]]["status_label"] == "候补中（第 1 位）"
    assert (items[second["id"]]["name"], items[second["id"]]["phone"], items[second["id"]]["enterprise"]) == (
        "小李", "13800000002", "黄浦测试科技有限公司")
    seat = next(i for i in items.values() if i["status"] == "confirmed")
    assert (seat["name"], seat["phone"], seat["waitlist_position"], seat["enterprise"]) == (
        "小王", "13800000001", None, "")
    assert seat["status_label"] == "报名成功"


def test_the_check_in_code_is_not_offered_after_check_in_has_closed(client, new_activity, make_user, user_token):
    """Between end + 1 hour (check-in closed) and the attendance sweep (every 15 minutes), 我的报名 still offered
    the code, which the door then refused with 活动已结束，签到已关闭."""
    aid = new_activity(capacity=2)
    user = make_user()
    _reg(client, aid, user_token(user))
    _starts_in(aid, timedelta(hours=-3, minutes=-5), hours=2)  # ended 65 minutes ago; attendance not swept yet
    mine = client.get("/api/v1/me/registrations", headers=user_token(user)).get_json()["items"][0]
    assert (mine["status"], mine["can_show_code"]) == ("confirmed", False)
    _starts_in(aid, timedelta(hours=-2, minutes=-30), hours=2)  # ended 30 minutes ago: check-in still open
    mine = client.get("/api/v1/me/registrations", headers=user_token(user)).get_json()["items"][0]
    assert mine["can_show_code"] is True
