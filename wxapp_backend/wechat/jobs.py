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
# Days a customer-service send is remembered (models.CustomSend): a failed job can be requeued for 30 (queue.py).
SENT_KEEP_DAYS = 31
# Events that open a customer-service window (WeChat's list: a follow, a QR scan, a menu button of type click,
# scancode_push or scancode_waitmsg; entering the mini-program chat). Others -- LOCATION reports, VIEW (a menu
# link), unsubscribe, send-job reports -- open none: a send after them is refused with 45015.
WINDOW_EVENTS = frozenset({"subscribe", "scan", "click", "scancode_push", "scancode_waitmsg",
                           "user_enter_tempsession"})
# Of those, the Official Account's also refresh the user's last_message_at, from which a lost 48-hour window is
# restored (notices.jobs); a mini-program event does not (WeChat opens no 48-hour window for it).
OA_WINDOW_EVENTS = WINDOW_EVENTS - {"user_enter_tempsession"}


def refreshes_last_message(account: str, event: str | None, is_event: bool) -> bool:
    """Whether this push moves the user's last_message_at: a message, or an Official Account event that opens
    a window."""
    return not is_event or (account == "oa" and event in OA_WINDOW_EVENTS)

# Spend one send: from the 48-hour message window (KEYS[1]) if it allows, else from the short event window
# (KEYS[2]). -1 outside both (45015), -2 when an open one is used up (45047), else the window's sends so far.
_TAKE = """
local function take(key, now, span, limit)
  local at = tonumber(redis.call('HGET', key, 'at') or '')
  if not at then return -1 end
  span = tonumber(redis.call('HGET', key, 'span') or '') or span
  limit = tonumber(redis.call('HGET', key, 'limit') or '') or limit
  if now - at > span then return -1 end
  if tonumber(redis.call('HGET', key, 'sent') or '0') >= limit then return -2 end
  return redis.call('HINCRBY', key, 'sent', 1)
end
local now = tonumber(ARGV[1])
-- The event's minute first: it lapses on its own, while the 48 hours' five sends are worth keeping for later.
local b = take(KEYS[2], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
if b > 0 then return b end
local a = take(KEYS[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]))
if a > 0 then return a end
if a == -2 or b == -2 then return -2 end
return -1
"""

# WeChat refused a send our record allowed: believe WeChat until the user writes again. 45015: the windows are
# shut (the message window's start is set to 0, so a restore from last_message_at, which only fills a missing
# record, cannot reopen it; the user's next message does); 45047: the open ones are used up.
_SHUT = """
if ARGV[1] == '45015' then
  redis.call('HSET', KEYS[1], 'at', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
else
  for _, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'sent', 1000000) end
  end
end
return 1
"""


def window_key(account: str, openid: str) -> str:
    """The 48-hour window after the user's last message (5 sends)."""
    return f"wx:kf:{account}:{openid}"


def event_window_key(account: str, openid: str) -> str:
    """The one-minute window after a menu click, follow, scan or entering the chat; each such event opens it
    anew (a record of its own, so that an old event's spent window never blocks a new event's)."""
    return f"wx:kf:{account}:{openid}:ev"


def open_window(pipe: Any, account: str, openid: str, *, kind: str,
                now: float | None = None) -> None:
    """Record that the user just wrote (kind "message") or triggered an event ("event").

    Adds commands to `pipe` (a redis-py pipeline, or the webhook's `dedup.Commands` that ride on its claim;
    the caller executes it) so the webhook spends no extra round trip.
    """
    now = time.time() if now is None else now
    if kind == "message":
        key = window_key(account, openid)
        pipe.hset(key, mapping={"at": int(now), "span": MESSAGE_WINDOW, "limit": MESSAGE_LIMIT, "sent": 0})
        pipe.expire(key, MESSAGE_WINDOW + 60)
    else:
        key = event_window_key(account, openid)
        pipe.hset(key, mapping={"at": int(now), "span": EVENT_WINDOW, "limit": EVENT_LIMIT.get(account, 2),
                                "sent": 0})
        pipe.expire(key, EVENT_WINDOW + 60)


def take_window(r: redis.Redis, account: str, openid: str, now: float | None = None) -> int:
    """Spend one send; returns 0 when allowed, else the errcode WeChat would give (45015 / 45047)."""
    result = int(r.eval(_TAKE, 2, window_key(account, openid), event_window_key(account, openid),
                        int(time.time() if now is None else now), MESSAGE_WINDOW, MESSAGE_LIMIT,
                        EVENT_WINDOW, EVENT_LIMIT.get(account, 2)))
    return {-1: 45015, -2: 45047}.get(result, 0)


def shut_window(r: redis.Redis, account: str, openid: str, errcode: int) -> None:
    """WeChat answered 45015 or 45047 where our record allowed a send: record it, so that the next
    notification or late reply is not sent only to be refused again."""
    r.eval(_SHUT, 2, window_key(account, openid), event_window_key(account, openid), str(errcode),
           MESSAGE_WINDOW + 60)


def _api(account: str) -> Any:
    """The account's WeChat API object."""
    from .client import get_api

    return get_api(account)


