"""QA of the bot's conversations as enterprises really chat, through the real (signed, encrypted) webhook path."""

from __future__ import annotations

import itertools

import pytest

from tests.api.test_webhook import OA_APPID, OA_KEY, OA_TOKEN, acct_of, build, post, reply_of
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
    for text in ("5", "0", "12", "二"):
        reply = say(oa_kb, "oBareNumber", text)
        assert "您是不是想问" not in reply and "没学会" not in reply and "菜单" in reply, (text, reply)
