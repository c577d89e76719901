"""Middleware every message passes: logging, user upsert, blocklist, per-user rate limit, per-user step lock.

Each carries `inline` (see handlers/router.py): True, or a function saying whether it is quick for a message
(no database write, no Redis round trip of its own because the webhook's first round trip read the data).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .replies import Reply, Text
from .router import Context

log = logging.getLogger("handlers")

RATE_LIMIT_PER_MINUTE = 20
RATE_LIMITED_TEXT = "您发消息的速度有点快，小二有点跟不上啦～请稍等一分钟再发，谢谢理解！"

Next = Callable[[Context], Reply | None]

# Events that do not count against the rate limit (bookkeeping, nobody is typing).
RATE_EXEMPT_EVENTS = frozenset({"unsubscribe", "location", "subscribe_msg_sent_event"})


def rate_key(account: str, openid: str, now: float | None = None) -> str:
    return f"wx:rl:{account}:{openid}:{int((time.time() if now is None else now) // 60)}"


def rate_exempt(ctx_msg) -> bool:
    return bool(ctx_msg.is_event and ctx_msg.event in RATE_EXEMPT_EVENTS)


def rate_limit(settings) -> int:
    """Messages a minute per user (the `chat_rate_limit` setting, else RATE_LIMIT_PER_MINUTE)."""
    if settings is None:
        return RATE_LIMIT_PER_MINUTE
    return int(getattr(settings, "extra", {}).get("chat_rate_limit", RATE_LIMIT_PER_MINUTE))


def logging_middleware(ctx: Context, call_next: Next) -> Reply | None:
    started = time.perf_counter()
    reply = call_next(ctx)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("chat message", extra={"account": ctx.account, "msg_type": ctx.msg.msg_type,
                                         "event": ctx.msg.event, "rule": ctx.extra.get("rule"),
                                         "reply": type(reply).__name__ if reply else None,
                                         "ms": round((time.perf_counter() - started) * 1000, 1)})
    return reply


def mini_link_middleware(ctx: Context, call_next: Next) -> Reply | None:
    """The mini-program pages a text reply names become links to them (handlers/links.py), when the mini-program's
    appid is configured. Only WeChat messages go through the router: the mini-program's own chat API gets plain text.
    A handler may name other pages for this reply in ctx.extra["mini_pages"] (one activity's page: `links.activity_page`);
    the dict is shared with the contexts made from this one (a voice transcript, a menu digit)."""
    pages: dict[str, str] = {}
    ctx.extra["mini_pages"] = pages
    reply = call_next(ctx)
    appid = getattr(ctx.settings, "wxa_appid", "") if ctx.settings is not None else ""
    if not appid or reply is None:
        return reply
    from .links import with_links

    return with_links(reply, appid, pages)


def answer_memory_middleware(ctx: Context, call_next: Next) -> Reply | None:
    """What the bot keeps of its last knowledge-base answer (for a “不对”, “有用” or a bare digit right after it) is
    dropped when a text is answered by anything else (“活动”, a flow's step): “不对” after the activity list was taken
    for a verdict on the answer before it. Fixed words (你好, 谢谢) keep it, as the knowledge base's own small talk does;
    a route planned in the request thread writes nothing."""
    turn: dict = {}
    ctx.extra["kb_turn"] = turn
    reply = call_next(ctx)
    if (ctx.planned or turn.get("asked") or ctx.msg.msg_type not in ("text", "voice") or reply is None
            or _fixed_answer(ctx)):
        return reply
    from . import kb

    kb.answer_over(ctx)
    return reply


def _fixed_answer(ctx: Context) -> bool:
    router, name = ctx.extra.get("router"), ctx.extra.get("rule")
    rule = next((r for r in getattr(router, "rules", ()) if r.name == name), None)
    return rule is not None and rule.answer is not None


def _followed(ctx: Context) -> bool | None:
    if ctx.msg.is_event and ctx.msg.event in ("subscribe", "unsubscribe"):
        return ctx.msg.event == "subscribe"
    return None


def user_middleware(ctx: Context, call_next: Next) -> Reply | None:
    """Create/refresh the user behind the openid (cached in Redis), record follow/unfollow."""
    from wxapp_backend.wechat.pipeline import touch_user  # the service lives with the webhook pipeline

    followed = _followed(ctx)
    ctx.user_id, ctx.blocked = touch_user(ctx.redis, ctx.account, ctx.openid, followed=followed,
                                          at=ctx.msg.create_time or None, event=ctx.msg.event,
                                          is_event=ctx.msg.is_event, prefetched=ctx.extra.get("prefetched"))
    return call_next(ctx)


# What a blocked user tells WeChat about their consent still counts: a refusal must stop our subscribe messages.
CONSENT_EVENTS = frozenset({"subscribe_msg_popup_event", "subscribe_msg_change_event", "subscribe_msg_sent_event"})


def blocklist_middleware(ctx: Context, call_next: Next) -> Reply | None:
    """Blocked users (User.blocked) get no answer at all; their subscribe-message consent events are still applied
    (they produce no answer either)."""
    if ctx.blocked and ctx.msg.event not in CONSENT_EVENTS:
        log.info("blocked user ignored", extra={"account": ctx.account, "user_id": ctx.user_id})
        return None
    return call_next(ctx)


def rate_limit_middleware(ctx: Context, call_next: Next) -> Reply | None:
    """At most RATE_LIMIT_PER_MINUTE messages a minute per user: one polite reply, then silence."""
    if rate_exempt(ctx.msg):
        return call_next(ctx)
    limit = rate_limit(ctx.settings)
    count = (ctx.extra.get("prefetched") or {}).get("rate_count")
    if count is None:  # not counted by the webhook's first round trip
        pipe = ctx.redis.pipeline(transaction=False)
        pipe.incr(rate_key(ctx.account, ctx.openid))
        pipe.expire(rate_key(ctx.account, ctx.openid), 120)
        count = pipe.execute()[0]
    if count <= limit:
        return call_next(ctx)
    if count == limit + 1:
        return Text(RATE_LIMITED_TEXT)
    return None


def conversation_lock_middleware(ctx: Context, call_next: Next) -> Reply | None:
    """One message of a user at a time through the rules and its handler, on the state as the message before left it
    (handlers/state.py says why). A quick route planned in the request thread only reads the state and writes
    nothing: it takes no lock and no Redis round trip, nor does an answer stored with the claim (no handler runs)."""
    if ctx.planned:
        return call_next(ctx)
    from .state import step_lock

    with step_lock(ctx.redis, ctx.account, ctx.openid) as raw:
        ctx.restate(raw)
        return call_next(ctx)


def _user_inline(ctx: Context) -> bool:
    # Quick when the user cache was read in the webhook's round trip and hit, and nothing is recorded.
    prefetched = ctx.extra.get("prefetched")
    return bool(prefetched and prefetched.get("user")) and _followed(ctx) is None


def _rate_inline(ctx: Context) -> bool:
    return rate_exempt(ctx.msg) or (ctx.extra.get("prefetched") or {}).get("rate_count") is not None


logging_middleware.inline = True  # type: ignore[attr-defined]
mini_link_middleware.inline = True  # type: ignore[attr-defined]  (string work on the reply only)
answer_memory_middleware.inline = True  # type: ignore[attr-defined]  (nothing for a planned route)
user_middleware.inline = _user_inline  # type: ignore[attr-defined]
blocklist_middleware.inline = True  # type: ignore[attr-defined]
rate_limit_middleware.inline = _rate_inline  # type: ignore[attr-defined]
conversation_lock_middleware.inline = True  # type: ignore[attr-defined]  (a planned route takes no lock)

DEFAULT_MIDDLEWARE = (logging_middleware, mini_link_middleware, user_middleware, blocklist_middleware,
                      rate_limit_middleware, conversation_lock_middleware, answer_memory_middleware)
