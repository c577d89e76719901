"""Activities: staff create/edit with validation, users list and view with seats left, subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


def _iso(dt: datetime) -> str:
    return dt.isoformat()


@pytest.fixture
def activity_body():
    def make(**kw):
        start = datetime.now(UTC) + timedelta(days=3)
        body = {"category": "lunch_hour", "title": "午间一小时·书法体验", "description": "国韵书法",
                "address": "新华路 1 号 3 楼", "starts_at": _iso(start), "ends_at": _iso(start + timedelta(hours=1)),
                "capacity": 2, "waitlist_enabled": True}
        body.update(kw)
        return body

    return make


@pytest.fixture
def make_activity(client, make_staff, staff_headers, activity_body):
    staff = make_staff(role="staff")

    def make(**kw):
        resp = client.post("/api/v1/staff/activities", json=activity_body(**kw), headers=staff_headers(staff))
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()

    make.staff = staff
    return make


def test_staff_creates_and_users_see_seats_left(client, make_activity, make_user, user_token):
    a = make_activity(capacity=3)
    assert a["seats_left"] == 3 and a["category_label"] == "午间一小时"
    user = make_user()
    resp = client.post(f"/api/v1/activities/{a['id']}/registrations", json={}, headers=user_token(user))
    assert resp.status_code == 201
    detail = client.get(f"/api/v1/activities/{a['id']}").get_json()
    assert detail["seats_left"] == 2 and detail["seats_taken"] == 1


@pytest.mark.parametrize("override,field,text", [
    ({"capacity": 0}, "capacity", "名额"),
    ({"capacity": -5}, "capacity", "名额"),
    ({"per_enterprise_cap": 0}, "per_enterprise_cap", "每家企业"),
    ({"ends_at": "2020-01-01T00:00:00+08:00"}, "ends_at", "结束时间必须晚于开始时间"),
    ({"registration_closes_at": "2099-01-01T00:00:00+08:00"}, "registration_closes_at", "不能晚于活动开始"),
    ({"registration_opens_at": "2099-01-01T00:00:00+08:00"}, "registration_opens_at", "必须早于活动开始"),
    ({"category": "karaoke"}, "category", "活动类别"),
    ({"address": "", "building_id": None}, "address", "地点"),
    ({"questions": [{"key": "size", "label": "尺码", "type": "choice"}]}, "questions", "选项"),
    ({"starts_at": "next tuesday"}, "starts_at", "时间格式"),
])
def test_create_refuses_bad_input_with_chinese_field_messages(client, make_staff, staff_headers, activity_body,
                                                              override, field, text):
    staff = make_staff(role="staff")
    resp = client.post("/api/v1/staff/activities", json=activity_body(**override), headers=staff_headers(staff))
    assert resp.status_code == 422, resp.get_json()
    body = resp.get_json()
    assert field in body["fields"] and text in body["fields"][field]


def test_dept_role_cannot_create(client, make_staff, staff_headers, activity_body):
    resp = client.post("/api/v1/staff/activities", json=activity_body(), headers=staff_headers(make_staff(role="dept")))
    assert resp.status_code == 403


def test_patch_validates_against_the_stored_values(client, make_activity, staff_headers):
    a = make_activity()
    headers = staff_headers(make_activity.staff)
    bad = client.patch(f"/api/v1/staff/activities/{a['id']}", json={"ends_at": a["starts_at"]}, headers=headers)
    assert bad.status_code == 422 and "ends_at" in bad.get_json()["fields"]
    ok = client.patch(f"/api/v1/staff/activities/{a['id']}", json={"title": "新标题"}, headers=headers)
    assert ok.status_code == 200 and ok.get_json()["title"] == "新标题"


def test_list_filters_by_category_date_and_building(client, make_activity, make_building):
    b = make_building()
    day = datetime.now(UTC) + timedelta(days=10)
    make_activity(category="fitness", building_id=b.id, address="",
                  starts_at=_iso(day), ends_at=_iso(day + timedelta(hours=2)))
    make_activity(category="training")
    assert client.get("/api/v1/activities").get_json()["total"] == 2
    assert client.get("/api/v1/activities?category=fitness").get_json()["total"] == 1
    assert client.get(f"/api/v1/activities?building_id={b.id}").get_json()["items"][0]["place"].startswith(b.name)
    shanghai_day = (day + timedelta(hours=8)).date().isoformat()
    assert client.get(f"/api/v1/activities?date={shanghai_day}").get_json()["total"] == 1
    assert client.get("/api/v1/activities?category=nope").status_code == 422


def test_draft_is_hidden_from_users(client, make_activity):
    a = make_activity(status="draft")
    assert client.get(f"/api/v1/activities/{a['id']}").status_code == 404
    assert client.get("/api/v1/activities").get_json()["total"] == 0


def test_subscriptions_roundtrip(client, make_user, user_token):
    user = make_user()
    h = user_token(user)
    assert client.get("/api/v1/me/subscriptions", headers=h).get_json()["categories"] == []
    resp = client.put("/api/v1/me/subscriptions", json={"categories": ["fitness", "concert"]}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["categories"] == ["concert", "fitness"]
    resp = client.put("/api/v1/me/subscriptions", json={"categories": ["training"]}, headers=h)
    assert client.get("/api/v1/me/subscriptions", headers=h).get_json()["categories"] == ["training"]
    assert client.put("/api/v1/me/subscriptions", json={"categories": ["karaoke"]}, headers=h).status_code == 422
