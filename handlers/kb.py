"""Knowledge-base answers for free text: the same bot as POST /api/v1/chat, through the same service."""

from __future__ import annotations

import logging

from flask import current_app

from wxapp_backend.knowledge_store.bot import choices_last as _choices_last
from wxapp_backend.knowledge_store.bot import forget_choices as _forget
from wxapp_backend.knowledge_store.bot import has_pending_choices as _pending
from wxapp_backend.knowledge_store.bot import offer_items as _offer_items
from wxapp_backend.knowledge_store.bot import offered_list as _offered_list
from wxapp_backend.knowledge_store.bot import plain_answer_last as _plain_answer_last
from wxapp_backend.knowledge_store.bot import respond
from wxapp_backend.knowledge_store.services import get_runtime
from wxapp_backend.wechat.messages import REPLY_TEXT_MAX_BYTES

from .replies import Reply, Text, Transfer
from .router import Context

log = logging.getLogger("handlers")

DETAIL_HINT = "（内容较长，完整内容请在小程序“政策问答”中查看）"


def answer(text: str, ctx: Context) -> Reply:
    """Answer `text` from the knowledge base: an answer, numbered “您是不是想问” choices, or a fallback."""
    state = current_app.extensions["wxapp"]
    from .appeal_followup import supplement_again
    from .appeal_intake import expired_note
    from .bot import picked_item

    turn = ctx.extra.get("kb_turn")
    if isinstance(turn, dict):  # (shared with the contexts made from this one: a voice transcript, a menu digit)
        turn["asked"] = True
    told, step = _recent_notes(ctx)
    # an answer to a step of a draft that ran out meanwhile: it was not filed (said once)
    note = expired_note(ctx, step)
    again = supplement_again(ctx, text, told) if ctx.user_id is not None else None
    if again is not None:  # the supplement just submitted, sent again: no question
        return Text(note + again)

    # What the bot cannot answer just after saying the draft ran out is the draft's answer (the problem, the
    # enterprise): no question for staff's unanswered queue. It is kept for “我要反映”, which the note asks for.
    def pick(kind: str, item_id, user_id: int | None, others: list[int]) -> tuple[str, str]:
        if kind == "activity":  # its 小程序“白领活动” opens that activity's page, not the list it was picked from
            from .links import activity_page

            pages = ctx.extra.get("mini_pages")
            if isinstance(pages, dict):
                pages.update(activity_page(int(item_id)))
        # room for the links the WeChat text gets (handlers/middleware.py) and the note put before it
        appid = getattr(ctx.settings, "wxa_appid", "") if ctx.settings is not None else ""
        return picked_item(kind, item_id, user_id, others, appid=appid or "",
                           room=REPLY_TEXT_MAX_BYTES - len(note.encode("utf-8")))

    result, _turn = respond(get_runtime(), state.db, state.redis, text, channel=ctx.account, user_id=ctx.user_id,
                            who=ctx.openid, detail_hint=DETAIL_HINT, pick_item=pick, unanswered=not note)
    if result.handoff:
        return Transfer(result.reply)
    # (after “都不是” to the choices, the question they were for, or nothing when it is not known: not the “都不是”)
    _remember_unanswered(ctx, (text if result.asked is None else result.asked) if result.decision == "fallback" else "")
    if note and result.decision == "fallback":  # not “这个问题我还没学会。我已经把它记下来”
        reply = note.rstrip()
        return Text(reply + (_supplement_hint(ctx.user_id) if ctx.user_id is not None else ""))
    # A “您是不是想问” list is as much a guess as the fallback: the text may well be the material staff asked for.
    if result.decision in ("fallback", "suggest") and ctx.user_id is not None:
        return Text(note + result.reply + _supplement_hint(ctx.user_id))
    return Text(note + result.reply)


def answer_over(ctx: Context) -> None:
    """Something other than the knowledge base answered this message: a “不对” or a digit next is not about the
    answer before it."""
    from wxapp_backend.knowledge_store.bot import answer_over as _over

    _over(ctx.redis, ctx.account, ctx.openid)


