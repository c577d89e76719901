"""QA of the bot's conversations, fourth pass: late and colloquial answers to a rating, a second pick of a choice."""

from __future__ import annotations

from sqlalchemy import select

from handlers import appeal_followup as followup
from tests.integration.appeals.test_appeal_chat_followup import chat  # noqa: F401  (the follow-up's fixture)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the first pass's fixture and helper)
from wxapp_backend.appeals.models import Appeal, AppealRating
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.bot import _memory_key


def _rating(appeal_id):
    with session_scope() as s:
        return s.scalars(select(AppealRating).where(AppealRating.appeal_id == appeal_id)).one_or_none()


def _forget(redis_client):
    """What 30 minutes of silence does: the conversation state expires."""
    for key in redis_client.scan_iter("wx:conv:*"):
        redis_client.delete(key)


# --- 1. a late answer to the rating -------------------------------------------------------------------------


def test_a_late_answer_to_a_rating_lands_on_the_appeal_waiting_for_it(chat, redis_client):  # noqa: F811
    """Asked “问题解决了吗？”, the user answered an hour later, “解决了”: the conversation was forgotten after 30
    minutes, and “解决了” went to the knowledge base (a list of unrelated questions, or “没学会”). The answer now
    lands on their appeal waiting for a rating (found in the database), and the rating goes on from there."""
    appeal_id, number = chat.resolved()
    assert "问题解决了吗" in chat("评价")
    _forget(redis_client)
    reply = chat("解决了")
    assert number in reply and followup.ASK_STARS in reply and "取消" in reply, reply
    assert chat("5") == followup.ASK_COMMENT
    assert chat("跳过") == followup.RATED_CLOSED.format(number=number)
    rating = _rating(appeal_id)
    assert rating.resolved and rating.satisfaction == 5


def test_an_answer_to_the_resolved_notice_itself_starts_the_rating(chat):  # noqa: F811
    """The 办结 notice says “请评价”; the user answered it straight away with “满意” (never typing “评价”): the
    knowledge base answered. It is now the rating of that appeal: resolved, 4 points (满意), and the comment
    is asked for; the reply names the appeal and says how to back out."""
    appeal_id, number = chat.resolved()
    reply = chat("满意")
    assert number in reply and "4 分（满意）" in reply and "问题已解决" in reply, reply
    assert followup.ASK_COMMENT in reply and "取消" in reply, reply
    assert chat("没有了") == followup.RATED_CLOSED.format(number=number)
    rating = _rating(appeal_id)
    assert rating.resolved and rating.satisfaction == 4


def test_a_late_not_resolved_reopens_the_appeal(chat, redis_client):  # noqa: F811
    """“还没好” a day after the notice: not understood (and the appeal stayed 已办结, awaiting a rating that never
    came). It is the “未解决” answer now; the score is asked, and the appeal goes back to work."""
    appeal_id, number = chat.resolved()
    reply = chat("还没好")
    assert number in reply and "问题还没解决" in reply and followup.ASK_STARS in reply, reply
    chat("2")
    chat("税控盘还是报错")
    assert _rating(appeal_id).resolved is False
    with session_scope() as s:
        assert s.get(Appeal, appeal_id).status == "in_progress"


def test_late_answers_without_an_appeal_to_rate_are_questions_as_before(chat):  # noqa: F811
    """With nothing waiting for a rating, “满意” or “5” is not taken for one (no appeal is named, nothing is
    stored): the knowledge base answers as before. A bare menu digit is never a late rating."""
    chat.submit()  # open, not resolved
    assert "评价" not in (chat("5") or "") and "评价" not in (chat("解决了") or "")
    chat.resolved()
    assert chat("2") is None  # the follow-up's router has no menu: a menu digit is left to it, not rated


