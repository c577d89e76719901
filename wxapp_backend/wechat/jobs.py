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
KEFU_LOST = Counter("wechat_kefu_lost_total", "Customer-service replies that will never reach the user (recorded in "
                    "the audit log as wechat.kefu_lost), by errcode", ["account", "errcode"])
KEFU_WAITING = Counter("wechat_kefu_quota_waits_total", "Customer-service replies put off to after WeChat's daily "
                       "quota resets (45009)", ["account"])

clock = time.time  # the jobs' clock (tests set their own)

MESSAGE_WINDOW = 48 * 3600
MESSAGE_LIMIT = 5
EVENT_WINDOW = 60
EVENT_LIMIT = {"oa": 3, "wxa": 2}
# 45009 (the custom_send API's daily quota): a reply waits for the quota's reset, midnight China time, and is sent
# QUOTA_RETRY_AFTER seconds after it (clocks differ), while the user's 48-hour window is still open then; at most
# QUOTA_WAITS midnights (a window of 48 hours sees two).
QUOTA_RETRY_AFTER = 120
QUOTA_WAITS = 2
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
# (KEYS[2]). {-1} outside both (45015), {-2} when an open one is used up (45047), else {the window's sends so far,
# 'm' or 'e' (which window), its start}: where the slot came from, to give it back (_GIVE_BACK).
_TAKE = """
local function take(key, now, span, limit)
  local at = tonumber(redis.call('HGET', key, 'at') or '')
  if not at then return -1 end
  span = tonumber(redis.call('HGET', key, 'span') or '') or span
  limit = tonumber(redis.call('HGET', key, 'limit') or '') or limit
  if now - at > span then return -1 end
  if tonumber(redis.call('HGET', key, 'sent') or '0') >= limit then return -2 end
  return redis.call('HINCRBY', key, 'sent', 1), redis.call('HGET', key, 'at')
end
local now = tonumber(ARGV[1])
-- The event's minute first: it lapses on its own, while the 48 hours' five sends are worth keeping for later.
local b, bat = take(KEYS[2], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
if b > 0 then return {b, 'e', bat} end
local a, aat = take(KEYS[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]))
if a > 0 then return {a, 'm', aat} end
if a == -2 or b == -2 then return {-2} end
return {-1}
"""

# A send WeChat did not take (45009, 40003...): its slot (KEYS[3], "m|<start>" or "e|<start>") is given back to the
# window it came from, once (the slot's record goes with it), and only while that window is the same one (the user
# has not written since, which starts a new count) and not shut by WeChat's 45047.
_GIVE_BACK = """
local slot = redis.call('GET', KEYS[3])
if not slot then return 0 end
redis.call('DEL', KEYS[3])
local which, at = string.match(slot, '^(%a)|(.+)$')
if not which then return 0 end
local key = KEYS[1]
if which == 'e' then key = KEYS[2] end
if redis.call('HGET', key, 'at') ~= at then return 0 end
local sent = tonumber(redis.call('HGET', key, 'sent') or '0')
if sent > 0 and sent < 1000000 then
  redis.call('HINCRBY', key, 'sent', -1)
  return 1
end
return 0
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
    now = clock() if now is None else now
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
    return _take_slot(r, account, openid, now)[0]


def _take_slot(r: redis.Redis, account: str, openid: str, now: float | None = None) -> tuple[int, str]:
    """take_window, with where the slot came from ("m|<start>" / "e|<start>", for give_back_slot) when allowed."""
    result = r.eval(_TAKE, 2, window_key(account, openid), event_window_key(account, openid),
                    int(clock() if now is None else now), MESSAGE_WINDOW, MESSAGE_LIMIT,
                    EVENT_WINDOW, EVENT_LIMIT.get(account, 2))
    code = int(result[0])
    if code < 0:
        return {-1: 45015, -2: 45047}[code], ""
    which, at = (v.decode() if isinstance(v, bytes) else str(v) for v in result[1:3])
    return 0, f"{which}|{at}"


def give_back_slot(r: redis.Redis, account: str, openid: str, send_id: str) -> bool:
    """The send `send_id` took a window slot and WeChat did not take the message: the slot is the window's again."""
    return bool(r.eval(_GIVE_BACK, 3, window_key(account, openid), event_window_key(account, openid),
                       f"wx:kf:slot:{send_id}"))


