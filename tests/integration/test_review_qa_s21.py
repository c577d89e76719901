"""Fresh-eyes review of session 21 (twenty-first pass): the bugs found in what landed, each driven through the real
webhook (or the service it is in) and failing without its fix."""

from __future__ import annotations

import pytest

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chat_qa_s21 import FINANCE, MORE_FINANCE, _none_of_these, _queue
from tests.integration.test_chatbot_qa_s17 import _votes
from tests.integration.test_turn_logged_once import reply_lost_after_commit


@pytest.fixture(autouse=True)
def _warm_index(request):
    """The index built before the first message (as test_chat_qa_s21 does)."""
    if "oa_kb" in request.fixturenames:
        with request.getfixturevalue("oa_kb").app_context():
            from wxapp_backend.knowledge_store.services import get_runtime

            get_runtime().get()


# ------------------------------------------------------------------------------ 1. “换一批” after a picked answer


@pytest.mark.parametrize("negative", ["都不是", "不对"])
def test_none_of_these_to_a_new_batch_after_a_pick_is_about_the_batch(oa_kb, negative):  # noqa: F811
    """“融资” → “1” (an answer; the list stays for another pick) → “换一批” (the next guesses) → “都不是”. The new batch
    left the picked answer's memory in place (the ordinary “您是不是想问” drops it), so “都不是” / “不对” to the batch was
    taken as said of that earlier answer: a 没用 vote on it, “抱歉，刚才的回答没对上您的问题” and the rest of the
    first list again; the question was never queued. Now it is none of these, as to any list of choices."""
    openid = f"oReviewBatch{negative}"
    puhui = _votes(oa_kb, FINANCE[0])
    assert "您是不是想问" in say(oa_kb, openid, "融资")
    assert "普惠" in say(oa_kb, openid, "1")
    before = _queue(oa_kb).get("融资", 0)
    batch = say(oa_kb, openid, "换一批")
    assert "您是不是想问" in batch and "1. 政策性融资担保" in batch, batch
    _none_of_these(say(oa_kb, openid, negative))
    assert _votes(oa_kb, FINANCE[0]) == puhui  # no 没用 on the answer read two replies before
    assert _queue(oa_kb).get("融资", 0) == before + 1


def test_a_digit_after_a_new_batch_picks_from_it(oa_kb):  # noqa: F811
    """Control of the same path: after “换一批” a digit picks from the new batch (its first is 政策性融资担保)."""
    openid = "oReviewBatchDigit"
    say(oa_kb, openid, "融资")
    say(oa_kb, openid, "1")
    say(oa_kb, openid, "换一批")
    assert MORE_FINANCE[0] == "finance-guarantee"
    assert "担保" in say(oa_kb, openid, "1")


# ------------------------------------------------------------------------------ 2. “都不是” whose COMMIT reply was lost


def test_none_of_these_whose_commit_reply_was_lost_is_counted_once(oa_kb, monkeypatch, run_jobs):  # noqa: F811
    """The count in staff's unanswered queue reached the database but the reply to its COMMIT was lost (the
    connection dropped): the error queued the count for later, stamped with a later time than the one written, and
    the job (which recognises its own count by that time) counted the question a second time. The time is now fixed
    before the first try, as a chat turn's log does (test_turn_logged_once)."""
    openid = "oReviewLostCommit"
    assert "您是不是想问" in say(oa_kb, openid, "融资")
    before = _queue(oa_kb).get("融资", 0)
    with reply_lost_after_commit(monkeypatch):
        _none_of_these(say(oa_kb, openid, "都不是"))
    assert _queue(oa_kb).get("融资", 0) == before + 1  # the commit went through
    assert run_jobs() >= 1  # the queued count (and the 'rejected' turn's log) ran ...
    assert _queue(oa_kb).get("融资", 0) == before + 1  # ... and found it


# ------------------------------------------------------------------------------ 3. “都不是” to choices of no known question


def test_none_of_these_to_choices_of_no_known_question_is_no_appeal_description(oa_kb, redis_client):  # noqa: F811
    """Choices whose question is not known (offered before this version, or for a text that was no question): “以上都不是”
    then “我要反映” offered “以上都不是” as the problem's description (the WeChat chat kept the fallback's text for the
    intake, and a “都不是” with no question known fell back to its own words)."""
    from wxapp_backend.knowledge_store.bot import _memory_key

    openid = "oReviewNoQuestion"
    say(oa_kb, openid, "你好")
    redis_client.set(_memory_key("oa", openid), '["talent-foreign-work-permit", "talent-hub"]', ex=60)
    _none_of_these(say(oa_kb, openid, "以上都不是"), logged=False)
    reply = say(oa_kb, openid, "我要反映")
    assert "以上都不是" not in reply, reply


def test_none_of_these_to_choices_of_a_known_question_describes_it(oa_kb):  # noqa: F811
    """Control: with the question known, the intake offers it (test_chat_qa_s21 checks the same with “都不是”)."""
    openid = "oReviewKnownQuestion"
    assert "您是不是想问" in say(oa_kb, openid, "办公室漏水物业不管")
    _none_of_these(say(oa_kb, openid, "以上都不是"))
    reply = say(oa_kb, openid, "我要反映")
    assert "办公室漏水物业不管" in reply and "以上都不是" not in reply, reply
