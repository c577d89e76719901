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
         "我们想咨询", "那个呢", "啊～～～～～！！！", "emmm")


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
    assert "营业执照" in say(oa_kb, "oChatsmallNoiseNot", "营业执照丢了怎么办啊啊啊")
    assert "小二在呢" not in say(oa_kb, "oChatsmallNoiseNot", "啊" * 400 + "营业执照丢了怎么办")
    assert "小二在呢" not in say(oa_kb, "oChatsmallNoiseNot", "税")  # one character once: left to the search


# ---------------------------------------------------------------------------------------------- 4. one thanks


def test_thanks_reads_the_same_whichever_path_answers_it(oa_kb, client, user_token, make_user):  # noqa: F811
    """“谢谢” (the router's fixed word) got “不客气！还有问题随时找小二～”, “谢谢小二” (the knowledge base's small talk)
    “不客气！还有什么需要，随时找我。”: two voices. One reply now, in both chats; so for goodbye."""
    h = user_token(make_user())
    for words in (("谢谢", "谢谢小二", "谢谢你的帮助", "多谢啦"), ("再见", "再见小二", "拜拜啦")):
        replies = {say(oa_kb, "oChatsmallThanks", w) for w in words}
        replies |= {_app(client, h, w)["reply"] for w in words}
        assert len(replies) == 1, replies


# ---------------------------------------------------------------------------------------------- 5. the intake (QA)


def test_fillers_are_no_description_nor_enterprise_name(oa_kb, client, user_token, make_user):  # noqa: F811
    """我要反映, then “啊啊啊啊啊” was taken as the problem (five characters, letters), 3,000 × “啊” as the enterprise's
    name (cut to 200 and shown whole in the summary), and “不对” there as the name too: staff got an appeal about
    “啊啊啊啊啊” from “企业：不对”. Each is asked again now; the mini-program's form refuses such a description alike."""
    openid = "oChatsmallIntakeNoise"
    say(oa_kb, openid, "我要反映")
    for text in ("啊啊啊啊啊", "嗯嗯嗯嗯嗯嗯", "啊" * 1500):
        reply = say(oa_kb, openid, text)
        assert "企业名称" not in reply and "具体" in reply, (text[:10], reply)
    assert "企业名称" in say(oa_kb, openid, "楼道里的灯坏了两个星期了")
    for text in ("啊" * 3000, "不对", "呃呃呃呃"):
        reply = say(oa_kb, openid, text)
        assert "联系人" not in reply and "企业名称" in reply, (text[:10], reply)
    assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司，新华大厦")
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "问题：楼道里的灯坏了两个星期了" in summary and "企业：上海某某科技有限公司" in summary, summary
    # “我要反映：啊啊啊啊啊” in one message: asked to describe it
    reply = say(oa_kb, "oChatsmallIntakeNoiseOne", "我要反映：啊啊啊啊啊啊")
    assert "描述" in reply and "第 1 步" not in reply, reply
    resp = client.post("/api/v1/appeals", json={"content": "啊啊啊啊啊啊啊", "contact_name": "张三",
                                                "contact_phone": "13800138000"},
                       headers=user_token(make_user()))
    assert resp.status_code == 422 and "content" in resp.get_json().get("fields", {}), resp.get_json()


def test_give_up_said_in_the_users_words_cancels_the_draft(oa_kb):  # noqa: F811
    """Every step says “回复“取消”放弃”: “放弃” at the enterprise step became the enterprise's name, “我不想反映了” at the
    photo step got the photo prompt again, “放弃吧” at the confirmation “诉求还没有提交哦”. They drop the draft now."""
    steps = ("办公室空调坏了一周了", "上海某某科技有限公司", "张三 13800138000", "跳过")
    for i, (at, text) in enumerate(((1, "放弃"), (3, "我不想反映了"), (4, "放弃吧"), (2, "不想登记了"))):
        openid = f"oChatsmallGiveUp{i}"
        say(oa_kb, openid, "我要反映")
        for answer in steps[:at]:
            say(oa_kb, openid, answer)
        assert "已取消" in say(oa_kb, openid, text), text
    # “不想填” at the enterprise step still skips the name only
    openid = "oChatsmallGiveUpNot"
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, steps[0])
    assert "联系人" in say(oa_kb, openid, "不想填")


def test_a_photo_while_the_draft_is_put_aside_is_kept_with_it(oa_kb):  # noqa: F811
    """“？” (the menu) at a step puts the draft aside; a photo next got “如果是想反映问题，请回复“我要反映”” and was lost,
    while a draft waited. It is kept with the draft now, and the user told how to go on; “继续” resumes the step."""
    from tests.integration.test_chat2_qa_s9 import photo

    openid = "oChatsmallPausedPhoto"
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "办公室空调坏了一周了")
    assert "已为您保留" in say(oa_kb, openid, "？")
    reply = photo(oa_kb, openid)
    assert "共 1 张" in reply and "第 2/5 步" in reply and "继续" in reply and "回复“我要反映”" not in reply, reply
    assert "企业名称" in say(oa_kb, openid, "继续")
    say(oa_kb, openid, "上海某某科技有限公司")
    say(oa_kb, openid, "张三 13800138000")
    assert "照片：1 张" in say(oa_kb, openid, "跳过")
