"""我的诉求 / 评价 / 补充 in the chat (handlers/appeal_followup.py), with real Redis state and the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from handlers import appeal_followup as followup
from handlers import appeal_intake as intake
from handlers.router import Context, Router
from wxapp_backend.appeals import services
from wxapp_backend.appeals.models import Appeal, AppealRating, AppealTask
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.wechat.messages import normalise


@pytest.fixture
def chat(redis_client, make_user, make_staff, make_building, make_enterprise, app_ctx):
    building = make_building(name="新华大厦")
    enterprise = make_enterprise(name="上海测试科技有限公司", building_id=building.id)
    user = make_user(enterprise_id=enterprise.id, binding_state="verified")
    other = make_user(enterprise_id=enterprise.id, binding_state="verified")
    admin = make_staff(role="admin")
    staff = Actor("staff", admin.id, role="admin", name="管理员")
    router = followup.install(intake.install(Router()))  # the bot's order: the intake's rules first

    def say(content=None, *, msg_type="text", media_id=None, user_id=user.id, msg_id=None, recognition=None):
        raw = {"ToUserName": "gh_x", "FromUserName": f"o-{user_id}", "CreateTime": "1700000000",
               "MsgType": msg_type, "MsgId": msg_id or str(abs(hash((content, media_id, user_id))))}
        if content is not None:
            raw["Content"] = content
        if recognition is not None:
            raw["Recognition"], raw["Format"] = recognition, "amr"
        if media_id:
            raw["MediaId"], raw["PicUrl"] = media_id, "http://example.invalid/p.jpg"
        ctx = Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=user_id)
        reply = router.dispatch(ctx)
        return getattr(reply, "text", reply)  # a Transfer (人工) has no text

    def submit(content="我们公司的增值税发票开不出来，税控盘坏了", owner=None):
        with session_scope() as s:
            appeal, _ = services.submit_appeal(s, owner or user.id, services.Intake(
                content=content, contact_name="张三", contact_phone="13800138000"))
            return appeal.id, appeal.number

    def act(appeal_id, action, **data):
        with session_scope() as s:
            return services.perform(s, staff, appeal_id, action, data).status

    def resolved(content="我们公司的增值税发票开不出来，税控盘坏了", owner=None):
        appeal_id, number = submit(content, owner)
        act(appeal_id, "accept")
        act(appeal_id, "resolve", resolution="已协调税务所更换税控盘")
        return appeal_id, number

    say.user, say.other, say.submit, say.act, say.resolved = user, other, submit, act, resolved
    return say


def _appeal(appeal_id):
    with session_scope() as s:
        return s.get(Appeal, appeal_id)


def _ratings(appeal_id):
    with session_scope() as s:
        return list(s.scalars(select(AppealRating).where(AppealRating.appeal_id == appeal_id)))


def test_status_lists_own_appeals_with_what_to_do(chat):
    assert chat("我的诉求") == followup.NONE_YET
    open_id, open_no = chat.submit("园区门口总有车辆乱停乱放，影响出入")
    done_id, done_no = chat.resolved()
    info_id, info_no = chat.submit("办公楼空调不制冷，物业一直不处理")
    chat.act(info_id, "accept")
    chat.act(info_id, "request_info", note="请提供物业合同首页")
    _, someone_elses = chat.submit("别人的诉求，不该出现在列表里", owner=chat.other.id)
    listing = chat("我的诉求")
    assert "共 3 条" in listing
    assert f"{open_no}【已提交】" in listing and "承诺" in listing
    assert f"评价 {done_no}" in listing
    assert f"补充 {info_no}" in listing and "物业合同" in listing
    assert someone_elses not in listing


def test_rating_in_three_answers_closes_the_appeal_and_is_audited(chat):
    appeal_id, number = chat.resolved()
    ask = chat("评价")  # the only appeal waiting for a rating
    assert number in ask and "已协调税务所" in ask and "回复 1 已解决" in ask
    assert chat("也许吧") == followup.HINT_RESOLVED
    assert chat("1") == followup.ASK_STARS
    assert chat("6") == followup.HINT_STARS
    assert chat("５") == followup.ASK_COMMENT  # a full-width digit from a phone keyboard
    assert chat("跳过") == followup.RATED_CLOSED.format(number=number)  # not the intake's "lost answer"
    [rating] = _ratings(appeal_id)
    assert rating.resolved and rating.satisfaction == 5 and rating.comment == "" and rating.user_id == chat.user.id
    assert _appeal(appeal_id).status == "closed"
    with session_scope() as s:
        actions = set(s.scalars(select(AuditLog.action).where(AuditLog.target_id == str(appeal_id))))
    assert "appeal.rated" in actions
    assert "当前为“已关闭”" in chat(f"评价 {number}")
    assert len(_ratings(appeal_id)) == 1


def test_not_resolved_with_a_bad_score_reopens_and_opens_rectification(chat):
    appeal_id, number = chat.resolved()
    chat(f"评价 {number.lower()}")  # the number as typed, in lower case
    chat("2")
    chat("1")
    reply = chat("税控盘还是用不了，也没人回电话")
    assert reply == followup.RATED_REOPENED.format(number=number) + followup.RATED_BAD
    appeal = _appeal(appeal_id)
    assert appeal.status == "in_progress" and appeal.round == 2
    [rating] = _ratings(appeal_id)
    assert not rating.resolved and rating.satisfaction == 1 and "税控盘" in rating.comment
    with session_scope() as s:
        assert s.scalar(select(AppealTask.id).where(AppealTask.appeal_id == appeal_id,
                                                    AppealTask.kind == "rectification")) is not None


def test_rating_refusals_are_explained(chat):
    assert chat("评价") == followup.NOTHING_TO_RATE
    open_id, open_no = chat.submit()
    assert "当前为“已提交”" in chat(f"评价 {open_no}")
    assert chat("评价 SQ20990101-0001") == followup.NOT_FOUND.format(number="SQ20990101-0001")
    _, theirs = chat.resolved(owner=chat.other.id)
    assert chat(f"评价 {theirs}") == followup.NOT_FOUND.format(number=theirs)  # someone else's: unknown
    first = chat.resolved()[1]
    second = chat.resolved("办公楼电梯坏了一周，一直没人修")[1]
    pick = chat("评价")
    assert "2 条待评价" in pick and first in pick and second in pick
    expired_id, expired_no = chat.resolved("楼道灯坏了很久")
    with session_scope() as s:
        s.get(Appeal, expired_id).resolved_at = utcnow() - timedelta(days=30)  # past 7 working days
    assert chat(f"评价 {expired_no}") == followup.RATING_OVER.format(number=expired_no)


def test_a_rating_overtaken_elsewhere_is_refused_and_the_flow_ends(chat):
    appeal_id, number = chat.resolved()
    chat("评价")
    chat("1")
    chat("4")
    # Meanwhile it was rated in the mini-program (pass 13: staff can no longer close it inside the rating window).
    with session_scope() as s:
        services.rate(s, chat.user.id, appeal_id, resolved=True, satisfaction=5)
    reply = chat("谢谢")
    assert reply.startswith("评价没有提交：")
    assert [r.satisfaction for r in _ratings(appeal_id)] == [5]  # the mini-program's only
    assert chat("1") != followup.ASK_STARS  # the flow is over: "1" is no longer a rating answer


def test_cancel_and_other_commands_leave_the_flow(chat):
    chat.resolved()
    chat("评价")
    assert chat("取消") == followup.CANCELLED
    chat("评价")
    assert "共 5 步" in chat("我要反映")  # starting an intake replaces the rating
    assert chat("1") != followup.ASK_STARS


def test_supplement_with_photos_resumes_the_clock(chat, run_jobs, standin):
    appeal_id, number = chat.submit("办公楼空调不制冷，物业一直不处理")
    chat.act(appeal_id, "accept")
    chat.act(appeal_id, "request_info", note="请提供物业合同首页")
    ask = chat("补充")
    assert number in ask and "物业合同首页" in ask
    assert chat(msg_type="image", media_id="MEDIA-S1") == followup.SUPPLEMENT_PHOTO.format(n=1)
    assert chat("好") == followup.SUPPLEMENT_NEEDS_TEXT  # said in passing: not a supplement
    assert chat("谢谢") == followup.SUPPLEMENT_NEEDS_TEXT
    assert chat("A") == followup.SUPPLEMENT_SHORT
    done = chat("合同首页已拍照，物业是某某物业公司")
    assert done.startswith(f"已补充，诉求 {number} 恢复办理。照片 1 张")
    appeal = _appeal(appeal_id)
    assert appeal.status == "accepted" and appeal.info_request == ""
    run_jobs()
    assert [i.get("media_id") for i in _appeal(appeal_id).images] == ["MEDIA-S1"]
    assert chat("补充") == followup.NOTHING_TO_SUPPLEMENT


def test_supplement_refusals(chat):
    assert chat("补充材料") == followup.NOTHING_TO_SUPPLEMENT
    appeal_id, number = chat.submit()
    assert "不需要补充材料" in chat(f"补充 {number}")
    assert chat("补充 SQ20990101-0001") == followup.NOT_FOUND.format(number="SQ20990101-0001")


def test_followup_is_plugged_into_the_bot_and_keeps_the_fast_path():
    import handlers

    assert "handlers.appeal_followup" in handlers.PLUGINS
    bot = handlers.build_router()
    names = [r.name for r in bot.rules]
    flow = len(names) - 1 - names[::-1].index("match:_in_flow")  # the intake has a rule of the same name
    # A rating's "1" / "2" and a supplement's text come before the menu digits and the knowledge base.
    assert flow < names.index("match:_menu_digit") < names.index("type:text")
    assert names.index("match:_rate_command") < names.index("type:text")
    assert names.index("match:_lost_answer") < flow  # and a rating's “跳过” is still the rating's (see above)


def test_status_in_the_middle_of_an_intake_keeps_the_draft(chat):
    chat.submit("园区门口总有车辆乱停乱放，影响出入")
    assert "共 5 步" in chat("我要反映")
    assert "名下" in chat("楼里的空调一直不制冷，物业不处理") or "企业名称" in chat("继续")
    listing = chat("我的诉求")
    assert "共 1 条" in listing  # answered, not taken as the enterprise's name
    assert "第 2/5 步" in chat("我要反映")  # the draft is still there, at the step it was


def test_any_sequence_of_answers_rates_at_most_once(chat):
    """Random answers after “评价” (right ones, wrong ones, repeats, commands, photos): never an error, never a
    second rating of the round, and the appeal's state always agrees with the rating."""
    import random

    rng = random.Random(20261205)
    words = ["1", "2", "3", "5", "６", "0", "已解决", "未解决", "跳过", "取消", "评价", "我的诉求", "好的", "",
             "还行吧，处理得挺快", "人工", "我要反映"]
    rated = 0
    for _ in range(40):
        appeal_id, number = chat.resolved()
        chat(f"评价 {number}")
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.1:
                reply = chat(msg_type="image", media_id=f"M{rng.randint(0, 9)}")
            else:
                reply = chat(rng.choice(words))
            assert reply is None or not isinstance(reply, str) or "Traceback" not in reply
        ratings = _ratings(appeal_id)
        appeal = _appeal(appeal_id)
        assert len(ratings) <= 1
        if ratings:
            rated += 1
            assert appeal.status == ("closed" if ratings[0].resolved else "in_progress")
        else:
            assert appeal.status == "resolved"
        chat("取消")
    assert 0 < rated < 40  # the sequences reach a rating, and not always


