"""QA of the bot's conversations as enterprises really chat, through the real (signed, encrypted) webhook path."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from tests.api.test_webhook import OA_APPID, OA_KEY, OA_TOKEN, acct_of, build, post, reply_of
from tests.integration.appeals.test_appeal_chat_followup import (
    chat,  # noqa: F401  (the follow-up's chat fixture)
)
from wxapp_backend.appeals.models import AppealRating
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.bot import _memory_key
from wxapp_backend.wechat.chat import make_push

_ids = itertools.count(9_100_000_000)


@pytest.fixture
def oa_kb(app, settings):
    application = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID)
    with application.app_context():
        from wxapp_backend.knowledge_store.cli import load_default_if_empty
        from wxapp_backend.knowledge_store.services import get_runtime

        load_default_if_empty()
        get_runtime().check_interval = 0
    return application


def say(application, openid, text=None, **kw):
    """One push from `openid`; the passive reply's text ('' for success)."""
    plain = make_push(acct_of(application), openid, text=text, msg_id=str(next(_ids)), **kw)
    resp = post(application, "oa", plain)
    assert resp.status_code == 200
    doc = reply_of(application, resp)
    return "" if doc is None else doc.get("Content", "")


def test_a_number_outside_the_choices_asks_again_and_keeps_them(oa_kb, redis_client):
    """“您是不是想问” with two choices, the user answers 5 (or 2 after one choice): the number went to the
    knowledge base as a question, which offered unrelated “similar” entries (税务局周末办税 for “2”) and dropped
    the choices. It now says which numbers to reply, and the choices still work."""
    openid = "oPickAgain"
    say(oa_kb, openid, "你好")
    redis_client.set(_memory_key("oa", openid), '["talent-foreign-work-permit", "talent-hub"]', ex=60)
    for wrong in ("5", "0", "-1", "３"):
        reply = say(oa_kb, openid, wrong)
        assert "1～2" in reply and "您是不是想问" not in reply and "没学会" not in reply, (wrong, reply)
    assert "工作许可" in say(oa_kb, openid, "1")


def test_a_bare_number_with_no_choices_is_not_a_question(oa_kb):
    """“5” or “0” with nothing offered: no “您是不是想问” list of unrelated entries, no “还没学会” (which also
    put the number in the staff's queue of unanswered questions)."""
    for text in ("5", "0", "12", "十二"):  # “二” alone is the menu's 2, as “2” is
        reply = say(oa_kb, "oBareNumber", text)
        assert "您是不是想问" not in reply and "没学会" not in reply and "菜单" in reply, (text, reply)


def test_the_menu_during_an_appeal_draft_keeps_the_draft_aside(oa_kb):
    """Mid-intake the user taps 政策问答 (or types 菜单) and asks a question: the question was taken as the
    enterprise's name and the bot asked for a contact; after the menu, “2” became the contact. The menu now keeps
    the draft aside (and says so): the question is answered, the digit means the menu, “继续” resumes the step."""
    openid = "oMenuInDraft"
    say(oa_kb, openid, "我要反映")
    assert "企业名称" in say(oa_kb, openid, "办公室空调一直不制冷已经一周了")
    shown = say(oa_kb, openid, event="CLICK", event_key="MENU_KB")
    assert "政策" in shown and "继续" in shown
    answer = say(oa_kb, openid, "开办企业需要哪些材料")
    assert "一窗通" in answer and "联系人" not in answer
    assert "企业名称" in say(oa_kb, openid, "继续")
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司")
    menu = say(oa_kb, openid, "菜单")
    assert "回复数字即可" in menu and "第 3/5 步" in menu
    assert "未填完" in say(oa_kb, openid, "2")  # the menu's 我要反映: the draft is waiting
    assert "联系人" in say(oa_kb, openid, "继续")
    assert "照片" in say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "企业：上海某某科技有限公司" in summary and "张三 13800138000" in summary


def test_acknowledgements_thanks_to_xiaoer_and_goodbyes_are_understood(oa_kb):
    """After an answer people say “好的” / “嗯” / “收到”: the bot introduced itself again (“您好！我是营商服务中心的
    数字店小二…”) every time. “谢谢小二” and “拜拜～” got “这个问题我还没学会” (and sat in the staff's queue of
    unanswered questions)."""
    from handlers.bot import GREETING
    from wxapp_backend.knowledge_store.chat import GREETING as KB_GREETING

    openid = "oSmallTalk"
    say(oa_kb, openid, "你好")
    for text in ("好的", "嗯", "ok", "收到"):
        reply = say(oa_kb, openid, text)
        assert reply not in (GREETING, KB_GREETING) and "您好" not in reply and "没学会" not in reply, (text, reply)
    assert "哪一句" in say(oa_kb, openid, "？？？")  # puzzled, no acknowledgement: which reply (no greeting again)
    assert "不客气" in say(oa_kb, openid, "谢谢小二")
    for text in ("拜拜～", "再见！", "谢谢，再见"):
        reply = say(oa_kb, openid, text)
        assert "再见" in reply and "没学会" not in reply, (text, reply)


