"""Console pages for appeals: queue, detail with actions, triage, merge, catalogue, holidays, report, cards."""

from __future__ import annotations

import re


def test_queue_filters_and_detail(client, world, console_login):
    a = world.submit()
    b = world.submit(headers=world.oh, content="园区停车位太少，总被外来车辆占用", building_id=world.other_building.id)
    console_login(world.admin)
    page = client.get("/console/appeals").get_data(as_text=True)
    assert a["number"] in page and b["number"] in page
    page = client.get("/console/appeals?category=tax").get_data(as_text=True)
    assert a["number"] in page and b["number"] not in page
    page = client.get(f"/console/appeals?building_id={world.other_building.id}").get_data(as_text=True)
    assert b["number"] in page and a["number"] not in page
    for q in ("status=submitted", "department=税务所", f"grid_id={world.grid.id}", "overdue=true", "escalated=true"):
        assert client.get(f"/console/appeals?{q}").status_code == 200
    detail = client.get(f"/console/appeals/{a['id']}")
    assert detail.status_code == 200 and "时间线" in detail.get_data(as_text=True)
    assert "<script>" not in detail.get_data(as_text=True) and ' style="' not in detail.get_data(as_text=True)


def test_actions_through_forms(client, world, console_login):
    a = world.submit()
    csrf = console_login(world.admin)
    v = world.detail(a["id"])["version"]
    resp = client.post(f"/console/appeals/{a['id']}/action", data={"csrf_token": csrf, "action": "accept",
                                                                   "version": v})
    assert resp.status_code == 302
    assert world.detail(a["id"])["status"] == "accepted"
    # an illegal move is refused with a message and changes nothing
    resp = client.post(f"/console/appeals/{a['id']}/action", data={"csrf_token": csrf, "action": "close"},
                       follow_redirects=True)
    assert "操作未完成" in resp.get_data(as_text=True)
    assert world.detail(a["id"])["status"] == "accepted"
    client.post(f"/console/appeals/{a['id']}/action", data={
        "csrf_token": csrf, "action": "coordinate", "task_department": "城运中心", "task_description": "核查",
        "task_days": "2", "task_required": "1"})
    d = world.detail(a["id"])
    assert d["status"] == "coordinating" and d["tasks"][0]["department"] == "城运中心"
    # without the CSRF token nothing happens
    assert client.post(f"/console/appeals/{a['id']}/action", data={"action": "note", "note": "x"}).status_code == 400


def test_merge_by_number_and_triage(client, world, console_login):
    a = world.submit(content="新华大厦电梯坏了三天了一直没人修", category="楼宇物业")
    b = world.submit(headers=world.oh, content="新华大厦的电梯坏了好几天没人修理", category="楼宇物业",
                     building_id=world.building.id)
    t = world.submit(content="你好，有件事情想找人聊一聊，麻烦联系我")
    csrf = console_login(world.admin)
    page = client.get(f"/console/appeals/{b['id']}").get_data(as_text=True)
    assert a["number"] in page  # suggested as similar
    client.post(f"/console/appeals/{b['id']}/action", data={"csrf_token": csrf, "action": "merge",
                                                            "master": a["number"]})
    assert world.detail(b["id"])["status"] == "duplicate"
    page = client.get("/console/appeals/triage").get_data(as_text=True)
    assert t["number"] in page and a["number"] not in page
    client.post(f"/console/appeals/{t['id']}/action", data={"csrf_token": csrf, "action": "set_category",
                                                            "category": "other"})
    assert world.detail(t["id"])["needs_triage"] is False


def test_dept_console_scope(client, world, console_login):
    a = world.submit()
    world.act(a["id"], "accept")
    world.act(a["id"], "assign", department="税务所")
    console_login(world.env_dept)
    assert a["number"] not in client.get("/console/appeals").get_data(as_text=True)
    assert client.get(f"/console/appeals/{a['id']}").status_code == 404
    assert client.get("/console/appeals/triage").status_code == 403


def test_catalogue_and_holiday_pages(client, world, console_login):
    csrf = console_login(world.admin)
    page = client.get("/console/appeal-categories").get_data(as_text=True)
    assert "工商登记" in page and "市场监管所" in page
    resp = client.post("/console/appeal-categories", data={"csrf_token": csrf, "code": "export", "name": "外贸出口",
                                                            "department": "商务委", "promised_days": "5",
                                                            "keywords": "出口,外贸,报关", "active": "true"})
    assert resp.status_code == 302
    assert "外贸出口" in client.get("/console/appeal-categories").get_data(as_text=True)
    resp = client.post("/console/appeal-holidays", data={"csrf_token": csrf, "day": "2026-10-09",
                                                          "is_workday": "false", "name": "调整"})
    assert resp.status_code == 302
    page = client.get("/console/appeal-holidays").get_data(as_text=True)
    assert "2026-10-09" in page
    hid = re.search(r'name="delete_id" value="(\d+)"', page).group(1)
    client.post("/console/appeal-holidays", data={"csrf_token": csrf, "delete_id": hid})
    assert "2026-10-09" not in client.get("/console/appeal-holidays").get_data(as_text=True).split("未来三周")[0]


def test_report_page_xlsx_and_dashboard_cards(client, world, console_login):
    world.submit()
    console_login(world.admin)
    page = client.get("/console/appeals/report").get_data(as_text=True)
    assert "诉求解决率" in page
    resp = client.get("/console/appeals/report.xlsx?week=2025-W40")
    assert resp.status_code == 200 and resp.data[:2] == b"PK"
    assert client.get("/console/appeals/issues.xlsx").data[:2] == b"PK"
    dash = client.get("/console/").get_data(as_text=True)
    assert "在办诉求" in dash and "诉求解决率" in dash and "办不成事" in dash
    assert "诉求" in dash  # nav entry


def test_console_forms_with_ids_beyond_the_id_columns_are_refused_not_500(client, world, console_login):
    csrf = console_login(world.admin)
    huge = "9" * 30
    for path, data in (("/console/appeal-holidays", {"delete_id": huge}),
                       ("/console/appeal-categories", {"id": huge, "code": "x", "name": "外贸", "department": "商务委",
                                                       "promised_days": "5"})):
        resp = client.post(path, data={"csrf_token": csrf, **data})
        assert resp.status_code < 500, (path, resp.status_code)
    assert client.get("/console/activities?page=" + huge).status_code == 200
    appeal = world.submit()
    resp = client.post(f"/console/appeals/{appeal['id']}/action",
                       data={"csrf_token": csrf, "action": "accept", "version": huge})
    assert resp.status_code < 500
    assert client.get(f"/api/v1/appeals/{appeal['id']}", headers=world.uh).get_json()["status"] == appeal["status"]