def test_two_messages_holding_the_same_last_step_rate_once(chat, redis_client):
    """Two quick answers to the last question, both read before either cleared the state: the second is refused
    by the service (one rating per round), and the user is told."""
    appeal_id, number = chat.resolved()
    chat(f"评价 {number}")
    chat("1")
    chat("4")
    raw = {"ToUserName": "gh_x", "FromUserName": f"o-{chat.user.id}", "CreateTime": "1700000000",
           "MsgType": "text", "Content": "跳过", "MsgId": "1"}
    ctx = Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=chat.user.id)
    state = ctx.state.get()
    assert state["step"] == "comment"
    first = followup._rate_submit(ctx, dict(state), "").text
    second = followup._rate_submit(ctx, dict(state), "").text
    assert first == followup.RATED_CLOSED.format(number=number)
    assert second.startswith("评价没有提交：") and "已经评价" in second
    assert len(_ratings(appeal_id)) == 1


def _held(chat, redis_client, n: int) -> list[Context]:
    """`n` photo messages that each read the state before any of them ran, as the webhook does: it reads the
    state in the same round trip that claims the message, and runs messages of one user side by side."""
    snapshot = redis_client.get(f"wx:conv:oa:o-{chat.user.id}")
    out = []
    for i in range(n):
        raw = {"ToUserName": "gh_x", "FromUserName": f"o-{chat.user.id}", "CreateTime": "1700000000",
               "MsgId": str(70 + i), "MsgType": "image", "MediaId": f"MEDIA-{i}", "PicUrl": "http://example.invalid/p"}
        ctx = Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=chat.user.id)
        ctx.extra["prefetched"] = {"state": snapshot}
        out.append(ctx)
    return out


