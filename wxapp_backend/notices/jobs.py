"""Delivery of one notification: subscribe message (with credit), else customer-service text, else inbox only.

`deliver_notification` is the job `notify()` enqueues after commit. Channels, in order:

1. subscribe message, when the user has a mini-program openid, the kind has a template, the fields render
   and a credit can be claimed (atomically); a 24-hour activity reminder claims one only when a credit is left
   for each 1-hour reminder still to come (`activities.services.reminder_credits_to_keep`). 43101 zeroes the
   credit; 47003/40003/40037/41030 and other refusals give the credit back; either way delivery falls through
   to the next channel.
2. customer-service text, when the user's customer-service window is open and has room: the same Redis
   window the webhook opens and late chat replies spend (`wechat.jobs.take_window`: 5 sends within 48 h of
   the user's last message), so notifications and chat replies never exceed it together. When Redis has none
   of the user's windows (of either account) but the user's `last_message_at` is within 48 h, the window is
   restored from it first.
   45015/45047, ours or WeChat's, are counted in /metrics (`wechat_kefu_refused_total`).
3. otherwise the notification ends ``inbox_only`` (the inbox item exists since notify()) -- unless a subscribe
   message met WeChat's daily quota (45009, `client.QuotaReached`): its credit is given back and, when no
   customer-service message can carry it meanwhile, the notification stays ``pending`` and is tried again when the
   cool-down ends (as the notices' fan-out waits), for up to QUOTA_WAITS cool-downs. So does an activity
   reminder whose registration is no longer confirmed (or whose activity was cancelled, moved or has begun) by the
   time its delivery runs, or its retry (the credit the interrupted try held is given back), and a 活动调整 notice a
   later change of time or place overtook.

Run-twice safety: a finished notification is left alone; a Redis lock keeps two runs of one notification
from overlapping (it names the RQ job holding it: the job's own rerun after its process died takes it over); each send is an attempt row written (``sending``) and committed before WeChat is called,
so a run that resumes after a transient failure (-1 after backoff, timeouts, a refused credential: the job raises and RQ retries)
re-sends on the credit or window slot already taken instead of taking another. On the last retry a
transient failure gives the credit back and ends the notification ``failed``. A run that dies inside its WeChat
call (or after it, before its commit) leaves a Redis mark that the call started: its rerun ends that attempt as
结果未知 instead of sending it again (at most once, as the fan-out). The one duplicate left possible is a timeout
(-2) on a request WeChat did take, which the retry sends again.
"""

from __future__ import annotations

import enum
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
import redis.lock
from flask import current_app
from prometheus_client import Counter
from sqlalchemy.orm import Session

from ..auth.models import User
from ..db import session_scope, utcnow
from ..wechat.client import QuotaReached, WeChatAPIError, get_api
from ..wechat.jobs import (
    KEFU_REFUSED,
    KEFU_SENT,
    MESSAGE_LIMIT,
    MESSAGE_WINDOW,
    event_window_key,
    shut_window,
    take_window,
    window_key,
)
from ..wechat.templates import TemplateFieldError
from ..wechat.templates import validate as validate_template
from . import credits
from .credits import msgid_of
from .kinds import get_kind, render
from .models import DeliveryStatus, InboxItem, Notification, NotificationAttempt

log = logging.getLogger(__name__)

NOTIFY_ATTEMPTS = Counter("notify_attempts_total", "Notification send attempts", ["channel", "outcome"])
NOTIFY_DELIVERIES = Counter("notify_deliveries_total", "Notifications finished, by status", ["status"])

REFUSED = 43101  # the user's acceptance is used up or withdrawn: routine, never retried
CUSTOM_LIMITS = frozenset({45015, 45047})
LOCK_TTL = 120  # seconds; longer than one run's sends (timeouts and busy backoff included)
CUSTOM_TEXT_MAX = 600
SUBSCRIBE_API = "subscribe_send"  # the API name the client keys its 45009 cool-down by (as broadcast.SUBSCRIBE_API)
QUOTA_WAITS = 48  # 45009 cool-downs a notification waits out for its subscribe message (a day of half hours)
CALLING_TTL = 24 * 3600  # seconds a "WeChat call started" mark outlives its run: past the 10-minute sweep's rerun
UNKNOWN_RESULT = -3  # errcode of an attempt whose run died inside its WeChat call (as the fan-out's 结果未知)


