"""Mini-program user journeys end to end (QA pass 9): what the screens read agrees and can be rendered."""

from __future__ import annotations


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def test_registration_answers_carry_the_chinese_status_label(client, new_activity, make_user, user_token):
    """Every registration the mini-program shows (the register answer, 我的报名, a cancel) says its status in
    Chinese, as appeals do; it used to give only the code (waitlisted, confirmed, ...)."""
    aid = new_activity(capacity=1)
    first, me = make_user(), make_user()
    seat = _reg(client, aid, user_token(first)).get_json()
    assert seat["status_label"] == "报名成功"
    queued = _reg(client, aid, user_token(me))
    assert queued.status_code == 201 and queued.get_json()["status_label"] == "候补中"
    cancelled = client.post(f"/api/v1/registrations/{seat['id']}/cancel", json={}, headers=user_token(first))
    assert cancelled.get_json()["status_label"] == "已取消"
    mine = client.get("/api/v1/me/registrations", headers=user_token(me)).get_json()["items"]
    assert [(r["status"], r["status_label"]) for r in mine] == [("confirmed", "报名成功")]


# --- enterprise contact: appeals ---------------------------------------------------------------------

APPEAL = {"content": "楼下餐厅油烟太大，影响办公，请帮忙协调", "contact_name": "王五", "contact_phone": "13800138001"}


def _appeal_world(make_user, make_staff, user_token, staff_headers):
    user = make_user(nickname="王五")
    return user_token(user), staff_headers(make_staff(role="admin"))


def _act(client, sh, appeal_id, action, **kw):
    resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", json={"action": action, **kw}, headers=sh)
    assert resp.status_code == 200, resp.get_json()


def test_appeal_detail_says_whether_banbuchengshi_can_be_reported(client, make_user, make_staff, user_token,
                                                                    staff_headers):
    """The detail lists the next actions (can_rate, can_withdraw, can_supplement) but had no flag for 办不成事:
    the button showed on a withdrawn appeal (409) and again after it was reported."""
    uh, _sh = _appeal_world(make_user, make_staff, user_token, staff_headers)
    one = client.post("/api/v1/appeals", json=APPEAL, headers=uh).get_json()
    assert client.get(f"/api/v1/appeals/{one['id']}", headers=uh).get_json()["can_escalate"] is True
    assert client.post(f"/api/v1/appeals/{one['id']}/escalate", json={"reason": "一直没人管"}, headers=uh).status_code == 200
    assert client.get(f"/api/v1/appeals/{one['id']}", headers=uh).get_json()["can_escalate"] is False

    two = client.post("/api/v1/appeals", json=APPEAL, headers=uh).get_json()
    client.post(f"/api/v1/appeals/{two['id']}/withdraw", json={}, headers=uh)
    detail = client.get(f"/api/v1/appeals/{two['id']}", headers=uh).get_json()
    assert detail["can_escalate"] is False
    refused = client.post(f"/api/v1/appeals/{two['id']}/escalate", json={}, headers=uh)
    assert refused.status_code == 409


def test_appeal_detail_does_not_offer_a_rating_the_window_no_longer_takes(client, db, make_user, make_staff,
                                                                          user_token, staff_headers):
    """After the rating window (7 working days) (before the SLA tick closes the appeal) the detail said can_rate while
    the rating answered 409 rating_window_over."""
    from datetime import timedelta

    from wxapp_backend.appeals.models import Appeal

    uh, sh = _appeal_world(make_user, make_staff, user_token, staff_headers)
    aid = client.post("/api/v1/appeals", json=APPEAL, headers=uh).get_json()["id"]
    _act(client, sh, aid, "accept")
    _act(client, sh, aid, "resolve", resolution="已约谈餐厅整改")
    assert client.get(f"/api/v1/appeals/{aid}", headers=uh).get_json()["can_rate"] is True
    row = db.get(Appeal, aid)
    row.resolved_at = row.resolved_at - timedelta(days=30)  # past 7 working days, holidays or not
    db.commit()
    assert client.get(f"/api/v1/appeals/{aid}", headers=uh).get_json()["can_rate"] is False
    late = client.post(f"/api/v1/appeals/{aid}/rating", json={"resolved": True, "satisfaction": 5}, headers=uh)
    assert late.status_code == 409 and late.get_json()["error"] == "rating_window_over"


