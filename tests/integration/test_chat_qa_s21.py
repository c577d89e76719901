"""QA of “none of these” said to “您是不是想问” choices (twenty-first pass, chat), through the real (signed, encrypted)
webhook and POST /api/v1/chat: “不是这个”, “错了” (and “都不对”, “以上都不是” …) with choices pending were searched as new
questions (“这个问题我还没学会”, and “不是这个” became a row in staff's unanswered queue) or got a reply with no way to a
person's help, while the question the choices were for was never queued; “换一批” was searched too."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.integration.test_budui_qa_s20 import (
    searches,  # noqa: F401  (the texts searched, as the bot makes them)
)
from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatbot_qa_s17 import _votes
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.bot import _memory_key

NEGATIVES = ("不是这个", "错了", "不对", "都不对", "没有我要的", "以上都不是")
FINANCE = ("finance-puhui", "ip-pledge", "finance-bank-matching")  # the choices “融资” offers, in order
MORE_FINANCE = ("finance-guarantee", "finance-venture")  # the search's next guesses for “融资”
LICENSE = "startup-license-lost"  # “营业执照丢了怎么办” answers it, with next-best guesses (电子营业执照 …)


@pytest.fixture(autouse=True)
def _warm_index(request):
    """The index built before the first message: built by it, on a loaded machine, the webhook's deadline could pass."""
    if "oa_kb" in request.fixturenames:
        with request.getfixturevalue("oa_kb").app_context():
            from wxapp_backend.knowledge_store.services import get_runtime

            get_runtime().get()




def _queue(application) -> dict[str, int]:
    """Staff's unanswered queue: text -> count."""
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    with application.app_context(), session_scope() as s:
        return dict(s.execute(select(UnansweredQuestion.text, UnansweredQuestion.count)).all())


def _none_of_these(reply: str, *, logged: bool = True) -> None:
    """The honest fallback of a “none of these”: no search's reply, the fallback's two hand-overs."""
    assert "没猜对" in reply and "换个说法" in reply and "人工" in reply and "我要反映" in reply, reply
    assert "没学会" not in reply and "您是不是想问" not in reply and "刚才的回答" not in reply, reply
    assert ("已经记下来" in reply) is logged, reply


# ---------------------------------------------------------------------------------------------- 1. WeChat


@pytest.mark.parametrize("negative", NEGATIVES)
def test_a_negative_reply_to_choices_is_none_of_these_in_wechat(oa_kb, redis_client, searches, negative):  # noqa: F811
    """“融资” offers three choices, the user answers “不是这个”: it was searched (“这个问题我还没学会”, and “不是这个” a row
    in staff's queue), or (“不对”, “都不对”) answered with no hand-over and the choices left pending. Now: the fallback's
    way out (人工, 我要反映), the question “融资” counted once in the queue (not the reply), the choices dropped."""
    openid = f"oQa21None{NEGATIVES.index(negative)}"
    assert "您是不是想问" in say(oa_kb, openid, "融资")
    before = _queue(oa_kb)
    searches.clear()
    _none_of_these(say(oa_kb, openid, negative))
    assert negative not in searches, searches
    after = _queue(oa_kb)
    assert after.get("融资", 0) == before.get("融资", 0) + 1, after
    assert negative not in after, after
    assert not redis_client.exists(_memory_key("oa", openid))
    # The choices are gone: “1” no longer picks 普惠金融 (it asks what the number means, with the menu).
    reply = say(oa_kb, openid, "1")
    assert "普惠金融" not in reply and "“1”" in reply, reply


def test_none_of_these_said_twice_queues_the_question_once(oa_kb, searches):  # noqa: F811
    """The second “都不是” has no choices left: “不确定您指的是哪一条”, no search, no second count; the same asker asking
    and rejecting again at once is one asker (as a repeated fallback is); another asker counts."""
    openid = "oQa21Twice"
    say(oa_kb, openid, "融资")
    before = _queue(oa_kb).get("融资", 0)
    _none_of_these(say(oa_kb, openid, "都不是"))
    searches.clear()
    again = say(oa_kb, openid, "以上都不是")
    assert "再说一遍" in again and "没学会" not in again, again
    assert "以上都不是" not in searches
    say(oa_kb, openid, "融资")
    _none_of_these(say(oa_kb, openid, "不是这个"))
    assert _queue(oa_kb).get("融资", 0) == before + 1
    say(oa_kb, "oQa21TwiceOther", "融资")
    _none_of_these(say(oa_kb, "oQa21TwiceOther", "错了"))
    assert _queue(oa_kb).get("融资", 0) == before + 2
    assert not {"都不是", "以上都不是", "不是这个", "错了"} & set(_queue(oa_kb))


