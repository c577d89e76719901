"""QA of the bot's conversation as an enterprise user has it (sixteenth pass, convo6): through the real (signed,
encrypted) webhook and POST /api/v1/chat: 有用 / 没有帮助 said after an answer, what is no enterprise's name nor a
supplement (annoyance, a verdict on the bot, laughter), a second appeal asked for in the user's words."""

from __future__ import annotations

from tests.integration.test_chat2_qa_s11 import (
    appeal_of,  # noqa: F401  (a follower's appeal, acted on by staff)
)
from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat8_qa_s14 import _offered_finance
from tests.integration.test_chat9_qa_s14 import _unanswered
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)


def test_useful_or_not_said_after_an_answer_is_feedback_not_a_question(oa_kb, client, user_token,  # noqa: F811
                                                                       make_user):
    """After an answer picked from “您是不是想问”, the user says “很有用，谢谢” (or “有用”, “帮到我了”): “抱歉，这个问题我
    还没学会。我已经把它记下来”, a row in staff's unanswered queue, and the rest of the list (“回复 1、3”) dropped.
    “没有帮助” got an unrelated “您是不是想问” list, “答非所问” a guess about 人工服务. Both chats."""
    openid = "oConvo6Useful"
    _offered_finance(oa_kb, openid)
    assert "质押" in say(oa_kb, openid, "2")
    for text in ("很有用，谢谢", "有用", "有帮助", "帮到我了", "挺有用的！"):
        reply = say(oa_kb, openid, text)
        assert "没学会" not in reply and "您是不是想问" not in reply and "高兴" in reply, (text, reply)
    assert "服务专员" in say(oa_kb, openid, "3")  # the list stays, as promised (“回复 1、3”)
    # “没有帮助” right after that answer is a 没用 vote with the rest of the list offered again, as “不对” is (session 18,
    # chatsmall); once more, with nothing answered since, the kind words and the hand-overs.
    reply = say(oa_kb, openid, "没有帮助")
    assert "没学会" not in reply and "您是不是想问" in reply and "人工" in reply, reply
    reply = say(oa_kb, openid, "没帮上")
    assert "没学会" not in reply and "您是不是想问" not in reply and "人工" in reply, reply
    assert "没学会" not in say(oa_kb, openid, "1")  # one of the list offered again: an answer
    # “答非所问”, “不是我想要的” right after that answer say it was the wrong one: the rest of the list is offered again
    # (session 18, chatflow); once more, with nothing answered since, they are feedback as above.
    reply = say(oa_kb, openid, "答非所问")
    assert "没学会" not in reply and "您是不是想问" in reply and "人工" in reply, reply
    reply = say(oa_kb, openid, "不是我想要的")
    assert "没学会" not in reply and "人工" in reply, reply
    # (none of those guesses: since session 21 the question they were for is queued for staff, never the feedback)
    assert _unanswered(oa_kb) == 1 and _unanswered_texts(oa_kb) == {"融资"}

    h = user_token(make_user())
    _app(client, h, "融资")
    _app(client, h, "2")
    for text, decision in (("有用", "smalltalk"), ("没有帮助", "suggest")):  # (suggest: the rest of the list again)
        body = _app(client, h, text)
        assert body["decision"] == decision and "没学会" not in body["reply"], (text, body)
    assert _unanswered_texts(oa_kb) == {"融资"}


def _unanswered_texts(application) -> set[str]:
    from sqlalchemy import select

    from wxapp_backend.db import session_scope
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    with application.app_context(), session_scope() as s:
        return set(s.scalars(select(UnansweredQuestion.text)))


def test_annoyance_feedback_or_laughter_at_the_enterprise_step_is_no_enterprise_name(oa_kb):  # noqa: F811
    """Asked for the enterprise and building, the user vents (“垃圾”, “你好笨”, “无语”), says “没用” / “有用”, laughs
    (“哈哈”, “666”) or “不知道”: each became the enterprise's name and the intake went on to the contact, so staff got
    “企业：垃圾”. The step is asked again now, and the real name given next is the one on the appeal."""
    for i, text in enumerate(("垃圾", "你好笨", "无语", "没用", "有用", "没有帮助", "哈哈", "666", "不知道")):
        openid = f"oConvo6Place{i}"
        say(oa_kb, openid, "我要反映")
        assert "企业名称" in say(oa_kb, openid, "办公室空调坏了一周了，物业一直不管")
        reply = say(oa_kb, openid, text)
        assert "企业名称" in reply and "联系人" not in reply and "没学会" not in reply, (text, reply)
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司，新华大厦")
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "企业：上海某某科技有限公司" in summary, summary
    assert _unanswered(oa_kb) == 0


def _file_one(application, openid: str) -> None:
    say(application, openid, "我要反映")
    say(application, openid, "办公室空调坏了一周了，物业一直不管")
    say(application, openid, "上海某某科技有限公司，新华大厦")
    say(application, openid, "张三 13800138000")
    say(application, openid, "跳过")
    assert "诉求已提交" in say(application, openid, "确认")


SECOND = ("我还要反映一个问题", "再反映一个问题", "还有一个问题要反映", "我还有个诉求", "再提一个诉求", "我要再反映一个",
          "还要投诉")


def test_a_second_appeal_asked_for_in_the_users_words_starts_the_intake(oa_kb, client, user_token,  # noqa: F811
                                                                          make_user):
    """Just after filing, the user wants to report another problem: “我还要反映一个问题”, “再提一个诉求”, “还有一个问题要
    反映”, “还要投诉” got the knowledge base's list of channels, a “您是不是想问” list or “抱歉没能直接帮到您”, no intake.
    They start the next appeal now (the app's chat points to its 我要反映 page)."""
    for i, text in enumerate(SECOND):
        openid = f"oConvo6Second{i}"
        _file_one(oa_kb, openid)
        reply = say(oa_kb, openid, text)
        assert "登记诉求" in reply and "描述" in reply, (text, reply)
    h = user_token(make_user())
    for text in SECOND:
        body = _app(client, h, text)
        assert "小程序“我要反映”中填写" in body["reply"], (text, body)
    for question in ("投诉电话是多少", "我有个问题"):  # still no intake
        assert "登记诉求" not in say(oa_kb, "oConvo6NotSecond", question)


def test_annoyance_or_a_verdict_on_the_bot_is_no_supplement(oa_kb, appeal_of):  # noqa: F811
    """Asked “请提供路灯的具体位置”, the user vents (“你好笨”, “无语”) or says “没用” / “有用”: it was submitted as the
    material, the appeal went back to work and staff got “你好笨”. It is asked for again now; the real material goes."""
    from sqlalchemy import select

    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.db import session_scope

    openid = "oConvo6Supplement"
    number = appeal_of(openid, "request_info", note="请提供路灯的具体位置")
    say(oa_kb, openid, "补充")

    def status() -> str:
        with oa_kb.app_context(), session_scope() as s:
            return s.scalar(select(Appeal.status).where(Appeal.number == number))

    waiting = status()
    for text in ("你好笨", "无语", "没用", "有用", "没有帮助"):
        reply = say(oa_kb, openid, text)
        assert "已补充" not in reply and "补充的内容" in reply, (text, reply)
    assert status() == waiting  # still waiting for the material
    assert "已补充" in say(oa_kb, openid, "在园区东门口第三根路灯")
    assert status() != waiting