def test_withdrawing_twice_answers_like_the_first_tap(client, db, make_user, make_staff, user_token, staff_headers):
    """A double tap on 撤回 showed “诉求当前为“已撤回”，不能撤回” (409) right after it worked; the second tap now
    answers 200 with the withdrawn appeal and writes nothing more (cancelling a registration twice is the same)."""
    from sqlalchemy import func, select

    from wxapp_backend.appeals.models import AppealEvent

    uh, _sh = _appeal_world(make_user, make_staff, user_token, staff_headers)
    aid = client.post("/api/v1/appeals", json=APPEAL, headers=uh).get_json()["id"]
    first = client.post(f"/api/v1/appeals/{aid}/withdraw", json={"reason": "已自行解决"}, headers=uh)
    again = client.post(f"/api/v1/appeals/{aid}/withdraw", json={"reason": "已自行解决"}, headers=uh)
    assert first.status_code == 200 and again.status_code == 200
    assert again.get_json()["status_label"] == "已撤回" and again.get_json()["closed_at"] == first.get_json()["closed_at"]
    events = db.scalar(select(func.count(AppealEvent.id)).where(AppealEvent.appeal_id == aid,
                                                                AppealEvent.action == "withdrawn"))
    assert events == 1


def test_a_double_tap_on_not_resolved_says_already_rated(client, make_user, make_staff, user_token, staff_headers):
    """“未解决” reopens the appeal; the second tap of a double tap was told “诉求尚未办结，办结后才能评价”
    (not_resolved_yet), as if it had never been resolved. It is already_rated, like a double tap on “已解决”."""
    uh, sh = _appeal_world(make_user, make_staff, user_token, staff_headers)
    aid = client.post("/api/v1/appeals", json=APPEAL, headers=uh).get_json()["id"]
    _act(client, sh, aid, "accept")
    _act(client, sh, aid, "resolve", resolution="已约谈餐厅整改")
    bad = {"resolved": False, "satisfaction": 2, "comment": "油烟还是很大"}
    assert client.post(f"/api/v1/appeals/{aid}/rating", json=bad, headers=uh).status_code == 201
    again = client.post(f"/api/v1/appeals/{aid}/rating", json=bad, headers=uh)
    assert again.status_code == 409 and again.get_json()["error"] == "already_rated"
    detail = client.get(f"/api/v1/appeals/{aid}", headers=uh).get_json()
    assert detail["status"] == "in_progress" and len(detail["ratings"]) == 1 and detail["can_rate"] is False
    # resolved again, the new round is rated as usual
    _act(client, sh, aid, "resolve", resolution="已更换排烟设备")
    assert client.post(f"/api/v1/appeals/{aid}/rating", json={"resolved": True, "satisfaction": 5},
                       headers=uh).status_code == 201


# --- white-collar worker: after the activity ----------------------------------------------------------

