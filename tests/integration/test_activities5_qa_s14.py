"""White-collar activities, a demanding user's QA pass (session 14, fifth): an approval given at the last minute,
a draft published after its date, and registrants' phone numbers in a department account's hands."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
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


def test_a_department_account_does_not_get_the_registrants_phone_numbers(
        client, make_activity, make_user, user_token, make_staff, staff, staff_headers, console_login):
    """A department account checks people in at the door; it decides nothing and calls nobody. The registrations
    page, its Excel export and the staff API still gave it every registrant's mobile (and the numbers typed into
    a 电话 question), though every user's phone is not a department's business anywhere else (the user list is for
    staff and admins). A department now reads 138****8000; staff and admins read the number."""
    from openpyxl import load_workbook

    a = make_activity(questions=[{"key": "tel", "label": "紧急联系电话", "type": "phone"},
                                 {"key": "size", "label": "尺码", "type": "text"}])
    u = make_user(nickname="小王", phone="13800138000")
    _reg(client, a.id, user_token(u), {"tel": "13912345678", "size": "M"})
    url = f"/api/v1/staff/activities/{a.id}/registrations"
    item = client.get(url, headers=staff_headers(make_staff(role="dept"))).get_json()["items"][0]
    assert (item["name"], item["phone"], item["answers"]) == ("小王", "138****8000",
                                                               {"tel": "139****5678", "size": "M"}), item
    item = client.get(url, headers=staff_headers(staff)).get_json()["items"][0]
    assert (item["phone"], item["answers"]["tel"]) == ("13800138000", "13912345678"), item

    csrf = console_login(make_staff(role="dept"))
    page = client.get(f"/console/activities/{a.id}/registrations").get_data(as_text=True)
    assert "138****8000" in page and "139****5678" in page and "13800138000" not in page and "13912345678" not in page
    sheet = load_workbook(io.BytesIO(client.get(f"/console/activities/{a.id}/registrations.xlsx").data)).active
    row = list(sheet.iter_rows(min_row=2, values_only=True))[0]
    assert (row[1], row[2], row[-2], row[-1]) == ("小王", "138****8000", "139****5678", "M"), row
    client.post("/console/logout", data={"csrf_token": csrf})
    console_login(staff)
    sheet = load_workbook(io.BytesIO(client.get(f"/console/activities/{a.id}/registrations.xlsx").data)).active
    row = list(sheet.iter_rows(min_row=2, values_only=True))[0]
    assert (row[2], row[-2]) == ("13800138000", "13912345678"), row


def test_admitting_from_the_waitlist_twice_is_not_an_error(client, new_activity, make_user, user_token, staff,
                                                           staff_headers, db):
    """现场候补入场 tapped twice at the door (or two colleagues on the same list): the second answered 409 “报名当前为
    “已签到”，不是候补，不能现场候补入场”, and the console flashed it as if the person had been turned away, though they
    were in. Like 更正为已到场 and a second scan, the second tap now answers with the registration as it is."""
    from wxapp_backend.activities.models import Activity

    aid = new_activity(capacity=1)
    seat = _reg(client, aid, user_token(make_user()))
    wait = _reg(client, aid, user_token(make_user()))
    with db.begin():
        a = db.get(Activity, aid)
        a.starts_at = datetime.now(UTC) - timedelta(minutes=20)
        a.ends_at = a.starts_at + timedelta(hours=2)
    h = staff_headers(staff)
    client.post(f"/api/v1/staff/registrations/{seat['id']}/cancel", json={}, headers=h)
    url = f"/api/v1/staff/registrations/{wait['id']}/admit"
    for _ in range(2):
        resp = client.post(url, json={"note": "现场有空位"}, headers=h)
        assert resp.status_code == 200 and resp.get_json()["status"] == "attended", resp.get_json()
    assert db.scalar(select(func.count(AuditLog.id)).where(
        AuditLog.action == "registration.admitted_from_waitlist")) == 1


@pytest.mark.postgres
def test_a_no_show_taken_back_while_another_is_counted_loses_neither(app, app_ctx, make_activity, make_user, staff,
                                                                    db, monkeypatch):
    """更正为已到场 lowered the user's 爽约 count in Python (read, minus one, written back) while closing the attendance
    of another activity raises it in SQL. Under PostgreSQL the two run side by side (each locks only its own
    activity): the correction read the count before the other's commit and wrote its stale figure over it, and the
    no-show just counted was lost (SQLite serialises the two). Negative control: one after the other, the same
    figure the interleaving must give."""
    import threading
    import time

    from wxapp_backend.activities import checkin, jobs
    from wxapp_backend.audit import Actor
    from wxapp_backend.auth.models import User
    from wxapp_backend.db import session_scope

    now = datetime.now(UTC)
    actor = Actor("staff", staff.id, role="staff")

    def arrange():
        u = make_user(no_show_count=1)
        corrected = make_activity(starts_at=now - timedelta(hours=6)).id
        ended = make_activity(starts_at=now - timedelta(hours=5)).id
        db.add(Registration(activity_id=corrected, user_id=u.id, status="no_show"))
        db.add(Registration(activity_id=ended, user_id=u.id, status="confirmed"))
        db.commit()
        return u.id, ended, db.scalar(select(Registration.id).where(Registration.activity_id == corrected))

    def correct(reg_id):
        with app.app_context(), session_scope() as s:
            checkin.mark_attended(s, actor, reg_id, "现场手工登记，扫码枪故障")

    # Negative control: one after the other.
    uid, ended, reg_id = arrange()
    assert jobs.close_attendance(ended) == 1
    correct(reg_id)
    db.expire_all()
    assert db.get(User, uid).no_show_count == 1  # 1 + 1 - 1

    # Side by side: the close has counted (not yet committed) when the correction reads the user.
    uid, ended, reg_id = arrange()
    counted, go = threading.Event(), threading.Event()
    original = jobs.mark_user_no_shows

    def count_then_wait(session, user_ids):
        original(session, user_ids)
        counted.set()
        assert go.wait(30)

    monkeypatch.setattr(jobs, "mark_user_no_shows", count_then_wait)

    def close():
        with app.app_context():
            jobs.close_attendance(ended)

    closer = threading.Thread(target=close)
    closer.start()
    assert counted.wait(30)
    corrector = threading.Thread(target=correct, args=(reg_id,))
    corrector.start()
    time.sleep(2)  # the correction has read the user and waits for the close's row lock
    go.set()
    closer.join(30)
    corrector.join(30)
    db.expire_all()
    assert db.get(Registration, reg_id).status == "attended"
    assert db.get(User, uid).no_show_count == 1  # 1 + 1 - 1: neither change lost


def test_a_no_show_taken_back_gives_back_the_waitlist_place_it_cost(client, make_activity, make_user, user_token,
                                                                     staff, staff_headers, db):
    """Two no-shows in 90 days put a worker behind the others of their hour on every waitlist they join. When staff
    found one of the two was a scanner fault (更正为已到场: “爽约记录随之撤销”), the record was corrected but the
    waitlists they were already on kept them at the back, behind someone who registered after them."""
    from sqlalchemy import update

    now = datetime.now(UTC)
    habitual, punctual = make_user(nickname="被误记爽约"), make_user(nickname="准时")
    missed = []
    for days in (10, 20):  # two no-shows in the last 90 days
        past = make_activity(starts_at=now - timedelta(days=days)).id
        reg = Registration(activity_id=past, user_id=habitual.id, status="no_show")
        db.add(reg)
        db.commit()
        missed.append(reg.id)
    aid = make_activity(capacity=1).id
    _reg(client, aid, user_token(make_user()))
    first = _reg(client, aid, user_token(habitual))
    _reg(client, aid, user_token(punctual))
    db.execute(update(Registration).where(Registration.activity_id == aid).values(queue_hour=1))  # one hour
    db.commit()
    mine = client.get(f"/api/v1/activities/{aid}", headers=user_token(habitual)).get_json()["my_registration"]
    assert mine["waitlist_position"] == 2
    resp = client.post(f"/api/v1/staff/registrations/{missed[0]}/attended", json={"note": "扫码枪故障，本人到场"},
                       headers=staff_headers(staff))
    assert resp.status_code == 200 and resp.get_json()["status"] == "attended", resp.get_json()
    mine = client.get(f"/api/v1/activities/{aid}", headers=user_token(habitual)).get_json()["my_registration"]
    assert (mine["id"], mine["waitlist_position"]) == (first["id"], 1)
    other = client.get(f"/api/v1/activities/{aid}", headers=user_token(punctual)).get_json()["my_registration"]
    assert other["waitlist_position"] == 2
