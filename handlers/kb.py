"""Knowledge-base answers for free text: the same bot as POST /api/v1/chat, through the same service."""

from __future__ import annotations

from flask import current_app

from wxapp_backend.knowledge_store.bot import forget_choices as _forget
from wxapp_backend.knowledge_store.bot import has_pending_choices as _pending
from wxapp_backend.knowledge_store.bot import respond
from wxapp_backend.knowledge_store.services import get_runtime

from .replies import Reply, Text, Transfer
from .router import Context

DETAIL_HINT = "（内容较长，完整内容请在小程序“政策问答”中查看）"


def answer(text: str, ctx: Context) -> Reply:
    """Answer `text` from the knowledge base: an answer, numbered “您是不是想问” choices, or a fallback."""
    state = current_app.extensions["wxapp"]
    result, _turn = respond(get_runtime(), state.db, state.redis, text, channel=ctx.account,
                            user_id=ctx.user_id, who=ctx.openid, detail_hint=DETAIL_HINT)
    if result.handoff:
        return Transfer(result.reply)
    return Text(result.reply)


def has_pending_choices(ctx: Context) -> bool:
    """True when the last answer offered numbered choices, so a digit picks one of them."""
    return _pending(ctx.redis, ctx.account, ctx.openid)


def forget_choices(ctx: Context) -> None:
    """The bot showed its numbered menu: a digit from now on means the menu, not an earlier “您是不是想问”."""
    _forget(ctx.redis, ctx.account, ctx.openid)
