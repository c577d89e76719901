"""White-collar activities, found wanting by exploratory QA (session 11)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.activities.services import SHANGHAI


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def test_the_list_greys_out_what_nobody_can_register_for_any_more(client, make_activity, make_user, user_token,
                                                                   staff, staff_headers):
    """ineligible_reason is there so the list greys out what the worker cannot join "instead of a 409 after they
    tap 报名"; it spoke only of the audience, so an activity under way, one whose registration had closed or not
    opened, a full one without a waitlist and a cancelled one all offered 报名 and then refused it."""
    now = datetime.now(UTC)
    going = make_activity(title="进行中", starts_at=now - timedelta(minutes=30)).id
    ended = make_activity(title="已结束", starts_at=now - timedelta(days=2)).id
    closed = make_activity(title="已截止", registration_closes_at=now - timedelta(hours=1)).id
    later = make_activity(title="未开放", registration_opens_at=now + timedelta(hours=3)).id
    full = make_activity(title="满员", capacity=1, waitlist_enabled=False).id
    called_off = make_activity(title="取消了", status="cancelled").id
    fine = make_activity(title="可报名").id
    _reg(client, full, user_token(make_user()))
    worker = make_user()
    h = user_token(worker)
    items = {i["id"]: i for i in client.get("/api/v1/activities?include_past=1", headers=h).get_json()["items"]}
    assert items[fine]["ineligible_reason"] is None
    for aid in (going, ended, closed, later, full, called_off):
        refused = _reg(client, aid, h)
        assert refused.status_code == 409, refused.get_json()
        detail = client.get(f"/api/v1/activities/{aid}", headers=h).get_json()
        assert detail["ineligible_reason"] == refused.get_json()["message"], aid
        if aid != called_off:  # the list shows published activities only
            assert items[aid]["ineligible_reason"] == refused.get_json()["message"], aid
    assert client.get(f"/api/v1/activities/{fine}", headers=h).get_json()["ineligible_reason"] is None


def _chat(client, headers, text):
    resp = client.post("/api/v1/chat", json={"text": text}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["reply"]


def test_the_chat_does_not_offer_an_activity_whose_registration_has_not_opened(client, make_activity, make_user,
                                                                             user_token):
    """“活动” answers “近期可以报名的活动”; one whose registration opens tomorrow was listed with its seats left, and
    the worker who went to register was told 报名尚未开始."""
    now = datetime.now(UTC)
    make_activity(title="明天开放报名的讲座", registration_opens_at=now + timedelta(days=1),
                  starts_at=now + timedelta(days=3))
    make_activity(title="正在报名的瑜伽课")
    reply = _chat(client, user_token(make_user()), "活动")
    assert "正在报名的瑜伽课" in reply
    assert "明天开放报名的讲座" not in reply


def test_the_chat_names_the_building_an_activity_is_in(client, make_activity, make_building, make_user, user_token):
    """An activity held in one of the street's buildings has its room in `address` (“3 楼多功能厅”); the chat showed
    only that, and the worker could not tell which building to go to."""
    tower = make_building(name="新华大厦")
    make_activity(title="午间读书会", building_id=tower.id, address="3 楼多功能厅")
    reply = _chat(client, user_token(make_user()), "活动")
    assert "新华大厦 3 楼多功能厅" in reply


def _console_create(client, csrf, **fields):
    data = {"csrf_token": csrf, "category": "concert", "title": "楼宇音乐会", "address": "大堂", "capacity": "5",
            "status": "published", "waitlist_enabled": "on", **fields}
    return client.post("/console/activities/new", data=data)


def test_a_new_activity_cannot_start_in_the_past(client, make_staff, console_login, staff_headers, db):
    """Editing refuses a start moved into the past (a mistyped year); creating took it: the activity was saved as
    published, could never be registered for and did not show in the mini-program, and staff read “活动已保存”."""
    staff = make_staff(role="staff")
    csrf = console_login(staff)
    last_year = (datetime.now(UTC) - timedelta(days=365)).astimezone(SHANGHAI).date()
    resp = _console_create(client, csrf, starts_at=f"{last_year}T12:00", ends_at=f"{last_year}T13:00")
    assert resp.status_code == 422
    assert f"开始时间 {last_year} 12:00 已经过去，请核对日期" in resp.get_data(as_text=True)
    start = datetime.now(UTC) - timedelta(hours=1)
    body = {"category": "concert", "title": "午间音乐会", "address": "大堂", "capacity": 5,
            "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat()}
    resp = client.post("/api/v1/staff/activities", json=body, headers=staff_headers(staff))
    assert resp.status_code == 422 and "已经过去" in resp.get_json()["fields"]["starts_at"]
    assert db.scalar(select(func.count(Activity.id))) == 0


def test_an_end_typed_before_the_start_on_the_same_date_says_to_pick_the_next_day(client, make_staff, console_login):
    """A night event, 22:00 to 02:00, typed with one date: “结束时间必须晚于开始时间” reads as wrong to someone who
    means two in the morning."""
    csrf = console_login(make_staff(role="staff"))
    day = (datetime.now(UTC) + timedelta(days=3)).astimezone(SHANGHAI).date()
    resp = _console_create(client, csrf, starts_at=f"{day}T22:00", ends_at=f"{day}T02:00")
    assert resp.status_code == 422
    assert "活动跨过午夜的，结束日期请选第二天" in resp.get_data(as_text=True)
    nxt = day + timedelta(days=1)
    assert _console_create(client, csrf, starts_at=f"{day}T22:00", ends_at=f"{nxt}T02:00").status_code == 302


def test_staff_see_the_waitlist_in_the_order_it_moves_up(client, make_activity, make_user, user_token, make_staff,
                                                       console_login, db):
    """The waitlist moves up by hour of registration, with those who failed to turn up twice behind the others of
    their hour; the registrations page and the export listed it by registration number with a bare “候补中”, so
    staff answering “我排第几？” told the wrong place to the one who had registered first."""
    from io import BytesIO

    from openpyxl import load_workbook

    now = datetime.now(UTC)
    aid = make_activity(capacity=1, title="缘来外滩").id
    seated, habitual, punctual = make_user(nickname="甲"), make_user(nickname="爽约两次"), make_user(nickname="准时")
    for days in (10, 20):  # two no-shows in the last 90 days
        past = make_activity(starts_at=now - timedelta(days=days)).id
        db.add(Registration(activity_id=past, user_id=habitual.id, status="no_show"))
    db.commit()
    for u in (seated, habitual, punctual):
        assert _reg(client, aid, user_token(u)).status_code == 201
    db.execute(update(Registration).where(Registration.activity_id == aid).values(queue_hour=1))  # one hour
    db.commit()
    mine = client.get(f"/api/v1/activities/{aid}", headers=user_token(habitual)).get_json()["my_registration"]
    assert mine["waitlist_position"] == 2
    console_login(make_staff(role="dept"))
    page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
    rows = {name: row for row in page.split("<tr") for name in ("爽约两次", "准时") if name in row}
    assert "候补中（第 2 位）" in rows["爽约两次"] and "候补中（第 1 位）" in rows["准时"]
    sheet = load_workbook(BytesIO(client.get(f"/console/activities/{aid}/registrations.xlsx").data)).active
    status = {row[1]: row[5] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert status == {"甲": "报名成功", "爽约两次": "候补中（第 2 位）", "准时": "候补中（第 1 位）"}


def test_a_new_activity_notice_reaches_its_category_subscribers_and_opens_the_activity(
        client, new_activity, make_user, user_token, make_staff, console_login, run_jobs, db):
    """The journey of “订阅 → 新活动通知”: a notice composed in the console for an activity, sent to the subscribers
    of its category, reaches them and nobody else; but with 相关活动 chosen and no page typed, tapping it opened
    nothing (the page stayed empty), so the subscriber had to hunt for the activity it announced."""
    from wxapp_backend.notices.broadcast_models import Notice
    from wxapp_backend.notices.models import InboxItem

    aid = new_activity(category="fitness", title="午间瑜伽")
    fan, other, gone = make_user(), make_user(), make_user()
    for u, cats in ((fan, ["fitness", "concert"]), (other, ["concert"]), (gone, ["fitness"]), (gone, [])):
        assert client.put("/api/v1/me/subscriptions", json={"categories": cats}, headers=user_token(u)).status_code == 200
    csrf = console_login(make_staff(role="staff"))
    resp = client.post("/console/notices/new", data={"csrf_token": csrf, "kind": "activity", "title": "新活动：午间瑜伽",
                                                     "summary": "周三午间，欢迎报名", "activity_id": str(aid),
                                                     "categories": ["fitness"]})
    assert resp.status_code == 302
    nid = db.scalar(select(Notice.id))
    client.post(f"/console/notices/{nid}/publish", data={"csrf_token": csrf})
    run_jobs()
    inbox = db.scalars(select(InboxItem)).all()
    assert [(i.user_id, i.title) for i in inbox] == [(fan.id, "新活动：午间瑜伽")]
    assert inbox[0].page == f"pages/activity/detail?id={aid}"


def test_someone_at_the_door_before_the_start_can_be_recorded_by_hand(client, make_activity, make_user, user_token,
                                                                    make_staff, staff_headers, console_login, db):
    """Check-in opens two hours before the start; someone who arrives then with a flat phone could not be recorded
    by hand (“活动还没开始，请在现场扫码签到”) and the page offered no button until the start, by which time the
    desk had moved on and they ended as a no-show."""
    aid = make_activity(starts_at=datetime.now(UTC) + timedelta(minutes=40)).id
    u = make_user(nickname="手机没电")
    rid = _reg(client, aid, user_token(u)).get_json()["id"]
    staff = make_staff(role="staff")
    console_login(staff)
    page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
    assert "改为已到场" in page
    resp = client.post(f"/api/v1/staff/registrations/{rid}/attended", json={"note": "现场手工登记"},
                       headers=staff_headers(staff))
    assert resp.status_code == 200 and resp.get_json()["status"] == "attended", resp.get_json()
    early = make_activity(starts_at=datetime.now(UTC) + timedelta(hours=3)).id  # check-in not open yet
    rid = _reg(client, early, user_token(u)).get_json()["id"]
    resp = client.post(f"/api/v1/staff/registrations/{rid}/attended", json={"note": "现场手工登记"},
                       headers=staff_headers(staff))
    assert resp.status_code == 409 and resp.get_json()["message"] == "签到尚未开始（活动开始前 2 小时开放签到）。"


def test_publishing_an_activity_leads_staff_to_tell_its_category_subscribers(
        client, make_staff, console_login, make_building, make_user, user_token, run_jobs, db):
    """Workers subscribe to categories because “新活动发布时会第一时间通知您” (the chat says so), yet nothing after
    publishing led staff to that notice: the activity page had no way to it and the composer started blank, so the
    subscribers heard of it only if someone remembered to write one and tick the right category and buildings."""
    import re

    from wxapp_backend.notices.broadcast_models import Notice
    from wxapp_backend.notices.models import InboxItem

    tower, other_tower = make_building(name="新华大厦"), make_building(name="别的大厦")
    inside, outside, elsewhere = (make_user(building_id=tower.id), make_user(building_id=other_tower.id),
                                  make_user(building_id=tower.id))
    for u, cats in ((inside, ["fitness"]), (outside, ["fitness"]), (elsewhere, ["concert"])):
        client.put("/api/v1/me/subscriptions", json={"categories": cats}, headers=user_token(u))
    csrf = console_login(make_staff(role="staff"))
    day = (datetime.now(UTC) + timedelta(days=3)).astimezone(SHANGHAI).date()
    resp = _console_create(client, csrf, category="fitness", title="午间瑜伽", starts_at=f"{day}T12:00",
                           ends_at=f"{day}T13:00", audience_building_ids=str(tower.id))
    assert resp.status_code == 302
    aid = db.scalar(select(Activity.id))
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    link = f"/console/notices/new?activity_id={aid}"
    assert link in page and "订阅了“健身”的用户还不知道，可点“通知订阅者”给他们发通知" in page
    composer = client.get(link).get_data(as_text=True)
    assert 'value="新活动：午间瑜伽"' in composer and f"{day.month}月{day.day}日 12:00，大堂，欢迎报名。" in composer
    assert re.search(r'name="categories" value="fitness" checked', composer)
    assert re.search(rf'<option value="{tower.id}" selected>新华大厦', composer)
    assert re.search(rf'<option value="{aid}" selected>午间瑜伽', composer)
    # staff send it as prefilled
    sent = client.post("/console/notices/new", data={"csrf_token": csrf, "kind": "activity", "activity_id": str(aid),
                                                     "title": "新活动：午间瑜伽", "categories": ["fitness"],
                                                     "building_ids": [str(tower.id)]})
    assert sent.status_code == 302
    client.post(f"/console/notices/{db.scalar(select(Notice.id))}/publish", data={"csrf_token": csrf})
    run_jobs()
    assert db.scalars(select(InboxItem.user_id)).all() == [inside.id]


def test_a_worker_holding_a_seat_is_not_told_the_activity_is_full(client, make_activity, make_user, user_token, db):
    """The greyed-out reason is register()'s answer to this worker: someone holding a seat in a full activity without
    a waitlist read “名额已满，本活动不设候补” in the list as if they were left out; and one whose registration was
    rejected saw 报名 offered again."""
    full = make_activity(title="满员", capacity=1, waitlist_enabled=False).id
    approval = make_activity(title="需审核", requires_approval=True).id
    seated, rejected = make_user(), make_user()
    rid_seated = _reg(client, full, user_token(seated)).get_json()["id"]
    rid = _reg(client, approval, user_token(rejected)).get_json()["id"]
    db.execute(update(Registration).where(Registration.id == rid).values(status="rejected", active_key=None))
    db.commit()
    for who, aid in ((seated, full), (rejected, approval)):
        h = user_token(who)
        refused = _reg(client, aid, h).get_json()["message"]
        items = {i["id"]: i for i in client.get("/api/v1/activities", headers=h).get_json()["items"]}
        assert items[aid]["ineligible_reason"] == refused
        assert client.get(f"/api/v1/activities/{aid}", headers=h).get_json()["ineligible_reason"] == refused
    assert "您已报名" in _reg(client, full, user_token(seated)).get_json()["message"]
    client.post(f"/api/v1/registrations/{rid_seated}/cancel", headers=user_token(seated))  # the seat is free again
    assert client.get(f"/api/v1/activities/{full}", headers=user_token(seated)).get_json()["ineligible_reason"] is None


def test_the_console_list_shows_when_an_activity_ends(client, make_activity, make_staff, console_login):
    """The list showed the start only: a three-day training and a night event running past midnight read like a
    one-hour session."""
    day = (datetime.now(UTC) + timedelta(days=5)).astimezone(SHANGHAI).replace(hour=9, minute=0, second=0,
                                                                                microsecond=0)
    make_activity(title="三天培训", starts_at=day, ends_at=day + timedelta(days=2, hours=8))
    make_activity(title="午间一小时", starts_at=day + timedelta(hours=3), ends_at=day + timedelta(hours=4))
    console_login(make_staff(role="dept"))
    page = client.get("/console/activities").get_data(as_text=True)
    rows = {name: row for row in page.split("<tr") for name in ("三天培训", "午间一小时") if name in row}
    last = day + timedelta(days=2)
    assert f"{day:%Y-%m-%d} 09:00 – {last:%Y-%m-%d} 17:00" in rows["三天培训"]
    assert f"{day:%Y-%m-%d} 12:00 – 13:00" in rows["午间一小时"]


def test_a_new_activity_notice_gives_the_activity_time_in_the_wechat_message(client, make_activity, make_staff,
                                                                            console_login, db):
    """The subscribe message of a notice has a 时间 line; made from the title and summary it held the moment the notice
    was written, so a “新活动：午间瑜伽” card read 时间 today, 19:32 — the subscriber took it for the activity's time.
    Composed from the activity page, it carries the activity's start."""
    import re

    from wxapp_backend.notices.broadcast_models import Notice

    start = (datetime.now(UTC) + timedelta(days=4)).astimezone(SHANGHAI).replace(hour=12, minute=0, second=0,
                                                                                  microsecond=0)
    aid = make_activity(category="fitness", title="午间瑜伽", starts_at=start).id
    csrf = console_login(make_staff(role="staff"))
    composer = client.get(f"/console/notices/new?activity_id={aid}").get_data(as_text=True)
    fields = re.search(r'<textarea name="template_fields"[^>]*>([^<]*)</textarea>', composer).group(1)
    when = f"{start.year}年{start.month}月{start.day}日 12:00"
    assert f"time2={when}" in fields
    resp = client.post("/console/notices/new", data={"csrf_token": csrf, "kind": "activity", "activity_id": str(aid),
                                                     "title": "新活动：午间瑜伽", "categories": ["fitness"],
                                                     "template_fields": fields.replace("&#10;", "\n")})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    notice = db.scalars(select(Notice)).one()
    assert notice.template_fields["time2"] == when and notice.template_fields["thing1"] == "新活动：午间瑜伽"