def test_every_example_question_the_bot_offers_is_answered(oa_kb):
    """The menu's 1 (政策问答) said: ask e.g. “如何申请人才公寓”; asking exactly that got “这个问题我还没学会”
    (the knowledge base has nothing on 人才公寓). Every question the bot gives as an example must be answered."""
    import re

    from handlers.bot import KB_PROMPT, MENU_TEXT
    from wxapp_backend.knowledge_store.chat import GREETING as KB_GREETING

    prompt = say(oa_kb, "oExamples", "1")
    assert prompt == KB_PROMPT
    examples = re.findall(r"“([^”]+)”", KB_PROMPT + MENU_TEXT.split("例如", 1)[1] + KB_GREETING.split("比如", 1)[1])
    assert len(examples) >= 4
    for question in examples:
        reply = say(oa_kb, "oExamples", question)
        assert "没学会" not in reply and "您是不是想问" not in reply, (question, reply)


def test_intake_command_words_with_punctuation(oa_kb):
    """People type “跳过。”, “确认！”, “取消。”: the intake knew the words only bare. “确认！” showed the whole summary
    again (the user believed the appeal filed, nothing was), “取消。” at the enterprise step became the enterprise's
    name and the intake went on. A reply at the confirmation that is no 确认 now says first that nothing was filed yet."""
    openid = "oPunctuation"
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "楼下餐厅油烟很大，熏到办公室")
    assert "已取消" in say(oa_kb, openid, "取消。")
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "楼下餐厅油烟很大，熏到办公室")
    say(oa_kb, openid, "长宁某某贸易有限公司")
    say(oa_kb, openid, "王五 13700137000")
    assert "请核对" in say(oa_kb, openid, "跳过。")
    not_yet = say(oa_kb, openid, "好的")
    assert "还没有提交" in not_yet
    assert "诉求已提交" in say(oa_kb, openid, "确认！")


def test_rating_answers_with_punctuation(chat):  # noqa: F811  (the fixture imported above)
    """In a rating, “解决了！” and “5分。” were not understood (the hint was repeated), and “取消。” at the comment
    step was filed as the rating's comment instead of leaving the rating."""
    from handlers import appeal_followup as followup

    appeal_id, number = chat.resolved()
    assert "问题解决了吗" in chat("评价")
    assert chat("解决了！") == followup.ASK_STARS
    assert chat("5分。") == followup.ASK_COMMENT
    assert chat("取消。") == followup.CANCELLED
    with session_scope() as s:
        assert not list(s.scalars(select(AppealRating).where(AppealRating.appeal_id == appeal_id)))


def test_commands_with_punctuation_do_what_they_say(oa_kb):
    """“我要反映！” got a knowledge-base text (“抱歉没能直接帮到您…”) instead of the intake, “我的诉求？” and
    “菜单。” “您是不是想问” lists; “人工！” in a draft was taken as the problem's description. The command words
    are now recognised with punctuation around them, in the WeChat chat and in the mini-program's chat."""
    openid = "oPunctCommands"
    assert "共 5 步" in say(oa_kb, openid, "我要反映！")
    assert say(oa_kb, openid, "人工！") == ""  # handed over (the note goes as a customer-service message)
    assert "已取消" in say(oa_kb, openid, "取消")
    assert "还没有提交过诉求" in say(oa_kb, openid, "我的诉求？")
    assert "回复数字即可" in say(oa_kb, openid, "菜单。")
    assert "小程序" in say(oa_kb, openid, "活动！")
    assert say(oa_kb, openid, "？").startswith("我是数字店小二")  # the menu word itself still works

    from handlers.bot import app_reply

    assert app_reply("我要反映！", user_id=None, pending_choices=False)[1] == "guide"
    assert app_reply("菜单。", user_id=None, pending_choices=False)[1] == "smalltalk"


