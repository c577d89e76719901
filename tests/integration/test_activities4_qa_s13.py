"""Activities and staff notices, a demanding user's QA pass (session 13, fourth): saves that change nothing, a
form sent twice, reminders that must tell the activity as it is when they go out, and editing a draft notice."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from wxapp_backend.audit import AuditLog
from wxapp_backend.notices.models import Notification

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _reg(client, aid, headers, answers=None):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def _updated_rows(db, aid) -> int:
    return db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "activity.updated",
                                                           AuditLog.target_id == str(aid))) or 0


def test_saving_an_activity_unchanged_records_and_tells_nothing(
        client, new_activity, make_building, make_user, user_token, staff, staff_headers, make_staff,
        console_login, db):
    """The editor resent as it was shown (or the API's PATCH with the values it read) wrote an “activity.updated”
    row naming no change each time: the log of who changed what filled with saves that changed nothing. Nothing
    changed is nothing to record, and nobody registered hears of it."""
    from wxapp_backend.activities.console import _local_input
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.db import session_scope

    b = make_building()
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=3)
    aid = new_activity(start=start, building_id=b.id, address="3 楼多功能厅",
                       cancel_deadline=(start - timedelta(hours=2)).isoformat(), per_enterprise_cap=2,
                       questions=[{"key": "size", "label": "尺码", "type": "choice", "options": ["S", "M"],
                                   "required": True}], description="<p>欢迎</p>")
    u = make_user()
    _reg(client, aid, user_token(u), {"size": "S"})
    h = staff_headers(staff)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=h, json={
        "audience_building_ids": [b.id], "audience_industries": ["交通运输、仓储和邮政业"], "audience_tags": ["高新"]})
    assert resp.status_code == 200, resp.get_json()
    read = client.get(f"/api/v1/staff/activities/{aid}", headers=h).get_json()
    body = {k: read[k] for k in ("category", "title", "description", "address", "starts_at", "ends_at",
                                 "registration_opens_at", "registration_closes_at", "cancel_deadline", "capacity",
                                 "waitlist_enabled", "per_enterprise_cap", "questions", "requires_approval",
                                 "cover_image", "status")}
    body.update(building_id=b.id, audience_building_ids=read["audience"]["building_ids"],
                audience_industries=read["audience"]["industries"], audience_tags=read["audience"]["tags"],
                verified_only=read["audience"]["verified_only"])
    before = _updated_rows(db, aid)
    for _ in range(2):
        resp = client.patch(f"/api/v1/staff/activities/{aid}", json=body, headers=h)
        assert resp.status_code == 200, resp.get_json()
    assert _updated_rows(db, aid) == before, db.scalars(select(AuditLog.data).where(
        AuditLog.action == "activity.updated")).all()
    # The console's editor sent back as shown.
    csrf = console_login(make_staff(role="staff"))
    with session_scope() as s:
        a = s.get(Activity, aid)
        form = {"csrf_token": csrf, "category": a.category, "title": a.title, "description": a.description,
                "address": a.address, "capacity": str(a.capacity), "building_id": str(b.id),
                "per_enterprise_cap": "2", "starts_at": _local_input(a.starts_at), "ends_at": _local_input(a.ends_at),
                "registration_opens_at": "", "registration_closes_at": "",
                "cancel_deadline": _local_input(a.cancel_deadline), "waitlist_enabled": "on", "status": a.status,
                "audience_building_ids": str(b.id), "audience_industries": "交通运输、仓储和邮政业",
                "audience_tags": "高新", "cover_image": "",
                "questions": '[{"key": "size", "label": "尺码", "type": "choice", "options": ["S", "M"], '
                             '"required": true}]'}
    resp = client.post(f"/console/activities/{aid}/edit", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert "没有改动" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert _updated_rows(db, aid) == before
    assert db.scalar(select(func.count(Notification.id)).where(Notification.kind == "activity_changed")) == 0
    # A real change is still recorded, once.
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"capacity": 5}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    assert _updated_rows(db, aid) == before + 1


def _form_once(page: str) -> str:
    found = re.search(r'name="form_once" value="([^"]+)"', page)
    assert found, "the create form carries no one-time token"
    return found.group(1)


def test_a_notice_or_activity_form_sent_twice_saves_one_draft(client, make_staff, console_login, db):
    """A double-click on 保存草稿 (console.js off, or the browser resending the form after a slow answer) made two
    drafts: two notices to the same people, one easily published by a colleague after the other. The create forms
    carry a one-time token now; the second post of the same form is led to the first draft."""
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.notices.broadcast_models import Notice

    csrf = console_login(make_staff(role="staff"))
    once = _form_once(client.get("/console/notices/new").get_data(as_text=True))
    form = {"csrf_token": csrf, "form_once": once, "kind": "policy", "title": "稳岗补贴申报开始",
            "summary": "请符合条件的企业于月底前申报。", "audience_all": "on"}
    places = []
    for _ in range(2):
        resp = client.post("/console/notices/new", data=form)
        assert resp.status_code == 302, resp.get_data(as_text=True)
        places.append(resp.headers["Location"])
    assert db.scalar(select(func.count(Notice.id))) == 1
    assert places[0] == places[1]
    assert "已经保存过" in client.get(places[1]).get_data(as_text=True)
    # A fresh form is a new notice.
    form["form_once"] = _form_once(client.get("/console/notices/new").get_data(as_text=True))
    assert client.post("/console/notices/new", data=form).status_code == 302
    assert db.scalar(select(func.count(Notice.id))) == 2

    # The activity editor's “新建活动” the same way.
    once = _form_once(client.get("/console/activities/new").get_data(as_text=True))
    start = datetime.now(UTC).astimezone().replace(second=0, microsecond=0) + timedelta(days=3)
    from wxapp_backend.activities.console import _local_input
    form = {"csrf_token": csrf, "form_once": once, "category": "fitness", "title": "午间瑜伽", "address": "大堂",
            "capacity": "10", "starts_at": _local_input(start), "ends_at": _local_input(start + timedelta(hours=1)),
            "waitlist_enabled": "on", "status": "draft"}
    places = []
    for _ in range(2):
        resp = client.post("/console/activities/new", data=form)
        assert resp.status_code == 302, resp.get_data(as_text=True)
        places.append(resp.headers["Location"])
    assert db.scalar(select(func.count(Activity.id))) == 1
    assert places[0] == places[1]


def test_a_create_form_refused_for_a_mistake_can_be_sent_again_corrected(client, make_staff, console_login, db):
    """The one-time token is spent only by a save: a form refused (no title) comes back with it and, corrected,
    is saved."""
    from wxapp_backend.notices.broadcast_models import Notice

    csrf = console_login(make_staff(role="staff"))
    once = _form_once(client.get("/console/notices/new").get_data(as_text=True))
    form = {"csrf_token": csrf, "form_once": once, "kind": "policy", "title": "", "audience_all": "on"}
    resp = client.post("/console/notices/new", data=form)
    assert resp.status_code == 422, resp.status_code
    assert _form_once(resp.get_data(as_text=True)) == once
    form["title"] = "稳岗补贴申报开始"
    resp = client.post("/console/notices/new", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert db.scalar(select(func.count(Notice.id))) == 1


def test_a_reminder_waiting_to_go_out_tells_the_place_the_activity_has_when_it_is_sent(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, run_jobs, db):
    """The day-before reminder was made (its delivery queued, or waiting for a retry while WeChat was busy) and staff
    then moved the activity to another room: the reminder went out naming the old room, after the 活动调整 notice
    had named the new one, so the last word the worker had was wrong. A reminder is rendered with the activity's
    time and place as they are when it is sent, in the subscribe message and in 消息 alike."""
    from wxapp_backend.activities import jobs
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import InboxItem

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=23, minutes=50)
    aid = new_activity(start=start, address="A 座 3 楼多功能厅")
    u = make_user()
    _reg(client, aid, user_token(u))
    reminder = get_kind("activity_reminder").template_id
    with session_scope() as s:
        for _ in range(2):  # the day-before reminder leaves one for the 1-hour reminder
            credits.add_credit(s, u.id, reminder)
    assert jobs.send_reminders(aid, "24h") == 1  # made; its delivery waits in the queue
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"address": "B 座 1 楼报告厅"},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    pushed = [c for c in standin.calls_to(SUBSCRIBE) if c.body["template_id"] == reminder]
    assert len(pushed) == 1, [n.status for n in db.scalars(select(Notification)).all()]
    values = " ".join(v["value"] for v in pushed[0].body["data"].values())
    assert "B 座" in values and "A 座" not in values, values
    bodies = db.scalars(select(InboxItem.body).where(InboxItem.user_id == u.id, InboxItem.kind == "activity_reminder"))
    assert [("B 座" in b, "A 座" in b) for b in bodies] == [(True, False)]


def test_a_draft_notice_can_be_edited_in_the_console(client, make_staff, console_login, db):
    """A typo in a draft notice could be fixed through the API only: in the console the draft stayed as it was
    or was made again (and the wrong one left lying about). Drafts have an edit page now: the create form filled
    in, CSRF-checked, for staff (not department accounts), audited, with Chinese messages; a published notice is
    not edited."""
    from wxapp_backend.notices.broadcast_models import Notice

    csrf = console_login(make_staff(role="staff"))
    form = {"csrf_token": csrf, "kind": "policy", "title": "稳岗补贴申报开使", "summary": "请于月底前申报。",
            "audience_all": "on"}
    resp = client.post("/console/notices/new", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    nid = db.scalar(select(Notice.id))
    shown = client.get(f"/console/notices/{nid}").get_data(as_text=True)
    assert f"/console/notices/{nid}/edit" in shown
    page = client.get(f"/console/notices/{nid}/edit").get_data(as_text=True)
    assert "稳岗补贴申报开使" in page and "编辑通知" in page and 'name="form_once"' not in page
    # A mistake comes back with a Chinese message, the draft untouched.
    resp = client.post(f"/console/notices/{nid}/edit", data={**form, "title": "", "csrf_token": csrf})
    assert resp.status_code == 422 and "标题" in resp.get_data(as_text=True)
    # No CSRF token, no save.
    assert client.post(f"/console/notices/{nid}/edit", data={**form, "csrf_token": ""}).status_code == 400
    resp = client.post(f"/console/notices/{nid}/edit", data={**form, "title": "稳岗补贴申报开始"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/console/notices/{nid}")
    assert db.scalar(select(Notice.title).where(Notice.id == nid)) == "稳岗补贴申报开始"
    rows = db.scalars(select(AuditLog.data).where(AuditLog.action == "notice.updated")).all()
    assert len(rows) == 1 and rows[0]["changes"]["title"] == ["稳岗补贴申报开使", "稳岗补贴申报开始"], rows
    # Saved again unchanged: nothing to record.
    assert client.post(f"/console/notices/{nid}/edit", data={**form, "title": "稳岗补贴申报开始"}).status_code == 302
    assert db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "notice.updated")) == 1

    # A department account reads notices but does not edit them.
    client.post("/console/logout", data={"csrf_token": csrf})
    csrf_dept = console_login(make_staff(role="dept"))
    assert client.get(f"/console/notices/{nid}/edit").status_code == 403
    assert client.post(f"/console/notices/{nid}/edit",
                       data={**form, "csrf_token": csrf_dept, "title": "x"}).status_code == 403

    # Published, it is not edited any more: the page says so and leads back.
    client.post("/console/logout", data={"csrf_token": csrf_dept})
    csrf = console_login(make_staff(role="staff"))
    db.execute(Notice.__table__.update().where(Notice.id == nid).values(status="sending"))
    resp = client.post(f"/console/notices/{nid}/edit", data={**form, "csrf_token": csrf, "title": "改了"})
    assert resp.status_code == 302
    assert "已发布，不能再修改" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert db.scalar(select(Notice.title).where(Notice.id == nid)) == "稳岗补贴申报开始"
