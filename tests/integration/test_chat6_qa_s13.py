"""QA of the bot's conversation (thirteenth pass, sixth look), through the real webhook and the in-app chat: a “什么意思”
after an answer, “评价 2” after a numbered list, Chinese numerals as choices, odd inputs."""

from __future__ import annotations

from sqlalchemy import select

from handlers.bot import KB_PROMPT
from tests.integration.test_chat2_qa_s11 import (
    _rating_of,
    appeal_of,  # noqa: F401  (a follower's appeal, acted on by staff)
)
from tests.integration.test_chat5_qa_s12 import (  # noqa: F401  (the in-app chat, two appeals of a user)
    _app,
    _user_of,
    appeals_for,
)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.db import session_scope


def _unanswered() -> list[str]:
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    with session_scope() as s:
        return list(s.scalars(select(UnansweredQuestion.text)))


def test_what_does_that_mean_refers_to_the_answer_just_given(oa_kb, client, user_token, make_user):  # noqa: F811
    """“什么意思” right after an answer got another entry's answer, with confidence (楼宇经济, “税收落地率是什么意思”);
    “啥意思” a “您是不是想问” list of entries about meanings, “没看懂” “我还没学会” and a row in staff's queue. Such a
    follow-up is about the answer just given: the bot names it and says how to get it explained (the word that was
    not clear, or 人工), in both chats; a question that says what it asks about (“照后减证是什么意思”) is answered."""
    openid = "oWhatMeans"
    for follow in ("什么意思", "啥意思", "什么意思？", "这是什么意思啊", "没看懂", "看不懂。"):
        assert "一窗通" in say(oa_kb, openid, "开办企业需要哪些材料")
        reply = say(oa_kb, openid, follow)
        assert "注册一家公司" in reply and "人工" in reply, (follow, reply)  # the entry answered: its question
        assert "楼宇经济" not in reply and "您是不是想问" not in reply and "没学会" not in reply, (follow, reply)
    # Nothing answered before: no entry picked at random either.
    reply = say(oa_kb, "oWhatMeansFresh", "什么意思")
    assert "楼宇经济" not in reply and "您是不是想问" not in reply and "人工" in reply, reply
    # After a “您是不是想问” list: what the list is.
    assert "您是不是想问" in say(oa_kb, "oWhatMeansList", "融资")
    reply = say(oa_kb, "oWhatMeansList", "啥意思")
    assert "数字（1～" in reply and "您是不是想问" not in reply, reply
    reply = say(oa_kb, "oWhatMeansList", "1")  # the list still picks
    assert "您是不是想问" not in reply and "没看明白" not in reply and "想看刚才列出的其他问题" in reply, reply
    assert "照后减证" in say(oa_kb, openid, "照后减证是什么意思")
    assert "明白" not in say(oa_kb, openid, "明白了")  # understood: an acknowledgement, as before

    h = user_token(make_user())
    assert _app(client, h, "开办企业需要哪些材料")["decision"] == "answer"
    body = _app(client, h, "什么意思")
    assert body["decision"] == "smalltalk" and "注册一家公司" in body["reply"], body
    assert _unanswered() == []


def test_rate_with_a_number_picks_from_the_list_just_shown(oa_kb, appeal_of, appeals_for):  # noqa: F811
    """“评价 2” picked the 2nd appeal of a list of appeals waiting for a rating the user had not been shown: after “我的
    诉求” (numbered differently: all the user's appeals), “评价 1” rated another appeal than the list's 1st, saying
    nothing of it. A number now means the list the bot showed last, as a bare number picks from it, and the reply says
    which it took; a listed appeal with nothing to rate says so. With no list shown it asks: a list, or, with a single
    appeal to rate, whether the number is a score."""
    openid = "oRateNumber"
    resolved = appeal_of(openid, "resolve", resolution="已协调物业修好路灯")
    with oa_kb.app_context():
        (_lamp_id, lamp), (_air_id, air) = appeals_for(_user_of(openid))
    listing = say(oa_kb, openid, "我的诉求")
    assert f"1. {air}" in listing and f"3. {resolved}" in listing, listing
    reply = say(oa_kb, openid, "评价 1")
    assert air in reply and "不需要评价" in reply and "解决了吗" not in reply, reply
    assert "评价 3" in reply or f"评价 {resolved}" in reply, reply  # the one that can be rated
    reply = say(oa_kb, openid, "评价 3")
    assert reply.startswith(f"诉求 {resolved} 已办结") and "第 3 条" in reply, reply
    assert "取消" in reply
    say(oa_kb, openid, "取消")
    reply = say(oa_kb, openid, "补充 1")  # the same list, for the supplement
    assert f"诉求 {air} 需要您补充" in reply and "第 1 条" in reply, reply
    say(oa_kb, openid, "取消")

    # No list shown since (the menu replaced it): “评价 2” might be 2 points for the one appeal to rate. Asked.
    say(oa_kb, openid, "菜单")
    reply = say(oa_kb, openid, "评价 2")
    assert resolved in reply and "2 分" in reply and "解决了吗" not in reply, reply
    reply = say(oa_kb, openid, "2分")
    assert "2 分" in reply and resolved in reply and "解决了吗" in reply, reply