def test_choices_picked_the_way_people_say_it(oa_kb, redis_client):
    """“第二个”, “第2条”, “2号”, “选3”: people pick a “您是不是想问” choice like this; the bot answered “这个问题我
    还没学会” or offered unrelated entries. “第4个” of three says which numbers there are."""
    choices = '["talent-foreign-work-permit", "talent-hub", "talent-foreign-work-permit"]'
    for text in ("第一个", "第1条", "1号", "选1"):
        openid = f"oPick-{text}"
        say(oa_kb, openid, "你好")
        redis_client.set(_memory_key("oa", openid), choices, ex=60)
        assert "工作许可" in say(oa_kb, openid, text), text
    say(oa_kb, "oPick4", "你好")
    redis_client.set(_memory_key("oa", "oPick4"), choices, ex=60)
    assert "请回复 1～3 之间的数字查看" in say(oa_kb, "oPick4", "第4个")


def test_traditional_characters_in_commands(oa_kb, redis_client):
    """A 繁體 user: “菜單” and “我的訴求” got “您是不是想问” lists, and in the intake “確認” only repeated the summary
    (nothing filed), “跳過” the photo prompt: the command words were known in simplified characters only."""
    openid = "oTraditional"
    assert "回复数字即可" in say(oa_kb, openid, "菜單")
    assert "还没有提交过诉求" in say(oa_kb, openid, "我的訴求")
    assert "共 5 步" in say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "辦公室冷氣壞了一個禮拜")
    say(oa_kb, openid, "上海某某科技有限公司")
    assert "照片" in say(oa_kb, openid, "張三 13800138000")
    assert "请核对" in say(oa_kb, openid, "跳過")
    assert "诉求已提交" in say(oa_kb, openid, "確認")
    say(oa_kb, openid, "你好")
    redis_client.set(_memory_key("oa", openid), '["talent-hub", "talent-foreign-work-permit"]', ex=60)
    assert "工作许可" in say(oa_kb, openid, "第二個")


def test_no_photos_said_in_words(oa_kb):
    """At the photo step “没有照片”, “不用了”, “就这些” got the same photo prompt again, as many times as the
    user tried: only the exact 好了 / 跳过 / 没有 … words moved on."""
    for i, text in enumerate(("没有照片", "不用了", "就这些", "无图片")):
        openid = f"oNoPhotos{i}"
        say(oa_kb, openid, "我要反映")
        say(oa_kb, openid, "楼道里的灯坏了一个多星期了")
        say(oa_kb, openid, "上海某某科技有限公司")
        say(oa_kb, openid, "张三 13800138000")
        assert "请核对" in say(oa_kb, openid, text), text


def test_contact_phone_as_people_type_it(oa_kb):
    """“张三 138 0013 8000” and “138-0013-8000” were refused (“没有认出手机号”); “张三 +86 13800138000” was taken
    with “张三 +86” as the name; a mistyped “张三 138001380001” (12 digits) was accepted as 13800138000 with
    “张三 1” as the name. The number is now read as typed and a longer one is refused."""
    cases = {"张三 138 0013 8000": "张三 13800138000", "张三 138-0013-8000": "张三 13800138000",
             "张三 +86 13800138000": "张三 13800138000", "李四，021-12345678": "李四 021-12345678"}
    for i, (typed, shown) in enumerate(cases.items()):
        openid = f"oContact{i}"
        say(oa_kb, openid, "我要反映")
        say(oa_kb, openid, "园区门口共享单车乱停放很久了")
        say(oa_kb, openid, "上海某某科技有限公司")
        assert "照片" in say(oa_kb, openid, typed), typed
        assert f"联系人：{shown}\n" in say(oa_kb, openid, "跳过"), typed
    say(oa_kb, "oContactLong", "我要反映")
    say(oa_kb, "oContactLong", "园区门口共享单车乱停放很久了")
    say(oa_kb, "oContactLong", "上海某某科技有限公司")
    assert "没有认出手机号" in say(oa_kb, "oContactLong", "张三 138001380001")


def test_an_opener_before_the_question_is_no_unknown_question(oa_kb):
    """“你好，我想问一下” / “请问” / “我有个问题” come before the question: the bot answered “这个问题我还没学会”
    (and queued the opener for staff as an unanswered question). It now invites the question."""
    for text in ("你好，我想问一下", "请问", "我有个问题", "咨询一下"):
        reply = say(oa_kb, "oOpener", text)
        assert "没学会" not in reply and "问我" in reply, (text, reply)
    assert "一窗通" in say(oa_kb, "oOpener", "请问开办企业需要哪些材料")



