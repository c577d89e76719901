"""QA of the bot's conversations, second pass: the intake's edges, the mini-program's chat, 评价 / 补充."""

from __future__ import annotations

import itertools

from tests.integration.appeals.test_appeal_chat_followup import chat  # noqa: F401  (the follow-up's fixture)
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the first pass's fixture and helper)

_media = itertools.count(1)


def photo(application, openid):
    """A photo from `openid`; the passive reply's text."""
    return say(application, openid, extra={"MsgType": "image", "MediaId": f"PHOTO{next(_media)}",
                                           "PicUrl": "http://example.invalid/p.jpg"})


def _draft_to(application, openid, step):
    """An intake draft up to `step` (place, contact, photos or confirm)."""
    say(application, openid, "我要反映")
    say(application, openid, "楼道里的灯坏了两个星期了，晚上很黑")
    if step == "place":
        return
    say(application, openid, "上海某某科技有限公司")
    if step == "contact":
        return
    say(application, openid, "张三 13800138000")
    if step == "photos":
        return
    say(application, openid, "跳过")


def test_my_appeals_during_a_draft_mentions_the_draft(oa_kb):  # noqa: F811
    """“我的诉求” in the middle of a draft answered “您还没有提交过诉求。回复“我要反映”，我来帮您登记。”: not a word
    of the draft being filled in (the user took it as lost, or as filed). It now says the draft is open and how
    to go on; “继续” picks it up where it was."""
    openid = "oStatusInDraft"
    _draft_to(oa_kb, openid, "contact")
    reply = say(oa_kb, openid, "我的诉求")
    assert "还没有提交过诉求" in reply and "未填完的诉求（第 3/5 步）" in reply and "继续" in reply, reply
    assert "联系人" in say(oa_kb, openid, "继续")
    assert "照片" in say(oa_kb, openid, "张三 13800138000")


def test_a_photo_at_another_step_is_kept_for_the_appeal(oa_kb):  # noqa: F811
    """A photo sent while the bot asked for the enterprise or the contact got “这一步不需要照片哦” and was dropped;
    sent after the summary, it was dropped without a word (the summary again, “照片：0 张”). It is now kept with
    the draft, the step's question asked again, and the summary counts it."""
    openid = "oPhotoEarly"
    _draft_to(oa_kb, openid, "place")
    reply = photo(oa_kb, openid)
    assert "照片收到了（共 1 张）" in reply and "企业名称" in reply, reply
    say(oa_kb, openid, "上海某某科技有限公司")
    reply = photo(oa_kb, openid)
    assert "照片收到了（共 2 张）" in reply and "联系人" in reply, reply
    say(oa_kb, openid, "张三 13800138000")
    assert "照片：2 张" in say(oa_kb, openid, "跳过")
    reply = photo(oa_kb, openid)
    assert "照片收到了（共 3 张）" in reply and "照片：3 张" in reply and "回复“确认”提交" in reply, reply
    assert "诉求已提交" in say(oa_kb, openid, "确认")


def test_the_app_chat_points_appeal_rating_and_supplement_to_the_app(client, app_ctx, make_user, user_token):
    """In the app's chat (POST /api/v1/chat) “我要反映：楼下餐厅油烟太大…” got “这个问题我还没学会…回复“我要反映”
    提交诉求” (and was queued for staff as an unanswered question), while the WeChat chat starts the intake; “评价”,
    “补充”, “补充：物业电话…” got knowledge-base lists, the supplement reaching nobody. The app's chat does these on
    the app's pages (as for a bare “我要反映”): it now says so, and that nothing was filed."""
    from wxapp_backend.knowledge_store.cli import load_default_if_empty

    load_default_if_empty()

    def ask(text, headers=None):
        resp = client.post("/api/v1/chat", json={"text": text}, headers=headers or {})
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    told = ask("我要反映：楼下餐厅油烟太大了，熏得办公室没法待")
    assert told["decision"] == "guide" and "还没有登记" in told["reply"] and "我要反映" in told["reply"], told
    assert ask("我要投诉物业，空调坏了一周没人修")["decision"] == "guide"
    for text in ("评价", "补充", "评价 SQ20261206-0001"):
        body = ask(text)
        assert body["decision"] == "guide" and "我的诉求" in body["reply"], (text, body)
    body = ask("补充：物业联系方式是 021-12345678，王经理")
    assert body["decision"] == "guide" and "还没有提交" in body["reply"], body
    mine = ask("补充：物业联系方式是 021-12345678", user_token(make_user()))
    assert "还没有提交" in mine["reply"] and "还没有提交过诉求" in mine["reply"], mine
    for question in ("投诉电话是多少", "补充医疗保险怎么买"):  # questions, as before
        assert ask(question)["decision"] != "guide", question


