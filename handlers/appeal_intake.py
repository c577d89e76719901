"""Chat intake of an appeal (我要反映): describe → enterprise/building → contact → photos → confirm.

The draft lives only in the conversation state (Redis); the appeal row is written by the appeals service on
“确认”, never before. “取消” drops the draft; “我要反映” during a draft offers 继续 / 重新开始. When the
state is gone in the middle (Redis restarted, or 30 minutes of silence) and the user answers a step, they
are told and can start again.
"""

from __future__ import annotations

import logging
import re
import secrets
import unicodedata
from typing import Any

import redis

from knowledge.smalltalk import (
    detect_smalltalk,
    feedback_of,
    has_no_content,
    is_clarification,
    is_venting,
    is_wrong_answer,
    without_faces,
)
from wxapp_backend.db import DB_AWAY
from wxapp_backend.validation import PHONE_RE
from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

from . import router as default_router
from .replies import Reply, Text
from .router import _PUNCT, Context, Router, command_word, to_simplified

log = logging.getLogger("handlers")

FLOW = "appeal"
VERSION = 1
STEPS = ("describe", "place", "contact", "photos", "confirm")
START_WORDS = ("我要反映", "反映问题", "投诉", "诉求", "我要投诉", "我有诉求")
CANCEL_WORDS = ("取消", "不提交了", "算了", "退出")
CONTINUE_WORDS = ("继续",)
RESTART_WORDS = ("重新开始", "重新填写", "修改")
CONFIRM_WORDS = ("确认", "提交", "确认提交", "确定")
SKIP_WORDS = ("跳过", "没有", "无", "不用", "好了", "完成", "发完了")
YES_WORDS = ("是", "是的", "对", "对的", "确认", "没错")
PASS_THROUGH = ("人工", "转人工", "人工客服", "人工服务", "客服")  # a person can always be reached
# The follow-up's commands (handlers/appeal_followup.py) answer even in the middle of a draft: 我的诉求 leaves
# the draft as it is, 评价 / 补充 say to finish or drop it first.
STATUS_WORDS = ("我的诉求", "诉求进度", "查询诉求", "诉求查询", "查进度", "查询进度", "办理进度", "查看诉求", "查看进度",
                "我的投诉", "我的反映", "诉求状态")
# With an appeal's number, or its position in the list the bot showed (“评价 2”, “评价第二条”).
_POSITION = r"第?\s*[1-9一二两三四五六七八九]\s*[个条项号]?"
RATE_RE = re.compile(rf"^(?:评价|评价诉求|我要评价)\s*(SQ\d{{8}}-\d{{4}}|{_POSITION})?$", re.IGNORECASE)
SUPPLEMENT_RE = re.compile(rf"^(?:补充|补充材料|我要补充)\s*(SQ\d{{8}}-\d{{4}}|{_POSITION})?$", re.IGNORECASE)


def plain(text: str) -> str:
    """Full-width digits and letters as ASCII (“５”, “ＳＱ”), so that what people type on a phone is understood."""
    return unicodedata.normalize("NFKC", text).strip()


def word(text: str) -> str:
    """A short reply as a command word: “确认！”, “取消。”, “跳过～”, “確認” are 确认, 取消, 跳过, 确认."""
    return to_simplified(plain(text)).strip(_PUNCT)


# 取消 as people say it: “取消吧”, “还是取消吧”, “那算了吧”, “我要取消”, “取消了”, “退出啦” (“取消吧” became the
# enterprise's name, and the supplement sent to staff; with no flow, “取消吧” was read as withdrawing an appeal).
# Not “不用了”, “不要了”: at the photo step they mean “no photos” (see bot.NOTHING_WORDS for it outside a flow); not
# “不想填”: at the enterprise step it skips the name. “放弃”, as every prompt says it (“回复“取消”放弃”), and “我不想反映
# 了” became the enterprise's name, or got the step's prompt again.
_CANCEL_RE = re.compile(r"(?:那|那就|那还是|还是|就|先|我|我要|我想|我还是)?"
                        r"(?:取消|取消了|算了|退出|不提交了?|不填了|不弄了|不登记了|放弃|放弃了|不想(?:提交|登记)了?|"
                        r"不想?(?:反映|投诉)了?)"
                        r"(?:吧|啦|呀|啊|哈|嘛|哦|咯|喽|了)*")
# “不取消”, “先不取消”, “不用取消”, “别撤回”: keep things as they are (it got the knowledge base's 取消报名 answer, and
# in the intake it became the enterprise's name).
_NOT_CANCEL_RE = re.compile(r"(?:先|暂时|还是|我)?(?:不|不要|别|不用|不想)(?:取消|撤回|撤销|退出)"
                            r"(?:了|吧|啦|呀|啊|哈|嘛|哦)*")


def is_cancel(text: str) -> bool:
    """`text` (a command word, see `word`) means 取消: the flows' own word, however it is said (“cancel” too)."""
    return text in CANCEL_WORDS or bool(_CANCEL_RE.fullmatch(text)) or command_word(text) in ("cancel", "quit")


def not_cancel(text: str) -> bool:
    """`text` (a command word) says not to cancel (“不取消”)."""
    return bool(_NOT_CANCEL_RE.fullmatch(text))


def follow_up_command(text: str) -> bool:
    """我的诉求 / 评价 [编号] / 补充 [编号]."""
    t = word(text)
    return t in STATUS_WORDS or bool(RATE_RE.match(t)) or bool(SUPPLEMENT_RE.match(t))

PROMPTS = {
    "describe": "请简单描述您遇到的问题：发生了什么、在哪里、持续多久（至少 5 个字）。\n随时回复“取消”可以退出。",
    "describe_lead": "您要{lead}，已记下。请再具体说说：发生了什么、在哪里、持续多久（至少 5 个字）。\n"
                     "随时回复“取消”可以退出。",
    "place_known": "诉求将登记在“{name}”名下{building}。回复“是”确认，或直接输入企业名称和所在楼宇，"
                   "例如：上海某某科技有限公司，新华大厦。",
    "place": "请告诉我企业名称和所在楼宇，例如：上海某某科技有限公司，新华大厦。",
    "contact": "请留下联系人姓名和手机号，例如：张三 13800138000。",
    # The user's own appeal of the last 24 hours (appeals.intake.last_details): a second one asked for them again.
    "place_last": "企业：{name}{building}（上次填写的），直接回复“是”沿用，或发送新的企业名称和所在楼宇。",
    "contact_last": "联系人：{name} {masked}（上次填写的），直接回复“是”沿用，或发送新的姓名和手机号。",
    "contact_known": "请留下联系人姓名和手机号，例如：张三 13800138000（回复“是”使用 {masked}，需同时写上姓名：张三 是）。",
    "photos": "如有现场照片，现在可以直接发送（最多 9 张），发完回复“好了”；没有照片请回复“跳过”。",
}
HOLD_ON = "好的，不着急～准备好了直接回复就行。\n"
# “搞什么”, “怎么回事” at a step: searched in the knowledge base (a row in staff's queue), or taken as the answer.
_PUZZLED = re.compile(r"(?:你|你们|这|这是|到底)?(?:在)?(?:搞什么|搞啥|干什么|干嘛|怎么回事|什么情况|啥情况|什么鬼|搞什么鬼|"
                      r"搞什么名堂)(?:啊|呀|呢|嘛|哦|了|啦|嘞)*")


