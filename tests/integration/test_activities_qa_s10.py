"""White-collar activities, found wanting by exploratory QA (session 10)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import InboxItem


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def _starts_in(aid, delta):
    with session_scope() as s:
        a = s.get(Activity, aid)
        a.starts_at = datetime.now(UTC) + delta
        a.ends_at = a.starts_at + timedelta(hours=2)
        a.registration_opens_at = a.registration_closes_at = a.cancel_deadline = None


def _scan(client, user_token, user, rid, staff_headers, staff):
    token = client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(user)).get_json()["token"]
    resp = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()


def test_an_activity_can_be_cancelled_after_someone_checked_in(client, new_activity, make_user, user_token, staff,
                                                               staff_headers, db):
    """Check-in opens two hours before the start; an activity called off after the first scan (a storm, a fire
    alarm) must still cancel, and those not yet there must be told."""
    aid = new_activity(capacity=3)
    early, late = make_user(), make_user()
    rid_early = _reg(client, aid, user_token(early)).get_json()["id"]
    rid_late = _reg(client, aid, user_token(late)).get_json()["id"]
    _starts_in(aid, timedelta(minutes=30))
    _scan(client, user_token, early, rid_early, staff_headers, staff)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    db.expire_all()
    assert db.get(Activity, aid).status == "cancelled"
    assert db.get(Registration, rid_late).status == "cancelled"
    assert db.get(Registration, rid_early).status == "attended"  # they came: the record stays
    # (told as 活动调整, the template every registration asks credit for: test_activities3_qa_s13)
    told = db.scalars(select(InboxItem.user_id).where(InboxItem.title == "活动已取消")).all()
    assert late.id in told


def test_a_rejected_registrant_gets_the_result_template_they_subscribed_to(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, run_jobs, db):
    """Registering for an approval activity asks credit for the registration-result template (registration_approved);
    a rejection is the other answer to the same question and goes out through it, as a cancellation does."""
    from wxapp_backend.notices import credits

    aid = new_activity(capacity=2, requires_approval=True)
    u = make_user()
    reg = _reg(client, aid, user_token(u)).get_json()
    assert reg["status"] == "pending_approval"
    template = "PLACEHOLDER-registration-result"
    assert template in reg["subscribe"]["template_ids"]
    with session_scope() as s:
        credits.add_credit(s, u.id, template)
    resp = client.post(f"/api/v1/staff/registrations/{reg['id']}/reject", json={"note": "名额调整"},
                       headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    sent = standin.calls_to("/cgi-bin/message/subscribe/send")
    assert [c.body["template_id"] for c in sent] == [template], sent
    assert sent[0].body["touser"] == u.openid
    assert sent[0].body["data"]["phrase2"]["value"] == "未通过"


def test_the_console_says_whether_a_cancel_moved_anyone_up(client, make_activity, make_user, make_staff,
                                                             console_login, db):
    """取消 on the registrations page said “已取消，名额已递补给候补。” every time: also with nobody waiting, and when the
    cancelled registration was itself on the waitlist (no seat freed)."""
    from wxapp_backend.activities import services

    csrf = console_login(make_staff(role="staff"))
    a = make_activity(capacity=1)
    seated, queued = make_user(nickname="张三"), make_user(nickname="李四")
    with session_scope() as s:
        rid_seat = services.register(s, activity_id=a.id, user_id=seated.id)[0].id
        rid_queue = services.register(s, activity_id=a.id, user_id=queued.id)[0].id

    def cancel(rid):
        page = client.post(f"/console/registrations/{rid}/cancel", data={"csrf_token": csrf},
                           follow_redirects=True).get_data(as_text=True)
        return re.findall(r'<div class="flash"[^>]*>([^<]*)</div>', page)

    assert cancel(rid_queue) == ["已取消李四的报名。"]  # a place in the queue frees no seat
    with session_scope() as s:
        rid_queue = services.register(s, activity_id=a.id, user_id=queued.id)[0].id
    assert cancel(rid_seat) == ["已取消张三的报名，空出的名额已递补给候补：李四。"]
    db.expire_all()
    assert db.get(Registration, rid_queue).status == "confirmed"
    assert cancel(rid_queue) == ["已取消李四的报名。"]  # nobody left waiting


def test_extending_a_running_activity_tells_only_those_still_to_come(client, new_activity, make_user, user_token,
                                                                     staff, staff_headers, db):
    """Staff push the end back while the activity runs (check-in stays open until an hour after the end): whoever
    is already checked in was told “时间或地点有调整……如不能参加，请在小程序中取消报名”, a cancel they cannot make."""
    aid = new_activity(capacity=3)
    here, coming = make_user(), make_user()
    rid_here = _reg(client, aid, user_token(here)).get_json()["id"]
    _reg(client, aid, user_token(coming))
    _starts_in(aid, timedelta(minutes=-30))
    _scan(client, user_token, here, rid_here, staff_headers, staff)
    ends = (db.get(Activity, aid).ends_at + timedelta(minutes=30)).isoformat()
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"ends_at": ends}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    told = db.scalars(select(InboxItem.user_id).where(InboxItem.title.startswith("活动调整"))).all()
    assert told == [coming.id]


def test_a_waitlisted_worker_sees_their_place_in_the_queue(client, new_activity, make_user, user_token):
    """The detail page shows 已报名 / 候补第 n 位 from my_registration (api.get_activity), but no answer said the n:
    a waitlisted worker could not tell whether to wait or make other plans."""
    aid = new_activity(capacity=1)
    seated, first, second = make_user(), make_user(), make_user()
    seat = _reg(client, aid, user_token(seated)).get_json()
    assert seat["waitlist_position"] is None
    one = _reg(client, aid, user_token(first)).get_json()
    two = _reg(client, aid, user_token(second)).get_json()
    assert (one["status"], one["waitlist_position"]) == ("waitlisted", 1)
    assert (two["status"], two["waitlist_position"]) == ("waitlisted", 2)
    mine = client.get(f"/api/v1/activities/{aid}", headers=user_token(second)).get_json()["my_registration"]
    assert mine["waitlist_position"] == 2
    client.post(f"/api/v1/registrations/{one['id']}/cancel", json={}, headers=user_token(first))
    mine = client.get(f"/api/v1/activities/{aid}", headers=user_token(second)).get_json()["my_registration"]
    assert mine["waitlist_position"] == 1
    items = client.get("/api/v1/me/registrations", headers=user_token(second)).get_json()["items"]
    assert [i["waitlist_position"] for i in items] == [1]
    client.post(f"/api/v1/registrations/{seat['id']}/cancel", json={}, headers=user_token(seated))
    items = client.get("/api/v1/me/registrations", headers=user_token(second)).get_json()["items"]
    assert [(i["status"], i["waitlist_position"]) for i in items] == [("confirmed", None)]


def test_the_dashboard_counts_registrations_waiting_for_approval(client, make_activity, make_user, make_staff,
                                                                 console_login):
    """Nothing told staff that registrations were waiting for their decision: no dashboard count, no column in the
    activity list. Unseen, they waited until the activity ended and were cancelled unanswered."""
    from wxapp_backend.activities import services

    later = make_activity(title="财务沙龙", requires_approval=True, starts_at=datetime.now(UTC) + timedelta(days=5))
    sooner = make_activity(title="企业参访", requires_approval=True, starts_at=datetime.now(UTC) + timedelta(days=2))
    cancelled = make_activity(title="取消的", requires_approval=True, status="cancelled")
    free = make_activity(title="音乐会")
    users = [make_user() for _ in range(5)]
    with session_scope() as s:
        for a, u in zip((later, sooner, sooner, free), users, strict=False):
            services.register(s, activity_id=a.id, user_id=u.id)
        s.add(Registration(activity_id=cancelled.id, user_id=users[4].id, status="pending_approval",
                           active_key=f"{cancelled.id}:{users[4].id}"))
    console_login(make_staff(role="staff"))
    page = client.get("/console/").get_data(as_text=True)
    card = re.search(r'<a class="stat" href="([^"]*)"><span class="label">待审核报名</span>'
                     r'<span class="value">(\d+)</span><span class="hint">([^<]*)</span>', page)
    assert card is not None, page
    assert card.group(2) == "3" and "2 个活动" in card.group(3), card.groups()
    assert card.group(1) == f"/console/activities/{sooner.id}/registrations"  # the soonest to decide
    client.post("/console/logout")
    console_login(make_staff(role="dept"))  # reads activities, decides nothing
    assert "待审核报名" not in client.get("/console/").get_data(as_text=True)


def test_a_worker_without_a_verified_enterprise_is_told_what_to_do(client, new_activity, make_user, user_token,
                                                                   make_enterprise):
    """An industry- or tag-limited activity told a worker who never bound an enterprise “您所在企业的行业不在范围内”,
    about an enterprise they never gave; and one whose binding staff are still checking was told to go and bind
    it (“请先在“我的”中绑定并核实所在企业”), which they had done: they would apply again."""
    ent = make_enterprise(industry="制造业", tags=["高新技术"])
    by_industry = new_activity(title="制造业沙龙", audience_industries=["制造业"])
    by_tag = new_activity(title="高新企业参访", audience_tags=["高新技术"])
    verified_only = new_activity(title="财务经理沙龙", verified_only=True)
    nobody = make_user()
    waiting = make_user(enterprise_id=ent.id, binding_state="pending")

    def reason(user, aid):
        resp = _reg(client, aid, user_token(user))
        assert resp.status_code == 403, resp.get_json()
        return resp.get_json()["message"]

    for aid in (by_industry, by_tag):
        said = reason(nobody, aid)
        assert "不在范围内" not in said and "绑定" in said, said
    for aid in (by_industry, by_tag, verified_only):
        said = reason(waiting, aid)
        assert "正在核实" in said and "请先" not in said, said
    other = make_user(enterprise_id=make_enterprise(industry="金融业").id, binding_state="verified")
    assert "不在范围内" in reason(other, by_industry)  # a verified enterprise of another industry: the range


def test_a_date_typed_a_year_back_does_not_make_everyone_a_no_show(client, new_activity, make_user, user_token, staff,
                                                                   staff_headers, db, run_jobs):
    """Editing an upcoming activity with the year mistyped (2025 for 2026) moved it into the past: everyone was told
    the activity had moved, the attendance close ran at once and made every registrant a no-show (counted against
    them), and the waitlist was cancelled; putting the right year back restored none of it."""
    from wxapp_backend.auth.models import User

    aid = new_activity(capacity=1)
    seated, queued = make_user(), make_user()
    rid_seat = _reg(client, aid, user_token(seated)).get_json()["id"]
    rid_queue = _reg(client, aid, user_token(queued)).get_json()["id"]
    run_jobs()
    a = db.get(Activity, aid)
    body = {"starts_at": (a.starts_at - timedelta(days=365)).isoformat(),
            "ends_at": (a.ends_at - timedelta(days=365)).isoformat()}
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json=body, headers=staff_headers(staff))
    run_jobs()
    db.expire_all()
    assert [db.get(Registration, r).status for r in (rid_seat, rid_queue)] == ["confirmed", "waitlisted"]
    assert db.get(User, seated.id).no_show_count == 0
    assert resp.status_code == 422 and "starts_at" in resp.get_json()["fields"], resp.get_json()
    assert "核对" in resp.get_json()["message"]
    assert db.scalars(select(InboxItem).where(InboxItem.title.startswith("活动调整"))).all() == []


def test_a_whole_number_answer_reads_as_typed(client, new_activity, make_user, user_token, make_staff,
                                              console_login, db):
    """A 数字 question (随行人数) answered 2 was kept as 2.0: the worker's answer, the registrations page and the
    Excel export all said 2.0 people."""
    import io

    from openpyxl import load_workbook

    aid = new_activity(questions=[{"key": "guests", "label": "随行人数", "type": "number"},
                                  {"key": "height", "label": "身高（米）", "type": "number"}])
    u = make_user(nickname="王五")
    resp = _reg(client, aid, user_token(u), {"guests": 2, "height": 1.75})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["answers"] == {"guests": 2, "height": 1.75}
    assert "2.0" not in str(resp.get_json()["answers"])
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
    assert "随行人数：2<br>" in page and "身高（米）：1.75<br>" in page, page
    ws = load_workbook(io.BytesIO(client.get(f"/console/activities/{aid}/registrations.xlsx").data)).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[1][-2:] == (2, 1.75) and not isinstance(rows[1][-2], float), rows


def test_registration_messages_end_their_note_with_a_whole_phrase(client, new_activity, make_user, user_token,
                                                                  staff, staff_headers, standin, run_jobs):
    """The subscribe message's 备注 (thing4) was the inbox text cut at 20 characters, so on WeChat it read
    “您候补的活动“午间一小时·书法体验”已有名” and stopped; the kinds' own short notes were never used."""
    from wxapp_backend.notices import credits

    aid = new_activity(capacity=1, title="午间一小时·书法体验")
    seated, queued = make_user(), make_user()
    seat = _reg(client, aid, user_token(seated)).get_json()
    _reg(client, aid, user_token(queued))
    with session_scope() as s:
        for u in (seated, queued):
            credits.add_credit(s, u.id, "PLACEHOLDER-registration-result")
    resp = client.post(f"/api/v1/staff/registrations/{seat['id']}/cancel", json={}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    notes = {c.body["touser"]: c.body["data"]["thing4"]["value"]
             for c in standin.calls_to("/cgi-bin/message/subscribe/send")}
    assert notes == {seated.openid: "您的报名已由工作人员取消", queued.openid: "您已从候补转为正式报名"}, notes


def test_a_change_notice_shows_a_long_title_as_cut(client, new_activity, make_user, user_token, staff, staff_headers,
                                                   standin, run_jobs, db):
    """The 活动调整 message's title was cut at 20 characters before the template's own shortening, which marks a cut
    with “…”: a longer title simply stopped, looking like the whole name."""
    from wxapp_backend.notices import credits

    # Its own template (kind activity_changed, session 11) shows the activity's name without the 活动调整 prefix: a
    # longer name shows the cut.
    aid = new_activity(title="午间一小时·国韵书法体验课（第三期·进阶班）")
    u = make_user()
    _reg(client, aid, user_token(u))
    with session_scope() as s:
        credits.add_credit(s, u.id, "PLACEHOLDER-activity-changed")
    a = db.get(Activity, aid)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff),
                        json={"starts_at": (a.starts_at + timedelta(days=1)).isoformat(),
                              "ends_at": (a.ends_at + timedelta(days=1)).isoformat()})
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    sent = standin.calls_to("/cgi-bin/message/subscribe/send")
    assert [c.body["data"]["thing1"]["value"] for c in sent] == ["午间一小时·国韵书法体验课（第三期·进…"], sent