def test_the_most_recent_of_several_appeals_waiting_is_rated_and_the_others_mentioned(chat):  # noqa: F811
    first_id, first = chat.resolved("楼道灯坏了一个月")
    second_id, second = chat.resolved("电梯坏了一周")
    reply = chat("解决了")
    assert second in reply and "还有 1 条诉求等待评价" in reply, reply
    chat("4")
    chat("跳过")
    assert _rating(second_id).satisfaction == 4 and _rating(first_id) is None


def test_cancel_after_a_late_answer_taken_for_a_rating(chat):  # noqa: F811
    """“挺好的” was about something else: “取消” backs out and nothing is rated."""
    appeal_id, _ = chat.resolved()
    assert "评价" in chat("挺好的")
    assert chat("取消") == followup.CANCELLED
    assert _rating(appeal_id) is None


# --- 3. colloquial answers inside the rating --------------------------------------------------------------


def test_colloquial_answers_to_resolved(chat):  # noqa: F811
    """“问题解决了吗？”: “没解决”, “还没好”, “还是不行”, “嗯，解决了”, “好了”, “不满意” got “请回复 1（已解决）或 2（未
    解决）” again and again."""
    for said, resolved in (("没解决", False), ("还没好", False), ("还是不行", False), ("嗯，解决了", True),
                           ("好了", True), ("搞定了，谢谢", True), ("问题还没解决呢", False), ("对的", True)):
        appeal_id, number = chat.resolved()
        chat(f"评价 {number}")
        assert chat(said) == followup.ASK_STARS, said
        chat("3")
        chat("跳过")
        assert _rating(appeal_id).resolved is resolved, said


def test_the_problem_still_there_is_a_no(chat):  # noqa: F811
    """“没用，还是吵”, “还在漏水” to “问题解决了吗？” got the hint, which then said only “请回复 1 或 2”: the user had
    said it plainly. These are a “未解决” now; the hint says details can follow."""
    for said in ("没用，还是吵", "还在漏水", "照样堵"):
        appeal_id, number = chat.resolved()
        chat(f"评价 {number}")
        assert chat(said) == followup.ASK_STARS, said
        chat("1")
        chat("跳过")
        assert _rating(appeal_id).resolved is False, said
    _, number = chat.resolved()
    chat(f"评价 {number}")
    assert "具体情况稍后" in chat("物业来看过一次")
    assert "问题已解决" in chat("还是挺满意的")


def test_satisfaction_words_are_scores(chat):  # noqa: F811
    """At “请为这次办理打分：回复 1～5”: “满意”, “挺好的”, “还行”, “不满意”, “非常满意”, “太差了” got “请回复 1～5 之间的数字”.
    They are the five grades of 好差评 now, and the reply says which score was recorded."""
    for said, stars in (("满意", 4), ("挺好的", 4), ("还行", 3), ("一般般吧", 3), ("不满意", 2), ("非常满意", 5),
                        ("很满意，谢谢", 5), ("太差了", 1), ("不太满意", 2), ("服务很好", 5)):
        appeal_id, number = chat.resolved()
        chat(f"评价 {number}")
        chat("解决了")
        reply = chat(said)
        assert f"{stars} 分" in reply and followup.ASK_COMMENT in reply, (said, reply)
        chat("跳过")
        assert _rating(appeal_id).satisfaction == stars, said


def test_satisfaction_at_the_resolved_question(chat):  # noqa: F811
    """“满意” to “问题解决了吗？” is a yes with its score; “不满意” is a score, and whether it was solved is asked
    again (an unhappy user may or may not have the problem solved); “5” there is a score too."""
    appeal_id, number = chat.resolved()
    chat(f"评价 {number}")
    reply = chat("满意")
    assert "问题已解决" in reply and "4 分" in reply and followup.ASK_COMMENT in reply, reply
    assert chat("5").startswith("好的，改为 5 分")  # the score changed at the comment step
    chat("跳过")
    assert (_rating(appeal_id).resolved, _rating(appeal_id).satisfaction) == (True, 5)
    appeal_id, number = chat.resolved()
    chat(f"评价 {number}")
    reply = chat("不满意")
    assert "2 分（不满意）" in reply and "解决了吗" in reply, reply
    assert chat("没有") == followup.ASK_COMMENT  # the score was given already
    chat("等了两周才有人来")
    rating = _rating(appeal_id)
    assert (rating.resolved, rating.satisfaction) == (False, 2)
    _, number = chat.resolved()
    chat(f"评价 {number}")
    assert "5 分" in chat("5") and "解决了吗" in chat("5")


