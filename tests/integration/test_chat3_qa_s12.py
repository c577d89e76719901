"""QA of the bot's conversation as reached from both channels (twelfth pass): the Official Account webhook and the
mini-program's in-app chat (POST /api/v1/chat), which must mean the same by the same words."""

from __future__ import annotations

from handlers.bot import KB_PROMPT, STATUS_LOGIN
from tests.integration.appeals.test_appeal_chat_followup import chat  # noqa: F401  (the follow-up's fixture)
from tests.integration.test_chat2_qa_s11 import (
    appeal_of,  # noqa: F401  (a follower's appeal, acted on by staff)
)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.knowledge_store.bot import _memory_key


def _app(client, headers, text: str) -> dict:
    resp = client.post("/api/v1/chat", json={"text": text}, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_a_digit_right_after_the_resolution_notice_is_the_score_in_the_app_chat(chat, client, user_token,  # noqa: F811
                                                                                 redis_client):
    """Right after “您的诉求已办结…请评价”, “4” in the mini-program's chat was menu item 4 (联系客服, a hand-over)
    while the WeChat chat read it as the score. It is now the score there too (named back with the appeal, rated on
    the appeal's page); once the menu or “您是不是想问” choices were shown since, a digit means those again."""
    h = user_token(chat.user)
    _, number = chat.resolved()
    body = _app(client, h, "4")
    assert body["decision"] == "guide" and "联系客服" not in body["reply"], body
    assert number in body["reply"] and "4 分" in body["reply"] and "评价" in body["reply"], body
    assert "没有提交" in body["reply"], body  # honest: the page takes the rating, the chat did not
    assert "5 分" in _app(client, h, "５")["reply"]  # a full-width digit, and 5 (no menu item) alike
    # The menu shown since: its digits are meant.
    _app(client, h, "菜单")
    body = _app(client, h, "4")
    assert body["decision"] == "handoff", body
    # “您是不是想问” choices offered since: a digit picks one of them (not the score).
    redis_client.set(_memory_key("api", f"u{chat.user.id}"), '["talent-foreign-work-permit", "talent-hub"]',
                     ex=60)
    body = _app(client, h, "1")
    assert "4 分" not in body["reply"] and "1 分" not in body["reply"] and number not in body["reply"], body


def test_full_width_digits_mean_what_ascii_digits_mean_in_both_chats(oa_kb, appeal_of, client, user_token,  # noqa: F811
                                                                     make_user):
    """A phone's Chinese keyboard types “２” as often as “2”. In the WeChat chat “３” after the menu got “小二没看明白
    这个数字” and “４” after a 办结 notice was no score; in the app's chat “２” among “您是不是想问” choices was the
    menu's 我要反映 instead of choice 2. A full-width digit now means what the ASCII one means, in both chats."""
    openid = "oFullWidthMenu"
    say(oa_kb, openid, "菜单")
    assert say(oa_kb, openid, "１") == KB_PROMPT
    say(oa_kb, openid, "菜单")
    assert "活动" in say(oa_kb, openid, "３") and "没看明白" not in say(oa_kb, openid, "菜单")

    scorer = "oFullWidthScore"
    number = appeal_of(scorer, "resolve", resolution="已协调物业修好路灯")
    reply = say(oa_kb, scorer, "４")
    assert "4 分" in reply and number in reply, reply

    h = user_token(make_user())
    assert _app(client, h, "融资")["decision"] == "suggest"
    body = _app(client, h, "２")
    assert body["decision"] == "answer" and "质押" in body["reply"], body


def test_progress_questions_show_the_appeals_in_the_app_chat_too(chat, oa_kb, client, user_token):  # noqa: F811
    """“有进展吗”, “办得怎么样了”, “我的诉求进度如何”: the WeChat chat lists the user's appeals where they stand; the
    app's chat gave a knowledge-base guess or “这个问题我还没学会”, which also put it in staff's unanswered queue. It
    now lists them too (a caller without a login is told to log in); and like the WeChat chat, a list of appeals
    drops the “您是不是想问” choices offered before it, so a “1” after it is no financing answer.
    (Changed deliberately in the fifth look, test_chat5_qa_s12: the “1” after the list was asserted to be main-menu
    item 1, the 政策问答 prompt; it now picks the first appeal of the list, as after a list of activities.)"""
    h = user_token(chat.user)
    appeal_id, number = chat.submit()
    chat.act(appeal_id, "accept")
    for text in ("有进展吗", "办得怎么样了", "我的诉求进度如何"):
        body = _app(client, h, text)
        assert body["decision"] == "guide" and number in body["reply"] and "已受理" in body["reply"], (text, body)
    assert _app(client, {}, "有进展吗")["reply"] == STATUS_LOGIN
    for listing in ("我的诉求", "有进展吗"):
        assert _app(client, h, "融资")["decision"] == "suggest"
        assert number in _app(client, h, listing)["reply"]
        body = _app(client, h, "1")
        assert "普惠金融" not in body["reply"] and number in body["reply"], (listing, body)
        assert body["reply"] != KB_PROMPT and "办理进展" in body["reply"], (listing, body)


def test_a_digit_for_choices_that_expired_is_not_a_menu_item(oa_kb, client, user_token, make_user,  # noqa: F811
                                                             redis_client):
    """“您是不是想问” choices are remembered for 15 minutes. A user who came back later and replied “2” (or “4”) to
    them started the appeal intake (or was handed to a person): the digit fell to the menu, which they had not been
    shown. Now the bot says the list has expired and asks for the question again; once the menu is shown, its digits
    are meant again, in both chats."""
    openid = "oExpiredChoices"
    say(oa_kb, openid, "你好")
    assert "您是不是想问" in say(oa_kb, openid, "融资")
    redis_client.delete(_memory_key("oa", openid))  # a quarter of an hour later
    for digit in ("2", "4", "5"):
        reply = say(oa_kb, openid, digit)
        assert "过期" in reply and "登记诉求" not in reply, (digit, reply)
    say(oa_kb, openid, "菜单")
    assert "登记诉求" in say(oa_kb, openid, "2")

    user = make_user()
    h = user_token(user)
    assert _app(client, h, "融资")["decision"] == "suggest"
    redis_client.delete(_memory_key("api", f"u{user.id}"))
    for digit in ("2", "4", "5"):
        body = _app(client, h, digit)
        assert "过期" in body["reply"] and body["decision"] == "smalltalk", (digit, body)
    _app(client, h, "菜单")
    assert _app(client, h, "4")["decision"] == "handoff"


def test_my_registrations_without_a_login_does_not_say_there_are_none(client, make_activity, make_user, user_token):
    """“我的报名” in the app's chat without a login answered “您目前没有报名的活动”: someone registered for three
    activities was told they had none (their login had lapsed). Like 我的诉求, it now says to log in first."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.services import register
    from wxapp_backend.db import session_scope

    user = make_user()
    activity = make_activity(title="午间一小时·瑜伽", capacity=20, starts_at=datetime.now(UTC) + timedelta(days=2))
    with session_scope() as s:
        register(s, activity_id=activity.id, user_id=user.id)
    body = _app(client, {}, "我的报名")
    assert "没有报名" not in body["reply"] and "登录" in body["reply"], body
    assert "午间一小时·瑜伽" in _app(client, user_token(user), "我的报名")["reply"]