def test_rate_with_a_number_and_several_to_rate(oa_kb, appeal_of, redis_client):  # noqa: F811
    """Several appeals to rate and no list shown: “评价 2” rated the 2nd of a list the user never saw. The list is shown
    now (and remembered: “评价 2” and a bare “2” pick from it, as from 我的诉求's list)."""
    from wxapp_backend.knowledge_store.bot import _memory_key

    openid = "oRateSeveral"
    first = appeal_of(openid, "resolve", resolution="已协调物业修好路灯")
    second = appeal_of(openid, "resolve", resolution="已协调物业修好电梯")
    say(oa_kb, openid, "菜单")
    reply = say(oa_kb, openid, "评价 2")
    assert "已办结" not in reply and first in reply and second in reply and "2 条待评价" in reply, reply
    listed = [line.split()[1].rstrip("：").split("：")[0] for line in reply.splitlines() if line[:2] in ("1.", "2.")]
    assert sorted(listed) == sorted([first, second]), reply
    reply = say(oa_kb, openid, "2")  # the list just shown: its 2nd appeal, not the menu's 我要反映
    assert listed[1] in reply and "登记诉求" not in reply, reply
    reply = say(oa_kb, openid, "评价 第二条")
    assert reply.startswith(f"诉求 {listed[1]} 已办结") and "第 2 条" in reply, reply
    say(oa_kb, openid, "取消")
    redis_client.delete(_memory_key("oa", openid))
    assert "已办结" not in say(oa_kb, openid, "评价 1")  # the list expired: shown again, not a guess


def test_chinese_numerals_pick_like_digits(oa_kb, appeal_of, appeals_for, client, user_token,  # noqa: F811
                                           make_user):
    """“1”, “２” and a spoken “1。” picked a menu item, “一”, “二”, “第三个”, “3号” got “小二没看明白这个数字”; in the
    rating “五” was no score, “一” no answer to “问题解决了吗？（回复 1 …）”; at the intake's “要修改哪一项？回复 1～4”
    “二” was no choice. They now mean the digit wherever a numbered choice is offered, in both chats."""
    openid = "oNumerals"
    say(oa_kb, openid, "菜单")
    assert say(oa_kb, openid, "一") == KB_PROMPT
    say(oa_kb, openid, "菜单")
    assert "登记诉求" in say(oa_kb, openid, "第二个")
    say(oa_kb, openid, "取消")
    say(oa_kb, openid, "菜单")
    assert "活动" in say(oa_kb, openid, "3号")
    say(oa_kb, openid, "菜单")
    assert "活动" in say(oa_kb, openid, "第三个。")

    # “您是不是想问” choices and the list of the user's appeals.
    assert "您是不是想问" in say(oa_kb, openid, "融资")
    assert "没看明白" not in say(oa_kb, openid, "第二个")
    with oa_kb.app_context():
        (_lamp_id, lamp), (_air_id, air) = appeals_for(_user_of(openid))
    say(oa_kb, openid, "我的诉求")
    assert lamp in say(oa_kb, openid, "二")

    # The rating's answers.
    scorer = "oNumeralsScore"
    number = appeal_of(scorer, "resolve", resolution="已协调物业修好路灯")
    assert "解决了吗" in say(oa_kb, scorer, "评价")
    assert "打分" in say(oa_kb, scorer, "一")
    reply = say(oa_kb, scorer, "五")
    assert "想对我们说" in reply, reply
    assert number in say(oa_kb, scorer, "跳过")
    rating = _rating_of(number)
    assert rating is not None and rating.resolved and rating.satisfaction == 5, rating

    # The intake's “修改” choices.
    who = "oNumeralsEdit"
    say(oa_kb, who, "我要反映")
    for text in ("园区门口的路灯坏了一个月了没人修", "上海测试科技有限公司", "张三 13800138000", "跳过"):
        say(oa_kb, who, text)
    assert "要修改哪一项" in say(oa_kb, who, "修改")
    assert "企业名称" in say(oa_kb, who, "二")

    # The in-app chat.
    h = user_token(make_user())
    assert _app(client, h, "一")["reply"] == KB_PROMPT
    assert _app(client, h, "四")["decision"] == "handoff"
    assert "您是不是想问" in _app(client, h, "融资")["reply"]
    body = _app(client, h, "第二个")
    assert body["decision"] == "answer" and "没看明白" not in body["reply"], body