def test_the_reason_says_whether_the_activity_is_under_way_or_over(client, make_activity, make_user, user_token):
    """Shown on every past activity in the list now, “活动已开始或已结束” left the worker to guess which it was."""
    now = datetime.now(UTC)
    going = make_activity(starts_at=now - timedelta(minutes=30)).id
    over = make_activity(starts_at=now - timedelta(days=1)).id
    h = user_token(make_user())
    assert _reg(client, going, h).get_json()["message"] == "活动已开始，不能再报名了。"
    assert _reg(client, over, h).get_json()["message"] == "活动已结束，不能再报名了。"


def test_the_cancel_button_warns_only_of_what_it_will_do(client, make_activity, make_user, user_token, make_staff,
                                                         console_login, db):
    """“确定取消 X 的报名吗？名额会递补给候补。” was asked on every row: cancelling someone on the waitlist frees no
    seat, and once the activity has begun nobody moves up."""
    aid = make_activity(capacity=1).id
    seated, queued = make_user(nickname="有座"), make_user(nickname="排队")
    for u in (seated, queued):
        _reg(client, aid, user_token(u))
    console_login(make_staff(role="staff"))

    def confirms():
        page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
        rows = {name: row for row in page.split("<tr") for name in ("有座", "排队") if name in row}
        return {name: re.findall(r'data-confirm="([^"]*取消[^"]*)"', row) for name, row in rows.items()}

    assert confirms() == {"有座": ["确定取消 有座 的报名吗？名额会递补给候补。"], "排队": ["确定取消 排队 的候补吗？"]}
    db.execute(update(Activity).where(Activity.id == aid).values(
        starts_at=datetime.now(UTC) - timedelta(minutes=10), ends_at=datetime.now(UTC) + timedelta(hours=1)))
    db.commit()
    assert confirms() == {"有座": ["确定取消 有座 的报名吗？活动已开始，空出的名额不再递补。"], "排队": ["确定取消 排队 的候补吗？"]}
    db.execute(update(Registration).where(Registration.user_id == queued.id).values(status="cancelled", active_key=None))
    db.commit()
    assert confirms() == {"有座": ["确定取消 有座 的报名吗？"], "排队": []}  # nobody waiting: nothing to promise