def test_change_one_field_at_the_confirmation(oa_kb):  # noqa: F811
    """“修改” at the summary dropped the whole draft and started again at step 1: to change a phone number the
    user typed the problem, the enterprise and the contact again. It now asks which item (or takes “改电话”,
    “改企业” directly), asks only that step again and comes back to the summary."""
    from sqlalchemy import select

    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.db import session_scope

    openid = "oEditOneField"
    _draft_to(oa_kb, openid, "photos")
    photo(oa_kb, openid)
    assert "照片：1 张" in say(oa_kb, openid, "好了")
    which = say(oa_kb, openid, "修改")
    assert "1 问题描述" in which and "3 联系人" in which and "共 5 步" not in which, which
    assert "1～4" in say(oa_kb, openid, "随便")
    assert "联系人" in say(oa_kb, openid, "3")
    summary = say(oa_kb, openid, "李四 13900139000")
    assert "联系人：李四 13900139000\n" in summary and "问题：楼道里的灯坏了两个星期了，晚上很黑\n" in summary, summary
    assert "照片：1 张" in summary and "企业：上海某某科技有限公司\n" in summary
    assert "企业名称" in say(oa_kb, openid, "改企业")
    summary = say(oa_kb, openid, "上海另一家贸易有限公司")
    assert "企业：上海另一家贸易有限公司\n" in summary and "联系人：李四 13900139000\n" in summary, summary
    assert "诉求已提交" in say(oa_kb, openid, "确认")
    with oa_kb.app_context(), session_scope() as s:
        appeal = s.scalars(select(Appeal).where(Appeal.content == "楼道里的灯坏了两个星期了，晚上很黑")
                           .order_by(Appeal.id.desc())).first()
        assert (appeal.contact_name, appeal.contact_phone) == ("李四", "13900139000")
        assert appeal.enterprise_name == "上海另一家贸易有限公司"


def test_stars_said_in_words(chat):  # noqa: F811
    """“请为这次办理打分：回复 1～5”: “五星”, “五颗星”, “五星好评”, “三分” got “请回复 1～5 之间的数字” again and again.
    They are now the score (“5星” already was); so is a bare “五”, as “二” or “第三个” pick a numbered choice elsewhere."""
    from handlers import appeal_followup as followup
    from wxapp_backend.appeals.models import AppealRating
    from wxapp_backend.db import session_scope

    for said, stars in (("五星", 5), ("五颗星", 5), ("五星好评", 5), ("三分", 3), ("5星", 5), ("两颗星", 2)):
        appeal_id, number = chat.resolved()
        chat(f"评价 {number}")
        assert chat("解决了") == followup.ASK_STARS
        assert chat(said) == followup.ASK_COMMENT, said
        chat("跳过")
        with session_scope() as s:
            rating = s.query(AppealRating).filter_by(appeal_id=appeal_id).one()
            assert rating.satisfaction == stars, said
    chat.resolved()
    chat("评价")
    chat("解决了")
    assert chat("五") == followup.ASK_COMMENT


def test_resolved_or_not_said_in_words(chat):  # noqa: F811
    """“问题解决了吗？回复 1 已解决，回复 2 未解决”: “已经解决了”, “解决了，谢谢”, “修好了”, “还没解决”, “没有” got
    the hint again; people answer a yes/no question like that. “满分” at the score was not understood either."""
    from handlers import appeal_followup as followup
    from wxapp_backend.appeals.models import AppealRating
    from wxapp_backend.db import session_scope

    for said, resolved in (("已经解决了", True), ("解决了，谢谢！", True), ("修好了", True), ("还没解决", False),
                           ("没有", False), ("仍未解决", False)):
        appeal_id, number = chat.resolved()
        chat(f"评价 {number}")
        assert chat(said) == followup.ASK_STARS, said
        assert chat("满分") == followup.ASK_COMMENT, said
        chat("跳过")
        with session_scope() as s:
            rating = s.query(AppealRating).filter_by(appeal_id=appeal_id).one()
            assert (rating.resolved, rating.satisfaction) == (resolved, 5), said
    chat.resolved()
    chat("评价")
    assert chat("也许吧") == followup.HINT_RESOLVED