def test_the_openapi_description_of_a_patch_requires_no_field(client, new_activity, staff, staff_headers):
    """PATCH /api/v1/staff/activities/{id} changes only the fields sent, but its OpenAPI body listed category, title,
    starts_at, ends_at and capacity as required, so a client built from the description had to send them all on
    every edit."""
    spec = client.get("/api/v1/openapi.json").get_json()
    schema = spec["paths"]["/api/v1/staff/activities/{activity_id}"]["patch"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert "required" not in schema and "capacity" in schema["properties"], schema
    post = spec["paths"]["/api/v1/staff/activities"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "title" in post["required"]  # creating still needs them
    aid = new_activity()
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"capacity": 5}, headers=staff_headers(staff))
    assert resp.status_code == 200 and resp.get_json()["capacity"] == 5, resp.get_json()


def test_a_rejection_reads_its_reason_as_a_reason(client, new_activity, make_user, user_token, staff, staff_headers,
                                                  db):
    """Staff's note was glued after the sentence: “……未通过审核。不符合条件” (no label, no full stop)."""
    aid = new_activity(requires_approval=True)
    told, plain = make_user(), make_user()
    for u, note in ((told, "不符合条件"), (plain, "")):
        rid = _reg(client, aid, user_token(u)).get_json()["id"]
        resp = client.post(f"/api/v1/staff/registrations/{rid}/reject", json={"note": note},
                           headers=staff_headers(staff))
        assert resp.status_code == 200, resp.get_json()
    bodies = {i.user_id: i.body for i in db.scalars(select(InboxItem)).all()}
    assert bodies[told.id] == "很抱歉，您报名的活动“楼宇音乐会”未通过审核，说明：不符合条件。", bodies
    assert bodies[plain.id] == "很抱歉，您报名的活动“楼宇音乐会”未通过审核。", bodies