def test_a_sentence_is_not_taken_for_an_answer(chat):  # noqa: F811
    """Unclear answers still get the hint, never a guess."""
    _, number = chat.resolved()
    chat(f"评价 {number}")
    for said in ("也许吧", "解决了一半", "解决了，没解决", "你们的电话是多少"):
        assert chat(said) == followup.HINT_RESOLVED, said


# --- 2. another pick from the same “您是不是想问” list ---------------------------------------------------------


def test_a_second_pick_from_the_same_choices(oa_kb, redis_client):  # noqa: F811
    """After picking “1” of “您是不是想问”, “第二个” (another of the same list) got “这个问题我还没学会” or the
    menu: the list was dropped as soon as one was picked. It stays (for the usual 15 minutes) and the answer
    says so."""
    openid = "oSecondPick"
    say(oa_kb, openid, "你好")
    redis_client.set(_memory_key("oa", openid), '["talent-foreign-work-permit", "talent-hub"]', ex=60)
    first = say(oa_kb, openid, "1")
    assert "工作许可" in first and "回复 2" in first, first
    second = say(oa_kb, openid, "第二个")
    assert "人才港" in second and "回复 1" in second, second
    assert "工作许可" in say(oa_kb, openid, "1")
    assert redis_client.ttl(_memory_key("oa", openid)) > 60  # kept for as long again
    say(oa_kb, openid, "菜单")  # the menu: a digit means the menu again
    assert "请直接输入您想了解的政策" in say(oa_kb, openid, "1")


def test_material_sent_after_the_supplement_expired_says_how_to_send_it(oa_kb, redis_client, make_staff):  # noqa: F811
    """“补充” asked for the material; the user came back after 30 minutes with it: the text went to the knowledge
    base (“这个问题我还没学会”), nobody received it, and nothing said so. An unanswerable text from someone whose
    appeal waits for material now says how to send it (“补充：内容”), and that way it reaches the appeal."""
    from wxapp_backend.appeals import services
    from wxapp_backend.audit import Actor
    from wxapp_backend.auth.models import User

    openid = "oLateSupplement"
    say(oa_kb, openid, "你好")
    with session_scope() as s:
        user_id = s.scalars(select(User.id).where(User.oa_openid == openid)).one()
        appeal, _ = services.submit_appeal(s, user_id, services.Intake(
            content="办公楼空调不制冷，物业一直不处理", contact_name="张三", contact_phone="13800138000"))
        appeal_id, number = appeal.id, appeal.number
    staff = Actor("staff", make_staff(role="admin").id, role="admin", name="管理员")
    for action, data in (("accept", {}), ("request_info", {"note": "请提供物业合同首页"})):
        with session_scope() as s:
            services.perform(s, staff, appeal_id, action, data)
    assert "物业合同首页" in say(oa_kb, openid, "补充")
    _forget(redis_client)
    late = "合同原件在老板那里，明天下午拍照发给你们"
    reply = say(oa_kb, openid, late)
    assert number in reply and "补充：" in reply, reply
    assert "恢复办理" in say(oa_kb, openid, "补充：" + late)
    with session_scope() as s:
        assert s.get(Appeal, appeal_id).status != "pending_enterprise"


