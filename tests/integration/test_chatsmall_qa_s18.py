"""QA of the bot's small replies (eighteenth pass, chatsmall), through the real (signed, encrypted) webhook and
POST /api/v1/chat: “没用” after an answer as “不对” is, the activity detail's mini-program link, a message with no
content (3,000 × “啊”), one thanks reply, and the appeal intake's steps as a demanding user goes through them."""

from __future__ import annotations

import re

import pytest

from tests.conftest import WXA_APPID
from tests.integration.test_chat3_qa_s12 import _app
from tests.integration.test_chat9_qa_s14 import _unanswered
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_chatbot_qa_s17 import _votes


@pytest.fixture(autouse=True)
def _warm_index(request):
    """The knowledge-base index built before the first message (as the chatflow tests do)."""
    if "oa_kb" in request.fixturenames:
        application = request.getfixturevalue("oa_kb")
        with application.app_context():
            from wxapp_backend.knowledge_store.services import get_runtime

            get_runtime().get()


LICENSE = "startup-license-lost"  # “营业执照丢了怎么办” answers it; 电子营业执照 … are its next-best guesses
_ANCHOR = re.compile(r'<a data-miniprogram-appid="([^"]+)" data-miniprogram-path="([^"]+)">([^<]+)</a>')


# ---------------------------------------------------------------------------------------------- 1. 没用 = 不对


def test_useless_right_after_an_answer_offers_the_next_guesses_as_wrong_does(oa_kb):  # noqa: F811
    """“不对” after an answer is a 没用 vote and the next guesses; “没用” / “没有帮助” typed there only apologised and
    pointed to 人工 / 我要反映 (a vote, but nothing more to try). They now get the same: one vote, the guesses."""
    for i, useless in enumerate(("没用", "没有帮助", "没帮上", "没用！")):
        openid = f"oChatsmallUseless{i}"
        before = _votes(oa_kb, LICENSE)
        assert "一网通办" in say(oa_kb, openid, "营业执照丢了怎么办")
        reply = say(oa_kb, openid, useless)
        assert "抱歉" in reply and "您是不是想问" in reply and "电子营业执照" in reply, (useless, reply)
        assert "1." in reply and "人工" in reply and "没学会" not in reply, (useless, reply)
        assert _votes(oa_kb, LICENSE) == [*before, False], useless
        assert "电子营业执照" in say(oa_kb, openid, "1"), useless
    # Said twice: one vote; the second is no longer about that answer (the old kind words).
    openid = "oChatsmallUselessTwice"
    before = _votes(oa_kb, LICENSE)
    say(oa_kb, openid, "营业执照丢了怎么办")
    say(oa_kb, openid, "没用")
    reply = say(oa_kb, openid, "没用")
    assert "抱歉" in reply and "人工" in reply and "刚才的回答" not in reply, reply
    assert _votes(oa_kb, LICENSE) == [*before, False]


def test_useless_after_an_answer_with_no_other_guess_offers_the_hand_overs(oa_kb):  # noqa: F811
    entry = "appeal-time-limit"
    before = _votes(oa_kb, entry)
    openid = "oChatsmallUselessAlone"
    assert "您是不是想问" not in say(oa_kb, openid, "诉求一般多久能办好？")
    reply = say(oa_kb, openid, "没有帮助")
    assert "抱歉" in reply and "· 回复“人工”" in reply and "我要反映" in reply and "您是不是想问" not in reply, reply
    assert _votes(oa_kb, entry) == [*before, False]


def test_useless_in_the_app_chat_offers_the_next_guesses(oa_kb, client, user_token, make_user):  # noqa: F811
    h = user_token(make_user())
    before = _votes(oa_kb, LICENSE)
    assert _app(client, h, "营业执照丢了怎么办")["decision"] == "answer"
    body = _app(client, h, "没有帮助")
    assert body["decision"] == "suggest" and "抱歉" in body["reply"] and body["suggestions"], body
    assert all(s["id"] != LICENSE for s in body["suggestions"]), body
    assert _votes(oa_kb, LICENSE) == [*before, False]


