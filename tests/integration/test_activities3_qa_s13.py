"""White-collar activities and staff notices, found wanting by a demanding user's QA pass (session 13): what
registrants hear when an activity is called off or moved, reminders that must never go out wrong or twice, and
notices staff push."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.notices.models import InboxItem, Notification

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _reg(client, aid, headers, answers=None):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def _accept_all(client, headers, template_ids):
    """The worker taps 允许 on every template the registration asked for (wx.requestSubscribeMessage)."""
    resp = client.post("/api/v1/me/subscribe-results", json={"results": dict.fromkeys(template_ids, "accept")},
                       headers=headers)
    assert resp.status_code == 200, resp.get_json()


def test_registrants_of_a_cancelled_activity_are_pushed_the_news_on_a_template_they_allowed(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, run_jobs, db):
    """Registering asks the worker to allow the reminder and the 活动调整 templates (subscribe_hint); the cancellation
    went out on the registration-result template nobody confirmed had been asked to allow, so it found no credit and
    stayed in 消息: the worker heard nothing and came to the door of a cancelled activity."""
    aid = new_activity(capacity=1)
    sure, queued = make_user(), make_user()
    for user in (sure, queued):
        h = user_token(user)
        out = _reg(client, aid, h)
        _accept_all(client, h, out["subscribe"]["template_ids"])
    run_jobs()
    before = len(standin.calls_to(SUBSCRIBE))
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"status": "cancelled", "cancel_reason": "台风预警"},
                        headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    run_jobs()
    pushed = standin.calls_to(SUBSCRIBE)[before:]
    assert sorted(c.body["touser"] for c in pushed) == sorted([sure.openid, queued.openid]), \
        [n.status for n in db.scalars(select(Notification)).all()]
    for call in pushed:
        values = " ".join(v["value"] for v in call.body["data"].values())
        assert "取消" in values and "台风预警" in values, values
    # Each still hears it in 消息, in Chinese, once.
    for user in (sure, queued):
        titles = db.scalars(select(InboxItem.title).where(InboxItem.user_id == user.id)).all()
        assert titles.count("活动已取消") == 1, titles
