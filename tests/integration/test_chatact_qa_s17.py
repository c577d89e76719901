"""QA of what white-collar workers do with activities in the WeChat chat (seventeenth pass, chat activities):
“活动” and “我的报名” through the real (signed, encrypted) webhook, as a demanding office worker uses them: long
titles with emoji, more activities than one reply lists, a follower who never logged in to the mini-program, dates
said as 今天 / 明天, an activity cancelled after the list was shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.activities import services as activity_services
from wxapp_backend.activities.models import Activity
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

LONG_TITLE = "🎉🧘" + "午间一小时·瑜伽与冥想" * 9  # 100 characters, emoji first: the column's length
LONG_PLACE = "长宁区新华路" + "某某大厦二十三楼多功能厅" * 16


def _linked_follower(make_user, openid: str) -> int:
    """A follower already joined to their mini-program login (one row with both openids)."""
    return make_user(openid="oMini" + openid, oa_openid=openid, unionid="u" + openid).id


def _register(user_id: int, activity_id: int) -> None:
    with session_scope() as s:
        activity_services.register(s, activity_id=activity_id, user_id=user_id)


def test_a_list_of_long_titles_fits_one_reply_with_every_number_and_the_hint(oa_kb, make_activity,  # noqa: F811
                                                                              make_user):
    """Five activities with 100-character titles (emoji in them) and long addresses: the passive reply was cut by the
    2048-byte limit after the third (“3. 🎉…超长标…”), items 4 and 5 and the “回复序号” line lost, while “4” and “5”
    still picked activities the user never saw. Each line is now kept short (the detail has it in full)."""
    now = datetime.now(UTC)
    made = [make_activity(title=f"{LONG_TITLE[:96]}第{i}期", address=LONG_PLACE, capacity=30,
                          starts_at=now + timedelta(days=2, hours=i)) for i in range(1, 6)]
    openid = "oChatactLong"
    reply = say(oa_kb, openid, "活动")
    assert len(reply.encode()) <= REPLY_TEXT_MAX_BYTES, len(reply.encode())
    assert "5. 🎉🧘" in reply and "回复序号（1～5）" in reply and "我的报名" in reply, reply
    detail = say(oa_kb, openid, "5")
    assert made[4].title in detail and "剩 30 个" in detail, detail
    # 我的报名 the same, for someone registered for all five (emoji are four bytes each).
    user_id = _linked_follower(make_user, "oChatactLongMine")
    for a in made:
        _register(user_id, a.id)
    reply = say(oa_kb, "oChatactLongMine", "我的报名")
    assert len(reply.encode()) <= REPLY_TEXT_MAX_BYTES, len(reply.encode())
    assert "5. 🎉🧘" in reply and "回复序号（1～5）" in reply and "签到码" in reply, reply


def test_more_activities_than_one_reply_lists_says_where_the_rest_are(oa_kb, make_activity, make_user):  # noqa: F811
    """Eight activities open: “活动” listed five and said nothing of the other three (the worker took the five for all
    there is); “我的报名” with seven registrations the same. Both now say how many more there are and where."""
    now = datetime.now(UTC)
    made = [make_activity(title=f"楼宇音乐会第{i}场", starts_at=now + timedelta(days=2, hours=i)) for i in range(8)]
    reply = say(oa_kb, "oChatactMore", "活动")
    assert "5. 楼宇音乐会第4场" in reply and "第5场" not in reply, reply
    assert "还有 3 个" in reply and "小程序" in reply, reply
    user_id = _linked_follower(make_user, "oChatactMoreMine")
    for a in made[:7]:
        _register(user_id, a.id)
    reply = say(oa_kb, "oChatactMoreMine", "我的报名")
    assert "5. 楼宇音乐会第4场" in reply and "还有 2 个" in reply and "“我的报名”" in reply, reply


def test_my_registrations_of_a_follower_never_logged_in_to_the_mini_program(oa_kb, make_activity,  # noqa: F811
                                                                            make_user):
    """A follower who never logged in to the mini-program (their row is the placeholder “oa:…”, no unionid link yet)
    asks “我的报名”: “您目前没有报名的活动” — yet registrations are made in the mini-program, under the login the chat
    cannot see yet, so someone registered there was told they were not. It now says the chat cannot see them yet and
    where to look. A follower linked to their mini-program login sees their registrations."""
    reply = say(oa_kb, "oChatactNeverLoggedIn", "我的报名")
    assert "没有报名" not in reply and "小程序" in reply and "登录" in reply and "我的报名" in reply, reply
    a = make_activity(title="健康讲座·颈椎养护")
    user_id = _linked_follower(make_user, "oChatactLinked")
    _register(user_id, a.id)
    reply = say(oa_kb, "oChatactLinked", "我的报名")
    assert "1. 健康讲座·颈椎养护" in reply and "报名成功" in reply, reply


def test_the_list_says_today_and_tomorrow(oa_kb, make_activity):  # noqa: F811
    """Times were shown as “12月8日（周二）19:00” only: someone reading the chat at lunch had to work out that this was
    tonight or tomorrow. An activity starting today (Shanghai calendar) or tomorrow now says 今天 / 明天."""
    shanghai = activity_services.SHANGHAI
    now = datetime.now(UTC)
    local = now.astimezone(shanghai)
    tomorrow_noon = datetime(local.year, local.month, local.day, 12, 0, tzinfo=shanghai) + timedelta(days=1)
    later = datetime(local.year, local.month, local.day, 12, 0, tzinfo=shanghai) + timedelta(days=5)
    make_activity(title="明天的午间瑜伽", starts_at=tomorrow_noon.astimezone(UTC))
    make_activity(title="下周的沙龙", starts_at=later.astimezone(UTC))
    soon = now + timedelta(minutes=30)
    today = soon.astimezone(shanghai).date() == local.date()  # (not so just before midnight)
    make_activity(title="今晚的音乐会", starts_at=soon)
    reply = say(oa_kb, "oChatactDays", "活动")
    assert f"明天的午间瑜伽：{tomorrow_noon.month}月{tomorrow_noon.day}日（明天）12:00" in reply, reply
    weekday = "一二三四五六日"[later.weekday()]
    assert f"下周的沙龙：{later.month}月{later.day}日（周{weekday}）12:00" in reply, reply
    if today:
        assert f"今晚的音乐会：{local.month}月{local.day}日（今天）" in reply, reply
    else:  # run in the half hour before Shanghai's midnight: the concert starts tomorrow, still first in the list
        assert f"今晚的音乐会：{soon.astimezone(shanghai).month}月{soon.astimezone(shanghai).day}日（明天）" in reply, reply
    detail = say(oa_kb, "oChatactDays", "2")  # the earliest first: the concert (in 30 minutes), then the yoga
    assert "时间：" in detail and "（明天）12:00 - 15:00" in detail, detail


def test_an_activity_cancelled_after_the_list_was_shown(oa_kb, make_activity):  # noqa: F811
    """The list showed an activity, staff cancelled it, the worker replied its number: the detail read as an open
    activity (“名额：剩 10 个（共 10 个）”) until its last line. It now says at once that it is cancelled, without
    seats; the other numbers still work."""
    a = make_activity(title="楼宇音乐会·爵士之夜")
    make_activity(title="午间一小时·插花", starts_at=datetime.now(UTC) + timedelta(days=3))
    openid = "oChatactCancelled"
    assert "1. 楼宇音乐会·爵士之夜" in say(oa_kb, openid, "活动")
    with session_scope() as s:
        s.get(Activity, a.id).status = "cancelled"
    reply = say(oa_kb, openid, "1")
    assert "已取消" in reply.splitlines()[0] and "名额" not in reply and "剩 10 个" not in reply, reply
    assert "回复“活动”" in reply, reply
    assert "午间一小时·插花" in say(oa_kb, openid, "2")


def test_more_after_the_list_points_to_the_rest(oa_kb, make_activity):  # noqa: F811
    """“更多” / “下一页” after the list (which says some were not listed): “抱歉，这个问题我还没学会”, and the word sat in
    staff's queue of unanswered questions. It now says where the rest are, and the numbers still pick from the list;
    “更多” with no list shown is the knowledge base's as before."""
    from tests.integration.test_chat9_qa_s14 import _unanswered

    now = datetime.now(UTC)
    for i in range(7):
        make_activity(title=f"健身课第{i}节", starts_at=now + timedelta(days=2, hours=i))
    openid = "oChatactMoreWord"
    assert "还有 2 个" in say(oa_kb, openid, "活动")
    before = _unanswered(oa_kb)
    for text in ("更多", "下一页", "还有吗？"):
        reply = say(oa_kb, openid, text)
        assert "没学会" not in reply and "小程序“白领活动”" in reply and "回复序号" in reply, (text, reply)
    assert _unanswered(oa_kb) == before
    assert "健身课第2节" in say(oa_kb, openid, "3")
