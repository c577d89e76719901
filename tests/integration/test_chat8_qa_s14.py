"""QA of the bot's conversations as an enterprise user has them (fourteenth pass, eighth look at the chat): through
the real (signed, encrypted) webhook and POST /api/v1/chat."""

from __future__ import annotations

import re
from datetime import date

from knowledge.schema import Entry
from tests.integration.test_chat2_qa_s11 import (
    appeal_of,  # noqa: F401  (a follower's appeal, acted on by staff)
)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope

POLICY_URL = "https://www.shanghai.gov.cn/nw12344/20240315/0001-12344_123456789abcdef.html"


def _add_entries(application, *entries: Entry) -> None:
    from wxapp_backend.knowledge_store.services import import_entries

    with application.app_context(), session_scope() as s:
        import_entries(s, application.extensions["wxapp"].redis, Actor("staff", 1, "admin", name="admin"), entries)
    _warm(application)


def _long_policy() -> Entry:
    body = ("企业开展研发活动、建设研发机构，可申请区级研发费用补贴。补贴按企业上一年度经审计的研发投入分档给予，"
            "重点支持集成电路、生物医药、人工智能等产业的中小企业，鼓励企业与高校、科研院所联合攻关。") * 6
    return Entry(id="qa14-rd-subsidy", question="研发费用补贴怎么申请", answer=body, category="policy",
                 eligibility="在本区注册并纳税的科技型中小企业", where_to_apply="一网通办“惠企政策”专栏",
                 valid_until=date(2099, 12, 31), url=POLICY_URL)


def test_a_long_policy_answer_keeps_its_deadline_and_a_whole_link(oa_kb):  # noqa: F811
    """A policy whose answer runs past the chat's length: the cut fell in the facts under it, so the user saw neither
    【有效期至】 (the deadline they act on) nor 【原文】, or a link cut in the middle (“https://www.shanghai.gov.cn/nw1…”)
    that WeChat still makes clickable and that opens a wrong page. The body is shortened now, the facts kept whole."""
    _add_entries(oa_kb, _long_policy())
    reply = say(oa_kb, "oChat8Long", "研发费用补贴怎么申请")
    assert "研发费用补贴" in reply and "小程序" in reply, reply
    assert "【有效期至】2099-12-31" in reply, reply
    assert POLICY_URL in reply, reply
    for url in re.findall(r"https?://[^\s（）…]+", reply):  # no other (cut) link
        assert url == POLICY_URL, reply
    assert len(reply.encode("utf-8")) <= 2048


def test_a_cut_never_ends_inside_a_link_of_the_answer(app_ctx):
    """A long answer with a link in its text, where the cut falls: the link is dropped whole, not cut mid-way."""
    from wxapp_backend.knowledge_store.chat import format_answer

    body = "办理流程说明。" * 75 + "详见 " + POLICY_URL + " 的办事指南。" + "其他说明。" * 50
    text, cut = format_answer(Entry(id="x", question="q", answer=body))
    assert cut
    assert all(u == POLICY_URL for u in re.findall(r"https?://[^\s（）…]+", text)), text


def test_the_description_sent_twice_is_not_taken_for_the_enterprise(oa_kb):  # noqa: F811
    """The problem sent twice (the first seemed not to go through, or a double tap): the second one became the
    enterprise's name, and staff got “企业：空调坏了一周了，物业不管”. It now says the problem is recorded and asks for
    the enterprise again."""
    openid = "oChat8Twice"
    say(oa_kb, openid, "我要反映")
    problem = "办公室空调坏了一周了，物业一直不管"
    assert "企业名称" in say(oa_kb, openid, problem)
    again = say(oa_kb, openid, problem + "。")
    assert "已经记下" in again and "企业名称" in again and "联系人" not in again, again
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司，新华大厦")
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "企业：上海某某科技有限公司" in summary, summary


PHOTO = {"extra": {"MsgType": "image", "PicUrl": "http://mmbiz.qpic.cn/x.jpg", "MediaId": "media-after"}}


def test_a_photo_just_after_filing_is_not_sent_to_a_new_appeal(oa_kb):  # noqa: F811
    """The appeal filed (“确认”), the user remembers the photo and sends it: the bot said “如果是想反映问题，请回复
    “我要反映”…会一起登记”, and following it filed the same problem a second time. It now says the photo did not go
    with appeal SQ… and how it reaches the staff."""
    openid = "oChat8PhotoAfter"
    for text in ("我要反映", "办公室空调坏了一周了，物业一直不管", "上海某某科技有限公司，新华大厦", "张三 13800138000", "跳过"):
        say(oa_kb, openid, text)
    filed = say(oa_kb, openid, "确认")
    number = re.search(r"SQ\d{8}-\d{4}", filed).group(0)
    reply = say(oa_kb, openid, **PHOTO)
    assert number in reply and "没有附上" in reply and "人工" in reply, reply
    assert "会一起登记" not in reply, reply


