"""After the intake, in the chat: 我的诉求 (progress), 评价 (rate a resolved appeal), 补充 (send what staff asked for),
催办 (“催一下”: written on the appeal's timeline), 撤回 [编号], and an appeal's number alone (where it stands).

An Official Account follower who never opened the mini-program has no other way to follow an appeal filed in
the chat: the mini-program logs in with a different openid, so its "我的诉求" page would be empty for them.
These rules close the loop where the appeal was opened. They use the same services as the mini-program API
(`appeals.services.rate` / `supplement`), so the rules, the audit rows and the notices are the same.

Rating is three short answers (解决了吗 → 1-5 分 → 留言 or 跳过), kept in the conversation state like the
intake; supplementing is one text (photos sent before it go with it). Answers are read as people say them
(`verdict`: “满意”, “还没好”, “解决了，很满意”), and one that comes after the conversation state expired (30
minutes) lands on the user's most recently resolved appeal still waiting for a rating, found in the database. A
user only ever reaches their own appeals: an appeal number of someone else's reads as unknown.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import redis

from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

from . import appeal_intake as intake
from . import router as default_router
from .appeal_intake import (
    DB_AWAY,
    PASS_THROUGH,
    RATE_RE,
    SKIP_WORDS,
    START_WORDS,
    STATUS_WORDS,
    SUPPLEMENT_RE,
    _state,  # the conversation state, {} when Redis cannot be read
    add_photo,
    follow_up_command,
    is_cancel,
    not_cancel,
    plain,
)
from .replies import Reply, Text
from .router import Context, Router

log = logging.getLogger("handlers")

FLOW = "appeal_followup"
VERSION = 1
LIST_LIMIT = 5
SUMMARY_CHARS = 16
MAX_PHOTOS = 9
COMMENT_MAX = 500
SUPPLEMENT_MAX = 2000
REQUEST_CHARS = 200  # of staff's request or resolution, quoted back (their note may be 2,000 characters: the reply has 2,048 bytes)
# Words that end a photo sending or are said in passing: not a supplement by themselves.
DONE_WORDS = (*SKIP_WORDS, "发完了", "就这些", "提交")
NO_COMMENT_WORDS = frozenset({"没有了", "没了", "没什么", "没啥", "没意见", "没有意见", "无意见", "没什么意见",
                              "就这样", "就这样吧", "不用了", "算了", "没什么说的", "没啥说的"})
FILLER_WORDS = ("谢谢", "谢谢你", "谢谢您", "感谢", "多谢", "好的", "好", "嗯", "哦", "收到", "你好", "您好", "在吗")
# “5”, “5分”, “5星”; in words with the unit (“五星”, “五颗星”, “五星好评”: they got the hint again and again);
# “给5分”, “打五星吧” (those went to the knowledge base as questions once the hint had been given).
_STARS = re.compile(r"^(?:我?(?:给|打)(?:你们)?\s*)?(?:([1-5])\s*(?:分|星|颗星)?|([一二两三四五满])\s*(?:分|星|颗星))"
                    r"(?:好评|吧|啦)?$")
_STAR_WORDS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "满": 5}

# What people answer to “问题解决了吗？” and “请打分” (read by `verdict`): the bare 1 / 2 and 1～5 of the prompts, and
# the words: “满意”, “挺好的”, “还行”, “不满意”, “还没好”, “解决了，很满意” (they got the hint again and again). Grades
# in words are the five of 政务服务“好差评”: 非常满意 5, 满意 4, 基本满意 3, 不满意 2, 非常不满意 1.
_GRADES = (
    (1, "非常不满意|很不满意|特别不满意|十分不满意|极不满意|太不满意|超级不满意|非常差|很差|特别差|太差|极差|差评|"
        "太烂|很烂|垃圾|糟糕透|糟透|太失望|很失望|非常失望"),
    (2, "不满意|不太满意|不大满意|不怎么满意|不是很满意|不太好|不怎么样|不咋样|不咋地|比较差|有点差|较差|差劲|差|不好|"
        "失望|有点失望|不太行"),
    (3, "基本满意|还算满意|还行|还可以|还凑合|凑合|一般般?|马马虎虎|过得去|还过得去|勉强|还好|中规中矩"),
    (4, "满意|挺满意|比较满意|蛮满意|还挺满意|挺好|蛮好|不错|挺不错|还不错|蛮不错|可以的|挺好用"),
    (5, "非常满意|很满意|特别满意|十分满意|超级?满意|太满意|相当满意|非常好|很好|特别好|太好|真好|好评|五星好评|"
        "满分|完美|点赞|超赞|很棒|太棒|非常棒|真棒|棒|赞|给力|非常给力|太给力|很给力|效率很高|效率真高"),
)
GRADE_LABELS = {1: "非常不满意", 2: "不满意", 3: "基本满意", 4: "满意", 5: "非常满意"}
_LEAD = r"(?:嗯+|恩+|哦+|额|呃|那个|其实|但是?|不过|就是|只是|总体|整体|总的来说|我?觉得|感觉|个人觉得|还是|也)*"
_TAIL = r"(?:的|了|啦|呀|啊|哈|吧|哦|呢|嘛|喔|滴|咯|喽|哟)*"
_OBJECT = r"(?:(?:服务|办理|处理|态度|结果|效率|速度|你们|工作人员|小二)(?:还?是|都|也)?)?"
_GRADE_RE = [(n, re.compile(f"{_LEAD}{_OBJECT}(?:{words}){_TAIL}")) for n, words in _GRADES]
_FIXED_VERBS = "解决|修好|修复|处理好|处理完|弄好|搞好|搞定|办好|办妥|办完|落实|恢复正常|恢复"
_RESOLVED_YES_RE = re.compile(f"{_LEAD}(?:问题)?(?:现在|目前|已经?|都|基本上?|早就?|总算|终于|也|完全|彻底)*"
                              f"(?:(?:被)?(?:{_FIXED_VERBS}){_TAIL}|(?:好|可以|行|能用|正常|没问题|没事)(?:了|啦|咯|喽)+{_TAIL})")
_RESOLVED_NO_RE = re.compile(f"{_LEAD}(?:问题)?(?:还|仍然?|依然|依旧|并|根本|完全|一直|压根|都|也)*(?:没有?|未|没能)(?:被)?"
                             f"(?:完全|彻底|真正|真的|有人|人)?(?:{_FIXED_VERBS}|处理|修|管|好|弄|办)(?:好|完)?{_TAIL}|"
                             f"{_LEAD}(?:还是?|仍然|依然|依旧)(?:不行|没用|老样子|一样|没变化|没反应|没动静){_TAIL}|"
                             f"{_LEAD}(?:老样子|没用|没有变化|没变化|没反应|没动静){_TAIL}")
# “还是吵”, “还在漏水”, “照样堵”: the problem is still there (to “问题解决了吗？” only; grades were tried first).
_STILL_RE = re.compile(r"(?!.*(?:满意|好|不错|可以|行|吗|么|在不|有没有|个问题|别的|其他|想问|要问))(?:问题)?(?:还是|依然|仍然|依旧|照样|照旧|还在|还有|还会|还)\S{1,8}")
_THANKS_RE = re.compile(r"(?:谢谢|感谢|多谢|辛苦|麻烦)")
# Plain yes and no: in answer to “问题解决了吗？” only, never taken for a late answer (they answer anything).
_PLAIN_YES = frozenset({"是", "是的", "对", "对的", "嗯", "嗯嗯", "恩", "恩恩", "有", "解决", "ok", "yes"})
_PLAIN_NO = frozenset({"否", "不是", "没有", "没", "还没", "还没有", "没呢", "没有呢", "还没呢", "不行", "no", "不"})
# Said in passing around the answer (“解决了，谢谢”, “好的，5分”).
_FILLERS = frozenset({"谢谢", "谢谢你", "谢谢你们", "谢谢您", "感谢", "多谢", "辛苦了", "辛苦", "辛苦你们了", "麻烦了",
                      "好的", "好", "嗯", "收到", "ok", "谢了", "谢谢啦", "非常感谢", "感谢你们", "哈哈"})


class Verdict(NamedTuple):
    """An answer to “问题解决了吗？” and / or the score: resolved (None: not said), stars (None: not said); `strong` when
    it cannot mean anything but that (a plain “是” or “2” might answer anything)."""

    resolved: bool | None
    stars: int | None
    strong: bool
    graded: bool  # the stars came from words (“满意”), not a number: the reply says which score that is


def verdict(text: str, step: str | None = None) -> Verdict | None:
    """`text` as an answer at the rating's `step` (“resolved”, “stars”, or None: no rating under way), or None when it
    is something else (a sentence, a question). Generic Chinese, clause by clause: “解决了，很满意” is both answers."""
    from .bot import menu_digit

    t = intake.word(text).lower()
    clauses = [c for c in re.split(r"[，,。.！!、；;～~\s]+", t) if c]
    if not clauses or len(t) > 24:
        return None
    resolved: set[bool] = set()
    stars: list[int] = []
    strong = graded = False
    for clause in clauses:
        if len(clauses) > 1 and (clause in _FILLERS or _THANKS_RE.match(clause)):
            continue
        clause = menu_digit(clause) or clause  # “一”, “第五个”: the digit, as every numbered choice is read
        if clause in ("1", "2") and step == "resolved":
            resolved.add(clause == "1")
            continue
        m = _STARS.match(clause)
        if m and (step == "stars" or not m.group(1) or clause != m.group(1) or clause == "5"):
            # a bare 1～4 is a score at the score step only (elsewhere: the menu's digits)
            stars.append(int(m.group(1)) if m.group(1) else _STAR_WORDS[m.group(2)])
            strong = True
            continue
        if _RESOLVED_NO_RE.fullmatch(clause):  # before yes: “还没好” is no “好了”
            resolved.add(False)
            strong = True
            continue
        if _RESOLVED_YES_RE.fullmatch(clause):
            resolved.add(True)
            strong = strong or any(v in clause for v in _FIXED_VERBS.split("|"))
            continue
        grade = next((n for n, rx in _GRADE_RE if rx.fullmatch(clause)), None)
        if grade is not None:
            stars.append(grade)
            strong = graded = True
            continue
        if step == "resolved" and _STILL_RE.fullmatch(clause):  # “还是吵”, “还在漏水”: not solved
            resolved.add(False)
            continue
        if clause in _PLAIN_YES or clause in _PLAIN_NO:
            if step == "resolved":
                resolved.add(clause in _PLAIN_YES)
                continue
            return None
        return None
    if len(resolved) > 1 or len(set(stars)) > 1:
        return None  # “解决了，没解决”: unclear
    if not resolved and not stars:
        return None
    return Verdict(next(iter(resolved)) if resolved else None, stars[0] if stars else None, strong, graded)


NONE_YET = "您还没有提交过诉求。回复“我要反映”，我来帮您登记。"
NONE_YET_APP = "您还没有提交过诉求。在小程序“我要反映”中填写，工作人员会在承诺时限内联系您。"
NOT_FOUND = "没有找到编号为 {number} 的诉求（只能查看您本人提交的诉求），请核对编号后再试。"
NO_USER = "暂时无法确认您的身份，请稍后再试。"
UNAVAILABLE = "系统暂时繁忙，请稍后再试。"
STATUS_BUSY = "系统暂时繁忙，小二这会儿查不到您的诉求，请过一两分钟再回复“我的诉求”试试～"
NOTHING_TO_RATE = "您目前没有待评价的诉求。回复“我的诉求”查看全部。"
NOTHING_TO_SUPPLEMENT = "您目前没有需要补充材料的诉求。回复“我的诉求”查看全部。"
SUPPLEMENT_NOT_SENT = "刚才补充的内容没有提交。"
SUPPLEMENT_ELSEWHERE = "\n有新情况要告诉工作人员，请回复“人工”；反映新的问题请回复“我要反映”。"
PICK_ONE = "您有 {n} 条{what}的诉求，请回复“{cmd} 序号”或“{cmd} 编号”，例如：{cmd} 1\n{lines}"
ASK_RESOLVED = ("诉求 {number} 已办结。\n办理结果：{resolution}\n\n问题解决了吗？回复 1 已解决，回复 2 未解决（将重新办理）。\n"
                "随时回复“取消”可以退出评价。")
ASK_STARS = "请为这次办理打分：回复 1～5（5 分最满意）。"
ASK_COMMENT = "还有什么想对我们说的吗？直接回复即可；不想写请回复“跳过”。"
HINT_RESOLVED = "请先回复 1（已解决）或 2（未解决），具体情况稍后可以写给我们。"
HINT_STARS = "请回复 1～5 之间的数字（5 分最满意）。"
NOTED = "好的，记下了：{what}。\n"
ASK_RESOLVED_AGAIN = "问题本身解决了吗？回复 1 已解决，回复 2 未解决（将重新办理）。"
STARS_CHANGED = "好的，改为 {stars} 分。\n"
RECENTLY_RATED = timedelta(days=1)
ALREADY_RATED_THANKS = "您对诉求 {number} 的评价已经收到了，谢谢！还有别的问题，直接告诉小二就行。"
LATE_INTRO = "您是在评价诉求 {number} 吧（办理结果：{resolution}）。\n"
LATE_MORE = "\n（您还有 {n} 条诉求等待评价，这条评完后回复“评价”继续。）"
RESUMED = "诉求 {number} 已办结。\n办理结果：{resolution}\n\n您上次已回复：{told}。\n"
LATE_NOT_THIS = "\n不是要评价的话，回复“取消”即可。"
STARS_CHANGE_HINT = "\n（分数不对，直接回复 1～5 就能改。）"
RATED_CLOSED = "感谢您的评价！诉求 {number} 已关闭。"
RATED_REOPENED = "收到您的反馈，诉求 {number} 将重新办理，工作人员会尽快与您联系。"
RATED_BAD = "\n给您添麻烦了，我们已安排整改。"
ASK_SUPPLEMENT = "诉求 {number} 需要您补充：{request}\n\n请直接回复补充的内容（文字，发送后即提交）；{photos}随时回复“取消”可以退出。"
SUPPLEMENT_PHOTOS = "有照片的话请先发照片，最多 {left} 张。"
SUPPLEMENT_PHOTO = "收到第 {n} 张照片。请再用文字说明补充的内容，发送后即提交。"
SUPPLEMENT_PHOTO_FULL = "照片已经够多了（这条诉求最多 9 张），请用文字说明补充的内容。"
SUPPLEMENT_NO_PHOTOS = "这条诉求的照片已满 9 张，不能再加照片。"
SUPPLEMENT_NEEDS_TEXT = "请用文字写一下补充的内容，例如：“合同首页已拍照，物业是某某物业公司”；发送后即提交。"
SUPPLEMENT_PHOTOS_ONLY = "企业补充了照片 {n} 张"
COMMENT_LONG = "留言请控制在 500 字以内，精简后再发给我；不想写请回复“跳过”。"
NOT_HEARD = "没有听清，请用文字回复。"
DRAFT_OPEN = "\n\n另外，您还有一条未填完的诉求（第 {n}/5 步），还没有提交：回复“继续”接着填，回复“取消”放弃。"
NONE_YET_DRAFT = "您还没有提交过诉求。"
DRAFT_FIRST = "您有一条未填完的诉求（进行到第 {n}/5 步）。请先回复“继续”填完，或回复“取消”放弃，再来{cmd}。"
RATING_OVER = ("诉求 {number} 的评价期限（办结后 7 个工作日）已经过了。如果问题还没解决，请回复“我要反映”重新提交，"
               "我们会尽快处理。")
ALREADY_RATED = "诉求 {number} 这一轮办理您已经评价过了，谢谢！"
SUPPLEMENT_SHORT = "补充的内容有点短，请再具体说说（至少 2 个字）。"
SUPPLEMENT_LONG = "补充的内容太长了，请精简到 2000 字以内。"
SUPPLEMENTED = "已补充，诉求 {number} 恢复办理。{photos}办理结果会通知您，回复“我的诉求”可随时查看进度。"
MENU_LEFT = "\n\n刚才的{what}已退出，没有提交；需要时回复“{what}”重新开始。"
CANCELLED = "已退出，没有提交任何内容。需要时回复“我的诉求”查看。"
NOT_CANCELLED = "好的，不取消。"
# “什么意思”, “没看懂” inside a flow (knowledge.smalltalk.is_clarification): about the question just asked, no answer
# (it was sent to staff as the material, or became the rating's comment).
CLARIFY_SUPPLEMENT = ("抱歉没说清楚～办理诉求 {number} 的工作人员需要您补充：{request}\n请把这些内容用文字回复给小二"
                      "（有照片可以先发照片），发送后就转给工作人员。不清楚要补充什么，可以回复“人工”问问工作人员；"
                      "回复“取消”退出。")
CLARIFY_COMMENT = ("还有什么想对我们说的吗？就是请您说说对这次办理的看法或建议，工作人员会看到；没有要说的，回复“跳过”"
                   "就提交评价。")
CLARIFY_RATING = "抱歉没说清楚～诉求 {number} 已办结，小二在请您评价这次办理：\n{ask}\n不想评价了请回复“取消”；想直接找工作人员请回复“人工”。"
LOST = "刚才的操作已失效（超过 30 分钟没有回复，或系统刚刚重启），内容没有提交。请回复“我的诉求”重新查看。"


def _tz():
    from wxapp_backend.appeals.calendar import TZ

    return TZ


def _when(value: datetime | None) -> str:
    return value.astimezone(_tz()).strftime("%m月%d日") if value else ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _summary(text: str) -> str:
    return _shorten(" ".join((text or "").split()), SUMMARY_CHARS)


def _is_command(text: str) -> bool:
    """Texts that start something else: they leave a follow-up flow to their own rules."""
    return text in START_WORDS or text in PASS_THROUGH or follow_up_command(text)


def _in_flow(ctx: Context) -> bool:
    if ctx.msg.msg_type not in ("text", "image", "voice"):
        return False
    if ctx.msg.msg_type == "text" and _is_command(intake.word(ctx.text)):
        return False
    return _state(ctx).get("flow") == FLOW


def _person_in_flow(ctx: Context) -> bool:
    """人工 during a rating or supplement: the person is reached and the flow ends, so that a later “你好” or “1”
    is not taken as an answer to a question asked before the hand-over."""
    msg = ctx.msg
    asked = (msg.msg_type == "text" and intake.word(ctx.text) in PASS_THROUGH) or \
        (msg.is_event and msg.event == "click" and msg.event_key == "MENU_HUMAN")  # the menu's 人工服务 too
    return asked and _state(ctx).get("flow") == FLOW


def _menu_in_flow(ctx: Context) -> bool:
    """The menu (a button, or “菜单”) during a rating or supplement: the user turned to something else, so the
    flow ends (a question asked after “政策问答” was filed as the rating's comment or as the supplement)."""
    return intake.menu_message(ctx) and _state(ctx).get("flow") == FLOW


def _command_in_flow(ctx: Context) -> bool:
    """“活动”, “撤回诉求” during a rating or supplement: another command (“活动” was sent to staff as the material); the
    flow ends, as for the menu."""
    return ctx.msg.msg_type == "text" and intake.elsewhere_command(ctx.text) and _state(ctx).get("flow") == FLOW


# A location, a sticker, a video during a rating or supplement: answered as if nothing were under way (“收到您的位置…请用
# 文字告诉小二”), the question waiting forgotten. As in a draft (appeal_intake.other_in_draft): what waits is said. (A
# location during a supplement is the supplement itself: see LOCATION_SUPPLEMENTED.)
IN_FLOW = {"rate": "\n\n您正在评价诉求 {number}，还没有提交：\n{ask}",
           "supplement": "\n\n您正在为诉求 {number} 补充材料，还没有提交：\n{ask}"}


# A location sent while supplementing: recorded as the supplement's text (the appeal has no place field), so staff see
# where it is; it was only answered with “收到您的位置…请用文字告诉小二” and the reminder, the place never reaching them.
LOCATION_SUPPLEMENTED = "收到您的位置{label}，已作为补充内容提交给工作人员。\n"


def location_text(ctx: Context) -> str:
    """“位置：新华路1号（经纬度 31.2,121.4）” for a location message; "" when it carries neither a label nor a point."""
    loc = ctx.msg.location
    if loc is None:
        return ""
    label = (loc.label or "").strip()
    point = f"经纬度 {loc.lat},{loc.lng}" if loc.lat is not None and loc.lng is not None else ""
    if not label and not point:
        return ""
    return f"位置：{label}（{point}）" if label and point else f"位置：{label or point}"


def _other_in_flow(ctx: Context) -> bool:
    """A message of a type no step reads (not text, image or voice) during a rating or supplement."""
    if ctx.msg.is_event or ctx.msg.msg_type in ("text", "image", "voice"):
        return False
    return _state(ctx).get("flow") == FLOW


def other_in_flow(ctx: Context) -> Reply:
    """What the chat says to such a message anyway, then the question that waits."""
    from .bot import UNSUPPORTED, location_ack

    d = _state(ctx)
    if d.get("kind") == "supplement" and ctx.msg.msg_type == "location":
        where = location_text(ctx)
        if where:  # the place staff asked about (“门牌在哪”): part of the supplement, as a text is
            reply = _supplement_submit(ctx, d, where)
            if isinstance(reply, Text) and reply.text.startswith(SUPPLEMENTED.split("，")[0]):
                label = (ctx.msg.location.label or "").strip()
                return Text(LOCATION_SUPPLEMENTED.format(label=f"（{label}）" if label else "") + reply.text)
            return reply
    said = location_ack(ctx) if ctx.msg.msg_type == "location" else UNSUPPORTED
    return Text(said + in_flow_note(d))


def in_flow_note(d: dict[str, Any]) -> str:
    """The question of rating or supplement `d` that waits (IN_FLOW); '' when there is none."""
    if d.get("kind") == "rate":
        ask = {"resolved": ASK_RESOLVED_AGAIN, "stars": ASK_STARS}.get(d.get("step"), ASK_COMMENT)
    elif d.get("kind") == "supplement":
        ask = f"工作人员需要您补充：{d.get('request') or '（见通知）'}\n{SUPPLEMENT_NEEDS_TEXT}"
    else:  # gone meanwhile
        return ""
    return IN_FLOW[d["kind"]].format(number=d.get("number", ""), ask=ask)


def leave_for_menu(ctx: Context) -> Reply:
    kind = _state(ctx).get("kind")
    _leave_flow(ctx)
    what = "评价" if kind == "rate" else "补充"
    left = MENU_LEFT.format(what=what)
    return Text(intake.menu_answer(ctx, room=REPLY_TEXT_MAX_BYTES - len(left.encode("utf-8"))) + left)


def to_person(ctx: Context) -> Reply:
    from .bot import human

    _leave_flow(ctx)
    return human(ctx)


def _words(ctx: Context) -> str:
    """What the user said: the text, or a voice message's transcript without the punctuation it ends with."""
    if ctx.msg.msg_type == "voice":
        return (ctx.msg.recognition or "").strip().rstrip("。，！？.,!?")
    return ctx.text


# --- reading -----------------------------------------------------------------------------------------------


def _line(appeal, rated: set[tuple[int, int]], now: datetime, *, chat: bool = True) -> str:
    from wxapp_backend.appeals.followup import awaiting_rating
    from wxapp_backend.appeals.states import LABELS, OPEN, AppealStatus

    text = f"{appeal.number}【{LABELS.get(appeal.status, appeal.status)}】{_summary(appeal.content)}"
    if awaiting_rating(appeal, rated, now):
        return text + (f"\n  → 回复“评价 {appeal.number}”评价" if chat else "\n  → 待您评价")
    if appeal.status == AppealStatus.PENDING_ENTERPRISE:
        need = _summary(appeal.info_request) or "材料"
        return text + (f"\n  → 需要补充：{need}，回复“补充 {appeal.number}”" if chat else f"\n  → 需要补充：{need}")
    if appeal.status in OPEN and appeal.due_at is not None:
        if now > appeal.due_at:  # a date gone by is no promise any more: say it is late and being pressed
            return text + f"（原承诺 {_when(appeal.due_at)} 前办结，已超期，我们正在督办）"
        return text + f"（承诺 {_when(appeal.due_at)} 前办结）"
    return text


def status(ctx: Context) -> Reply:
    """我的诉求: the user's latest appeals, each with what they can do about it."""
    if ctx.user_id is None:
        return Text(NO_USER)
    text, ids = status_list(ctx.user_id)
    draft = _state(ctx)
    if draft.get("flow") == intake.FLOW and draft.get("step") in intake.STEPS:  # it said “没有提交过” and no more
        if text == NONE_YET:
            text = NONE_YET_DRAFT
        text += DRAFT_OPEN.format(n=intake.STEPS.index(draft["step"]) + 1)
    elif draft.get("flow") == FLOW:  # a rating or supplement under way ends here: say so (it ended silently)
        what = "评价" if draft.get("kind") == "rate" else "补充"
        text += MENU_LEFT.format(what=what)
    _leave_flow(ctx)
    from .kb import forget_choices, offer_list

    forget_choices(ctx)  # another topic: a digit no longer picks an earlier “您是不是想问” choice
    offer_list(ctx, "appeal", ids)  # but one of these appeals (“1”: the first of the list, not 政策问答)
    return Text(text)


def status_text(user_id: int, *, chat: bool = True) -> str:
    """我的诉求 as text: in the WeChat chat with the replies that act on each appeal; elsewhere (the API's chat,
    inside the mini-program) pointing to the mini-program's pages, where the same is done with buttons."""
    return status_list(user_id, chat=chat)[0]


def status_list(user_id: int, *, chat: bool = True) -> tuple[str, list[int]]:
    """`status_text` and the ids of the appeals it numbered: a number replied next picks one (`appeal_detail_text`),
    as after a list of activities (it was main-menu item 1)."""
    from wxapp_backend.appeals.followup import rated_rounds
    from wxapp_backend.appeals.services import list_own
    from wxapp_backend.db import session_scope, utcnow

    from .bot import _pick_hint

    try:
        with session_scope() as s:
            page = list_own(s, user_id, per_page=LIST_LIMIT)
            total, appeals = page.total, page.items
            if not total:
                return (NONE_YET if chat else NONE_YET_APP), []
            rated, now = rated_rounds(s, [a.id for a in appeals]), utcnow()
            lines = [f"{i}. {_line(a, rated, now, chat=chat)}" for i, a in enumerate(appeals, 1)]
            ids = [a.id for a in appeals]
    except DB_AWAY:  # the appeals are only in the database: said so, not “小二开了个小差”
        log.warning("appeal list not read: database away", exc_info=True)
        return STATUS_BUSY, []
    head = f"您的诉求（共 {total} 条" + (f"，显示最近 {LIST_LIMIT} 条）：" if total > LIST_LIMIT else "）：")
    tail = "回复“我要反映”登记新的诉求。" if chat else "在小程序“我的诉求”中可以查看详情、补充材料和评价。"
    return "\n".join([head, *lines, _pick_hint(len(ids)).replace("详情", "办理进展") + tail]), ids


PROGRESS_EVENTS = 5  # the latest public steps of the timeline an appeal picked from the list shows
PROGRESS_NOTE_CHARS = 60
_NOT_A_STEP = frozenset({"notified"})  # “已通知企业：…” only repeats the step before it
APPEAL_GONE = "没有找到这条诉求（只能查看您本人提交的诉求）。回复“我的诉求”重新查看。"


def appeal_detail_text(user_id: int | None, appeal_id: int, *, chat: bool = True) -> str:
    """One appeal picked by its number from the list 我的诉求 showed: where it stands (the list's line, with what the
    user can do about it) and its progress, the timeline's public steps as the mini-program shows them. Only the
    user's own appeal: anything else reads as not found."""
    from wxapp_backend.appeals.followup import own_by_id, rated_rounds
    from wxapp_backend.appeals.services import timeline
    from wxapp_backend.db import session_scope, utcnow

    if user_id is None:
        return APPEAL_GONE
    with session_scope() as s:
        appeal = own_by_id(s, user_id, int(appeal_id))
        if appeal is None:
            return APPEAL_GONE
        line = _line(appeal, rated_rounds(s, [appeal.id]), utcnow(), chat=chat)
        content = " ".join((appeal.content or "").split())
        events = [e.to_public() | {"when": _when(e.created_at)}
                  for e in timeline(s, appeal, public_only=True) if e.action not in _NOT_A_STEP]
    steps = []
    for e in events[-PROGRESS_EVENTS:]:
        note = " ".join((e["note"] or "").split())
        # “受理：诉求已受理”, “提交诉求：企业提交诉求”: a note that only says the step again is left out
        note = "" if e["action_label"] in note or e["action_label"].replace("诉求", "") in note[:8] else \
            _shorten(note, PROGRESS_NOTE_CHARS)
        steps.append(f"· {e['when']} {e['action_label']}" + (f"：{note}" if note else ""))
    more = f"（共 {len(events)} 步，显示最近 {PROGRESS_EVENTS} 步）" if len(events) > PROGRESS_EVENTS else ""
    parts = [f"诉求 {line}"]
    if len(content) > SUMMARY_CHARS:  # the list's line shows its first words only
        parts.append(f"内容：{_shorten(content, PROGRESS_NOTE_CHARS * 2)}")
    if steps:
        parts.append(f"办理进展{more}：\n" + "\n".join(steps))
    parts.append("回复“我的诉求”查看您的全部诉求。" if chat else "在小程序“我的诉求”中可以查看详情、补充材料和评价。")
    return "\n".join(parts)


def _leave_flow(ctx: Context) -> None:
    """The user left the rating or supplement (menu, 人工, 我的诉求): “需要时回复“评价”重新开始” — from the start, so
    what an unfinished rating had been told is forgotten too (only a conversation that expired keeps it)."""
    try:
        if ctx.state.get().get("flow") == FLOW:
            ctx.state.clear()
            _drop_kept(ctx)
    except redis.RedisError:
        pass


# “评价 2”: the 2nd of the numbered list the bot showed last (我的诉求's, or the list of those to rate), as a bare “2”
# picks from it. It took the 2nd of a list of appeals waiting for a rating the user may never have seen (after 我的诉求,
# “评价 1” rated another appeal than the list's 1st), and with a single one to rate “评价 2” may mean 2 points.
PICKED = "\n（选的是刚才列表中的第 {n} 条{more}。）"
LISTED_NOT_THIS = "刚才列表中的第 {n} 条是诉求 {number}（{label}），现在不需要{what}。"
LISTED_NOT_THERE = "刚才的列表只有 {count} 条，没有第 {n} 条。"
LISTED_GONE = "刚才列表中的第 {n} 条诉求找不到了。"
ONE_INSTEAD = "现在需要{what}的是诉求 {number}（{summary}）：请回复“{cmd} {number}”。"
NO_LIST = "刚才没有列出诉求（或列表已超过 15 分钟），小二不确定“{cmd} {n}”指的是哪一条。\n"
SCORE_OR_PLACE = ("小二不确定“评价 {n}”的意思：是要给诉求 {number}（{summary}）打 {n} 分吗？是的话请回复“{n}分”；"
                  "想从头评价这条诉求，请回复“评价”。")


def _choose(ctx: Context, number: str | None, wanted, what: str, cmd: str, none_text: str, *,
            scored: bool = False) -> tuple[Any, str | None]:
    """The appeal a command is about: the one with that number (SQ…), the one at that position of the list the bot
    showed last, or the only one `wanted` accepts. Returns (appeal id and details, None) or (None, the reply to give
    instead: a numbered list to pick from, remembered as 我的诉求's is). `scored`: a bare position might be a score."""
    from wxapp_backend.appeals.followup import awaiting_rating, own_by_id, own_by_number, rated_rounds
    from wxapp_backend.appeals.services import list_own
    from wxapp_backend.appeals.states import LABELS, AppealStatus
    from wxapp_backend.db import session_scope, utcnow
    from wxapp_backend.knowledge_store.chat import choice_number

    from . import kb

    position = choice_number(number) if number and not number.upper().startswith("SQ") else None
    with session_scope() as s:
        now = utcnow()
        if number and position is None:
            appeal = own_by_number(s, ctx.user_id, number)
            if appeal is None:
                return None, NOT_FOUND.format(number=number.upper())
            rated = rated_rounds(s, [appeal.id])
            if not wanted(appeal, rated, now):
                if wanted is awaiting_rating and appeal.status == AppealStatus.RESOLVED:
                    if (appeal.id, appeal.round) in rated:
                        return None, ALREADY_RATED.format(number=appeal.number)
                    return None, RATING_OVER.format(number=appeal.number)
                label = LABELS.get(appeal.status, appeal.status)
                return None, f"诉求 {appeal.number} 当前为“{label}”，现在不需要{what}。回复“我的诉求”查看。"
            return _details(appeal), None
        recent = list_own(s, ctx.user_id, per_page=50).items
        rated = rated_rounds(s, [a.id for a in recent])
        found = [a for a in recent if wanted(a, rated, now)]
        head = ""
        shown = kb.shown_list(ctx, "appeal") if position is not None else None
        if shown is not None:  # the list the bot showed last: its numbering
            if position > len(shown):
                head = LISTED_NOT_THERE.format(count=len(shown), n=position)
            else:
                appeal = own_by_id(s, ctx.user_id, int(shown[position - 1]))
                if appeal is None:
                    head = LISTED_GONE.format(n=position)
                elif wanted(appeal, rated_rounds(s, [appeal.id]), now):
                    return _details(appeal) | {"position": position}, None
                else:
                    head = LISTED_NOT_THIS.format(n=position, number=appeal.number, what=what,
                                                  label=LABELS.get(appeal.status, appeal.status))
            if len(found) == 1:  # named by its number: the list shown stays as it was
                return None, head + ONE_INSTEAD.format(what=what, number=found[0].number, cmd=cmd,
                                                       summary=_summary(found[0].content))
        if not found:
            return None, head + none_text
        if position is None and len(found) == 1:
            return _details(found[0]), None
        if position is not None and shown is None:  # no list shown: which one, or a score?
            if len(found) == 1 and scored and position <= 5:
                return None, SCORE_OR_PLACE.format(n=position, number=found[0].number,
                                                   summary=_summary(found[0].content))
            if len(found) == 1 and position == 1:
                return _details(found[0]), None
            head = NO_LIST.format(cmd=cmd, n=position)
            if len(found) == 1:
                return None, head + ONE_INSTEAD.format(what=what, number=found[0].number, cmd=cmd,
                                                       summary=_summary(found[0].content))
        listed = found[:LIST_LIMIT]
        kb.offer_list(ctx, "appeal", [a.id for a in listed])  # “评价 2” or a bare “2” next picks from this list
        lines = "\n".join(f"{i}. {a.number}：{_summary(a.content)}" for i, a in enumerate(listed, 1))
        return None, head + PICK_ONE.format(n=len(found), what=f"待{what}", cmd=cmd, lines=lines)


def _details(appeal) -> dict[str, Any]:
    return {"id": appeal.id, "number": appeal.number, "round": appeal.round, "resolution": appeal.resolution or "",
            "request": appeal.info_request or "", "photos": len(appeal.images or [])}


def _start(ctx: Context, data: dict[str, Any], reply: str) -> Reply:
    try:
        ctx.state.set({"flow": FLOW, "v": VERSION, **data})
    except redis.RedisError:
        return Text(UNAVAILABLE)
    if data.get("kind") == "rate":
        _keep_answers(ctx, data)
    return Text(reply)


# --- rating ------------------------------------------------------------------------------------------------


def _target(ctx: Context, pattern: re.Pattern[str], wanted, what: str, cmd: str,
            none_text: str, *, scored: bool = False) -> tuple[dict[str, Any], None] | tuple[None, Reply]:
    """The appeal a 评价 / 补充 command is about, or the reply that says why there is none."""
    if ctx.user_id is None:
        return None, Text(NO_USER)
    draft = _state(ctx)
    if draft.get("flow") == intake.FLOW and draft.get("step") in intake.STEPS:  # not overwritten by a new flow
        return None, Text(DRAFT_FIRST.format(n=intake.STEPS.index(draft["step"]) + 1, cmd=cmd))
    number = pattern.match(plain(ctx.text))
    found, refusal = _choose(ctx, number.group(1) if number else None, wanted, what, cmd, none_text, scored=scored)
    return (found, None) if found is not None else (None, Text(refusal or none_text))


def rate_start(ctx: Context) -> Reply:
    """评价 [编号]."""
    from wxapp_backend.appeals.followup import awaiting_rating

    found, refusal = _target(ctx, RATE_RE, awaiting_rating, "评价", "评价", NOTHING_TO_RATE, scored=True)
    if found is None:
        return refusal
    return _with_position(_rate_start(ctx, found), found, "，分数稍后再打")


def _with_position(reply: Reply, found: dict[str, Any], more: str = "") -> Reply:
    """The reply to a command that picked an appeal by its position in a list: which it took, said."""
    if not found.get("position") or not isinstance(reply, Text) or reply.text == UNAVAILABLE:
        return reply
    return Text(reply.text + PICKED.format(n=found["position"], more=more))


def _rate_start(ctx: Context, found: dict[str, Any]) -> Reply:
    resolution = _shorten(found["resolution"], REQUEST_CHARS)
    d = {"kind": "rate", "step": "resolved", "appeal_id": found["id"], "number": found["number"],
         "round": found["round"]}
    kept = _kept_answers(ctx, found["id"], found["round"])
    if kept:  # an unfinished rating of it: only what is missing is asked
        d.update(kept)
        told = "，".join(([("问题已解决" if kept["resolved"] else "问题还没解决")] if "resolved" in kept else [])
                        + ([f"{kept['stars']} 分"] if "stars" in kept else []))
        return _record(ctx, d, Verdict(None, None, False, False),
                       RESUMED.format(number=found["number"], resolution=resolution or "（见通知）", told=told))
    return _start(ctx, d, ASK_RESOLVED.format(number=found["number"], resolution=resolution or "（见通知）"))


def _rate_step(ctx: Context, d: dict[str, Any], text: str) -> Reply:
    step = d.get("step")
    if step == "resolved":
        said = verdict(text, "resolved")
        if said is None:
            return Text(HINT_RESOLVED)
        return _record(ctx, d, said)
    if step == "stars":
        said = verdict(text, "stars")
        if said is None:
            return Text(HINT_STARS)
        return _record(ctx, d, said)
    if step == "comment":
        if not text:
            return Text(ASK_COMMENT)
        if text in SKIP_WORDS or text in NO_COMMENT_WORDS:  # “没有了” is no comment, not the comment “没有了”
            return _rate_submit(ctx, d, "")
        score = _STARS.match(text)
        if score:  # “4”, “改成4分”: the score again (a comment “4” says nothing), changed
            stars = int(score.group(1)) if score.group(1) else _STAR_WORDS[score.group(2)]
            d["stars"] = stars
            return _start(ctx, d, STARS_CHANGED.format(stars=stars) + ASK_COMMENT)
        comment = _words(ctx)  # the words as written, not normalised
        if len(comment) > COMMENT_MAX:
            return Text(COMMENT_LONG)
        return _rate_submit(ctx, d, comment)
    ctx.state.clear()
    return Text(LOST)


def _record(ctx: Context, d: dict[str, Any], said: Verdict, intro: str = "") -> Reply:
    """Keep what an answer said (resolved or not, the score, or both) and ask what is still missing."""
    resolved = said.resolved
    if resolved is None and said.graded and said.stars is not None and said.stars >= 4 and "resolved" not in d:
        resolved = True  # “满意” / “挺好的” to “问题解决了吗？” is a yes
    noted = []
    if resolved is not None:
        d["resolved"] = resolved
        if intro or said.resolved is None or said.stars is not None or d.get("step") != "resolved":
            noted.append("问题已解决" if resolved else "问题还没解决")
    if said.stars is not None:
        d["stars"] = said.stars
        if said.graded or d.get("step") != "stars" or intro:
            noted.append(f"{said.stars} 分（{GRADE_LABELS[said.stars]}）")
    head = intro + (NOTED.format(what="，".join(noted)) if noted else "")
    if "resolved" not in d:
        d["step"] = "resolved"
        return _start(ctx, d, head + ASK_RESOLVED_AGAIN)
    if "stars" not in d:
        d["step"] = "stars"
        return _start(ctx, d, head + ASK_STARS)
    d["step"] = "comment"
    change = STARS_CHANGE_HINT if said.graded or intro else ""
    return _start(ctx, d, head + ASK_COMMENT + change)


def _rate_submit(ctx: Context, d: dict[str, Any], comment: str) -> Reply:
    from sqlalchemy.exc import IntegrityError

    from wxapp_backend.appeals.services import BAD_SATISFACTION, rate
    from wxapp_backend.db import session_scope
    from wxapp_backend.errors import AppError, ValidationError

    taken = _take(ctx, d)  # whatever the service answers, this flow is over: a repeated answer cannot rate twice
    try:
        with session_scope() as s:
            rate(s, ctx.user_id, int(d["appeal_id"]), resolved=bool(d.get("resolved")),
                 satisfaction=int(d.get("stars") or 0), comment=comment)
    except ValidationError as exc:
        if "satisfaction" not in exc.fields:
            return Text(f"评价没有提交：{exc.message}")
        # The score refused: the rating stays open at the score (the user had to start it all over again).
        again = {k: v for k, v in taken.items() if k not in ("flow", "v", "stars")}
        return _start(ctx, {**again, "step": "stars"}, f"评价没有提交：{exc.message}\n{ASK_STARS}")
    except AppError as exc:  # already rated, the window closed, reopened by staff meanwhile ...
        return Text(f"评价没有提交：{exc.message}")
    except IntegrityError:  # a concurrent rating of the same round won the race
        return Text("这一轮办理您已经评价过了。")
    except Exception:
        _put_back(ctx, taken)
        raise
    _drop_kept(ctx)
    log.info("chat appeal rated", extra={"account": ctx.account, "user_id": ctx.user_id, "appeal_id": d["appeal_id"]})
    reply = (RATED_CLOSED if d.get("resolved") else RATED_REOPENED).format(number=d["number"])
    return Text(reply + (RATED_BAD if int(d.get("stars") or 0) <= BAD_SATISFACTION else ""))


# --- supplementing -----------------------------------------------------------------------------------------


def supplement_start(ctx: Context) -> Reply:
    """补充 [编号]."""
    from wxapp_backend.appeals.followup import needs_info

    found, refusal = _target(ctx, SUPPLEMENT_RE, needs_info, "补充材料", "补充", NOTHING_TO_SUPPLEMENT)
    if found is None:
        return refusal
    left = max(0, MAX_PHOTOS - found["photos"])
    photos = SUPPLEMENT_PHOTOS.format(left=left) if left else SUPPLEMENT_NO_PHOTOS
    ask = ASK_SUPPLEMENT.format(number=found["number"], request=_shorten(found["request"], REQUEST_CHARS) or "（见通知）",
                                photos=photos)
    return _with_position(_start(ctx, {"kind": "supplement", "step": "content", "appeal_id": found["id"],
                                       "number": found["number"], "left": left, "media": [],
                                       "request": _shorten(found["request"], REQUEST_CHARS)}, ask), found)


def _supplement_step(ctx: Context, d: dict[str, Any], text: str) -> Reply:
    if ctx.msg.msg_type == "image":
        try:  # photos sent together arrive together: added atomically, never written back over each other
            n = add_photo(ctx, FLOW, "appeal_id", d.get("appeal_id"), int(d.get("left") or 0))
        except redis.RedisError:
            return Text(UNAVAILABLE)
        if n is None:
            return Text(LOST)
        return Text(SUPPLEMENT_PHOTO_FULL if n < 0 else SUPPLEMENT_PHOTO.format(n=n))
    media = _state(ctx).get("media") if text in DONE_WORDS else None
    if media:
        content = SUPPLEMENT_PHOTOS_ONLY.format(n=len(media))
    elif text in DONE_WORDS or text in FILLER_WORDS or _in_passing(text):
        return Text(SUPPLEMENT_NEEDS_TEXT)
    else:
        content = _words(ctx)  # the words as written, not normalised
    return _supplement_submit(ctx, d, content)


def _in_passing(text: str) -> bool:
    """“好的，谢谢”, “嗯嗯”, “收到了”, “你好”: said in passing, not the supplement (staff received “好的，谢谢” as the
    information they asked for, and the appeal went back to work without it). So are annoyance and a verdict on the
    bot (“你好笨”, “没用”, “有用”: staff received “你好笨” as the material)."""
    from knowledge.smalltalk import detect_smalltalk, feedback_of, is_venting

    return detect_smalltalk(text) in ("ack", "thanks", "greeting", "bye") or is_venting(text) \
        or feedback_of(text) is not None


def _supplement_submit(ctx: Context, d: dict[str, Any], content: str) -> Reply:
    if len(content) < 2:
        return Text(SUPPLEMENT_SHORT)
    if len(content) > SUPPLEMENT_MAX:
        return Text(SUPPLEMENT_LONG)
    from wxapp_backend.appeals.intake import queue_chat_photos, supplement_problem

    problem = supplement_problem(content)
    if problem:  # “👍👍”, “[微笑][微笑]”: sent to staff as the material, the appeal back to work with nothing
        return Text(problem if d.get("step") else SUPPLEMENT_NOT_SENT + problem)
    from wxapp_backend.appeals.services import supplement
    from wxapp_backend.db import session_scope
    from wxapp_backend.errors import AppError

    taken = _take(ctx, d)  # the photos that arrived up to now come along
    media = [m for m in taken.get("media", []) if isinstance(m, str)][: int(d.get("left") or 0)]
    try:
        with session_scope() as s:
            appeal = supplement(s, ctx.user_id, int(d["appeal_id"]), content)
            if media:
                queue_chat_photos(s, appeal, ctx.account, media,
                                  job_id=f"appeal-{appeal.id}-supplement-{ctx.msg.msg_id or ctx.msg.create_time}")
    except AppError as exc:
        return Text(f"补充没有提交：{exc.message}")
    except Exception:
        _put_back(ctx, taken)
        raise
    log.info("chat appeal supplemented", extra={"account": ctx.account, "user_id": ctx.user_id,
                                                "appeal_id": d["appeal_id"]})
    photos = f"照片 {len(media)} 张稍后附上。" if media else ""
    _remember_supplement(ctx, d["number"], content)
    return Text(SUPPLEMENTED.format(number=d["number"], photos=photos))


# The supplement sent again (a double tap, or the answer was slow): “刚才补充的内容没有提交” (the first had reached staff),
# or “这个问题我还没学会” when it came after the 补充 flow.
SUPPLEMENT_AGAIN = "这段补充已经提交过了（诉求 {number}），不用再发～办理结果会通知您，回复“我的诉求”可随时查看进度。"
SUPPLEMENT_AGAIN_TTL = 10 * 60


def _again_key(ctx: Context) -> str:
    return f"wx:supplemented:{ctx.account}:{ctx.openid}"


def _remember_supplement(ctx: Context, number: str, content: str) -> None:
    import json

    try:
        ctx.redis.set(_again_key(ctx), json.dumps({"number": number, "content": content}, ensure_ascii=False),
                      ex=SUPPLEMENT_AGAIN_TTL)
    except redis.RedisError:
        pass  # the text sent again is then answered as any other


def supplement_again(ctx: Context, text: str, raw: Any = intake._UNREAD) -> str | None:
    """What to say to `text` when it is the supplement just submitted, sent again; None otherwise. `raw`: the value
    of `_again_key` already read by the caller (with other reads in one round trip)."""
    import json

    try:
        if raw is intake._UNREAD:
            raw = ctx.redis.get(_again_key(ctx))
        told = json.loads(raw) if raw else None
    except (redis.RedisError, ValueError):
        return None
    if isinstance(told, dict) and intake.same_words(text, str(told.get("content") or "")):
        return SUPPLEMENT_AGAIN.format(number=told.get("number", ""))
    return None


# “补充：物业电话 021-…” in one message (it went to the knowledge base). A separator or a number is needed:
# “补充医疗保险怎么买” is a question.
_SUPPLEMENT_TEXT_RE = re.compile(r"^(?:补充材料|我要补充|补充)\s*(SQ\d{8}-\d{4})?\s*[：:，,]\s*(?P<content>\S.*)$|"
                                 r"^(?:补充材料|我要补充|补充)\s*(SQ\d{8}-\d{4})\s+(?P<content2>\S.*)$",
                                 re.IGNORECASE | re.S)


def _supplement_with_text(ctx: Context) -> re.Match | None:
    return _SUPPLEMENT_TEXT_RE.match(ctx.text) if ctx.msg.msg_type == "text" and ctx.text else None


def supplement_with_text(ctx: Context) -> Reply:
    """补充 [编号]：内容 — the supplement in one message."""
    from wxapp_backend.appeals.followup import needs_info

    m = ctx.match
    number, content = m.group(1) or m.group(3), (m.group("content") or m.group("content2")).strip()
    if ctx.user_id is None:
        return Text(NO_USER)
    draft = _state(ctx)
    if draft.get("flow") == intake.FLOW and draft.get("step") in intake.STEPS:
        return Text(DRAFT_FIRST.format(n=intake.STEPS.index(draft["step"]) + 1, cmd="补充"))
    found, refusal = _choose(ctx, number, needs_info, "补充材料", "补充", NOTHING_TO_SUPPLEMENT)
    if found is None:  # what they wrote went nowhere: say so (they believed staff had it)
        again = supplement_again(ctx, content)
        if again is not None:
            return Text(again)
        return Text(SUPPLEMENT_NOT_SENT + (refusal or NOTHING_TO_SUPPLEMENT) + SUPPLEMENT_ELSEWHERE)
    return _supplement_submit(ctx, {"kind": "supplement", "appeal_id": found["id"], "number": found["number"],
                                    "left": 0, "media": []}, content)


def _take(ctx: Context, d: dict[str, Any]) -> dict[str, Any]:
    """End the flow atomically and return its state as it is now (photos that arrived meanwhile included), or
    `d` when it was already gone (another message ended it) or Redis cannot be reached."""
    taken: dict[str, Any] = {}

    def take(cur: dict[str, Any]) -> dict[str, Any]:
        taken.clear()
        if cur.get("flow") == FLOW and cur.get("kind") == d.get("kind") and cur.get("appeal_id") == d.get("appeal_id"):
            taken.update(cur)
            return {}
        return cur

    try:
        ctx.state.update(take)
    except redis.RedisError:
        return d
    return taken or d


def _put_back(ctx: Context, taken: dict[str, Any]) -> None:
    """Nothing was saved (the database failed): give the flow back as `_take` found it, unless another flow
    started meanwhile, so that WeChat's retry or the user's next try (the crash reply asks for one) submits it
    instead of landing outside the flow, the text and photos lost."""
    def restore(cur: dict[str, Any]) -> dict[str, Any]:
        return cur or dict(taken)

    try:
        ctx.state.update(restore)
    except redis.RedisError:
        log.warning("conversation state not restored after a failed submission", extra={"account": ctx.account})


def step(ctx: Context) -> Reply:
    """One answer inside a rating or supplement."""
    d = _state(ctx)
    text = intake.word(_words(ctx))  # “取消。”, “5分！”: the word, not the punctuation
    if ctx.msg.msg_type == "voice" and not text:  # and what waits, as for a sticker
        return Text(NOT_HEARD + in_flow_note(d))
    if is_cancel(text):  # “取消吧” too (it was sent to staff as the supplement)
        ctx.state.clear()
        _drop_kept(ctx)
        return Text(CANCELLED)
    if d.get("v") != VERSION or d.get("kind") not in ("rate", "supplement") or ctx.user_id is None:
        ctx.state.clear()
        return Text(LOST)
    if not_cancel(text):  # “不取消”: neither the supplement nor an answer to the rating
        if d["kind"] == "supplement":
            return Text(NOT_CANCELLED + SUPPLEMENT_NEEDS_TEXT)
        return Text(NOT_CANCELLED + {"resolved": ASK_RESOLVED_AGAIN, "stars": ASK_STARS}.get(d.get("step"), ASK_COMMENT))
    if ctx.msg.msg_type != "image" and intake.puzzled(text, _words(ctx)):
        # “什么意思”, “搞什么”, “？？？”: the question again, in other words (“搞什么” was sent to staff as the material,
        # or became the rating's comment; at the other steps it got the bare hint)
        if d["kind"] == "supplement":
            return Text(CLARIFY_SUPPLEMENT.format(number=d.get("number", ""), request=d.get("request") or "（见通知）"))
        ask = {"resolved": ASK_RESOLVED_AGAIN, "stars": ASK_STARS}.get(d.get("step"), CLARIFY_COMMENT)
        return Text(CLARIFY_RATING.format(number=d.get("number", ""), ask=ask))
    if d["kind"] == "rate":
        if ctx.msg.msg_type == "image":
            return Text(HINT_RESOLVED if d.get("step") == "resolved" else HINT_STARS if d.get("step") == "stars"
                        else ASK_COMMENT)
        return _rate_step(ctx, d, text)
    return _supplement_step(ctx, d, text)


def _late_rating(ctx: Context) -> Verdict | None:
    """“满意”, “解决了”, “5分” with no rating under way: the answer to a rating asked more than 30 minutes ago (the
    conversation forgotten), or to the 办结 notice itself (“请评价”). Whether an appeal waits for it is for the
    handler to find out."""
    if ctx.msg.msg_type != "text" or not ctx.text or _state(ctx).get("flow"):
        return None
    said = verdict(ctx.text)
    return said if said is not None and said.strong else None


def late_rating(ctx: Context) -> Reply:
    """A late answer lands on the user's most recently resolved appeal still waiting for a rating (from the
    database): the rating goes on with what the answer said. With no such appeal it is a question as before."""
    from . import kb

    said: Verdict = ctx.match
    if ctx.user_id is None or (plain(ctx.text).isdigit() and kb.has_pending_choices(ctx)):
        return kb.answer(ctx.text, ctx)  # “5” among “您是不是想问” choices: theirs to explain
    return _late(ctx, said)


def _late(ctx: Context, said: Verdict) -> Reply:
    """The late answer `said` on the most recently resolved appeal waiting for a rating, with what an earlier,
    unfinished rating of it already said (only what is missing is asked)."""
    from wxapp_backend.appeals.followup import awaiting_rating_latest, rated_since
    from wxapp_backend.db import session_scope, utcnow

    from . import kb

    try:
        with session_scope() as s:
            now = utcnow()
            appeal, waiting = awaiting_rating_latest(s, ctx.user_id, now)
            found = _details(appeal) if appeal is not None else None
            rated = rated_since(s, ctx.user_id, now - RECENTLY_RATED) if found is None else None
    except DB_AWAY:  # no rating can be taken now: “没用” after an answer is about that answer, as for anyone else
        log.warning("late rating not looked up: database away", exc_info=True)
        return kb.answer(ctx.text, ctx)
    if rated is not None:  # “满意” just after rating: it got “您是不是想问：对诉求处理结果不满意怎么办？”
        return Text(ALREADY_RATED_THANKS.format(number=rated))
    if found is None:
        return kb.answer(ctx.text, ctx)
    d = {"flow": FLOW, "v": VERSION, "kind": "rate", "step": "resolved", "appeal_id": found["id"],
         "number": found["number"], "round": found["round"]}
    d.update(_kept_answers(ctx, found["id"], found["round"]))
    intro = LATE_INTRO.format(number=found["number"],
                              resolution=_shorten(found["resolution"], REQUEST_CHARS) or "（见通知）")
    reply = _record(ctx, d, said, intro)
    if not isinstance(reply, Text) or reply.text == UNAVAILABLE:
        return reply
    more = LATE_MORE.format(n=waiting - 1) if waiting > 1 else ""
    return Text(reply.text + more + LATE_NOT_THIS)


# A bare digit this long after a 办结 notice (or after the chat asked for the score) answers it, unless the bot has
# offered numbers of its own since (the menu, “您是不是想问”): “4” as a score reached 人工 (menu item 4).
SCORE_WINDOW = timedelta(hours=2)


def score_after_notice(ctx: Context) -> Reply | None:
    """A bare 1～5 shortly after the user's appeal was resolved (“请评价”), as the rating's answer; None when the digit
    means something else (the menu, choices)."""
    from datetime import UTC

    from wxapp_backend.appeals.followup import awaiting_rating_latest
    from wxapp_backend.db import session_scope, utcnow

    from . import kb
    from .bot import menu_digit

    digit = menu_digit(ctx.text)  # “4。”: a spoken digit ends with a full stop; “四” as typed
    if ctx.user_id is None or ctx.msg.msg_type != "text" or digit not in ("1", "2", "3", "4", "5") \
            or _state(ctx).get("flow"):
        return None
    try:
        with session_scope() as s:
            now = utcnow()
            appeal, _waiting = awaiting_rating_latest(s, ctx.user_id, now)
            if appeal is None or appeal.resolved_at is None:
                return None
            asked = appeal.resolved_at if appeal.resolved_at.tzinfo else appeal.resolved_at.replace(tzinfo=UTC)
            kept = _kept_answers(ctx, appeal.id, appeal.round, with_step=True)
    except DB_AWAY:  # no rating can be taken now: the digit means what it means without a notice (a choice, the menu)
        log.warning("digit not checked against a rating: database away", exc_info=True)
        return None
    if kept.get("at"):
        asked = max(asked, datetime.fromtimestamp(float(kept["at"]), UTC))
    if now - asked > SCORE_WINDOW or kb.numbers_since(ctx, asked.timestamp()):
        return None
    if kept.get("step") == "resolved" and digit in ("1", "2"):  # the chat last asked “问题解决了吗？”
        return _late(ctx, Verdict(digit == "1", None, True, False))
    return _late(ctx, Verdict(None, int(digit), True, False))


SCORE_APP = ("您是给诉求 {number} 打 {stars} 分（{label}）吧？分数还没有提交：请在小程序“我的诉求”中打开这条诉求，"
             "点“评价”，说说问题解决了没有、选 {stars} 分提交。")
# A second bare digit after SCORE_APP: nothing was asked (the WeChat chat asks “问题解决了吗？” and reads it as the
# answer); it was named back as a new score (“4” then “1”: “1 分”). The chat cannot take a rating: say where.
SCORE_APP_AGAIN = ("在这里回复的数字小二没法替您提交评价哦～诉求 {number} 的评价请在小程序“我的诉求”中打开这条诉求，"
                   "点“评价”：先选问题解决了没有，再选分数（1～5 分）提交。")
_SCORED_NOTE = "app_scored"


def app_score_after_notice(user_id: int | None, text: str, numbers_since, memory=None) -> str | None:
    """`score_after_notice` for the in-app chat (POST /api/v1/chat): a bare 1～5 shortly after the user's appeal was
    resolved is the score (named back; the rating itself is on the appeal's page), unless the chat offered numbers
    of its own since (`numbers_since(when)`: the menu, “您是不是想问” choices). None when the digit means those.
    `memory` (handlers.kb.ChatMemory) keeps the score named back: a digit after it says where to rate instead."""
    from datetime import UTC

    from wxapp_backend.appeals.followup import awaiting_rating_latest
    from wxapp_backend.db import session_scope, utcnow

    from .bot import menu_digit

    digit = menu_digit(text)
    if user_id is None or digit not in ("1", "2", "3", "4", "5"):
        return None
    try:
        with session_scope() as s:
            now = utcnow()
            appeal, _waiting = awaiting_rating_latest(s, user_id, now)
            if appeal is None or appeal.resolved_at is None:
                return None
            asked = appeal.resolved_at if appeal.resolved_at.tzinfo else appeal.resolved_at.replace(tzinfo=UTC)
            number = appeal.number
    except DB_AWAY:  # as score_after_notice: the digit keeps its usual meaning
        log.warning("digit not checked against a rating: database away", exc_info=True)
        return None
    if now - asked > SCORE_WINDOW or numbers_since(asked.timestamp()):
        return None
    earlier = memory.recall(_SCORED_NOTE) if memory is not None else None
    if earlier and earlier.get("number") == number and float(earlier.get("at", 0)) >= asked.timestamp():
        return SCORE_APP_AGAIN.format(number=number)
    if memory is not None:
        memory.remember(_SCORED_NOTE, {"number": number, "at": now.timestamp()},
                        int((SCORE_WINDOW - (now - asked)).total_seconds()))
    stars = int(digit)
    return SCORE_APP.format(number=number, stars=stars, label=GRADE_LABELS[stars])


# --- unfinished ratings --------------------------------------------------------------------------------------
# The conversation state lasts 30 minutes: what a rating had already been told (“1” 已解决) is kept longer, for
# the rating window, so that a late answer asks only for what is missing.
KEPT_TTL = 7 * 24 * 60 * 60


def _kept_key(ctx: Context) -> str:
    return f"wx:rating:{ctx.account}:{ctx.openid}"


def _keep_answers(ctx: Context, d: dict[str, Any]) -> None:
    import json
    import time

    kept = {k: d[k] for k in ("appeal_id", "round", "resolved", "stars", "step") if k in d}
    kept["at"] = time.time()
    try:
        ctx.redis.set(_kept_key(ctx), json.dumps(kept), ex=KEPT_TTL)
    except redis.RedisError:
        pass  # a late answer then asks from the start, as before


def _kept_answers(ctx: Context, appeal_id: int, round_: int, *, with_step: bool = False) -> dict[str, Any]:
    """What an unfinished rating of this round of `appeal_id` was told: {"resolved", "stars"} (those given)."""
    import json

    try:
        raw = ctx.redis.get(_kept_key(ctx))
        kept = json.loads(raw) if raw else {}
    except (redis.RedisError, ValueError):
        return {}
    if not isinstance(kept, dict) or kept.get("appeal_id") != appeal_id or kept.get("round") != round_:
        return {}
    names = ("resolved", "stars", "step", "at") if with_step else ("resolved", "stars")
    return {k: kept[k] for k in names if k in kept}


def _drop_kept(ctx: Context) -> None:
    try:
        ctx.redis.delete(_kept_key(ctx))
    except redis.RedisError:
        pass


# An appeal's number pasted from the notice (“SQ20261206-0001”, “查一下SQ…”, “SQ…进度怎么样了”): it got “没学会”.
_NUMBER_QUERY = re.compile(r"^(?:查询?|查看|查一下|请问|我的)?(?:诉求)?\s*(SQ\d{8}-\d{4})\s*(?:的)?"
                           r"(?:进度|进展|状态|情况)?(?:怎么样|如何|到哪了?|办得怎么样|办好了吗|有结果了吗)?(?:了|呢|啊)?$",
                           re.IGNORECASE)


def _number_query(ctx: Context) -> re.Match | None:
    return _NUMBER_QUERY.match(intake.word(ctx.text)) if ctx.msg.msg_type == "text" and ctx.text else None


def number_status(ctx: Context) -> Reply:
    """One appeal by its number: where it stands and what the user can do about it (their own appeals only)."""
    if ctx.user_id is None:
        return Text(NO_USER)
    return Text(number_status_text(ctx.user_id, ctx.match.group(1)))


def number_status_text(user_id: int, number: str, *, chat: bool = True) -> str:
    """The text of `number_status`; `chat=False` for the app's chat (acting on it is on the mini-program's pages)."""
    from wxapp_backend.appeals.followup import own_by_number, rated_rounds
    from wxapp_backend.db import session_scope, utcnow

    number = number.upper()
    with session_scope() as s:
        appeal = own_by_number(s, user_id, number)
        if appeal is None:
            return NOT_FOUND.format(number=number)
        line = _line(appeal, rated_rounds(s, [appeal.id]), utcnow(), chat=chat)
    return f"诉求 {line}\n" + ("回复“我的诉求”查看您的全部诉求。" if chat else "在小程序“我的诉求”中可以查看详情。")


# “催一下”, “怎么还没人联系我”, “什么时候能处理好”, “催办 SQ…”: pressing an open appeal (the knowledge base offered
# unrelated entries). Pressing words only, short: “怎么催办” is a question about it.
_PRESS = re.compile(r"^(?:(?:帮我|麻烦|请|能不能|可以)?(?:帮我)?催(?:一下|一催|下|办|办一下|促一下)?(?:吧|啊|呀|哈|好吗|可以吗)?|"
                    r"(?:我的(?:诉求|问题)?|诉求)?(?:怎么|为什么|为啥)?(?:还|一直|都)没(?:有)?(?:人)?(?:处理|联系我?|回复|解决|回音|"
                    r"动静|消息|进展|来|管|办|答复)(?:啊|呀|呢|了)?|"
                    r"(?:到底)?什么时候(?:能|才能|可以|才)?(?:处理|解决|办好|有结果|联系我?|来人|给答复)(?:啊|呀|呢|了)?|"
                    r"(?:到底)?(?:有没有人|还有人)管(?:吗|啊|呀)?)"
                    r"\s*(SQ\d{8}-\d{4})?$", re.IGNORECASE)


# “有进展吗”, “办得怎么样了”, “进度如何”: a question about where the appeals stand (it got knowledge-base lists), not
# a press: answered as 我的诉求.
_PROGRESS = re.compile(r"^(?:我的)?(?:诉求|投诉|问题)?(?:现在)?(?:有(?:进展|结果|消息|回音)了?(?:吗|没有?)|"
                       r"(?:办|处理)(?:得|的)?怎么样了?|进度(?:如何|怎么样了?)|到哪一?步了)(?:呢|啊)?$")


def _progress_question(ctx: Context) -> bool:
    return ctx.msg.msg_type == "text" and bool(ctx.text) and not _state(ctx).get("flow") and \
        bool(_PROGRESS.match(intake.word(ctx.text)))


def _press_command(ctx: Context) -> re.Match | None:
    if ctx.msg.msg_type != "text" or not ctx.text or len(ctx.text) > 40 or _state(ctx).get("flow"):
        return None
    return _PRESS.match(intake.word(ctx.text))


PRESSED = ("已在诉求 {number} 上记下您的催办，承办的工作人员会看到，请您耐心等待。\n{line}\n"
           "着急的话也可以回复“人工”直接联系工作人员。")
PRESSED_AGAIN = "诉求 {number} 今天已经催办过了，工作人员会尽快处理。\n{line}\n着急的话可以回复“人工”直接联系工作人员。"
NOTHING_TO_PRESS = "您目前没有正在办理中的诉求，不需要催办。回复“我的诉求”查看全部；有新的问题请回复“我要反映”。"
NOTHING_TO_PRESS_APP = "您目前没有正在办理中的诉求，不需要催办。有新的问题，请在“我要反映”中填写。"
WITHDRAW_APP = "撤回诉求请在小程序“我的诉求”中打开那条诉求，点“撤回”（已办结的诉求不能撤回）。"
# “催一下” on an appeal staff asked material for: the wait is on the user (its clock stopped), nothing is pressed.
PRESS_NEEDS_INFO = "诉求 {number} 正在等您补充材料，补充后工作人员会继续办理，不需要催办哦～\n{line}"
PRESS_OTHERS = "\n（您还有 {n} 条诉求在办理中，催办其中一条请回复“催办 编号”。）"


def press(ctx: Context) -> Reply:
    """催办: the user's most recent open appeal (or the numbered one) pressed once a day, written on its timeline."""
    if ctx.user_id is None:
        return Text(NO_USER)
    return Text(press_text(ctx.user_id, ctx.match.group(1), account=ctx.account))


def press_text(user_id: int, number: str | None, *, account: str = "api", chat: bool = True) -> str:
    """The press and its reply; `chat=False` for the app's chat (its 联系客服 button instead of 人工)."""
    from wxapp_backend.appeals.followup import own_by_number, rated_rounds
    from wxapp_backend.appeals.services import list_own, press_own
    from wxapp_backend.appeals.states import OPEN, AppealStatus
    from wxapp_backend.db import session_scope, utcnow
    from wxapp_backend.errors import AppError

    try:
        with session_scope() as s:
            now = utcnow()
            if number:
                appeal = own_by_number(s, user_id, number)
                if appeal is None:
                    return NOT_FOUND.format(number=number.upper())
                others = 0
            else:
                open_ones = [a for a in list_own(s, user_id, per_page=50).items if a.status in OPEN]
                if not open_ones:
                    return NOTHING_TO_PRESS if chat else NOTHING_TO_PRESS_APP
                # The one being handled, before one that waits on the user's own supplement (nothing to press)
                being_handled = [a for a in open_ones if a.status != AppealStatus.PENDING_ENTERPRISE]
                appeal, others = (being_handled or open_ones)[0], len(open_ones) - 1
            if appeal.status == AppealStatus.PENDING_ENTERPRISE:  # the next step is theirs: say what is asked
                return PRESS_NEEDS_INFO.format(number=appeal.number, line=_line(appeal, set(), now, chat=chat))
            done = press_own(s, user_id, appeal.id, now)
            line = _line(appeal, rated_rounds(s, [appeal.id]), now, chat=chat)
            appeal_number = appeal.number
    except AppError as exc:  # not open any more
        return f"{exc.message}" + ("回复“我的诉求”查看。" if chat else "")
    log.info("chat appeal pressed", extra={"account": account, "user_id": user_id, "recorded": done})
    reply = (PRESSED if done else PRESSED_AGAIN).format(number=appeal_number, line=line)
    if not chat:
        reply = reply.replace("回复“人工”直接联系工作人员", "点“联系客服”直接联系工作人员")
    return reply + (PRESS_OTHERS.format(n=others) if others and chat else "")


# “撤回诉求”, “撤销 SQ…”, “诉求不需要了”: the mini-program's 撤回, for a follower who never opened it (they got “没学会”).
# Without the number the bot names the appeal and asks for “撤回 编号”: the number typed is the confirmation.
_WITHDRAW = re.compile(r"^(?:我要|我想|申请|帮我)?(?:撤回|撤销|取消)(?:诉求|投诉|反映)?(?:吧)?\s*(SQ\d{8}-\d{4})?$|"
                       r"^(?:诉求|投诉)(?:不需要了|不用了|不用处理了|撤回|撤销)$|"
                       # “撤回 2”, “撤回第二条”: the position in the list shown (“取消 2” is no withdrawal)
                       r"^(?:我要|我想|申请|帮我)?(?:撤回|撤销)(?:诉求)?\s*(?P<position>第?\s*[1-9一二两三四五六七八九]\s*[个条项号]?)$",
                       re.IGNORECASE)


def _withdraw_command(ctx: Context) -> re.Match | None:
    d = _state(ctx)
    if ctx.msg.msg_type != "text" or not ctx.text or (d.get("flow") and not d.get("paused")):
        return None  # (a draft put aside by the menu, or by “撤回诉求” itself, is no flow under way)
    said = intake.word(ctx.text)
    m = _WITHDRAW.match(said)
    # “取消”, “取消吧”, “我要取消” are the flows' word (with no flow: nothing under way), not 撤回 诉求
    return m if m and not is_cancel(said) else None


WITHDRAW_ASK = ("要撤回诉求 {number}（{summary}）吗？撤回后工作人员将不再办理。\n确认请回复：撤回 {number}")
WITHDRAW_PICK = "您有 {n} 条可以撤回的诉求，要撤回哪一条？请回复序号，或“撤回 编号”，例如：撤回 {first}\n{lines}"
NOT_WITHDRAWABLE = "诉求 {number}（{label}）不能撤回了：只有办理中（或已合并）的诉求可以撤回。回复“我的诉求”查看全部。"
WITHDRAWN = "诉求 {number} 已撤回，工作人员不会再办理。以后有问题，随时回复“我要反映”。"
NOTHING_TO_WITHDRAW = "您目前没有可以撤回的诉求（已办结的诉求不能撤回）。回复“我的诉求”查看全部。"


def withdraw(ctx: Context) -> Reply:
    """撤回 [编号]: with the number, the appeal is withdrawn (the service's rules and audit row); without, which one."""
    from wxapp_backend.appeals.followup import own_by_number
    from wxapp_backend.appeals.services import WITHDRAWABLE, list_own
    from wxapp_backend.appeals.services import withdraw as withdraw_appeal
    from wxapp_backend.db import session_scope
    from wxapp_backend.errors import AppError

    if ctx.user_id is None:
        return Text(NO_USER)
    number = ctx.match.group(1)
    if number:
        try:
            with session_scope() as s:
                appeal = own_by_number(s, ctx.user_id, number)
                if appeal is None:
                    return Text(NOT_FOUND.format(number=number.upper()))
                withdraw_appeal(s, ctx.user_id, appeal.id, "企业在对话中撤回")
                done = appeal.number
        except AppError as exc:
            return Text(f"没有撤回：{exc.message}")
        log.info("chat appeal withdrawn", extra={"account": ctx.account, "user_id": ctx.user_id})
        return Text(WITHDRAWN.format(number=done))
    from wxapp_backend.knowledge_store.chat import choice_number

    from . import kb

    position = choice_number(ctx.match.group("position")) if ctx.match.group("position") else None
    head = ""
    shown = kb.shown_list(ctx, "withdraw", "appeal") if position is not None else None
    if shown is not None:  # “撤回 2”: the 2nd of the list shown last, as a bare “2” picks from it
        if position > len(shown):
            head = LISTED_NOT_THERE.format(count=len(shown), n=position)
        else:
            asked = withdraw_ask_text(ctx.user_id, int(shown[position - 1]), position=position)
            if asked is not None:
                return Text(asked + PICKED.format(n=position, more=""))
            head = LISTED_GONE.format(n=position)
    elif position is not None:
        head = NO_LIST.format(cmd="撤回", n=position)
    # What the service lets the enterprise withdraw (services.WITHDRAWABLE): a merged (已合并) one too, which “撤回
    # 编号” withdrew while this list left it out and said there was nothing to withdraw.
    with session_scope() as s:
        open_ones = [(a.id, a.number, _summary(a.content)) for a in list_own(s, ctx.user_id, per_page=50).items
                     if a.status in WITHDRAWABLE]
    if not open_ones:
        return Text(head + NOTHING_TO_WITHDRAW)
    if len(open_ones) == 1:  # the number typed is the confirmation: asking is safe
        return Text(head + WITHDRAW_ASK.format(number=open_ones[0][1], summary=open_ones[0][2]))
    listed = open_ones[:LIST_LIMIT]
    kb.offer_list(ctx, "withdraw", [i for i, _n, _s in listed])  # a number next picks one (it was the menu's)
    lines = "\n".join(f"{i}. {n}：{summary}" for i, (_id, n, summary) in enumerate(listed, 1))
    return Text(head + WITHDRAW_PICK.format(n=len(open_ones), first=open_ones[0][1], lines=lines))


def withdraw_ask_text(user_id: int | None, appeal_id: int, *, position: int | None = None) -> str | None:
    """The confirmation asked for the user's own appeal `appeal_id` picked from a list (“2”, “撤回 2”): WITHDRAW_ASK,
    or why it cannot be withdrawn; an APPEAL_GONE (None with `position`: the caller says which) when it is not theirs."""
    from wxapp_backend.appeals.followup import own_by_id
    from wxapp_backend.appeals.services import WITHDRAWABLE
    from wxapp_backend.appeals.states import LABELS
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        appeal = own_by_id(s, user_id, appeal_id) if user_id is not None else None
        if appeal is None:
            return None if position is not None else APPEAL_GONE
        if appeal.status not in WITHDRAWABLE:
            return NOT_WITHDRAWABLE.format(number=appeal.number, label=LABELS.get(appeal.status, appeal.status))
        return WITHDRAW_ASK.format(number=appeal.number, summary=_summary(appeal.content))


def _rate_command(ctx: Context) -> bool:
    return ctx.msg.msg_type == "text" and bool(RATE_RE.match(plain(ctx.text)))


def _supplement_command(ctx: Context) -> bool:
    return ctx.msg.msg_type == "text" and bool(SUPPLEMENT_RE.match(plain(ctx.text)))


def install(r: Router) -> Router:
    """Register the rules on a router (the default one at import; tests pass their own)."""
    # The matchers read only the message and ctx.state; every handler needs the database.
    r.match(_person_in_flow, cheap=True, pure=True)(to_person)
    r.match(_menu_in_flow, cheap=True, pure=True)(leave_for_menu)

    @r.match(_command_in_flow, cheap=True, pure=True)
    def leave_for_command(ctx: Context) -> Reply:
        what = "评价" if _state(ctx).get("kind") == "rate" else "补充"
        _leave_flow(ctx)
        return Text(intake.answer_elsewhere(r, ctx) + MENU_LEFT.format(what=what))

    r.match(_in_flow, cheap=True, pure=True)(step)
    r.match(_other_in_flow, cheap=True, pure=True)(other_in_flow)
    r.text(*STATUS_WORDS)(status)
    r.match(_rate_command, cheap=True, pure=True)(rate_start)
    r.match(_supplement_command, cheap=True, pure=True)(supplement_start)
    r.match(_supplement_with_text, cheap=True, pure=True)(supplement_with_text)
    r.match(_late_rating, cheap=True, pure=True)(late_rating)
    r.match(_number_query, cheap=True, pure=True)(number_status)
    r.match(_press_command, cheap=True, pure=True)(press)
    r.match(_progress_question, cheap=True, pure=True)(status)
    r.match(_withdraw_command, cheap=True, pure=True)(withdraw)
    return r


install(default_router)
