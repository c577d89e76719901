"""QA of the bot's conversation in both channels (twelfth pass, fifth look): the Official Account webhook and the
mini-program's in-app chat (POST /api/v1/chat). A number after the list of the user's appeals picks that appeal;
numbers and long texts are no questions for staff's unanswered queue as they are; “取消吧” is no withdrawal."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from handlers.bot import KB_PROMPT
from tests.integration.test_chat2_qa_s11 import (
    appeal_of,  # noqa: F401  (a follower's appeal, acted on by staff)
)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.appeals import services as appeal_services
from wxapp_backend.appeals.services import Actor
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.bot import _memory_key


def _app(client, headers, text: str) -> dict:
    resp = client.post("/api/v1/chat", json={"text": text}, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def _user_of(openid: str) -> int:
    with session_scope() as s:
        return s.scalar(select(User.id).where(User.oa_openid == openid))


@pytest.fixture
def appeals_for(make_staff):
    """appeals_for(user_id): two appeals of that user, as they stand after staff acted: (street lamp accepted,
    air conditioning waiting for material); their (id, number) pairs, oldest first."""
    admin = make_staff(role="admin")
    staff = Actor("staff", admin.id, role="admin", name="管理员")

    def make(user_id: int) -> list[tuple[int, str]]:
        made = []
        for content, actions in (("园区门口的路灯坏了一个月了没人修", [("accept", {})]),
                                 ("办公楼空调不制冷，物业一直不处理", [("accept", {}),
                                                                    ("request_info", {"note": "请提供物业合同首页照片"})])):
            with session_scope() as s:
                appeal, _ = appeal_services.submit_appeal(s, user_id, appeal_services.Intake(
                    content=content, contact_name="张三", contact_phone="13800138000"))
                for action, data in actions:
                    appeal_services.perform(s, staff, appeal.id, action, data)
                made.append((appeal.id, appeal.number))
        return made

    return make


def test_a_number_after_my_appeals_picks_that_appeal_in_the_wechat_chat(oa_kb, appeals_for,  # noqa: F811
                                                                         redis_client, make_user):
    """“我的诉求” lists the user's appeals numbered “1. SQ…【已受理】…”, as the activity list is numbered; a “1” after
    it was main-menu item 1 (政策问答's prompt) and a “2” started the appeal intake. A number now picks that appeal:
    where it stands and its progress (the public timeline), for as long as a list of activities is remembered."""
    openid = "oAppealPick"
    say(oa_kb, openid, "你好")
    with oa_kb.app_context():
        (lamp_id, lamp), (air_id, air) = appeals_for(_user_of(openid))
    listing = say(oa_kb, openid, "我的诉求")
    assert f"1. {air}" in listing and f"2. {lamp}" in listing and "序号" in listing, listing
    reply = say(oa_kb, openid, "1")
    assert reply != KB_PROMPT and air in reply and "待补充材料" in reply, reply
    assert "请提供物业合同首页照片" in reply and "受理" in reply, reply  # the progress, staff's request included
    assert f"补充 {air}" in reply, reply  # and what the user can do about it, as in the list
    reply = say(oa_kb, openid, "第2个")
    assert lamp in reply and "登记诉求" not in reply and "路灯" in reply, reply
    assert "1～2" in say(oa_kb, openid, "5")
    # “有进展吗” lists them too, numbered the same way.
    assert f"1. {air}" in say(oa_kb, openid, "有进展吗")
    assert lamp in say(oa_kb, openid, "2")
    # Only the user's own appeals: a list remembered with someone else's appeal in it shows nothing of it.
    other = make_user()
    with session_scope() as s:
        theirs, _ = appeal_services.submit_appeal(s, other.id, appeal_services.Intake(
            content="隔壁公司的秘密诉求内容", contact_name="李四", contact_phone="13900139000"))
        their_number = theirs.number
    redis_client.set(_memory_key("oa", openid), f'{{"kind": "appeal", "ids": [{theirs.id}]}}', ex=60)
    reply = say(oa_kb, openid, "1")
    assert their_number not in reply and "秘密" not in reply, reply
    # The menu shown since: its digits again; the list expired: not the menu's 我要反映 either.
    say(oa_kb, openid, "菜单")
    assert say(oa_kb, openid, "1") == KB_PROMPT
    say(oa_kb, openid, "我的诉求")
    redis_client.delete(_memory_key("oa", openid))
    reply = say(oa_kb, openid, "2")
    assert "已经过期" in reply and "我的诉求" in reply and "登记诉求" not in reply, reply


def test_a_number_after_my_appeals_picks_that_appeal_in_the_app_chat(oa_kb, appeals_for, client,  # noqa: F811
                                                                     user_token, make_user):
    """The same in the mini-program's chat: “1” after 我的诉求 was the 政策问答 prompt, “4” 联系客服 (a hand-over)."""
    user = make_user()
    (lamp_id, lamp), (air_id, air) = appeals_for(user.id)
    h = user_token(user)
    assert f"1. {air}" in _app(client, h, "我的诉求")["reply"]
    body = _app(client, h, "1")
    assert air in body["reply"] and "请提供物业合同首页照片" in body["reply"] and body["decision"] == "guide", body
    assert f"补充 {air}" not in body["reply"] and "小程序" in body["reply"], body  # the app's pages, not chat commands
    body = _app(client, h, "２")
    assert lamp in body["reply"], body
    body = _app(client, h, "4")
    assert "1～2" in body["reply"] and body["decision"] != "handoff", body
    _app(client, h, "菜单")
    assert _app(client, h, "1")["reply"] == KB_PROMPT
    # “补充” (or “评价”) in the app's chat answers with the same numbered list: its numbers pick as well.
    assert f"1. {air}" in _app(client, h, "补充")["reply"]
    assert "请提供物业合同首页照片" in _app(client, h, "1")["reply"]


def test_a_long_number_alone_is_no_question_for_staff(oa_kb, client, user_token, make_user):  # noqa: F811
    """“1111111111111” (13 digits: a pocket dial, a card or account number) got “这个问题我还没学会，我已经把它记下来”
    and a row in staff's unanswered queue, while an 11-digit phone number got a friendly hint; an ID-card number, a
    landline with its dash or a phone number typed in groups went the same way as the 13 digits (“021-12345678” even
    got “您是不是想问：企业的问题可以打 12345 反映吗？”). A text of digits alone is now answered with a hint, in both
    chats, and queued for nobody."""
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    noise = ("1111111111111", "310101199001011234", "021-12345678", "138 0013 8000", "１２３４５６７８９０１２３４",
             "+86 138-0013-8000", "12345678901234567890123456789")
    h = user_token(make_user())
    for i, text in enumerate(noise):
        reply = say(oa_kb, f"oLongNumber{i}", text)
        assert "没学会" not in reply and "您是不是想问" not in reply and "人工" in reply, (text, reply)
        body = _app(client, h, text)
        assert body["decision"] == "smalltalk" and "没学会" not in body["reply"], (text, body)
    assert "没学会" not in say(oa_kb, "oLongNumberPhone", "13800138000")
    with oa_kb.app_context(), session_scope() as s:
        assert s.scalars(select(UnansweredQuestion.text)).all() == []
    # Words around the number are a question as before.
    assert "这串数字" not in say(oa_kb, "oLongNumberWords", "营业执照丢了怎么办 91310000MA1FL0000X")


def test_a_long_unanswered_text_shows_staff_it_was_cut(client, oa_kb, user_token, make_user):  # noqa: F811
    """The app's chat takes up to 5000 characters; an unanswered one reached staff's unanswered queue (and the chat
    log) cut to its first 500 characters without a mark: staff read it as the whole question. The cut is visible
    now: it ends with “…” and the original length."""
    from wxapp_backend.knowledge_store.models import ChatTurn, UnansweredQuestion

    text = "".join(f"第{i}件事：楼下新开的奶茶店周末几点开门营业，外卖能不能送到二十八楼。" for i in range(150))[:4321]
    assert len(text) == 4321
    body = _app(client, user_token(make_user()), text)
    assert body["decision"] == "fallback", body
    with session_scope() as s:
        row = s.scalars(select(UnansweredQuestion)).one()
        turn = s.scalars(select(ChatTurn).where(ChatTurn.decision == "fallback")).one()
        for kept in (row.text, turn.question):
            assert len(kept) <= 500 and kept.startswith(text[:300]), kept
            assert "…" in kept and "4321" in kept, kept[-40:]
    short = "楼下新开的奶茶店周末几点开门营业呀"
    assert _app(client, user_token(make_user()), short)["decision"] == "fallback"
    with session_scope() as s:
        assert s.scalar(select(UnansweredQuestion.text).where(UnansweredQuestion.text == short)) == short


def test_cancel_said_loosely_is_no_withdrawal_and_ends_the_flow_under_way(oa_kb, appeals_for, client,  # noqa: F811
                                                                          user_token, make_user):
    """“取消吧” (“我要取消”, “还是取消吧”) with no flow under way was read as withdrawing an appeal (“要撤回诉求 …
    吗？”) in the WeChat chat, and got the app's 撤回 instructions; “取消啦” got “您是不是想问：报名了去不了，怎么取消？”;
    “不取消” got the knowledge base's answer on how to cancel a registration. Inside the appeal intake “取消吧” became
    the enterprise's name (“算了吧” “描述有点短”), and at the summary it was no 取消. Now: a cancel said loosely is the
    flows' 取消 (and with nothing under way, “没有进行中的事项”); “不取消” keeps things as they are; 撤回诉求 is still
    the withdrawal; “怎么取消报名” is still a question."""
    openid = "oLooseCancel"
    say(oa_kb, openid, "你好")
    user = make_user()
    with oa_kb.app_context():
        appeals_for(_user_of(openid))
        appeals_for(user.id)
    h = user_token(user)
    for text in ("取消吧", "我要取消", "我想取消", "取消啦", "还是取消吧", "那算了吧", "取消了"):
        reply = say(oa_kb, openid, text)
        assert "撤回" not in reply[:10] and "没有进行中" in reply and "您是不是想问" not in reply, (text, reply)
        body = _app(client, h, text)
        assert "没有进行中" in body["reply"] and "点“撤回”" not in body["reply"], (text, body)
    for text in ("不取消", "先不取消", "不撤回", "不用取消"):
        reply = say(oa_kb, openid, text)
        assert "取消报名" not in reply and "撤回诉求" not in reply[:12] and "好的" in reply, (text, reply)
        body = _app(client, h, text)
        assert "取消报名" not in body["reply"] and body["decision"] == "smalltalk", (text, body)
    assert "要撤回诉求" in say(oa_kb, openid, "撤回诉求") or "要撤回哪一条" in say(oa_kb, openid, "撤回诉求")
    assert "撤回" in _app(client, h, "取消诉求")["reply"]
    assert "取消报名" in say(oa_kb, openid, "怎么取消报名")

    # Inside the intake.
    for steps in (["取消吧"], ["算了吧"], ["园区门口的路灯坏了一个月了没人修", "取消吧"],
                  ["园区门口的路灯坏了一个月了没人修", "上海测试科技有限公司", "张三 13800138000", "跳过", "还是取消吧"]):
        who = f"oLooseCancelIntake{len(steps)}"
        say(oa_kb, who, "我要反映")
        for text in steps[:-1]:
            say(oa_kb, who, text)
        reply = say(oa_kb, who, steps[-1])
        assert "已取消" in reply, (steps, reply)
        assert "没有进行中" in say(oa_kb, who, "取消"), steps  # the draft is gone
    who = "oNotCancelIntake"
    say(oa_kb, who, "我要反映")
    say(oa_kb, who, "园区门口的路灯坏了一个月了没人修")
    reply = say(oa_kb, who, "不取消")
    assert "企业名称" in reply and "联系人" not in reply, reply  # not the enterprise's name: the step again
    assert "联系人" in say(oa_kb, who, "上海测试科技有限公司")


def test_cancel_said_loosely_during_a_supplement_is_not_sent_to_staff(oa_kb, appeals_for):  # noqa: F811
    """In the supplement flow (“补充”: the next text goes to staff as the material), “取消吧” was submitted as the
    material and the appeal went back to work; it now ends the flow as “取消” does."""
    from wxapp_backend.appeals.models import Appeal

    openid = "oLooseCancelSupplement"
    say(oa_kb, openid, "你好")
    with oa_kb.app_context():
        (_lamp_id, _lamp), (air_id, air) = appeals_for(_user_of(openid))
    assert "需要您补充" in say(oa_kb, openid, f"补充 {air}")
    reply = say(oa_kb, openid, "取消吧")
    assert "已退出" in reply and "已补充" not in reply, reply
    with session_scope() as s:
        assert s.get(Appeal, air_id).status == "pending_enterprise"


def test_faces_alone_are_no_supplement(oa_kb, appeals_for, client, user_token, make_user):  # noqa: F811
    """Staff asked for material; in the chat's supplement flow “👍👍”, “😀😀😀” or WeChat's faces as text (“[微笑][微笑]”,
    “/:strong/:strong”) were submitted as the material and the appeal went back to work with nothing for staff to go
    on (the intake refuses such a description; the mini-program's supplement refused “👌” but took “[微笑][微笑]”).
    Now the chat asks for words and keeps the flow; the API refuses faces written as text too."""
    from wxapp_backend.appeals.models import Appeal

    openid = "oFacesSupplement"
    say(oa_kb, openid, "你好")
    with oa_kb.app_context():
        (_lamp_id, _lamp), (air_id, air) = appeals_for(_user_of(openid))
    assert "需要您补充" in say(oa_kb, openid, f"补充 {air}")
    for faces in ("👍👍", "[微笑][微笑]", "/:strong/:strong", "😀😀😀"):
        reply = say(oa_kb, openid, faces)
        assert "已补充" not in reply and "文字" in reply, (faces, reply)
    with session_scope() as s:
        assert s.get(Appeal, air_id).status == "pending_enterprise"
    assert "已补充" in say(oa_kb, openid, "物业合同首页已经拍照发给专员了")

    user = make_user()
    (_lamp_id, _lamp), (air_id, _air) = appeals_for(user.id)
    resp = client.post(f"/api/v1/appeals/{air_id}/supplement", json={"content": "[微笑][微笑]"},
                       headers=user_token(user))
    assert resp.status_code == 422 and "表情" in resp.get_data(as_text=True), resp.get_data(as_text=True)


def test_command_words_with_english_around_them(oa_kb, appeals_for, client, user_token, make_user):  # noqa: F811
    """Office workers mix English in: “我的诉求 please”, “菜单 pls”, “help me”, “cancel”, “thank u” got “这个问题我还没
    学会” and landed in staff's unanswered queue (“cancel” inside the appeal intake became the problem's description or
    the enterprise's name). They now mean the command, in both chats."""
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    openid = "oEnglishAround"
    say(oa_kb, openid, "你好")
    user = make_user()
    with oa_kb.app_context():
        (_l, lamp), _ = appeals_for(_user_of(openid))
        (_l2, lamp2), _ = appeals_for(user.id)
    h = user_token(user)
    assert lamp in say(oa_kb, openid, "我的诉求 please")
    assert lamp2 in _app(client, h, "我的诉求 please")["reply"]
    for text in ("菜单 pls", "help me", "Please 菜单"):
        assert "回复数字即可" in say(oa_kb, openid, text), text
        assert "回复数字即可" in _app(client, h, text)["reply"], text
    assert "没有进行中" in say(oa_kb, openid, "cancel")
    assert "没有进行中" in _app(client, h, "Cancel")["reply"]
    for text in ("thank u", "Thank you!"):
        assert "不客气" in say(oa_kb, openid, text), text
        assert "不客气" in _app(client, h, text)["reply"], text
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "园区门口的路灯坏了一个月了没人修")
    assert "已取消" in say(oa_kb, openid, "cancel")
    with oa_kb.app_context(), session_scope() as s:
        assert s.scalars(select(UnansweredQuestion.text)).all() == []