def test_a_photo_just_after_a_supplement_says_it_did_not_go_with_it(oa_kb, appeal_of):  # noqa: F811
    """补充: the text sent (“发送后即提交”), then the photo: “如果是想反映问题，请回复“我要反映””, a new appeal, while the
    photo meant for the supplement reached nobody."""
    openid = "oChat8SupPhoto"
    number = appeal_of(openid, "request_info", note="请提供路灯的具体位置")
    say(oa_kb, openid, "补充")
    assert "已补充" in say(oa_kb, openid, "在园区东门口第三根路灯")
    reply = say(oa_kb, openid, **PHOTO)
    assert number in reply and "没有附上" in reply and "会一起登记" not in reply, reply


def test_a_photo_from_someone_with_nothing_recent_gets_the_usual_hint(oa_kb):  # noqa: F811
    from handlers.bot import IMAGE_ACK

    assert say(oa_kb, "oChat8PhotoNew", **PHOTO) == IMAGE_ACK


FINANCE = ("小微企业贷款难，有什么普惠金融支持？", "专利、商标能拿来质押贷款吗？", "街道能帮企业对接银行融资吗？")


def _warm(application) -> None:
    """The knowledge-base index built now, not while the first message waits for its answer (past the deadline the
    answer goes as a customer-service message, and the passive reply is empty)."""
    from wxapp_backend.knowledge_store.services import get_runtime

    with application.app_context():
        get_runtime().get()


def _offered_finance(application, openid: str) -> None:
    _warm(application)
    offered = say(application, openid, "融资")
    assert all(f"{i}. {q}" in offered for i, q in enumerate(FINANCE, 1)), offered


def test_two_numbers_picked_at_once_answer_the_first_not_another_entry(oa_kb):  # noqa: F811
    """“您是不是想问” with three choices, the user wants two: “2和3” was searched as a question, and the bot answered
    with confidence an unrelated entry (长宁“3+2”重点产业). The first number picked is answered now, the others kept."""
    openid = "oChat8TwoPicks"
    _offered_finance(oa_kb, openid)
    reply = say(oa_kb, openid, "2和3")
    assert "质押" in reply and "重点产业" not in reply and "回复 1、3" in reply, reply
    assert "服务专员" in say(oa_kb, openid, "3")


def test_which_one_said_loosely_picks_from_the_list(oa_kb):  # noqa: F811
    """“那第二个呢” after “您是不是想问”: “这个问题我还没学会” (and a row in staff's unanswered queue)."""
    openid = "oChat8Loose"
    _offered_finance(oa_kb, openid)
    for text in ("那第二个呢", "第2个呢"):
        reply = say(oa_kb, openid, text)
        assert "质押" in reply and "没学会" not in reply, (text, reply)


def test_none_of_the_choices_is_not_an_unanswered_question(oa_kb):  # noqa: F811
    """“都不是” to “您是不是想问”: “抱歉，这个问题我还没学会。我已经把它记下来” — and “都不是” went to the staff's queue of
    questions to answer. It now asks to say the question in other words (or reach a person); since session 21 the
    question the choices were for (“融资”) is what goes to the queue, never the “都不是”."""
    from sqlalchemy import select

    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    openid = "oChat8NoneOfThem"
    for text in ("都不是", "以上都不是", "没有我想问的"):
        _offered_finance(oa_kb, openid)
        reply = say(oa_kb, openid, text)
        assert "没学会" not in reply and "换个说法" in reply and "人工" in reply, (text, reply)
    with oa_kb.app_context(), session_scope() as s:
        assert set(s.scalars(select(UnansweredQuestion.text))) == {"融资"}


def _draft_to(application, openid: str, texts: tuple[str, ...]) -> None:
    _warm(application)
    for text in ("我要反映", *texts):
        say(application, openid, text)


def _forget_state(application, openid: str) -> None:
    """30 minutes of silence: the conversation state's TTL ran out."""
    from handlers.state import state_key

    application.extensions["wxapp"].redis.delete(state_key("oa", openid))


def test_an_answer_after_the_draft_expired_says_the_appeal_was_not_filed(oa_kb):  # noqa: F811
    """At the photo step the user goes quiet for more than 30 minutes, then replies “好了”: “好的～还有什么想了解的，直接问我
    就行” — as if done, and they waited for an appeal nobody had filed. The enterprise's name after the draft expired got
    “这个问题我还没学会”. Now the first reply after a draft ran out says it was not filed (once)."""
    openid = "oChat8Expired"
    _draft_to(oa_kb, openid, ("办公室空调坏了一周了，物业一直不管", "上海某某科技有限公司，新华大厦", "张三 13800138000"))
    _forget_state(oa_kb, openid)
    reply = say(oa_kb, openid, "好了")
    assert "没有提交" in reply and "第 4/5 步" in reply and "我要反映" in reply, reply
    assert "没有提交" not in say(oa_kb, openid, "好了")  # said once

    openid = "oChat8ExpiredPlace"
    _draft_to(oa_kb, openid, ("办公室空调坏了一周了，物业一直不管",))
    _forget_state(oa_kb, openid)
    reply = say(oa_kb, openid, "上海某某科技有限公司，新华大厦")
    assert "没有提交" in reply and "第 2/5 步" in reply, reply

    openid = "oChat8ExpiredPhoto"
    _draft_to(oa_kb, openid, ("办公室空调坏了一周了，物业一直不管", "上海某某科技有限公司，新华大厦", "张三 13800138000"))
    _forget_state(oa_kb, openid)
    reply = say(oa_kb, openid, **PHOTO)
    assert "没有提交" in reply and "第 4/5 步" in reply, reply