def _resolved_appeal_of(application, openid, make_staff):
    """A resolved appeal of the WeChat user `openid` (who has written to the bot already)."""
    from wxapp_backend.appeals import services
    from wxapp_backend.audit import Actor
    from wxapp_backend.auth.models import User

    admin = make_staff(role="admin")
    staff = Actor("staff", admin.id, role="admin", name="管理员")
    with application.app_context(), session_scope() as s:
        user_id = s.scalars(select(User.id).where(User.oa_openid == openid)).one()
        appeal, _ = services.submit_appeal(s, user_id, services.Intake(
            content="我们公司的增值税发票开不出来，税控盘坏了", contact_name="张三", contact_phone="13800138000"))
        services.perform(s, staff, appeal.id, "accept", {})
        services.perform(s, staff, appeal.id, "resolve", {"resolution": "已协调税务所更换税控盘"})
        return appeal.id


def _ratings(application, appeal_id):
    with application.app_context(), session_scope() as s:
        return list(s.scalars(select(AppealRating).where(AppealRating.appeal_id == appeal_id)))


def test_the_menu_during_a_rating_ends_it(oa_kb, make_staff):
    """Mid-rating the user taps 政策问答 (or types 菜单) and asks a question: the question (or “菜单” itself) was
    filed as the rating's comment, closing the appeal with it. The menu now ends the rating, and says so; the
    menu's 人工服务 ends it as the word 人工 does (a later “1” was taken as an answer)."""
    openid = "oMenuInRating"
    say(oa_kb, openid, "你好")
    appeal_id = _resolved_appeal_of(oa_kb, openid, make_staff)
    for menu in ({"text": "菜单"}, {"event": "CLICK", "event_key": "MENU_KB"}):
        assert "问题解决了吗" in say(oa_kb, openid, "评价")
        say(oa_kb, openid, "1")
        say(oa_kb, openid, "5")
        left = say(oa_kb, openid, **menu)
        assert "评价已退出" in left and ("政策" in left or "回复数字即可" in left), menu
        assert "一窗通" in say(oa_kb, openid, "开办企业需要哪些材料")
        assert _ratings(oa_kb, appeal_id) == []
    assert "问题解决了吗" in say(oa_kb, openid, "评价")
    say(oa_kb, openid, event="CLICK", event_key="MENU_HUMAN")
    assert "打分" not in say(oa_kb, openid, "1")  # the menu's 1, not “已解决”
    assert _ratings(oa_kb, appeal_id) == []


def test_continue_after_an_answer_does_not_speak_of_lost_input(oa_kb):
    """“继续” after a long knowledge-base answer (wanting more), from someone who never started an appeal, got
    “抱歉，刚才填写的内容已失效…给您添麻烦了”: an apology for losing what they had never filled in."""
    openid = "oContinueAfterAnswer"
    assert "一窗通" in say(oa_kb, openid, "开办企业需要哪些材料")
    reply = say(oa_kb, openid, "继续")
    assert "刚才填写的内容已失效" not in reply and "没有您正在填写的诉求" in reply and "直接输入问题" in reply


def test_a_verified_user_says_yes_to_their_enterprise_in_their_own_words(oa_kb, make_building, make_enterprise):
    """“诉求将登记在“X”名下，回复“是”确认”: “是的，没错” / “好的” / “嗯” were taken as the enterprise's name, so
    the appeal was filed under “是的，没错”, without the user's verified enterprise and building."""
    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.auth.models import User

    building = make_building(name="测试大厦")
    enterprise = make_enterprise(name="上海确认科技有限公司", building_id=building.id)
    for i, yes in enumerate(("是的，没错", "好的", "嗯")):
        openid = f"oVerifiedYes{i}"
        say(oa_kb, openid, "你好")
        with oa_kb.app_context(), session_scope() as s:
            user = s.scalars(select(User).where(User.oa_openid == openid)).one()
            user.enterprise_id, user.binding_state = enterprise.id, "verified"
        say(oa_kb, openid, "我要反映")
        assert "上海确认科技有限公司" in say(oa_kb, openid, "楼里的消防通道被杂物堵住了")
        assert "联系人" in say(oa_kb, openid, yes)
        say(oa_kb, openid, "张三 13800138000")
        assert "企业：上海确认科技有限公司\n楼宇：测试大厦" in say(oa_kb, openid, "跳过"), yes
        assert "诉求已提交" in say(oa_kb, openid, "确认")
    with oa_kb.app_context(), session_scope() as s:
        filed = list(s.scalars(select(Appeal).where(Appeal.content == "楼里的消防通道被杂物堵住了")).unique())
        assert len(filed) == 3 and {a.enterprise_id for a in filed} == {enterprise.id}