def _recent_notes(ctx: Context) -> tuple[object, object]:
    """The supplement just submitted (`wx:supplemented:*`, read) and the step of a draft that ran out
    (`wx:draftstep:*`, taken unless a draft is open): both in one round trip, as every answer reads them."""
    import redis

    from .appeal_followup import _again_key
    from .appeal_intake import FLOW, _expired_key, _state

    try:
        pipe = ctx.redis.pipeline(transaction=False)
        pipe.get(_again_key(ctx))
        if _state(ctx).get("flow") == FLOW:
            pipe.get(_expired_key(ctx))  # the draft goes on: its note is for when it runs out
        else:
            pipe.getdel(_expired_key(ctx))
        told, step = pipe.execute()
    except redis.RedisError:
        return None, None  # nothing said of either, as when nothing was stored
    return told, step


UNANSWERED_TTL = 30 * 60


def _unanswered_key(ctx: Context) -> str:
    return f"wx:unanswered:{ctx.account}:{ctx.openid}"


def _remember_unanswered(ctx: Context, text: str) -> None:
    """The text the bot could not answer (its fallback says “回复“我要反映”提交诉求”), for the intake to offer as
    the description: the user had to type their problem a second time. Any other answer forgets it."""
    import redis

    try:
        if text and 5 <= len(text) <= 2000:
            ctx.redis.set(_unanswered_key(ctx), text, ex=UNANSWERED_TTL)
        else:
            ctx.redis.delete(_unanswered_key(ctx))
    except redis.RedisError:
        pass  # the intake then asks for the description as usual


def take_unanswered(ctx: Context) -> str:
    """The last text the bot could not answer (within 30 minutes), forgotten as it is taken; '' when none."""
    import redis

    try:
        raw = ctx.redis.getdel(_unanswered_key(ctx))
    except redis.RedisError:
        return ""
    return raw.decode("utf-8") if isinstance(raw, bytes) else (raw or "")


SUPPLEMENT_HINT = ("\n\n另外，诉求 {number} 正等您补充材料：如果刚才说的就是要补充的内容，请回复“补充：”加上内容"
                   "（例如“补充：{example}”），工作人员就能收到。")


def _supplement_hint(user_id: int) -> str:
    """An unanswerable text from someone asked for material: likely the material, sent after the chat's 补充 had
    expired (30 minutes) or without it. It reached nobody; say how it does."""
    from wxapp_backend.appeals.followup import needing_info_latest
    from wxapp_backend.db import session_scope

    from .appeal_intake import DB_AWAY

    try:
        with session_scope() as s:
            appeal = needing_info_latest(s, user_id)
            if appeal is None:
                return ""
            return SUPPLEMENT_HINT.format(number=appeal.number, example="物业合同首页已拍照")
    except DB_AWAY:  # a hint under the reply: the reply (the guesses after a “不对”) goes without it
        log.warning("supplement hint not looked up", exc_info=True)
        return ""


def has_pending_choices(ctx: Context) -> bool:
    """True when the last answer offered numbered choices, so a digit picks one of them."""
    return _pending(ctx.redis, ctx.account, ctx.openid)


def choices_last(ctx: Context) -> bool:
    """True when the last numbers the bot offered were “您是不是想问” choices, pending or expired since: a digit
    means one of them (the knowledge base picks it, or says the list has expired), not a menu item."""
    return _choices_last(ctx.redis, ctx.account, ctx.openid)


def plain_answer_last(ctx: Context) -> bool:
    """True when the bot's last reply was an answer with no numbered list under it (and no menu since): a bare digit
    now has nothing of the bot's to pick from."""
    return _plain_answer_last(ctx.redis, ctx.account, ctx.openid)


# A bare digit just after an answer with no list: it was the menu's item (“2” started the appeal intake by accident).
DIGIT_WHAT = "您回复的“{digit}”是指什么呢？刚才的回答下面没有编号选项～想接着问，直接输入问题就行。\n"


def digit_after_answer(digit: str) -> str:
    """The answer to a bare digit just after a plain answer: what it means, and the menu (which a digit next picks
    from)."""
    from .bot import MENU_TEXT

    return DIGIT_WHAT.format(digit=digit) + "要用下面的功能，" + MENU_TEXT


def offer_activities(ctx: Context, ids: list[int]) -> None:
    """A numbered list of activities was shown: a number next picks one of them (not a menu item)."""
    offer_list(ctx, "activity", ids)


def offer_list(ctx: Context, kind: str, ids: list[int]) -> None:
    """A numbered list of `kind` (knowledge_store.bot.ITEM_KINDS: activities, the user's appeals) was shown: a number
    next picks one of them (not a menu item)."""
    _offer_items(ctx.redis, ctx.account, ctx.openid, kind, ids)