def _needs_info(chat, request="请提供物业合同首页"):
    appeal_id, number = chat.submit("办公楼空调不制冷，物业一直不处理")
    chat.act(appeal_id, "accept")
    chat.act(appeal_id, "request_info", note=request)
    return appeal_id, number


def test_photos_sent_together_are_all_kept(chat, redis_client, run_jobs, standin):
    """WeChat delivers photos sent together as concurrent messages: each read the state before any wrote it."""
    appeal_id, _ = _needs_info(chat)
    chat("补充")
    photos = _held(chat, redis_client, 4)
    replies = [followup.step(ctx).text for ctx in photos]
    assert replies[-1] == followup.SUPPLEMENT_PHOTO.format(n=4)
    assert chat("合同首页已拍照，物业是某某物业公司").startswith("已补充")
    run_jobs()
    assert sorted(i.get("media_id") for i in _appeal(appeal_id).images) == [f"MEDIA-{i}" for i in range(4)]


def test_a_photo_after_the_submission_does_not_bring_the_flow_back(chat, redis_client):
    _needs_info(chat)
    chat("补充")
    [late] = _held(chat, redis_client, 1)  # read before the text below submitted
    assert chat("合同首页已拍照，物业是某某物业公司").startswith("已补充")
    assert followup.step(late).text == followup.LOST
    assert redis_client.get(f"wx:conv:oa:o-{chat.user.id}") is None  # nothing written back


