"""White-collar activities and staff notices, found wanting by a demanding user's QA pass (session 13): what
registrants hear when an activity is called off or moved, reminders that must never go out wrong or twice, and
notices staff push."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.notices.models import InboxItem, Notification

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _reg(client, aid, headers, answers=None):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def _accept_all(client, headers, template_ids):
    """The worker taps 允许 on every template the registration asked for (wx.requestSubscribeMessage)."""
    resp = client.post("/api/v1/me/subscribe-results", json={"results": dict.fromkeys(template_ids, "accept")},
                       headers=headers)
    assert resp.status_code == 200, resp.get_json()


def test_registrants_of_a_cancelled_activity_are_pushed_the_news_on_a_template_they_allowed(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, run_jobs, db):
    """Registering asks the worker to allow the reminder and the 活动调整 templates (subscribe_hint); the cancellation
    went out on the registration-result template nobody confirmed had been asked to allow, so it found no credit and
    stayed in 消息: the worker heard nothing and came to the door of a cancelled activity."""
    aid = new_activity(capacity=1)
    sure, queued = make_user(), make_user()
    for user in (sure, queued):
        h = user_token(user)
        out = _reg(client, aid, h)
        _accept_all(client, h, out["subscribe"]["template_ids"])
    run_jobs()
    before = len(standin.calls_to(SUBSCRIBE))
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled", "cancel_reason": "台风预警"},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    pushed = standin.calls_to(SUBSCRIBE)[before:]
    assert sorted(c.body["touser"] for c in pushed) == sorted([sure.openid, queued.openid]), \
        [n.status for n in db.scalars(select(Notification)).all()]
    for call in pushed:
        values = " ".join(v["value"] for v in call.body["data"].values())
        assert "取消" in values and "台风预警" in values, values
    # Each still hears it in 消息, in Chinese, once.
    for user in (sure, queued):
        titles = db.scalars(select(InboxItem.title).where(InboxItem.user_id == user.id)).all()
        assert titles.count("活动已取消") == 1, titles


def test_a_reminder_job_that_finds_the_activity_moved_once_it_holds_the_lock_reminds_nobody(
        client, new_activity, make_user, user_token, staff, staff_headers, db, monkeypatch):
    """send_reminders judged the activity (published? is the reminder due?) on the row read before it took the lock.
    Staff postponing it by a week at that moment (their save commits while the job waits for the lock, PostgreSQL)
    left the job with the new start: a “24 小时” reminder a week early, whose dedup key (new start) then kept the real
    one from going out the day before. The job now judges the row it holds locked."""
    from sqlalchemy import update

    from wxapp_backend.activities import jobs

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=23, minutes=50)
    aid = new_activity(capacity=3, start=start)
    u = make_user()
    _reg(client, aid, user_token(u))
    later = start + timedelta(days=7)
    real_lock = jobs.lock_activity

    def lock_after_staff_moved_it(session, activity_id, **kw):
        # What the lock returns when staff's save committed between the job's first read and its lock.
        session.execute(update(Activity).where(Activity.id == activity_id)
                        .values(starts_at=later, ends_at=later + timedelta(hours=2)))
        return real_lock(session, activity_id, **kw)

    monkeypatch.setattr(jobs, "lock_activity", lock_after_staff_moved_it)
    assert jobs.send_reminders(aid, "24h") == 0
    monkeypatch.setattr(jobs, "lock_activity", real_lock)
    assert db.scalars(select(Notification.dedup_key).where(Notification.user_id == u.id)).all() == []
    # The day before the new start, the reminder goes out, once.
    assert jobs.send_reminders(aid, "24h", now=later - timedelta(hours=24)) == 1
    assert jobs.send_reminders(aid, "24h", now=later - timedelta(hours=24)) == 0



def test_a_reminder_whose_worker_died_after_wechat_took_it_is_not_sent_again(
        client, new_activity, make_user, user_token, standin, db, monkeypatch):
    """The delivery commits its attempt ('sending') before it calls WeChat, and a rerun resumes a 'sending' attempt
    by sending again. A worker killed after WeChat had taken the reminder (kill -9 during the call, out of memory
    before the result was written) thus had its rerun (RQ's retry, the 10-minute sweep) push the same reminder a
    second time. The delivery now marks the call as started; a rerun that finds the mark gives up on that send
    (at most once, as the notices' fan-out does: the reminder is in 消息 either way). One that died before the call
    still sends (test_jobs_qa_s12)."""
    from wxapp_backend.activities import jobs as activity_jobs
    from wxapp_backend.notices import jobs
    from wxapp_backend.notices.models import NotificationAttempt

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=59)
    aid = new_activity(capacity=3, start=start)
    u = make_user()
    h = user_token(u)
    _accept_all(client, h, _reg(client, aid, h)["subscribe"]["template_ids"])
    assert activity_jobs.send_reminders(aid, "1h") == 1
    nid = db.scalar(select(Notification.id).where(Notification.kind == "activity_reminder"))
    before = len(standin.calls_to(SUBSCRIBE))
    real_call = jobs._call

    def call_then_die(step):
        real_call(step)  # WeChat has it
        raise SystemExit("worker killed before it wrote the result down")

    monkeypatch.setattr(jobs, "_call", call_then_die)
    try:
        jobs.deliver_notification(nid)
    except SystemExit:
        pass
    monkeypatch.setattr(jobs, "_call", real_call)
    assert len(standin.calls_to(SUBSCRIBE)) == before + 1
    jobs.deliver_notification(nid)  # the rerun
    jobs.deliver_notification(nid)
    assert len(standin.calls_to(SUBSCRIBE)) == before + 1
    db.expire_all()
    note = db.get(Notification, nid)
    assert note.status != "pending"
    attempt = db.scalars(select(NotificationAttempt).where(NotificationAttempt.notification_id == nid)).one()
    assert attempt.outcome != "sending" and "结果未知" in attempt.detail, attempt.detail


def _subscribed(client, make_user, user_token, category="concert", n=2):
    users = [make_user() for _ in range(n)]
    for u in users:
        resp = client.put("/api/v1/me/subscriptions", json={"categories": [category]}, headers=user_token(u))
        assert resp.status_code == 200, resp.get_json()
    return users


def test_a_notice_about_an_activity_called_off_since_it_was_drafted_is_not_published(
        client, new_activity, make_user, user_token, staff, staff_headers, make_staff, console_login, db, run_jobs):
    """A “新活动：…，欢迎报名” notice drafted for an activity that a colleague then cancelled (or one still a draft,
    which the worker's tap opens as “没有找到这个活动”) went out to every subscriber of the category when published.
    Publishing now refuses with a Chinese reason (API 409, console message) and nobody is sent anything."""
    from wxapp_backend.notices.broadcast_models import Notice

    subscribers = _subscribed(client, make_user, user_token)
    h = staff_headers(staff)
    called_off = new_activity(title="楼宇音乐会")
    drafted = new_activity(title="午间读书会", status="draft")
    ids = {}
    for aid in (called_off, drafted):
        resp = client.post("/api/v1/staff/notices", headers=h, json={
            "kind": "activity", "title": "新活动：楼宇音乐会", "summary": "欢迎报名", "activity_id": aid,
            "audience": {"categories": ["concert"]}})
        assert resp.status_code == 201, resp.get_json()
        ids[aid] = resp.get_json()["id"]
    resp = client.patch(f"/api/v1/staff/activities/{called_off}", json={"status": "cancelled"}, headers=h)
    assert resp.status_code == 200, resp.get_json()

    resp = client.post(f"/api/v1/staff/notices/{ids[called_off]}/publish", headers=h)
    assert resp.status_code == 409, resp.get_json()
    assert "已取消" in resp.get_json()["message"], resp.get_json()
    resp = client.post(f"/api/v1/staff/notices/{ids[drafted]}/publish", headers=h)
    assert resp.status_code == 409, resp.get_json()
    assert "草稿" in resp.get_json()["message"], resp.get_json()
    csrf = console_login(make_staff(role="staff"))
    page = client.post(f"/console/notices/{ids[called_off]}/publish", data={"csrf_token": csrf},
                       follow_redirects=True).get_data(as_text=True)
    assert "已取消" in page and "已发布，正在发送" not in page
    run_jobs()
    db.expire_all()
    assert {db.get(Notice, i).status for i in ids.values()} == {"draft"}
    for u in subscribers:
        assert client.get("/api/v1/me/inbox", headers=user_token(u)).get_json()["items"] == []
    # Once the draft activity is published, its notice goes out.
    resp = client.patch(f"/api/v1/staff/activities/{drafted}", json={"status": "published"}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    resp = client.post(f"/api/v1/staff/notices/{ids[drafted]}/publish", headers=h)
    assert resp.status_code == 200, resp.get_json()


def test_a_confirmed_registration_staff_cancel_is_pushed_on_a_template_the_worker_allowed(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, run_jobs, db):
    """Staff cancelling one confirmed registration (a duplicate, someone who rang to cancel late) told its user on the
    registration-result template, which registering never asked a confirmed worker to allow: it stayed in 消息 and
    they came to the door. It goes as 活动调整 now, whose credit a cancelled registration has no more use for."""
    aid = new_activity(capacity=2)
    u = make_user()
    h = user_token(u)
    out = _reg(client, aid, h)
    assert out["status"] == "confirmed"
    _accept_all(client, h, out["subscribe"]["template_ids"])
    run_jobs()
    before = len(standin.calls_to(SUBSCRIBE))
    resp = client.post(f"/api/v1/staff/registrations/{out['id']}/cancel", json={}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    (call,) = standin.calls_to(SUBSCRIBE)[before:]
    assert call.body["touser"] == u.openid
    assert "工作人员取消" in " ".join(v["value"] for v in call.body["data"].values()), call.body["data"]


def test_a_wrong_status_category_or_notice_kind_is_explained_by_the_names_staff_read(
        client, new_activity, make_user, staff, staff_headers):
    """A status, category or notice kind the staff API does not know was answered “状态只能是：draft、published、
    cancelled”: codes, where the console and every other message say 草稿 / 已发布 / 已取消. The Chinese name now goes
    with each code, as the subscriptions' categories already did."""
    h = staff_headers(staff)
    aid = new_activity()
    msg = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "closed"}, headers=h).get_json()["message"]
    assert "草稿（draft）、已发布（published）、已取消（cancelled）" in msg, msg
    msg = client.patch(f"/api/v1/staff/activities/{aid}", json={"category": "yoga"}, headers=h).get_json()["message"]
    assert "午间一小时（lunch_hour）" in msg and "企业参访（company_visit）" in msg, msg
    msg = client.get("/api/v1/staff/activities?status=closed", headers=h).get_json()["message"]
    assert "已取消（cancelled）" in msg, msg
    msg = client.get("/api/v1/activities?category=yoga").get_json()["message"]
    assert "健身（fitness）" in msg, msg
    resp = client.post("/api/v1/staff/notices", headers=h, json={"kind": "news", "title": "停电通知",
                                                                  "audience": {"all": True}})
    assert resp.status_code == 422 and "政策通知（policy）、活动通知（activity）" in resp.get_json()["message"], \
        resp.get_json()
    resp = client.post("/api/v1/staff/notices", headers=h, json={"title": "停电通知",
                                                                  "audience": {"categories": ["yoga"]}})
    assert resp.status_code == 422 and "垂直马拉松（vertical_marathon）" in resp.get_json()["message"], resp.get_json()


def test_a_seat_given_from_the_waitlist_minutes_before_the_start_is_not_held_against_a_worker_who_missed_it(
        client, make_activity, make_user, user_token, db):
    """Someone cancelling ten minutes before the start moves the waitlist's head up (“候补成功” pushed to a worker at
    their desk); not there in time, they were recorded as a no-show like anyone who had held the seat for days, and
    two such evenings put them behind everyone else on every waitlist for 90 days. A seat given within two hours of
    the start is still recorded as not taken up (未到场), but no longer counted against them."""
    from wxapp_backend.activities import jobs, services
    from wxapp_backend.auth.models import User
    from wxapp_backend.db import session_scope

    late = make_user()
    for _ in range(2):
        start = datetime.now(UTC) + timedelta(minutes=10)
        aid = make_activity(capacity=1, starts_at=start).id
        holder = make_user()
        held = _reg(client, aid, user_token(holder))
        assert _reg(client, aid, user_token(late))["status"] == "waitlisted"
        resp = client.post(f"/api/v1/registrations/{held['id']}/cancel", json={}, headers=user_token(holder))
        assert resp.status_code == 200, resp.get_json()
        mine = db.scalar(select(Registration).where(Registration.activity_id == aid,
                                                    Registration.user_id == late.id))
        assert mine.status == "confirmed"
        assert jobs.close_attendance(aid, now=start + timedelta(hours=4, minutes=5)) == 1
        db.expire_all()
        assert db.get(Registration, mine.id).status == "no_show"  # what happened stays on record
    db.expire_all()
    assert db.get(User, late.id).no_show_count == 0
    with session_scope() as s:
        assert services.no_show_penalty(s, late.id, datetime.now(UTC)) == 0
    # A seat held for days and missed still counts.
    start = datetime.now(UTC) + timedelta(days=1)
    aid = make_activity(capacity=1, starts_at=start).id
    _reg(client, aid, user_token(late))
    assert jobs.close_attendance(aid, now=start + timedelta(hours=4, minutes=5)) == 1
    db.expire_all()
    assert db.get(User, late.id).no_show_count == 1


def test_an_activity_that_has_ended_cannot_be_cancelled_and_nobody_is_told_it_was(
        client, make_activity, make_user, user_token, staff, staff_headers, db):
    """In the hour after the end (before attendance is closed) an activity could still be set to 已取消: everyone who
    had not been scanned was told “很抱歉，您报名的活动已取消” about an evening that took place, and escaped their
    no-show. Staff are told it has ended instead (under way, it still cancels: test_activities_qa_s10)."""
    from wxapp_backend.db import session_scope

    start = datetime.now(UTC) - timedelta(hours=2, minutes=30)
    aid = make_activity(starts_at=start, ends_at=start + timedelta(hours=2)).id
    u = make_user()
    with session_scope() as s:
        s.add(Registration(activity_id=aid, user_id=u.id, status="confirmed", active_key=f"{aid}:{u.id}"))
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=staff_headers(staff))
    assert resp.status_code == 422, resp.get_json()
    assert "已结束" in resp.get_json()["message"], resp.get_json()
    db.expire_all()
    assert db.get(Activity, aid).status == "published"
    assert client.get("/api/v1/me/inbox", headers=user_token(u)).get_json()["items"] == []


