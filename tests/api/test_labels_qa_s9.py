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