def test_known_phone_confirmed_in_the_users_words(oa_kb):
    """“回复“是”使用 138****8000，需同时写上姓名：张三 是”: “张三，是的” or “张三 对” got “没有认出手机号”."""
    from wxapp_backend.auth.models import User

    for i, typed in enumerate(("张三，是的", "张三 对", "张三 是")):
        openid = f"oKnownPhone{i}"
        say(oa_kb, openid, "你好")
        with oa_kb.app_context(), session_scope() as s:
            s.scalars(select(User).where(User.oa_openid == openid)).one().phone = "13912345678"
        say(oa_kb, openid, "我要反映")
        say(oa_kb, openid, "楼里的消防通道被杂物堵住了")
        assert "139****5678" in say(oa_kb, openid, "上海某某科技有限公司")
        assert "照片" in say(oa_kb, openid, typed), typed
        assert "联系人：张三 13912345678\n" in say(oa_kb, openid, "跳过"), typed


def test_appeal_told_in_the_same_message_as_the_words(oa_kb):
    """“我要反映：楼下餐厅油烟太大了…” in one message got “这个问题我还没学会…回复“我要反映”提交诉求”: the user
    had said 我要反映, and the problem was lost. The intake now starts with the problem taken as step 1."""
    openid = "oStartWithText"
    first = say(oa_kb, openid, "我要反映：楼下餐厅油烟太大了，熏得办公室没法待")
    assert "共 5 步" in first and "企业名称" in first and "没学会" not in first
    say(oa_kb, openid, "上海某某科技有限公司")
    say(oa_kb, openid, "张三 13800138000")
    assert "问题：楼下餐厅油烟太大了，熏得办公室没法待\n" in say(oa_kb, openid, "跳过")
    assert "诉求已提交" in say(oa_kb, openid, "确认")
    assert "共 5 步" not in say(oa_kb, "oStartWithText2", "投诉电话是多少")  # a question, not an appeal


def test_a_draft_put_aside_resumes_by_voice(oa_kb):
    """The draft put aside by the menu resumed only on a typed “继续”: a spoken one went to the knowledge base."""
    openid = "oVoiceResume"
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "办公室空调一直不制冷已经一周了")
    say(oa_kb, openid, "菜单")
    voice = {"MsgType": "voice", "MediaId": "VOICE1", "Format": "amr", "Recognition": "继续。"}
    assert "企业名称" in say(oa_kb, openid, extra=voice)


def test_supplement_told_in_the_same_message(oa_kb, make_staff):
    """Asked for more information, the user answered “补充：物业联系方式是 021-12345678，王经理” in one message: it
    went to the knowledge base (“您是不是想问：企业的问题可以打 12345 反映吗？”) and staff never got it."""
    from wxapp_backend.appeals import services
    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.audit import Actor

    openid = "oSupplementText"
    say(oa_kb, openid, "你好")
    appeal_id = _resolved_appeal_of(oa_kb, openid, make_staff)
    admin = make_staff(role="admin")
    with oa_kb.app_context(), session_scope() as s:
        staff = Actor("staff", admin.id, role="admin", name="管理员")
        appeal, _ = services.submit_appeal(s, s.get(Appeal, appeal_id).user_id, services.Intake(
            content="办公楼空调不制冷，物业一直不处理", contact_name="张三", contact_phone="13800138000"))
        services.perform(s, staff, appeal.id, "accept", {})
        services.perform(s, staff, appeal.id, "request_info", {"note": "请提供物业联系方式"})
        info_id = appeal.id
    reply = say(oa_kb, openid, "补充：物业联系方式是 021-12345678，王经理")
    assert "已补充" in reply, reply
    with oa_kb.app_context(), session_scope() as s:
        appeal = s.get(Appeal, info_id)
        assert appeal.status != "pending_enterprise"
    question = say(oa_kb, openid, "补充医疗保险怎么买")  # a question, not a supplement
    assert "已补充" not in question and "需要补充材料" not in question


def test_thanks_in_a_draft_is_no_answer(oa_kb):
    """In a draft “谢谢啦” or “拜拜～” was taken as the step's answer (the enterprise's name “谢谢啦”); only the
    router's exact 谢谢 / 再见 were recognised. They now get the reminder of the open draft."""
    openid = "oThanksInDraft"
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "隔壁装修噪音从早到晚，已经两周了")
    for text in ("谢谢啦", "拜拜～", "好的，谢谢"):
        assert "未填完的诉求" in say(oa_kb, openid, text), text
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司")