def test_a_number_after_the_withdraw_list_picks_from_it(oa_kb, appeals_for):  # noqa: F811
    """“撤回诉求” with two open appeals lists them numbered (“1. SQ…”) and asks for “撤回 编号”: “2” then was the
    menu's 我要反映 and started an appeal intake (“撤回第二条” became its description), “撤回 2” went to the knowledge
    base. The number now picks from that list, as elsewhere: the withdrawal of that appeal is asked to be confirmed
    (its number typed), nothing is withdrawn on a digit."""
    from wxapp_backend.appeals.models import Appeal

    openid = "oWithdrawPick"
    say(oa_kb, openid, "你好")
    with oa_kb.app_context():
        (lamp_id, lamp), (air_id, air) = appeals_for(_user_of(openid))
    listing = say(oa_kb, openid, "撤回诉求")
    assert f"1. {air}" in listing and f"2. {lamp}" in listing, listing
    for pick in ("2", "撤回 2", "撤回第二条"):
        reply = say(oa_kb, openid, pick)
        assert f"要撤回诉求 {lamp}" in reply and f"撤回 {lamp}" in reply and "登记诉求" not in reply, (pick, reply)
    assert "没有进行中" in say(oa_kb, openid, "取消")  # no intake was started
    # Without a list shown: which one is asked, the list shown.
    say(oa_kb, openid, "菜单")
    reply = say(oa_kb, openid, "撤回 2")
    assert "要撤回诉求" not in reply and "不确定" in reply and f"2. {lamp}" in reply, reply
    with session_scope() as s:
        assert s.get(Appeal, lamp_id).status != "withdrawn"
    assert "已撤回" in say(oa_kb, openid, f"撤回 {lamp}")


def test_what_does_that_mean_inside_a_flow_is_no_answer(oa_kb, appeals_for, appeal_of):  # noqa: F811
    """Inside the chat's flows “什么意思” was taken as the answer: in the 补充 flow it was sent to staff as the material
    they asked for and the appeal went back to work; at the rating's “还有什么想对我们说的吗？” it became the comment
    staff read; at the intake's enterprise step it got “您指的是哪一句呢？”. It now says again, in other words, what the
    step wants, and the flow goes on."""
    from wxapp_backend.appeals.models import Appeal, AppealRating

    openid = "oWhatMeansFlow"
    say(oa_kb, openid, "你好")
    with oa_kb.app_context():
        (_lamp_id, _lamp), (air_id, air) = appeals_for(_user_of(openid))
    assert "需要您补充" in say(oa_kb, openid, f"补充 {air}")
    for follow in ("什么意思", "没看懂"):
        reply = say(oa_kb, openid, follow)
        assert "已补充" not in reply and "请提供物业合同首页照片" in reply and "人工" in reply, reply
    with session_scope() as s:
        assert s.get(Appeal, air_id).status == "pending_enterprise"
    assert "已补充" in say(oa_kb, openid, "物业合同首页已经拍照发给专员了")

    scorer = "oWhatMeansRate"
    number = appeal_of(scorer, "resolve", resolution="已协调物业修好路灯")
    say(oa_kb, scorer, "评价")
    say(oa_kb, scorer, "1")
    assert "想对我们说" in say(oa_kb, scorer, "5")
    reply = say(oa_kb, scorer, "什么意思")
    assert "已关闭" not in reply and "跳过" in reply, reply
    assert "已关闭" in say(oa_kb, scorer, "师傅很负责")
    with session_scope() as s:
        rating = s.scalar(select(AppealRating).join(Appeal, Appeal.id == AppealRating.appeal_id)
                          .where(Appeal.number == number))
        assert rating.comment == "师傅很负责", rating.comment

    who = "oWhatMeansIntake"
    say(oa_kb, who, "我要反映")
    assert "企业名称" in say(oa_kb, who, "园区门口的路灯坏了一个月了没人修")
    reply = say(oa_kb, who, "什么意思")
    assert "企业名称" in reply and "第 2/5 步" in reply and "哪一句" not in reply, reply
    assert "联系人" in say(oa_kb, who, "上海测试科技有限公司")
    reply = say(oa_kb, who, "看不懂")
    assert "联系人" in reply and "第 3/5 步" in reply and reply.count("取消") == 1, reply
    say(oa_kb, who, "张三 13800138000")
    say(oa_kb, who, "跳过")
    assert "要修改哪一项" in say(oa_kb, who, "修改")
    reply = say(oa_kb, who, "什么意思")  # the choice asked, not the summary
    assert "要修改哪一项" in reply and "请核对" not in reply, reply
    assert "企业名称" in say(oa_kb, who, "第二项")