def test_a_notice_made_through_the_staff_api_with_an_activity_opens_that_activity(client, make_activity, make_staff,
                                                                                  staff_headers):
    """The console filled in the page for a notice about an activity, the staff API did not: a notice drafted by a
    script (or the API docs' example) with 相关活动 and no page opened nothing when tapped."""
    activity = make_activity()
    headers = staff_headers(make_staff(role="staff"))
    resp = client.post("/api/v1/staff/notices", headers=headers, json={
        "title": "新活动", "summary": "欢迎报名", "activity_id": activity.id, "audience": {"all": True}})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["page"] == f"pages/activity/detail?id={activity.id}"
    notice_id = resp.get_json()["id"]
    other = make_activity()
    resp = client.patch(f"/api/v1/staff/notices/{notice_id}", headers=headers, json={"page": ""})
    assert resp.get_json()["page"] == f"pages/activity/detail?id={activity.id}"
    resp = client.patch(f"/api/v1/staff/notices/{notice_id}", headers=headers,
                        json={"page": "pages/notice/detail?id=1", "activity_id": other.id})
    assert resp.get_json()["page"] == "pages/notice/detail?id=1"  # a page staff chose stays theirs
    resp = client.post("/api/v1/staff/notices", headers=headers, json={
        "title": "停水通知", "summary": "周六停水", "audience": {"all": True}})
    assert resp.get_json()["page"] == ""  # no activity: nothing to open


