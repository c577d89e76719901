"""White-collar activities, a demanding user's QA pass (session 17): the order of the list with past activities,
what the list's building filter means, and the registration journey's rough edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def _titles(client, path, headers=None):
    resp = client.get(path, headers=headers or {})
    assert resp.status_code == 200, resp.get_json()
    return [i["title"] for i in resp.get_json()["items"]]


def test_the_list_with_past_activities_shows_what_is_coming_first_then_the_most_recent_past(
        client, make_activity):
    """include_past=1 listed everything by start, oldest first: a worker scrolling read last year's concert before
    last week's, and had to scroll through all the past ones to reach what they could still join. Those not over yet
    come first (soonest first, one under way at the top), then those that are over, the most recent first."""
    now = datetime.now(UTC)
    for title, start in (("去年的音乐会", now - timedelta(days=300)), ("下个月的讲座", now + timedelta(days=30)),
                         ("上周的瑜伽", now - timedelta(days=7)), ("明天的马拉松", now + timedelta(days=1)),
                         ("进行中的沙龙", now - timedelta(hours=1)), ("上个月的读书会", now - timedelta(days=30))):
        make_activity(title=title, starts_at=start)
    want = ["进行中的沙龙", "明天的马拉松", "下个月的讲座", "上周的瑜伽", "上个月的读书会", "去年的音乐会"]
    assert _titles(client, "/api/v1/activities?include_past=1") == want
    # Page by page, the same order.
    assert (_titles(client, "/api/v1/activities?include_past=1&per_page=4")
            + _titles(client, "/api/v1/activities?include_past=1&per_page=4&page=2")) == want
    # Without include_past, only those not over, soonest first (as before).
    assert _titles(client, "/api/v1/activities") == want[:3]


def test_the_console_and_staff_lists_put_the_next_activity_first(client, make_activity, make_staff, staff_headers,
                                                                  console_login):
    """The console's list (and the staff API's) went by start, latest first: an activity planned three months out
    sat above tomorrow's, and with thirty a page, this week's could fall off the first page. The same order as the
    mini-program's: the coming ones soonest first, then the past ones the most recent first."""
    now = datetime.now(UTC)
    for title, start in (("三个月后的论坛", now + timedelta(days=90)), ("去年的体检", now - timedelta(days=300)),
                         ("明天的午间一小时", now + timedelta(days=1)), ("上周的参访", now - timedelta(days=7))):
        make_activity(title=title, starts_at=start)
    make_activity(title="下周的草稿", starts_at=now + timedelta(days=7), status="draft")
    want = ["明天的午间一小时", "下周的草稿", "三个月后的论坛", "上周的参访", "去年的体检"]
    staff = make_staff(role="staff")
    assert _titles(client, "/api/v1/staff/activities", staff_headers(staff)) == want
    console_login(staff)
    page = client.get("/console/activities").get_data(as_text=True)
    assert sorted(want, key=page.index) == want


def test_the_building_filter_is_documented_as_the_venue_and_does_what_it_says(client, make_activity, make_building):
    """building_id filtered by the venue while the list's description said only “可按…楼宇筛选”: a worker's page
    asking for “my building's activities” missed those meant for their building held elsewhere. The contract never
    promised an audience filter, so the parameter now says precisely what it matches (the venue's building), and
    where the audience is to be read (audience.building_ids, and ineligible_reason with a login)."""
    tower, hall = make_building(name="新华大厦"), make_building(name="街道活动中心")
    make_activity(title="大厦里的讲座", building_id=tower.id, address="")
    make_activity(title="给大厦白领的音乐会", building_id=hall.id, address="", audience_building_ids=[tower.id])
    assert _titles(client, f"/api/v1/activities?building_id={tower.id}") == ["大厦里的讲座"]
    spec = client.get("/api/v1/openapi.json").get_json()
    op = spec["paths"]["/api/v1/activities"]["get"]
    param = next(p for p in op["parameters"] if p["name"] == "building_id")
    text = param.get("description", "") + param.get("schema", {}).get("description", "")
    assert "活动地点" in text and "面向" in text and "audience.building_ids" in text, param
    assert "活动地点所在楼宇" in op["summary"] or "活动地点所在楼宇" in op.get("description", ""), op


def _register(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def test_a_multiple_choice_sent_with_an_option_twice_is_not_refused_as_too_many(client, make_activity, make_user,
                                                                               user_token):
    """A double tap in a 多选 sent ["瑜伽", "瑜伽", "跑步"]: two options chosen out of two, refused with “最多 2 项”, which
    the worker could make nothing of. An option chosen twice counts once (as it is stored)."""
    a = make_activity(questions=[{"key": "sports", "label": "想参加的项目", "type": "multi", "required": True,
                                  "options": ["瑜伽", "跑步"]}])
    resp = _register(client, a.id, user_token(make_user()), {"sports": ["瑜伽", "瑜伽", "跑步"]})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["answers"] == {"sports": ["瑜伽", "跑步"]}
    # Three different options out of two is still refused, in words.
    resp = _register(client, a.id, user_token(make_user()), {"sports": ["瑜伽", "跑步", "游泳"]})
    assert resp.status_code == 422 and resp.get_json()["fields"].get("answers.sports"), resp.get_json()


def test_cancelling_after_checking_in_says_what_to_do(client, make_activity, make_user, user_token, make_staff,
                                                      staff_headers):
    """Checked in at the door (check-in opens before the start), then 取消报名 tapped: the worker read the workflow's
    words, “报名当前状态为“已签到”，不能改为“已取消”。”, with nothing on what to do. Still a 409, in their terms."""
    a = make_activity(starts_at=datetime.now(UTC) + timedelta(minutes=30))
    u = make_user()
    rid = _register(client, a.id, user_token(u)).get_json()["id"]
    token = client.get(f"/api/v1/registrations/{rid}/qr", headers=user_token(u)).get_json()["token"]
    resp = client.post("/api/v1/staff/checkins", json={"token": token}, headers=staff_headers(make_staff(role="staff")))
    assert resp.status_code == 200, resp.get_json()
    resp = client.post(f"/api/v1/registrations/{rid}/cancel", headers=user_token(u))
    body = resp.get_json()
    assert resp.status_code == 409 and body["error"] == "illegal_transition", body
    assert "您已签到" in body["message"] and "工作人员" in body["message"] and "不能改为" not in body["message"], body
