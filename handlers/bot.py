"""The default 数字店小二: welcome, menu, greetings, 人工, media hints and the knowledge-base fallback.

Other intents plug in by registering on `router` (see handlers/__init__.py): rules registered before
`install_defaults` runs win over the generic ones here.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import replace

# one voice: “你好” / “谢谢” here, “你好小二” / “谢谢小二” there
from wxapp_backend.knowledge_store.chat import BYE, GREETING, THANKS
from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

from . import kb
from .middleware import DEFAULT_MIDDLEWARE
from .replies import Reply, Text, Transfer, as_reply
from .router import Context, Router, command_word, to_simplified

log = logging.getLogger("handlers")

# Menu CLICK keys configured in the Official Account menu -> (intent, label). Change the keys here (or
# mutate the dict at start-up) if the account's menu uses other keys.
MENU: dict[str, tuple[str, str]] = {
    "MENU_KB": ("kb", "政策问答"),
    "MENU_APPEAL": ("appeal", "我要反映"),
    "MENU_ACTIVITY": ("activity", "白领活动"),
    "MENU_HUMAN": ("human", "人工服务"),
}

MENU_TEXT = (
    "回复数字即可：\n"
    "1 政策问答（惠企政策、办事指南）\n"
    "2 我要反映（企业诉求、问题反映）\n"
    "3 白领活动（午间一小时、楼宇活动）\n"
    "4 人工服务\n"
    "提交过诉求？回复“我的诉求”查看进度、评价结果。\n"
    "也可以直接输入您的问题，例如“开办企业需要哪些材料”。"
)
WELCOME = "您好，欢迎关注营商服务中心！我是数字店小二，7×24 小时为您服务～\n" + MENU_TEXT
WELCOME_BACK = "欢迎回来！我是数字店小二，有什么可以帮您？\n" + MENU_TEXT
WXA_WELCOME = "您好，我是营商服务中心的数字店小二～有什么问题直接问我，回复“菜单”看看我能做什么。"
KB_PROMPT = "请直接输入您想了解的政策或办事问题，例如“小微企业有哪些税收优惠”“营业执照丢了怎么办”。"
APPEAL_TEXT = (
    "企业遇到困难、对服务有意见建议，都可以告诉我们（有呼必应）。\n"
    "请在小程序“我要反映”中填写诉求，或直接回复问题描述并留下联系方式，工作人员会尽快联系您。"
)
ACTIVITY_TEXT = "白领活动（午间一小时、楼宇音乐会、健康讲座等）请在小程序“白领活动”中查看和报名，开始前会提醒您。"
HUMAN_NOTE = "正在为您转接人工客服，请稍候～（工作时间：工作日 9:00-17:30，非工作时间请留言，我们上班后第一时间回复）"
IMAGE_ACK = "收到您的图片啦！如果是想反映问题，请回复“我要反映”，按提示说明情况后再把照片发给小二，会一起登记转给工作人员。"
# A photo sent outside the 补充 flow by someone whose appeal waits for material (it got IMAGE_ACK: “回复“我要反映””, a
# new appeal, while the photo staff asked for reached nobody).
IMAGE_FOR_SUPPLEMENT = ("收到您的图片啦！不过它还没有交给工作人员：诉求 {number} 正等您补充材料，请先回复“补充 {number}”，"
                        "再把照片和文字说明发给小二，会一起提交。")
# A photo just after an appeal was filed or supplemented (“确认”, then the photo remembered): IMAGE_ACK's “回复“我要反映””
# filed the same problem a second time.
IMAGE_AFTER = ("收到您的图片啦！不过诉求 {number} 已经提交，这张图片没有附上。要把照片交给工作人员，请回复“人工”；"
               "反映新的问题，请回复“我要反映”。")
LOCATION_ACK = "收到您的位置{label}，谢谢！如需找附近的服务站点或反映问题，请用文字告诉小二。"
UNSUPPORTED = "小二暂时只看得懂文字和图片哦～请用文字描述您的问题，或回复“人工”联系工作人员。"

APPEAL_APP = "企业遇到困难、对服务有意见建议，都可以告诉我们（有呼必应）：请在小程序“我要反映”中填写诉求，工作人员会在承诺时限内联系您。"
APPEAL_APP_TOLD = ("您说的问题还没有登记哦：请在小程序“我要反映”中填写诉求（可以把刚才的描述粘贴进去），"
                   "工作人员会在承诺时限内联系您。")
APPEAL_APP_NONE = ("这里没有正在填写的诉求，刚才的内容也没有提交。反映问题请在小程序“我要反映”中填写；"
                   "查看已提交的诉求请打开“我的诉求”。")
FOLLOWUP_APP = "评价办理结果、补充材料，请在小程序“我的诉求”中打开那条诉求办理。"
SUPPLEMENT_APP_NOT_SENT = "刚才补充的内容还没有提交：请在小程序“我的诉求”中打开那条诉求补充。\n"
STATUS_LOGIN = "登录小程序后，就能在这里查看您提交的诉求；也可以直接打开“我的诉求”。"
REGISTRATIONS_LOGIN = "登录小程序后，就能在这里查看您报名的活动；也可以直接打开“我的报名”。"
REGISTRATIONS_BUSY = "系统暂时繁忙，小二这会儿查不到您的报名，请过一两分钟再回复“我的报名”试试～"
# The app's chat cannot hand over by itself: the app shows its 客服 button (open-type="contact") on "handoff".
HUMAN_APP = ("找工作人员请点“联系客服”，进入微信客服会话（工作时间：工作日 9:00-17:30，非工作时间请留言）。"
             "要反映问题，也可以在“我要反映”中留下诉求。")

HUMAN_WORDS = ("人工", "转人工", "人工客服", "人工服务", "客服")
APPEAL_WORDS = ("我要反映", "反映问题", "投诉", "诉求")
ACTIVITY_WORDS = ("白领活动", "活动")
MENU_WORDS = ("菜单", "帮助", "help", "help me", "?", "？", "menu")
MENU_REPLY = "我是数字店小二，可以帮您：\n" + MENU_TEXT
GREETINGS = ("你好", "您好", "hi", "hello", "在吗", "在么", "在不在", "哈喽", "嗨", "早上好", "下午好", "晚上好")
THANKS_WORDS = ("谢谢", "谢谢你", "谢谢您", "感谢", "多谢", "thanks", "thank you", "thank u", "thx", "好的谢谢",
                "辛苦了")
BYE_WORDS = ("再见", "拜拜", "bye")
# “取消” with nothing under way (no intake, rating or supplement): it got “您是不是想问：报名了去不了，怎么取消？…” and
# was logged as a question. Inside a flow the flow's own rules answer these first.
NOTHING_WORDS = ("取消", "算了", "算了吧", "不用了", "不需要了", "退出", "不提交了", "cancel")
NOTHING_UNDER_WAY = ("好的～现在没有进行中的事项（没有正在填写的诉求、评价或补充）。还有什么需要，直接问我就行；"
                     "回复“菜单”看看我能做什么。")
DRAFT_KEPT = "您还有一条未填完的诉求（第 {n}/5 步），已为您保留：回复“取消”放弃它，回复“继续”接着填。"
# “我要取消” with nothing under way: the user means something they did before (it was read as withdrawing an appeal).
CANCEL_WHICH = "\n想取消活动报名，请到小程序“我的报名”；想撤回已提交的诉求，请回复“撤回诉求”。"
# “不取消”, “不撤回” (it got the knowledge base's answer on how to cancel a registration).
KEEP_AS_IS = "好的，保持原样，不做任何更改～还有什么需要，直接问我就行。"


def _loose_cancel(text: str) -> str | None:
    """`text` as a 取消 said loosely (“取消吧”, “我要取消”: appeal_intake.is_cancel) or one of NOTHING_WORDS: its command
    word, or None."""
    from .appeal_intake import is_cancel, word

    if not text or len(text) > 16:
        return None
    t = word(text)
    return t if command_word(text) in _FOLDED["nothing"] or is_cancel(t) else None


def nothing_under_way(text: str) -> str:
    """The answer to a 取消 with no intake, rating or supplement under way."""
    t = _loose_cancel(text) or ""
    return NOTHING_UNDER_WAY + (CANCEL_WHICH if t.startswith("我") else "")


def _nothing_word(ctx: Context) -> bool:
    return ctx.msg.msg_type == "text" and _loose_cancel(ctx.text) is not None


def _not_cancel_word(ctx: Context) -> bool:
    from .appeal_intake import not_cancel, word

    return ctx.msg.msg_type == "text" and bool(ctx.text) and len(ctx.text) <= 16 and not_cancel(word(ctx.text))


def image_ack(user_id: int | None) -> str:
    """The answer to a photo outside any flow: where a photo goes (the supplement staff asked for, or a new appeal)."""
    if user_id is not None:
        from datetime import timedelta

        from wxapp_backend.appeals.followup import needing_info_latest, told_since
        from wxapp_backend.db import session_scope, utcnow

        from .appeal_intake import RECENT_SECONDS

        try:
            with session_scope() as s:
                appeal = needing_info_latest(s, user_id)
                number = appeal.number if appeal is not None else None
                told = None if number else told_since(s, user_id, utcnow() - timedelta(seconds=RECENT_SECONDS))
        except Exception:  # noqa: BLE001 - the usual hint then
            log.exception("supplement lookup for a photo failed")
            number = told = None
        if number:
            return IMAGE_FOR_SUPPLEMENT.format(number=number)
        if told:
            return IMAGE_AFTER.format(number=told)
    return IMAGE_ACK


def location_ack(ctx: Context) -> str:
    """The answer to a location sent in the chat."""
    label = ctx.msg.location.label if ctx.msg.location and ctx.msg.location.label else ""
    return LOCATION_ACK.format(label=f"（{label}）" if label else "")


def human(ctx: Context) -> Reply:
    """Hand over to a person: both accounts pass the conversation to WeChat's customer-service tool
    (transfer_customer_service; the note goes first as a customer-service message)."""
    return Transfer(HUMAN_NOTE)


def appeal(ctx: Context) -> Reply:
    return Text(APPEAL_TEXT)


ACTIVITY_LIST_LIMIT = 5
MY_REGISTRATION_WORDS = ("我的报名", "我报名的活动", "我的活动", "报名记录")
NO_ACTIVITY = ("最近暂时没有可以报名的活动。可以在小程序“白领活动”里订阅感兴趣的类别，新活动发布时会第一时间通知您～")
_WEEKDAYS = "一二三四五六日"
_DAY_WORDS = {0: "今天", 1: "明天", 2: "后天"}  # as the reminders say it (activities.jobs._day_word)
# A passive reply is cut at 2048 bytes (WECHAT.md): five 100-character titles with long addresses lost items 4 and 5
# and the “回复序号” line, while “4” and “5” still picked them. A list line keeps this much; the detail has all.
LIST_TITLE_CHARS = 30
LIST_PLACE_CHARS = 20
MORE_ACTIVITIES = "\n还有 {n} 个可以报名的活动没有列出，请到小程序“白领活动”查看全部。"
MORE_REGISTRATIONS = "\n还有 {n} 个报名没有列出，请到小程序“我的报名”查看全部。"
# A follower never logged in to the mini-program (their row is the placeholder “oa:…”): registrations are made in the
# mini-program, under a login the chat cannot see yet; “您目前没有报名的活动” told someone registered there they were not.
REGISTRATIONS_NOT_LINKED = ("公众号这边暂时看不到您在小程序里的报名（您还没有用这个微信登录过小程序）。请打开小程序“我的报名”查看；"
                            "登录小程序后，在这里回复“我的报名”也能查到。想看近期可以报名的活动，回复“活动”。")


# “更多” / “下一页” just after a list of activities: it went to the knowledge base (“这个问题我还没学会”, a row in staff's
# queue of unanswered questions). The chat lists ACTIVITY_LIST_LIMIT at a time; the rest are in the mini-program.
MORE_WORDS = ("更多", "更多活动", "查看更多", "看更多", "还有吗", "还有呢", "还有别的吗", "下一页", "下一批",
              "全部活动", "其他活动", "别的活动")
MORE_AFTER_LIST = (f"聊天里一次最多列出 {ACTIVITY_LIST_LIMIT} 个，其余的请到小程序“白领活动”（您的报名在“我的报名”）查看全部；"
                   "刚才列出的，回复序号查看详情。")


def _more_after_list(ctx: Context) -> bool:
    return (ctx.msg.msg_type == "text" and bool(ctx.text) and command_word(ctx.text) in _FOLDED["more"]
            and kb.shown_list(ctx, "activity") is not None)


def _when(value) -> str:
    """“12月8日（明天）19:00”, “12月12日（周六）12:00”: the Shanghai calendar, 今天 / 明天 / 后天 where it is one of
    them (someone reading at lunch had to work out that “（周二）” was tomorrow)."""
    from wxapp_backend.activities.services import SHANGHAI
    from wxapp_backend.db import utcnow

    local = value.astimezone(SHANGHAI)
    day = _DAY_WORDS.get((local.date() - utcnow().astimezone(SHANGHAI).date()).days,
                         f"周{_WEEKDAYS[local.weekday()]}")
    return f"{local.month}月{local.day}日（{day}）{local:%H:%M}"


def _short(text: str, chars: int) -> str:
    """`text` cut to `chars` characters (marked), for one line of a list."""
    text = " ".join((text or "").split())
    return text if len(text) <= chars else text[:chars - 1] + "…"


def activity_text(user_id: int | None = None, *, category: str | None = None, title: str | None = None,
                  label: str = "") -> str:
    """白领活动: the next ones still taking registrations, with time, place and seats left; details and the
    registration itself are in the mini-program. For a known user only those they may register for (an activity
    for other buildings or industries was listed and then refused); `category` / `title` (with their `label`, as
    the user said it) for “报名午间一小时”."""
    return activity_list(user_id, category=category, title=title, label=label)[0]


def activity_list(user_id: int | None = None, *, category: str | None = None, title: str | None = None,
                  label: str = "") -> tuple[str, list[int]]:
    """`activity_text` and the ids of the activities it numbered (a number replied next picks one of them)."""
    from wxapp_backend.activities.services import open_for_registration_and_rest
    from wxapp_backend.db import session_scope

    try:
        with session_scope() as s:
            lines, ids = [], []
            found, rest = open_for_registration_and_rest(s, ACTIVITY_LIST_LIMIT, user_id=user_id, category=category,
                                                         title=title)
            for i, (a, left) in enumerate(found, 1):
                seats = f"剩 {left} 个名额" if left > 0 else ("已满，可候补" if a.waitlist_enabled else "已满")
                # the building too: the address is often a room in it
                place = f"，{_short(a.place, LIST_PLACE_CHARS)}" if a.place else ""
                lines.append(f"{i}. {_short(a.title, LIST_TITLE_CHARS)}：{_when(a.starts_at)}{place}（{seats}）")
                ids.append(a.id)
    except Exception:  # noqa: BLE001 - the lookup is a convenience: point to the mini-program instead
        log.exception("activity lookup failed")
        return ACTIVITY_TEXT, []
    pick = _pick_hint(len(ids))
    if rest:
        lines.append(MORE_ACTIVITIES.format(n=rest))
    if label:
        if not lines:
            return NO_ACTIVITY_OF.format(label=label), []
        return (f"“{label}”近期可以报名的活动：\n" + "\n".join(lines) + "\n\n" + pick + HOW_TO_REGISTER), ids
    if not lines:
        return NO_ACTIVITY, []
    return ("近期可以报名的活动：\n" + "\n".join(lines) + "\n\n" + pick
            + "报名请到小程序“白领活动”，开始前会提醒您；回复“我的报名”查看您报过的活动。"), ids


def _pick_hint(n: int) -> str:
    """The line under a numbered list of activities: a number picks one (it was the menu's item)."""
    return "回复序号 1 查看详情。" if n == 1 else f"回复序号（1～{n}）查看详情。"


ACTIVITY_GONE = "这个活动已经下线了，回复“活动”看看近期可以报名的活动。"
ACTIVITY_CANCELLED = "这个活动已经取消了，不能报名（报过名的会收到取消通知）。回复“活动”看看近期其他可以报名的活动。"
# After why one cannot register: the activity's page all the same (with WXA_APPID a link to it, as the registrable
# detail's 报名方法 has), where it can be followed, shared, or registered for once it opens or a seat comes free.
CANNOT_REGISTER_SEE = "\n活动详情请到小程序“白领活动”查看；回复“活动”看看近期其他可以报名的活动。"
DESCRIPTION_CHARS = 150
# After a description shortened for the chat: where the rest is (with WXA_APPID, a link to the activity's page).
DESCRIPTION_MORE = "…（完整介绍请到小程序“白领活动”查看）"
OTHER_ITEMS = "\n\n（想看刚才列出的其他{what}，回复 {numbers}）"


def activity_detail_text(activity_id: int, user_id: int | None, *, room: int = REPLY_TEXT_MAX_BYTES,
                         appid: str = "") -> str:
    """One activity picked from a numbered list (“活动”, “报名午间一小时”, “我的报名”): time, place, seats, what it is,
    the user's own registration, and how to register (in the mini-program). Within `room` bytes once its mini-program
    pages are links (`appid`, the mini-program's; none without): the description, then the place, then the title
    are shortened so that the links and the closing lines always fit."""
    from wxapp_backend.activities.models import ActivityStatus, RegStatus
    from wxapp_backend.activities.services import SHANGHAI, chat_detail, waitlist_positions
    from wxapp_backend.db import session_scope, utcnow

    with session_scope() as s:
        found = chat_detail(s, int(activity_id), user_id)
        if found is None:
            return ACTIVITY_GONE
        a, taken, queued, own, why = found
        ends = a.ends_at.astimezone(SHANGHAI)
        same_day = ends.date() == a.starts_at.astimezone(SHANGHAI).date()
        cancelled = a.status == ActivityStatus.CANCELLED.value
        flag = "（已取消）" if cancelled else ""
        when = f"时间：{_when(a.starts_at)} - {f'{ends:%H:%M}' if same_day else _when(a.ends_at)}"
        seats, description = "", ""
        if cancelled:  # picked from a list shown before staff cancelled it: no seats, no “报名方法”
            tail = ACTIVITY_CANCELLED
        else:
            left = a.capacity - taken
            waitlist = a.waitlist_enabled and a.starts_at > utcnow()  # no more waiting once it has begun
            if left > 0:
                seats = f"名额：剩 {left} 个（共 {a.capacity} 个）"
            else:
                seats = "名额：已满" + (f"，可候补（已有 {queued} 人候补）" if waitlist and queued
                                       else "，可候补" if waitlist else "")
            description = " ".join((a.description or "").split())
            if own is not None:
                # as 我的报名's list said it (“候补第2位”, not “候补中”; missed once begun, not still waiting)
                place = (waitlist_positions(s, user_id, [a.id]).get(a.id)
                         if own == RegStatus.WAITLISTED.value and user_id is not None else None)
                tail = (f"您的报名：{registration_label(own, a.starts_at, place)}。取消报名、出示签到码请到小程序“我的报名”。")
            elif why:
                tail = f"现在不能报名：{why}" + CANNOT_REGISTER_SEE
            else:
                tail = HOW_TO_REGISTER
        title, where, aid = a.title, a.place, a.id

    def compose(title: str, where: str, description: str) -> str:
        lines = [f"【{title}】{flag}", when]
        if where:
            lines.append(f"地点：{where}")
        if seats:
            lines.append(seats)
        if description:
            lines.append(f"简介：{description}")
        return "\n".join(lines) + "\n\n" + tail

    from .links import activity_page, mini_links

    pages = activity_page(aid)

    def size(text: str) -> int:  # as sent: the page names made links
        return len((mini_links(text, appid, max_bytes=1 << 30, pages=pages) if appid else text).encode("utf-8"))

    return _fit(compose, [title, where, description], [2, 1, 0], room, size,
                {2: (DESCRIPTION_CHARS, DESCRIPTION_MORE)})


def _fit(compose: Callable[..., str], parts: list[str], order: list[int], room: int, size: Callable[[str], int],
         caps: dict[int, tuple[int, str]]) -> str:
    """`compose(*parts)` within `room` bytes (`size`): the parts in `order` cut in turn, each as little as needed,
    marked where cut (“…”, or the mark `caps` gives a part with its own most characters; a part cut to nothing keeps
    its mark, and the next part is cut)."""
    parts = list(parts)
    marks = {i: "…" for i in range(len(parts))}
    for i, (most, mark) in caps.items():
        marks[i] = mark
        if len(parts[i]) > most:
            parts[i] = parts[i][:most] + mark
    full = list(parts)
    for i in order:
        if size(compose(*parts)) <= room:
            break
        text, mark = full[i], marks[i]
        body = text[:-len(mark)] if text.endswith(mark) and len(text) > len(mark) else text
        lo, hi = 0, len(body) - 1  # the most characters kept (with the mark) that fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            parts[i] = body[:mid] + mark
            if size(compose(*parts)) <= room:
                lo = mid
            else:
                hi = mid - 1
        parts[i] = body[:lo] + mark if body else ""  # (none of it: the mark still says where it is)
    return compose(*parts)


def picked_item(kind: str, item_id, user_id: int | None, others: list[int], *, chat: bool = True,
                appid: str = "", room: int = REPLY_TEXT_MAX_BYTES) -> tuple[str, str]:
    """A number picking from a list the bot showed (knowledge_store.bot.offer_items): its reply and decision.
    `chat=False` for the in-app chat (what to do is on the mini-program's pages, not chat commands). An activity's
    detail fits in `room` bytes with its mini-program links (`appid`) and the line naming the others."""
    more = ""
    if others and kind != "withdraw":  # (its reply asks to confirm one: no other to look at)
        more = OTHER_ITEMS.format(what="活动" if kind == "activity" else "诉求",
                                  numbers="、".join(str(n) for n in others))
    if kind in ("appeal", "withdraw"):
        from .appeal_followup import APPEAL_GONE, UNAVAILABLE, appeal_detail_text, withdraw_ask_text

        try:
            text = (withdraw_ask_text(user_id, int(item_id)) if kind == "withdraw"
                    else appeal_detail_text(user_id, int(item_id), chat=chat))
        except Exception:  # noqa: BLE001 - a convenience: the list (我的诉求) still works
            log.exception("appeal detail lookup failed")
            return UNAVAILABLE, "guide"
        gone = APPEAL_GONE
    else:
        try:
            text = activity_detail_text(int(item_id), user_id, room=room - len(more.encode("utf-8")), appid=appid)
        except Exception:  # noqa: BLE001 - a convenience, as the list itself: point to the mini-program instead
            log.exception("activity detail lookup failed")
            return ACTIVITY_TEXT, "guide"
        gone = ACTIVITY_GONE
    if text != gone:
        text += more
    return text, "guide"


def app_picked_item(kind: str, item_id, user_id: int | None, others: list[int]) -> tuple[str, str]:
    """`picked_item` for the in-app chat (POST /api/v1/chat)."""
    return picked_item(kind, item_id, user_id, others, chat=False)


NO_ACTIVITY_OF = ("“{label}”最近暂时没有可以报名的活动。可以在小程序“白领活动”里订阅这个类别，新活动发布时会第一时间"
                  "通知您；回复“活动”看看其他可以报名的活动。")
HOW_TO_REGISTER = ("报名方法：打开小程序“白领活动”，点开这个活动，点“报名”即可（开始前会提醒您）；"
                   "回复“我的报名”查看您报过的活动。")
# What people call a category besides its label (“报名健身活动”, “报名音乐会”, “我要报名爬楼”).
CATEGORY_ALIASES: dict[str, tuple[str, ...]] = {
    "lunch_hour": ("午间一小时", "午间1小时", "午间课堂"),
    "concert": ("楼宇音乐会", "音乐会"),
    "vertical_marathon": ("垂直马拉松", "马拉松", "爬楼"),
    "social": ("交友联谊", "联谊", "交友", "相亲"),
    "health_check": ("健康体检", "体检"),
    "fitness": ("健身", "运动"),
    "training": ("培训",),
    "cfo_salon": ("财务经理沙龙", "沙龙"),
    "company_visit": ("企业参访", "参访"),
    "forum": ("营商论坛", "论坛", "专题会商"),
    "wellbeing": ("情感疏解", "心理疏导", "减压"),
}
_SIGN_UP = re.compile(r"报名")
# “职业技能培训补贴怎么报名”, “考试报名条件”: questions for the knowledge base, not the white-collar activities.
_POLICY_WORDS = re.compile(r"补贴|补助|政策|条件|材料|资格|申请|申报|考试|证书|职称|落户|社保|费用|学历|资助")
# Words around “报名 X” that are not X: “我想报名参加一下午间一小时的活动吧”.
_SIGN_UP_NOISE = re.compile(r"我想|我要|我也想|想要|想|要|请问|怎么|如何|怎样|在哪里?|哪里|可以|能|帮我|给我|"
                            r"报名|参加|参与|一下|活动|的|了|吗|呢|吧|啊|呀|[\s，,。.！!？?、～~：:]")


def sign_up_topic(text: str) -> tuple[str | None, str | None, str] | None:
    """“我想报名午间一小时”, “报名健身活动”, “报名楼宇音乐会”: (category, title words, label) of what the user wants to
    register for, or None (no 报名, 取消报名 or 我的报名, or nothing named). A category is found from its words;
    otherwise the rest of the text is a title to look up."""
    t = to_simplified(text.strip())
    if not t or len(t) > 40 or not _SIGN_UP.search(t) or "取消" in t or "我的报名" in t or "记录" in t \
            or _POLICY_WORDS.search(t):
        return None
    for key, words in CATEGORY_ALIASES.items():
        for w in words:
            if w in t:
                return key, None, w
    rest = _SIGN_UP_NOISE.sub("", t)
    return (None, rest, rest) if len(rest) >= 2 else None


def _sign_up_match(ctx: Context) -> tuple[str | None, str | None, str] | None:
    """A 报名 naming a category, or the title of an activity open for registration (a database look-up)."""
    topic = sign_up_topic(ctx.text) if ctx.msg.msg_type == "text" and ctx.text else None
    if topic is None or topic[0] is not None:
        return topic
    return topic if _title_exists(topic[1]) else None


def _title_exists(words: str | None) -> bool:
    from wxapp_backend.activities.services import open_for_registration
    from wxapp_backend.db import session_scope

    try:
        with session_scope() as s:
            return bool(words) and bool(open_for_registration(s, 1, title=words))
    except Exception:  # noqa: BLE001 - the knowledge base answers instead
        log.exception("activity title lookup failed")
        return False


def sign_up_text(user_id: int | None, topic: tuple[str | None, str | None, str]) -> str:
    return sign_up_list(user_id, topic)[0]


def sign_up_list(user_id: int | None, topic: tuple[str | None, str | None, str]) -> tuple[str, list[int]]:
    category, title, label = topic
    return activity_list(user_id, category=category, title=title, label=label)


def _offered(ctx: Context, found: tuple[str, list[int]]) -> Reply:
    """A numbered list of activities shown in the WeChat chat: a number next picks one of them."""
    kb.offer_activities(ctx, found[1])
    return Text(found[0])


def activity(ctx: Context) -> Reply:
    return _offered(ctx, activity_list(ctx.user_id))


def my_registrations(ctx: Context) -> Reply:
    return _offered(ctx, my_registrations_list(ctx.user_id))


def my_registrations_text(user_id: int | None) -> str:
    """我的报名: the user's registrations for activities still to come, with their state."""
    return my_registrations_list(user_id)[0]


def registration_label(status: str, starts, place: int | None) -> str:
    """A registration's state as the chat says it (我的报名's list, and the detail picked from it): the waitlist with
    its place (as the mini-program's 我的报名 shows it), or missed once the activity has begun."""
    from wxapp_backend.activities.models import STATUS_LABELS, RegStatus
    from wxapp_backend.activities.services import WAITLIST_MISSED
    from wxapp_backend.db import utcnow

    # Still waitlisted once it has begun: the waitlist will not move any more (promote() stops at the start).
    if status == RegStatus.WAITLISTED.value and starts <= utcnow():
        return WAITLIST_MISSED
    if status == RegStatus.WAITLISTED.value and place is not None:
        return f"候补第{place}位"
    return STATUS_LABELS.get(status, status)


def my_registrations_list(user_id: int | None) -> tuple[str, list[int]]:
    """`my_registrations_text` and the ids of the activities it numbered."""
    from wxapp_backend.activities.models import RegStatus
    from wxapp_backend.activities.services import (
        upcoming_registrations_count,
        upcoming_registrations_with_ids,
        waitlist_positions,
    )
    from wxapp_backend.auth.linking import never_logged_in
    from wxapp_backend.db import DB_AWAY, session_scope

    label = registration_label
    if user_id is None:
        return "您目前没有报名的活动。" + ACTIVITY_TEXT, []
    try:
        with session_scope() as s:
            rows = upcoming_registrations_with_ids(s, user_id, ACTIVITY_LIST_LIMIT)
            places = waitlist_positions(s, user_id,
                                        [row[0] for row in rows if row[3] == RegStatus.WAITLISTED.value])
            lines = [f"{i}. {_short(title, LIST_TITLE_CHARS)}：{_when(starts)}（{label(status, starts, places.get(_id))}）"
                     for i, (_id, title, starts, status) in enumerate(rows, 1)]
            rest = upcoming_registrations_count(s, user_id) - len(rows) if len(rows) == ACTIVITY_LIST_LIMIT else 0
            unlinked = not rows and never_logged_in(s, user_id)
    except DB_AWAY:  # the registrations are only in the database: said so, not “小二开了个小差”
        log.warning("registrations not read: database away", exc_info=True)
        return REGISTRATIONS_BUSY, []
    if unlinked:
        return REGISTRATIONS_NOT_LINKED, []
    if not lines:
        return "您目前没有报名的活动。回复“活动”看看近期有哪些可以报名。", []
    if rest > 0:
        lines.append(MORE_REGISTRATIONS.format(n=rest))
    return ("您报名的活动：\n" + "\n".join(lines) + "\n\n" + _pick_hint(len(rows))
            + "取消报名、出示签到码请到小程序“我的报名”。"), [row[0] for row in rows]


def kb_prompt(ctx: Context) -> Reply:
    return Text(KB_PROMPT)


INTENTS = {"kb": kb_prompt, "appeal": appeal, "activity": activity, "human": human}
DIGITS = {"1": "kb", "2": "appeal", "3": "activity", "4": "human"}


def menu_digit(text: str) -> str | None:
    """`text` as a number choice (“４”, “1。” as speech recognition ends a spoken “1”, “一”, “第三个”, “3号”): its
    ASCII digits, or None. Numbered choices everywhere in the chat read their answer with this."""
    from wxapp_backend.knowledge_store.chat import choice_number

    if not text or len(text) > 8:
        return None
    n = choice_number(text)
    return str(n) if n is not None else None


def _menu_digit(ctx: Context) -> str | None:
    """A menu digit alone (`menu_digit`): the digit, or None."""
    digit = menu_digit(ctx.text)
    return digit if digit in DIGITS else None


def install_defaults(router: Router, *, middleware: bool = True) -> Router:
    """Register the default middleware (outermost) and rules on `router`, after any rules already there.

    `fast=True` marks the rules that answer from the message alone (no database, no knowledge base, no
    Redis of their own): the webhook runs those in the request thread instead of handing them to its pool.
    `answer=` rules have a fixed reply, which the webhook may store with its claim (handlers/router.py).
    """
    if middleware:
        router.middleware[:0] = list(DEFAULT_MIDDLEWARE)

    # The replies that show the numbered menu forget pending “您是不是想问” choices, so that a digit means what
    # the last message said (they were fixed answers, stored with the claim, before that).
    @router.event("subscribe")
    def on_subscribe(ctx: Context) -> Reply:
        from .scenes import welcome

        kb.forget_choices(ctx)
        return Text(welcome(ctx, WELCOME))  # a poster's QR code: its building or activity too

    @router.event("unsubscribe")
    def on_unsubscribe(ctx: Context) -> None:
        # followed=False is recorded by the user middleware (queued, with the database away); nobody can read a
        # reply. WeChat takes no customer-service message to someone who left: shut their window (a restore from an
        # earlier message's last_message_at cannot reopen it), so notifications keep to the inbox until they write
        # again. Redis only: done at once, also with the database away.
        from wxapp_backend.wechat.jobs import shut_window

        shut_window(ctx.redis, ctx.account, ctx.openid, 45015)
        return None

    @router.event("scan")
    def on_scan(ctx: Context) -> Reply:
        from .scenes import welcome

        kb.forget_choices(ctx)
        return Text(welcome(ctx, WELCOME_BACK))

    @router.event("location", fast=True)
    def on_location_report(ctx: Context) -> None:
        return None  # periodic position reports: never answer them

    @router.event("click")
    def on_click(ctx: Context) -> Reply | None:
        entry = MENU.get(ctx.msg.event_key or "")
        if entry is None:
            log.info("unknown menu key", extra={"key": ctx.msg.event_key})
            kb.forget_choices(ctx)
            return Text(MENU_TEXT)
        return INTENTS[entry[0]](ctx)

    @router.event("view", "view_miniprogram", fast=True)
    def on_view(ctx: Context) -> None:
        return None

    router.event("user_enter_tempsession", answer=Text(WXA_WELCOME))

    @router.event("subscribe_msg_popup_event", "subscribe_msg_change_event")
    def on_subscribe_msg(ctx: Context) -> None:
        _apply_credits(ctx)
        return None

    @router.event("subscribe_msg_sent_event")
    def on_subscribe_msg_sent(ctx: Context) -> None:
        _apply_delivery_reports(ctx)
        return None

    @router.text(*HUMAN_WORDS, fast=True)
    def on_human(ctx: Context) -> Reply:
        return human(ctx)

    @router.text(*APPEAL_WORDS, fast=True)
    def on_appeal(ctx: Context) -> Reply:
        return appeal(ctx)

    @router.text(*ACTIVITY_WORDS)
    def on_activity(ctx: Context) -> Reply:
        return activity(ctx)

    @router.text(*MY_REGISTRATION_WORDS)
    def on_my_registrations(ctx: Context) -> Reply:
        return my_registrations(ctx)

    @router.text(*MENU_WORDS)
    def on_menu(ctx: Context) -> Reply:
        kb.forget_choices(ctx)
        return Text(MENU_REPLY)

    @router.regex(r"^绑定\s*(\d{6})$")
    def on_staff_link(ctx: Context) -> Reply:
        return Text(_link_staff(ctx, ctx.match.group(1)))

    @router.match(_menu_digit, cheap=True, pure=True)  # “4”, and “４” from a phone's Chinese keyboard
    def on_digit(ctx: Context) -> Reply | None:
        from .appeal_followup import score_after_notice

        scored = score_after_notice(ctx)  # “4” just after “您的诉求已办结，请评价”: the score, not 人工
        if scored is not None:
            return scored
        if kb.choices_last(ctx):  # "回复数字即可查看答案" wins over the menu digits (expired: it says so)
            return kb.answer(ctx.match, ctx)
        if kb.plain_answer_last(ctx):  # an answer with no list just given: ask, show the menu (its digits next)
            kb.forget_choices(ctx)
            return Text(kb.digit_after_answer(ctx.match))
        return _as_menu_click(router, ctx, DIGITS[ctx.match])

    @router.match(_nothing_word, cheap=True, pure=True, fast=True)
    def on_nothing_to_cancel(ctx: Context) -> Reply:
        from .appeal_intake import FLOW, STEPS, _state

        d = _state(ctx)  # a draft put aside by the menu: “不用了” is not the intake's 取消, and the draft is there
        if d.get("flow") == FLOW and d.get("step") in STEPS:
            return Text(DRAFT_KEPT.format(n=STEPS.index(d["step"]) + 1))
        return Text(nothing_under_way(ctx.text))

    @router.match(_not_cancel_word, cheap=True, pure=True, fast=True)
    def on_not_cancel(ctx: Context) -> Reply:
        return Text(KEEP_AS_IS)

    router.text(*GREETINGS, answer=Text(GREETING))
    router.text(*THANKS_WORDS, answer=Text(THANKS))
    router.text(*BYE_WORDS, answer=Text(BYE))

    @router.match(_more_after_list)  # not cheap: the list shown is in Redis
    def on_more_after_list(ctx: Context) -> Reply:
        return Text(MORE_AFTER_LIST)

    @router.match(_sign_up_match)  # not cheap: a title is looked up in the database
    def on_sign_up(ctx: Context) -> Reply:
        return _offered(ctx, sign_up_list(ctx.user_id, ctx.match))

    @router.msg_type("text")
    def on_text(ctx: Context) -> Reply | str | None:
        if not ctx.text:
            return Text(GREETING)
        return kb.answer(ctx.text, ctx)

    @router.msg_type("voice")
    def on_voice(ctx: Context) -> Reply | str | None:
        # With speech recognition switched on, WeChat sends the transcript: treat it as text, commands included
        # (“我的诉求。” spoken went to the knowledge base as a question).
        if ctx.msg.recognition and ctx.msg.recognition.strip():
            return _as_text(router, ctx, ctx.msg.recognition.strip())
        return Text(UNSUPPORTED)

    @router.msg_type("image")
    def on_image(ctx: Context) -> Reply:
        from .appeal_intake import expired_note

        return Text(expired_note(ctx) + image_ack(ctx.user_id))

    @router.msg_type("location", fast=True)
    def on_location(ctx: Context) -> Reply:
        return Text(location_ack(ctx))

    @router.default(fast=True)
    def on_other(ctx: Context) -> Reply | None:
        if ctx.msg.is_event:
            return None  # events nobody handles get no reply
        return Text(UNSUPPORTED)

    return router


def _as_menu_click(router: Router, ctx: Context, intent: str) -> Reply | None:
    """A menu digit does what the menu's button does: the rule a CLICK of that key meets (a plug-in's, such as
    the appeal intake's, before the generic text here)."""
    key = next((k for k, (name, _label) in MENU.items() if name == intent), None)
    if key is None:
        return INTENTS[intent](ctx)
    click = Context(msg=replace(ctx.msg, msg_type="event", event="click", event_key=key, content=None),
                    redis=ctx.redis, settings=ctx.settings, user_id=ctx.user_id, blocked=ctx.blocked,
                    extra=dict(ctx.extra), _state=ctx.state)
    handler = router.resolve(click)
    return as_reply(handler(click)) if handler is not None else INTENTS[intent](ctx)


def _as_text(router: Router, ctx: Context, said: str) -> Reply | None:
    """A voice transcript meets the rules the same words typed meet."""
    typed = Context(msg=replace(ctx.msg, msg_type="text", content=said), redis=ctx.redis, settings=ctx.settings,
                    user_id=ctx.user_id, blocked=ctx.blocked, extra=dict(ctx.extra), _state=ctx.state)
    handler = router.resolve(typed)
    return as_reply(handler(typed)) if handler is not None else kb.answer(said, ctx)


def app_reply(text: str, *, user_id: int | None, pending_choices: bool,
              numbers_since: Callable[[float], bool] | None = None,
              forget: Callable[[], None] | None = None,
              offer: Callable[[str, list[int]], None] | None = None,
              memory: kb.ChatMemory | None = None) -> tuple[str, str] | None:
    """What the router answers without the knowledge base, for the mini-program's in-app chat (POST
    /api/v1/chat): the same words as the WeChat chat where they mean the same there, the mini-program's pages
    where the WeChat chat would start a chat-only flow (the appeal intake, rating). Returns (reply, decision)
    or None for the knowledge base. Decisions: smalltalk, handoff, guide (points to a page of the app).
    `numbers_since(when)`: whether this chat offered numbers of its own (its menu, “您是不是想问”) since the UNIX time
    `when` (a bare digit after a 办结 notice is the score unless it did); `forget()` drops this chat's pending
    “您是不是想问” choices (called where the WeChat chat drops them: a list of the user's appeals); `offer(kind, ids)`
    remembers a numbered list of activities it showed (a number next picks one, as in the WeChat chat). `memory`, the
    conversation's memory, gives all three (and keeps what a score reply said, for the digit after it)."""
    t = command_word(text) if text and text.strip() else ""
    if not t:
        return None
    if memory is not None:
        numbers_since = numbers_since or memory.numbers_since
        forget = forget or memory.forget
        offer = offer or memory.offer

    def listed(found: tuple[str, list[int]]) -> tuple[str, str]:
        if offer is not None:
            offer("activity", found[1])
        return found[0], "guide"

    for group in ("human", "appeal", "activity"):
        if t in _FOLDED[group]:
            return _app_intent(group, user_id, listed)
    if t in _FOLDED["my_registrations"]:  # without a login nobody knows whose: not “您目前没有报名的活动”
        return listed(my_registrations_list(user_id)) if user_id is not None else (REGISTRATIONS_LOGIN, "guide")
    from .appeal_followup import _PROGRESS, status_list
    from .appeal_intake import word

    if t in _status_words() or _PROGRESS.match(word(text)):  # 我的诉求, “有进展吗”, “办得怎么样了”
        if user_id is None:
            return STATUS_LOGIN, "guide"
        if forget is not None:  # another topic: a digit no longer picks an earlier “您是不是想问” choice
            forget()
        text, ids = status_list(user_id, chat=False)
        if offer is not None:  # but one of these appeals, as in the WeChat chat
            offer("appeal", ids)
        return text, "guide"
    digit = menu_digit(text)  # “4”, “四”, “第四个”
    if numbers_since is not None and digit is not None:  # “4” just after “您的诉求已办结，请评价”: the score, not 联系客服
        from .appeal_followup import app_score_after_notice

        scored = app_score_after_notice(user_id, digit, numbers_since, memory)
        if scored is not None:
            return scored, "guide"
    followup = _app_followup(text.strip(), user_id, offer)
    if followup is not None:
        return followup, "guide"
    topic = sign_up_topic(text)  # “我想报名午间一小时”: that category's activities, as in the WeChat chat
    if topic is not None and (topic[0] is not None or _title_exists(topic[1])):
        return listed(sign_up_list(user_id, topic))
    if digit in DIGITS and not pending_choices:  # "回复数字即可查看答案" wins over the menu digits
        if memory is not None and memory.plain_answer_last():  # just after an answer with no list: ask first
            memory.menu_shown()
            return kb.digit_after_answer(digit), "smalltalk"
        return _app_intent(DIGITS[digit], user_id, listed)
    for group in ("menu", "greeting", "thanks", "bye"):
        if t in _FOLDED[group]:
            return _APP_FIXED[group], "smalltalk"
    if _loose_cancel(text) is not None:  # “取消”, “取消吧”, “我要取消”: nothing is under way in this chat
        return nothing_under_way(text), "smalltalk"
    from .appeal_intake import not_cancel

    if len(text) <= 16 and not_cancel(word(text)):
        return KEEP_AS_IS, "smalltalk"
    return None


def _app_followup(text: str, user_id: int | None,
                  offer: Callable[[str, list[int]], None] | None = None) -> str | None:
    """“我要反映：问题”, 评价, 补充 (with or without the content) in the app's chat: the WeChat chat's flows for these
    are chat-only; here they are done on the app's pages (they went to the knowledge base: “这个问题我还没学会…
    回复“我要反映”提交诉求” to someone who had just said it, and a supplement nobody received)."""
    from .appeal_followup import _SUPPLEMENT_TEXT_RE
    from .appeal_intake import (
        _START_WITH_TEXT,
        RATE_RE,
        SUPPLEMENT_RE,
        intake_answer,
        start_phrase,
        start_with_object,
        word,
    )

    if intake_answer(text):  # “确认”, “继续”, “张三 138…”: the WeChat chat's intake words; no intake here
        return APPEAL_APP_NONE
    if start_phrase(text) or start_with_object(text):  # “我要投诉物业” too
        return APPEAL_APP
    if _START_WITH_TEXT.match(to_simplified(text)):
        return APPEAL_APP_TOLD
    said = word(text)
    from .appeal_followup import (
        _NUMBER_QUERY,
        _PRESS,
        _WITHDRAW,
        WITHDRAW_APP,
        number_status_text,
        press_text,
    )

    number = _NUMBER_QUERY.match(said)
    if number:
        return number_status_text(user_id, number.group(1), chat=False) if user_id is not None else STATUS_LOGIN
    pressed = _PRESS.match(said) if len(said) <= 40 else None
    if pressed:  # “催一下”: the same press as in the WeChat chat
        return press_text(user_id, pressed.group(1), chat=False) if user_id is not None else STATUS_LOGIN
    if _WITHDRAW.match(said) and _loose_cancel(text) is None:  # “取消吧” is no 撤回 诉求
        return WITHDRAW_APP
    late = _app_rating(text, user_id)
    if late is not None:
        return late
    told = bool(_SUPPLEMENT_TEXT_RE.match(text))
    if not (told or RATE_RE.match(said) or SUPPLEMENT_RE.match(said)):
        return None
    if user_id is None:
        return SUPPLEMENT_APP_NOT_SENT.strip() if told else FOLLOWUP_APP
    from .appeal_followup import status_list

    text, ids = status_list(user_id, chat=False)
    if offer is not None:  # numbered as 我的诉求's list: a number next picks one of them
        offer("appeal", ids)
    return (SUPPLEMENT_APP_NOT_SENT if told else "") + text


RATE_APP = "诉求 {number} 已办结，正等您评价：请在小程序“我的诉求”中打开这条诉求，点“评价”，说说问题解决了没有、给办理打个分。"


def _app_rating(text: str, user_id: int | None) -> str | None:
    """“满意”, “解决了”, “还没好” in the app's chat from someone with an appeal waiting for a rating: the rating is on
    the appeal's page (the knowledge base answered it)."""
    from .appeal_followup import verdict

    said = verdict(text)
    if user_id is None or said is None or not said.strong:
        return None
    from wxapp_backend.appeals.followup import awaiting_rating_latest
    from wxapp_backend.db import session_scope, utcnow

    from .appeal_intake import DB_AWAY

    try:
        with session_scope() as s:
            appeal, _waiting = awaiting_rating_latest(s, user_id, utcnow())
            return RATE_APP.format(number=appeal.number) if appeal is not None else None
    except DB_AWAY:  # unknown: “没用” is then about the answer before it, as for anyone with no rating waiting
        log.warning("verdict not checked against a rating: database away", exc_info=True)
        return None


_APP_INTENTS = {"kb": (KB_PROMPT, "smalltalk"), "appeal": (APPEAL_APP, "guide"), "human": (HUMAN_APP, "handoff")}


def _app_intent(group: str, user_id: int | None = None,
                listed: Callable[[tuple[str, list[int]]], tuple[str, str]] | None = None) -> tuple[str, str]:
    """The in-app chat's answer to a menu intent; activities are looked up as in the WeChat chat (`listed` keeps
    the numbers of the list shown)."""
    if group != "activity":
        return _APP_INTENTS[group]
    found = activity_list(user_id)
    return listed(found) if listed is not None else (found[0], "guide")
_APP_FIXED = {"menu": MENU_REPLY, "greeting": GREETING, "thanks": THANKS, "bye": BYE}


def _fold(words) -> frozenset[str]:
    return frozenset(command_word(w) for w in words)


_FOLDED = {"human": _fold(HUMAN_WORDS), "appeal": _fold(APPEAL_WORDS), "activity": _fold(ACTIVITY_WORDS),
           "menu": _fold(MENU_WORDS), "greeting": _fold(GREETINGS), "thanks": _fold(THANKS_WORDS),
           "bye": _fold(BYE_WORDS), "my_registrations": _fold(MY_REGISTRATION_WORDS), "nothing": _fold(NOTHING_WORDS),
           "more": _fold(MORE_WORDS)}


@functools.cache
def _status_words() -> frozenset[str]:
    from .appeal_intake import STATUS_WORDS  # the follow-up plug-in's words (imported late: it imports us)

    return _fold(STATUS_WORDS)


def _link_staff(ctx: Context, code: str) -> str:
    """“绑定 123456” from a staff member's own WeChat, with the code the console gave them."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import broadcast

    if ctx.user_id is None:
        return "暂时无法绑定，请稍后再发一次。"
    with session_scope() as s:
        result = broadcast.redeem_link_code(s, ctx.redis, code, ctx.user_id)
        if isinstance(result, str):
            return result
        name = result.display_name or result.username
    return f"绑定成功！工作人员“{name}”的测试通知和办不成事提醒会发到这个微信。"


def _apply_delivery_reports(ctx: Context) -> None:
    """WeChat's report on subscribe messages we sent is written on each send (and a refusal ends the credits)."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits

    with session_scope() as s:
        n = credits.apply_sent_event(s, ctx.openid, ctx.msg.subscribe_results)
    log.info("subscribe message delivery", extra={"account": ctx.account, "reported": n,
                                                  "results": ctx.msg.subscribe_results})


def _apply_credits(ctx: Context) -> None:
    """Subscribe-message accept/reject results feed the credit ledger."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits

    fn = credits.apply_popup_event if ctx.msg.event == "subscribe_msg_popup_event" else credits.apply_change_event
    with session_scope() as s:
        fn(s, ctx.openid, ctx.msg.subscribe_results)
