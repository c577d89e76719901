"""Exploratory QA of the bot's conversation, through the real (signed, encrypted) webhook path."""

from __future__ import annotations

import itertools

import pytest

from handlers.bot import MENU_REPLY
from tests.api.test_webhook import OA_APPID, OA_KEY, OA_TOKEN, acct_of, build, post, reply_of
from wxapp_backend.knowledge_store.bot import _memory_key
from wxapp_backend.wechat.chat import make_push
from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

_ids = itertools.count(7_000_000_000)


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


def test_menu_digit_2_starts_the_appeal_intake_like_the_menu_button(oa_kb):
    """The menu says “2 我要反映”: replying 2 must start the intake (as the MENU_APPEAL button and the words do).
    It used to answer a text saying “直接回复问题描述”, while the description that followed went to the knowledge
    base (“这个问题我还没学会”) and the complaint was lost."""
    say(oa_kb, "oDigit2", "菜单")
    assert "共 5 步" in say(oa_kb, "oDigit2", "2")
    assert "企业名称" in say(oa_kb, "oDigit2", "我们楼下的路灯坏了一个月了没人修，晚上下班很危险")


def test_menu_shown_after_choices_makes_digits_mean_the_menu_again(oa_kb, redis_client):
    """“您是不是想问” choices pending, then the user asks for the menu (or follows / scans again): the menu's
    “回复数字即可 … 2 我要反映” is the last thing the bot said, so 2 is the menu's 我要反映, not choice 2."""
    for openid, show in (("oMenuAfter1", {"text": "菜单"}), ("oMenuAfter2", {"event": "SCAN", "event_key": "42"}),
                         ("oMenuAfter3", {"event": "subscribe"}), ("oMenuAfter4", {"event": "CLICK", "event_key": "X"})):
        say(oa_kb, openid, "你好")  # a known user, as for the fixed answers' fast path
        redis_client.set(_memory_key("oa", openid), '["talent-foreign-work-permit", "talent-hub"]', ex=60)
        assert "回复数字即可" in say(oa_kb, openid, **show)
        assert "共 5 步" in say(oa_kb, openid, "2"), openid


def test_menu_reply_unchanged(oa_kb):
    assert say(oa_kb, "oMenuPlain", "菜单") == MENU_REPLY


def test_confirm_summary_of_a_long_description_keeps_the_confirm_hint(oa_kb):
    """A description may be 2,000 characters; the summary quoted all of it, so the passive reply (cut at 2,048
    bytes) lost the enterprise, the contact and “回复“确认”提交” at its end."""
    who = "oLongAppeal"
    say(oa_kb, who, "我要反映")
    say(oa_kb, who, ("楼宇门口的共享单车堆放严重影响员工进出，已经持续两个月。" * 80)[:1990])
    say(oa_kb, who, "上海某某科技有限公司，新华大厦")
    say(oa_kb, who, "张三 13800138000")
    summary = say(oa_kb, who, "跳过")
    assert len(summary.encode("utf-8")) <= REPLY_TEXT_MAX_BYTES
    assert "张三 13800138000" in summary and "回复“确认”提交" in summary
    assert "诉求已提交" in say(oa_kb, who, "确认")


@pytest.mark.parametrize("text", ["👍", "😀😀", "🙏"])
def test_emoji_only_is_not_an_unanswered_question(oa_kb, db, text):
    """A thumbs-up is no question: it used to get “这个问题我还没学会，我已经把它记下来” and land in the staff's
    queue of unanswered questions."""
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    reply = say(oa_kb, "oEmoji1", text)
    assert "没学会" not in reply and "文字" in reply
    assert db.query(UnansweredQuestion).count() == 0


def test_app_chat_menu_after_choices_makes_digits_mean_the_menu_again(oa_kb, client):
    """The same in POST /api/v1/chat: after “菜单”, 3 is the menu's 白领活动, not the third earlier choice."""
    from handlers.bot import NO_ACTIVITY

    ask = lambda text: client.post("/api/v1/chat", json={"text": text}).get_json()  # noqa: E731
    assert ask("人才")["decision"] == "suggest"  # three choices pending
    assert ask("菜单")["reply"] == MENU_REPLY
    assert ask("3")["reply"] == NO_ACTIVITY  # the activity lookup (none published here)


def test_the_fallback_reply_does_not_number_what_a_digit_would_not_do():
    """The “我还没学会” reply listed 1. 2. 3.; replying 2 from it started the menu's item 2, not 回复“人工”."""
    import re

    from wxapp_backend.knowledge_store.chat import FALLBACK

    assert "人工" in FALLBACK and not re.search(r"^\d\.", FALLBACK, re.M)


def test_choices_pending_before_another_topic_are_forgotten(oa_kb, redis_client):
    """“您是不是想问” choices, then 我要反映 → 取消 (or 我的诉求): a digit after that meant an old choice up to 15 minutes
    later; it now means the menu, as the last thing the bot said suggests."""
    for openid, topic in (("oTopic1", ["我要反映", "取消"]), ("oTopic2", ["我的诉求"])):
        say(oa_kb, openid, "你好")
        redis_client.set(_memory_key("oa", openid), '["talent-foreign-work-permit", "talent-hub"]', ex=900)
        for words in topic:
            say(oa_kb, openid, words)
        assert not redis_client.exists(_memory_key("oa", openid)), openid