def shut_window(r: redis.Redis, account: str, openid: str, errcode: int) -> None:
    """WeChat answered 45015 or 45047 where our record allowed a send: record it, so that the next
    notification or late reply is not sent only to be refused again."""
    r.eval(_SHUT, 2, window_key(account, openid), event_window_key(account, openid), str(errcode),
           MESSAGE_WINDOW + 60)


# ------------------------------------------------------------------ follow / unfollow with the database away

# The latest follow / unfollow of each follower, "<CreateTime>:<1|0>", kept as long as a failed job can be requeued
# (queue.py): a follow's job run late (RQ's retries, a requeue) must not undo the unfollow that came after it, nor a
# queued unfollow the follow made once the database was back.
FOLLOW_MARK_TTL = 31 * 24 * 3600
# record_follow_later is tried again after 5 s, 30 s, 2 min and 10 min (queue.enqueue): a restart is over by then.
FOLLOW_RETRIES = 4

# Note a follow / unfollow (ARGV: its CreateTime, 1|0, ttl) unless a later one is noted; returns the latest mark.
# A tie (both in one second) goes to the one noted last, the order WeChat pushed them in.
_NOTE_FOLLOW = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local at = tonumber(string.match(cur, '^(%d+):'))
  if at and at > tonumber(ARGV[1]) then return cur end