def test_a_notice_still_going_out_stops_pushing_an_activity_cancelled_meanwhile(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, run_jobs, db):
    """A “新活动” notice goes out at the fan-out's pace (retries wait minutes, a 45009 half an hour): an activity
    cancelled meanwhile was still pushed as “欢迎报名” to those not reached yet. The send jobs now leave the rest
    unsent (inbox rows are already there), saying why."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.broadcast_models import OutboxRow
    from wxapp_backend.notices.kinds import get_kind

    subscribers = _subscribed(client, make_user, user_token, n=3)
    with session_scope() as s:
        for u in subscribers:
            credits.add_credit(s, u.id, get_kind("notice").template_id)
    h = staff_headers(staff)
    aid = new_activity(title="楼宇音乐会")
    resp = client.post("/api/v1/staff/notices", headers=h, json={
        "kind": "activity", "title": "新活动：楼宇音乐会", "summary": "欢迎报名", "activity_id": aid,
        "audience": {"categories": ["concert"]}})
    nid = resp.get_json()["id"]
    run_jobs()  # the activity's own jobs
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", headers=h).status_code == 200
    assert run_jobs(max_jobs=1) == 1  # the expansion: rows written, senders queued
    before = len(standin.calls_to(SUBSCRIBE))
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=h)
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    assert len(standin.calls_to(SUBSCRIBE)) == before
    rows = db.scalars(select(OutboxRow).where(OutboxRow.notice_id == nid, OutboxRow.channel == "subscribe")).all()
    assert len(rows) == 3 and {(r.status, r.detail) for r in rows} == {("skipped", "相关活动已取消，未发送")}, \
        [(r.status, r.detail) for r in rows]
    from wxapp_backend.notices.broadcast_models import Notice

    assert db.get(Notice, nid).status == "done"
    # Their credits are left for a message they want.
    with session_scope() as s:
        assert [credits.available(s, u.id, get_kind("notice").template_id) for u in subscribers] == [1, 1, 1]


def test_publishing_a_draft_in_the_editor_leads_staff_to_tell_the_subscribers_too(
        client, make_activity, make_staff, console_login):
    """Saved as 草稿 first and published later in the editor (the usual way: checked by a colleague), the activity
    was answered “活动已保存。”: the hint that its category's subscribers do not know yet, given when it is published
    at once, never came."""
    import re

    from wxapp_backend.activities.console import _local_input

    a = make_activity(category="fitness", title="午间瑜伽", status="draft",
                      starts_at=datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=3))
    csrf = console_login(make_staff(role="staff"))
    form = {"csrf_token": csrf, "category": "fitness", "title": "午间瑜伽", "address": a.address, "capacity": "10",
            "starts_at": _local_input(a.starts_at), "ends_at": _local_input(a.ends_at), "waitlist_enabled": "on",
            "status": "published"}
    resp = client.post(f"/console/activities/{a.id}/edit", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "订阅了“健身”的用户还不知道，可点“通知订阅者”给他们发通知" in page, re.findall(r"活动[^<]{0,40}", page)[:5]
    assert f"/console/notices/new?activity_id={a.id}" in page


def test_a_change_notice_overtaken_by_a_later_change_is_not_pushed_after_it(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, db):
    """Staff moved the activity to 15:00, saw the typo and moved it to 16:00: two 活动调整 notices. The first one's
    delivery failed for now (WeChat busy) and its retry ran after the second had gone out, so the last word the
    worker had on WeChat was the wrong time. A change notice whose time and place are no longer the activity's (or
    whose registration or activity is off) now stays in 消息 only, like a reminder made for an old time."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.notices.kinds import get_kind

    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=3)
    aid = new_activity(start=start)
    u = make_user()
    _reg(client, aid, user_token(u))
    with session_scope() as s:
        for _ in range(2):
            credits.add_credit(s, u.id, get_kind("activity_changed").template_id)
    h = staff_headers(staff)
    for hours in (3, 4):
        new = start + timedelta(hours=hours)
        resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=h, json={
            "starts_at": new.isoformat(), "ends_at": (new + timedelta(hours=2)).isoformat()})
        assert resp.status_code == 200, resp.get_json()
    first, second = db.scalars(select(Notification.id).where(Notification.kind == "activity_changed")
                               .order_by(Notification.id)).all()
    before = len(standin.calls_to(SUBSCRIBE))
    assert deliver_notification(second) == "sent_subscribe"
    assert deliver_notification(first) == "inbox_only"
    assert len(standin.calls_to(SUBSCRIBE)) == before + 1
    with session_scope() as s:  # the credit the stale one did not spend is still there
        assert credits.available(s, u.id, get_kind("activity_changed").template_id) == 1


