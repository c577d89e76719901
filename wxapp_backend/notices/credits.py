"""Subscribe-message credits per (user, template): +1 per acceptance, zeroed on refusal, taken atomically.

A one-time template lets us send one message per acceptance (acceptances add up, one per tap); a
long-term template (public-service categories) is unlimited until the user turns it off.

Acceptances arrive from two places for the same tap: the mini-program reports `wx.requestSubscribeMessage`'s
result (`record_results`), and WeChat pushes a `subscribe_msg_popup_event` (`apply_popup_event`) when message
push is configured. Counting both would give two credits for one tap, so each acceptance first looks for an
unmatched acceptance of the same (user, template) from the other source in the last ten minutes (a Redis
counter): when it finds one, the two are the same tap and no credit is added. With only one source
configured, every acceptance counts.

Only templates named in the notification kinds (`kinds.py`) are recorded; others are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from sqlalchemy import case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..auth.models import User
from ..db import utcnow
from ..errors import Conflict
from .kinds import long_term_templates
from .models import SubscribeCredit

log = logging.getLogger(__name__)

STATUSES = ("accept", "reject", "ban", "filter")
PAIR_WINDOW = 600  # seconds within which a client report and a pushed event are taken as the same tap

# KEYS[1] = the other source's unmatched acceptances, KEYS[2] = ours; ARGV[1] = window seconds.
# Returns 1 when this acceptance is new (add a credit), 0 when it matched the other source's report.
_PAIR = """
local other = tonumber(redis.call('GET', KEYS[1]) or '0')
if other > 0 then
    redis.call('DECR', KEYS[1])
    return 0
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


def _redis(client: redis.Redis | None) -> redis.Redis:
    if client is not None:
        return client
    from ..kv import get_redis

    return get_redis()


def _insert(session: Session):
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _is_new_acceptance(client: redis.Redis, user_id: int, template_id: str, source: str) -> bool:
    base = f"wxapp:subscribe_accept:{user_id}:{template_id}:"
    other = "event" if source == "client" else "client"
    return bool(client.eval(_PAIR, 2, base + other, base + source, PAIR_WINDOW))


def add_credit(session: Session, user_id: int, template_id: str, *, long_term: bool = False) -> None:
    """One more credit (insert or increment in one statement); clears a ban."""
    now = utcnow()
    ins = _insert(session)(SubscribeCredit).values(user_id=user_id, template_id=template_id, credits=1,
                                                  long_term=long_term, banned=False, updated_at=now)
    session.execute(ins.on_conflict_do_update(
        index_elements=["user_id", "template_id"],
        set_={"credits": SubscribeCredit.credits + 1, "long_term": long_term, "banned": False, "updated_at": now}))


def zero_credits(session: Session, user_id: int, template_id: str, *, ban: bool = False) -> None:
    """No more sends for this template until the user accepts again (reject, ban, change event, 43101)."""
    now = utcnow()
    if ban:
        ins = _insert(session)(SubscribeCredit).values(user_id=user_id, template_id=template_id, credits=0,
                                                      long_term=False, banned=True, updated_at=now)
        session.execute(ins.on_conflict_do_update(
            index_elements=["user_id", "template_id"],
            set_={"credits": 0, "long_term": False, "banned": True, "updated_at": now}))
        return
    session.execute(update(SubscribeCredit)
                    .where(SubscribeCredit.user_id == user_id, SubscribeCredit.template_id == template_id)
                    .values(credits=0, long_term=False, updated_at=now)
                    .execution_options(synchronize_session=False))