end
local mark = ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], mark, 'EX', ARGV[3])
return mark
"""


def follow_mark_key(account: str, openid: str) -> str:
    return f"wx:follow:{account}:{openid}"


def _mark(raw: Any) -> tuple[int, bool] | None:
    if not raw:
        return None
    at, _, followed = (raw.decode() if isinstance(raw, bytes) else raw).partition(":")
    return int(at), followed == "1"


def note_follow(r: redis.Redis, account: str, openid: str, followed: bool, at: int) -> tuple[int, bool]:
    """Note a follow (True) or unfollow (False) pushed at `at` (WeChat's CreateTime) unless a later one is noted;
    returns the latest, (its CreateTime, followed)."""
    raw = r.eval(_NOTE_FOLLOW, 1, follow_mark_key(account, openid), int(at), int(followed), FOLLOW_MARK_TTL)
    return _mark(raw) or (int(at), followed)


def record_follow_later(account: str, openid: str, followed: bool, at: int) -> bool:
    """Job: record a follow / unfollow pushed while the database was away (`pipeline.touch_user`), the follower's row
    created if new, and a follow's last_message_at (it opened a customer-service window). In the order the user did
    them: a later follow / unfollow noted in Redis (`note_follow`) wins over this one, also when it was recorded
    while this job ran. Safe to run twice. Returns the followed state recorded."""
    from datetime import UTC, datetime

    from ..auth.models import User
    from ..db import session_scope
    from .pipeline import upsert_chat_user

    r = current_app.extensions["wxapp"].redis
    when = datetime.fromtimestamp(at, UTC)
    opened = refreshes_last_message(account, "subscribe" if followed else "unsubscribe", True)
    for _ in range(3):
        latest = _mark(r.get(follow_mark_key(account, openid)))
        # the latest noted (this one, or a later one; in a tie, the one WeChat pushed last) is the state to write
        state = latest[1] if latest is not None and latest[0] >= at else followed
        with session_scope() as s:
            user_id, _blocked = upsert_chat_user(s, account=account, openid=openid, followed=state, at=when,
                                                 message=False)
            user = s.get(User, user_id)
            last = user.last_message_at
            if opened and (last is None or (last if last.tzinfo else last.replace(tzinfo=UTC)) < when):
                user.last_message_at = when  # never back: a message written since is later
        if _mark(r.get(follow_mark_key(account, openid))) == latest:
            break  # else a follow / unfollow came meanwhile and may have been written before this: write the latest
    log.info("follow recorded after the database was away",
             extra={"account": account, "followed": state, "at": at, "as_pushed": state == followed})
    return state


def _api(account: str) -> Any:
    """The account's WeChat API object."""
    from .client import get_api

    return get_api(account)


def send_customer_message(account: str, openid: str, payload: dict[str, Any], send_id: str = "",
                          quota_waits: int = 0) -> str:
    """Job: send one customer-service message if the user's window allows it; safe to run twice.

    A reply WeChat does not take is either kept (busy, a refused credential: RQ tries again; the daily quota: a job
    of its own after midnight, `_wait_for_quota`) or lost for good, and then recorded for staff (`record_lost`)."""
    from .client import QUOTA_EXCEEDED, WeChatAPIError

    r: redis.Redis = current_app.extensions["wxapp"].redis
    done_key = f"wx:kf:sent:{send_id}" if send_id else ""
    if done_key and (r.exists(done_key) or _recorded_sent(send_id)):
        return "already_sent"
    # A retry after a transient failure re-sends on the slot its first run took (as notifications do):
    # one message, one of the window's sends, however many times WeChat was busy.
    slot_key = f"wx:kf:slot:{send_id}" if send_id else ""
    if not (slot_key and r.exists(slot_key)):
        refused, slot = _take_slot(r, account, openid)
        if refused:
            KEFU_REFUSED.labels(account, str(refused), "local").inc()
            log.info("customer-service message not sent: window", extra={"account": account, "errcode": refused})
            record_lost(account, openid, payload, send_id, refused)
            return f"refused_{refused}"
        if slot_key:
            r.set(slot_key, slot, ex=MESSAGE_WINDOW + 60)
    try:
        _api(account).send_custom(openid, {"touser": openid, **payload})
    except WeChatAPIError as exc:
        if exc.errcode in (45015, 45047):
            KEFU_REFUSED.labels(account, str(exc.errcode), "wechat").inc()
            shut_window(r, account, openid, exc.errcode)
            log.info("customer-service message refused by WeChat", extra={"account": account,
                                                                          "errcode": exc.errcode})
            record_lost(account, openid, payload, send_id, exc.errcode)
            return f"refused_{exc.errcode}"
        if exc.transient or exc.credential:
            # Busy, unreachable, too fast, or the account's token refused even after the refresh: the same send
            # may work later, and RQ tries again on the same slot. The last try gives up: the slot goes back.
            if _last_try():
                if send_id:
                    give_back_slot(r, account, openid, send_id)
                record_lost(account, openid, payload, send_id, exc.errcode)
            raise
        if send_id:
            give_back_slot(r, account, openid, send_id)  # WeChat took nothing: the window keeps its five sends
        if exc.errcode == QUOTA_EXCEEDED:
            return _wait_for_quota(r, account, openid, payload, send_id, quota_waits)
        log.warning("customer-service message failed", extra={"account": account, "errcode": exc.errcode})
        record_lost(account, openid, payload, send_id, exc.errcode)
        return f"failed_{exc.errcode}"
    KEFU_SENT.labels(account).inc()
    if send_id:
        _record_sent(r, account, send_id)
    return "sent"


def next_quota_reset(now: float) -> float:
    """WeChat's next daily-quota reset after `now`: midnight, China time (UTC+8, no summer time)."""
    from .client import CHINA_OFFSET

    return now - (now + CHINA_OFFSET) % 86400 + 86400


def _window_open_until(r: redis.Redis, account: str, openid: str) -> float:
    """When the user's 48-hour window closes (0: none, or shut by WeChat's 45015)."""
    at, span = r.hmget(window_key(account, openid), "at", "span")
    try:
        start = float(at) if at is not None else 0.0
        return start + float(span or MESSAGE_WINDOW) if start > 0 else 0.0
    except ValueError:
        return 0.0


def _wait_for_quota(r: redis.Redis, account: str, openid: str, payload: dict[str, Any], send_id: str,
                    quota_waits: int) -> str:
    """45009: the reply is sent again just after the quota's reset if the user's window is still open then (a
    scheduled RQ job: kept in Redis, run by whichever worker's scheduler is up; the send id makes a second run a
    no-op), else recorded lost."""
    from ..queue import enqueue

    now = clock()
    retry_at = next_quota_reset(now) + QUOTA_RETRY_AFTER
    reason = None
    if not send_id:
        reason = "quota_no_send_id"
    elif quota_waits >= QUOTA_WAITS:
        reason = "quota_waited"
    elif _window_open_until(r, account, openid) <= retry_at + QUOTA_RETRY_AFTER:
        reason = "quota_window"
    if reason is not None:
        record_lost(account, openid, payload, send_id, 45009, why=reason)
        return "lost_45009"
    # Always the same id for the same wait: a rerun of this job (its process died after this line) puts the same
    # job in the same place instead of a second one.
    enqueue(send_customer_message, account, openid, payload, send_id, quota_waits=quota_waits + 1,
            job_id=f"kf-{send_id}-quota{quota_waits + 1}", delay=max(1.0, retry_at - now), retries=3, timeout=60)
    KEFU_WAITING.labels(account).inc()
    log.warning("customer-service reply put off: WeChat's daily quota is used up (45009); sent after midnight",
                extra={"account": account, "send_id": send_id, "retry_in": round(retry_at - now)})
    return "waiting_quota"


def _last_try() -> bool:
    """Whether this run is the job's last (RQ has no retry left for it); outside a job (tests, scripts), yes."""
    from rq import get_current_job

    job = get_current_job()
    return job is None or not job.retries_left


# Why a reply will never reach the user, as staff read it in the audit log (data.reason).
LOST_REASONS = {
    45015: "用户48小时内没有再发消息（或已取消关注），客服消息窗口已关闭，微信不再允许回复",
    45047: "48小时内给该用户的客服消息已达微信上限（5条），需等用户再次发消息",
    40003: "用户 openid 无效（不属于本账号，或已失效），无法发送",
    -1: "微信系统繁忙，多次重试仍未发出",
    -2: "连不上微信服务器，多次重试仍未发出",
    45011: "调用过于频繁，多次重试仍未发出",
    "credential": "公众号/小程序的接口凭证（access_token 或 AppSecret）被微信拒绝，多次重试仍未发出，请检查账号配置",
    "quota_window": "今日客服消息接口调用额度已用完（45009），额度在北京时间零点恢复，但那时用户的48小时回复窗口已关闭",
    "quota_waited": "客服消息接口调用额度连日用完（45009），已等待额度恢复仍未发出",
    "quota_no_send_id": "今日客服消息接口调用额度已用完（45009），这条消息无发送编号，为免重复未安排重发",
}


def record_lost(account: str, openid: str, payload: dict[str, Any], send_id: str, errcode: int,
                why: str | None = None) -> None:
    """A reply the user will never get: an audit row for staff (the reason in Chinese, what the reply said), a count
    in /metrics and a log line. Never raises: the job's outcome stands without it."""
    from .client import TOKEN_ERRORS

    key: Any = why or ("credential" if errcode in TOKEN_ERRORS else errcode)
    reason = LOST_REASONS.get(key) or f"微信拒绝发送（错误码 {errcode}）"
    KEFU_LOST.labels(account, str(errcode)).inc()
    log.warning("customer-service reply lost: the user will not get it",
                extra={"account": account, "send_id": send_id, "errcode": errcode, "reason": reason})
    content = payload.get("text", {}).get("content") if payload.get("msgtype") == "text" else None
    try:
        from ..audit import SYSTEM, audit
        from ..db import session_scope

        with session_scope() as s:
            row = audit(s, SYSTEM, "wechat.kefu_lost", None, account=account, openid=openid, errcode=errcode,
                        reason=reason, reply=(content or f"（{payload.get('msgtype', '')}消息）")[:200])
            row.target_type, row.target_id = "wechat_custom_sends", send_id[:128]
    except Exception:  # noqa: BLE001 - the log line above stands for it
        log.exception("could not write the audit row of a lost customer-service reply", extra={"account": account})


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
