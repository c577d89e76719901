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