def test_the_forums_and_wellbeing_sessions_the_plans_name_have_a_category(client, staff, staff_headers, make_user,
                                                                          user_token):
    """The street's plans list 营商论坛（专题会商） among the activities to hold and 情感疏解 among the services for
    office workers (seeds 001, 000); neither had a category, so staff filed a forum under 培训 and its subscribers
    never heard of it. Both are categories now: staff publish them, workers subscribe, the chat finds them."""
    start = datetime.now(UTC) + timedelta(days=4)
    for category, title in (("forum", "外滩营商论坛"), ("wellbeing", "午间减压：情绪管理")):
        resp = client.post("/api/v1/staff/activities", headers=staff_headers(staff), json={
            "category": category, "title": title, "address": "中心大厦 3 楼", "capacity": 30,
            "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat()})
        assert resp.status_code == 201, resp.get_json()
    u = make_user()
    resp = client.put("/api/v1/me/subscriptions", json={"categories": ["forum", "wellbeing"]}, headers=user_token(u))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["available"]["forum"] == "营商论坛"
    assert resp.get_json()["available"]["wellbeing"] == "情感疏解"
    reply = client.post("/api/v1/chat", json={"text": "我想报名营商论坛"}, headers=user_token(u)).get_json()["reply"]
    assert "外滩营商论坛" in reply, reply
    reply = client.post("/api/v1/chat", json={"text": "报名情感疏解活动"}, headers=user_token(u)).get_json()["reply"]
    assert "午间减压：情绪管理" in reply, reply


def test_approving_or_rejecting_again_answers_like_the_first_time(client, new_activity, make_user, user_token, staff,
                                                                   make_staff, staff_headers, db):
    """Two colleagues working the same 待审核 list (or a script's retry) approving one registration: the second was
    refused 409 “这条报名不在待审核状态”, and whoever read it thought the approval had failed. The same decision again
    now answers with the registration as decided, and tells nobody twice; the opposite decision is still refused."""
    from wxapp_backend.audit import AuditLog

    aid = new_activity(capacity=3, requires_approval=True)
    a, b = make_user(), make_user()
    ra, rb = _reg(client, aid, user_token(a)), _reg(client, aid, user_token(b))
    other = staff_headers(make_staff(role="staff"))
    for h in (staff_headers(staff), other):
        resp = client.post(f"/api/v1/staff/registrations/{ra['id']}/approve", json={}, headers=h)
        assert resp.status_code == 200 and resp.get_json()["status"] == "confirmed", resp.get_json()
        resp = client.post(f"/api/v1/staff/registrations/{rb['id']}/reject", json={"note": "名额已满"}, headers=h)
        assert resp.status_code == 200 and resp.get_json()["status"] == "rejected", resp.get_json()
    resp = client.post(f"/api/v1/staff/registrations/{ra['id']}/reject", json={}, headers=other)
    assert resp.status_code == 409 and "已审核通过" in resp.get_json()["message"], resp.get_json()
    for u in (a, b):
        assert len(client.get("/api/v1/me/inbox", headers=user_token(u)).get_json()["items"]) == 1
    actions = db.scalars(select(AuditLog.action).where(AuditLog.target_type == "registrations",
                                                       AuditLog.target_id.in_([str(ra["id"]), str(rb["id"])]))).all()
    assert sorted(actions) == ["registration.confirmed", "registration.created", "registration.created",
                               "registration.rejected"], actions


def test_putting_the_start_back_half_an_hour_does_not_send_the_day_before_reminder_again(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    """The day-before reminder had gone out (“明天 10:00”); the next morning staff put the start back to 10:30. The
    registrants were told the new time (活动调整), and the day-before reminder for 10:30, already past due, went out
    at once as well: a second “活动提醒” on top of the change notice, hours before the 1-hour reminder. A registration
    reminded the day before within the last 24 hours is not reminded the day before again; postponed by days, it is
    (test_activity_lifecycle)."""
    from wxapp_backend.activities import jobs

    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=26)
    aid = new_activity(capacity=3, start=start)
    u = make_user()
    _reg(client, aid, user_token(u))
    assert jobs.send_reminders(aid, "24h", now=start - timedelta(hours=24)) == 1
    later = start + timedelta(minutes=30)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff), json={
        "starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=2)).isoformat()})
    assert resp.status_code == 200, resp.get_json()
    assert jobs.send_reminders(aid, "24h", now=start - timedelta(hours=21)) == 0
    assert jobs.send_due_reminders(now=start - timedelta(hours=21)) == 0
    kinds = db.scalars(select(Notification.kind).where(Notification.user_id == u.id)
                       .order_by(Notification.id)).all()
    assert kinds == ["activity_reminder", "activity_changed"], kinds
    # The hour before the new start, the 1-hour reminder goes out.
    assert jobs.send_reminders(aid, "1h", now=later - timedelta(hours=1)) == 1