def puzzled(text: str, raw: Any = None) -> bool:
    """“什么意思”, “搞什么”, “怎么回事” (`text`, the word), or “？？？” (`raw`, the message as sent, when punctuation alone
    counts): puzzlement at what was just asked, not an answer to it. Also read inside a rating or a supplement."""
    return is_clarification(text) or bool(_PUZZLED.fullmatch(text)) or (isinstance(raw, str) and is_clarification(raw))


# “什么意思”, “没看懂” at a step: it became the enterprise's name (or got “您指的是哪一句呢？”).
CLARIFY_STEP = "抱歉没说清楚～现在是登记诉求的第 {n}/5 步，小二要把这些信息转给工作人员：\n"
CLARIFY_WAYS = "不想登记了请回复“取消”；想直接找工作人员请回复“人工”。"
# “等一下”, “稍等”, “我查一下”: the user is looking something up, not answering the step.
_HOLD_RE = re.compile(r"(?:请|麻烦)?(?:等一?下|等等|等会儿?|等一会儿?|稍等(?:一下|片刻)?|稍后|马上|一会儿?|"
                      r"我?(?:先)?(?:看|查|找|问|翻|想)一?下(?:公司|企业)?(?:电话|号码|手机号?|名字|全称|名称|地址|楼号)?|"
                      r"我?想想|我?(?:去)?(?:查查|问问|找找|看看))"
                      r"(?:哈|啊|呀|哦|吧|啦|了)?")
OFFER_DESCRIPTION = ("您刚才说：“{text}”\n用这段话作为问题描述，请回复“是”；要重新描述，直接输入即可（至少 5 个字）。\n"
                     "随时回复“取消”可以退出。")
TOO_SHORT = "描述有点短，请再具体说说（至少 5 个字）。"
TOO_LONG = "描述太长了，请精简到 2000 字以内。"
PLACE_SKIPPED = "好的，企业名称先不填（工作人员联系您时会再确认）。\n"
NO_PLACE_YES = "小二这边还没有您企业的信息，"
PLACE_NO_WORDS = "没有看到企业名称哦，"
# “垃圾”, “没用”, “哈哈”, “666”, “不知道” where the enterprise was asked for: each became the enterprise's name.
PLACE_NOT_A_NAME = "这看起来不是企业名称哦～不方便填写的话回复“跳过”。"
_DONT_KNOW = re.compile(r"(?:我)?(?:不知道|不清楚|不晓得|不懂|不确定)(?:啊|呀|哦|呢|了|耶)*")
PLACE_CONTACT_LATER = "联系人和电话下一步再填，"
# A name over the appeal's limit was cut at 200 characters without a word (staff got half a name).
PLACE_TOO_LONG = "企业名称太长了（{n} 个字），最多 {max} 个字，这次没有记下～请只写企业全称和所在楼宇。\n"
BAD_CONTACT = "没有认出手机号，请按“姓名 手机号”的格式回复，例如：张三 13800138000。"
NO_NAME = "请同时写上联系人姓名，例如：张三 13800138000。"
ONE_PHONE = "请只留一个联系电话（手机号或座机），例如：张三 13800138000。"
PHOTO_OK = "收到第 {n} 张照片。还有的话可以继续发送，发完回复“好了”。"
PHOTO_FULL = "照片已经有 9 张了，回复“好了”继续。"
PHOTO_NOT_NOW = "这一步不需要照片哦。"
PHOTO_KEPT = "照片收到了（共 {n} 张），会和诉求一起提交。\n"
PHOTO_FULL_NOW = "照片已经有 9 张了，不能再加。\n"
CANCELLED = "已取消，您填写的内容没有保存。需要时回复“我要反映”重新开始。"
PENDING = "您有一条未填完的诉求（进行到第 {n}/5 步）。回复“继续”接着填，回复“重新开始”从头填写，回复“取消”放弃。"
ANOTHER_PROBLEM = "您说的新问题还没有登记（一次登记一条，这条提交后再回复“我要反映”登记它）。\n"
PAUSED = "\n\n您还有一条未填完的诉求（第 {n}/5 步），已为您保留：回复“继续”接着填，回复“取消”放弃。"
TOLD_AGAIN = "这个问题小二已经记下了（第 1 步），不用再发～\n"
NOT_HEARD = "没有听清，请用文字回复。"
# Also the answer to a “继续” / “确认” from someone who never started an intake (after a long knowledge-base
# answer, say): it must not tell them that something they filled in was lost.
LOST = ("小二这边没有您正在填写的诉求，也没有提交任何内容（填写中途超过 30 分钟没有回复，或系统刚刚重启，"
        "填写的内容会失效）。\n反映问题请回复“我要反映”；查看、评价已提交的诉求请回复“我的诉求”；"
        "想了解政策或办事，直接输入问题就行。")
# A second “确认” (or “继续”) just after submitting: LOST said “也没有提交任何内容”, and the user filed it again.
JUST_SUBMITTED = ("您的诉求 {number} 已经提交成功了，不用再确认。\n回复“我的诉求”查看进度；还有别的问题要反映，"
                  "请回复“我要反映”。")
RECENT_SECONDS = 30 * 60
UNAVAILABLE = "系统暂时繁忙，刚才的内容没有保存。请稍后回复“我要反映”重新开始。"
NO_USER = "暂时无法确认您的身份，诉求没有提交。请稍后再试，或在小程序“我要反映”中填写。"
SUBMITTED = ("诉求已提交，编号 {number}。\n我们将在 1 个工作日内受理，承诺 {due} 前办结。\n"
             "回复“我的诉求”可随时查看进度，办理结果会通知您。")
SUMMARY_CONTENT_CHARS = 200
CONTENT_CUT = "…（共 {n} 字，已完整记录）"
NOT_CONFIRMED = "诉求还没有提交哦。"
CONFIRM_HINT = "回复“确认”提交，回复“修改”改其中一项，回复“取消”放弃。"
EDIT_WHICH = ("要修改哪一项？回复：\n1 问题描述\n2 企业和楼宇\n3 联系人和电话\n4 照片（重新上传）\n"
              "改完回到这里核对；回复“重新开始”从头填写。")
EDIT_LATER = "前面填的内容都保留着：先接着填完，最后核对时回复“修改”可以改任何一项（回复“重新开始”从头填写）。\n"
PHOTOS_DROPPED = "原来的 {n} 张照片已清除，要附照片请重新发送。\n"
EDIT_HINT = "请回复 1～4 选择要修改的一项，或回复“确认”直接提交。\n"
# The confirmation's fields, as people name them (“改电话”, “修改企业名称”), or by number after “修改”.
EDIT_FIELDS = {"1": "describe", "2": "place", "3": "contact", "4": "photos"}
_EDIT_RE = re.compile(r"^(?:修改|更改|改一下|改)(?P<what>问题|描述|问题描述|内容|企业|企业名称|公司|楼宇|地址|企业和楼宇|"
                      r"联系人|姓名|电话|手机|手机号|号码|联系方式|联系人和电话|照片|图片)$")
_EDIT_WORDS = {"问题": "describe", "描述": "describe", "问题描述": "describe", "内容": "describe",
               "企业": "place", "企业名称": "place", "公司": "place", "楼宇": "place", "地址": "place",
               "企业和楼宇": "place", "联系人": "contact", "姓名": "contact", "电话": "contact", "手机": "contact",
               "手机号": "contact", "号码": "contact", "联系方式": "contact", "联系人和电话": "contact",
               "照片": "photos", "图片": "photos"}