def test_punctuation_alone(oa_kb, client, user_token, make_user):  # noqa: F811
    """“！！！”, “……”, “。。。” got the greeting (“您好！我是营商服务中心的数字店小二…”) as if the user had said hello;
    “？？” right after an answer, the same greeting, where it means “什么意思”. Punctuation alone now gets the
    hint to use words; two or more question marks are a “什么意思” about the reply just given. In both chats."""
    openid = "oPunctuation"
    h = user_token(make_user())
    for text in ("！！！", "……", "。。。", "~~~"):
        reply = say(oa_kb, openid, text)
        assert "您好" not in reply and "文字" in reply, (text, reply)
        body = _app(client, h, text)
        assert "您好" not in body["reply"] and "文字" in body["reply"] and body["decision"] == "smalltalk", (text, body)
    assert "一窗通" in say(oa_kb, openid, "开办企业需要哪些材料")
    for text in ("？？", "???"):
        reply = say(oa_kb, openid, text)
        assert "注册一家公司" in reply and "您好" not in reply, (text, reply)
    assert "回复数字即可" in say(oa_kb, openid, "？")  # one question mark: the menu, as before
    assert _unanswered() == []


def test_other_commands_inside_a_flow_are_not_its_answer(oa_kb, appeals_for, appeal_of):  # noqa: F811
    """Typed commands other than the menu's were the step's answer: “活动” in the 补充 flow was sent to staff as the
    material asked for (the appeal back to work), “活动” at the intake's enterprise step became the enterprise's name,
    “撤回诉求” there too; in the rating they got the score's hint, the command ignored. They now do what they say, as
    the menu's buttons do: the rating or supplement ends (and says so), the intake's draft is kept aside for “继续”."""
    from wxapp_backend.appeals.models import Appeal

    openid = "oCommandInFlow"
    say(oa_kb, openid, "你好")
    with oa_kb.app_context():
        (_lamp_id, _lamp), (air_id, air) = appeals_for(_user_of(openid))
    for command, says in (("活动", "可以报名的活动"), ("我的报名", "报名的活动"), ("撤回诉求", "撤回")):
        assert "需要您补充" in say(oa_kb, openid, f"补充 {air}")
        reply = say(oa_kb, openid, command)
        assert "已补充" not in reply and says in reply and "补充已退出" in reply, (command, reply)
        with session_scope() as s:
            assert s.get(Appeal, air_id).status == "pending_enterprise", command

    scorer = "oCommandInRating"
    appeal_of(scorer, "resolve", resolution="已协调物业修好路灯")
    say(oa_kb, scorer, "评价")
    reply = say(oa_kb, scorer, "活动")
    assert "请先回复 1" not in reply and "可以报名的活动" in reply and "评价已退出" in reply, reply

    who = "oCommandInDraft"
    say(oa_kb, who, "我要反映")
    say(oa_kb, who, "园区门口的路灯坏了一个月了没人修")
    for command, says in (("活动", "可以报名的活动"), ("撤回诉求", "可以撤回的诉求")):
        reply = say(oa_kb, who, command)
        assert says in reply and "联系人" not in reply and "未填完的诉求（第 2/5 步）" in reply, (command, reply)
        assert "企业名称" in say(oa_kb, who, "继续")
    assert "联系人" in say(oa_kb, who, "上海测试科技有限公司")


def test_an_annoyed_user_gets_an_apology_not_a_question_for_staff(oa_kb, client, user_token, make_user):  # noqa: F811
    """“你好笨”, “垃圾”, “没用”, “滚” (an answer that did not help) got “抱歉，这个问题我还没学会。我已经把它记下来，工作
    人员会尽快补充” and a row in staff's queue of unanswered questions, as if the insult were a question. They now get an
    apology and the ways on (人工, 我要反映), in both chats, and reach no queue; a question with such a word in it is
    a question (“垃圾分类怎么做”)."""
    h = user_token(make_user())
    for i, text in enumerate(("你好笨", "垃圾", "什么破机器人", "没用！", "滚", "太差劲了", "笨死了")):
        reply = say(oa_kb, f"oAnnoyed{i}", text)
        assert "抱歉" in reply and "人工" in reply and "没学会" not in reply and "您是不是想问" not in reply, (text, reply)
        body = _app(client, h, text)
        assert body["decision"] == "smalltalk" and "抱歉" in body["reply"], (text, body)
    assert _unanswered() == []
    assert "抱歉没能帮上" not in say(oa_kb, "oAnnoyedQuestion", "垃圾分类怎么做")