def shown_list(ctx: Context, *kinds: str) -> list | None:
    """The ids of the numbered list of one of `kinds` shown last (a number still picks from it), or None."""
    return _offered_list(ctx.redis, ctx.account, ctx.openid, *kinds)


def forget_choices(ctx: Context) -> None:
    """The bot showed its numbered menu: a digit from now on means the menu, not an earlier “您是不是想问”."""
    _forget(ctx.redis, ctx.account, ctx.openid)
    menu_shown(ctx.redis, ctx.account, ctx.openid)


MENU_SEEN_TTL = 24 * 60 * 60


def _menu_key(channel: str, who: str) -> str:
    return f"wx:menu_at:{channel}:{who}"


def menu_shown(r, channel: str, who: str) -> None:
    """When `who` was shown the numbered menu on `channel` (the WeChat account, or "api" for the in-app chat): a
    digit answers whichever was asked last, the menu or a 办结 notice's 评价 (see numbers_since)."""
    import time

    import redis

    try:
        r.set(_menu_key(channel, who), str(time.time()), ex=MENU_SEEN_TTL)
    except redis.RedisError:
        pass


def numbers_since(ctx: Context, when: float) -> bool:
    """Whether the bot offered numbers of its own (the menu, or “您是不是想问” choices) at or after the UNIX time
    `when`: a bare digit then means those."""
    return numbers_offered_since(ctx.redis, ctx.account, ctx.openid, when)


def numbers_offered_since(r, channel: str, who: str, when: float) -> bool:
    """`numbers_since` for any channel: the in-app chat passes "api" and its caller's key."""
    import time

    import redis

    from wxapp_backend.knowledge_store.bot import MEMORY_TTL, _memory_key

    try:
        menu_at = r.get(_menu_key(channel, who))
        left = r.ttl(_memory_key(channel, who))
    except redis.RedisError:
        return True  # unknown: the digit keeps its usual meaning
    if menu_at is not None and float(menu_at) >= when:
        return True
    return left is not None and left > 0 and time.time() - (MEMORY_TTL - left) >= when


class ChatMemory:
    """What one conversation (a `channel` and its caller `who`) remembers between turns, for the in-app chat's own
    answers (handlers.bot.app_reply): the numbers it offered, and short notes such as a score it named back."""

    def __init__(self, r, channel: str, who: str) -> None:
        self.redis, self.channel, self.who = r, channel, who

    def numbers_since(self, when: float) -> bool:
        return numbers_offered_since(self.redis, self.channel, self.who, when)

    def forget(self) -> None:
        _forget(self.redis, self.channel, self.who)

    def plain_answer_last(self) -> bool:
        return _plain_answer_last(self.redis, self.channel, self.who)

    def menu_shown(self) -> None:
        """The menu was shown: a digit next means its item (and no earlier choice)."""
        _forget(self.redis, self.channel, self.who)
        menu_shown(self.redis, self.channel, self.who)

    def offer(self, kind: str, ids: list) -> None:
        _offer_items(self.redis, self.channel, self.who, kind, ids)

    def adopt(self, other: str) -> None:
        """The conversation the caller had as `other` (an anonymous session, before logging in) goes on as this one:
        the numbers offered there (“您是不是想问”, a list of activities, the menu) are meant by the next digit here.
        Moved, not copied: it happens once."""
        import redis

        from wxapp_backend.knowledge_store.bot import (
            _asked_key,
            _memory_key,
            _more_key,
            _offered_key,
            _queued_key,
        )

        if not other or other == self.who:
            return
        try:
            # _queued_key: a question turned down before logging in and again after it is one asker's
            for make in (_memory_key, _offered_key, _asked_key, _more_key, _queued_key, _menu_key):
                src = make(self.channel, other)
                if self.redis.exists(src):
                    self.redis.rename(src, make(self.channel, self.who))
        except redis.RedisError:
            pass  # a digit then means the menu, as before

    def _note_key(self, name: str) -> str:
        return f"wx:note:{name}:{self.channel}:{self.who}"

    def remember(self, name: str, value: dict, ttl: int) -> None:
        import json

        import redis

        try:
            self.redis.set(self._note_key(name), json.dumps(value), ex=max(1, int(ttl)))
        except redis.RedisError:
            pass  # the next turn then answers as if this one had not happened

    def recall(self, name: str) -> dict | None:
        import json

        import redis

        try:
            raw = self.redis.get(self._note_key(name))
            value = json.loads(raw) if raw else None
        except (redis.RedisError, ValueError):
            return None
        return value if isinstance(value, dict) else None