def test_i_want_to_report_a_problem_in_the_users_words(oa_kb, client):  # noqa: F811
    """“我想反映个问题”, “我要投诉一下”, “我想反映一个情况” got the knowledge base's list of channels (“本小程序 /
    公众号：直接描述问题并提交诉求…”), the intake not started: only the exact “我要反映” / “我要投诉” were known;
    “我想反映一个情况！” started it with the problem “一个情况！”. They now start it at step 1 (in the app's chat: where to file it); “我有个问题” stays a question's opener."""
    for i, text in enumerate(("我想反映个问题", "我要投诉一下", "我想反映一个情况！")):
        reply = say(oa_kb, f"oStartPhrase{i}", text)
        assert "共 5 步" in reply and "描述" in reply, (text, reply)
        body = client.post("/api/v1/chat", json={"text": text}).get_json()
        assert body["decision"] == "guide" and "我要反映" in body["reply"], (text, body)
    assert "共 5 步" not in say(oa_kb, "oStartPhrase9", "我有个问题")
    say(oa_kb, "oStartPhrase0", "楼下餐厅油烟太大，熏得没法办公")
    assert "未填完的诉求（进行到第 2/5 步）" in say(oa_kb, "oStartPhrase0", "我想反映个问题")  # not the enterprise


def test_change_in_the_middle_of_the_draft_keeps_it(oa_kb):  # noqa: F811
    """“修改” at the contact step dropped the whole draft without a word (“好的，我来帮您登记诉求（共 5 步）”), the
    problem and the enterprise gone. The draft now stays, and the bot says how to change an item at the summary."""
    openid = "oEditEarly"
    _draft_to(oa_kb, openid, "contact")
    reply = say(oa_kb, openid, "修改")
    assert "共 5 步" not in reply and "核对时回复“修改”" in reply and "联系人" in reply, reply
    say(oa_kb, openid, "张三 13800138000")
    summary = say(oa_kb, openid, "跳过")
    assert "问题：楼道里的灯坏了两个星期了，晚上很黑\n企业：上海某某科技有限公司\n" in summary, summary
    assert "共 5 步" in say(oa_kb, "oEditEarly2", "我要反映")
    say(oa_kb, "oEditEarly2", "楼道里的灯坏了两个星期了")
    assert "共 5 步" in say(oa_kb, "oEditEarly2", "重新开始")  # starting over is still there


def test_words_in_passing_are_no_supplement(chat):  # noqa: F811
    """Asked for more information (“补充”), “好的，谢谢”, “嗯嗯”, “收到了” were filed as the supplement itself: staff
    got “好的，谢谢” as what they asked for and the appeal went back to work without it. Only the exact 好 / 谢谢 /
    好的 were known as words in passing."""
    from handlers import appeal_followup as followup
    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.db import session_scope

    appeal_id, _ = chat.submit("办公楼空调不制冷，物业一直不处理")
    chat.act(appeal_id, "accept")
    chat.act(appeal_id, "request_info", note="请提供物业联系方式")
    assert "物业联系方式" in chat("补充")
    for said in ("好的，谢谢", "嗯嗯", "收到了", "谢谢啦"):
        assert chat(said) == followup.SUPPLEMENT_NEEDS_TEXT, said
    with session_scope() as s:
        assert s.get(Appeal, appeal_id).status == "pending_enterprise"
    assert "已补充" in chat("物业是某某物业公司，电话 021-12345678")


def test_confirm_again_after_submitting_says_it_was_filed(oa_kb):  # noqa: F811
    """A second “确认” just after “诉求已提交，编号 SQ…” (a double tap, or not having seen the answer) got “小二这边没有
    您正在填写的诉求，也没有提交任何内容”: the user took the appeal as not filed and filed it again. It now says
    which appeal was filed; someone who never filed one still gets the old answer."""
    import re

    openid = "oConfirmTwice"
    _draft_to(oa_kb, openid, "confirm")
    number = re.search(r"SQ\d{8}-\d{4}", say(oa_kb, openid, "确认")).group(0)
    for again in ("确认", "继续"):
        reply = say(oa_kb, openid, again)
        assert number in reply and "已经提交" in reply and "没有提交任何内容" not in reply, reply
    assert "没有提交任何内容" in say(oa_kb, "oConfirmNever", "确认")