_BUILDING_WORD = re.compile(r"(?:大厦|大楼|广场|中心|园区?|[楼座号弄]|新所|坊|汇|港|公寓)$")
BUILDING_WITH_NAME = "不在已登记的楼宇中，已随企业名称记录，工作人员会核实"
PLACE_CHECKED_LATER = "提交时按企业名称核对"  # the enterprise step answered while the database was away
SUMMARY = "请核对您的诉求：\n问题：{content}\n企业：{enterprise}\n楼宇：{building}\n联系人：{name} {phone}\n照片：{photos} 张\n"


# “没有照片”, “不用了”, “就这些”: the photo step is over (the prompt only named 好了 / 跳过, and repeated itself).
_PHOTOS_DONE = re.compile(r"(?:没有|没|无|不用|不需要|不要|不发)(?:现场)?(?:照片|图片|相片|图)?(?:了|啦)?|"
                          r"(?:就这些|发好了|传完了|都发了|上传好了|上传完了)(?:了|啦)?")
# A mobile number as typed: “138 0013 8000”, “138-0013-8000”, “+86 13800138000”; never the first 11 digits of a
# longer (mistyped) number, whose last digit used to end up in the contact's name.
_MOBILE = re.compile(r"(?<![\d+])(?:\+?86[\s-]?)?(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3}-?\d{7,8})(?!\d)")
_NAME_PHONE = re.compile(r"\S{1,10}\s*[,，]?\s*1[3-9]\d{9}")


def _state(ctx: Context) -> dict[str, Any]:
    try:
        return ctx.state.get()
    except redis.RedisError:
        return {}


def _in_flow(ctx: Context) -> bool:
    if ctx.msg.msg_type not in ("text", "image", "voice"):
        return False
    if word(ctx.text) in PASS_THROUGH or follow_up_command(ctx.text) or _menu_words(ctx.text):
        return False
    d = _state(ctx)
    if d.get("paused"):  # the user went to the menu: only the words that resume or drop the draft are its,
        # and the answers nothing else understands (“张三 138…”, 跳过: they got “这个问题我还没学会”), and a photo (it
        # got “如果是想反映问题，请回复“我要反映””, lost while a draft waited)
        if ctx.msg.msg_type == "image":
            return d.get("flow") == FLOW and d.get("step") in STEPS
        t = word(_answer(ctx))
        return d.get("flow") == FLOW and ctx.msg.msg_type in ("text", "voice") and \
            (t in (*CONTINUE_WORDS, *RESTART_WORDS) or is_cancel(t) or intake_answer(t))
    return d.get("flow") == FLOW


def _menu_words(text: str) -> bool:
    from .bot import MENU_WORDS

    return text != "" and command_word(text) in {command_word(w) for w in MENU_WORDS}


def menu_message(ctx: Context) -> bool:
    """The menu: a button other than 我要反映 / 人工, “菜单”, or the welcome that shows it (a scan, a follow)."""
    msg = ctx.msg
    if msg.is_event:
        return (msg.event == "click" and msg.event_key not in ("MENU_APPEAL", "MENU_HUMAN")) or \
            msg.event in ("scan", "subscribe")
    return msg.msg_type == "text" and _menu_words(ctx.text)


def elsewhere_command(text: str) -> bool:
    """A typed command of the chat's own that is no answer to a flow's step (“活动”, “我的报名”, “撤回诉求”): inside a
    flow it was taken as the answer (the supplement sent to staff, the enterprise's name). The flows step aside for
    it, as for the menu's buttons. (Not “催一下” and its kin: “还没解决” answers the rating.)"""
    from .appeal_followup import _WITHDRAW
    from .bot import ACTIVITY_WORDS, MY_REGISTRATION_WORDS

    if not text or len(text) > 40:
        return False
    t = word(text)
    if command_word(text) in {command_word(w) for w in (*ACTIVITY_WORDS, *MY_REGISTRATION_WORDS)}:
        return True
    return bool(_WITHDRAW.match(t)) and not is_cancel(t)


def answer_elsewhere(r: Router, ctx: Context) -> str:
    """What the rule of `ctx`'s command answers, once the flow has stepped aside (its state changed: the flow's rules
    let the command pass); the menu when no rule does. The router dispatching `ctx` resolves it (`r`, the plug-ins'
    own, lacks the defaults: “活动” is theirs)."""
    from .bot import MENU_REPLY
    from .replies import as_reply

    handler = (ctx.extra.get("router") or r).resolve(ctx)
    reply = as_reply(handler(ctx)) if handler is not None else None
    return reply.text if isinstance(reply, Text) else MENU_REPLY


def menu_answer(ctx: Context, *, room: int = REPLY_TEXT_MAX_BYTES) -> str:
    """What the menu button (or “菜单”) answers by itself; a follow or scan's welcome (with its QR code's building
    or activity: handlers/scenes.py) within `room` bytes."""
    from . import kb
    from .bot import INTENTS, MENU, MENU_REPLY, MENU_TEXT, WELCOME, WELCOME_BACK
    from .scenes import welcome

    kb.forget_choices(ctx)
    if not ctx.msg.is_event:
        return MENU_REPLY
    if ctx.msg.event in ("scan", "subscribe"):
        return welcome(ctx, WELCOME if ctx.msg.event == "subscribe" else WELCOME_BACK, room=room)
    entry = MENU.get(ctx.msg.event_key or "")
    return INTENTS[entry[0]](ctx).text if entry is not None else MENU_TEXT


def _menu_in_draft(ctx: Context) -> bool:
    """The menu while a draft is open: the user turned to something else. Their next words are not an answer to
    the step they left (a question after “政策问答” became the enterprise's name, a menu digit the contact)."""
    if not menu_message(ctx):
        return False
    d = _state(ctx)
    return d.get("flow") == FLOW and d.get("step") in STEPS


def _park(ctx: Context) -> str:
    """Keep the open draft aside (paused) until “继续”; the words that tell the user so."""
    d = _state(ctx)
    try:
        ctx.state.merge(paused=True)
    except redis.RedisError:
        pass
    return PAUSED.format(n=STEPS.index(d["step"]) + 1)


def pause(ctx: Context) -> Reply:
    """The menu's own answer, the draft kept (paused) until “继续”."""
    note = _park(ctx)
    return Text(menu_answer(ctx, room=REPLY_TEXT_MAX_BYTES - len(note.encode("utf-8"))) + note)


# “人呢”, “有人吗”, “怎么没人回”: a person asked for (searched in the knowledge base and the draft set aside, or the
# “未填完的诉求” reminder); in a draft they mean 人工, as the draft itself waits for no greeting.
_PERSON_RE = re.compile(r"(?:请问|喂|你好)?(?:人呢|人去哪了?|人在哪|有人吗|有人在吗|有人没有?|有人在没|有没有人在?|人在吗|还有人吗|"
                        r"怎么没人(?:理|回|管)?(?:我)?|没人(?:理|回|管)(?:我)?)(?:了|啊|呀|哦|呢|啦|吗)*")


def _person_in_draft(ctx: Context) -> bool:
    """人工 (“我要转人工”, the menu's 人工服务) while a draft is open: the talk with the person comes between, so the
    words after it are no answer to the step left (“开办企业需要哪些材料” got “没有认出手机号”)."""
    msg = ctx.msg
    if msg.msg_type == "text":
        t = word(ctx.text)
        if t not in PASS_THROUGH:
            from knowledge.smalltalk import detect_smalltalk

            if len(t) > 12 or (detect_smalltalk(t) != "handoff" and not _PERSON_RE.fullmatch(t)):
                return False  # (“我要转人工”, “找人工客服” became the problem told)
    elif not (msg.is_event and msg.event == "click" and msg.event_key == "MENU_HUMAN"):
        return False
    d = _state(ctx)
    return d.get("flow") == FLOW and d.get("step") in STEPS