def test_useless_with_no_answer_just_given_is_as_before(oa_kb):  # noqa: F811
    """Out of the blue, “没用” is annoyance: the kind words, no vote, no list."""
    reply = say(oa_kb, "oChatsmallUselessBlue", "没用")
    assert "抱歉没能帮上您" in reply and "您是不是想问" not in reply, reply


# ---------------------------------------------------------------------------------------------- 2. detail link


def test_an_activity_picked_from_the_list_links_its_own_detail_page(oa_kb, make_activity):  # noqa: F811
    """“活动”, then “1”: the detail said “打开小程序“白领活动”，点开这个活动” with a link to the list page; the user had to
    find the activity again. The link now opens that activity's page (pages/activity/detail?id=N, as the notices do)."""
    a = make_activity(title="午间一小时·瑜伽")
    openid = "oChatsmallDetail"
    listed = say(oa_kb, openid, "活动")
    assert any(path == "pages/activity/list" for _a, path, _t in _ANCHOR.findall(listed)), listed
    detail = say(oa_kb, openid, "1")
    links = _ANCHOR.findall(detail)
    assert "午间一小时·瑜伽" in detail and links, detail
    assert all(appid == WXA_APPID for appid, _p, _t in links), detail
    assert any(path == f"pages/activity/detail?id={a.id}" for _a, path, _t in links), detail
    assert not any(path == "pages/activity/list" for _a, path, _t in links), detail
    # The list after it links the list again (the detail's page is for that reply only).
    assert any(path == "pages/activity/list" for _a, path, _t in _ANCHOR.findall(say(oa_kb, openid, "活动")))


# ---------------------------------------------------------------------------------------------- 3. no content

NOISE = ("啊" * 3000, "啊啊啊啊啊啊", "嗯嗯嗯嗯嗯嗯嗯嗯", "啊啊啊呀呀呀哦哦哦", "aaaaaaaaaaaa", "税税税税税税税税",
         "我想问一下", "请问", "啊～～～～～！！！")


def test_a_message_with_no_content_is_no_question_for_staff(oa_kb, client, user_token, make_user):  # noqa: F811
    """3,000 × “啊” went to staff's unanswered-questions queue as a question (“这个问题我还没学会，已经记下来”). A long
    run of one character, fillers or only 请问-words is no question: a prompt to say what is needed, nothing queued."""
    before = _unanswered(oa_kb)
    for i, text in enumerate(NOISE):
        reply = say(oa_kb, f"oChatsmallNoise{i}", text)
        assert "没学会" not in reply and "您是不是想问" not in reply, (text[:20], reply)
        assert "想了解" in reply or "需要" in reply, (text[:20], reply)
    h = user_token(make_user())
    body = _app(client, h, "啊" * 3000)
    assert body["decision"] == "smalltalk" and "没学会" not in body["reply"], body
    assert _unanswered(oa_kb) == before
    # Questions, however short, are still questions.
    assert "一网通办" in say(oa_kb, "oChatsmallNoiseNot", "营业执照丢了怎么办啊啊啊")


# ---------------------------------------------------------------------------------------------- 4. one thanks


def test_thanks_reads_the_same_whichever_path_answers_it(oa_kb, client, user_token, make_user):  # noqa: F811
    """“谢谢” (the router's fixed word) got “不客气！还有问题随时找小二～”, “谢谢小二” (the knowledge base's small talk)
    “不客气！还有什么需要，随时找我。”: two voices. One reply now, in both chats; so for goodbye."""
    h = user_token(make_user())
    for words in (("谢谢", "谢谢小二", "谢谢你的帮助", "多谢啦"), ("再见", "再见小二", "拜拜啦")):
        replies = {say(oa_kb, "oChatsmallThanks", w) for w in words}
        replies |= {_app(client, h, w)["reply"] for w in words}
        assert len(replies) == 1, replies