def test_staff_can_read_back_the_activities_they_manage_through_the_api(client, new_activity, make_staff,
                                                                        staff, staff_headers):
    """The staff API could create and edit activities but not read them: a draft made through it answered 404 at
    GET /api/v1/activities/{id} and appeared in no list, so a script could not check what it had saved."""
    h = staff_headers(staff)
    draft = new_activity(title="草稿活动", status="draft")
    live = new_activity(title="已发布活动", category="fitness")
    gone = new_activity(title="取消的活动")
    client.patch(f"/api/v1/staff/activities/{gone}", json={"status": "cancelled"}, headers=h)
    assert client.get(f"/api/v1/activities/{draft}").status_code == 404  # the public still sees no draft

    one = client.get(f"/api/v1/staff/activities/{draft}", headers=h)
    assert one.status_code == 200, one.get_json()
    assert (one.get_json()["title"], one.get_json()["status"], one.get_json()["seats_taken"]) == ("草稿活动", "draft", 0)
    listed = client.get("/api/v1/staff/activities", headers=h).get_json()
    assert {a["id"] for a in listed["items"]} == {draft, live, gone} and listed["total"] == 3, listed
    only = client.get("/api/v1/staff/activities?status=draft", headers=h).get_json()
    assert [a["id"] for a in only["items"]] == [draft]
    fit = client.get("/api/v1/staff/activities?category=fitness", headers=h).get_json()
    assert [a["id"] for a in fit["items"]] == [live]
    dept = staff_headers(make_staff(role="dept"))  # department accounts read activities in the console too
    assert client.get(f"/api/v1/staff/activities/{live}", headers=dept).status_code == 200
    assert client.get("/api/v1/staff/activities").status_code == 401
    assert client.get("/api/v1/staff/activities/999999", headers=h).status_code == 404