def test_a_waitlist_still_waiting_when_the_activity_ends_does_not_stay_open_for_ever(
        client, db, new_activity, make_user, user_token):
    """Waitlisted (or awaiting approval) to the end: 我的报名 showed 候补中 for an activity long over, counted as
    active, and cancelling it answered 409 (the deadline had passed): a state the user could not leave. Closing
    the attendance now ends it (cancelled, with an event row saying why); the confirmed no-show is unchanged."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities import jobs
    from wxapp_backend.activities.models import Activity, Registration, RegistrationEvent

    aid = new_activity(capacity=1)
    seated, queued = make_user(), make_user()
    seat = _reg(client, aid, user_token(seated)).get_json()
    wait = _reg(client, aid, user_token(queued)).get_json()
    assert wait["status"] == "waitlisted"
    now = datetime.now(UTC)
    activity = db.get(Activity, aid)
    activity.starts_at, activity.ends_at = now - timedelta(hours=4), now - timedelta(hours=2)
    db.commit()

    assert jobs.close_attendance(aid) == 1  # the one no-show
    db.expire_all()
    assert db.get(Registration, seat["id"]).status == "no_show"
    mine = client.get("/api/v1/me/registrations", headers=user_token(queued)).get_json()["items"]
    assert [(r["status"], r["status_label"]) for r in mine] == [("cancelled", "已取消")]
    notes = [e.note for e in db.query(RegistrationEvent).filter_by(registration_id=wait["id"])]
    assert "活动已结束，候补未递补" in notes
    # ... and told so (it had ended without a word, the user still waiting for a seat).
    inbox = client.get("/api/v1/me/inbox", headers=user_token(queued)).get_json()["items"]
    assert [i["title"] for i in inbox if i["kind"] == "registration_cancelled"] == ["活动已结束"]
    assert client.get(f"/api/v1/activities/{aid}").get_json()["waitlisted"] == 0
    assert jobs.close_attendance(aid) == 0  # safe to run twice


def test_a_replayed_appeal_submission_answers_like_the_first(client, make_user, make_staff, user_token, staff_headers):
    """The retry of a submission whose answer was lost (same Idempotency-Key) lacked `subscribe`, so the
    mini-program never asked for the progress-notice credit the first answer would have asked for."""
    uh, _sh = _appeal_world(make_user, make_staff, user_token, staff_headers)
    h = {**uh, "Idempotency-Key": "appeal-tap-1"}
    first = client.post("/api/v1/appeals", json=APPEAL, headers=h)
    again = client.post("/api/v1/appeals", json=APPEAL, headers=h)
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json() == first.get_json()


def test_my_registrations_say_what_can_still_be_done(client, db, new_activity, make_user, user_token):
    """我的报名 gave no next actions (appeals give can_withdraw, can_rate ...): after the cancel deadline the
    取消报名 button still showed and answered 409, and a waitlisted user, who may leave until the start, could
    not tell. Each item now says can_cancel (with cancel_until, as the cancel accepts) and can_show_code."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Activity

    aid = new_activity(capacity=1)
    seated, queued = make_user(), make_user()
    seat = _reg(client, aid, user_token(seated)).get_json()
    _reg(client, aid, user_token(queued))

    def mine(user):
        (item,) = client.get("/api/v1/me/registrations", headers=user_token(user)).get_json()["items"]
        return item

    assert (mine(seated)["can_cancel"], mine(seated)["can_show_code"]) == (True, True)
    assert (mine(queued)["can_cancel"], mine(queued)["can_show_code"]) == (True, False)
    assert {k: seat[k] for k in ("can_cancel", "can_show_code")} == {"can_cancel": True, "can_show_code": True}
    activity = db.get(Activity, aid)
    activity.cancel_deadline = datetime.now(UTC) - timedelta(minutes=1)
    db.commit()
    seated_now, queued_now = mine(seated), mine(queued)
    assert seated_now["can_cancel"] is False and seated_now["cancel_until"] is None
    refused = client.post(f"/api/v1/registrations/{seat['id']}/cancel", json={}, headers=user_token(seated))
    assert refused.status_code == 409 and refused.get_json()["error"] == "cancel_deadline_passed"
    assert queued_now["can_cancel"] is True  # leaving the waitlist holds no seat: until the start
    assert datetime.fromisoformat(queued_now["cancel_until"]) == db.get(Activity, aid).starts_at
    left = client.post(f"/api/v1/registrations/{queued_now['id']}/cancel", json={}, headers=user_token(queued))
    assert (left.status_code, left.get_json()["can_cancel"], left.get_json()["can_show_code"]) == (200, False, False)


PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg==")
# A second, different picture (a red pixel): the same photo twice in one upload is stored once (session 16).
RED_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="


