"""QA of the bot's conversation in both channels (twelfth pass, fourth look): the Official Account webhook and the
mini-program's in-app chat (POST /api/v1/chat). A number means what the last numbered list the bot showed says it
means; words that only make sense inside a flow get a plain answer outside one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from handlers.bot import KB_PROMPT
from tests.integration.appeals.test_appeal_chat_followup import chat  # noqa: F401  (the follow-up's fixture)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.bot import _memory_key
from wxapp_backend.knowledge_store.models import ChatTurn


def _app(client, headers, text: str, session: str | None = None) -> dict:
    body = {"text": text} if session is None else {"text": text, "session": session}
    resp = client.post("/api/v1/chat", json=body, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def _user_of(openid: str) -> int:
    from wxapp_backend.auth.models import User

    with session_scope() as s:
        return s.scalar(select(User.id).where(User.oa_openid == openid))


def _two_activities(make_activity):
    soon = datetime.now(UTC) + timedelta(days=2)
    yoga = make_activity(title="午间一小时·瑜伽", category="lunch_hour", address="新华大厦 3 楼", capacity=20,
                         starts_at=soon, description="在大堂练习舒缓瑜伽，请自带瑜伽垫。")
    concert = make_activity(title="楼宇音乐会·弦乐四重奏", category="concert", address="幸福大楼大堂", capacity=50,
                            starts_at=soon + timedelta(days=1))
    return yoga, concert


def test_a_number_after_the_activity_list_picks_that_activity_in_the_wechat_chat(oa_kb, make_activity,  # noqa: F811
                                                                                   redis_client):
    """After “活动” listed “1. 午间一小时·瑜伽 2. 楼宇音乐会…”, a “1” was main-menu item 1 (政策问答's prompt) and a
    “2” started the appeal intake: the user meant the activity. A number now picks that activity (its details and how
    to register) as “您是不是想问” choices are picked; once the menu is shown, its digits are meant again."""
    _two_activities(make_activity)
    openid = "oActivityPick"
    say(oa_kb, openid, "你好")
    listing = say(oa_kb, openid, "活动")
    assert "1. 午间一小时·瑜伽" in listing, listing
    reply = say(oa_kb, openid, "1")
    assert reply != KB_PROMPT and "午间一小时·瑜伽" in reply and "自带瑜伽垫" in reply, reply
    assert "报名" in reply and "小程序" in reply and "新华大厦 3 楼" in reply, reply
    reply = say(oa_kb, openid, "第2个")
    assert "弦乐四重奏" in reply and "登记诉求" not in reply, reply
    reply = say(oa_kb, openid, "5")  # beyond the list: says which numbers, no “没看明白”
    assert "1～2" in reply, reply
    say(oa_kb, openid, "菜单")
    assert say(oa_kb, openid, "1") == KB_PROMPT
    # A category's list (“报名午间一小时”) and the user's own (“我的报名”) are numbered the same way.
    listing = say(oa_kb, openid, "报名午间一小时")
    assert "1. 午间一小时·瑜伽" in listing, listing
    assert "自带瑜伽垫" in say(oa_kb, openid, "1")
    redis_client.delete(_memory_key("oa", openid))  # a quarter of an hour later: not the menu's 我要反映 either
    reply = say(oa_kb, openid, "2")
    assert "活动已经过期" in reply and "登记诉求" not in reply, reply


def test_a_number_after_my_registrations_picks_it_in_both_chats(oa_kb, make_activity, client, user_token,  # noqa: F811
                                                                  make_user):
    from wxapp_backend.activities.services import register

    yoga, concert = _two_activities(make_activity)
    openid = "oMyRegPick"
    say(oa_kb, openid, "你好")
    with session_scope() as s:
        register(s, activity_id=concert.id, user_id=_user_of(openid))
    assert "1. 楼宇音乐会·弦乐四重奏" in say(oa_kb, openid, "我的报名")
    reply = say(oa_kb, openid, "1")
    assert "弦乐四重奏" in reply and "报名成功" in reply and reply != KB_PROMPT, reply

    user = make_user()
    with session_scope() as s:
        register(s, activity_id=yoga.id, user_id=user.id)
    h = user_token(user)
    assert "1. 午间一小时·瑜伽" in _app(client, h, "我的报名")["reply"]
    body = _app(client, h, "1")
    assert "自带瑜伽垫" in body["reply"] and "报名成功" in body["reply"] and body["decision"] == "guide", body


def test_a_number_after_the_activity_list_picks_that_activity_in_the_app_chat(make_activity, client, user_token,
                                                                            make_user):
    """The same in the mini-program's chat: “3” after the activity list was 白领活动 again, “1” the 政策问答 prompt,
    “4” 联系客服 (a hand-over)."""
    _two_activities(make_activity)
    h = user_token(make_user())
    assert "2. 楼宇音乐会" in _app(client, h, "活动")["reply"]
    body = _app(client, h, "2")
    assert "弦乐四重奏" in body["reply"] and body["decision"] == "guide", body
    body = _app(client, h, "１")
    assert "自带瑜伽垫" in body["reply"], body
    assert "1～2" in _app(client, h, "4")["reply"]  # not 联系客服
    _app(client, h, "菜单")
    assert _app(client, h, "1")["reply"] == KB_PROMPT
    # Anonymous callers with their own session too.
    assert "1. 午间一小时" in _app(client, {}, "活动", session="anon-session-1")["reply"]
    assert "自带瑜伽垫" in _app(client, {}, "1", session="anon-session-1")["reply"]


def test_a_second_digit_after_the_app_score_reply_is_not_a_new_score(chat, client, user_token):  # noqa: F811
    """In the app's chat “4” right after a 办结 notice is read as the score (“您是给诉求 … 打 4 分吧？…”); a second bare
    digit (“1”) was read as a new score (“1 分”) although nothing was asked: the WeChat chat reads it as the answer to
    its “问题解决了吗？”. The app's chat cannot take a rating: the second digit now gets where to rate, no new score."""
    h = user_token(chat.user)
    _, number = chat.resolved()
    body = _app(client, h, "4")
    assert "4 分" in body["reply"], body
    body = _app(client, h, "1")
    assert "1 分" not in body["reply"] and "非常不满意" not in body["reply"], body
    assert number in body["reply"] and "评价" in body["reply"] and body["decision"] == "guide", body
    # The menu shown since: its digits again.
    _app(client, h, "菜单")
    assert _app(client, h, "1")["reply"] == KB_PROMPT


def test_cancel_with_nothing_under_way_gets_a_plain_answer(oa_kb, client, user_token, make_user):  # noqa: F811
    """A bare “取消” (“算了”, “不用了”) with no intake, rating or supplement under way got “您是不是想问” and a list of
    unrelated entries, in both chats, and was logged as a question. It now gets a plain “没有进行中的事项”."""
    openid = "oCancelNothing"
    say(oa_kb, openid, "你好")
    h = user_token(make_user())
    for text in ("取消", "算了", "不用了", "取消。"):
        reply = say(oa_kb, openid, text)
        assert "没有进行中" in reply and "您是不是想问" not in reply, (text, reply)
        body = _app(client, h, text)
        assert "没有进行中" in body["reply"] and body["decision"] == "smalltalk", (text, body)
    with session_scope() as s:
        logged = s.scalars(select(ChatTurn.question).where(ChatTurn.question.in_(("取消", "算了", "不用了")))).all()
    assert logged == []
    # Inside an intake “取消” still drops the draft; a draft put aside by the menu is not “nothing under way”.
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "菜单")
    reply = say(oa_kb, openid, "不用了")
    assert "未填完的诉求" in reply and "没有进行中" not in reply, reply
    assert "已取消" in say(oa_kb, openid, "取消")
    assert "没有进行中" in say(oa_kb, openid, "算了")