def test_my_appeals_in_other_words(oa_kb):  # noqa: F811
    """“查看诉求”, “我的投诉”, “查看进度” got the knowledge base's answer “在小程序进入“我的诉求”…”: in the chat, where
    “我的诉求” lists the user's own appeals (an Official Account follower may have no mini-program login at all)."""
    openid = "oStatusWords"
    _draft_to(oa_kb, openid, "confirm")
    say(oa_kb, openid, "确认")
    for text in ("查看诉求", "我的投诉", "查看进度", "我的反映"):
        reply = say(oa_kb, openid, text)
        assert "您的诉求（共 1 条）" in reply, (text, reply)


def test_stars_given_in_a_sentence(chat):  # noqa: F811
    """“给5分”, “打五星吧”, “我给你们5分” at the score got “请回复 1～5 之间的数字” again."""
    from handlers import appeal_followup as followup

    for said in ("给5分", "打五星吧", "我给你们5分"):
        _, number = chat.resolved()
        chat(f"评价 {number}")
        chat("解决了")
        assert chat(said) == followup.ASK_COMMENT, said
        chat("取消")


def test_intake_answers_in_the_app_chat(client, app_ctx):
    """In the app's chat “继续”, “确认”, “跳过”, “张三 13800138000” (the WeChat chat's intake answers, e.g. typed after
    leaving the WeChat chat) got knowledge-base lists or “这个问题我还没学会。我已经把它记下来”, the name and phone
    number queued for staff as an unanswered question. They now say that no appeal is being filled in here and
    where to file one, as the WeChat chat does."""
    from sqlalchemy import select

    from wxapp_backend.db import session_scope
    from wxapp_backend.knowledge_store.cli import load_default_if_empty
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    load_default_if_empty()
    for text in ("继续", "确认", "跳过", "张三 13800138000"):
        body = client.post("/api/v1/chat", json={"text": text}).get_json()
        assert body["decision"] == "guide" and "我要反映" in body["reply"], (text, body)
    with session_scope() as s:
        assert not s.scalars(select(UnansweredQuestion).where(UnansweredQuestion.text.contains("13800138000"))).all()


def test_change_after_the_menu_resumes_the_draft(oa_kb):  # noqa: F811
    """The menu puts a draft aside; “修改” (one of the words that resume it) then asked which item to change, but
    the draft stayed aside: the “1” that answered went to the menu (“请直接输入您想了解的政策…”)."""
    openid = "oEditPaused"
    _draft_to(oa_kb, openid, "confirm")
    say(oa_kb, openid, "菜单")
    assert "1 问题描述" in say(oa_kb, openid, "修改")
    assert "描述" in say(oa_kb, openid, "1")
    assert "问题：楼道里的灯坏了三个星期了\n" in say(oa_kb, openid, "楼道里的灯坏了三个星期了")
    openid = "oEditPausedEarly"
    _draft_to(oa_kb, openid, "contact")
    say(oa_kb, openid, "菜单")
    assert "核对时回复“修改”" in say(oa_kb, openid, "修改")
    assert "照片" in say(oa_kb, openid, "张三 13800138000")


def test_my_appeals_during_a_rating_says_the_rating_ended(chat):  # noqa: F811
    """“我的诉求” in the middle of a rating (solved and 5 stars given) ended the rating without a word: the user's
    next message (the comment) went to the knowledge base and nothing was rated. It now says the rating was left
    and how to start it again."""
    from handlers import appeal_followup as followup

    _, number = chat.resolved()
    chat(f"评价 {number}")
    chat("解决了")
    assert chat("5") == followup.ASK_COMMENT
    listing = chat("我的诉求")
    assert number in listing and "评价已退出，没有提交" in listing, listing