def test_a_rating_answer_in_the_app_chat_points_to_the_appeal(chat, client, user_token):  # noqa: F811
    """In the mini-program's chat, “满意” / “解决了” from a user whose appeal waits for a rating got a knowledge-base
    answer; it now names the appeal and says where to rate it. Without such an appeal, nothing changes."""
    h = user_token(chat.user)
    before = client.post("/api/v1/chat", json={"text": "满意"}, headers=h).get_json()
    assert "评价" not in before["reply"], before
    _, number = chat.resolved()
    for text in ("满意", "解决了", "还没好"):
        body = client.post("/api/v1/chat", json={"text": text}, headers=h).get_json()
        assert number in body["reply"] and "评价" in body["reply"] and body["decision"] == "guide", (text, body)


def test_skipping_the_enterprise_is_not_an_enterprise_named_skip(oa_kb):  # noqa: F811
    """Asked for the enterprise, the user answered “跳过” (or “个人”, “没有公司”): it became the enterprise's name and
    the appeal reached staff as from the enterprise “跳过”. The step is now left empty, and the user told so."""
    from tests.integration.test_chat2_qa_s9 import _draft_to

    for i, said in enumerate(("跳过", "个人", "没有公司", "不方便说")):
        openid = f"oSkipPlace{i}"
        _draft_to(oa_kb, openid, "place")
        reply = say(oa_kb, openid, said)
        assert "先不填" in reply and "联系人" in reply, (said, reply)
        say(oa_kb, openid, "张三 13800138000")
        summary = say(oa_kb, openid, "跳过")
        assert "企业：（未填写）" in summary, (said, summary)


def test_a_problem_the_bot_could_not_answer_is_offered_as_the_description(oa_kb):  # noqa: F811
    """“楼下外卖电动车乱停，门口都堵死了，能不能管管” got “没学会…回复“我要反映”提交诉求”; the user did, and was asked to
    describe the problem: typing it a second time. The intake now offers what they said (“是” takes it); a new
    description still works, and an answered question is not offered."""
    openid = "oOfferDescription"
    problem = "楼下外卖电动车乱停，门口都堵死了，能不能管管"
    assert "我要反映" in say(oa_kb, openid, problem)
    reply = say(oa_kb, openid, "我要反映")
    assert problem in reply and "回复“是”" in reply, reply
    assert "企业名称" in say(oa_kb, openid, "是")
    say(oa_kb, openid, "上海某某科技有限公司")
    say(oa_kb, openid, "张三 13800138000")
    assert f"问题：{problem}\n" in say(oa_kb, openid, "跳过")
    say(oa_kb, openid, "取消")
    openid = "oOfferDeclined"
    say(oa_kb, openid, problem)
    say(oa_kb, openid, "我要反映")
    say(oa_kb, openid, "办公室空调坏了三天")
    say(oa_kb, openid, "上海某某科技有限公司")
    say(oa_kb, openid, "张三 13800138000")
    assert "问题：办公室空调坏了三天\n" in say(oa_kb, openid, "跳过")
    openid = "oOfferNone"
    say(oa_kb, openid, problem)
    say(oa_kb, openid, "开办企业需要哪些材料")  # answered since: the earlier text is no longer on offer
    assert "您刚才说" not in say(oa_kb, openid, "我要反映")


def test_wait_a_moment_is_not_an_answer_to_the_step(oa_kb):  # noqa: F811
    """“等一下” at the enterprise step (the user went to look up the company's full name) became the enterprise's
    name, and the bot moved on to the contact. “等一下”, “稍等”, “我查一下” now keep the step and say so."""
    from tests.integration.test_chat2_qa_s9 import _draft_to

    for i, said in enumerate(("等一下", "稍等", "我查一下", "等等哈")):
        openid = f"oHold{i}"
        _draft_to(oa_kb, openid, "place")
        reply = say(oa_kb, openid, said)
        assert "不着急" in reply and "企业名称" in reply and "联系人" not in reply, (said, reply)
        assert "联系人" in say(oa_kb, openid, "上海某某科技有限公司")
    openid = "oHoldContact"
    _draft_to(oa_kb, openid, "contact")
    assert "不着急" in say(oa_kb, openid, "我找一下电话")
    assert "照片" in say(oa_kb, openid, "张三 13800138000")