class Channel(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    CUSTOM = "custom"


class Outcome(enum.StrEnum):
    SENDING = "sending"  # committed before the call; a resumed run re-sends on the same claim
    OK = "ok"
    REFUSED = "refused"  # 43101
    INVALID = "invalid"  # our fields would fail WeChat's checks; nothing was sent
    FAILED = "failed"
    LIMITED = "limited"  # customer-service window shut or full (45015, 45047 or our own count)
    SKIPPED = "skipped"  # a credit was there but is kept for a nearer notification (the 1-hour reminder)
    WAITING = "waiting"  # 45009: the subscribe API's daily quota; the credit was given back, tried again later


@dataclass
class _Send:
    attempt_id: int
    channel: Channel
    account: str  # "wxa" | "oa"
    openid: str
    user_id: int
    template_id: str = ""
    data: dict[str, str] | None = None
    page: str = ""
    text: str = ""


def deliver_notification(notification_id: int) -> str:
    """Deliver one notification; returns its final status. Safe to run twice (a finished one is skipped)."""
    from rq import get_current_job

    state = current_app.extensions["wxapp"]
    lock_key = f"wxapp:notify:lock:{notification_id}"
    lock = state.redis.lock(lock_key, timeout=LOCK_TTL)
    job = get_current_job()
    # The lock names the RQ job holding it: RQ never runs one job twice at once, so a lock held by this very job
    # is one its earlier run left when its process died (kill -9, out of memory), and the rerun carries on at once
    # instead of two minutes later.
    token = f"job:{job.id}" if job is not None else None
    if not lock.acquire(blocking=False, token=token) and not _own_lock_left_by_dead_run(lock, token):
        # Another run is sending right now, or was when its worker was killed: the lock outlives a dead run by
        # up to LOCK_TTL, and RQ's retry of the killed job lands here within seconds. Come back once the lock can
        # have expired (a live run has finished by then: the next run finds nothing to do) rather than leave the
        # notification to the 10-minute sweep.
        from ..queue import enqueue

        left_ms = state.redis.pttl(lock_key)
        delay = (left_ms / 1000 if left_ms and left_ms > 0 else 0) + 1
        enqueue(deliver_notification, notification_id, delay=delay, retries=3,
                job_id=f"notify-{notification_id}-after-{secrets.token_hex(4)}")
        return "busy"
    try:
        while True:
            step = _next_send(notification_id)
            if isinstance(step, str):
                return step
            finished = _send(step, notification_id)
            if finished:
                return finished
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass


def _own_lock_left_by_dead_run(lock: redis.lock.Lock, token: str | None) -> bool:
    """Take the lock over when its holder is `token` (an earlier run of this job, which died holding it)."""
    if token is None:
        return False
    lock.local.token = token.encode()
    try:
        lock.reacquire()  # only while it still holds our token: otherwise LockNotOwnedError
    except redis.exceptions.LockError:
        lock.local.token = None
        return False
    log.warning("notification lock left by this job's run that died: carrying on", extra={"job_token": token})
    return True


# --------------------------------------------------------------------------------------------- planning

def _next_send(notification_id: int) -> _Send | str:
    """In one transaction: resume an unfinished send, or claim the next channel, or finish inbox-only."""
    with session_scope() as s:
        note = s.get(Notification, notification_id)
        if note is None:
            return "missing"
        if note.status != DeliveryStatus.PENDING.value:
            return "skipped"
        user = s.get(User, note.user_id)
        attempts = list(note.attempts)
        inflight = next((a for a in attempts if a.outcome == Outcome.SENDING), None)
        if inflight is not None and _call_started(inflight.id):
            # The run that made this attempt died inside its WeChat call (or after it, before writing the result
            # down): WeChat may well have the message, and sending it again would push it twice. At most once, as
            # the notices' fan-out does; the inbox has it either way.
            _close(s, inflight, Outcome.FAILED, errcode=UNKNOWN_RESULT,
                   detail="发送时进程中断，结果未知（微信可能已收到）；为避免重复不再重发")
            log.warning("notification send interrupted mid-call: not sent again", extra={"notification_id": note.id})
            return _finish(note, DeliveryStatus.FAILED)
        if user is not None and _stale_reminder(s, note):
            # Also when a try failed for now and this is its retry: the resumed send would push the stale text,
            # on a credit WeChat never took (given back here).
            if inflight is not None:
                claimed = inflight.detail  # a sending subscribe attempt's detail is its template id
                _close(s, inflight, Outcome.SKIPPED, errcode=inflight.errcode,
                       detail="通知已过时（报名已取消或活动已变动），未再发送")
                if inflight.channel == Channel.SUBSCRIBE:
                    credits.refund(s, user.id, claimed)
            return _finish(note, DeliveryStatus.INBOX_ONLY)
        _refresh(s, note)
        if inflight is not None and user is not None:
            return _resume(s, note, user, inflight)
        waits = sum(a.outcome == Outcome.WAITING for a in attempts)
        tried = {a.channel for a in attempts if a.outcome != Outcome.WAITING}
        if waits >= QUOTA_WAITS:
            tried.add(Channel.SUBSCRIBE.value)
        quota_wait = 0.0
        step = None
        if user is not None:
            if Channel.SUBSCRIBE not in tried and waits:
                quota_wait = get_api("wxa").quota_wait(SUBSCRIBE_API)
            if Channel.SUBSCRIBE not in tried and not quota_wait:
                step = _plan_subscribe(s, note, user)
            if step is None and Channel.CUSTOM not in tried:
                step = _plan_custom(s, note, user)
        if step is not None:
            return step
        if quota_wait:
            # The user holds a credit and WeChat's daily quota is used up: the subscribe message waits for the
            # cool-down, as the notices' fan-out does (it ended inbox_only, the message never sent).
            from ..queue import enqueue_after_commit

            enqueue_after_commit(s, deliver_notification, note.id, delay=quota_wait + 1, retries=3,
                                 job_id=f"notify-{note.id}-quota-{waits}")
            return DeliveryStatus.PENDING.value
        return _finish(note, DeliveryStatus.INBOX_ONLY)


def _stale_reminder(s: Session, note: Notification) -> bool:
    """An activity reminder whose registration was cancelled (or its activity cancelled, begun or moved) since the
    reminder was made, a 活动调整 notice a later change overtook, or a promotion or approval whose place was undone
    since (STANDS_WHILE): a delivery that waited (a retry, a sweep after a lost job) must not push it."""
    from ..activities.jobs import REMINDERS
    from ..activities.models import ActivityStatus, Registration, RegStatus
    from ..activities.services import (
        CHANGED_KIND,
        EARLY_REMINDER,
        NEAR_REMINDER,
        REMINDER_KIND,
        STANDS_WHILE,
        STILL_TO_COME,
        change_version,
    )

    prefix, _, reg_id = (note.ref or "").partition(":")
    if prefix != "registration" or not reg_id.isdigit():
        return False
    if note.kind == CHANGED_KIND and (note.dedup_key or "").startswith("activity_changed:"):
        # A 活动调整 notice that a later change overtook (its delivery waited for a retry): pushed after the newer
        # one, the worker's last word would be the wrong time or place.
        reg = s.get(Registration, int(reg_id))
        version = (note.dedup_key or "").split(":")[2:3]
        return (reg is None or reg.status not in STILL_TO_COME
                or reg.activity.status != ActivityStatus.PUBLISHED.value
                or version != [change_version(reg.activity)])
    if note.kind in STANDS_WHILE and (note.dedup_key or "").startswith(f"{note.kind}:"):
        # “候补成功” / “报名审核通过” whose delivery waited (a retry, the quota's cool-down, the sweep) while the place
        # it announces was undone (the registration or the activity cancelled, a promotion to 待审核 rejected): pushed
        # after the cancel notice, the worker's last word said they had a place, and they came to the door. Past the
        # end it is news about an evening that is over (decide() tells no approval made then, for that reason).
        reg = s.get(Registration, int(reg_id))
        return (reg is None or reg.status not in STANDS_WHILE[note.kind]
                or reg.activity.status != ActivityStatus.PUBLISHED.value or utcnow() >= reg.activity.ends_at)
    if note.kind != REMINDER_KIND:
        return False
    reg = s.get(Registration, int(reg_id))
    if (reg is None or reg.status != RegStatus.CONFIRMED.value
            or reg.activity.status != ActivityStatus.PUBLISHED.value or utcnow() >= reg.activity.starts_at):
        return True
    # Made for a start time the activity no longer has (it moved since): the text names the old time, and the
    # reminder for the new time is made on its own ("reminder:<registration>:<label>:<start stamp>").
    parts = (note.dedup_key or "").split(":")
    label, stamp = (parts[2], parts[3]) if len(parts) == 4 else ("", parts[-1])
    if stamp.isdigit() and int(stamp) != int(reg.activity.starts_at.timestamp()):
        return True
    # A day-before reminder delivered within the last hour (its job waited, a retry ran late): the 1-hour reminder
    # is due or gone, and this one's "明天" would be wrong and spend a second credit on the same news.
    return label == EARLY_REMINDER and utcnow() >= reg.activity.starts_at - REMINDERS[NEAR_REMINDER]


def _refresh(s: Session, note: Notification) -> None:
    """An activity reminder tells the activity's place as it is when sent (`activities.services.refresh_reminder`)."""
    from ..activities.services import refresh_reminder

    refresh_reminder(s, note)


def _credits_to_keep(s: Session, note: Notification) -> int:
    """Credits of the kind's template this notification must leave for nearer ones (a 24-hour activity reminder
    leaves the 1-hour reminder's: `activities.services.reminder_credits_to_keep`)."""
    from ..activities.services import reminder_credits_to_keep

    return reminder_credits_to_keep(s, note)


def _finish(note: Notification, status: DeliveryStatus) -> str:
    note.status = status.value
    note.finished_at = utcnow()
    NOTIFY_DELIVERIES.labels(status.value).inc()
    return status.value


def _inbox(s: Session, note: Notification) -> InboxItem | None:
    return s.get(InboxItem, note.inbox_item_id) if note.inbox_item_id else None


def _subscribe_data(s: Session, note: Notification) -> tuple[dict[str, str], str]:
    kind = get_kind(note.kind)
    if kind is None:
        raise TemplateFieldError("kind", f"没有配置通知类型 {note.kind}")
    if note.subscribe_message is not None:
        # A notice's test send: the values and page its fan-out sends (no page at all when the notice has none).
        message = note.subscribe_message
        if not message.get("data"):  # as the fan-out: a notice without template values reaches the inbox only
            raise TemplateFieldError("data", "这条通知没有订阅消息字段，订阅者只会收到站内信")
        return validate_template(dict(message.get("data") or {})), str(message.get("page") or "")
    item = _inbox(s, note)
    data = render(kind, note.fields or {}, title=item.title if item else "", body=item.body if item else "",
                  created_at=note.created_at)
    return data, note.page or kind.page


def _attempt(s: Session, note: Notification, channel: Channel, outcome: Outcome, *, errcode: int = 0,
             detail: str = "") -> NotificationAttempt:
    row = NotificationAttempt(notification_id=note.id, channel=channel.value, outcome=outcome.value,
                              errcode=errcode, detail=detail[:300])
    s.add(row)
    s.flush()
    if outcome != Outcome.SENDING:
        NOTIFY_ATTEMPTS.labels(channel.value, outcome.value).inc()
    return row


def _wxa_openid(user: User) -> str | None:
    # Official Account users who never logged into the mini-program carry a placeholder "oa:<openid>".
    return user.openid if user.openid and not user.openid.startswith("oa:") else None


def _plan_subscribe(s: Session, note: Notification, user: User) -> _Send | None:
    kind = get_kind(note.kind)
    openid = _wxa_openid(user)
    if kind is None or not kind.template_id or openid is None:
        return None
    try:
        data, page = _subscribe_data(s, note)
    except TemplateFieldError as exc:
        # Our data would earn a 47003: record it for staff and do not spend the user's credit on it.
        _attempt(s, note, Channel.SUBSCRIBE, Outcome.INVALID, detail=str(exc))
        log.warning("notification fields do not fit the template",
                    extra={"notification_id": note.id, "kind": note.kind, "field": exc.field})
        return None
    keep = _credits_to_keep(s, note)
    if not credits.claim(s, user.id, kind.template_id, keep=keep):
        if keep and credits.available(s, user.id, kind.template_id):
            _attempt(s, note, Channel.SUBSCRIBE, Outcome.SKIPPED, detail=f"订阅消息次数留给更近的提醒（{keep} 次）")
        return None
    row = _attempt(s, note, Channel.SUBSCRIBE, Outcome.SENDING, detail=kind.template_id)
    return _Send(row.id, Channel.SUBSCRIBE, "wxa", openid, user.id, kind.template_id, data, page)


def _custom_targets(user: User) -> list[tuple[str, str]]:
    """(account, openid) pairs that could carry a customer-service message, Official Account first."""
    settings = current_app.extensions["wxapp"].settings
    out = []
    if user.oa_openid and settings.wechat_appid and settings.wechat_secret:
        out.append(("oa", user.oa_openid))
    wxa_openid = _wxa_openid(user)
    if wxa_openid and settings.wxa_appid and settings.wxa_secret:
        out.append(("wxa", wxa_openid))
    return out


def _restore_window(r: redis.Redis, account: str, openid: str, last_message_at) -> None:
    """Open the 48-hour window from the database's last_message_at when Redis has none (it was lost)."""
    key = window_key(account, openid)
    pipe = r.pipeline(transaction=True)
    # HSETNX: an existing window (and what it has already spent) is never reset here.
    pipe.hsetnx(key, "at", int(last_message_at.timestamp()))
    pipe.hsetnx(key, "span", MESSAGE_WINDOW)
    pipe.hsetnx(key, "limit", MESSAGE_LIMIT)
    pipe.hsetnx(key, "sent", 0)
    pipe.expire(key, MESSAGE_WINDOW + 60)
    pipe.execute()


def _custom_text(s: Session, note: Notification, account: str) -> str:
    item = _inbox(s, note)
    parts = [item.title, item.body] if item else [note.kind]
    text = "\n".join(p.strip() for p in parts if p and p.strip())
    if len(text) > CUSTOM_TEXT_MAX:
        text = text[: CUSTOM_TEXT_MAX - 1] + "…"
    # A notice may say what to reply in the Official Account chat instead (`reply_hint`: the appeals' notices to
    # their enterprise, which can follow an appeal there, handlers/appeal_followup.py); a follower who never
    # opened the mini-program would find nothing in it.
    hint = (note.fields or {}).get("reply_hint") if account == "oa" else None
    return text + (f"\n（{hint}）" if hint else "\n（详情请在小程序“消息”中查看）")


def _plan_custom(s: Session, note: Notification, user: User) -> _Send | None:
    r = current_app.extensions["wxapp"].redis
    targets = _custom_targets(user)
    if not targets:
        return None
    last = user.last_message_at
    # Restore only when Redis has lost the user's windows: last_message_at does not say which account they wrote
    # to, and a window made up for the other account (WeChat answers 45015) would hide the one they opened.
    if last is not None and utcnow() - last < timedelta(seconds=MESSAGE_WINDOW) and not r.exists(
            *(key for account, openid in targets for key in (window_key(account, openid),
                                                             event_window_key(account, openid)))):
        account, openid = targets[0]
        _restore_window(r, account, openid, last)
    full = None
    for account, openid in targets:
        refused = take_window(r, account, openid)
        if not refused:
            row = _attempt(s, note, Channel.CUSTOM, Outcome.SENDING, detail=account)
            return _Send(row.id, Channel.CUSTOM, account, openid, user.id, text=_custom_text(s, note, account))
        if refused == 45047:
            full = account
    if full is not None:  # a window is open but its sends are used up (by us or by chat replies)
        KEFU_REFUSED.labels(full, "45047", "local").inc()
        _attempt(s, note, Channel.CUSTOM, Outcome.LIMITED, errcode=45047,
                 detail=f"客服消息在用户最后一条消息后的时限内已发满 {MESSAGE_LIMIT} 条")
    return None


def _resume(s: Session, note: Notification, user: User, attempt: NotificationAttempt) -> _Send | str:
    """Re-send an attempt whose credit or slot was taken by an earlier run that did not finish."""
    if attempt.channel == Channel.SUBSCRIBE:
        template_id = attempt.detail
        try:
            data, page = _subscribe_data(s, note)
        except TemplateFieldError as exc:
            _close(s, attempt, Outcome.INVALID, detail=str(exc))
            credits.refund(s, user.id, template_id)
            return _next_send_in(s, note, user)
        return _Send(attempt.id, Channel.SUBSCRIBE, "wxa", user.openid, user.id, template_id, data, page)
    account = attempt.detail if attempt.detail in ("oa", "wxa") else "wxa"
    openid = user.oa_openid if account == "oa" else _wxa_openid(user)
    return _Send(attempt.id, Channel.CUSTOM, account, openid or "", user.id, text=_custom_text(s, note, account))


def _next_send_in(s: Session, note: Notification, user: User) -> _Send | str:
    tried = {a.channel for a in note.attempts} | {Channel.SUBSCRIBE.value}  # the subscribe try just ended
    if Channel.CUSTOM not in tried:
        step = _plan_custom(s, note, user)
        if step is not None:
            return step
    return _finish(note, DeliveryStatus.INBOX_ONLY)


def _close(s: Session, attempt: NotificationAttempt, outcome: Outcome, *, errcode: int = 0,
           detail: str = "") -> None:
    attempt.outcome = outcome.value
    attempt.errcode = errcode
    attempt.detail = detail[:300]
    NOTIFY_ATTEMPTS.labels(attempt.channel, outcome.value).inc()


# --------------------------------------------------------------------------------------------- sending

def _call(step: _Send) -> Any:
    api = get_api(step.account)
    if step.channel == Channel.SUBSCRIBE:
        return api.send_subscribe(step.openid, step.template_id, step.data or {}, step.page)
    return api.send_text(step.openid, step.text)


def _last_try() -> bool:
    """True inside an RQ job that has no retry left (outside RQ a transient error is always raised)."""
    from rq import get_current_job

    job = get_current_job()
    return job is not None and not job.retries_left


def _calling_key(attempt_id: int) -> str:
    return f"wxapp:notify:calling:{attempt_id}"


def _call_started(attempt_id: int) -> bool:
    """Whether a run called WeChat for this attempt and never heard back (see _send)."""
    return bool(current_app.extensions["wxapp"].redis.exists(_calling_key(attempt_id)))


def _send(step: _Send, notification_id: int) -> str | None:
    """Call WeChat and record the outcome; returns the notification's final status, or None to go on.

    The call is marked as started in Redis first, and the mark is taken off when WeChat answers with an error
    (nothing reached the user: a retry may send): a rerun that finds the mark on a 'sending' attempt knows the run
    before it died inside or after the call, and does not send it again (_next_send)."""
    error: WeChatAPIError | None = None
    resp: Any = None
    r = current_app.extensions["wxapp"].redis
    r.set(_calling_key(step.attempt_id), 1, ex=CALLING_TTL)
    try:
        resp = _call(step)
    except WeChatAPIError as exc:
        error = exc
        r.delete(_calling_key(step.attempt_id))
    except TemplateFieldError as exc:  # render() validated already; kept for safety
        error = WeChatAPIError(47003, str(exc), "subscribe_send")
        r.delete(_calling_key(step.attempt_id))
    # A credential WeChat will not take is the account's, as a busy WeChat is: retried on the same claim (it used to
    # fail the subscribe try, meet the same refusal on the customer-service one and end 仅站内信 for good).
    transient = error is not None and (error.transient or error.credential)
    final = transient and _last_try()
    with session_scope() as s:
        attempt = s.get(NotificationAttempt, step.attempt_id)
        note = s.get(Notification, notification_id)
        if attempt is None or note is None:
            return "missing"
        if error is None:
            _close(s, attempt, Outcome.OK, detail=step.template_id or step.account)
            attempt.msgid = msgid_of(resp)
            # A report WeChat sent before this was written down (credits.apply_sent_event kept it).
            if attempt.msgid and (early := credits.take_early_reports([(step.user_id, attempt.msgid)])):
                attempt.delivery = early[attempt.msgid]
            if step.channel == Channel.CUSTOM:
                KEFU_SENT.labels(step.account).inc()
            return _finish(note, DeliveryStatus.SENT_SUBSCRIBE if step.channel == Channel.SUBSCRIBE
                           else DeliveryStatus.SENT_CUSTOM)
        detail = f"{error.errcode} {error.errmsg}"
        if transient and not final:
            attempt.errcode = error.errcode  # still "sending": the retry re-sends on the same claim
        elif transient:
            _close(s, attempt, Outcome.FAILED, errcode=error.errcode, detail=detail)
            if step.channel == Channel.SUBSCRIBE:
                credits.refund(s, step.user_id, step.template_id)
            return _finish(note, DeliveryStatus.FAILED)
        elif step.channel == Channel.SUBSCRIBE:
            if error.errcode == REFUSED:
                _close(s, attempt, Outcome.REFUSED, errcode=error.errcode, detail=detail)
                credits.zero_credits(s, step.user_id, step.template_id)
            else:  # 47003, 40003, 40037, 41030, 45009...: WeChat did not take it, so the credit is unused
                # 45009 is the day's quota, not the message's fault: it is tried again after the cool-down.
                _close(s, attempt, Outcome.WAITING if isinstance(error, QuotaReached) else Outcome.FAILED,
                       errcode=error.errcode, detail=detail)
                credits.refund(s, step.user_id, step.template_id)
                log.warning("subscribe message refused", extra={"notification_id": notification_id,
                                                                 "errcode": error.errcode})
        elif error.errcode in CUSTOM_LIMITS:
            KEFU_REFUSED.labels(step.account, str(error.errcode), "wechat").inc()
            shut_window(current_app.extensions["wxapp"].redis, step.account, step.openid, error.errcode)
            _close(s, attempt, Outcome.LIMITED, errcode=error.errcode, detail=detail)
        else:
            _close(s, attempt, Outcome.FAILED, errcode=error.errcode, detail=detail)
            log.warning("customer-service message refused", extra={"notification_id": notification_id,
                                                                    "errcode": error.errcode})
    if transient and not final:
        log.warning("notification send failed for now; the job will retry",
                    extra={"notification_id": notification_id, "errcode": error.errcode})
        raise error
    return None


def sweep_pending_notifications(older_than: int = 600, limit: int = 500) -> int:
    """Re-queue notifications still pending long after notify() (their job was lost with a dead worker).

    Safe because delivery resumes on the attempt it had committed; returns how many were re-queued.
    """
    from sqlalchemy import select

    from ..queue import enqueue

    cutoff = utcnow() - timedelta(seconds=older_than)
    with session_scope() as s:
        ids = s.scalars(select(Notification.id).where(Notification.status == DeliveryStatus.PENDING.value,
                                                      Notification.created_at < cutoff)
                        .order_by(Notification.id).limit(limit)).all()
    for notification_id in ids:
        enqueue(deliver_notification, notification_id, retries=3)
    if ids:
        log.warning("re-queued stuck notifications", extra={"count": len(ids)})
    return len(ids)
