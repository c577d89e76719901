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
