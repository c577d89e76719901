"""QA of the bot's conversation flow (eighteenth pass, chatflow), through the real (signed, encrypted) webhook and
POST /api/v1/chat: “不对” right after an answer, a bare digit after a plain answer, tappable mini-program links in
the activity replies, the waitlist position in “我的报名”, and what a demanding user types around them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import WXA_APPID
from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatact_qa_s17 import LONG_PLACE, LONG_TITLE, _linked_follower, _register
from tests.integration.test_chatbot_qa_s17 import _votes
from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES


@pytest.fixture(autouse=True)
def _warm_index(request):
    """The knowledge-base index built before the first message (each test starts with it dropped): built by the
    first message, on a loaded machine, it could miss the webhook's deadline and answer by customer-service message."""
    if "oa_kb" in request.fixturenames:
        application = request.getfixturevalue("oa_kb")
        with application.app_context():
            from wxapp_backend.knowledge_store.services import get_runtime

            get_runtime().get()


LICENSE = "startup-license-lost"  # “营业执照丢了怎么办” answers it; 电子营业执照, 公章 … are its next-best guesses
DISSATISFIED = "对诉求处理结果不满意"  # the entry “不对” alone used to be matched with


# ---------------------------------------------------------------------------------------------- 1. “不对”


def test_wrong_right_after_an_answer_is_a_no_vote_and_offers_the_next_guesses(oa_kb):  # noqa: F811
    """“不对”, “不是这个”, “答非所问” typed just after an answer were matched as questions (“您是不是想问：1. 对诉求处理结果
    不满意怎么办？” or “这个问题我还没学会”, a row in staff's unanswered queue). Each is now a 没用 vote on that answer
    (once), an apology, and the other guesses for the question first asked, which a digit then picks."""
    for i, wrong in enumerate(("不对", "不是这个", "答非所问", "不对吧！")):
        openid = f"oChatflowWrong{i}"
        before = _votes(oa_kb, LICENSE)
        assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
        reply = say(oa_kb, openid, wrong)
        assert DISSATISFIED not in reply and "没学会" not in reply, (wrong, reply)
        assert "抱歉" in reply and "您是不是想问" in reply and "电子营业执照" in reply, (wrong, reply)
        assert "1." in reply and "人工" in reply, (wrong, reply)
        assert _votes(oa_kb, LICENSE) == [*before, False], wrong
        picked = say(oa_kb, openid, "1")
        assert "电子营业执照" in picked and "一网通办申请补领" not in picked, (wrong, picked)
    # Said twice: one vote (the second is no longer right after that answer).
    openid = "oChatflowWrongTwice"
    before = _votes(oa_kb, LICENSE)
    say(oa_kb, openid, "营业执照丢了怎么办")
    say(oa_kb, openid, "不对")
    say(oa_kb, openid, "不是这个")
    assert _votes(oa_kb, LICENSE) == [*before, False]


def test_wrong_after_an_answer_with_no_other_guess_offers_a_person_or_an_appeal(oa_kb):  # noqa: F811
    """An answer the search had no second guess for: the apology and the two hand-overs (人工, 我要反映), no list."""
    entry = "appeal-time-limit"
    before = _votes(oa_kb, entry)
    openid = "oChatflowWrongAlone"
    assert "您是不是想问" not in say(oa_kb, openid, "诉求一般多久能办好？")
    reply = say(oa_kb, openid, "答非所问")
    assert "抱歉" in reply and "人工" in reply and "我要反映" in reply and "您是不是想问" not in reply, reply
    assert _votes(oa_kb, entry) == [*before, False]


