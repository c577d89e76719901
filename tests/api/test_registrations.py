"""Registration: seats, waitlist, idempotency, eligibility, deadlines, cancellation and promotion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wxapp_backend.activities.models import Registration
from wxapp_backend.db import session_scope


def _reg(client, aid, headers, answers=None, key=None):
    h = dict(headers)
    if key:
        h["Idempotency-Key"] = key
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=h)


def test_confirmed_then_waitlisted_then_full(client, new_activity, make_user, user_token):
    aid = new_activity(capacity=1)
    a, b = make_user(), make_user()
    first = _reg(client, aid, user_token(a))
    assert first.status_code == 201 and first.get_json()["status"] == "confirmed"
    assert first.get_json()["subscribe"]["kind"] == "activity_reminder"
    assert _reg(client, aid, user_token(b)).get_json()["status"] == "waitlisted"

    closed = new_activity(capacity=1, waitlist_enabled=False)
    _reg(client, closed, user_token(a))
    full = _reg(client, closed, user_token(b))
    assert full.status_code == 409 and full.get_json()["error"] == "activity_full"


def test_one_active_registration_per_user_and_idempotency(client, new_activity, make_user, user_token, db):
    aid = new_activity()
    u = make_user()
    one = _reg(client, aid, user_token(u), key="k-1")
    again = _reg(client, aid, user_token(u), key="k-1")
    assert again.status_code == 200 and again.get_json()["id"] == one.get_json()["id"]
    dup = _reg(client, aid, user_token(u))
    assert dup.status_code == 409 and dup.get_json()["error"] == "already_registered"
    assert db.query(Registration).count() == 1
    # after cancelling, the same user may register again (the constraint covers active rows only)
    rid = one.get_json()["id"]
    assert client.post(f"/api/v1/registrations/{rid}/cancel", json={}, headers=user_token(u)).status_code == 200
    assert _reg(client, aid, user_token(u)).status_code == 201


def test_database_refuses_a_second_active_row(app_ctx, new_activity, make_user):
    from sqlalchemy.exc import IntegrityError

    aid = new_activity()
    u = make_user()
    with pytest.raises(IntegrityError):
        with session_scope() as s:
            for _ in range(2):
                s.add(Registration(activity_id=aid, user_id=u.id, status="confirmed", active_key=f"{aid}:{u.id}"))
            s.flush()


def test_cancel_promotes_exactly_the_head_of_the_waitlist(client, new_activity, make_user, user_token, db):
    aid = new_activity(capacity=1)
    users = [make_user() for _ in range(4)]
    ids = [_reg(client, aid, user_token(u)).get_json()["id"] for u in users]
    assert client.post(f"/api/v1/registrations/{ids[0]}/cancel", json={}, headers=user_token(users[0])).status_code == 200
    statuses = {r.id: r.status for r in db.query(Registration).all()}
    assert statuses == {ids[0]: "cancelled", ids[1]: "confirmed", ids[2]: "waitlisted", ids[3]: "waitlisted"}
    # the promoted user was told (inbox)
    inbox = client.get("/api/v1/me/inbox", headers=user_token(users[1])).get_json()
    assert inbox["items"][0]["title"] == "候补成功"
    # a newcomer does not jump the queue even though a seat is momentarily free after another cancel
    client.post(f"/api/v1/registrations/{ids[1]}/cancel", json={}, headers=user_token(users[1]))
    newcomer = _reg(client, aid, user_token(make_user()))
    assert newcomer.get_json()["status"] == "waitlisted"
    db.expire_all()
    assert db.get(Registration, ids[2]).status == "confirmed"


def test_raising_capacity_promotes_that_many(client, new_activity, make_user, user_token, staff, staff_headers, db):
    aid = new_activity(capacity=1)
    ids = [_reg(client, aid, user_token(make_user())).get_json()["id"] for _ in range(5)]
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"capacity": 3}, headers=staff_headers(staff))
    assert resp.status_code == 200 and resp.get_json()["seats_left"] == 0
    statuses = [db.get(Registration, i).status for i in ids]
    assert statuses == ["confirmed", "confirmed", "confirmed", "waitlisted", "waitlisted"]
    low = client.patch(f"/api/v1/staff/activities/{aid}", json={"capacity": 2}, headers=staff_headers(staff))
    assert low.status_code == 422 and "capacity" in low.get_json()["fields"]


def test_past_closed_and_not_yet_open(client, new_activity, make_user, user_token, app_ctx):
    u = make_user()
    past = new_activity()
    with session_scope() as s:  # move it into the past directly (the API refuses nothing here: it is history)
        from wxapp_backend.activities.models import Activity

        a = s.get(Activity, past)
        a.starts_at = datetime.now(UTC) - timedelta(hours=3)
        a.ends_at = datetime.now(UTC) - timedelta(hours=1)
    r = _reg(client, past, user_token(u))
    assert r.status_code == 409 and r.get_json()["error"] == "registration_closed"
    soon = datetime.now(UTC) + timedelta(days=5)
    later = new_activity(registration_opens_at=(soon - timedelta(days=1)).isoformat(),
                         starts_at=soon.isoformat(), ends_at=(soon + timedelta(hours=1)).isoformat())
    r = _reg(client, later, user_token(u))
    assert r.status_code == 409 and r.get_json()["error"] == "registration_not_open" and "尚未开始" in r.get_json()["message"]
    closed = new_activity(registration_closes_at=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())
    with session_scope() as s:
        from wxapp_backend.activities.models import Activity

        s.get(Activity, closed).registration_closes_at = datetime.now(UTC) - timedelta(seconds=1)
    r = _reg(client, closed, user_token(u))
    assert r.status_code == 409 and "截止" in r.get_json()["message"]


def test_ineligible_users_are_refused_without_taking_a_seat(client, new_activity, make_user, user_token,
                                                           make_building, make_enterprise):
    b1, b2 = make_building(), make_building()
    aid = new_activity(capacity=1, audience_building_ids=[b1.id])
    outsider = make_user(building_id=b2.id)
    r = _reg(client, aid, user_token(outsider))
    assert r.status_code == 403 and r.get_json()["error"] == "not_eligible" and "楼宇" in r.get_json()["message"]
    insider = make_user(building_id=b1.id)
    assert _reg(client, aid, user_token(insider)).get_json()["status"] == "confirmed"

    ent = make_enterprise(industry="金融", tags=["重点企业"])
    verified_only = new_activity(verified_only=True, audience_industries=["金融"])
    unbound = make_user()
    assert _reg(client, verified_only, user_token(unbound)).status_code == 403
    pending = make_user(enterprise_id=ent.id, binding_state="pending")
    assert _reg(client, verified_only, user_token(pending)).status_code == 403
    contact = make_user(enterprise_id=ent.id, binding_state="verified", role="enterprise_contact")
    assert _reg(client, verified_only, user_token(contact)).status_code == 201
    tagged = new_activity(audience_tags=["规模企业"])
    assert _reg(client, tagged, user_token(contact)).status_code == 403


def test_per_enterprise_cap(client, new_activity, make_user, user_token, make_enterprise):
    ent = make_enterprise()
    aid = new_activity(capacity=10, per_enterprise_cap=2)
    colleagues = [make_user(enterprise_id=ent.id, binding_state="verified") for _ in range(3)]
    assert [_reg(client, aid, user_token(u)).status_code for u in colleagues] == [201, 201, 409]


def test_answers_are_typed(client, new_activity, make_user, user_token):
    questions = [{"key": "size", "label": "T恤尺码", "type": "choice", "options": ["S", "M", "L"], "required": True},
                 {"key": "age", "label": "年龄", "type": "number"},
                 {"key": "phone", "label": "手机号", "type": "phone"}]
    aid = new_activity(questions=questions)
    u = make_user()
    bad = _reg(client, aid, user_token(u), answers={"size": "XXL", "age": "twenty"})
    assert bad.status_code == 422
    fields = bad.get_json()["fields"]
    assert "answers.size" in fields and "answers.age" in fields
    missing = _reg(client, aid, user_token(u), answers={"age": 30})
    assert missing.status_code == 422 and "answers.size" in missing.get_json()["fields"]
    unknown = _reg(client, aid, user_token(u), answers={"size": "M", "shoe": 42})
    assert unknown.status_code == 422 and "answers.shoe" in unknown.get_json()["fields"]
    wrong_type = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": ["M"]}, headers=user_token(u))
    assert wrong_type.status_code == 422
    ok = _reg(client, aid, user_token(u), answers={"size": "M", "age": 30, "phone": "13800000000"})
    assert ok.status_code == 201 and ok.get_json()["answers"] == {"size": "M", "age": 30.0, "phone": "13800000000"}


def test_someone_elses_registration_is_404(client, new_activity, make_user, user_token):
    aid = new_activity()
    owner, other = make_user(), make_user()
    rid = _reg(client, aid, user_token(owner)).get_json()["id"]
    assert client.post(f"/api/v1/registrations/{rid}/cancel", json={}, headers=user_token(other)).status_code == 404
    assert client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(other)).status_code == 404
    assert client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(owner)).status_code == 200


def test_cancel_deadline_on_server_time(client, new_activity, make_user, user_token, staff, staff_headers, app_ctx):
    aid = new_activity(cancel_deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    with session_scope() as s:
        from wxapp_backend.activities.models import Activity

        s.get(Activity, aid).cancel_deadline = datetime.now(UTC) - timedelta(minutes=1)
    late = client.post(f"/api/v1/registrations/{rid}/cancel", json={}, headers=user_token(u))
    assert late.status_code == 409 and late.get_json()["error"] == "cancel_deadline_passed"
    # staff may still cancel
    assert client.post(f"/api/v1/staff/registrations/{rid}/cancel", json={},
                       headers=staff_headers(staff)).get_json()["status"] == "cancelled"


def test_a_registration_not_yet_approved_may_be_withdrawn_after_the_deadline(client, new_activity, make_user,
                                                                              user_token, app_ctx):
    """The cancel deadline protects seats the organiser counts on; a registration staff have not approved yet is
    not one of them, and the user could not take it back while staff might still approve it."""
    aid = new_activity(requires_approval=True, cancel_deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    u = make_user()
    reg = _reg(client, aid, user_token(u)).get_json()
    assert reg["status"] == "pending_approval"
    with session_scope() as s:
        from wxapp_backend.activities.models import Activity

        s.get(Activity, aid).cancel_deadline = datetime.now(UTC) - timedelta(minutes=1)
    mine = client.get("/api/v1/me/registrations", headers=user_token(u)).get_json()["items"]
    assert mine[0]["can_cancel"] is True
    resp = client.post(f"/api/v1/registrations/{reg['id']}/cancel", json={}, headers=user_token(u))
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"


def test_approval_flow_notifies(client, new_activity, make_user, user_token, staff, staff_headers):
    aid = new_activity(capacity=1, requires_approval=True)
    a, b = make_user(), make_user()
    ra = _reg(client, aid, user_token(a)).get_json()
    assert ra["status"] == "pending_approval"
    assert _reg(client, aid, user_token(b)).get_json()["status"] == "waitlisted"
    rejected = client.post(f"/api/v1/staff/registrations/{ra['id']}/reject", json={"note": "名额调整"},
                           headers=staff_headers(staff))
    assert rejected.get_json()["status"] == "rejected"
    regs = client.get(f"/api/v1/staff/activities/{aid}/registrations", headers=staff_headers(staff)).get_json()["items"]
    rb = next(r for r in regs if r["user_id"] == b.id)
    assert rb["status"] == "pending_approval"  # promoted into the approval queue
    ok = client.post(f"/api/v1/staff/registrations/{rb['id']}/approve", json={}, headers=staff_headers(staff))
    assert ok.get_json()["status"] == "confirmed"
    titles = [i["title"] for i in client.get("/api/v1/me/inbox", headers=user_token(b)).get_json()["items"]]
    assert "报名审核通过" in titles
    # Approving again answers like the first time and tells nobody twice (test_activities3_qa_s13).
    again = client.post(f"/api/v1/staff/registrations/{rb['id']}/approve", json={}, headers=staff_headers(staff))
    assert again.status_code == 200 and again.get_json()["status"] == "confirmed"
    titles = [i["title"] for i in client.get("/api/v1/me/inbox", headers=user_token(b)).get_json()["items"]]
    assert titles.count("报名审核通过") == 1


def test_no_show_users_go_behind_same_hour_registrants(app_ctx, new_activity, make_user, db):
    from wxapp_backend.activities import services
    from wxapp_backend.activities.models import Activity

    now = datetime.now(UTC)
    flaky, fresh = make_user(), make_user()
    with session_scope() as s:  # two no-shows in the last 90 days
        for i in range(2):
            start = now - timedelta(days=10 + i)
            old = Activity(category="fitness", title="旧活动", address="x", starts_at=start,
                           ends_at=start + timedelta(hours=1), capacity=5)
            s.add(old)
            s.flush()
            s.add(Registration(activity_id=old.id, user_id=flaky.id, status="no_show"))
    aid = new_activity(capacity=1)
    hour = now.replace(minute=1, second=0, microsecond=0)
    with session_scope() as s:
        services.register(s, activity_id=aid, user_id=make_user().id, now=hour)
        r_flaky, _ = services.register(s, activity_id=aid, user_id=flaky.id, now=hour + timedelta(minutes=1))
        r_fresh, _ = services.register(s, activity_id=aid, user_id=fresh.id, now=hour + timedelta(minutes=2))
        assert r_flaky.penalty == 1 and r_fresh.penalty == 0
        head = r_flaky.id
    with session_scope() as s:
        first = s.scalars(services.select(Registration).where(Registration.activity_id == aid,
                                                              Registration.status == "confirmed")).one()
        services.cancel_registration(s, services.Actor("staff", 1), first.id)
    db.expire_all()
    assert db.get(Registration, head).status == "waitlisted"
    assert db.get(Registration, r_fresh.id).status == "confirmed"


def test_me_registrations(client, new_activity, make_user, user_token):
    aid = new_activity()
    u = make_user()
    _reg(client, aid, user_token(u))
    items = client.get("/api/v1/me/registrations", headers=user_token(u)).get_json()["items"]
    assert len(items) == 1 and items[0]["activity"]["title"] == "楼宇音乐会"


def test_turning_approval_off_confirms_those_waiting_for_it(client, new_activity, make_user, user_token, staff,
                                                            staff_headers):
    aid = new_activity(capacity=5, requires_approval=True)
    users = [make_user() for _ in range(2)]
    regs = [_reg(client, aid, user_token(u)).get_json() for u in users]
    assert {r["status"] for r in regs} == {"pending_approval"}
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"requires_approval": False},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    for u in users:
        mine = client.get("/api/v1/me/registrations", headers=user_token(u)).get_json()["items"]
        assert mine[0]["status"] == "confirmed"
        inbox = client.get("/api/v1/me/inbox", headers=user_token(u)).get_json()["items"]
        assert any(i["kind"] == "registration_approved" for i in inbox)
