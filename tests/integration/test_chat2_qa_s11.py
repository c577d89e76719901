"""QA of the bot's chat, second wave of the eleventh pass: supplement hint on a “您是不是想问” list, activities in
the chat (报名 + category, only what the user may join)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the first pass's fixture and helper)
from wxapp_backend.appeals import services as appeal_services
from wxapp_backend.appeals.services import Actor
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope


def _user_of(openid: str) -> int:
    with session_scope() as s:
        return s.scalar(select(User.id).where(User.oa_openid == openid))


@pytest.fixture
def asked_for_material(oa_kb, make_staff):  # noqa: F811
    """A follower whose appeal waits for material staff asked for: (openid, appeal number)."""
    openid = "oChat2Material"
    say(oa_kb, openid, "你好")
    user_id = _user_of(openid)
    admin = make_staff(role="admin")
    staff = Actor("staff", admin.id, role="admin", name="管理员")
    with oa_kb.app_context(), session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, user_id, appeal_services.Intake(
            content="园区门口的路灯坏了一个月了没人修", contact_name="张三", contact_phone="13800138000"))
        appeal_services.perform(s, staff, appeal.id, "accept", {})
        appeal_services.perform(s, staff, appeal.id, "request_info", {"note": "请提供路灯的具体位置"})
        number = appeal.number
    return openid, number


def test_the_supplement_hint_also_follows_a_did_you_mean_list(oa_kb, asked_for_material):  # noqa: F811
    """A user asked for material wrote something the bot answered with “您是不是想问” (a guess, not an answer): the
    hint “回复“补充：”加上内容” showed only after the fallback, so the material reached nobody and nobody said so."""
    openid, number = asked_for_material
    reply = say(oa_kb, openid, "融资")
    assert "您是不是想问" in reply, reply
    assert f"诉求 {number} 正等您补充材料" in reply and "补充：" in reply, reply