def send_customer_message(account: str, openid: str, payload: dict[str, Any], send_id: str = "") -> str:
    """Job: send one customer-service message if the user's window allows it; safe to run twice."""
    from .client import WeChatAPIError

    r: redis.Redis = current_app.extensions["wxapp"].redis
    done_key = f"wx:kf:sent:{send_id}" if send_id else ""
    if done_key and (r.exists(done_key) or _recorded_sent(send_id)):
        return "already_sent"
    # A retry after a transient failure re-sends on the slot its first run took (as notifications do):
    # one message, one of the window's sends, however many times WeChat was busy.
    slot_key = f"wx:kf:slot:{send_id}" if send_id else ""
    if not (slot_key and r.exists(slot_key)):
        refused = take_window(r, account, openid)
        if refused:
            KEFU_REFUSED.labels(account, str(refused), "local").inc()
            log.info("customer-service message not sent: window", extra={"account": account, "errcode": refused})
            return f"refused_{refused}"
        if slot_key:
            r.set(slot_key, b"1", ex=MESSAGE_WINDOW + 60)
    try:
        _api(account).send_custom(openid, {"touser": openid, **payload})
    except WeChatAPIError as exc:
        if exc.errcode in (45015, 45047):
            KEFU_REFUSED.labels(account, str(exc.errcode), "wechat").inc()
            shut_window(r, account, openid, exc.errcode)
            log.info("customer-service message refused by WeChat", extra={"account": account,
                                                                          "errcode": exc.errcode})
            return f"refused_{exc.errcode}"
        if exc.transient:
            raise  # RQ retries busy/transport errors
        log.warning("customer-service message failed", extra={"account": account, "errcode": exc.errcode})
        return f"failed_{exc.errcode}"
    KEFU_SENT.labels(account).inc()
    if send_id:
        _record_sent(r, account, send_id)
    return "sent"


def _recorded_sent(send_id: str) -> bool:
    """Whether the database has this send. A database that does not answer is no reason to hold a reply back:
    the Redis note (looked at first) stands alone then, as it did before."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..db import session_scope
    from .models import CustomSend

    try:
        with session_scope() as s:
            return s.get(CustomSend, send_id) is not None
    except SQLAlchemyError as exc:
        log.warning("could not look up a customer-service send in the database: going by Redis",
                    extra={"error": str(exc)[:200]})
        return False


def _record_sent(r: redis.Redis, account: str, send_id: str) -> None:
    """Note that WeChat has the message, where a re-run of the job looks first. In the database: Redis may not
    answer right now (a restart, a fail-over), and then the job cannot be marked finished either and runs again
    once Redis is back; a note kept only in Redis was lost with it and the user got the reply twice. In Redis too,
    so that a database away at this moment is not a second message either. Raises only when neither took it."""
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    from ..db import session_scope
    from .models import CustomSend

    recorded = False
    try:
        with session_scope() as s:
            s.add(CustomSend(send_id=send_id, account=account))
        recorded = True
    except IntegrityError:
        recorded = True  # noted already (a requeued job of a send that went out)
    except SQLAlchemyError:
        log.exception("could not record a customer-service send in the database", extra={"account": account})
    try:
        r.set(f"wx:kf:sent:{send_id}", b"1", ex=24 * 3600)
    except redis.RedisError:
        if not recorded:
            raise
        log.warning("customer-service send recorded in the database only: Redis does not answer",
                    extra={"account": account})


def forget_old_sends(days: int = SENT_KEEP_DAYS) -> int:
    """Periodic: drop the records of customer-service sends older than any job that could still run again."""
    from datetime import timedelta

    from sqlalchemy import delete

    from ..db import session_scope, utcnow
    from .models import CustomSend

    with session_scope() as s:
        return s.execute(delete(CustomSend).where(CustomSend.sent_at < utcnow() - timedelta(days=days))).rowcount


def finish_late_reply(account: str, msg: Any) -> str:
    """Job, LATE_WATCHDOG_AFTER seconds after a push whose handler missed the deadline: the push was answered
    "success" (WeChat sends no retry after it) and the handler, still running, was to send its reply itself. If it
    never did (its process died), the message runs again here and its reply goes by customer-service message;
    if it did, nothing happens. Which of the two sends is settled once in Redis (Pipeline.claim_late_answer)."""
    from handlers.replies import Text

    from .pipeline import CRASH_TEXT, customer_payloads, late_payloads
    from .webhook import get_pipeline

    pipeline = get_pipeline()
    if not pipeline.claim_late_answer(msg, "watchdog"):
        return "answered"
    log.warning("late chat reply lost with its process: running the message again",
                extra={"account": account, "msg_type": msg.msg_type})
    try:
        payloads = late_payloads(account, pipeline.dispatch(msg))
    except Exception:
        log.exception("chat handler failed again in the late-reply watchdog", extra={"account": account})
        payloads = [] if msg.is_event else customer_payloads(account, Text(CRASH_TEXT))
    pipeline.enqueue_sends(account, msg, payloads)
    return "sent" if payloads else "no_reply"
