"""White-collar activities (session 17, second pass): a registration made after the 取消报名截止时间 cannot be
cancelled online; the mini-program says so before (register_note) and after (cancel_note), and the staff side's
rough edges found by a demanding centre's staff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

LATE = "取消报名截止时间已过：现在报名后不能在线取消，请确认能参加。"


def _register(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def _late(make_activity, **kw):
    now = datetime.now(UTC)
    return make_activity(starts_at=now + timedelta(days=1), cancel_deadline=now - timedelta(hours=1), **kw)


def test_the_detail_and_the_list_say_before_registering_that_a_late_registration_cannot_be_cancelled(
        client, make_activity, make_user, user_token):
    """Registration stays open after the cancel deadline, and a seat taken then can never be given back online: a
    mistaken tap became a no-show with nothing said before. The detail and each list item carry register_note."""
    late = _late(make_activity, title="截止后仍可报名")
    early = make_activity(title="还能取消", cancel_deadline=datetime.now(UTC) + timedelta(hours=5))
    detail = client.get(f"/api/v1/activities/{late.id}").get_json()
    assert detail["register_note"] == LATE
    assert client.get(f"/api/v1/activities/{early.id}").get_json()["register_note"] is None
    items = {i["title"]: i for i in client.get("/api/v1/activities").get_json()["items"]}
    assert items["截止后仍可报名"]["register_note"] == LATE and items["还能取消"]["register_note"] is None
    # Logged in, the same; once registered it is no longer about registering.
    headers = user_token(make_user())
    assert client.get(f"/api/v1/activities/{late.id}", headers=headers).get_json()["register_note"] == LATE
    assert _register(client, late.id, headers).status_code == 201
    assert client.get(f"/api/v1/activities/{late.id}", headers=headers).get_json()["register_note"] is None


def test_the_note_is_not_given_where_it_would_be_wrong(client, make_activity, make_user, user_token):
    """Registration closed: nothing to warn about. Full with a waitlist: a waitlisted registration may be cancelled
    until the start (and one moved up after the deadline too), so the note says that instead of 不能取消. Needing
    approval: cancellable until staff approve it."""
    now = datetime.now(UTC)
    closed = _late(make_activity, registration_closes_at=now - timedelta(minutes=5))
    assert client.get(f"/api/v1/activities/{closed.id}").get_json()["register_note"] is None
    full = _late(make_activity, capacity=1)
    assert _register(client, full.id, user_token(make_user())).status_code == 201
    note = client.get(f"/api/v1/activities/{full.id}").get_json()["register_note"]
    assert note and "候补" in note and "不能在线取消" not in note
    approval = _late(make_activity, requires_approval=True)
    note = client.get(f"/api/v1/activities/{approval.id}").get_json()["register_note"]
    assert note and "审核通过后不能在线取消" in note


def test_the_late_registration_response_says_it_cannot_be_cancelled(client, make_activity, make_user, user_token):
    """The 201 of a late registration read can_cancel false and nothing else: the worker learned why only when the
    取消 button was missing. cancel_note beside can_cancel says it; a timely registration has none."""
    late = _late(make_activity)
    headers = user_token(make_user())
    body = _register(client, late.id, headers).get_json()
    assert body["can_cancel"] is False and "不能在线取消" in body["cancel_note"], body
    # 我的报名 and the detail's my_registration say the same.
    mine = client.get("/api/v1/me/registrations", headers=headers).get_json()["items"][0]
    assert mine["cancel_note"] == body["cancel_note"]
    assert client.get(f"/api/v1/activities/{late.id}", headers=headers).get_json()[
        "my_registration"]["cancel_note"] == body["cancel_note"]
    timely = make_activity(cancel_deadline=datetime.now(UTC) + timedelta(hours=5))
    body = _register(client, timely.id, headers).get_json()
    assert body["can_cancel"] is True and body["cancel_note"] is None


def test_a_late_waitlisted_or_pending_registration_is_told_what_it_may_still_do(client, make_activity, make_user,
                                                                                user_token):
    full = _late(make_activity, capacity=1)
    assert _register(client, full.id, user_token(make_user())).status_code == 201
    body = _register(client, full.id, user_token(make_user())).get_json()
    assert body["status"] == "waitlisted" and body["can_cancel"] is True and body["cancel_note"] is None
    approval = _late(make_activity, requires_approval=True)
    body = _register(client, approval.id, user_token(make_user())).get_json()
    assert body["status"] == "pending_approval" and body["can_cancel"] is True
    assert "审核通过后不能在线取消" in body["cancel_note"]


def test_the_new_fields_are_documented(client):
    spec = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path, method in (("/api/v1/activities", "get"), ("/api/v1/activities/{activity_id}", "get")):
        op = spec[path][method]
        assert "register_note" in op["summary"] + op.get("description", ""), path
    for path, method in (("/api/v1/activities/{activity_id}/registrations", "post"),
                         ("/api/v1/me/registrations", "get")):
        op = spec[path][method]
        assert "cancel_note" in op["summary"] + op.get("description", ""), path


# --- staff side ------------------------------------------------------------------------------------------


def _form(a, csrf, **over):
    """The console editor's form for `a` as the page shows it, with `over` typed in."""
    from wxapp_backend.activities.console import _local_input

    form = {"csrf_token": csrf, "category": a.category, "title": a.title, "description": "", "address": a.address,
            "capacity": str(a.capacity), "building_id": "", "per_enterprise_cap": "",
            "starts_at": _local_input(a.starts_at), "ends_at": _local_input(a.ends_at), "registration_opens_at": "",
            "registration_closes_at": "", "cancel_deadline": _local_input(a.cancel_deadline),
            "status": "published", "audience_industries": "", "audience_tags": "", "cover_image": "",
            "questions": "", "waitlist_enabled": "y", "cancel_reason": ""}
    return {**form, **over}


