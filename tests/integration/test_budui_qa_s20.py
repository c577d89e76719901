"""QA of “不对” said when there is no answer to refer to any more (twentieth pass, budui), through the real (signed,
encrypted) webhook and POST /api/v1/chat: right after an answer it is the correction flow (a 没用 vote, the next
guesses or the hand-overs); once the conversation's memory has run out (15 minutes) the same words were searched as a
question (“您是不是想问：对诉求处理结果不满意怎么办？”, or “这个问题我还没学会”, and a row in staff's unanswered queue)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat9_qa_s14 import _unanswered
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatbot_qa_s17 import _votes
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.bot import MEMORY_TTL

LICENSE = "startup-license-lost"  # “营业执照丢了怎么办” answers it, with next-best guesses (电子营业执照 …)
DISSATISFIED = "对诉求处理结果不满意"  # the entry “不对” alone is matched with, as a question
WRONG_SAID = ("不对", "不是这个", "答非所问", "不对吧！", "你答错了")


@pytest.fixture(autouse=True)
def _warm_index(request):
    """The index built before the first message: built by it, on a loaded machine, the webhook's deadline could pass."""
    if "oa_kb" in request.fixturenames:
        with request.getfixturevalue("oa_kb").app_context():
            from wxapp_backend.knowledge_store.services import get_runtime

            get_runtime().get()


def _time_passes(r, channel: str, who: str, seconds: int = MEMORY_TTL + 60) -> None:
    """`seconds` of silence for `who` on `channel`: what the bot keeps of the conversation for less than that runs out,
    the rest is kept for that much less (the clock moved on, as far as Redis is concerned)."""
    for key in list(r.scan_iter(f"*:{channel}:{who}")):
        ttl = r.ttl(key)
        if 0 < ttl <= seconds:
            r.delete(key)
        elif ttl > seconds:
            r.expire(key, ttl - seconds)


def _turns_of(application, text: str) -> int:
    """The bot's logged turns for `text` (a question, a choice, a fallback): small talk is not logged."""
    from wxapp_backend.knowledge_store.models import ChatTurn

    with application.app_context(), session_scope() as s:
        return s.scalar(select(func.count(ChatTurn.id)).where(ChatTurn.question == text))


@pytest.fixture
def searches(monkeypatch):
    """The texts the knowledge base was searched for (its decision), as the bot makes it."""
    from knowledge.search import KnowledgeBase

    seen: list[str] = []
    decide = KnowledgeBase.decide

    def spy(self, query, *a, **kw):
        seen.append(query)
        return decide(self, query, *a, **kw)

    monkeypatch.setattr(KnowledgeBase, "decide", spy)
    return seen


def _asks_again(reply: str) -> None:
    assert "再说一遍" in reply and "人工" in reply and "诉求" in reply, reply
    assert "没学会" not in reply and "您是不是想问" not in reply and DISSATISFIED not in reply, reply
    assert "刚才的回答" not in reply and "算作一次" not in reply, reply  # no answer to apologise for, no vote


# ---------------------------------------------------------------------------------------------- 1. too late


def test_wrong_after_the_conversation_ran_out_asks_for_the_question_again(oa_kb, redis_client, searches):  # noqa: F811
    """“不对” a quarter of an hour after the answer: no search, no “没学会”, no row in staff's unanswered queue (there is
    no question in it), no vote on an answer long gone; a kind reply asking for the question again in a few words,
    with 人工 and 诉求 as the way out."""
    before_votes = _votes(oa_kb, LICENSE)
    for i, wrong in enumerate(WRONG_SAID):
        openid = f"oBuduiLate{i}"
        assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
        _time_passes(redis_client, "oa", openid)
        before, turns = _unanswered(oa_kb), _turns_of(oa_kb, wrong)
        searches.clear()
        reply = say(oa_kb, openid, wrong)
        _asks_again(reply)
        assert wrong not in searches, (wrong, searches)
        assert _unanswered(oa_kb) == before and _turns_of(oa_kb, wrong) == turns, wrong
    assert _votes(oa_kb, LICENSE) == before_votes
    # Out of the blue (nothing ever answered) alike; and the next question is answered as usual.
    _asks_again(say(oa_kb, "oBuduiBlue", "不对"))
    assert "一网通办" in say(oa_kb, "oBuduiBlue", "营业执照丢了怎么办")


def test_wrong_after_the_choices_ran_out_asks_for_the_question_again(oa_kb, redis_client):  # noqa: F811
    """“您是不是想问” choices, then “不对” after they expired: not searched either (the list is gone, so is the answer)."""
    openid = "oBuduiLateChoices"
    assert "您是不是想问" in say(oa_kb, openid, "人才")
    _time_passes(redis_client, "oa", openid)
    before = _unanswered(oa_kb)
    _asks_again(say(oa_kb, openid, "不是这个"))
    assert _unanswered(oa_kb) == before


def test_wrong_after_the_conversation_ran_out_in_the_app_chat(oa_kb, client, user_token, make_user,  # noqa: F811
                                                              redis_client):
    """The mini-program's chat is the same bot: small talk (no turn, no queue), the same words."""
    user = make_user()
    h = user_token(user)
    assert _app(client, h, "营业执照丢了怎么办")["decision"] == "answer"
    _time_passes(redis_client, "api", f"u{user.id}")
    before = _unanswered(oa_kb)
    body = _app(client, h, "不对")
    assert body["decision"] == "smalltalk" and not body["suggestions"], body
    _asks_again(body["reply"])
    assert _unanswered(oa_kb) == before


# ---------------------------------------------------------------------------------------------- 2. in time


def test_wrong_right_after_an_answer_is_the_correction_as_before(oa_kb, redis_client):  # noqa: F811
    """Within the conversation nothing changes: a 没用 vote, an apology and the next guesses (a digit picks one); with
    choices pending, “不对” says none of them (“看来小二没猜对”)."""
    openid = "oBuduiInTime"
    before = _votes(oa_kb, LICENSE)
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
    _time_passes(redis_client, "oa", openid, seconds=MEMORY_TTL - 120)  # 13 minutes later: still in time
    reply = say(oa_kb, openid, "不对")
    assert "抱歉" in reply and "您是不是想问" in reply and "电子营业执照" in reply and "再说一遍" not in reply, reply
    assert _votes(oa_kb, LICENSE) == [*before, False]
    assert "电子营业执照" in say(oa_kb, openid, "1")

    openid = "oBuduiInTimeChoices"
    assert "您是不是想问" in say(oa_kb, openid, "人才")
    reply = say(oa_kb, openid, "不对")
    assert "没猜对" in reply and "再说一遍" not in reply, reply


# ---------------------------------------------------------------------------------------------- 3. with a question


@pytest.mark.parametrize("text", ["不对，我想问社保缴费基数怎么定", "不是这个，社保缴费基数怎么定？"])
def test_wrong_with_a_question_in_it_is_answered(oa_kb, redis_client, client, user_token, make_user,  # noqa: F811
                                                 text):
    """“不对，我想问…” carries its question: answered, late or in time, in both chats."""
    openid = "oBuduiWithQuestion"
    say(oa_kb, openid, "营业执照丢了怎么办")
    _time_passes(redis_client, "oa", openid)
    reply = say(oa_kb, openid, text)
    assert "缴费基数" in reply and "再说一遍" not in reply and "没学会" not in reply, reply
    assert "缴费基数" in say(oa_kb, "oBuduiWithQuestionFresh", text)
    body = _app(client, user_token(make_user()), text)
    assert body["decision"] == "answer" and "缴费基数" in body["reply"], body