def claim(session: Session, user_id: int, template_id: str, *, keep: int = 0) -> bool:
    """Take one credit for a send, atomically: one UPDATE ... WHERE credits > keep; False when no more than
    `keep` are left (credits held back for nearer notifications, e.g. an activity's 1-hour reminder).

    Correct under concurrency without row locks: the database re-checks the WHERE clause on the row it
    updates (PostgreSQL re-evaluates it after a concurrent update commits; SQLite writers are serial).
    Long-term templates are claimed without spending anything.
    """
    result = session.execute(
        update(SubscribeCredit)
        .where(SubscribeCredit.user_id == user_id, SubscribeCredit.template_id == template_id,
               SubscribeCredit.banned.is_(False),
               or_(SubscribeCredit.long_term.is_(True), SubscribeCredit.credits > max(keep, 0)))
        .values(credits=case((SubscribeCredit.long_term.is_(True), SubscribeCredit.credits),
                             else_=SubscribeCredit.credits - 1),
                updated_at=utcnow())
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def available(session: Session, user_id: int, template_id: str) -> int:
    """Credits the user has for the template now (0 when banned; long-term counts as 1)."""
    row = session.scalar(select(SubscribeCredit).where(SubscribeCredit.user_id == user_id,
                                                       SubscribeCredit.template_id == template_id))
    if row is None or row.banned:
        return 0
    return max(row.credits, 1) if row.long_term else row.credits


def refund(session: Session, user_id: int, template_id: str) -> None:
    """Give back a claimed credit whose message WeChat did not take (never for long-term templates)."""
    session.execute(update(SubscribeCredit)
                    .where(SubscribeCredit.user_id == user_id, SubscribeCredit.template_id == template_id,
                           SubscribeCredit.long_term.is_(False), SubscribeCredit.banned.is_(False))
                    .values(credits=SubscribeCredit.credits + 1, updated_at=utcnow())
                    .execution_options(synchronize_session=False))


def record_results(session: Session, user_id: int, results: Mapping[str, str], *, source: str = "client",
                   redis_client: redis.Redis | None = None) -> dict[str, str]:
    """Apply `wx.requestSubscribeMessage` results {template_id: accept|reject|ban|filter}.

    Returns what happened to each template: added, matched (same tap already counted), zeroed, banned,
    unchanged (filter) or ignored (not a configured template).
    """
    templates = long_term_templates()
    client = _redis(redis_client)
    out: dict[str, str] = {}
    for template_id, status in results.items():
        if template_id not in templates:
            out[template_id] = "ignored"
        elif status == "accept":
            if _is_new_acceptance(client, user_id, template_id, source):
                add_credit(session, user_id, template_id, long_term=templates[template_id])
                out[template_id] = "added"
            else:
                out[template_id] = "matched"
        elif status in ("reject", "ban"):
            zero_credits(session, user_id, template_id, ban=status == "ban")
            out[template_id] = "zeroed" if status == "reject" else "banned"
        else:  # filter: WeChat hid the template from the popup; nothing changed
            out[template_id] = "unchanged"
    return out


# --- a report retried with its Idempotency-Key -------------------------------------------------------------

IDEMPOTENCY_KEY_MAX = 64
REPORT_KEY_TTL = 24 * 3600  # a retry comes within seconds; a day covers a phone that woke up much later


def _report_key(user_id: int, key: str) -> str:
    return f"wxapp:subscribe_report:{user_id}:{key}"


def report_digest(results: Mapping[str, str]) -> str:
    """What a keyed report said, as a short hash: the same key must report the same results."""
    return hashlib.sha256(json.dumps(dict(results), sort_keys=True).encode()).hexdigest()[:32]


def claim_report(user_id: int, key: str, results: Mapping[str, str], *,
                 redis_client: redis.Redis | None = None) -> dict[str, str] | None:
    """None when this user's key is new (now taken by this report); for a retry of a report already made, what it
    answered then (a network retry of one tap gave a second credit). The same key with other results is a 409."""
    client = _redis(redis_client)
    rkey, digest = _report_key(user_id, key), report_digest(results)
    if client.set(rkey, json.dumps({"digest": digest}), nx=True, ex=REPORT_KEY_TTL):
        return None
    first = json.loads(client.get(rkey) or "{}")
    if first.get("digest", digest) != digest:
        raise Conflict("这个提交编号已用于另一次订阅结果上报，这次的结果与它不同，没有登记；新的一次请换一个新的提交编号。",
                       code="idempotency_key_reused")
    # Still being applied by the first request (two sent at once): that one counts the tap.
    return first.get("results") or dict.fromkeys(results, "matched")


def remember_report(user_id: int, key: str, results: Mapping[str, str], applied: Mapping[str, str], *,
                    redis_client: redis.Redis | None = None) -> None:
    """What the keyed report answered, for its retries."""
    _redis(redis_client).set(_report_key(user_id, key),
                             json.dumps({"digest": report_digest(results), "results": dict(applied)}),
                             ex=REPORT_KEY_TTL)


def release_report(user_id: int, key: str, *, redis_client: redis.Redis | None = None) -> None:
    """A keyed report that failed (nothing recorded): its retry is applied afresh."""
    _redis(redis_client).delete(_report_key(user_id, key))


def _lowered_items(subscribe_results: Any) -> Iterable[dict[str, Any]]:
    """Each item of a subscribe-message event's List with lower-case keys: WeChat's names (TemplateId,
    SubscribeStatusString, MsgID) or wechat.messages' normalised ones. The List is an object for one template
    and an array for several (WECHAT.md); anything else in it is skipped."""
    items = subscribe_results if isinstance(subscribe_results, list) else [subscribe_results]
    for item in items:
        if isinstance(item, Mapping):
            yield {str(k).lower(): v for k, v in item.items()}


def _event_items(subscribe_results: Any) -> Iterable[tuple[str, str]]:
    for lowered in _lowered_items(subscribe_results):
        tid = lowered.get("templateid") or lowered.get("template_id")
        status = lowered.get("subscribestatusstring") or lowered.get("status")
        if isinstance(tid, str) and isinstance(status, str) and tid and len(tid) <= 64:
            yield tid, status.strip().lower()


def _user_id(session: Session, openid: str) -> int | None:
    return session.scalar(select(User.id).where(User.openid == openid))


def apply_popup_event(session: Session, openid: str, subscribe_results: Any, *,
                      redis_client: redis.Redis | None = None) -> int:
    """subscribe_msg_popup_event pushed by WeChat: the same as the mini-program's report; returns items applied."""
    user_id = _user_id(session, openid)
    if user_id is None:
        log.info("subscribe popup event for an unknown openid")
        return 0
    results = {tid: status for tid, status in _event_items(subscribe_results) if status in STATUSES}
    applied = record_results(session, user_id, results, source="event", redis_client=redis_client)
    return sum(1 for v in applied.values() if v != "ignored")


def apply_change_event(session: Session, openid: str, subscribe_results: Any) -> int:
    """subscribe_msg_change_event (the user changed a template in settings): reject zeroes the credits;
    accept turns a long-term template back on but gives no one-time credit. Returns items applied."""
    user_id = _user_id(session, openid)
    if user_id is None:
        return 0
    templates = long_term_templates()
    applied = 0
    for tid, status in _event_items(subscribe_results):
        if tid not in templates:
            continue
        if status == "reject":
            zero_credits(session, user_id, tid)
            applied += 1
        elif status == "accept" and templates[tid]:
            add_credit(session, user_id, tid, long_term=True)
            applied += 1
    return applied


def credits_by_template(session: Session, user_id: int) -> dict[str, SubscribeCredit]:
    rows = session.scalars(select(SubscribeCredit).where(SubscribeCredit.user_id == user_id)).all()
    return {r.template_id: r for r in rows}


# ------------------------------------------------------------------------------------ delivery reports

REFUSED_STATUS = "failed:user refuse to accept the msg"


def msgid_of(response: Any) -> str | None:
    """The msgid `subscribe/send` answers with (a number in WeChat's JSON), as text; None when there is none."""
    value = response.get("msgid") if isinstance(response, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value).strip()
    return text[:32] if text else None


def _sent_items(subscribe_results: Any) -> Iterable[tuple[str, str, str | None]]:
    """(msgid, status, template id) of each item of a subscribe_msg_sent_event's List (object or array)."""
    for lowered in _lowered_items(subscribe_results):
        msgid = lowered.get("msgid") or lowered.get("msg_id")
        status = lowered.get("errorstatus") or lowered.get("error_status") or lowered.get("status")
        tid = lowered.get("templateid") or lowered.get("template_id")
        if isinstance(msgid, int) and not isinstance(msgid, bool):
            msgid = str(msgid)
        if isinstance(msgid, str) and msgid.strip() and isinstance(status, str) and status.strip():
            yield msgid.strip()[:32], status.strip()[:60], tid if isinstance(tid, str) and len(tid) <= 64 else None


EARLY_REPORT_TTL = 3600  # seconds a report that came before its send was written down waits for it
_EARLY_REPORT = "wxapp:subscribe:early-report:{}:{}"


def _keep_early_report(client: redis.Redis | None, user_id: int, msgid: str, status: str) -> None:
    try:
        _redis(client).set(_EARLY_REPORT.format(user_id, msgid), status, ex=EARLY_REPORT_TTL)
    except Exception:  # noqa: BLE001 - the report is lost, as before; the webhook must still answer
        log.warning("could not keep an early delivery report", extra={"user_id": user_id, "msgid": msgid})


def take_early_reports(sends: Iterable[tuple[int, str | None]], client: redis.Redis | None = None) -> dict[str, str]:
    """{msgid: report} of the reports WeChat sent for these (user id, msgid) sends before they were written down."""
    sends = [(u, m) for u, m in sends if m]
    if not sends:
        return {}
    try:
        pipe = _redis(client).pipeline(transaction=False)
        for user_id, msgid in sends:
            pipe.getdel(_EARLY_REPORT.format(user_id, msgid))
        found = pipe.execute()
    except Exception:  # noqa: BLE001 - a report not found is a report not shown, nothing worse
        log.warning("could not read early delivery reports", extra={"sends": len(sends)})
        return {}
    return {m: (v.decode() if isinstance(v, bytes) else v) for (_, m), v in zip(sends, found, strict=True) if v}


def apply_sent_event(session: Session, openid: str, subscribe_results: Any, *,
                     client: redis.Redis | None = None) -> int:
    """subscribe_msg_sent_event: WeChat says what became of subscribe messages it took (`success`, or
    `failed:user refuse to accept the msg` / `failed:system failed`). The report is written on the send it
    names (a one-user notification's attempt or a notice's outbox row, by msgid and only for that user); a
    refusal also ends the user's credits for the template, as a 43101 does. Returns the sends reported on."""
    from .broadcast_models import OutboxRow
    from .models import Notification, NotificationAttempt

    user_id = _user_id(session, openid)
    if user_id is None:
        return 0
    applied = 0
    for msgid, status, tid in _sent_items(subscribe_results):
        attempt = session.scalar(select(NotificationAttempt).join(Notification)
                                 .where(NotificationAttempt.msgid == msgid, Notification.user_id == user_id))
        if attempt is not None:
            attempt.delivery = status
            tid = tid or attempt.detail
        else:
            row = session.scalar(select(OutboxRow).where(OutboxRow.msgid == msgid, OutboxRow.user_id == user_id))
            if row is None:
                # WeChat reports within moments, and a fan-out chunk writes its sends' msgids down only when the
                # chunk is done: kept for the send (take_early_reports), or the report was lost for good. A refusal
                # ends the credits whichever send it was about.
                _keep_early_report(client, user_id, msgid, status)
                if status == REFUSED_STATUS and tid:
                    zero_credits(session, user_id, tid)
                continue
            row.delivery = status
        applied += 1
        if status == REFUSED_STATUS and tid:
            zero_credits(session, user_id, tid)
    if applied:
        session.flush()
    return applied
