"""Check-in, reminders and 我的报名 after registering, found wanting by exploratory QA (session 16, checkin4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tests.integration.test_activities_qa_s10 import _scan, _starts_in
from wxapp_backend.activities import jobs
from wxapp_backend.activities.models import Activity, Registration, RegistrationEvent
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import InboxItem


def _reg(client, aid, headers):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": {}}, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


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
    event = db.scalars(
        select(RegistrationEvent)
        .where(RegistrationEvent.registration_id == rid_early)
        .order_by(RegistrationEvent.id.desc())
    ).first()
    assert (event.from_status, event.to_status, event.actor) == ("attended", "confirmed", f"staff:{staff.id}")
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


def test_a_second_scan_of_a_code_says_when_it_was_first_used(app, make_activity, make_user, make_staff):
    """A screenshot of someone's code used at the door before them: the second scan answered only “已签到过”, the
    same words as a scan the network sent twice, so staff could not tell a replay from a retry. It says when the code
    was first used (Shanghai time), so staff can ask."""
    from wxapp_backend.activities import checkin
    from wxapp_backend.audit import Actor

    secret = app.extensions["wxapp"].settings.secret_key
    start = datetime(2030, 3, 1, 19, 0, tzinfo=UTC) - timedelta(hours=8)  # 19:00 in Shanghai
    a = make_activity(starts_at=start)
    u = make_user(nickname="白领")
    with session_scope() as s:
        s.add(
            reg := Registration(
                activity_id=a.id, user_id=u.id, status="confirmed", active_key=f"{a.id}:{u.id}"
            )
        )
        s.flush()
        rid = reg.id
    door = Actor("staff", make_staff(role="dept").id, role="dept")
    first = start - timedelta(minutes=18)  # 18:42 in Shanghai
    token = checkin.make_token(secret, rid, first)["token"]
    with session_scope() as s:
        assert checkin.check_in(s, door, secret, token, first)["already"] is False
    with session_scope() as s:
        again = checkin.check_in(s, door, secret, token, first + timedelta(seconds=50))
    assert again["already"] is True and "18:42" in again["message"], again
    assert again["checked_in_at"] == first.isoformat()