def to_person(ctx: Context) -> Reply:
    """The hand-over, the draft kept aside (as the menu keeps it) until “继续”; the note says so."""
    from .bot import HUMAN_NOTE
    from .replies import Transfer

    return Transfer(HUMAN_NOTE + _park(ctx))


def _lost_answer(ctx: Context) -> bool:
    """A reply that only makes sense inside an intake, arriving with no conversation state at all (a “跳过”
    inside another flow, such as a rating, is that flow's)."""
    if ctx.msg.msg_type != "text" or _state(ctx).get("flow"):
        return False
    return intake_answer(ctx.text)


def intake_answer(t: str) -> bool:
    """A text that only answers a step of the intake (确认, 继续, 跳过, “张三 138…”)."""
    return t in CONFIRM_WORDS or t in CONTINUE_WORDS or t in ("跳过", "发完了") or bool(_NAME_PHONE.fullmatch(t))


def _answer(ctx: Context) -> str:
    """What the user answered: the text, or a voice message's transcript without the punctuation it ends with
    (WeChat writes “新华大厦。”), so that every step can be answered by voice, not only the first."""
    if ctx.msg.msg_type == "voice":
        return (ctx.msg.recognition or "").strip().rstrip("。，！？.,!?")
    return ctx.text


def _save(ctx: Context, data: dict[str, Any]) -> None:
    ctx.state.set(data)
    try:
        ctx.redis.set(_expired_key(ctx), data.get("step", ""), ex=EXPIRED_TTL)
    except redis.RedisError:
        pass  # the first message after the draft ran out then says nothing of it, as before


def _end(ctx: Context) -> None:
    """The draft is over (filed, dropped, or started again): no note of it is left."""
    ctx.state.clear()
    try:
        ctx.redis.delete(_expired_key(ctx))
    except redis.RedisError:
        pass


# The draft's step, kept longer than the conversation state (30 minutes): “好了” at the photo step after a pause got
# “好的～还有什么想了解的”, the enterprise's name “这个问题我还没学会”, the user waiting for an appeal nobody had filed.
EXPIRED_TTL = 24 * 60 * 60
EXPIRED = ("（您之前填写的诉求停在第 {n}/5 步，超过 30 分钟没有回复已失效，没有提交。需要的话请回复“我要反映”重新填写。）"
           "\n\n")


def _expired_key(ctx: Context) -> str:
    return f"wx:draftstep:{ctx.account}:{ctx.openid}"


_UNREAD = object()


def expired_note(ctx: Context, step: Any = _UNREAD) -> str:
    """For the first message after a draft ran out (its state's TTL), once: that it was not filed; '' otherwise.
    `step`: the value of `_expired_key` already taken (GETDEL) by the caller, with other reads in one round trip."""
    if _state(ctx).get("flow") == FLOW:
        return ""
    if step is _UNREAD:
        try:
            step = ctx.redis.getdel(_expired_key(ctx))
        except redis.RedisError:
            return ""
    step = step.decode() if isinstance(step, bytes) else step
    return EXPIRED.format(n=STEPS.index(step) + 1) if step in STEPS else ""


