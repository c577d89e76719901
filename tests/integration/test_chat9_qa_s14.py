"""QA of the bot's conversations (fourteenth pass, ninth look at the chat): the findings the eighth look left open,
through the real (signed, encrypted) webhook."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.integration.test_chat2_qa_s11 import (
    appeal_of,  # noqa: F401  (a follower's appeal, acted on by staff)
)
from tests.integration.test_chat8_qa_s14 import (
    FINANCE,
    LOCATION,
    STICKER,
    _draft_to,
    _forget_state,
    _offered_finance,
)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.db import session_scope


def _unanswered(application) -> int:
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    with application.app_context(), session_scope() as s:
        return s.scalar(select(func.count(UnansweredQuestion.id)))


def test_a_location_or_sticker_while_rating_reminds_of_the_question(oa_kb, appeal_of):  # noqa: F811
    """“问题解决了吗？” and the user sends a sticker (or their location): “小二暂时只看得懂文字和图片哦”, nothing said of
    the rating waiting for its answer. The reply now says the rating is not submitted yet and what to answer."""
    openid = "oChat9RateSticker"
    number = appeal_of(openid, "resolve", resolution="已协调物业修好路灯")
    assert "问题解决了吗" in say(oa_kb, openid, "评价")
    reply = say(oa_kb, openid, **STICKER)
    assert "评价" in reply and number in reply and "还没有提交" in reply and "回复 1" in reply, reply
    reply = say(oa_kb, openid, **LOCATION)
    assert "新华路1号" in reply and "还没有提交" in reply and "回复 1" in reply, reply
    assert "打分" in say(oa_kb, openid, "1")  # the rating goes on
    reply = say(oa_kb, openid, **STICKER)
    assert "还没有提交" in reply and "1～5" in reply, reply
    assert "想对我们说" in say(oa_kb, openid, "5")
    assert "感谢您的评价" in say(oa_kb, openid, "跳过")


def test_a_location_while_supplementing_is_the_material_asked(oa_kb, appeal_of):  # noqa: F811
    """Asked “请提供路灯的具体位置”, the user sends their location: “收到您的位置…请用文字告诉小二”, as if nothing were
    under way; the supplement waiting was not mentioned. Then (s14) the reminder said what to send, yet the place sent
    still never reached staff. Now (s15, appeals10) the location is the supplement, submitted like a text."""
    openid = "oChat9SupLocation"
    number = appeal_of(openid, "request_info", note="请提供路灯的具体位置")
    say(oa_kb, openid, "补充")
    reply = say(oa_kb, openid, **LOCATION)
    assert "新华路1号" in reply and number in reply and "已补充" in reply and "还没有提交" not in reply, reply


def test_a_suggested_question_typed_in_full_keeps_the_list(oa_kb):  # noqa: F811
    """“您是不是想问” 1-3, the user types the first question in full (answered), then “3” for the third: the list was
    gone, and “3” opened menu item 3 (白领活动), “2” started an appeal. The list now stays, as after “1”."""
    openid = "oChat9TypedInFull"
    _offered_finance(oa_kb, openid)
    assert "您是不是想问" not in say(oa_kb, openid, FINANCE[0])
    reply = say(oa_kb, openid, "3")
    assert "服务专员" in reply and "活动" not in reply[:20], reply
    reply = say(oa_kb, openid, "2")
    assert "质押" in reply and "企业名称" not in reply and "描述" not in reply, reply


def test_a_problem_after_the_draft_expired_is_not_an_unanswered_question(oa_kb):  # noqa: F811
    """The draft ran out at the description step and the user sends the problem: the bot says the draft expired (and
    how to file it), yet the problem also went to staff's queue of questions the knowledge base should learn."""
    openid = "oChat9ExpiredProblem"
    _draft_to(oa_kb, openid, ())
    _forget_state(oa_kb, openid)
    reply = say(oa_kb, openid, "隔壁工地晚上十点还在施工吵得睡不着")
    assert "没有提交" in reply and "第 1/5 步" in reply and "记下来" not in reply, reply
    assert _unanswered(oa_kb) == 0
    # the problem is kept for a new draft, as after any answer the bot could not give
    assert "施工" in say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "取消")
    assert "记下来" in say(oa_kb, openid, "楼下餐馆油烟太大熏到办公室")  # later: a question as any other
    assert _unanswered(oa_kb) == 1


def test_the_supplement_again_and_the_expired_draft_are_read_in_one_round_trip(oa_kb, appeal_of, monkeypatch):  # noqa: F811
    """Every knowledge-base answer read `wx:supplemented:*` and `wx:draftstep:*` one after the other: one round trip
    now. What each says stays (the supplement sent again, the expired draft's note once)."""
    import redis as redis_lib

    openid = "oChat9OneTrip"
    number = appeal_of(openid, "request_info", note="请提供路灯的具体位置")
    assert "已补充" in say(oa_kb, openid, "补充：在园区东门口第三根路灯")
    _draft_to(oa_kb, openid, ("办公室空调坏了一周了，物业一直不管",))
    _forget_state(oa_kb, openid)

    calls: list[str] = []
    real = redis_lib.Redis.execute_command

    def counting(self, *args, **kw):
        calls.append(" ".join(str(a) for a in args[:2]))
        return real(self, *args, **kw)

    monkeypatch.setattr(redis_lib.Redis, "execute_command", counting)  # a pipeline's commands do not come here
    reply = say(oa_kb, openid, "在园区东门口第三根路灯")
    monkeypatch.undo()
    assert "已经提交" in reply and number in reply and "没有提交" in reply and "第 2/5 步" in reply, reply
    alone = [c for c in calls if "wx:supplemented:" in c or "wx:draftstep:" in c]
    assert not alone, alone  # read together, in one pipeline
    assert "没有提交" not in say(oa_kb, openid, "外籍人才工作许可怎么办")
    assert "已经提交" in say(oa_kb, openid, "在园区东门口第三根路灯。")