def test_a_negative_with_a_question_after_it_is_still_searched(oa_kb, client, user_token, make_user):  # noqa: F811
    """“不对，我想问…” with choices pending carries its own question: answered, in both chats."""
    text = "不对，我想问社保缴费基数怎么定"
    say(oa_kb, "oQa21WithQuestion", "融资")
    reply = say(oa_kb, "oQa21WithQuestion", text)
    assert "缴费基数" in reply and "没猜对" not in reply, reply
    h = user_token(make_user())
    _app(client, h, "融资")
    body = _app(client, h, text)
    assert body["decision"] == "answer" and "缴费基数" in body["reply"], body


def test_the_appeal_offered_after_none_of_these_describes_the_question(oa_kb):  # noqa: F811
    """The fallback says “回复“我要反映”提交诉求”; the intake then offers the text the bot could not answer as the
    problem's description: that is the question the choices were for, not “都不是”."""
    openid = "oQa21Appeal"
    assert "您是不是想问" in say(oa_kb, openid, "办公室漏水物业不管")
    _none_of_these(say(oa_kb, openid, "都不是"))
    reply = say(oa_kb, openid, "我要反映")
    assert "办公室漏水物业不管" in reply and "都不是" not in reply, reply


# ---------------------------------------------------------------------------------------------- 2. the app's chat


@pytest.mark.parametrize("negative", NEGATIVES)
def test_a_negative_reply_to_choices_is_none_of_these_in_the_app_chat(oa_kb, client, user_token, make_user,  # noqa: F811
                                                                      redis_client, negative):
    """POST /api/v1/chat is the same bot: a fallback (no suggestions), the same words, the question queued once."""
    user = make_user()
    h = user_token(user)
    assert _app(client, h, "融资")["decision"] == "suggest"
    before = _queue(oa_kb)
    body = _app(client, h, negative)
    assert body["decision"] == "fallback" and body["suggestions"] == [], body
    _none_of_these(body["reply"])
    after = _queue(oa_kb)
    assert after.get("融资", 0) == before.get("融资", 0) + 1 and negative not in after, after
    assert not redis_client.exists(_memory_key("api", f"u{user.id}"))
    assert "普惠金融" not in _app(client, h, "1")["reply"]


def test_choices_offered_before_login_are_rejected_after_it(oa_kb, client, user_token, make_user):  # noqa: F811
    """The conversation of an anonymous session goes on after login (ChatMemory.adopt): so does its question."""
    session = "qa21-session-abcdef0123456789"
    resp = client.post("/api/v1/chat", json={"text": "融资", "session": session})
    assert resp.get_json()["decision"] == "suggest"
    before = _queue(oa_kb).get("融资", 0)
    resp = client.post("/api/v1/chat", json={"text": "都不是", "session": session},
                       headers=user_token(make_user()))
    _none_of_these(resp.get_json()["reply"])
    assert _queue(oa_kb).get("融资", 0) == before + 1


# ---------------------------------------------------------------------------------------------- 3. outside choices


def test_none_of_these_words_with_no_choices_pending_are_no_question(oa_kb, searches):  # noqa: F811
    """“以上都不是”, “没有我要的” with nothing pending (out of the blue, or after the choices ran out) were searched:
    “这个问题我还没学会” and a row in staff's queue. They ask for the question again, as “不对” does there."""
    before = _queue(oa_kb)
    for text in ("以上都不是", "没有我要的"):
        searches.clear()
        reply = say(oa_kb, "oQa21Blue", text)
        assert "再说一遍" in reply and "没学会" not in reply, (text, reply)
        assert text not in searches
    assert _queue(oa_kb) == before


def test_none_of_these_words_right_after_an_answer_are_the_correction(oa_kb):  # noqa: F811
    """Right after an answer, “以上都不是” is “不对”: a 没用 vote and the next guesses (nothing queued yet); “都不是” to
    those guesses then queues the question first asked."""
    openid = "oQa21AfterAnswer"
    before = _votes(oa_kb, LICENSE)
    queued = _queue(oa_kb).get("营业执照丢了怎么办", 0)
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
    reply = say(oa_kb, openid, "以上都不是")
    assert "抱歉" in reply and "您是不是想问" in reply and "电子营业执照" in reply, reply
    assert _votes(oa_kb, LICENSE) == [*before, False]
    _none_of_these(say(oa_kb, openid, "都不是"))
    assert _queue(oa_kb).get("营业执照丢了怎么办", 0) == queued + 1
    assert _votes(oa_kb, LICENSE) == [*before, False]


# ---------------------------------------------------------------------------------------------- 4. more, numbers