def test_the_export_survives_a_control_character_in_a_question(client, make_activity, make_user, make_staff,
                                                               console_login):
    """A question label pasted from Word carries a vertical tab (\\x0b, its Shift+Enter); the workbook cannot hold it
    and the whole 导出 Excel was a 500 for that activity."""
    import io

    from openpyxl import load_workbook

    from wxapp_backend.activities import services

    a = make_activity(questions=[{"key": "size", "label": "T恤\x0b尺码", "type": "text"}])
    with session_scope() as s:
        services.register(s, activity_id=a.id, user_id=make_user(nickname="赵六").id, answers={"size": "M"})
    console_login(make_staff(role="dept"))
    resp = client.get(f"/console/activities/{a.id}/registrations.xlsx")
    assert resp.status_code == 200, resp.status_code
    rows = list(load_workbook(io.BytesIO(resp.data)).active.iter_rows(values_only=True))
    assert rows[0][-1] == "T恤尺码" and rows[1][-1] == "M", rows



def test_a_question_pasted_with_stray_characters_can_still_be_answered(client, staff, staff_headers, make_user,
                                                                       user_token):
    """An option pasted with a control character (“S\x01”) or a blank around it (“ M ”) was saved as it was, but an
    answer is cleaned of both before it is compared with the options, so that option could never be chosen:
    every worker picking it got 422 “尺码只能是：S、 M ”. Labels and options are now saved cleaned too."""
    start = datetime.now(UTC) + timedelta(days=2)
    body = {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "capacity": 2,
            "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat(),
            "questions": [{"key": "size", "label": "T恤\x0b尺码 ", "type": "choice", "options": ["S\x01", " M "]},
                          {"key": "diet", "label": "饮食", "type": "multi", "options": ["素食\t", "清真"]}]}
    resp = client.post("/api/v1/staff/activities", json=body, headers=staff_headers(staff))
    assert resp.status_code == 201, resp.get_json()
    qs = resp.get_json()["questions"]
    assert [(q["label"], q["options"]) for q in qs] == [("T恤尺码", ["S", "M"]), ("饮食", ["素食", "清真"])], qs
    for answers in ({"size": "S", "diet": ["素食"]}, {"size": "M", "diet": []}):
        reg = _reg(client, resp.get_json()["id"], user_token(make_user()), answers)
        assert reg.status_code == 201, reg.get_json()