def test_a_cancel_reason_without_cancelling_is_refused_not_dropped(client, make_activity, make_user, user_token,
                                                                  staff, staff_headers, console_login, db):
    """取消原因 typed while the status was left at 已发布 (or sent alone through the API) answered 200 / 活动已保存:
    the activity stayed published, nobody was told, and staff believed the registrants had been. Refused with a
    Chinese message saying to set the status to 已取消."""
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.notices.models import Notification

    a = make_activity()
    assert _register(client, a.id, user_token(make_user())).status_code == 201
    for body in ({"cancel_reason": "因台风预警，活动取消"}, {"title": "改个名", "cancel_reason": "因台风预警"}):
        resp = client.patch(f"/api/v1/staff/activities/{a.id}", json=body, headers=staff_headers(staff))
        assert resp.status_code == 422, resp.get_json()
        assert "已取消" in resp.get_json()["message"] and "cancel_reason" in resp.get_json()["fields"]
    resp = client.post(f"/console/activities/{a.id}/edit",
                       data=_form(a, console_login(staff), cancel_reason="因台风预警，活动取消"))
    assert resp.status_code == 422 and "已取消" in resp.get_data(as_text=True)
    db.expire_all()
    assert db.get(Activity, a.id).status == "published" and db.get(Activity, a.id).title == a.title
    told = db.query(Notification).filter(Notification.dedup_key.startswith("registration_cancelled:"))
    assert told.count() == 0
    # Cancelling with the reason still works, and a retry of it is answered as done.
    for _ in range(2):
        resp = client.patch(f"/api/v1/staff/activities/{a.id}", json={"status": "cancelled", "cancel_reason": "台风"},
                            headers=staff_headers(staff))
        assert resp.status_code == 200, resp.get_json()
    assert told.count() == 1  # told once, the retry told nobody again


def test_saving_an_activity_whose_cancel_deadline_has_passed_warns_the_editor(client, make_activity, staff,
                                                                              console_login):
    """A cancel deadline typed in the past (a wrong month), or reached while registration stays open: everyone who
    registers from now on can never cancel online, and the console said only “活动已发布”. The editor now hears it."""
    from datetime import timedelta as td

    from wxapp_backend.activities.console import _local_input

    csrf = console_login(staff)
    start = datetime.now(UTC) + td(days=3)
    form = {"csrf_token": csrf, "category": "concert", "title": "截止写错的音乐会", "description": "", "address": "大堂",
            "capacity": "5", "building_id": "", "per_enterprise_cap": "", "starts_at": _local_input(start),
            "ends_at": _local_input(start + td(hours=2)), "registration_opens_at": "", "registration_closes_at": "",
            "cancel_deadline": _local_input(datetime.now(UTC) - td(days=1)), "status": "published",
            "audience_industries": "", "audience_tags": "", "cover_image": "", "questions": "",
            "waitlist_enabled": "y"}
    resp = client.post("/console/activities/new", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "取消报名截止时间已过" in page and "不能在线取消" in page, page
    # A timely deadline says nothing of it.
    form = {**form, "title": "正常的音乐会", "cancel_deadline": _local_input(datetime.now(UTC) + td(days=1))}
    page = client.get(client.post("/console/activities/new", data=form).headers["Location"]).get_data(as_text=True)
    assert "不能在线取消" not in page


def test_scanning_the_code_of_an_activity_not_started_yet_says_which_activity_and_when(
        app, client, make_activity, make_user, user_token, staff, staff_headers):
    """Someone at today's door with the code of next week's activity: the scanner said only “签到尚未开始”, which read
    to staff whose own activity was under way as if check-in were broken. It names the activity and its start."""
    from wxapp_backend.activities import checkin

    a = make_activity(title="下周的财务沙龙", starts_at=datetime(2035, 3, 8, 6, 0, tzinfo=UTC))  # 14:00 in Shanghai
    rid = _register(client, a.id, user_token(make_user())).get_json()["id"]
    token = checkin.make_token(app.extensions["wxapp"].settings.secret_key, rid)["token"]
    resp = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(staff))
    body = resp.get_json()
    assert resp.status_code == 409 and body["error"] == "checkin_not_open", body
    assert "签到尚未开始" in body["message"] and "下周的财务沙龙" in body["message"], body
    assert "2035-03-08 14:00" in body["message"], body