def test_photos_then_done_word_submit_the_photos(chat, run_jobs, standin):
    appeal_id, number = _needs_info(chat)
    chat("补充")
    chat(msg_type="image", media_id="MEDIA-P")
    assert chat("好了").startswith(f"已补充，诉求 {number} 恢复办理。照片 1 张")
    assert _appeal(appeal_id).status == "accepted"
    from wxapp_backend.appeals.models import AppealEvent

    with session_scope() as s:
        notes = list(s.scalars(select(AppealEvent.note).where(AppealEvent.appeal_id == appeal_id,
                                                               AppealEvent.action == "supplemented")))
    assert notes == ["企业补充：" + followup.SUPPLEMENT_PHOTOS_ONLY.format(n=1)]


def test_person_mid_rating_ends_the_rating(chat):
    from handlers.replies import Transfer

    appeal_id, number = chat.resolved()
    chat(f"评价 {number}")
    chat("1")
    chat("5")
    assert isinstance(chat("人工"), Transfer)
    assert chat("你好") is None  # no longer the rating's comment (this test router has no greeting rule)
    assert _ratings(appeal_id) == []


def test_rate_or_supplement_during_an_intake_draft_keeps_the_draft(chat):
    chat.resolved()
    _needs_info(chat)
    assert "共 5 步" in chat("我要反映")
    chat("楼里的空调一直不制冷，物业不处理")
    assert chat("评价") == followup.DRAFT_FIRST.format(n=2, cmd="评价")
    assert chat("补充 sq20990101-0001") == followup.DRAFT_FIRST.format(n=2, cmd="补充")
    assert "第 2/5 步" in chat("我要反映")  # not taken as the enterprise's name, and the draft is as it was


def test_voice_answers_in_a_rating(chat):
    appeal_id, number = chat.resolved()
    chat(f"评价 {number}")

    def voice(recognition):
        raw_reply = chat(msg_type="voice", media_id="V1", recognition=recognition)
        return raw_reply

    assert voice("已解决。") == followup.ASK_STARS
    heard = voice("")
    assert heard.startswith(followup.NOT_HEARD) and followup.ASK_STARS in heard  # and what waits
    assert voice("不知道。") == followup.HINT_STARS  # (“五” is 5 now, as numbered choices read Chinese numerals)
    assert voice("4") == followup.ASK_COMMENT
    assert voice("师傅很耐心，谢谢。") == followup.RATED_CLOSED.format(number=number)
    [rating] = _ratings(appeal_id)
    assert rating.satisfaction == 4 and rating.comment == "师傅很耐心，谢谢"


def test_long_staff_request_and_long_comment(chat):
    from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

    _needs_info(chat, request="请提供以下材料：" + "营业执照副本复印件、" * 150)
    ask = chat("补充")
    assert len(ask.encode("utf-8")) <= REPLY_TEXT_MAX_BYTES and "取消" in ask and "…" in ask
    chat("取消")
    appeal_id, number = chat.resolved("楼道的灯坏了好几天了")
    chat(f"评价 {number}")
    chat("1")
    chat("3")
    assert chat("很" * 501) == followup.COMMENT_LONG
    assert _ratings(appeal_id) == []
    assert chat("处理得还可以") == followup.RATED_CLOSED.format(number=number)


def test_no_room_for_photos_says_so(chat):
    appeal_id, _ = _needs_info(chat)
    with session_scope() as s:
        s.get(Appeal, appeal_id).images = [{"name": f"p{i}.jpg", "media_id": f"M{i}"} for i in range(9)]
    ask = chat("补充")
    assert followup.SUPPLEMENT_NO_PHOTOS in ask and "最多 0 张" not in ask
    assert chat(msg_type="image", media_id="MEDIA-X") == followup.SUPPLEMENT_PHOTO_FULL


def test_rating_a_rated_round_says_so(chat):
    appeal_id, number = chat.resolved()
    chat(f"评价 {number}")
    chat("2")
    chat("3")
    chat("跳过")  # not resolved: reopened, round 2
    chat.act(appeal_id, "resolve", resolution="已再次上门检修")
    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        appeal.round = 1  # as if staff resolved the same round again (the service would refuse a second rating)
    assert chat(f"评价 {number}") == followup.ALREADY_RATED.format(number=number)
