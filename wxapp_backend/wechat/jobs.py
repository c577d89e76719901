"""Customer-service (客服) sends from queue jobs: late replies and mini-program replies, inside WeChat's windows.

Windows (WECHAT.md): after a user's message, 5 sends within 48 h; after a menu click, follow or scan,
3 within a minute (Official Account); after entering the mini-program chat, 2 within a minute. The window
of each user lives in Redis (`wx:kf:<account>:<openid>`), opened by the webhook and spent here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import current_app
from prometheus_client import Counter

log = logging.getLogger(__name__)

KEFU_REFUSED = Counter("wechat_kefu_refused_total", "Customer-service sends refused (45015 outside the window, "
                       "45047 too many), by who refused them", ["account", "errcode", "source"])
KEFU_SENT = Counter("wechat_kefu_sent_total", "Customer-service messages sent", ["account"])

MESSAGE_WINDOW = 48 * 3600
MESSAGE_LIMIT = 5
EVENT_WINDOW = 60
EVENT_LIMIT = {"oa": 3, "wxa": 2}
# Events that open the short window.
WINDOW_EVENTS = {"subscribe", "scan", "click", "user_enter_tempsession"}

# Spend one send from the window: -1 outside it (45015), -2 used up (45047), else the sends so far.
_TAKE = """
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '')
if not at then return -1 end
local span = tonumber(redis.call('HGET', KEYS[1], 'span') or '') or tonumber(ARGV[2])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or '') or tonumber(ARGV[3])
if tonumber(ARGV[1]) - at > span then return -1 end
local sent = tonumber(redis.call('HGET', KEYS[1], 'sent') or '0')
if sent >= limit then return -2 end
return redis.call('HINCRBY', KEYS[1], 'sent', 1)
"""


def window_key(account: str, openid: str) -> str:
    return f"wx:kf:{account}:{openid}"


def open_window(pipe: Any, account: str, openid: str, *, kind: str,
                now: float | None = None) -> None:
    """Record that the user just wrote (kind "message") or triggered an event ("event").

    Adds commands to `pipe` (a redis-py pipeline, or the webhook's `dedup.Commands` that ride on its claim;
    the caller executes it) so the webhook spends no extra round trip.
    An event does not shorten a message window that is still open.
    """
    now = time.time() if now is None else now
    key = window_key(account, openid)
    if kind == "message":
        pipe.hset(key, mapping={"at": int(now), "span": MESSAGE_WINDOW, "limit": MESSAGE_LIMIT, "sent": 0})
        pipe.expire(key, MESSAGE_WINDOW + 60)
    else:
        # HSETNX keeps an open 48-hour window; a stale one is replaced by the next message.
        pipe.hsetnx(key, "at", int(now))
        pipe.hsetnx(key, "span", EVENT_WINDOW)
        pipe.hsetnx(key, "limit", EVENT_LIMIT.get(account, 2))
        pipe.hsetnx(key, "sent", 0)
        pipe.expire(key, MESSAGE_WINDOW + 60)


def take_window(r: redis.Redis, account: str, openid: str, now: float | None = None) -> int:
    """Spend one send; returns 0 when allowed, else the errcode WeChat would give (45015 / 45047)."""
    result = int(r.eval(_TAKE, 1, window_key(account, openid), int(time.time() if now is None else now),
                        MESSAGE_WINDOW, MESSAGE_LIMIT))
    return {-1: 45015, -2: 45047}.get(result, 0)


def _api(account: str) -> Any:
    """The account's WeChat API object."""
    from .client import get_api

    return get_api(account)


def send_customer_message(account: str, openid: str, payload: dict[str, Any], send_id: str = "") -> str:
    """Job: send one customer-service message if the user's window allows it; safe to run twice."""
    from .client import WeChatAPIError

    r: redis.Redis = current_app.extensions["wxapp"].redis
    done_key = f"wx:kf:sent:{send_id}" if send_id else ""
    if done_key and r.exists(done_key):
        return "already_sent"
    refused = take_window(r, account, openid)
    if refused:
        KEFU_REFUSED.labels(account, str(refused), "local").inc()
        log.info("customer-service message not sent: window", extra={"account": account, "errcode": refused})
        return f"refused_{refused}"
    try:
        _api(account).send_custom(openid, {"touser": openid, **payload})
    except WeChatAPIError as exc:
        if exc.errcode in (45015, 45047):
            KEFU_REFUSED.labels(account, str(exc.errcode), "wechat").inc()
            log.info("customer-service message refused by WeChat", extra={"account": account,
                                                                          "errcode": exc.errcode})
            return f"refused_{exc.errcode}"
        if exc.transient:
            raise  # RQ retries busy/transport errors
        log.warning("customer-service message failed", extra={"account": account, "errcode": exc.errcode})
        return f"failed_{exc.errcode}"
    KEFU_SENT.labels(account).inc()
    if done_key:
        r.set(done_key, b"1", ex=24 * 3600)
    return "sent"
