"""White-collar activities, a demanding user's QA pass (session 14, sixth): a waitlist switched off with people on
it, a question removed after it was answered, an approval given after the evening was over, and who is at the door."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from wxapp_backend.activities.models import Registration
from wxapp_backend.notices.models import Notification


def _reg(client, aid, headers, answers=None):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def _pending(activity, user) -> int:
    """A registration awaiting approval, put straight in (the activity may be over: nobody could register now)."""
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        reg = Registration(activity_id=activity.id, user_id=user.id, status="pending_approval", answers={},
                           active_key=f"{activity.id}:{user.id}", queue_hour=0, penalty=0)
        s.add(reg)
        s.flush()
        return reg.id


def _notes(db, reg_id):
    db.expire_all()
    return list(db.scalars(select(Notification).where(Notification.ref == f"registration:{reg_id}")))


def test_switching_the_waitlist_off_releases_those_waiting_and_tells_them(
        client, make_activity, make_user, user_token, staff, staff_headers, console_login, db):
    """候补 switched off while two people waited: they stayed 候补中 with nobody telling them, and a seat freed later
    still went to them, from a waitlist the organiser had closed. Now they are released, each told, as when a
    registration is cancelled by staff, and nobody is promoted from a waitlist that no longer exists."""
    a = make_activity(capacity=1, waitlist_enabled=True)
    first = _reg(client, a.id, user_token(make_user()))
    waiting = [_reg(client, a.id, user_token(make_user())) for _ in range(2)]
    assert [w["status"] for w in waiting] == ["waitlisted", "waitlisted"]
    h = staff_headers(staff)
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"waitlist_enabled": False}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    for w in waiting:
        assert db.get(Registration, w["id"]).status == "cancelled"
        notes = _notes(db, w["id"])
        assert notes and any("候补" in (n.fields or {}).get("note", "") for n in notes), [n.fields for n in notes]
    assert db.get(Registration, first["id"]).status == "confirmed" and not _notes(db, first["id"])
    # The seat freed afterwards goes to nobody from the closed waitlist.
    resp = client.post(f"/api/v1/staff/registrations/{first['id']}/cancel", json={}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert all(db.get(Registration, w["id"]).status == "cancelled" for w in waiting)
    # In the console's editor, staff read that those waiting were told.
    from wxapp_backend.activities.console import _local_input

    b = make_activity(capacity=1, waitlist_enabled=True)
    _reg(client, b.id, user_token(make_user()))
    queued = _reg(client, b.id, user_token(make_user()))
    csrf = console_login(staff)
    assert "现有 1 人候补" in client.get(f"/console/activities/{b.id}/edit").get_data(as_text=True)
    form = {"csrf_token": csrf, "category": b.category, "title": b.title, "description": "", "address": b.address,
            "capacity": "1", "building_id": "", "per_enterprise_cap": "", "starts_at": _local_input(b.starts_at),
            "ends_at": _local_input(b.ends_at), "registration_opens_at": "", "registration_closes_at": "",
            "cancel_deadline": "", "status": "published", "audience_industries": "", "audience_tags": "",
            "cover_image": "", "questions": ""}
    resp = client.post(f"/console/activities/{b.id}/edit", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert "已通知 1 位候补者" in client.get(resp.headers["Location"]).get_data(as_text=True)
    db.expire_all()
    assert db.get(Registration, queued["id"]).status == "cancelled"


def test_answers_to_a_removed_question_stay_in_the_export_and_the_page_under_its_label(
        client, make_activity, make_user, user_token, staff, staff_headers, console_login):
    """A question removed after people answered it: its answers dropped out of the export without a word, and the
    registrations page showed its bare key (size：L). Both now keep them, under the question's own label."""
    from openpyxl import load_workbook

    questions = [{"key": "name", "label": "姓名", "type": "text"},
                 {"key": "size", "label": "T恤尺码", "type": "choice", "options": ["M", "L"]}]
    a = make_activity(questions=questions)
    _reg(client, a.id, user_token(make_user()), {"name": "张三", "size": "L"})
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"questions": questions[:1]},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    listed = client.get(f"/api/v1/staff/activities/{a.id}/registrations", headers=staff_headers(staff)).get_json()
    assert {q["key"]: q["label"] for q in listed["questions"]} == {"name": "姓名", "size": "T恤尺码（已删除的问题）"}
    console_login(staff)
    sheet = load_workbook(io.BytesIO(client.get(f"/console/activities/{a.id}/registrations.xlsx").data)).active
    header = [c.value for c in sheet[1]]
    row = [c.value for c in sheet[2]]
    assert any(h and "T恤尺码" in h for h in header), header
    assert "L" in row and "张三" in row, row
    page = client.get(f"/console/activities/{a.id}/registrations").get_data(as_text=True)
    assert "size：" not in page and "T恤尺码" in page