def test_a_yes_is_no_enterprise_name(oa_kb):  # noqa: F811
    """Asked “请告诉我企业名称和所在楼宇” (no enterprise on file), “是” / “好的” / “嗯” became the enterprise's name
    (“企业：是”): the appeal was filed under “是”. The question is now asked again."""
    for i, yes in enumerate(("是", "好的", "嗯")):
        openid = f"oYesNoName{i}"
        _draft_to(oa_kb, openid, "place")
        reply = say(oa_kb, openid, yes)
        assert "企业名称" in reply and "联系人" not in reply, (yes, reply)
        say(oa_kb, openid, "上海某某科技有限公司")
        say(oa_kb, openid, "张三 13800138000")
        assert "企业：上海某某科技有限公司\n" in say(oa_kb, openid, "跳过"), yes


def test_a_new_appeal_during_a_supplement_says_the_supplement_was_left(chat):  # noqa: F811
    """Asked for more information, the user said “我要反映”: the supplement under way was replaced by the new draft
    without a word, and the information meant for staff became the new appeal's description."""
    appeal_id, _ = chat.submit("办公楼空调不制冷，物业一直不处理")
    chat.act(appeal_id, "accept")
    chat.act(appeal_id, "request_info", note="请提供物业合同首页")
    assert "物业合同首页" in chat("补充")
    reply = chat("我要反映")
    assert "共 5 步" in reply and "补充已退出，没有提交" in reply, reply


def test_no_comment_said_in_words_is_no_comment(chat):  # noqa: F811
    """At “有什么想对我们说的吗？（可跳过）”, “没有了” or “没什么” was saved as the rating's comment, which staff then read
    as the enterprise's words."""
    from wxapp_backend.appeals.models import AppealRating
    from wxapp_backend.db import session_scope

    for said in ("没有了", "没什么。", "没意见"):
        appeal_id, number = chat.resolved()
        chat(f"评价 {number}")
        chat("解决了")
        chat("5")
        chat(said)
        with session_scope() as s:
            assert s.query(AppealRating).filter_by(appeal_id=appeal_id).one().comment == "", said


def test_an_appeal_is_picked_by_its_place_in_the_list(chat):  # noqa: F811
    """With several appeals waiting for a rating the bot listed them and asked for the full number
    (“评价 SQ20261206-0007”); “评价 2” repeated the list. The list is now numbered and the position picks."""
    from handlers import appeal_followup as followup

    first = chat.resolved()[1]
    second = chat.resolved("办公楼电梯坏了一周，一直没人修")[1]
    listing = chat("评价")
    lines = [line for line in listing.splitlines() if line[:2] in ("1.", "2.")]
    assert len(lines) == 2 and {first, second} == {line.split()[1].rstrip("：").split("：")[0] for line in lines}
    chosen = lines[1].split()[1].split("：")[0]
    asked = chat("评价 2")
    assert asked.startswith(f"诉求 {chosen} 已办结") and "回复 1 已解决" in asked
    assert chat("取消")
    assert "2 条待评价" in chat("评价 7")  # no such place: the list again
    assert followup.PICK_ONE.split("{")[0] in listing


def test_a_description_without_words_is_asked_for_again(client, app_ctx, make_user, user_token, redis_client):
    """Five emoji (or “？？？？？”) passed the 5-character rule and reached staff as an appeal to handle, in the chat
    and through the API."""
    from handlers.appeal_intake import install
    from handlers.router import Context, Router
    from wxapp_backend.appeals.intake import NO_WORDS
    from wxapp_backend.wechat.messages import normalise

    user = make_user()
    router = install(Router())

    def say(text):
        raw = {"ToUserName": "gh_x", "FromUserName": user.openid, "CreateTime": "1700000000", "MsgType": "text",
               "Content": text}
        return router.dispatch(Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=user.id)).text

    say("我要反映")
    assert say("😡😡😡😡😡") == NO_WORDS and say("？？？？？") == NO_WORDS
    assert "企业名称" in say("楼下的路灯坏了😡")  # words with an emoji are fine
    redis_client.flushdb()
    assert "请简单描述" in say("我要反映：😡😡😡😡😡")  # not taken as the problem
    resp = client.post("/api/v1/appeals", json={"content": "🙂🙂🙂🙂🙂", "contact_name": "张三",
                                               "contact_phone": "13800138000"}, headers=user_token(user))
    assert resp.status_code == 422 and "用文字描述" in resp.get_json()["message"]