def test_more_choices_offers_the_next_guesses_then_says_there_are_none(oa_kb, searches):  # noqa: F811
    """“换一批” (“还有别的吗”) with choices pending was searched: “我还没学会” and a row “换一批” in staff's queue, or an
    unrelated “您是不是想问”. It now offers the search's next guesses for the same question (a digit picks one); when
    there are none left, the honest fallback, and the question queued."""
    for i, more in enumerate(("换一批", "还有别的吗")):
        openid = f"oQa21More{i}"
        say(oa_kb, openid, "融资")
        before = _queue(oa_kb).get("融资", 0)
        searches.clear()
        reply = say(oa_kb, openid, more)
        assert more not in searches, searches
        assert "您是不是想问" in reply and "1. 政策性融资担保" in reply and "普惠" not in reply, reply
        assert "担保" in say(oa_kb, openid, "1")  # picks from the new list (which stays for another pick)
        # right after that answer, “不对” is its correction (the rest of the list); “没有我要的” to that is none of these
        assert "1. 想找投资人融资" in say(oa_kb, openid, "不对")
        _none_of_these(say(oa_kb, openid, "没有我要的"))
        assert _queue(oa_kb).get("融资", 0) == before + 1
    openid = "oQa21NoMore"
    say(oa_kb, openid, "融资")
    say(oa_kb, openid, "换一批")
    before = _queue(oa_kb).get("融资", 0)
    reply = say(oa_kb, openid, "换一批")
    assert "没有更多" in reply and "人工" in reply and "我要反映" in reply and "已经记下来" in reply, reply
    assert _queue(oa_kb).get("融资", 0) == before + 1 and "换一批" not in _queue(oa_kb)


def test_more_choices_in_the_app_chat(oa_kb, client, user_token, make_user):  # noqa: F811
    h = user_token(make_user())
    _app(client, h, "融资")
    body = _app(client, h, "换一批")
    assert body["decision"] == "suggest" and [s["id"] for s in body["suggestions"]] == list(MORE_FINANCE), body
    assert "担保" in _app(client, h, "1")["reply"]


def test_a_number_outside_the_choices_names_the_way_out(oa_kb, redis_client):  # noqa: F811
    """“0” or “5” to three choices: “请回复 1～3 之间的数字…或者直接输入您的问题” — nothing said of the user whose question
    is none of them. The reply now says to answer “都不是”, and that works; the choices stay for a number meanwhile."""
    openid = "oQa21Zero"
    say(oa_kb, openid, "融资")
    for text in ("0", "5"):
        reply = say(oa_kb, openid, text)
        assert "1～3" in reply and "都不是" in reply, (text, reply)
        assert redis_client.exists(_memory_key("oa", openid))
    _none_of_these(say(oa_kb, openid, "都不是"))


def test_none_of_these_with_no_question_known_says_nothing_was_recorded(oa_kb, redis_client):  # noqa: F811
    """Choices whose question is not known (offered before this version, or moved without it): the same way out, and
    no claim that the question was recorded."""
    openid = "oQa21Unknown"
    say(oa_kb, openid, "你好")
    redis_client.set(_memory_key("oa", openid), '["talent-foreign-work-permit", "talent-hub"]', ex=60)
    before = _queue(oa_kb)
    _none_of_these(say(oa_kb, openid, "不是这个"), logged=False)
    assert _queue(oa_kb) == before


def test_none_of_these_with_the_database_away_is_counted_once_it_is_back(oa_kb, monkeypatch, run_jobs):  # noqa: F811
    """The queue's write fails (the database restarting): the user still gets the way out, the choices are dropped all
    the same, and the question reaches staff's queue once the database is back (queued as a chat turn's log is: it
    was only a warning, and the question was lost); the job run again counts it once."""
    from sqlalchemy.exc import OperationalError

    from wxapp_backend.knowledge_store import bot
    from wxapp_backend.knowledge_store.jobs import queue_unanswered_later

    openid = "oQa21DbAway"
    say(oa_kb, openid, "融资")
    before = _queue(oa_kb)

    def away(*a, **kw):
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    monkeypatch.setattr(bot, "queue_unanswered", away)
    _none_of_these(say(oa_kb, openid, "不是这个"), logged=True)
    assert "普惠金融" not in say(oa_kb, openid, "1")
    monkeypatch.undo()
    assert _queue(oa_kb) == before  # not yet: the database was away
    state = oa_kb.extensions["wxapp"]
    jobs = [j for j in (state.queue.fetch_job(i) for i in state.queue.job_ids)
            if j and j.func_name.endswith("queue_unanswered_later")]
    assert len(jobs) == 1
    assert run_jobs() >= 1
    after = _queue(oa_kb)
    assert after.get("融资", 0) == before.get("融资", 0) + 1, (before, after)
    with oa_kb.app_context():
        queue_unanswered_later(*jobs[0].args)  # a worker dying after its commit runs it again
    assert _queue(oa_kb) == after


