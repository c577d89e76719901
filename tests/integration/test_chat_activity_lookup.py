"""“活动” in the chat lists the activities one can still register for (time, place, seats left), and “我的报名”
the user's own: the reply only said to look in the mini-program, while ARCHITECTURE.md has the handlers look
activities up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wxapp_backend.activities import services as activity_services
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.chat import run_chat


def _say(app, standin, openid: str, *lines: str) -> list[str]:
    out: list[str] = []
    run_chat(app, "oa", openid, lines=list(lines), echo=out.append, standin=standin)
    return [line for line in out if line.startswith("店小二>")]


def test_activities_are_listed_with_time_place_and_seats(app, standin, make_activity):
    soon = datetime.now(UTC) + timedelta(days=2)
    make_activity(title="午间一小时·瑜伽", address="新华大厦 3 楼", capacity=20, starts_at=soon)
    make_activity(title="楼宇音乐会", address="幸福大楼大堂", capacity=50, starts_at=soon + timedelta(days=1))
    make_activity(title="已经结束的讲座", starts_at=datetime.now(UTC) - timedelta(days=3))
    make_activity(title="还在草稿的活动", status="draft", starts_at=soon)
    reply = "\n".join(_say(app, standin, "o-activity-1", "活动"))
    assert "午间一小时·瑜伽" in reply and "楼宇音乐会" in reply
    assert reply.index("午间一小时·瑜伽") < reply.index("楼宇音乐会")  # soonest first
    assert "新华大厦 3 楼" in reply and "剩 20 个名额" in reply
    assert "已经结束的讲座" not in reply and "还在草稿的活动" not in reply
    assert "小程序" in reply


def test_no_activity_says_so(app, standin):
    reply = "\n".join(_say(app, standin, "o-activity-2", "活动"))
    assert "暂时没有" in reply


def test_my_registrations_in_the_chat(app, client, standin, make_activity, db, user_token):
    from sqlalchemy import select

    from wxapp_backend.auth.models import User

    a = make_activity(title="健康讲座", capacity=1)
    _say(app, standin, "o-activity-3", "你好")  # the follower's user row
    user_id = db.scalar(select(User.id).where(User.oa_openid == "o-activity-3"))
    with session_scope() as s:
        activity_services.register(s, activity_id=a.id, user_id=user_id)
    reply = "\n".join(_say(app, standin, "o-activity-3", "我的报名"))
    assert "健康讲座" in reply and "报名成功" in reply
    # The mini-program's own chat says the same.
    user = db.get(User, user_id)
    app_reply = client.post("/api/v1/chat", json={"text": "我的报名"}, headers=user_token(user)).get_json()["reply"]
    assert "健康讲座" in app_reply and "报名成功" in app_reply
    # A follower never logged in to the mini-program: the chat cannot see their registrations (s17, chatact), it
    # does not say they have none.
    assert "看不到您在小程序里的报名" in "\n".join(_say(app, standin, "o-activity-4", "我的报名"))
