"""QA of the bot's conversation as an enterprise user has it (sixteenth pass, convo7): through the real (signed,
encrypted) webhook and POST /api/v1/chat: 投诉 / 反映 with a short object (“我要投诉物业”), a person asked for in the
middle of the intake (“人呢”), puzzlement at a step (“搞什么”, “？？？”), a voice message nobody could transcribe during
a flow, and a second appeal offered the enterprise and contact just given."""

from __future__ import annotations

from tests.integration.appeals.test_appeal_chat_followup import chat  # noqa: F401  (the follow-up's fixture)
from tests.integration.test_chat2_qa_s11 import (
    appeal_of,  # noqa: F401  (a follower's appeal, acted on by staff)
)
from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat5_qa_s12 import _voice
from tests.integration.test_chat9_qa_s14 import _unanswered
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)

OBJECTS = ("我要投诉物业", "我要反映噪音", "投诉隔壁装修", "我想投诉物业公司")


def test_a_complaint_with_a_short_object_starts_the_intake(oa_kb, client, user_token, make_user):  # noqa: F811
    """“我要投诉物业”, “我要反映噪音”, “投诉隔壁装修”: a “您是不是想问” list, no intake. The intake starts now, what was
    said kept as the start of the description, the details asked for; questions about the channels do not start it."""
    for i, text in enumerate(OBJECTS):
        openid = f"oConvo7Object{i}"
        reply = say(oa_kb, openid, text)
        assert "登记诉求" in reply and "您是不是想问" not in reply, (text, reply)
        assert "具体" in reply, (text, reply)
    openid = "oConvo7Object0"
    assert "企业名称" in say(oa_kb, openid, "电梯坏了三天没人修")
    say(oa_kb, openid, "上海某某科技有限公司，新华大厦")
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "问题：投诉物业：电梯坏了三天没人修" in summary, summary
    for question in ("投诉电话是多少", "怎么投诉", "我有个问题", "投诉渠道有哪些", "投诉有用吗"):
        assert "登记诉求" not in say(oa_kb, "oConvo7NotObject", question), question
    h = user_token(make_user())
    for text in OBJECTS:
        body = _app(client, h, text)
        assert "小程序“我要反映”中填写" in body["reply"] and body["decision"] == "guide", (text, body)
    assert "小程序“我要反映”中填写" not in _app(client, h, "投诉电话是多少")["reply"]


def _to_step(application, openid: str, n: int) -> None:
    """An intake at step `n` (1..5)."""
    assert "登记诉求" in say(application, openid, "我要反映")
    answers = ("办公室空调坏了一周了，物业一直不管", "上海某某科技有限公司，新华大厦", "张三 13800138000", "跳过")
    for text in answers[:n - 1]:
        say(application, openid, text)


STEP_WORDS = {1: "描述", 2: "企业名称", 3: "联系人", 4: "照片", 5: "请核对"}


def test_a_person_asked_for_in_the_intake_is_the_hand_over_and_the_draft_kept(oa_kb, chat):  # noqa: F811
    """“人呢” in the middle of the intake was searched in the knowledge base, the draft set aside; “有人吗” got the
    “未填完的诉求” reminder. Both are the hand-over now (as 人工 is), at every step, the draft kept and “继续” named."""
    from handlers.replies import Transfer

    for n in range(1, 6):
        for text in ("人呢", "有人吗", "转人工", "有人在吗？", "怎么没人回"):
            openid = f"oConvo7Person{n}{text}"
            _to_step(oa_kb, openid, n)
            reply = say(oa_kb, openid, text)
            assert reply == "", (n, text, reply)  # the hand-over (transfer_customer_service), no text of its own
            assert STEP_WORDS[n] in say(oa_kb, openid, "继续"), (n, text)
    assert _unanswered(oa_kb) == 0
    chat("我要反映")
    chat("办公楼空调不制冷，物业一直不处理")
    for text in ("人呢", "有人吗"):
        handed = chat(text)
        assert isinstance(handed, Transfer) and "第 2/5 步" in handed.note and "继续" in handed.note, handed