def test_an_opener_without_the_question_is_a_greeting(oa_kb):  # noqa: F811
    """“你好，我想问下” (the question comes in the next message) got “这个问题我还没学会。我已经把它记下来”, and went to
    the staff's queue of unanswered questions: “我想问一下” was known, not the same without 一."""
    for text in ("你好，我想问下", "请问下", "打扰了"):
        reply = say(oa_kb, "oOpener", text)
        assert "没学会" not in reply and "直接问我" in reply, (text, reply)


def test_an_appeal_number_pasted_in_the_chat_shows_that_appeal(chat, client, user_token):  # noqa: F811
    """The notice gives the appeal's number; the user pasted it (“SQ20261206-0001”, “查一下 SQ…”, “SQ…进度怎么样了”)
    and got “这个问题我还没学会”. It now shows where that appeal stands, their own appeals only."""
    appeal_id, number = chat.submit("办公室门口的垃圾桶好几天没人清理")
    for text in (number, f"查一下 {number}", f"{number}进度怎么样了", number.lower()):
        reply = chat(text)
        assert reply.startswith(f"诉求 {number}【已提交】") and "承诺" in reply, (text, reply)
    _, done = chat.resolved()
    assert f"评价 {done}" in chat(done)
    _, theirs = chat.submit("别人的诉求", owner=chat.other.id)
    assert chat(theirs) == followup.NOT_FOUND.format(number=theirs)
    h_reply = client.post("/api/v1/chat", json={"text": number}, headers=user_token(chat.user)).get_json()["reply"]
    assert h_reply.startswith(f"诉求 {number}【已提交】") and "小程序" in h_reply, h_reply


def test_pressing_an_open_appeal_is_written_on_its_timeline(chat):  # noqa: F811
    """“催一下” / “怎么还没人联系我” about an open appeal got a knowledge-base list (“网格化服务是什么？…”): the press
    reached nobody. It is now written on the appeal's timeline (an event and an audit row, once a day) for the staff
    handling it, and the user told where the appeal stands."""
    from wxapp_backend.appeals.models import AppealEvent
    from wxapp_backend.audit import AuditLog

    assert chat("催一下") == followup.NOTHING_TO_PRESS
    first_id, first = chat.submit("楼道灯坏了")
    appeal_id, number = chat.submit("办公室门口的垃圾桶好几天没人清理")
    reply = chat("怎么还没人联系我")
    assert number in reply and "记下您的催办" in reply and "还有 1 条" in reply, reply
    assert "今天已经催办过了" in chat("催一下")
    assert "记下您的催办" in chat(f"催办 {first}")
    with session_scope() as s:
        events = s.scalars(select(AppealEvent).where(AppealEvent.action == "pressed")).all()
        assert sorted(e.appeal_id for e in events) == sorted([appeal_id, first_id])
        assert all(e.public and e.actor_type == "user" for e in events)
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "appeal.pressed")) is not None
    chat.act(appeal_id, "accept")
    chat.act(appeal_id, "resolve", resolution="已清理")
    assert "不需要催办" in chat(f"催办 {number}")
    assert chat("怎么催办") != chat("催一下")  # a question about it is no press


def test_withdrawing_an_appeal_in_the_chat(chat):  # noqa: F811
    """“撤回诉求” (the problem solved itself) got “这个问题我还没学会”: a follower who never opened the mini-program
    had no way to withdraw. The bot names the appeal and asks for “撤回 编号”, which withdraws it (the service's
    rules: not once resolved)."""
    assert chat("撤回诉求") == followup.NOTHING_TO_WITHDRAW
    appeal_id, number = chat.submit("楼道灯坏了")
    ask = chat("撤回诉求")
    assert number in ask and f"撤回 {number}" in ask, ask
    with session_scope() as s:
        assert s.get(Appeal, appeal_id).status == "submitted"  # asking is not withdrawing
    assert chat(f"撤回 {number}") == followup.WITHDRAWN.format(number=number)
    with session_scope() as s:
        assert s.get(Appeal, appeal_id).status == "withdrawn"
    _, done = chat.resolved()
    assert chat(f"撤销 {done}").startswith("没有撤回：")
    assert chat("取消") != followup.NOTHING_TO_WITHDRAW  # the flows' word, not a withdrawal


