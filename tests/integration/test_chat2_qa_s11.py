"""QA of the bot's chat, second wave of the eleventh pass: supplement hint on a “您是不是想问” list, activities in
the chat (报名 + category, only what the user may join)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the first pass's fixture and helper)
from wxapp_backend.appeals import services as appeal_services
from wxapp_backend.appeals.models import Appeal, AppealRating
from wxapp_backend.appeals.services import Actor
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope


def _user_of(openid: str) -> int:
    with session_scope() as s:
        return s.scalar(select(User.id).where(User.oa_openid == openid))


@pytest.fixture
def appeal_of(oa_kb, make_staff):  # noqa: F811
    """appeal_of(openid, action, **data): a follower's appeal, accepted, then `action` by staff; its number."""
    admin = make_staff(role="admin")
    staff = Actor("staff", admin.id, role="admin", name="管理员")

    def make(openid: str, action: str, **data) -> str:
        say(oa_kb, openid, "你好")
        with oa_kb.app_context(), session_scope() as s:
            appeal, _ = appeal_services.submit_appeal(s, _user_of(openid), appeal_services.Intake(
                content="园区门口的路灯坏了一个月了没人修", contact_name="张三", contact_phone="13800138000"))
            appeal_services.perform(s, staff, appeal.id, "accept", {})
            appeal_services.perform(s, staff, appeal.id, action, data)
            return appeal.number

    return make


@pytest.fixture
def asked_for_material(appeal_of):
    """A follower whose appeal waits for material staff asked for: (openid, appeal number)."""
    openid = "oChat2Material"
    return openid, appeal_of(openid, "request_info", note="请提供路灯的具体位置")


def _rating_of(number: str) -> AppealRating | None:
    with session_scope() as s:
        return s.scalar(select(AppealRating).join(Appeal, Appeal.id == AppealRating.appeal_id)
                        .where(Appeal.number == number))


def test_the_supplement_hint_also_follows_a_did_you_mean_list(oa_kb, asked_for_material):  # noqa: F811
    """A user asked for material wrote something the bot answered with “您是不是想问” (a guess, not an answer): the
    hint “回复“补充：”加上内容” showed only after the fallback, so the material reached nobody and nobody said so."""
    openid, number = asked_for_material
    reply = say(oa_kb, openid, "融资")
    assert "您是不是想问" in reply, reply
    assert f"诉求 {number} 正等您补充材料" in reply and "补充：" in reply, reply


def _chat(app, standin, openid: str, *lines: str) -> str:
    from wxapp_backend.wechat.chat import run_chat

    out: list[str] = []
    run_chat(app, "oa", openid, lines=list(lines), echo=out.append, standin=standin)
    return "\n".join(line for line in out if line.startswith("店小二>"))


def test_sign_up_for_a_category_lists_its_open_activities(app, client, standin, make_activity, make_user,
                                                          user_token):
    """“我想报名午间一小时” / “报名健身活动” got a knowledge-base description of the programme, not the activities one
    could register for nor how: they now list that category's open activities and the way to register, in the WeChat
    chat and in the mini-program's chat."""
    soon = datetime.now(UTC) + timedelta(days=2)
    make_activity(category="lunch_hour", title="午间一小时·瑜伽", capacity=20, starts_at=soon)
    make_activity(category="fitness", title="健身操入门", capacity=15, starts_at=soon)
    make_activity(category="concert", title="楼宇音乐会", capacity=50, starts_at=soon)
    make_activity(category="social", title="咖啡拉花体验课", capacity=8, starts_at=soon)
    reply = _chat(app, standin, "oSignUpLunch", "我想报名午间一小时")
    assert "午间一小时·瑜伽" in reply and "剩 20 个名额" in reply and "报名" in reply, reply
    assert "楼宇音乐会" not in reply and "健身操入门" not in reply, reply
    reply = _chat(app, standin, "oSignUpFit", "报名健身活动")
    assert "健身操入门" in reply and "午间一小时·瑜伽" not in reply, reply
    reply = _chat(app, standin, "oSignUpTitle", "我要报名咖啡拉花体验课")
    assert "咖啡拉花体验课" in reply and "剩 8 个名额" in reply, reply
    assert "没有可以报名" in _chat(app, standin, "oSignUpNone", "报名垂直马拉松")
    # A policy question with 报名 in it stays the knowledge base's.
    reply = _chat(app, standin, "oSignUpPolicy", "职业技能培训补贴怎么报名")
    assert "可以报名的活动" not in reply, reply
    user = make_user()
    body = client.post("/api/v1/chat", json={"text": "我想报名午间一小时"}, headers=user_token(user)).get_json()
    assert "午间一小时·瑜伽" in body["reply"] and "楼宇音乐会" not in body["reply"], body