def test_none_of_these_with_the_database_and_the_queue_away_still_answers(oa_kb, monkeypatch):  # noqa: F811
    """Redis refusing the job too: the way out all the same, without the claim that the question was recorded."""
    import redis as redis_lib
    from sqlalchemy.exc import OperationalError

    from wxapp_backend import queue as queue_module
    from wxapp_backend.knowledge_store import bot

    openid = "oQa21DbAway2"
    say(oa_kb, openid, "融资")

    def away(*a, **kw):
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    def refused(*a, **kw):
        raise redis_lib.ConnectionError("queue away")

    monkeypatch.setattr(bot, "queue_unanswered", away)
    monkeypatch.setattr(queue_module, "enqueue", refused)
    _none_of_these(say(oa_kb, openid, "不是这个"), logged=False)


@pytest.mark.parametrize("text, none, more", [
    ("不是这个", True, False), ("错了", True, False), ("都不对！", True, False), ("没有我要的", True, False),
    ("以上都不是", True, False), ("没有", True, False), ("换一批", False, True), ("还有别的吗", False, True),
    ("其他的呢", False, True),
    # questions, and words that say nothing of the choices
    ("不对，我想问社保缴费基数怎么定", False, False), ("不对外开放吗", False, False), ("没有发票怎么办", False, False),
    ("换汇怎么办", False, False), ("换个说法", False, False), ("还有", False, False), ("没用", False, False),
])
def test_what_counts_as_none_of_these_or_more(text, none, more):
    from knowledge.smalltalk import is_none_of_these, wants_more_choices

    assert (is_none_of_these(text), wants_more_choices(text)) == (none, more)


@pytest.mark.parametrize("text", ["换一批", "还有别的吗"])
def test_more_with_nothing_pending_asks_for_the_question(oa_kb, client, user_token, make_user, text):  # noqa: F811
    """“换一批” with no “您是不是想问” choices pending was searched as a question (“我还没学会” and a row in staff's
    unanswered queue): now a friendly request for the question, in both chats, and nothing queued."""
    from wxapp_backend.knowledge_store.bot import NOTHING_TO_SWAP

    before = _queue(oa_kb)
    assert say(oa_kb, "oQa21NothingToSwap", text) == NOTHING_TO_SWAP
    body = _app(client, user_token(make_user()), text)
    assert body["reply"] == NOTHING_TO_SWAP and body["decision"] == "smalltalk", body
    assert _queue(oa_kb) == before


def test_choices_turned_down_are_not_counted_as_covered(oa_kb, client, user_token, make_user):  # noqa: F811
    """The console's 覆盖率 counted a “您是不是想问” list as covering the question even when the user then said none of
    them fits. A “都不是” now logs a turn of its own (“rejected”, no question of its own in 提问) and is taken off the
    covered ones: two questions with choices, one of them turned down, cover one of two."""
    from wxapp_backend.knowledge_store.models import ChatTurn
    from wxapp_backend.knowledge_store.services import answer_rates

    h = user_token(make_user())
    assert _app(client, h, "融资")["decision"] == "suggest"
    assert _app(client, h, "都不是")["decision"] == "fallback"
    assert _app(client, h, "人才")["decision"] == "suggest"
    with oa_kb.app_context(), session_scope() as s:
        rates = answer_rates(s)
        rejected = s.scalars(select(ChatTurn).where(ChatTurn.decision == "rejected")).all()
    assert [(t.question, t.channel) for t in rejected] == [("融资", "api")]
    assert (rates["asked"], rates["suggested"], rates["rejected"]) == (2, 2, 1), rates
    assert rates["covered_rate"] == 0.5, rates


def test_turned_down_before_and_after_logging_in_is_one_asker(oa_kb, client, user_token, make_user):  # noqa: F811
    """“融资” → “都不是” in an anonymous session, then the same after logging in (the session adopted): one asker in
    staff's queue, as two rejections within the repeat window by one person are (the login lost that memory)."""
    session = "qa21-adopt-queued-0123456789ab"
    before = _queue(oa_kb).get("融资", 0)
    assert client.post("/api/v1/chat", json={"text": "融资", "session": session}).get_json()["decision"] == "suggest"
    client.post("/api/v1/chat", json={"text": "都不是", "session": session})
    h = user_token(make_user())
    assert client.post("/api/v1/chat", json={"text": "融资", "session": session},
                       headers=h).get_json()["decision"] == "suggest"
    client.post("/api/v1/chat", json={"text": "都不是", "session": session}, headers=h)
    assert _queue(oa_kb).get("融资", 0) == before + 1