def test_wrong_after_a_picked_choice_offers_the_rest_of_that_list(oa_kb):  # noqa: F811
    """“人才” offers three choices, “2” picks one, “不对”: it was “看来小二没猜对” about the list (no vote). It is now a
    没用 vote on choice 2's answer and the other two choices offered again, numbered 1 and 2."""
    openid = "oChatflowWrongPick"
    assert "您是不是想问" in say(oa_kb, openid, "人才")
    answered = say(oa_kb, openid, "2")
    assert "梯度化" in answered
    before = _votes(oa_kb, "talent-overview")
    reply = say(oa_kb, openid, "不对")
    assert "抱歉" in reply and "您是不是想问" in reply and "R 字签证" in reply and "梯度化" not in reply, reply
    assert "1. 外国高端人才" in reply and "2. 长宁有专门的人才服务平台" in reply and "3." not in reply, reply
    assert _votes(oa_kb, "talent-overview") == [*before, False]
    assert "人才服务" in say(oa_kb, openid, "2")


def test_wrong_with_no_answer_just_given_is_handled_as_before(oa_kb):  # noqa: F811
    """Only right after an answer: “不对” out of the blue, or after the menu, is not a vote on anything."""
    before = _votes(oa_kb, LICENSE)
    reply = say(oa_kb, "oChatflowWrongBlue", "不对")
    assert "刚才的回答" not in reply, reply
    openid = "oChatflowWrongMenu"
    say(oa_kb, openid, "营业执照丢了怎么办")
    say(oa_kb, openid, "菜单")
    reply = say(oa_kb, openid, "不对")
    assert "刚才的回答" not in reply, reply
    # Another reply since the answer (“活动”, none open: no list): “不对” is not about the answer either.
    openid = "oChatflowWrongActivity"
    say(oa_kb, openid, "营业执照丢了怎么办")
    assert "暂时没有" in say(oa_kb, openid, "活动")
    reply = say(oa_kb, openid, "不对")
    assert "刚才的回答" not in reply, reply
    assert _votes(oa_kb, LICENSE) == before
    # Thanks in between keep it (as 有用 would): still about the answer.
    openid = "oChatflowWrongThanks"
    say(oa_kb, openid, "营业执照丢了怎么办")
    say(oa_kb, openid, "谢谢")
    assert "刚才的回答" in say(oa_kb, openid, "不对")
    assert _votes(oa_kb, LICENSE) == [*before, False]


def test_wrong_right_after_an_answer_in_the_app_chat(oa_kb, client, user_token, make_user):  # noqa: F811
    """The mini-program's chat is the same bot: the vote, the apology and the other guesses as suggestions."""
    h = user_token(make_user())
    before = _votes(oa_kb, LICENSE)
    assert _app(client, h, "营业执照丢了怎么办")["decision"] == "answer"
    body = _app(client, h, "不对")
    assert body["decision"] == "suggest" and "抱歉" in body["reply"], body
    assert DISSATISFIED not in body["reply"] and body["suggestions"], body
    assert all(s["id"] != LICENSE for s in body["suggestions"]), body
    assert _votes(oa_kb, LICENSE) == [*before, False]
    assert "电子营业执照" in _app(client, h, "1")["reply"]


# ---------------------------------------------------------------------------------------------- 2. digits


def test_a_digit_after_a_plain_answer_asks_and_never_starts_the_intake(oa_kb):  # noqa: F811
    """“2” just after an answer with no numbered list started the appeal intake (menu item 2) by accident. It now asks
    what the number means and shows the menu; a digit after that menu means the menu (2: the intake)."""
    openid = "oChatflowDigit"
    assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
    reply = say(oa_kb, openid, "2")
    assert "登记诉求" not in reply and "第 1/5 步" not in reply, reply
    assert "回复数字即可" in reply and "2 我要反映" in reply and "“2”" in reply, reply
    assert "登记诉求" in say(oa_kb, openid, "2")
    # The menu shown by “菜单” after an answer: its digits mean the menu at once.
    openid = "oChatflowDigitMenu"
    say(oa_kb, openid, "营业执照丢了怎么办")
    say(oa_kb, openid, "菜单")
    assert "登记诉求" in say(oa_kb, openid, "2")
    # A digit with nothing said before: the menu's, as the welcome shows it.
    assert "登记诉求" in say(oa_kb, "oChatflowDigitFresh", "2")