def test_approving_after_the_activity_ended_tells_nobody_but_allows_attendance(
        client, make_activity, make_user, staff, staff_headers, db):
    """报名需审核: a registration approved in the hour after the evening ended (to record that the person came)
    pushed “审核通过” to them about an event that was over. The approval is recorded, nobody is told, and staff can
    still mark them attended."""
    start = datetime.now(UTC) - timedelta(hours=3, minutes=30)
    a = make_activity(starts_at=start, requires_approval=True)
    u = make_user()
    reg_id = _pending(a, u)
    h = staff_headers(staff)
    resp = client.post(f"/api/v1/staff/registrations/{reg_id}/approve", json={"note": "现场确认"}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["status"] == "confirmed", resp.get_json()
    assert not [n for n in _notes(db, reg_id) if n.kind == "registration_approved"]
    resp = client.post(f"/api/v1/staff/registrations/{reg_id}/attended", json={"note": "现场手工登记"}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["status"] == "attended", resp.get_json()
    # Before the end, the approval is told as ever.
    b = make_activity(requires_approval=True)
    other = _pending(b, u)
    resp = client.post(f"/api/v1/staff/registrations/{other}/approve", json={}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    assert [n for n in _notes(db, other) if n.kind == "registration_approved"]


def test_the_scan_result_names_the_registrant_with_their_phone_masked_for_a_department(
        app, client, make_activity, make_user, user_token, make_staff, staff, staff_headers, console_login):
    """The scan answered only the nickname (often “微信用户” or an emoji), which let door staff confirm nothing.
    It now gives the name the registrant filled in and their phone, masked for a department account as its roster."""
    from wxapp_backend.activities import checkin

    questions = [{"key": "real_name", "label": "真实姓名", "type": "text", "required": True}]
    a = make_activity(starts_at=datetime.now(UTC) + timedelta(hours=1), questions=questions)
    u = make_user(nickname="🌟", phone="13812348000")
    reg = _reg(client, a.id, user_token(u), {"real_name": "李四"})
    secret = app.extensions["wxapp"].settings.secret_key
    dept = make_staff(role="dept")
    resp = client.post("/api/v1/staff/checkins", json={"token": checkin.make_token(secret, reg["id"])["token"]},
                       headers=staff_headers(dept))
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["name"] == "李四" and body["phone"] == "138****8000", body
    resp = client.post("/api/v1/staff/checkins", json={"token": checkin.make_token(secret, reg["id"])["token"]},
                       headers=staff_headers(staff))
    assert resp.get_json()["phone"] == "13812348000" and resp.get_json()["already"] is True
    # The console's scan page shows the same to the department account at the door.
    csrf = console_login(dept)
    page = client.post("/console/checkin", data={"csrf_token": csrf, "activity_id": str(a.id),
                                                 "token": checkin.make_token(secret, reg["id"])["token"]})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "李四" in text and "138****8000" in text and "13812348000" not in text


def test_switching_approval_off_after_the_end_confirms_without_telling(
        client, make_activity, make_user, staff, staff_headers, db):
    """The same with 报名需审核 switched off in the hour after the end (to record at the door those staff never
    decided on): each was pushed “报名已确认” for an evening that was over. They are confirmed, and told nothing."""
    start = datetime.now(UTC) - timedelta(hours=3, minutes=30)
    a = make_activity(starts_at=start, requires_approval=True)
    reg_id = _pending(a, make_user())
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"requires_approval": False},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Registration, reg_id).status == "confirmed"
    assert not [n for n in _notes(db, reg_id) if n.kind == "registration_approved"]


def test_a_removed_phone_question_stays_masked_for_a_department(
        client, make_activity, make_user, user_token, make_staff, staff, staff_headers, console_login):
    """A 电话 question removed after it was answered: the registrations page showed its answers whole to a
    department account (as any answer whose question it no longer knew), the number the roster masks otherwise."""
    from openpyxl import load_workbook

    questions = [{"key": "contact", "label": "紧急联系电话", "type": "phone"}]
    a = make_activity(questions=questions)
    _reg(client, a.id, user_token(make_user()), {"contact": "13912345678"})
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"questions": []}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    dept = make_staff(role="dept")
    listed = client.get(f"/api/v1/staff/activities/{a.id}/registrations", headers=staff_headers(dept)).get_json()
    assert listed["items"][0]["answers"] == {"contact": "139****5678"}, listed
    console_login(dept)
    page = client.get(f"/console/activities/{a.id}/registrations").get_data(as_text=True)
    assert "13912345678" not in page and "139****5678" in page and "紧急联系电话" in page
    sheet = load_workbook(io.BytesIO(client.get(f"/console/activities/{a.id}/registrations.xlsx").data)).active
    cells = [c.value for row in sheet.iter_rows() for c in row]
    assert "13912345678" not in cells and "139****5678" in cells, cells


def test_a_seat_added_in_the_save_that_closes_the_waitlist_goes_to_its_head_first(
        client, make_activity, make_user, user_token, staff, staff_headers, db):
    """One more seat and 候补 off in one save: the head of the waitlist gets the seat, only the rest are released."""
    a = make_activity(capacity=1, waitlist_enabled=True)
    _reg(client, a.id, user_token(make_user()))
    head, rest = (_reg(client, a.id, user_token(make_user())) for _ in range(2))
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"capacity": 2, "waitlist_enabled": False},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Registration, head["id"]).status == "confirmed"
    assert db.get(Registration, rest["id"]).status == "cancelled"