def test_an_activity_whose_attendance_is_recorded_cannot_be_cancelled(client, new_activity, make_user, user_token,
                                                                      staff, staff_headers, db):
    """Cancelling an activity that has taken place (its attendance closed, no-shows recorded) answered 409 “报名当前
    状态为“未到场”，不能改为“已取消”” about one registration; it is refused with the reason instead, and the record
    of who came and who did not stays as it is."""
    from wxapp_backend.activities import jobs

    aid = new_activity(capacity=3)
    u = make_user()
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    _starts_in(aid, timedelta(hours=-4))
    assert jobs.close_attendance(aid) == 1
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled"}, headers=staff_headers(staff))
    assert resp.status_code == 422 and "status" in resp.get_json()["fields"], resp.get_json()
    assert "已结束" in resp.get_json()["message"], resp.get_json()
    db.expire_all()
    assert (db.get(Activity, aid).status, db.get(Registration, rid).status) == ("published", "no_show")


def test_a_past_activity_is_not_reused_by_moving_it_to_a_new_date(client, new_activity, make_user, user_token, staff,
                                                                  staff_headers, db):
    """Staff reusing last month's activity by editing its dates moved its old records along: last time's attendees
    and no-shows held seats of the new date and could not register again (“您已报名这个活动了”), and its attendance,
    closed already, would never be closed for the new date."""
    aid = new_activity(capacity=1)
    came = make_user()
    _reg(client, aid, user_token(came))
    _starts_in(aid, timedelta(hours=-4))
    from wxapp_backend.activities import jobs

    jobs.close_attendance(aid)
    start = datetime.now(UTC) + timedelta(days=30)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff),
                        json={"starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat()})
    assert resp.status_code == 422 and "starts_at" in resp.get_json()["fields"], resp.get_json()
    assert "新建" in resp.get_json()["message"], resp.get_json()
    db.expire_all()
    assert db.get(Activity, aid).starts_at < datetime.now(UTC)


def test_the_editor_says_whom_a_cancel_or_a_move_has_told(client, make_activity, make_user, make_staff,
                                                          console_login):
    """Cancelling an activity or moving it in the editor tells every registrant, but the page only said
    “活动已保存。”, so staff could not know whether anyone had been told (and told them again by hand)."""
    from wxapp_backend.activities import services

    a = make_activity(capacity=1)
    with session_scope() as s:
        for u in (make_user(), make_user()):
            services.register(s, activity_id=a.id, user_id=u.id)
    csrf = console_login(make_staff(role="staff"))

    def save(**changes):
        # Each save from the page as it is now: one sent from the first page would put back the earlier save's
        # title, and is refused as stale (test_stale2_qa_s16).
        form = client.get(f"/console/activities/{a.id}/edit").get_data(as_text=True)
        values = dict(re.findall(r'<input (?:type="[^"]*" )?name="([a-z_]+)" value="([^"]*)"', form))
        data = {**values, "csrf_token": csrf, "category": a.category, "status": "published",
                "waitlist_enabled": "on", **changes}
        page = client.post(f"/console/activities/{a.id}/edit", data=data, follow_redirects=True)
        return re.findall(r'<div class="flash"[^>]*>([^<]*)</div>', page.get_data(as_text=True))

    assert save(title="垂直马拉松（新版）") == ["活动已保存。"]
    assert save(address="另一座大厦") == ["活动已保存，已把新的时间和地点通知 2 位报名者。"]
    assert save(status="cancelled") == ["活动已取消，已通知 2 位报名者。"]
