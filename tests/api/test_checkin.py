"""Check-in: rotating signed QR tokens, staff scans (API and console), no-shows, reminders once."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest

from wxapp_backend.activities import checkin, jobs
from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import Notification


@pytest.fixture
def setup(app_ctx, make_user, make_staff):
    def make(starts_in=timedelta(minutes=30), capacity=5, users=1):
        start = datetime.now(UTC) + starts_in
        with session_scope() as s:
            a = Activity(category="training", title="政策培训", address="服务中心", starts_at=start,
                         ends_at=start + timedelta(hours=1), capacity=capacity)
            s.add(a)
            s.flush()
            aid = a.id
        people = [make_user(nickname=f"白领{i}") for i in range(users)]
        regs = []
        with session_scope() as s:
            for u in people:
                r = Registration(activity_id=aid, user_id=u.id, status="confirmed", active_key=f"{aid}:{u.id}")
                s.add(r)
                s.flush()
                regs.append(r.id)
        return aid, people, regs

    return make


def _token(client, user_token, user, rid):
    resp = client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(user))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["token"]


def test_scan_checks_in_once(client, setup, user_token, make_staff, staff_headers, db):
    aid, (u,), (rid,) = setup()
    token = _token(client, user_token, u, rid)
    staff = make_staff(role="dept")
    first = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(staff))
    assert first.status_code == 200 and first.get_json()["already"] is False
    again = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(staff))
    assert again.status_code == 200 and again.get_json()["already"] is True
    assert db.get(Registration, rid).status == "attended"


def test_token_rotates_and_previous_step_is_accepted(app, setup):
    secret = app.extensions["wxapp"].settings.secret_key
    t0 = datetime(2030, 1, 1, 9, 0, 30, tzinfo=UTC)
    tok = checkin.make_token(secret, 7, t0)["token"]
    assert checkin.make_token(secret, 7, t0 + timedelta(seconds=60))["token"] != tok
    assert checkin.verify_token(secret, tok, t0 + timedelta(seconds=70)) == 7  # previous step: fine
    with pytest.raises(Exception) as exc:
        checkin.verify_token(secret, tok, t0 + timedelta(seconds=150))
    assert "过期" in exc.value.message
    with pytest.raises(Exception) as exc:  # from the future
        checkin.verify_token(secret, tok, t0 - timedelta(seconds=150))
    assert exc.value.code == "invalid_token"
    # The phone's clock plays no part in it: the message points at the servers, not the phone.
    assert "手机" not in exc.value.message and "服务器" in exc.value.message
    # Issued by a server whose clock is a few seconds fast (the next step): taken, as the previous step is.
    assert checkin.verify_token(secret, tok, t0 - timedelta(seconds=40)) == 7


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # forged mac
    lambda t: re.sub(r"^C(\d+)", lambda m: f"C{int(m.group(1)) + 1}", t),  # another registration id
    lambda t: "hello",
    lambda t: "",
])
def test_forged_tokens_are_refused(client, setup, user_token, make_staff, staff_headers, mangle):
    aid, (u,), (rid,) = setup()
    bad = mangle(_token(client, user_token, u, rid))
    resp = client.post("/api/v1/staff/checkins", json={"token": bad}, headers=staff_headers(make_staff(role="dept")))
    assert resp.status_code == 422
    assert "签到码" in resp.get_json()["message"] or "签到码" in str(resp.get_json()["fields"])


def test_replayed_after_expiry_is_refused(client, app, setup, make_staff, staff_headers):
    aid, _, (rid,) = setup()
    secret = app.extensions["wxapp"].settings.secret_key
    old = checkin.make_token(secret, rid, datetime.now(UTC) - timedelta(minutes=3))["token"]
    resp = client.post("/api/v1/staff/checkins", json={"token": old}, headers=staff_headers(make_staff(role="dept")))
    assert resp.status_code == 422 and resp.get_json()["error"] == "expired_token"
    assert "已过期" in resp.get_json()["message"]


def test_cancelled_registration_cannot_check_in(client, app, setup, user_token, make_staff, staff_headers, db):
    aid, (u,), (rid,) = setup()
    token = _token(client, user_token, u, rid)
    client.post(f"/api/v1/staff/registrations/{rid}/cancel", json={}, headers=staff_headers(make_staff()))
    resp = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(make_staff(role="dept")))
    assert resp.status_code == 409 and "已取消" in resp.get_json()["message"]
    # and a cancelled registration shows no code at all
    assert client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(u)).status_code == 409


def test_checkin_not_open_days_before(client, setup, user_token, make_staff, staff_headers):
    aid, (u,), (rid,) = setup(starts_in=timedelta(days=2))
    token = _token(client, user_token, u, rid)
    resp = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(make_staff(role="dept")))
    assert resp.status_code == 409 and "尚未开始" in resp.get_json()["message"]


def test_console_checkin_page(client, setup, user_token, make_staff, console_login, db):
    aid, (u,), (rid,) = setup()
    token = _token(client, user_token, u, rid)
    staff = make_staff(role="dept")
    csrf = console_login(staff)
    page = client.get("/console/checkin")
    assert page.status_code == 200 and "签到码" in page.get_data(as_text=True)
    done = client.post("/console/checkin", data={"token": token, "csrf_token": csrf})
    assert done.status_code == 200 and "签到成功" in done.get_data(as_text=True)
    bad = client.post("/console/checkin", data={"token": "C1.2.AAAAAAAAAAAAAAAA", "csrf_token": csrf})
    assert bad.status_code == 422 and "签到码无效" in bad.get_data(as_text=True)
    assert db.get(Registration, rid).status == "attended"


def test_no_shows_after_the_event(app_ctx, setup, db):
    aid, people, regs = setup(users=3)
    with session_scope() as s:
        s.get(Registration, regs[0]).status = "attended"
    assert jobs.close_attendance(aid) == 0  # not over yet
    later = datetime.now(UTC) + timedelta(hours=3)
    assert jobs.close_attendance(aid, later) == 2
    assert jobs.close_attendance(aid, later) == 0  # safe to run twice
    db.expire_all()
    assert [db.get(Registration, r).status for r in regs] == ["attended", "no_show", "no_show"]
    assert [u.no_show_count for u in (db.get(type(people[0]), p.id) for p in people)] == [0, 1, 1]


def test_reminders_are_sent_once_even_with_two_schedulers(app, app_ctx, setup, db):
    aid, people, regs = setup(starts_in=timedelta(minutes=50), users=4)
    results = []

    def run():
        with app.app_context():
            results.append(jobs.send_reminders(aid, "1h"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 4]
    assert jobs.send_due_reminders() == 0  # the sweep finds them done
    keys = sorted(n.dedup_key for n in db.query(Notification).all())
    stamp = int(db.get(Activity, aid).starts_at.timestamp())  # the key carries the start time (postponements)
    assert keys == sorted(f"reminder:{r}:1h:{stamp}" for r in regs)
    # the 24-hour reminder is not sent inside the last hour (the 1-hour one covers it)
    assert jobs.send_reminders(aid, "24h") == 0


def test_reminder_sweep_sends_24h_and_skips_moved_activities(app_ctx, setup, db):
    aid, _, regs = setup(starts_in=timedelta(hours=23), users=2)
    assert jobs.send_due_reminders() == 2
    assert jobs.send_due_reminders() == 0
    # a job scheduled for the old time does nothing once the activity has moved later
    with session_scope() as s:
        a = s.get(Activity, aid)
        a.starts_at += timedelta(days=3)
        a.ends_at += timedelta(days=3)
    assert jobs.send_reminders(aid, "1h") == 0


def test_a_code_for_another_activity_is_refused_at_this_door(client, setup, user_token, make_staff, staff_headers,
                                                             console_login, db):
    """Two activities check in at the same time in different rooms: staff at one door name their activity,
    and a code for the other one is refused instead of checking its holder in there."""
    here, (u,), (rid,) = setup()
    there, (v,), (other_rid,) = setup()
    staff = make_staff(role="dept")
    wrong = client.post("/api/v1/staff/checkins", json={"token": _token(client, user_token, v, other_rid),
                                                        "activity_id": here}, headers=staff_headers(staff))
    assert wrong.status_code == 409 and wrong.get_json()["error"] == "wrong_activity", wrong.get_json()
    assert "政策培训" in wrong.get_json()["message"]
    right = client.post("/api/v1/staff/checkins", json={"token": _token(client, user_token, u, rid),
                                                        "activity_id": here}, headers=staff_headers(staff))
    assert right.status_code == 200 and right.get_json()["already"] is False
    db.expire_all()
    assert db.get(Registration, other_rid).status == "confirmed" and db.get(Registration, rid).status == "attended"
    # the console: both open activities are offered, and the chosen one is kept for the next scan
    csrf = console_login(staff)
    page = client.get("/console/checkin").get_data(as_text=True)
    assert f'<option value="{here}"' in page and f'<option value="{there}"' in page
    refused = client.post("/console/checkin", data={"token": _token(client, user_token, v, other_rid),
                                                     "activity_id": str(here), "csrf_token": csrf})
    body = refused.get_data(as_text=True)
    assert refused.status_code == 409 and "另一场活动" in body and f'<option value="{here}" selected' in body


def test_staff_correct_a_no_show_who_was_there(client, setup, make_staff, staff_headers, console_login, db):
    """Someone came but was not scanned (flat phone): after the no-show sweep staff set the record right, with a
    reason; the no-show count goes back down and the change is audited."""
    from wxapp_backend.audit import AuditLog
    from wxapp_backend.auth.models import User

    aid, people, (late, early) = setup(starts_in=timedelta(hours=-3), users=2)
    jobs.close_attendance(aid, datetime.now(UTC) + timedelta(hours=1))
    db.expire_all()
    assert db.get(User, people[0].id).no_show_count == 1
    h = staff_headers(make_staff(role="staff"))
    url = f"/api/v1/staff/registrations/{late}/attended"
    assert client.post(url, json={}, headers=h).status_code == 422  # a reason is required
    dept = staff_headers(make_staff(role="dept"))
    assert client.post(url, json={"note": "现场手工登记"}, headers=dept).status_code == 403
    resp = client.post(url, json={"note": "现场手工登记"}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["status"] == "attended", resp.get_json()
    assert client.post(url, json={"note": "再点一次"}, headers=h).status_code == 200  # twice changes nothing more
    db.expire_all()
    assert db.get(User, people[0].id).no_show_count == 0 and db.get(Registration, late).checked_in_at is not None
    rows = db.query(AuditLog).filter(AuditLog.action == "registration.attended",
                                     AuditLog.target_id == str(late)).all()
    assert len(rows) == 1 and "现场手工登记" in rows[0].data["note"]
    # the console offers it on the registrations page
    csrf = console_login(make_staff(role="staff"))
    page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
    assert f"/console/registrations/{early}/attended" in page
    done = client.post(f"/console/registrations/{early}/attended", data={"csrf_token": csrf, "note": "签到机故障"})
    assert done.status_code == 302
    db.expire_all()
    assert db.get(Registration, early).status == "attended" and db.get(User, people[1].id).no_show_count == 0


def test_an_activity_not_begun_is_not_marked_attended_by_hand(client, setup, make_staff, staff_headers, db):
    aid, _, (rid,) = setup(starts_in=timedelta(hours=5))
    resp = client.post(f"/api/v1/staff/registrations/{rid}/attended", json={"note": "提前到了"},
                       headers=staff_headers(make_staff(role="staff")))
    assert resp.status_code == 409 and resp.get_json()["error"] == "checkin_not_open"
    db.expire_all()
    assert db.get(Registration, rid).status == "confirmed"