def test_a_refused_submission_or_supplement_leaves_no_photo_on_disk(app, client, make_user, make_staff, user_token,
                                                                   staff_headers):
    """Photos were written before the service decided: a submission refused with 422 (a building that does not
    exist) or the second tap of a double-tapped 补充 (409) left files on disk that no appeal names, a few MB each
    time. The files of a refused request are removed again; those of an accepted one stay."""
    from wxapp_backend.appeals.intake import upload_dir

    def files():
        return set(upload_dir(app.instance_path).iterdir())

    uh, sh = _appeal_world(make_user, make_staff, user_token, staff_headers)
    before = files()
    bad = client.post("/api/v1/appeals", json={**APPEAL, "images": [PNG], "building_id": 999999}, headers=uh)
    assert bad.status_code == 422 and files() == before

    aid = client.post("/api/v1/appeals", json={**APPEAL, "images": [PNG]}, headers=uh).get_json()["id"]
    assert len(files() - before) == 1
    _act(client, sh, aid, "accept")
    _act(client, sh, aid, "request_info", note="请补充现场照片")
    more = {"content": "现场照片见附件", "images": [PNG, RED_PNG]}
    assert client.post(f"/api/v1/appeals/{aid}/supplement", json=more, headers=uh).status_code == 200
    kept = files()
    assert len(kept - before) == 2  # PNG again is the appeal's photo already: stored once (qa s17)
    again = client.post(f"/api/v1/appeals/{aid}/supplement", json=more, headers=uh)
    assert again.status_code == 200 and files() == kept  # the double tap is taken as a retry (qa s12)
    detail = client.get(f"/api/v1/appeals/{aid}", headers=uh).get_json()
    assert {p.name for p in kept - before} == set(detail["images"])


def test_a_registration_cancelled_by_staff_is_told_to_its_user(client, new_activity, make_user, user_token, staff,
                                                               staff_headers):
    """Staff cancelling one registration (console or API) changed it to 已取消 without a word to its user, who
    would learn it at the door; an activity cancelled or a registration rejected is told. It is told now, once;
    a user's own cancel is not echoed back to them."""
    aid = new_activity(capacity=2)
    kept, dropped = make_user(), make_user()
    own = _reg(client, aid, user_token(kept)).get_json()
    rid = _reg(client, aid, user_token(dropped)).get_json()["id"]
    for _ in range(2):  # a double tap by staff tells once
        assert client.post(f"/api/v1/staff/registrations/{rid}/cancel", json={},
                           headers=staff_headers(staff)).status_code == 200
    inbox = client.get("/api/v1/me/inbox", headers=user_token(dropped)).get_json()["items"]
    # (as 活动调整 without credit for the result template: test_activities3_qa_s13)
    assert [(i["kind"], i["title"]) for i in inbox] == [("activity_changed", "报名已取消")]
    assert "工作人员取消" in inbox[0]["body"] and inbox[0]["ref"] == f"registration:{rid}"
    client.post(f"/api/v1/registrations/{own['id']}/cancel", json={}, headers=user_token(kept))
    assert client.get("/api/v1/me/inbox", headers=user_token(kept)).get_json()["items"] == []


def test_a_reopened_appeal_does_not_show_the_rejected_result_as_its_result(client, make_user, make_staff, user_token,
                                                                           staff_headers):
    """After “未解决” the appeal is 办理中 again with resolved_at cleared, but list and detail still gave the
    rejected resolution as its 办理结果 (“已约谈餐厅整改” on an appeal being handled again). It is cleared; the
    old result stays on the public timeline, and the next resolution is shown when it comes."""
    uh, sh = _appeal_world(make_user, make_staff, user_token, staff_headers)
    aid = client.post("/api/v1/appeals", json=APPEAL, headers=uh).get_json()["id"]
    _act(client, sh, aid, "accept")
    _act(client, sh, aid, "resolve", resolution="已约谈餐厅整改")
    client.post(f"/api/v1/appeals/{aid}/rating", json={"resolved": False, "satisfaction": 3}, headers=uh)
    detail = client.get(f"/api/v1/appeals/{aid}", headers=uh).get_json()
    (listed,) = client.get("/api/v1/appeals", headers=uh).get_json()["items"]
    assert (detail["status_label"], detail["resolved_at"], detail["resolution"]) == ("办理中", None, "")
    assert listed["resolution"] == ""
    assert any(e["note"] == "办结：已约谈餐厅整改" for e in detail["timeline"])
    _act(client, sh, aid, "resolve", resolution="已更换排烟设备")
    assert client.get(f"/api/v1/appeals/{aid}", headers=uh).get_json()["resolution"] == "已更换排烟设备"