def test_the_activity_list_shows_only_what_the_user_may_join(app, client, standin, make_activity, make_user,
                                                             make_building, user_token):
    """“活动” listed activities for other buildings, industries or verified contacts only: the user picked one in
    the mini-program and was refused. A known user now sees only those the registration would accept."""
    soon = datetime.now(UTC) + timedelta(days=2)
    other = make_building(name="别的大厦")
    make_activity(title="人人可报的瑜伽课", capacity=20, starts_at=soon)
    make_activity(title="别的大厦专场音乐会", capacity=20, starts_at=soon, audience_building_ids=[other.id])
    make_activity(title="金融业专场沙龙", capacity=20, starts_at=soon, audience_industries=["金融业"])
    make_activity(title="核实联系人专场", capacity=20, starts_at=soon, verified_only=True)
    reply = _chat(app, standin, "oEligibleList", "活动")
    assert "人人可报的瑜伽课" in reply, reply
    for title in ("别的大厦专场音乐会", "金融业专场沙龙", "核实联系人专场"):
        assert title not in reply, (title, reply)
    user = make_user()
    body = client.post("/api/v1/chat", json={"text": "活动"}, headers=user_token(user)).get_json()
    assert "人人可报的瑜伽课" in body["reply"] and "别的大厦专场音乐会" not in body["reply"], body


def test_a_digit_right_after_the_resolution_notice_is_the_score(oa_kb, appeal_of):  # noqa: F811
    """Right after “您的诉求已办结…请评价”, the user answered “4” (a score): it meant menu item 4 and handed them to 人工.
    Shortly after a resolution notice a bare 1～5 is now the score, said back with 取消 offered; once the menu has
    been shown since, a digit means the menu again."""
    openid = "oScoreAfterNotice"
    number = appeal_of(openid, "resolve", resolution="已协调物业修好路灯")
    reply = say(oa_kb, openid, "4")
    assert "4 分" in reply and number in reply and "取消" in reply, reply
    assert "解决了吗" in reply, reply
    assert "想对我们说" in say(oa_kb, openid, "1")  # “问题本身解决了吗？” was asked last: 1 is 已解决
    assert number in say(oa_kb, openid, "跳过")
    rating = _rating_of(number)
    assert rating is not None and rating.satisfaction == 4 and rating.resolved, rating

    other = "oMenuAfterNotice"
    appeal_of(other, "resolve", resolution="已协调物业修好路灯")
    say(oa_kb, other, "菜单")  # the menu shown after the notice: its digits are meant
    reply = say(oa_kb, other, "3")
    assert "活动" in reply and "分（" not in reply, reply


def test_an_unfinished_rating_keeps_what_was_answered(oa_kb, appeal_of, redis_client):  # noqa: F811
    """“1” (已解决) answered, then the user came back after the conversation had expired and said “满意”: the bot
    asked “问题解决了吗？” again from the start. What was answered is now kept, and only what is missing is asked."""
    from handlers.state import state_key

    openid = "oUnfinishedRating"
    number = appeal_of(openid, "resolve", resolution="已协调物业修好路灯")
    assert "解决了吗" in say(oa_kb, openid, "评价")
    assert "打分" in say(oa_kb, openid, "1")
    redis_client.delete(state_key("oa", openid))  # half an hour of silence
    reply = say(oa_kb, openid, "满意")
    assert "解决了吗" not in reply and "想对我们说" in reply, reply
    say(oa_kb, openid, "跳过")
    rating = _rating_of(number)
    assert rating is not None and rating.resolved and rating.satisfaction == 4, rating

    second = "oUnfinishedRating2"
    appeal_of(second, "resolve", resolution="已协调物业修好路灯")
    say(oa_kb, second, "评价")
    say(oa_kb, second, "2")  # 未解决
    redis_client.delete(state_key("oa", second))
    reply = say(oa_kb, second, "评价")  # the command again: it goes on where it stopped
    assert "问题还没解决" in reply and "打分" in reply and "回复 1 已解决" not in reply, reply
