"""Staff console pages as staff read them in a browser: words, times and what a failed form keeps."""

from __future__ import annotations

import re

from wxapp_backend.appeals import services as appeal_services
from wxapp_backend.db import session_scope


def _submit(user_id: int, content: str, **kw) -> int:
    with session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, user_id, appeal_services.Intake(
            content=content, contact_name="张三", contact_phone="13800138000", **kw))
        return appeal.id


def _cells(page: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table class="table" id="{table_id}">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", r, re.S)] for r in rows]


def test_appeal_timeline_names_each_step_and_the_system_in_chinese(client, make_user, make_staff, console_login):
    admin = make_staff(role="admin")
    csrf = console_login(admin)
    appeal_id = _submit(make_user().id, "楼道灯坏了，麻烦修一下")
    for action, extra in (("accept", {}), ("note", {"note": "先电话联系"}), ("assign", {"department": "城运中心"}),
                          ("start", {}), ("resolve", {"resolution": "已更换灯管"})):
        resp = client.post(f"/console/appeals/{appeal_id}/action", data={"csrf_token": csrf, "action": action, **extra})
        assert resp.status_code == 302, (action, resp.get_data(as_text=True))

    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    rows = [r for r in _cells(page, "timeline") if r]
    steps = [r[1] for r in rows]
    assert steps[:2] == ["提交诉求", "受理"], steps
    assert {"备注", "交办", "开始办理", "办结", "通知企业"} <= set(steps), steps
    # The accepted/resolved notices to the enterprise are the system's steps: 系统, not "system".
    assert any(r[1] == "通知企业" and r[3] == "系统" for r in rows), rows
    assert not [r for r in rows if re.search(r"[A-Za-z]", r[1]) or r[3] == "system"], rows


def _failing_job(n: int) -> None:
    raise ValueError(f"boom {n}")


def test_jobs_page_shows_when_a_job_failed_in_shanghai_time(app_ctx, run_jobs, client, make_staff, console_login):
    from wxapp_backend.appeals.calendar import TZ
    from wxapp_backend.queue import enqueue, failed_jobs

    enqueue(_failing_job, 9)
    assert run_jobs() == 1
    ended = failed_jobs()[0]["ended_at"]
    console_login(make_staff(role="admin"))
    page = client.get("/console/jobs").get_data(as_text=True)
    assert f"<td>{ended.astimezone(TZ):%Y-%m-%d %H:%M}</td>" in page
    assert "+00:00" not in page


def test_a_refused_appeal_action_keeps_what_staff_typed(client, make_user, make_staff, console_login):
    admin = make_staff(role="admin")
    csrf = console_login(admin)
    appeal_id = _submit(make_user().id, "园区停车位不够，希望协调")
    for action, extra in (("accept", {}), ("coordinate", {"task_department": "交警中队", "task_description": "核实车位",
                                                          "task_days": "3", "task_required": "1"})):
        resp = client.post(f"/console/appeals/{appeal_id}/action", data={"csrf_token": csrf, "action": action, **extra})
        assert resp.status_code == 302, (action, resp.get_data(as_text=True))

    # 办结 while the required 会办 task is still open is refused; the long result typed is not thrown away.
    resolution = "已与交警中队现场核实，新增临时车位 20 个 <b>并</b> 安排错峰停车。"
    resp = client.post(f"/console/appeals/{appeal_id}/action",
                       data={"csrf_token": csrf, "action": "resolve", "resolution": resolution})
    assert resp.status_code == 409
    page = resp.get_data(as_text=True)
    assert "操作未完成：还有必须完成的会办任务未办结（交警中队）" in page
    box = re.search(r'<form[^>]*id="action-resolve".*?<textarea name="resolution"[^>]*>(.*?)</textarea>', page, re.S)
    assert box and box.group(1) == resolution.replace("<", "&lt;").replace(">", "&gt;")
    # Only the failed form is filled in: the 内部备注 box (also named note) stays empty.
    assert re.search(r'id="action-note".*?<textarea name="note"[^>]*></textarea>', page, re.S)

    # A master number that does not exist: the number typed stays in its box to be corrected (on an accepted
    # appeal: one in 会办 offers no merge form, the workflow refusing it there).
    other_id = _submit(make_user().id, "园区停车位太少，能否协调")
    client.post(f"/console/appeals/{other_id}/action", data={"csrf_token": csrf, "action": "accept"})
    resp = client.post(f"/console/appeals/{other_id}/action",
                       data={"csrf_token": csrf, "action": "merge", "master": "SQ20990101-0999"})
    assert resp.status_code == 422
    assert re.search(r'<input name="master"[^>]*value="SQ20990101-0999"', resp.get_data(as_text=True))


def test_a_department_account_is_offered_no_button_it_may_not_use(client, make_user, make_staff, make_activity,
                                                                 console_login):
    from wxapp_backend.activities import services as activity_services
    from wxapp_backend.audit import Actor
    from wxapp_backend.notices import broadcast

    admin = make_staff(role="admin")
    activity_id = make_activity().id
    with session_scope() as s:
        activity_services.register(s, activity_id=activity_id, user_id=make_user().id)
        notice_id = broadcast.create_notice(s, Actor("staff", admin.id, role="admin"), {"kind": "policy", "title": "稳岗补贴申报开始",
                                                        "summary": "请于月底前申报", "audience": {"all": True}}).id
    console_login(make_staff(role="dept", department="城运中心"))
    for path in ("/console/activities", f"/console/activities/{activity_id}/registrations", "/console/notices",
                 f"/console/notices/{notice_id}"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        page = resp.get_data(as_text=True)
        # Every link there opens for this account, and the only thing it can send is 退出.
        for link in sorted(set(re.findall(r'href="(/console/[^"#]*)"', page))):
            status = client.get(link.replace("&amp;", "&")).status_code
            assert status != 403, (path, link)
        posts = set(re.findall(r'<form method="post" action="([^"]+)"', page))
        assert posts == {"/console/logout"}, (path, posts)


def test_a_refused_new_appeal_category_keeps_its_form(client, make_staff, console_login):
    csrf = console_login(make_staff(role="admin"))
    client.get("/console/appeal-categories")  # the built-in catalogue is in place
    form = {"csrf_token": csrf, "code": "other", "name": "共享单车", "department": "城运中心", "promised_days": "7",
            "keywords": "单车,乱停", "active": "true"}
    resp = client.post("/console/appeal-categories", data=form)
    assert resp.status_code == 409  # the code is taken: a refusal, not a page that claims all is well
    page = resp.get_data(as_text=True)
    assert "类别代码或名称已存在" in page
    new = re.search(r'<form[^>]*id="new-category">(.*?)</form>', page, re.S).group(1)
    for name in ("code", "name", "department", "promised_days", "keywords"):
        assert re.search(rf'name="{name}"[^>]*value="{re.escape(form[name])}"', new), name


def test_a_refused_activity_form_keeps_the_boxes_staff_unticked(client, make_staff, make_activity, console_login):
    csrf = console_login(make_staff(role="staff"))
    activity_id = make_activity(waitlist_enabled=True, requires_approval=True).id
    # Waitlist and approval unticked, but the end is before the start: refused, shown again to correct.
    form = {"csrf_token": csrf, "category": "concert", "status": "published", "title": "楼宇音乐会",
            "address": "中心大厦", "starts_at": "2030-05-01T14:00", "ends_at": "2030-05-01T12:00", "capacity": "20"}
    for path in ("/console/activities/new", f"/console/activities/{activity_id}/edit"):
        resp = client.post(path, data=form)
        assert resp.status_code == 422, (path, resp.status_code)
        page = resp.get_data(as_text=True)
        for name in ("waitlist_enabled", "requires_approval", "verified_only"):
            box = re.search(rf'<input type="checkbox" name="{name}"[^>]*>', page).group(0)
            assert "checked" not in box, (path, box)


def test_category_required_fields_are_read_in_chinese_and_never_dropped_silently(client, make_staff, console_login):
    from wxapp_backend.appeals.models import AppealCategory

    csrf = console_login(make_staff(role="admin"))
    client.get("/console/appeal-categories")  # the built-in catalogue is in place
    with session_scope() as s:
        row = s.query(AppealCategory).filter_by(code="other").one()
        category_id, before = row.id, list(row.required_fields or [])
    form = {"csrf_token": csrf, "id": str(category_id), "name": "其他", "department": "营商服务中心",
            "promised_days": "5", "keywords": "", "active": "true"}

    # Typed as the page shows them, with a Chinese separator: stored as the codes the intake checks.
    resp = client.post("/console/appeal-categories", data={**form, "required_fields": "楼宇、照片"})
    assert resp.status_code == 302
    with session_scope() as s:
        assert s.get(AppealCategory, category_id).required_fields == ["building_id", "images"]
    page = client.get("/console/appeal-categories").get_data(as_text=True)
    assert "楼宇、照片" in page and "building_id" not in page

    # Something it cannot ask for is refused by name, and the category keeps its requirements.
    resp = client.post("/console/appeal-categories", data={**form, "required_fields": "楼宇、营业执照"})
    assert resp.status_code == 422
    assert "不认识：营业执照" in resp.get_data(as_text=True)
    with session_scope() as s:
        assert s.get(AppealCategory, category_id).required_fields == ["building_id", "images"] != before


def test_emptying_an_optional_box_in_the_activity_editor_clears_it(client, make_staff, make_activity, make_building,
                                                                   console_login):
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Activity
    from wxapp_backend.appeals.calendar import TZ

    csrf = console_login(make_staff(role="staff"))
    start = (datetime.now(UTC) + timedelta(days=10)).replace(second=0, microsecond=0)
    activity_id = make_activity(starts_at=start, building_id=make_building().id, per_enterprise_cap=2,
                                registration_closes_at=start - timedelta(days=1),
                                cancel_deadline=start - timedelta(days=2)).id
    # The editor as staff send it back: every box, with 报名截止, 取消截止 and 每家企业上限 emptied and
    # 所在楼宇 set to （不在楼宇内）.
    form = {"csrf_token": csrf, "category": "vertical_marathon", "status": "published", "title": "垂直马拉松",
            "address": "中心大厦", "starts_at": f"{start.astimezone(TZ):%Y-%m-%dT%H:%M}",
            "ends_at": f"{(start + timedelta(hours=3)).astimezone(TZ):%Y-%m-%dT%H:%M}", "capacity": "10",
            "waitlist_enabled": "on", "registration_opens_at": "", "registration_closes_at": "",
            "cancel_deadline": "", "per_enterprise_cap": "", "building_id": ""}
    resp = client.post(f"/console/activities/{activity_id}/edit", data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    with session_scope() as s:
        a = s.get(Activity, activity_id)
        assert (a.registration_closes_at, a.cancel_deadline, a.per_enterprise_cap, a.building_id) == (None,) * 4
        assert a.starts_at == start  # what was sent unchanged stays as it was


def test_registrations_page_shows_answers_under_the_questions_staff_wrote(client, make_user, make_staff,
                                                                         make_activity, console_login):
    from wxapp_backend.activities import services as activity_services

    questions = [{"key": "size", "label": "T恤尺码", "type": "choice", "options": ["S", "M", "L"], "required": True},
                 {"key": "vegetarian", "label": "是否素食", "type": "bool"},
                 {"key": "topics", "label": "感兴趣的话题", "type": "multi", "options": ["税务", "人才"]}]
    activity_id = make_activity(questions=questions).id
    with session_scope() as s:
        activity_services.register(s, activity_id=activity_id, user_id=make_user().id,
                                   answers={"size": "M", "vegetarian": True, "topics": ["税务", "人才"]})
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/activities/{activity_id}/registrations").get_data(as_text=True)
    assert "T恤尺码：M<br>是否素食：是<br>感兴趣的话题：税务、人才<br>" in page
    assert "size" not in page and "vegetarian" not in page and "True" not in page