def test_puzzlement_at_a_step_asks_for_the_step_again(oa_kb):  # noqa: F811
    """“搞什么” at a step was searched in the knowledge base (a row in staff's queue); “？？？” got “描述有点短” or “没有
    认出手机号”. The step is asked again, kindly."""
    for n in range(1, 6):
        for text in ("搞什么", "？？？", "搞什么啊？", "怎么回事"):
            openid = f"oConvo7Puzzled{n}{text}"
            _to_step(oa_kb, openid, n)
            reply = say(oa_kb, openid, text)
            if n == 1 and text == "？？？":  # no words as the description: asked for words, as for “？？？？？”
                assert "请用文字描述一下问题" in reply, reply
                continue
            assert f"第 {n}/5 步" in reply and "抱歉" in reply, (n, text, reply)
            assert "描述有点短" not in reply and "没有认出" not in reply, (n, text, reply)
    assert _unanswered(oa_kb) == 0


def test_a_voice_message_not_heard_in_a_flow_says_which_step_waits(oa_kb, appeal_of):  # noqa: F811
    """A voice message WeChat could not transcribe during the intake, a rating or a supplement: “没有听清，请用文字回复。”
    and nothing of what waits (a sticker gets the reminder). The reminder is given now."""
    for n in (1, 3, 5):
        openid = f"oConvo7Voice{n}"
        _to_step(oa_kb, openid, n)
        reply = _voice(oa_kb, openid, "")
        assert "没有听清" in reply and f"第 {n}/5 步" in reply and "还没有提交" in reply, (n, reply)
    rater = "oConvo7VoiceRate"
    number = appeal_of(rater, "resolve", resolution="已协调物业修好路灯")
    say(oa_kb, rater, f"评价 {number}")
    reply = _voice(oa_kb, rater, "")
    assert "没有听清" in reply and "您正在评价诉求" in reply and number in reply, reply
    supplier = "oConvo7VoiceSupp"
    number = appeal_of(supplier, "request_info", note="请提供路灯的具体位置")
    say(oa_kb, supplier, "补充")
    reply = _voice(oa_kb, supplier, "")
    assert "没有听清" in reply and "补充材料" in reply and "路灯的具体位置" in reply, reply


def _file(application, openid: str, problem: str) -> None:
    say(application, openid, "我要反映")
    say(application, openid, problem)
    say(application, openid, "上海某某科技有限公司，新华大厦")
    say(application, openid, "张三 13800138000")
    say(application, openid, "跳过")
    assert "诉求已提交" in say(application, openid, "确认")


def test_a_second_appeal_offers_the_enterprise_and_contact_just_given(oa_kb):  # noqa: F811
    """Minutes after filing, a second appeal asked again for the enterprise and the contact just typed. They are
    offered now (the phone masked), “是” keeps them; a new answer replaces them; another user is offered nothing."""
    openid = "oConvo7Again"
    _file(oa_kb, openid, "办公室空调坏了一周了，物业一直不管")
    say(oa_kb, openid, "我要反映")
    place = say(oa_kb, openid, "楼道的灯坏了三天了没人修")
    assert "上海某某科技有限公司" in place and "上次填写" in place and "是" in place, place
    contact = say(oa_kb, openid, "是")
    assert "张三 138****8000" in contact and "上次填写" in contact and "13800138000" not in contact, contact
    assert "照片" in say(oa_kb, openid, "是的")
    summary = say(oa_kb, openid, "跳过")
    assert "企业：上海某某科技有限公司" in summary and "联系人：张三 13800138000" in summary, summary
    assert "诉求已提交" in say(oa_kb, openid, "确认")

    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "门口的垃圾桶一直没人清理")
    say(oa_kb, openid, "上海另一家贸易有限公司")
    say(oa_kb, openid, "李四 13900139000")
    summary = say(oa_kb, openid, "跳过")
    assert "上海另一家贸易有限公司" in summary and "李四 13900139000" in summary, summary

    say(oa_kb, openid, "取消")
    from datetime import timedelta

    from sqlalchemy import select

    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.db import session_scope

    with oa_kb.app_context(), session_scope() as s:  # a day later: asked afresh
        for appeal in s.scalars(select(Appeal)).unique():
            appeal.submitted_at -= timedelta(hours=25)
    say(oa_kb, openid, "我要反映")
    place = say(oa_kb, openid, "楼道的灯又坏了，三天没人修")
    assert "上次填写" not in place and "请告诉我企业名称" in place, place
    say(oa_kb, openid, "取消")

    other = "oConvo7Stranger"
    say(oa_kb, other, "我要反映")
    place = say(oa_kb, other, "楼道的灯坏了三天了没人修")
    assert "上次填写" not in place and "请告诉我企业名称" in place, place