def test_an_unknown_category_is_explained_by_the_names_people_read(client, make_user, user_token):
    """A subscription to a category the app no longer has was refused naming lunch_hour、concert… only."""
    resp = client.put("/api/v1/me/subscriptions", headers=user_token(make_user()), json={"categories": ["yoga"]})
    assert resp.status_code in (400, 422), resp.get_json()
    text = str(resp.get_json())
    assert "午间一小时（lunch_hour）" in text and "财务经理沙龙（cfo_salon）" in text


def test_registrants_of_a_cancelled_activity_are_told_why(client, new_activity, make_user, user_token, staff,
                                                          staff_headers, db, console_login):
    """Cancelling told registrants only “很抱歉，活动已取消”: they asked the centre why, and whether it would be held
    later. Staff may give a reason (API and console); it goes into the notice, the registration's history and the
    audit row. Too long a reason is refused before anything is cancelled."""
    from wxapp_backend.audit import AuditLog

    aid = new_activity(capacity=3)
    u = make_user()
    _reg(client, aid, user_token(u))
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff),
                        json={"status": "cancelled", "cancel_reason": "因" + "台风" * 30})
    assert resp.status_code == 422 and "取消原因" in resp.get_json()["message"]
    assert client.get(f"/api/v1/activities/{aid}").get_json()["status"] == "published"
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff),
                        json={"status": "cancelled", "cancel_reason": "因台风预警，活动改期另行通知。"})
    assert resp.status_code == 200, resp.get_json()
    inbox = client.get("/api/v1/me/inbox", headers=user_token(u)).get_json()["items"]
    assert any("已取消（因台风预警，活动改期另行通知），给您带来不便" in i["body"] for i in inbox), inbox
    row = db.scalars(select(AuditLog).where(AuditLog.action == "activity.updated")
                     .order_by(AuditLog.id.desc())).first()
    assert row.data["cancel_reason"] == "因台风预警，活动改期另行通知。"
    # The console's editor offers the box while the activity can still be cancelled.
    other = new_activity(capacity=3)
    console_login(staff)
    page = client.get(f"/console/activities/{other}/edit").get_data(as_text=True)
    assert 'name="cancel_reason"' in page