def test_satisfied_just_after_rating_is_thanked(chat):  # noqa: F811
    """“满意” right after the rating was sent got “您是不是想问：对诉求处理结果不满意怎么办？”. It is thanked now."""
    _, number = chat.resolved()
    chat(f"评价 {number}")
    chat("1")
    chat("5")
    chat("跳过")
    assert chat("满意") == followup.ALREADY_RATED_THANKS.format(number=number)


def test_an_impatient_hello_is_a_greeting(oa_kb):  # noqa: F811
    """“喂”, “有人没” got “这个问题我还没学会。我已经把它记下来” (and a row in the staff's unanswered queue)."""
    for text in ("喂", "有人没", "喂，在不"):
        reply = say(oa_kb, "oImpatient", text)
        assert "没学会" not in reply and "直接问我" in reply, (text, reply)


def test_asking_for_progress_shows_the_appeals_and_presses_nothing(chat):  # noqa: F811
    """“有进展吗” / “办得怎么样了” got knowledge-base lists; it is a question about where the appeals stand (我的诉求),
    not a press written on the timeline."""
    from wxapp_backend.appeals.models import AppealEvent

    _, number = chat.submit("楼道灯坏了")
    for text in ("有进展吗", "办得怎么样了", "我的诉求有结果了没"):
        reply = chat(text)
        assert number in reply and "您的诉求（共 1 条）" in reply, (text, reply)
    with session_scope() as s:
        assert s.scalar(select(AppealEvent.id).where(AppealEvent.action == "pressed")) is None


def test_press_and_withdraw_in_the_app_chat(chat, client, user_token):  # noqa: F811
    """In the mini-program's chat “催一下” got a knowledge-base list and “撤回诉求” “没学会”. The press is the WeChat
    chat's (written on the timeline); withdrawing is pointed to the appeal's page, where its button is."""
    from wxapp_backend.appeals.models import AppealEvent

    h = user_token(chat.user)
    appeal_id, number = chat.submit("楼道灯坏了")
    body = client.post("/api/v1/chat", json={"text": "催一下"}, headers=h).get_json()
    assert number in body["reply"] and "记下您的催办" in body["reply"] and "联系客服" in body["reply"], body
    with session_scope() as s:
        assert s.scalar(select(AppealEvent.appeal_id).where(AppealEvent.action == "pressed")) == appeal_id
    body = client.post("/api/v1/chat", json={"text": "撤回诉求"}, headers=h).get_json()
    assert "撤回" in body["reply"] and "我的诉求" in body["reply"] and body["decision"] == "guide", body


def test_no_longer_needed_is_an_acknowledgement(oa_kb):  # noqa: F811
    """“不需要了” got an answer about choosing a company name (the nearest entry the search found), “没事了” a list of
    unrelated questions. Closing words are an acknowledgement now."""
    for text in ("不需要了", "没事了", "不用了，谢谢"):
        reply = say(oa_kb, "oNoLonger", text)
        assert "名称" not in reply and "您是不是想问" not in reply and "没学会" not in reply, (text, reply)


def test_still_there_questions_are_not_a_no(chat):  # noqa: F811
    """“还在吗” / “还有个问题” during “问题解决了吗？” are not “未解决” (“还…” means the problem is still there only when
    it says so); nor is “还有问题” outside a rating a late “未解决”."""
    _, number = chat.resolved()
    chat(f"评价 {number}")
    for said in ("还在吗", "还有个问题", "还在不在"):
        assert chat(said) == followup.HINT_RESOLVED, said
    chat("取消")
    assert "评价" not in (chat("还有问题") or "")
