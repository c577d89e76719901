"""Mini-program user journeys end to end (QA pass 9): what the screens read agrees and can be rendered."""

from __future__ import annotations


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def test_registration_answers_carry_the_chinese_status_label(client, new_activity, make_user, user_token):
    """Every registration the mini-program shows (the register answer, 我的报名, a cancel) says its status in
    Chinese, as appeals do; it used to give only the code (waitlisted, confirmed, ...)."""
    aid = new_activity(capacity=1)
    first, me = make_user(), make_user()
    seat = _reg(client, aid, user_token(first)).get_json()
    assert seat["status_label"] == "报名成功"
    queued = _reg(client, aid, user_token(me))
    assert queued.status_code == 201 and queued.get_json()["status_label"] == "候补中"
    cancelled = client.post(f"/api/v1/registrations/{seat['id']}/cancel", json={}, headers=user_token(first))
    assert cancelled.get_json()["status_label"] == "已取消"
    mine = client.get("/api/v1/me/registrations", headers=user_token(me)).get_json()["items"]
    assert [(r["status"], r["status_label"]) for r in mine] == [("confirmed", "报名成功")]
