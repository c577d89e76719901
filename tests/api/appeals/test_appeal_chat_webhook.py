"""The chat intake through the real webhook path (flask chat's loop against the stand-in)."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.appeals.models import Appeal
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.chat import run_chat


def test_intake_over_the_official_account_webhook(app, app_ctx, standin):
    out: list[str] = []
    run_chat(app, "oa", "chat-appeal-user", lines=["我要反映", "园区停车位太少，外来车辆总是违停",
                                                  "测试贸易有限公司", "王五 13900139000", "跳过", "确认"],
             echo=out.append, standin=standin)
    text = "\n".join(out)
    assert "共 5 步" in text and "请核对您的诉求" in text and "诉求已提交，编号 SQ" in text
    with session_scope() as s:
        appeal = s.scalars(select(Appeal)).unique().one()
        assert appeal.channel == "chat" and appeal.contact_name == "王五"
        assert appeal.category.name == "交通停车"


def test_an_official_account_follower_closes_the_loop_in_the_chat(app, app_ctx, standin, make_staff):
    """Filed, resolved, rated: all in the Official Account chat, by a user with no mini-program login."""
    from wxapp_backend.appeals import services
    from wxapp_backend.appeals.models import AppealRating
    from wxapp_backend.audit import Actor
    from wxapp_backend.auth.models import User

    openid = "chat-loop-user"
    admin = Actor("staff", make_staff(role="admin").id, role="admin", name="管理员")
    out: list[str] = []
    run_chat(app, "oa", openid, lines=["我要反映", "写字楼门口的路灯坏了一个月，晚上很黑",
                                       "测试贸易有限公司", "王五 13900139000", "跳过", "确认"],
             echo=out.append, standin=standin)
    with session_scope() as s:
        appeal = s.scalars(select(Appeal)).unique().one()
        assert s.get(User, appeal.user_id).openid == f"oa:{openid}"  # an Official Account user only
        services.perform(s, admin, appeal.id, "accept", {})
        services.perform(s, admin, appeal.id, "resolve", {"resolution": "已联系路政更换灯具"})
        appeal_id, number = appeal.id, appeal.number
    out.clear()
    run_chat(app, "oa", openid, lines=["我的诉求", "评价", "1", "5", "修得很快，谢谢"], echo=out.append,
             standin=standin)
    text = "\n".join(out)
    assert f"评价 {number}" in text and "已联系路政更换灯具" in text and f"诉求 {number} 已关闭" in text
    with session_scope() as s:
        rating = s.scalars(select(AppealRating).where(AppealRating.appeal_id == appeal_id)).one()
        assert rating.resolved and rating.satisfaction == 5 and rating.comment == "修得很快，谢谢"
        assert s.get(Appeal, appeal_id).status == "closed"
