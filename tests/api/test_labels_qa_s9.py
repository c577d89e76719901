"""The mini-program renders states as words: the activity's status and the user's binding state came as codes only
(draft / published / cancelled; none / pending / verified / rejected), unlike appeals and registrations."""

from __future__ import annotations


def test_activity_and_binding_states_come_with_chinese_labels(client, new_activity, make_user, user_token,
                                                               make_enterprise):
    aid = new_activity()
    body = client.get(f"/api/v1/activities/{aid}").get_json()
    assert body["status"] == "published" and body["status_label"] == "已发布"
    listed = client.get("/api/v1/activities").get_json()["items"]
    assert all(a["status_label"] for a in listed)
    user = make_user(enterprise_id=make_enterprise().id, binding_state="pending")
    me = client.get("/api/v1/me", headers=user_token(user)).get_json()
    assert me["binding_state"] == "pending" and me["binding_state_label"] == "待核实"


def test_the_activity_page_shows_the_users_own_registration(client, new_activity, make_user, user_token):
    """The detail said nothing about the reader's own registration: the page could not show 已报名 or 取消报名
    without fetching all of 我的报名."""
    aid = new_activity()
    user, other = make_user(), make_user()
    h = user_token(user)
    assert client.get(f"/api/v1/activities/{aid}", headers=h).get_json()["my_registration"] is None
    assert "my_registration" not in client.get(f"/api/v1/activities/{aid}").get_json()  # anonymous
    rid = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": {}},
                      headers=h).get_json()["id"]
    mine = client.get(f"/api/v1/activities/{aid}", headers=h).get_json()["my_registration"]
    assert mine["id"] == rid and mine["status"] == "confirmed" and mine["can_cancel"] is True
    assert client.get(f"/api/v1/activities/{aid}", headers=user_token(other)).get_json()["my_registration"] is None


def test_the_list_and_the_page_say_who_may_not_register(client, new_activity, make_user, user_token,
                                                        make_building):
    """The public list showed activities the reader could not join; they learnt it from a 403 after tapping 报名."""
    mine, other = make_building(name="新华大厦"), make_building(name="幸福大楼")
    open_to_all = new_activity(title="楼宇音乐会")
    only_other = new_activity(title="幸福大楼瑜伽", audience_building_ids=[other.id])
    user = make_user(building_id=mine.id)
    h = user_token(user)
    items = {a["id"]: a for a in client.get("/api/v1/activities", headers=h).get_json()["items"]}
    assert items[open_to_all]["ineligible_reason"] is None
    assert "不在范围内" in items[only_other]["ineligible_reason"]
    assert "不在范围内" in client.get(f"/api/v1/activities/{only_other}", headers=h).get_json()["ineligible_reason"]
    assert all("ineligible_reason" not in a for a in client.get("/api/v1/activities").get_json()["items"])
    refused = client.post(f"/api/v1/activities/{only_other}/registrations", json={"answers": {}}, headers=h)
    assert refused.status_code == 403 and refused.get_json()["message"] == items[only_other]["ineligible_reason"]