def test_choices_offered_before_logging_in_stay_with_the_session(oa_kb, client, user_token, make_user):  # noqa: F811
    """An anonymous caller got “您是不是想问” choices, then logged in (the app now sends its token with the same
    session): “2” was main-menu item 2 (我要反映), the choices lost with the anonymous key. They now follow the caller."""
    session = "before-login-0001"
    assert _app(client, {}, "融资", session=session)["decision"] == "suggest"
    h = user_token(make_user())
    body = _app(client, h, "2", session=session)
    assert body["decision"] == "answer" and "质押" in body["reply"], body


def test_a_person_asked_for_during_the_intake_puts_the_draft_aside(oa_kb, chat):  # noqa: F811
    """“人工” (or “我要转人工”) in the middle of the appeal intake handed over and left the draft waiting at its step:
    after the talk with the person the next words were taken as the step's answer (“开办企业需要哪些材料” got “没有认出
    手机号”; “我要转人工” at the enterprise step became the enterprise's name). The draft is now put aside as the
    menu puts it aside, and the hand-over note says so; “继续” resumes it."""
    from handlers.replies import Transfer

    openid = "oPersonInDraft"
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "园区门口的路灯坏了一个月了没人修")
    say(oa_kb, openid, "上海测试科技有限公司")
    say(oa_kb, openid, "人工")
    reply = say(oa_kb, openid, "开办企业需要哪些材料")
    assert "没有认出手机号" not in reply and "一网通办" in reply, reply  # answered, as after the menu
    assert "联系人" in say(oa_kb, openid, "继续")
    assert "如有现场照片" in say(oa_kb, openid, "张三 13800138000")

    chat("我要反映")
    chat("办公楼空调不制冷，物业一直不处理")
    handed = chat("我要转人工")
    assert isinstance(handed, Transfer) and "第 2/5 步" in handed.note and "继续" in handed.note, handed
    reply = chat("继续")
    assert "企业名称" in reply or "登记在" in reply, reply


def test_the_same_unanswered_question_sent_again_counts_once(oa_kb):  # noqa: F811
    """An impatient user who sends the question the bot could not answer three times in a row counted as three
    askers in staff's unanswered queue (“被问 3 次”), ahead of questions three different people asked. A repeat by
    the same user within ten minutes now counts once; another user asking it counts again."""
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    question = "楼下新开的奶茶店周末几点开门营业"
    for _ in range(3):
        assert "没学会" in say(oa_kb, "oRepeatAsker", question)
    say(oa_kb, "oOtherAsker", question)
    with oa_kb.app_context(), session_scope() as s:
        row = s.scalars(select(UnansweredQuestion).where(UnansweredQuestion.text == question)).one()
        assert row.count == 2, row.count
        assert len(s.scalars(select(ChatTurn).where(ChatTurn.question == question)).all()) == 4  # every turn logged