def test_a_digit_after_a_plain_answer_in_the_app_chat(oa_kb, client, user_token, make_user):  # noqa: F811
    """The app's chat the same: “2” after an answer was “请在小程序“我要反映”中填写诉求”; it asks first."""
    h = user_token(make_user())
    _app(client, h, "营业执照丢了怎么办")
    body = _app(client, h, "2")
    assert "“2”" in body["reply"] and "回复数字即可" in body["reply"], body
    body = _app(client, h, "2")
    assert "我要反映" in body["reply"] and "“2”" not in body["reply"], body


def test_a_digit_after_expired_choices_says_so(oa_kb, redis_client):  # noqa: F811
    """Choices that ran out (15 minutes): the digit says the list has expired (not the menu, not a question)."""
    from wxapp_backend.knowledge_store.bot import _memory_key

    openid = "oChatflowExpired"
    assert "您是不是想问" in say(oa_kb, openid, "人才")
    redis_client.delete(_memory_key("oa", openid))  # as after 15 minutes
    reply = say(oa_kb, openid, "2")
    assert "过期" in reply and "登记诉求" not in reply, reply


# ---------------------------------------------------------------------------------------------- 3. links

_ANCHOR = re.compile(r'<a data-miniprogram-appid="([^"]+)" data-miniprogram-path="([^"]+)">([^<]+)</a>')


def test_activity_replies_link_the_mini_program_pages(oa_kb, make_activity, make_user):  # noqa: F811
    """“活动” and “我的报名” told the user to open 小程序“白领活动” / “我的报名” with nothing to tap. With the mini-program's
    appid configured (WXA_APPID) the page's name is now a mini-program link in the WeChat text."""
    a = make_activity(title="午间一小时·瑜伽")
    for i in range(6):
        make_activity(title=f"楼宇音乐会第{i}场", starts_at=datetime.now(UTC) + timedelta(days=2, hours=i))
    reply = say(oa_kb, "oChatflowLinks", "活动")
    links = _ANCHOR.findall(reply)
    assert links and all(appid == WXA_APPID for appid, _path, _text in links), reply
    assert any(text == "小程序“白领活动”" and path.startswith("pages/") for _a, path, text in links), reply
    assert "<a " not in _ANCHOR.sub("", reply), reply  # no half-made anchor
    user_id = _linked_follower(make_user, "oChatflowLinksMine")
    _register(user_id, a.id)
    reply = say(oa_kb, "oChatflowLinksMine", "我的报名")
    assert any(text == "小程序“我的报名”" for _a, _path, text in _ANCHOR.findall(reply)), reply
    assert "小程序“我的报名”" in reply  # the name reads as before inside the link


def test_a_long_activity_list_with_links_fits_one_reply(oa_kb, make_activity, make_user):  # noqa: F811
    """Five 100-character titles with long addresses and more not listed: the links count against the 2,048 bytes;
    the reply keeps every line and the hint, and never a cut anchor."""
    now = datetime.now(UTC)
    made = [make_activity(title=f"{LONG_TITLE[:96]}第{i}期", address=LONG_PLACE, capacity=30,
                          starts_at=now + timedelta(days=2, hours=i)) for i in range(1, 8)]
    reply = say(oa_kb, "oChatflowLongLinks", "活动")
    assert len(reply.encode()) <= REPLY_TEXT_MAX_BYTES, len(reply.encode())
    assert "5. 🎉🧘" in reply and "回复序号（1～5）" in reply and "还有 2 个" in reply, reply
    assert reply.count("<a ") == reply.count("</a>"), reply
    user_id = _linked_follower(make_user, "oChatflowLongLinksMine")
    for a in made:
        _register(user_id, a.id)
    reply = say(oa_kb, "oChatflowLongLinksMine", "我的报名")
    assert len(reply.encode()) <= REPLY_TEXT_MAX_BYTES, len(reply.encode())
    assert "5. 🎉🧘" in reply and "签到码" in reply and reply.count("<a ") == reply.count("</a>"), reply