def test_a_draft_cancelled_or_filed_leaves_no_note_behind(oa_kb):  # noqa: F811
    openid = "oChat8Cancelled"
    _draft_to(oa_kb, openid, ("办公室空调坏了一周了，物业一直不管", "取消"))
    assert "没有提交" not in say(oa_kb, openid, "好了")
    openid = "oChat8Filed"
    _draft_to(oa_kb, openid, ("办公室空调坏了一周了，物业一直不管", "上海某某科技有限公司，新华大厦", "张三 13800138000",
                              "跳过", "确认"))
    assert "没有提交" not in say(oa_kb, openid, "外籍人才工作许可怎么办")


def test_a_supplement_sent_twice_is_not_said_to_have_failed(oa_kb, appeal_of):  # noqa: F811
    """“补充：…” sent twice (a double tap, or the answer was slow): the second got “刚才补充的内容没有提交。您目前没有需要补充
    材料的诉求” — the user believed the material lost, though the first had reached staff. Inside the 补充 flow the text sent
    again got “这个问题我还没学会” (and a row in staff's queue). Both now say it was already submitted."""
    from sqlalchemy import func, select

    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    _warm(oa_kb)
    openid = "oChat8SupTwice"
    number = appeal_of(openid, "request_info", note="请提供路灯的具体位置")
    assert "已补充" in say(oa_kb, openid, "补充：在园区东门口第三根路灯")
    again = say(oa_kb, openid, "补充：在园区东门口第三根路灯")
    assert "没有提交" not in again and "已经提交" in again and number in again, again

    openid = "oChat8SupTwiceFlow"
    number = appeal_of(openid, "request_info", note="请提供路灯的具体位置")
    say(oa_kb, openid, "补充")
    assert "已补充" in say(oa_kb, openid, "在园区东门口第三根路灯")
    again = say(oa_kb, openid, "在园区东门口第三根路灯。")
    assert "没学会" not in again and "已经提交" in again and number in again, again
    with oa_kb.app_context(), session_scope() as s:
        assert s.scalar(select(func.count(UnansweredQuestion.id))) == 0


def test_a_passive_reply_cut_at_the_byte_limit_never_ends_inside_a_link():
    """A reply past WeChat's 2,048 bytes (a long answer with a note before it) is cut: the cut fell in the 【原文】 link,
    which WeChat still shows as a link, to a page that does not exist. The partial link is dropped."""
    from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES, truncate_utf8

    text = "说明" * 330 + "\n【原文】" + POLICY_URL + "\n其他说明"
    assert len(("说明" * 330 + "\n【原文】").encode()) < REPLY_TEXT_MAX_BYTES < len(text.encode())
    cut = truncate_utf8(text)
    assert len(cut.encode()) <= REPLY_TEXT_MAX_BYTES and cut.endswith("…")
    assert "http" not in cut, cut[-80:]
    assert truncate_utf8("说明" * 300 + " " + POLICY_URL) == "说明" * 300 + " " + POLICY_URL  # within the limit: whole
    bare = "a" * 2036 + " https://" + " " + "b" * 50  # a scheme with nothing after it, where the cut falls: no link
    assert truncate_utf8(bare) == "a" * 2036 + " https://…"


LOCATION = {"extra": {"MsgType": "location", "Location_X": "31.2", "Location_Y": "121.4", "Scale": "15",
                      "Label": "新华路1号"}}
STICKER = {"extra": {"MsgType": "text", "Content": "【收到不支持的消息类型，暂无法显示】"}}


def test_a_location_or_sticker_mid_draft_reminds_where_the_draft_stands(oa_kb):  # noqa: F811
    """Asked for the enterprise and building, the user sends their location (or a sticker at the confirmation): the bot
    answered as if no draft were open (“收到您的位置，谢谢！如需…反映问题，请用文字告诉小二”), the step forgotten, nothing
    said of the appeal not yet filed. The reply now says which step waits and what to answer."""
    openid = "oChat8Location"
    _draft_to(oa_kb, openid, ("办公室空调坏了一周了，物业一直不管",))
    reply = say(oa_kb, openid, **LOCATION)
    assert "新华路1号" in reply and "第 2/5 步" in reply and "企业名称" in reply, reply
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司，新华大厦")  # the draft goes on
    say(oa_kb, openid, "张三 13800138000")
    say(oa_kb, openid, "跳过")
    reply = say(oa_kb, openid, **STICKER)
    assert "还没有提交" in reply and "确认" in reply, reply
    assert "诉求已提交" in say(oa_kb, openid, "确认")