def _masked(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else phone


def _prompt(draft: dict[str, Any], step: str) -> str:
    if step == "describe" and draft.get("lead"):
        return PROMPTS["describe_lead"].format(lead=draft["lead"])
    if step == "place" and draft.get("known", {}).get("enterprise_name"):
        known = draft["known"]
        building = f"（{known['building_name']}）" if known.get("building_name") else ""
        return PROMPTS["place_known"].format(name=known["enterprise_name"], building=building)
    last = draft.get("last") or {}
    if step == "place" and last.get("enterprise_name"):
        building = f"，{last['building_name']}" if last.get("building_name") else ""
        return PROMPTS["place_last"].format(name=last["enterprise_name"], building=building)
    if step == "contact" and last.get("contact_phone"):
        return PROMPTS["contact_last"].format(name=last["contact_name"], masked=_masked(last["contact_phone"]))
    if step == "contact" and draft.get("known", {}).get("phone"):
        return PROMPTS["contact_known"].format(masked=_masked(draft["known"]["phone"]))
    if step == "confirm":
        return _summary(draft)
    return PROMPTS[step]


def _summary(d: dict[str, Any]) -> str:
    # The description may be 2,000 characters: quoted whole, the reply (cut at 2,048 bytes) lost the lines after it.
    content = d.get("content", "")
    if len(content) > SUMMARY_CONTENT_CHARS:
        content = content[:SUMMARY_CONTENT_CHARS] + CONTENT_CUT.format(n=len(content))
    enterprise = d.get("enterprise_name") or ""
    building = d.get("building_name") or ""
    if not building and d.get("place_unmatched"):
        building = PLACE_CHECKED_LATER
    elif not building and any(_BUILDING_WORD.search(part) for part in re.split(r"[，,、/\s]+", enterprise.strip())[1:]):
        building = BUILDING_WITH_NAME  # “某某公司，新华大厦” with a building not on file: it said 未填写
    return SUMMARY.format(content=content, enterprise=enterprise or "（未填写）",
                          building=building or "（未填写）", name=d.get("contact_name", ""),
                          phone=d.get("contact_phone", ""), photos=len(d.get("media", []))) + CONFIRM_HINT


def start(ctx: Context) -> Reply:
    """我要反映 / the MENU_APPEAL click: a new draft, or the choice to resume one."""
    from .kb import forget_choices

    forget_choices(ctx)  # a digit after this (or after 取消) no longer picks an earlier “您是不是想问” choice
    try:
        current = ctx.state.get()
    except redis.RedisError:
        return Text(UNAVAILABLE)
    if current.get("flow") == FLOW and current.get("step") in STEPS:
        return Text(PENDING.format(n=STEPS.index(current["step"]) + 1))
    said = ctx.text[ctx.match.start("content"):ctx.match.end("content")].strip() \
        if isinstance(ctx.match, re.Match) else ""
    lead = str(ctx.match) if isinstance(ctx.match, _Lead) else ""
    reply = _new_draft(ctx, said, lead) if lead else _new_draft(ctx, said)
    if current.get("flow") == "appeal_followup" and reply.text.startswith("好的"):
        # a rating or supplement under way was replaced without a word (the supplement never sent)
        from .appeal_followup import MENU_LEFT

        what = "评价" if current.get("kind") == "rate" else "补充"
        reply = Text(reply.text + MENU_LEFT.format(what=what))
    return reply


# “我要反映：楼下餐厅油烟太大…” in one message: the intake, with the problem already told (it got “这个问题我还没
# 学会…回复“我要反映”提交诉求”). A bare 投诉 / 反映 only with a separator: “投诉电话是多少” is a question.
_START_WITH_TEXT = re.compile(r"^(?:(?:我要|我想|我有)(?:反映|投诉|诉求)(?:一下)?[：:，,。！!\s]*|"
                              r"(?:反映问题|投诉|反映|诉求)\s*[：:，,]\s*)(?P<content>\S.{4,1999})$", re.S)


# “我想反映个问题”, “我要投诉一下”: the words of 我要反映 as people say them (they got the knowledge base's list of
# channels, the intake not started; “我想反映一个情况！” was taken as the problem “一个情况！”).
# A second appeal asked for after the first (“我还要反映一个问题”, “再提一个诉求”, “还有一个问题要反映”, “还要投诉”): the
# knowledge base's list of channels, or a “您是不是想问” list, the intake not started.
_START_PHRASE = re.compile(
    r"^(?:我要|我想|我有|想)(?:反映|投诉)(?:一下|一个|个|点)?(?:问题|情况|事情|事)?$"
    r"|^(?:我们?)?(?:(?:还|再|另外|又)(?:要|想)?再?|(?:要|想)再)(?:反映|投诉)(?:一下|一个|个|点)?(?:问题|情况|事情|事|诉求)?$"
    r"|^(?:我们?)?(?:还|再|另外|又)(?:要|想)?(?:有|提)(?:一个|个|一条|条|一件|件)(?:问题|情况|事情|事)?要?(?:反映|投诉)$"
    r"|^(?:我们?)?(?:还|再|另外|又)?(?:要|想)?(?:有|提)(?:一个|个|一条|条)诉求$")


def start_phrase(text: str) -> bool:
    return bool(_START_PHRASE.match(word(text))) if text else False


# “我要投诉物业”, “我要反映噪音”, “投诉隔壁装修”: an intent to complain and what about, too short to be the problem
# itself (a “您是不是想问” list, no intake). Not a question about the channels (“投诉电话是多少”, “投诉渠道有哪些”).
_START_WITH_OBJECT = re.compile(r"^(?:我们?)?(?:要|想)?(?P<lead>(?:投诉|反映)(?P<what>\w{1,12}))$")
_NO_OBJECT = re.compile(r"电话|热线|号码|渠道|方式|途径|流程|程序|地址|网址|平台|部门|窗口|时限|期限|结果|进度|处理|受理|"
                        r"范围|条件|规定|制度|哪|怎|如何|什么|啥|吗|呢|么|多少|可以|能否|能不能|有用|有没有|"
                        r"^[过了的给到完好]|^(?:一下|一个|个|点)?(?:问题|情况|事情|事|诉求)?$")


def start_with_object(text: str) -> str:
    """The complaint and its object (“投诉物业”) when `text` is only that, else ''."""
    m = _START_WITH_OBJECT.match(word(text)) if text and len(text) <= 20 else None
    return m.group("lead") if m and not _NO_OBJECT.search(m.group("what")) else ""


class _Lead(str):
    """What `_start_with_object` matched (ctx.match), for `start` to tell it from other rules' matches."""


def _start_with_object(ctx: Context) -> _Lead | None:
    lead = start_with_object(ctx.text) if ctx.msg.msg_type == "text" else ""
    return _Lead(lead) if lead else None


def _start_phrase(ctx: Context) -> bool:
    return ctx.msg.msg_type == "text" and start_phrase(ctx.text)


def _start_with_text(ctx: Context) -> re.Match | None:
    # 繁體 too (“我要投訴：…” got “这个问题我还没学会”); the table maps one character to one, so the match's
    # positions hold in the text as written, which start() keeps.
    return _START_WITH_TEXT.match(to_simplified(ctx.text)) if ctx.msg.msg_type == "text" and ctx.text else None


def _new_draft(ctx: Context, content: str = "", lead: str = "") -> Reply:
    from wxapp_backend.appeals.intake import description_problem

    if content and description_problem(content):
        content = ""  # “我要反映：😡😡😡😡😡”: asked to describe it, as a bare 我要反映 is
    known: dict[str, Any] = {}
    last: dict[str, Any] = {}
    if ctx.user_id is not None:
        from wxapp_backend.appeals.intake import chat_profile, last_details
        from wxapp_backend.db import session_scope

        try:
            with session_scope() as s:
                known = chat_profile(s, ctx.user_id)
                last = last_details(s, ctx.user_id)
        except DB_AWAY:
            # Only what the bot could fill in for the user: the draft (and the problem just told) goes on without
            # it; it answered “请稍后再发一次”, the text typed in no draft.
            log.warning("appeal intake: prefills not read", exc_info=True, extra={"account": ctx.account})
            known, last = {}, {}
    draft = {"flow": FLOW, "v": VERSION, "step": "describe", "id": secrets.token_hex(8), "known": known,
             "media": []}
    if last:
        draft["last"] = last
    offered = ""
    if content:
        draft.update(content=content, step="place")
    elif lead:
        draft["lead"] = lead  # the start of the description; the details are asked for
    else:
        from .kb import take_unanswered

        offered = take_unanswered(ctx)  # what the bot could not answer just before: likely the problem itself
        if offered and not description_problem(offered):
            draft["offered"] = offered
        else:
            offered = ""
    try:
        _save(ctx, draft)
    except redis.RedisError:
        return Text(UNAVAILABLE)
    if content:
        return Text("好的，我来帮您登记诉求（共 5 步），您说的问题已记下（第 1 步）。\n" + _prompt(draft, "place"))
    if offered:
        return Text("好的，我来帮您登记诉求（共 5 步）。\n" + OFFER_DESCRIPTION.format(text=_shorten(offered)))
    if lead:
        return Text("好的，我来帮您登记诉求（共 5 步）。\n" + _prompt(draft, "describe"))
    return Text("好的，我来帮您登记诉求（共 5 步）。\n" + PROMPTS["describe"])


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def step(ctx: Context) -> Reply:
    """One answer inside the flow."""
    d = _state(ctx)
    if d.get("v") != VERSION or d.get("step") not in STEPS:
        _end(ctx)
        return Text(LOST)
    t = word(_answer(ctx))
    if ctx.msg.msg_type == "voice" and not t:  # and what waits, as for a sticker (it said nothing of the step)
        return Text(NOT_HEARD + in_draft_note(d))
    if ctx.msg.msg_type == "image" and d.get("paused"):  # kept with the draft, which stays aside until “继续”
        reply = _photo_reply(ctx, d, PHOTO_KEPT, after="")
        if reply.text in (LOST, UNAVAILABLE):
            return reply
        return Text(reply.text.rstrip("\n") + PAUSED.format(n=STEPS.index(d["step"]) + 1))
    if is_cancel(t):
        _end(ctx)
        return Text(CANCELLED)
    if t in CONTINUE_WORDS or not_cancel(t):  # “不取消”: the step again (it became the enterprise's name)
        if d.pop("paused", None):
            _save(ctx, d)
        return Text(_prompt(d, d["step"]))
    if d["step"] == "confirm" and d.get("editing"):  # “二”, “第二项”: the digit (they got the hint again)
        from .bot import menu_digit

        t = menu_digit(t) or t
    if d["step"] == "confirm" and (t == "修改" or _EDIT_RE.match(t) or (d.get("editing") and t in EDIT_FIELDS)):
        return _edit(ctx, d, t)
    # it dropped what was filled in, without a word; “改电话” became the enterprise's name
    if (t == "修改" or _EDIT_RE.match(t)) and d["step"] != "describe":
        if d.pop("paused", None):  # put aside by the menu: back in the draft, as with “继续”
            _save(ctx, d)
        return Text(EDIT_LATER + _prompt(d, d["step"]))
    if t in RESTART_WORDS:
        _end(ctx)
        return _new_draft(ctx)
    if d["step"] == "describe" and ctx.msg.msg_type == "text" and start_with_object(t) and not d.get("lead"):
        d["lead"] = start_with_object(t)  # “我要投诉物业” as the first answer: the details are still to come
        _save(ctx, d)
        return Text(_prompt(d, "describe"))
    if d["step"] != "describe" and (_START_WITH_TEXT.match(to_simplified(ctx.text)) or start_with_object(t)):
        # “我要反映：另外…” told a second problem: it got “没有认出手机号”, or became the enterprise's name
        return Text(ANOTHER_PROBLEM + PENDING.format(n=STEPS.index(d["step"]) + 1))
    if ctx.msg.msg_type != "image" and puzzled(t, ctx.text if d["step"] != "describe" else None):  # “什么意思”, “搞什么”, “？？？”: the step again, in other words
        # (“？？？” as the description: asked for words, see _describe)
        if d.pop("paused", None):
            _save(ctx, d)
        asked = EDIT_WHICH if d["step"] == "confirm" and d.get("editing") else _prompt(d, d["step"])
        ways = CLARIFY_WAYS if "“取消”" not in asked else CLARIFY_WAYS.split("；")[1]
        return Text(CLARIFY_STEP.format(n=STEPS.index(d["step"]) + 1) + asked + "\n" + ways)
    if _HOLD_RE.fullmatch(t) and ctx.msg.msg_type != "image":
        # “等一下” while looking up the phone number became the enterprise's name (or “太短了” as the problem)
        return Text(HOLD_ON + _prompt(d, d["step"]))
    if t in START_WORDS or start_phrase(t) or _small_talk(t):
        # “你好” after a talk with a person (人工 leaves the draft in place) is no enterprise name or problem.
        return Text(PENDING.format(n=STEPS.index(d["step"]) + 1))
    if d["step"] != "describe" and ctx.msg.msg_type == "text" and same_words(t, d.get("content", "")):
        # the problem sent again (a double tap, or it seemed not to go through) became the enterprise's name
        return Text(TOLD_AGAIN + _prompt(d, d["step"]))
    if d.pop("paused", None):  # an answer to the step put aside by the menu: back in the draft
        _save(ctx, d)
    handler = {"describe": _describe, "place": _place, "contact": _contact, "photos": _photos,
               "confirm": _confirm}[d["step"]]
    return handler(ctx, d)


def same_words(text: str, other: str) -> bool:
    """Whether two texts say the same words, whatever the punctuation and spaces between them."""
    def bare(t: str) -> str:
        return re.sub(r"[\W_]+", "", word(t))

    said = bare(text)
    return bool(said) and said == bare(other)


def _small_talk(text: str) -> bool:
    from knowledge.smalltalk import detect_smalltalk

    from .bot import BYE_WORDS, GREETINGS, THANKS_WORDS

    t = text.lower()
    # “谢谢啦”, “好的，谢谢”, “拜拜～” too (they became the enterprise's name); not an acknowledgement such as
    # “好的” / “嗯”, which may answer the step (a yes to the known enterprise).
    return t in GREETINGS or t in THANKS_WORDS or t in BYE_WORDS or detect_smalltalk(t) in ("greeting", "thanks", "bye")


def _edit(ctx: Context, d: dict[str, Any], t: str) -> Reply:
    """修改 at the confirmation: one field answered again, then back to the summary (it dropped the whole draft,
    the user typing everything again to change a phone number)."""
    m = _EDIT_RE.match(t)
    field = _EDIT_WORDS[m.group("what")] if m else EDIT_FIELDS.get(t)
    d.pop("paused", None)  # put aside by the menu: back in the draft, as with “继续”
    if field is None:  # “修改”: which one?
        d["editing"] = True
        _save(ctx, d)
        return Text(EDIT_WHICH)
    d.pop("editing", None)
    d["back"] = True  # _advance returns to the confirmation once this step is answered
    said = ""
    if field == "photos":
        if d.get("media"):  # “跳过” after the step's own prompt lost them, the user believing they were kept
            said = PHOTOS_DROPPED.format(n=len(d["media"]))
        d["media"] = []
    if field == "describe":  # described anew, whole
        d.pop("lead", None)
    if field == "place":  # a name not found now must not keep the enterprise and building found before
        for key in ("enterprise_id", "enterprise_name", "building_id", "building_name", "place_unmatched"):
            d.pop(key, None)
    d["step"] = field
    _save(ctx, d)
    return Text(said + _prompt(d, field))


def _advance(ctx: Context, d: dict[str, Any], nxt: str, prefix: str = "") -> Reply:
    if d.pop("back", None):
        nxt = "confirm"
    d.pop("editing", None)
    d["step"] = nxt
    _save(ctx, d)
    return Text(prefix + _prompt(d, nxt))


def _describe(ctx: Context, d: dict[str, Any]) -> Reply:
    text = ctx.text or (ctx.msg.recognition or "").strip()  # the description keeps the transcript as said
    offered = d.pop("offered", None)
    if offered and _yes(text):  # “是”: what they told the bot before 我要反映
        text = offered
    elif offered and ctx.msg.msg_type != "image" and len(text) < 5:
        d["offered"] = offered  # still on offer: “嗯？” is neither yes nor a description
        return Text(OFFER_DESCRIPTION.format(text=_shorten(offered)))
    if ctx.msg.msg_type == "image":
        return _photo_reply(ctx, d, "照片收到了，请再用文字描述一下问题（至少 5 个字）。")
    from wxapp_backend.appeals.intake import NO_WORDS, description_problem

    if len(text) < 5:  # “？？？”: not short of words but without any (“描述有点短”)
        return Text(TOO_SHORT if any(ch.isalnum() for ch in without_faces(text)) else NO_WORDS)
    if len(text) > 2000:
        return Text(TOO_LONG)

    problem = description_problem(text)
    if problem:
        return Text(problem)
    lead = d.pop("lead", "")
    if lead and not text.startswith(lead):  # “投诉物业” said first: the start of the description
        text = f"{lead}：{text}"[:2000]
    d["content"] = text
    return _advance(ctx, d, "place")


def _place(ctx: Context, d: dict[str, Any]) -> Reply:
    if ctx.msg.msg_type == "image":  # kept for the photo step (it was dropped, the user believing it sent)
        return _photo_reply(ctx, d, PHOTO_KEPT, after=_prompt(d, "place"))
    t = _answer(ctx)
    if not t:
        return Text(PHOTO_NOT_NOW + PROMPTS["place"])
    known = d.get("known", {})
    last = d.get("last") or {}
    if _yes(t) and known.get("enterprise_name"):
        for key in ("enterprise_id", "enterprise_name", "building_id", "building_name"):
            if key in known:
                d[key] = known[key]
    elif _yes(t) and last.get("enterprise_name"):  # the one of the appeal just filed
        for key in ("enterprise_id", "enterprise_name", "building_id", "building_name"):
            if key in last:
                d[key] = last[key]
    elif _yes(t):  # no enterprise on file to say yes to: “是” / “好的” became the enterprise's name
        return Text(NO_PLACE_YES + PROMPTS["place"])
    elif (known.get("enterprise_name") or last.get("enterprise_name")) and _NO_RE.fullmatch(word(t)):  # “不是” to the enterprise on file: became its name
        return Text(PROMPTS["place"])
    elif word(t) in SKIP_WORDS or _NO_ENTERPRISE.fullmatch(word(t)):
        # “跳过”, “没有公司”, “个人”: became the enterprise's name (“企业：跳过” reached staff)
        return _advance(ctx, d, "contact", PLACE_SKIPPED)
    elif sum(ch.isalnum() for ch in without_faces(t)) < 2:  # “😀”, “[微笑]”: no name for staff to go on
        return Text(PLACE_NO_WORDS + _prompt(d, "place"))
    elif _not_a_name(t):
        return Text(PLACE_NOT_A_NAME + _prompt(d, "place"))
    elif _QUESTION.search(t) and not _ORGANISATION.search(t):
        return _question_in_draft(ctx, d, t)
    elif _MOBILE.search(t) and not _ORGANISATION.search(t):  # the contact, a step early: no enterprise's name
        return Text(PLACE_CONTACT_LATER + _prompt(d, "place"))
    else:
        too_long = _match_place(ctx, d, t)
        if too_long:
            from wxapp_backend.appeals.intake import ENTERPRISE_NAME_MAX

            return Text(PLACE_TOO_LONG.format(n=too_long, max=ENTERPRISE_NAME_MAX) + _prompt(d, "place"))
    return _advance(ctx, d, "contact")


def _match_place(ctx: Context, d: dict[str, Any], said: str) -> int:
    """The enterprise and building named in `said`, found on file; with the database away, `said` kept as written
    (`place_unmatched`) and looked up on “确认” (the answer was lost, the user told “请稍后再发一次”). An enterprise's
    name over ENTERPRISE_NAME_MAX is not kept (it was cut at 200 without a word): its length is returned, else 0."""
    from wxapp_backend.appeals.intake import ENTERPRISE_NAME_MAX, match_place, strip_invisible
    from wxapp_backend.db import session_scope

    try:
        with session_scope() as s:
            found = match_place(s, said)
        if len(found["enterprise_name"]) > ENTERPRISE_NAME_MAX:
            return len(found["enterprise_name"])
        d.update(found)
        d.pop("place_unmatched", None)
    except DB_AWAY:
        log.warning("appeal intake: place not looked up", exc_info=True, extra={"account": ctx.account})
        name = strip_invisible(said).strip()
        if len(name) > ENTERPRISE_NAME_MAX:
            return len(name)
        d["enterprise_name"] = name
        d["place_unmatched"] = said
    return 0


def _not_a_name(text: str) -> bool:
    """Annoyance, a verdict on the bot (“没用”, “不对”), laughter, “不知道”, a number alone, or fillers (3,000 × “啊”,
    which became the name, cut to 200): no enterprise's name."""
    t = without_faces(text).strip()
    return (is_venting(t) or feedback_of(t) is not None or is_wrong_answer(t) or detect_smalltalk(t) == "ack"
            or bool(_DONT_KNOW.fullmatch(word(t))) or not any(ch.isalpha() for ch in t) or has_no_content(t))


# A question typed where the enterprise was asked for (the user turned to something else): it became the
# enterprise's name, unanswered. Not when it names an organisation or a building (“上海什么值得买科技有限公司”).
_QUESTION = re.compile(r"[？?]$|怎么|怎样|如何|哪些|哪里|哪儿|什么|多少|能否|能不能|可不可以|是否|吗$|呢$")
_ORGANISATION = re.compile(r"公司|集团|企业服务|中心|事务所|工作室|大厦|大楼|园|广场|商务楼|厂|店|号|楼")


def _question_in_draft(ctx: Context, d: dict[str, Any], text: str) -> Reply:
    """The question answered, the draft kept aside as the menu keeps it (“继续” resumes the step)."""
    from . import kb

    d["paused"] = True
    _save(ctx, d)
    reply = kb.answer(text, ctx)
    if not isinstance(reply, Text):
        return reply
    return Text(reply.text + PAUSED.format(n=STEPS.index(d["step"]) + 1))


# A yes as people say it (“是的，没错”, “好的”, “嗯”, “可以”): these became the enterprise's name, the appeal filed
# without the verified enterprise.
_YES_RE = re.compile(r"(?:是的?|对的?|没错|确认|确定|正确|好的?|可以|嗯+|没问题|ok|yes)+", re.IGNORECASE)


_NO_ENTERPRISE = re.compile(r"(?:我是)?(?:个人|个体|没有?(?:公司|企业|单位)|无(?:公司|企业|单位)|不填|不想填|不方便(?:说|透露|填)?)"
                            r"(?:的|了|啦)?")
_NO_RE = re.compile(r"(?:不是|不对|不|否|错了)(?:的|啦|了)?(?:这家|这个|这家公司|这个企业)?")
_KNOWN_PHONE_YES = re.compile(r"(?:^|[\s,，、:：])(?:是的?|对的?|用这个(?:号码?)?)[。.！!]?$")


def _yes(text: str) -> bool:
    t = word(text)
    return t in YES_WORDS or bool(_YES_RE.fullmatch(re.sub(r"[\s，,。！!～~、]+", "", t)))


def _contact(ctx: Context, d: dict[str, Any]) -> Reply:
    if ctx.msg.msg_type == "image":
        return _photo_reply(ctx, d, PHOTO_KEPT, after=_prompt(d, "contact"))
    t = _answer(ctx)
    if not t:
        return Text(PHOTO_NOT_NOW + PROMPTS["contact"])
    last = d.get("last") or {}
    if last.get("contact_phone") and _yes(t):  # the contact of the appeal just filed
        d["contact_name"], d["contact_phone"] = last["contact_name"], last["contact_phone"]
        return _advance(ctx, d, "photos")
    if last.get("contact_phone") and _NO_RE.fullmatch(word(t)):
        return Text(PROMPTS["contact"])
    known_phone = d.get("known", {}).get("phone", "")
    m = _MOBILE.search(t)
    if m is not None:
        phone = "".join(m.groups())
    else:
        m = _LANDLINE.search(t)
        phone = m.group(1) if m else ""
    rest = t[:m.start()] + " " + t[m.end():] if m else t
    said_yes = _KNOWN_PHONE_YES.search(t)  # “张三 是”, also “张三，是的”, “张三 对”
    if not phone and known_phone and said_yes:
        phone, rest = known_phone, t[:said_yes.start()]
    if not phone or not PHONE_RE.match(phone):
        if _other_question(t, "contact"):  # “营业执照丢了怎么办？”: “没有认出手机号”, the question unanswered
            return _question_in_draft(ctx, d, t)
        return Text(BAD_CONTACT)
    if _MOBILE.search(rest) or _LANDLINE.search(rest):
        # A second number was kept as part of the name (“张三 13900139000”) and reached staff that way.
        return Text(ONE_PHONE)
    name = re.sub(r"[\s,，:：;；]+", " ", rest).replace("联系人", "").replace("电话", "").replace("手机", "").strip()
    if not name:
        return Text(NO_NAME)
    d["contact_name"], d["contact_phone"] = name[:32], phone
    return _advance(ctx, d, "photos")


def add_photo(ctx: Context, flow: str, draft_key: str, draft_id: Any, limit: int) -> int | None:
    """Add the message's photo to the state of `flow` atomically (photos sent together arrive as concurrent
    messages: a read-modify-write would keep only some of them). Returns how many photos the state holds, -1
    when the limit was reached, None when the flow is no longer there (finished or dropped meanwhile: nothing is
    written back)."""
    media_id = ctx.msg.media_id
    outcome: list[int | None] = [None]

    def add(cur: dict[str, Any]) -> dict[str, Any]:
        outcome[0] = None
        if cur.get("flow") != flow or cur.get(draft_key) != draft_id:
            return cur
        media = cur.setdefault("media", [])
        if len(media) >= limit and media_id not in media:
            outcome[0] = -1
            return cur
        if media_id and media_id not in media:
            media.append(media_id)
        outcome[0] = len(media)
        return cur

    ctx.state.update(add)
    return outcome[0]


def _photo_reply(ctx: Context, d: dict[str, Any], ok: str, after: str | None = None) -> Reply:
    """Keep the message's photo with the draft; `after`: the step's prompt, when the photo came at another step
    (it was dropped there, the user believing it sent)."""
    try:
        n = add_photo(ctx, FLOW, "id", d.get("id"), 9)
    except redis.RedisError:
        return Text(UNAVAILABLE)
    if n is None:
        return Text(LOST)
    if after is not None:
        return Text((PHOTO_FULL_NOW if n < 0 else ok.format(n=n)) + after)
    return Text(PHOTO_FULL if n < 0 else ok.format(n=n))


def _photos(ctx: Context, d: dict[str, Any]) -> Reply:
    if ctx.msg.msg_type == "image":
        return _photo_reply(ctx, d, PHOTO_OK)
    t = word(_answer(ctx))
    if t in SKIP_WORDS or t in CONFIRM_WORDS or _PHOTOS_DONE.fullmatch(t):
        return _advance(ctx, d, "confirm")
    said = _answer(ctx)
    if _other_question(said, "photos"):  # “营业执照丢了怎么办？”: the photo prompt again, the question unanswered
        return _question_in_draft(ctx, d, said)
    return Text(PROMPTS["photos"])


# A question at the contact, photo or confirmation step about something else (the user turned to another topic): answered, the draft
# kept aside, as at the enterprise step. Not one about the step itself (“手机号必须填吗”, “照片怎么发”: the step's
# prompt says), nor one with digits in it (a contact, however written).
_ABOUT_STEP = {"contact": re.compile(r"电话|手机|号码|联系|姓名|名字|座机|称呼|留|填|隐私|保密|\d"),
               "photos": re.compile(r"照片|图片|相片|图|拍|发|传|张|视频|跳过|好了|\d"),
               "confirm": re.compile(r"确认|确定|提交|修改|改|取消|撤回|核对|对吗|\d")}


def _other_question(text: str, step: str) -> bool:
    return bool(text) and len(text) <= 200 and bool(_QUESTION.search(text)) and not _ABOUT_STEP[step].search(text)


def _confirm(ctx: Context, d: dict[str, Any]) -> Reply:
    if d.get("editing") and word(_answer(ctx)) not in CONFIRM_WORDS and ctx.msg.msg_type != "image":
        return Text(EDIT_HINT + EDIT_WHICH)
    if ctx.msg.msg_type == "image":  # one more photo after the summary: added, and the summary counts it
        reply = _photo_reply(ctx, d, PHOTO_KEPT, after="")
        return reply if reply.text in (LOST, UNAVAILABLE) else Text(reply.text + _summary(_state(ctx) or d))
    if word(_answer(ctx)) not in CONFIRM_WORDS:
        if _other_question(_answer(ctx), "confirm"):  # it got “诉求还没有提交哦” and the summary, the question unanswered
            return _question_in_draft(ctx, d, _answer(ctx))
        return Text(NOT_CONFIRMED + _summary(d))
    if ctx.user_id is None:
        return Text(NO_USER)
    from wxapp_backend.appeals.calendar import TZ
    from wxapp_backend.appeals.intake import submit_from_chat
    from wxapp_backend.db import session_scope
    from wxapp_backend.errors import AppError

    try:
        with session_scope() as s:
            if d.get("place_unmatched"):  # said while the database was away: looked up now
                from wxapp_backend.appeals.intake import match_place

                d.update(match_place(s, d.pop("place_unmatched")))
            appeal = submit_from_chat(s, ctx.user_id, d, account=ctx.account)
            number, due = appeal.number, appeal.due_at
    except AppError as exc:  # e.g. a category needing a field: say what is wrong, keep the draft
        return Text(f"诉求没有提交：{exc.message}\n回复“修改”改其中一项，或“取消”放弃。")
    _end(ctx)
    log.info("chat appeal submitted", extra={"account": ctx.account, "user_id": ctx.user_id})
    return Text(SUBMITTED.format(number=number, due=due.astimezone(TZ).strftime("%m月%d日 %H:%M") if due else "—"))


def lost(ctx: Context) -> Reply:
    expired_note(ctx)  # LOST says it (the note is not given again with the next answer)
    if ctx.user_id is not None:
        from datetime import timedelta

        from wxapp_backend.appeals.followup import rated_since
        from wxapp_backend.appeals.services import list_own
        from wxapp_backend.db import session_scope, utcnow

        from .appeal_followup import ALREADY_RATED_THANKS

        with session_scope() as s:
            since = utcnow() - timedelta(seconds=RECENT_SECONDS)
            latest = list_own(s, ctx.user_id, per_page=1).items
            submitted = latest[0] if latest and latest[0].channel == "chat" and latest[0].created_at >= since else None
            # “跳过” just after a rating (its comment step answered by the message sent with it, or a double tap):
            # LOST said “也没有提交任何内容” to someone whose rating had just been saved.
            rated = rated_since(s, ctx.user_id, submitted.created_at if submitted is not None else since)
            if rated is not None:
                return Text(ALREADY_RATED_THANKS.format(number=rated))
            if submitted is not None:
                return Text(JUST_SUBMITTED.format(number=submitted.number))
    return Text(LOST)


def _command_in_draft(ctx: Context) -> bool:
    """“活动”, “撤回诉求” while a draft is open (not put aside): another command, no answer to the step."""
    if ctx.msg.msg_type != "text" or not elsewhere_command(ctx.text):
        return False
    d = _state(ctx)
    return d.get("flow") == FLOW and d.get("step") in STEPS and not d.get("paused")


# A location, a sticker, a video while a draft is open: answered as if none were (“收到您的位置…请用文字告诉小二”), the
# step forgotten and nothing said of the appeal not yet filed.
IN_DRAFT = "\n\n您正在登记诉求（第 {n}/5 步），还没有提交：\n{ask}"


def _other_in_draft(ctx: Context) -> bool:
    """A message of a type no step reads (not text, image or voice) while a draft is open and not put aside."""
    if ctx.msg.is_event or ctx.msg.msg_type in ("text", "image", "voice"):
        return False
    d = _state(ctx)
    return d.get("flow") == FLOW and d.get("step") in STEPS and not d.get("paused")


def other_in_draft(ctx: Context) -> Reply:
    """What the chat says to such a message anyway, then the step that waits."""
    from .bot import UNSUPPORTED, location_ack

    said = location_ack(ctx) if ctx.msg.msg_type == "location" else UNSUPPORTED
    return Text(said + in_draft_note(_state(ctx)))


def in_draft_note(d: dict[str, Any]) -> str:
    """The step of draft `d` that waits (IN_DRAFT); '' when there is none."""
    if d.get("step") not in STEPS:  # gone meanwhile
        return ""
    ask = CONFIRM_HINT if d["step"] == "confirm" else _prompt(d, d["step"])
    return IN_DRAFT.format(n=STEPS.index(d["step"]) + 1, ask=ask)


def install(r: Router) -> Router:
    """Register the intake's rules on a router (the default one at import; tests pass their own)."""

    def aside(ctx: Context) -> Reply:
        """The command's own answer, the draft kept aside (paused) until “继续”, as the menu keeps it."""
        note = _park(ctx)
        return Text(answer_elsewhere(r, ctx) + note)

    # The matchers read only the message and ctx.state (cheap); the handlers need the database or Redis.
    r.match(_person_in_draft, cheap=True, pure=True)(to_person)
    r.match(_command_in_draft, cheap=True, pure=True)(aside)
    r.match(_in_flow, cheap=True, pure=True)(step)
    r.match(_other_in_draft, cheap=True, pure=True)(other_in_draft)
    r.match(_menu_in_draft, cheap=True, pure=True)(pause)
    r.text(*START_WORDS)(start)
    r.match(_start_phrase, cheap=True, pure=True)(start)  # before: “我想反映一个情况！” is no problem told
    r.match(_start_with_text, cheap=True, pure=True)(start)
    r.match(_start_with_object, cheap=True, pure=True)(start)
    r.click("MENU_APPEAL")(start)
    r.match(_lost_answer, cheap=True, pure=True)(lost)  # not fast: it looks for an appeal just submitted
    return r


install(default_router)