def test_a_photo_from_someone_asked_for_material_points_to_the_supplement(oa_kb, appeals_for):  # noqa: F811
    """Staff asked for a photo (“请提供物业合同首页照片”); the user sent it straight into the chat, outside the 补充 flow.
    The bot answered “如果是想反映问题，请回复“我要反映”…”: a new appeal, while the photo reached nobody. It now says
    the photo has not reached staff yet and how it does (补充 with that appeal's number); others get the usual hint."""
    from tests.integration.test_chat2_qa_s9 import photo

    openid = "oPhotoForMaterial"
    say(oa_kb, openid, "你好")
    with oa_kb.app_context():
        (_lamp_id, _lamp), (_air_id, air) = appeals_for(_user_of(openid))
    reply = photo(oa_kb, openid)
    assert f"补充 {air}" in reply and "还没有" in reply and "我要反映" not in reply, reply
    assert "需要您补充" in say(oa_kb, openid, f"补充 {air}")
    assert "第 1 张" in photo(oa_kb, openid)  # in the flow: taken, as before
    reply = photo(oa_kb, "oPhotoNobodyAsked")
    assert "我要反映" in reply and "补充" not in reply, reply


def _voice(application, openid: str, heard: str) -> str:
    return say(application, openid, extra={"MsgType": "voice", "MediaId": "VOICE1", "Format": "amr",
                                           "Recognition": heard})


def test_a_spoken_menu_digit_means_the_menu_item(oa_kb, appeal_of):  # noqa: F811
    """WeChat's speech recognition ends what it heard with “。”: “1” spoken after the menu came as “1。” and got “小二
    没看明白这个数字” (typed, “1” is 政策问答); “4。” after a 办结 notice was no score either. A spoken digit now means
    what the typed one means."""
    openid = "oSpokenDigit"
    say(oa_kb, openid, "菜单")
    assert _voice(oa_kb, openid, "1。") == KB_PROMPT
    say(oa_kb, openid, "菜单")
    assert "登记诉求" in _voice(oa_kb, openid, "2。")
    scorer = "oSpokenScore"
    number = appeal_of(scorer, "resolve", resolution="已协调物业修好路灯")
    reply = _voice(oa_kb, scorer, "4。")
    assert "4 分" in reply and number in reply, reply