def test_no_links_without_the_mini_program_appid_nor_in_the_app_chat(settings, oa_kb, make_activity,  # noqa: F811
                                                                     client, user_token, make_user):
    """Without WXA_APPID there is nothing to link to: plain names. POST /api/v1/chat is read in the mini-program itself,
    which shows no HTML: plain text there too."""
    from tests.api.test_webhook import OA_APPID, OA_KEY, OA_TOKEN, build
    from wxapp_backend.knowledge_store.cli import load_default_if_empty

    make_activity(title="午间一小时·瑜伽")
    bare = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID, wxa_appid="")
    with bare.app_context():
        load_default_if_empty()
    reply = say(bare, "oChatflowNoAppid", "活动")
    assert "午间一小时" in reply and "<a" not in reply and "小程序“白领活动”" in reply, reply
    body = _app(client, user_token(make_user()), "活动")
    assert "午间一小时" in body["reply"] and "<a" not in body["reply"], body


def test_truncation_never_cuts_inside_a_link():
    """A reply over 2,048 bytes is cut; a cut inside the anchor's markup showed the user raw HTML."""
    from wxapp_backend.wechat.messages import truncate_utf8

    link = '<a data-miniprogram-appid="wx1" data-miniprogram-path="pages/activity/list">“白领活动”</a>'
    for pad in range(1990, 2048, 7):
        text = "好" * (pad // 3) + link + "。"
        cut = truncate_utf8(text)
        assert len(cut.encode()) <= REPLY_TEXT_MAX_BYTES
        assert cut.count("<a ") == cut.count("</a>"), pad
        assert "<a" not in cut or link in cut, pad


# ---------------------------------------------------------------------------------------------- 4. 候补第 N 位


def test_my_registrations_shows_the_waitlist_position(oa_kb, make_activity, make_user, client,  # noqa: F811
                                                      user_token):
    """A waitlisted registration read “（候补中）” in the chat's “我的报名”, while the mini-program's page shows
    “候补第 2 位”: the chat now gives the position the API computes."""
    from wxapp_backend.activities import services as activity_services
    from wxapp_backend.db import session_scope

    a = make_activity(title="楼宇音乐会", capacity=1, waitlist_enabled=True)
    first = make_user()
    _register(first.id, a.id)
    second = make_user()
    _register(second.id, a.id)
    user_id = _linked_follower(make_user, "oChatflowWaitlist")
    _register(user_id, a.id)
    with session_scope() as s:
        reg = activity_services.my_registrations_page(s, user_id, page=1, per_page=5)[0][0]
        assert activity_services.waitlist_position(s, reg) == 2
    reply = say(oa_kb, "oChatflowWaitlist", "我的报名")
    assert "1. 楼宇音乐会" in reply and "候补第2位" in reply, reply
    from wxapp_backend.auth.models import User

    with session_scope() as s:
        user = s.get(User, user_id)
    body = _app(client, user_token(user), "我的报名")
    assert "候补第2位" in body["reply"], body


def test_the_console_simulator_shows_a_link_as_its_text_and_page():
    """The console's 对话测试 and `flask chat` print the reply's text: a link showed there as raw markup."""
    from handlers.links import anchor
    from wxapp_backend.wechat.chat import describe_payload, describe_reply

    text = "报名请到小程序" + anchor("wx1", "pages/activity/list", "“白领活动”") + "。"
    for shown in (describe_reply({"MsgType": "text", "Content": text}),
                  describe_payload({"msgtype": "text", "text": {"content": text}})):
        assert shown == "报名请到小程序“白领活动”［小程序页面 pages/activity/list］。", shown
