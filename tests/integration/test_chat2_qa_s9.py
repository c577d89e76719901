"""QA of the bot's conversations, second pass: the intake's edges, the mini-program's chat, 评价 / 补充."""

from __future__ import annotations

import itertools

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
