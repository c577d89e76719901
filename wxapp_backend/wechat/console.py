"""Console chat simulator (/console/chat): staff talk to the bot through the real webhook pipeline."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from ..auth.guard import console_required
from ..auth.models import StaffRole
from ..console import add_nav
from ..knowledge_store.bot import SIMULATOR_OPENID_PREFIX
from .chat import describe_reply, make_push, open_reply, seal_push, throwaway_overrides
from .crypto import WeChatEnvelopeError
from .pipeline import account_from_settings

bp = Blueprint("wechat_console", __name__, url_prefix="/console")

HISTORY_MAX = 40
HISTORY_TTL = 24 * 3600
MAX_TEXT = 600


def _history_key(staff_id: int) -> str:
    return f"wx:sim:{staff_id}"


def _account():
    """The OA account as configured, or one with a token and key valid only for this simulator."""
    settings = current_app.extensions["wxapp"].settings
    overrides = throwaway_overrides(settings, "oa")
    return account_from_settings(replace(settings, **overrides) if overrides else settings, "oa")


@bp.get("/chat")
@console_required(StaffRole.STAFF)
def chat():
    r = current_app.extensions["wxapp"].redis
    history = [json.loads(x) for x in r.lrange(_history_key(g.staff.id), 0, -1)]
    return render_template("console/chat.html", history=history, max_text=MAX_TEXT)


@bp.post("/chat")
@console_required(StaffRole.STAFF)
def chat_send():
    from .webhook import get_pipeline

    r = current_app.extensions["wxapp"].redis
    key = _history_key(g.staff.id)
    if request.form.get("action") == "clear":
        r.delete(key)
        return redirect(url_for("wechat_console.chat"))
    text = (request.form.get("text") or "").strip()[:MAX_TEXT]
    event = request.form.get("event") or None
    if event not in (None, "subscribe"):
        event = None
    if not text and not event:
        return redirect(url_for("wechat_console.chat"))
    acct = _account()
    openid = f"{SIMULATOR_OPENID_PREFIX}{g.staff.id}"
    plain = make_push(acct, openid, text=text if not event else None, event=event)
    args, body = seal_push(acct, plain)
    entries = [{"who": "me", "text": text or "［关注公众号］", "at": int(time.time())}]
    try:
        outcome = get_pipeline().handle("oa", args, body, account_config=acct)
        answer = describe_reply(open_reply(acct, outcome.body))
        entries.append({"who": "bot", "text": answer or "（没有被动回复；如有回复，将通过客服消息发送）",
                        "at": int(time.time())})
    except WeChatEnvelopeError as exc:
        entries.append({"who": "bot", "text": f"［消息被拒绝］{exc.message_zh}", "at": int(time.time())})
    pipe = r.pipeline()
    for entry in entries:
        pipe.rpush(key, json.dumps(entry, ensure_ascii=False))
    pipe.ltrim(key, -HISTORY_MAX, -1)
    pipe.expire(key, HISTORY_TTL)
    pipe.execute()
    return redirect(url_for("wechat_console.chat") + "#bottom")


add_nav("wechat_console.chat", "对话测试", "staff")
