"""精准推送: compose a notice, choose its audience, estimate reach, test, publish, and fan out exactly once.

How a publish travels (the database is the source of truth; Redis only paces and queues):

1. `publish()` marks the notice ``expanding`` and enqueues `expand_notice` after commit. Publishing again
   is a no-op.
2. `expand_notice` walks the audience by user id in ranges of EXPAND_BATCH users (keyset, one transaction
   per range, the cursor saved with it), set-based: ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (SQLite:
   the same upsert) from the audience query under the unique constraint, so no user list passes through
   Python and memory stays flat. ``inbox`` rows are written ``sent`` and the InboxItems are inserted from
   the outbox rows this transaction actually inserted (so a re-run adds nothing); ``subscribe`` rows
   ``pending`` for users who hold credit for the template. A killed expansion resumes from its cursor. The
   send jobs are started by the first range that writes subscribe rows, so sending overlaps the expansion.
3. `send_notice` jobs (FANOUT_JOBS of them, one per worker; they run while the notice is ``expanding`` or
   ``sending`` and poll while the expansion has nothing new for them) claim up to CLAIM_BATCH pending rows
   (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite writers are serial), stamping a lease token and
   ``claimed_at``; a claimed user no longer in the audience (unsubscribed, blocked) is ``skipped``, and so is every
   row once the notice's activity has been cancelled (or taken back to draft).
   Then per chunk of SEND_CHUNK rows: in one transaction move the rows ``claimed -> sending`` *fenced by the
   lease token* and claim the users' credits; commit; for each row wait for the global rate limiter (GCRA in
   one Lua script on the shared Redis) and call WeChat at once; mark the
   chunk's sent rows in one transaction (fenced again; errors are recorded per row at once). A row only reaches WeChat after that committed ``sending`` step,
   and a ``sending`` row is never handed out again unless Redis's record (CALLED_KEY: a hash per lease token, each
   row marked "0" with the move and "1" in one atomic step just before its call) says WeChat never had it, so
   nothing is sent twice; a worker killed inside a chunk leaves the row in flight as "结果未知" and the chunk's rows
   not yet called back to ``pending`` (step 4), while an
   error it survives (Redis, the database) gives the rows it never sent back to ``pending`` with their credit. A chunk
   that a slow WeChat keeps busy longer than a third of the lease renews it, so a live worker's rows are not.
4. `sweep_leases` (run by `fanout_tick` every minute while a notice is sending, and by the progress view):
   ``claimed`` rows whose lease expired go back to ``pending`` (they were never sent); ``sending`` rows
   whose lease expired and that CALLED_KEY says were never called go back to ``pending`` with their credit (marked
   "x" in the same atomic step, so a worker that was only stalled cannot call them afterwards); the others (called,
   or no record: Redis lost it) are failed as "结果未知" and not retried (at most the row in flight per killed
   worker, a chunk when Redis lost the record: at-most-once beats a duplicate). It also re-enqueues the expansion and send jobs of notices that still
   have work (and no live worker), so a Redis restart that lost the queue only delays the fan-out.

5. `stop()` (staff's 停止发送) marks the notice ``stopped`` for good and skips its ``pending``/``claimed`` rows as
   已停止发送 (no credit held); a flag on Redis, read before each send, makes the worker with a chunk in hand skip its
   rows not yet handed to WeChat (credit given back) once the stop has committed; the expansion, later claims and
   jobs queued or restarted afterwards send nothing.

Errors: -1, transport errors/timeouts and 45011 (too fast: a minute at least) are retried with backoff up to
MAX_ATTEMPTS, the credit given back meanwhile; 43101 zeroes the user's credit for the template and is never
retried; 47003, 40003 and other refusals fail the row with the reason; 40037 and 41030 (the notice's template or
page, refused for every subscriber alike) fail the rest of the notice's unsent rows too, untried (`_halt`). After a 45009 (the daily quota; the client
alerts a person once a day and leaves the API alone until WeChat's midnight or a cool-down, `client.QuotaReached`) the
row WeChat refused, the rest of the chunk and of the claimed batch go back to ``pending`` (no attempt used, credit
given back: the quota is not the message's fault, and it may stay used up all day) for when the cool-down ends, and
no job calls WeChat for the subscribe API until then. A credential WeChat will not take (the access token cannot be
fetched: AppSecret reset, IP not whitelisted; or it is refused again after the client's one refresh) is the account's
fault, not the recipients': the row and the rest of the batch wait the same way (CREDENTIAL_BACKOFF, reason shown in
the progress view) instead of failing every recipient for good within seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
import unicodedata
from datetime import datetime, timedelta
from typing import Any

import redis
from flask import current_app
from sqlalchemy import (
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..activities.models import (
    ACTIVE_STATUSES,
    CATEGORIES,
    Activity,
    ActivityStatus,
    CategorySubscription,
    Registration,
)
from ..audit import Actor, audit
from ..auth.models import BindingState, StaffUser, User
from ..db import session_scope, utcnow
from ..enterprises.models import Building, Enterprise
from ..errors import Conflict, NotFound, ServiceUnavailable, ValidationError
from ..queue import enqueue, enqueue_after_commit
from ..validation import Field, clean_text, shows_nothing, strip_invisible, validate
from ..wechat.client import QuotaReached, WeChatAPIError
from ..wechat.templates import TemplateFieldError, field_type
from ..wechat.templates import validate as validate_template
from . import credits
from .broadcast_models import TERMINAL, Notice, NoticeStatus, OutboxRow, OutboxStatus, StaffTestRecipient
from .credits import msgid_of
from .models import InboxItem, SubscribeCredit

log = logging.getLogger(__name__)

EXPAND_BATCH = 2000  # audience users per expansion transaction; settings.extra["fanout_expand_batch"]
CLAIM_BATCH = 100
SEND_CHUNK = 25  # rows moved to 'sending' (and marked sent) per transaction; settings.extra["fanout_send_chunk"]
EXPAND_POLL = 0.25  # seconds a send job waits for the expansion's next batch when it finds nothing to claim
LEASE_SECONDS = 120
MAX_ATTEMPTS = 5
BACKOFF = (5, 30, 120, 600)  # seconds before attempt 2, 3, 4, 5
QUOTA_BACKOFF = 1800  # 45009: the daily quota; a person is alerted, we try again much later
JOB_BUDGET_SECONDS = 50  # a send job hands over to a fresh job after this long
DEFAULT_RATE = 200.0  # subscribe sends per second across all workers; settings.extra["fanout_rate"]
DEFAULT_JOBS = 4
NOTICE_KIND = "notice"
LEFT_AUDIENCE = "发送前已不在推送对象中（已退订或账号受限），未发送"
LIMITER_KEY = "fanout:rate:subscribe"
STOPPED_DETAIL = "已停止发送"
STOPPED_FOR_GOOD = "这条通知已停止发送，不能恢复或重新发布；如需重新发送，请新建一条通知。"
STOP_FLAG = "notice:stopped:{}"  # set when staff stop a notice: the send jobs look before each send (one GET)
STOP_FLAG_TTL = 7 * 24 * 3600  # the database says it for good; the flag only has to outlive the jobs in flight

REFUSED = 43101
QUOTA = 45009
TOO_FAST = 45011  # WeChat's per-minute frequency limit: "retry next minute"
SUBSCRIBE_API = "subscribe_send"  # the API name the client keys its quota cool-down by
QUOTA_WAIT_DETAIL = "微信今日该接口调用次数已用完，额度恢复后自动发送"
CREDENTIAL_BACKOFF = 60  # seconds a fan-out waits after WeChat would not take the account's credential
UNKNOWN_RESULT = -3  # errcode of a 'sending' row the sweeper failed (its worker's lease expired): 结果未知
UNKNOWN_DETAIL = "发送过程中进程中断，结果未知；为避免重复不再重发"
# Per lease token, which of its 'sending' rows were handed to WeChat: row id -> "0" (moved to 'sending', not yet
# handed), "1" (handed to WeChat, or about to be), "x" (taken back by the sweeper: never to be sent under this token).
# A worker killed inside a chunk left every row of it 'sending', and the sweeper failed them all as 结果未知 for good,
# though WeChat had at most the one in flight; the rows marked "0" go back to 'pending' instead (see sweep_leases).
CALLED_KEY = "fanout:called:{}"
CALLED_TTL = 24 * 3600
# Before each call: "x" refuses (the sweeper took the row back meanwhile), "0" becomes "1". No record at all (Redis
# lost it, or it was never written) lets the call go: the sweeper then knows nothing and reports 结果未知, as before.
_MARK_CALLED = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v == 'x' then return 0 end
if v == '0' then redis.call('HSET', KEYS[1], ARGV[1], '1') end
return 1
"""
# The sweeper: the rows of ARGV never handed to WeChat ("0", or "x" from a sweep whose transaction did not commit),
# each marked "x" in the same step, so that a worker that was only stalled cannot send them afterwards.
_TAKE_UNCALLED = """
local out = {}
for _, rid in ipairs(ARGV) do
  local v = redis.call('HGET', KEYS[1], rid)
  if v == '0' or v == 'x' then
    redis.call('HSET', KEYS[1], rid, 'x')
    table.insert(out, rid)
  end
end
return out
"""
_RID = re.compile(r"\s*rid:\s*\S+\s*$")
PERMANENT_REASONS = {47003: "字段内容不符合模板要求", 40003: "用户 openid 无效", 40037: "模板编号无效",
                     41030: "小程序页面路径无效"}
# Refusals of what every subscriber of the notice is sent alike (its template, its page): after the first, the rest
# would each be refused the same way, a call of the day's quota apiece, so they are not sent (send_halted).
NOTICE_WIDE = (40037, 41030)


class _CredentialRefused(Exception):
    """The access token could not be had or was refused after its refresh: every send would fail the same way."""

    def __init__(self, wait: dict[str, Any], retry_in: float) -> None:
        super().__init__(wait.get("detail"))
        self.wait, self.retry_in = wait, retry_in


def _cfg(name: str, default: Any) -> Any:
    return current_app.extensions["wxapp"].settings.extra.get(name, default)


# --- compose -------------------------------------------------------------------------------------------

def _check_page(value: str) -> str | None:
    if "://" in value or any(c.isspace() for c in value):
        return "打开页面应为小程序内的页面路径，例如 pages/notice/detail?id=1"
    return None


def _check_title(value: str) -> str | None:
    # Hangul fillers, a blank braille pattern or a lone variation selector passed as a title: every inbox got a blank
    # title and the subscribe message's thing1 showed nothing; a line break split the inbox list's one line in two.
    if shows_nothing(value):
        return "标题里没有能看见的文字，请重新填写"
    if any(ch in value for ch in "\r\n\u2028\u2029\v\f"):
        return "标题请写在一行里，不要换行"
    return None


AUDIENCE_FIELDS = (
    Field("all", "bool", "全部用户", default=False),
    Field("categories", "list", "订阅了这些活动类别的用户", max_items=len(CATEGORIES), default=[],
          item=Field("category", "enum", "活动类别", choices=tuple(CATEGORIES), choice_names=CATEGORIES)),
    Field("building_ids", "list", "楼宇", max_items=500, default=[], item=Field("building_id", "int", "楼宇", min=1)),
    Field("industries", "list", "行业", max_items=100, default=[], item=Field("industry", "str", "行业", max_len=64)),
    Field("tags", "list", "企业标签", max_items=100, default=[], item=Field("tag", "str", "标签", max_len=32)),
    Field("registrants_of", "int", "某个活动的报名人", min=1),
    # An activity only verified enterprise contacts may join (Activity.verified_only): its announcement went to every
    # subscriber of the category, and the unverified ones read “本活动仅限已核实的企业联系人报名” on registering.
    Field("verified_only", "bool", "仅限已核实的企业联系人", default=False),
)

NOTICE_FIELDS = (
    Field("kind", "enum", "通知类型", choices=("policy", "activity"), default="policy",
          choice_names={"policy": "政策通知", "activity": "活动通知"}),
    Field("title", "str", "标题", required=True, max_len=100, check=_check_title),
    Field("summary", "text", "摘要", max_len=2000, default=""),
    Field("page", "str", "打开的小程序页面", max_len=200, default="", check=_check_page),
    Field("activity_id", "int", "相关活动", min=1),
    Field("template_fields", "dict", "订阅消息字段（模板字段名: 取值）", default={}),
    Field("audience", "dict", "推送对象", required=True),
)


def _template_data(title: str, summary: str, given: dict[str, Any], starts_at: datetime | None = None) -> dict[str, str]:
    """The subscribe-message data: the staff's values checked strictly, else made from the notice kind (its time the
    related activity's start `starts_at` when there is one, else the moment it is made)."""
    from .kinds import get_kind, render

    if given:
        # Numbers become text; anything else that is not text (null, true, objects) is refused by the check
        # instead of being sent as "None" or "{'a': 1}".
        values = {str(k): str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                  for k, v in given.items()}
        # Cleaned as every other text field is: a value pasted from a web page or a chat kept its zero-width space,
        # NUL or line break, passed the length check and went to every subscriber (WeChat's 47003, or a blank).
        values = {k: " ".join(strip_invisible(clean_text(v)).split()) if isinstance(v, str) else v
                  for k, v in values.items()}
        # A key the notice template does not have (thing9) passed the per-type checks and went to every
        # subscriber, each answered 47003.
        _check_template_keys(get_kind(NOTICE_KIND), values)
        try:
            return validate_template(values)
        except TemplateFieldError as exc:
            raise ValidationError(f"订阅消息字段 {exc.field} {exc.problem}",
                                  fields={f"template_fields.{exc.field}": exc.problem}) from None
    kind = get_kind(NOTICE_KIND)
    if kind is None or not kind.template_id:
        return {}
    try:
        # A notice about an activity: the time a subscriber reads is the activity's (as the composer fills it in);
        # made again from the text at publishing, it became the moment of publishing.
        when = {"time": starts_at.isoformat()} if starts_at is not None else {}
        return render(kind, {"title": title, "note": summary or "点击查看详情", **when}, title=title, body=summary,
                      created_at=utcnow())
    except TemplateFieldError as exc:
        raise ValidationError(f"订阅消息字段 {exc.field} {exc.problem}",
                              fields={f"template_fields.{exc.field}": exc.problem}) from None


def _unknown_template_keys(kind: Any, values: dict[str, Any]) -> list[str]:
    """Keys of `values` the configured notice template (`kind`) does not have; none when no template is configured."""
    if kind is None or not kind.template_id:
        return []
    return [str(k)[:40] for k in values if k not in kind.fields]


def _check_template_keys(kind: Any, values: dict[str, Any]) -> None:
    unknown = _unknown_template_keys(kind, values)
    if unknown:
        raise ValidationError(f"订阅消息模板没有字段 {'、'.join(unknown[:5])}，这个模板的字段是 {'、'.join(kind.fields)}",
                              fields={f"template_fields.{k}": "模板没有这个字段" for k in unknown[:20]})


def _with_start(data: dict[str, str], start: datetime) -> dict[str, str]:
    """Template values with the notice kind's time keys (those made from "time") set to `start`."""
    from .kinds import _as_template_time, get_kind

    kind = get_kind(NOTICE_KIND)
    keys = [k for k, source in (kind.fields.items() if kind else ()) if source == "time" and k in data
            and field_type(k) in ("time", "date")]
    return {**data, **{k: _as_template_time(field_type(k), start.isoformat()) for k in keys}}


def _activity_start(session: Session, activity_id: int | None) -> datetime | None:
    return session.scalar(select(Activity.starts_at).where(Activity.id == activity_id)) if activity_id else None


def _clean(session: Session, data: dict[str, Any], existing: Notice | None = None) -> dict[str, Any]:
    v = validate(data, NOTICE_FIELDS, partial=existing is not None)
    if "audience" in v:
        # Every criterion must hold: one misspelt ("industires") was dropped and the notice went to everyone the
        # others named, people it was not meant for.
        unknown = [str(k)[:40] for k in v["audience"] if k not in {f.name for f in AUDIENCE_FIELDS}]
        if unknown:
            names = "、".join(f"{f.name}（{f.title}）" for f in AUDIENCE_FIELDS)
            raise ValidationError(f"推送对象中有不认识的条件 {'、'.join(unknown[:5])}，可用的条件是 {names}",
                                  fields={f"audience.{k}": "不认识这个条件" for k in unknown[:20]})
        try:
            v["audience"] = validate(v["audience"], AUDIENCE_FIELDS)
        except ValidationError as exc:
            raise ValidationError(exc.message, fields={f"audience.{k}": m for k, m in exc.fields.items()}) from None
        a = v["audience"]
        if not a["all"] and not any(a[k] for k in ("categories", "building_ids", "industries", "tags",
                                                   "registrants_of", "verified_only")):
            raise ValidationError("请选择推送对象（或明确选择“全部用户”）。", fields={"audience": "请选择推送对象"})
    title = v.get("title", existing.title if existing else "")
    summary = v.get("summary", existing.summary if existing else "")
    if "template_fields" in v:
        given = v["template_fields"]
    elif existing is not None and not _made_from_text(existing):
        given = existing.template_fields  # the staff member's own values stay
    else:
        given = {}  # made from the title and summary: made again from the edited ones
    activity_id = v.get("activity_id", existing.activity_id if existing else None)
    v["template_fields"] = _template_data(title, summary or "", given or {}, _activity_start(session, activity_id))
    if activity_id is not None and not v.get("page", existing.page if existing else "").strip():
        # Tapping a notice about an activity opens that activity (the page registration messages open); left
        # empty, it opened nothing and the reader had to look for it. The console and the API alike.
        v["page"] = f"pages/activity/detail?id={activity_id}"
    return v


def _made_from_text(notice: Notice) -> bool:
    """Whether the notice's template values are the ones made from its title and summary (time keys aside:
    they hold the moment they were made)."""
    try:
        made = _template_data(notice.title, notice.summary or "", {})
    except ValidationError:
        return False

    def text(data: dict[str, Any]) -> dict[str, Any]:
        return {k: val for k, val in data.items() if field_type(k) not in ("time", "date")}

    return bool(made) and text(made) == text(dict(notice.template_fields or {}))


def _check_activity(session: Session, v: dict[str, Any]) -> None:
    # A missing activity would fail the foreign key at flush: a 500 instead of a word to the staff member.
    if v.get("activity_id") is not None and session.get(Activity, v["activity_id"]) is None:
        raise ValidationError("相关活动不存在，请重新选择。", fields={"activity_id": "没有找到这个活动"})
    # A mistyped building or activity in the audience would quietly leave out the people meant.
    audience = v.get("audience") or {}
    wanted = set(audience.get("building_ids") or [])
    missing = sorted(wanted - set(session.scalars(select(Building.id).where(Building.id.in_(wanted))))) if wanted else []
    if missing:
        msg = f"推送对象中有不存在的楼宇（编号 {'、'.join(map(str, missing[:5]))}），请重新选择"
        raise ValidationError(msg, fields={"audience.building_ids": msg})
    if audience.get("registrants_of") is not None and session.get(Activity, audience["registrants_of"]) is None:
        raise ValidationError("推送对象中的活动不存在，请重新选择。", fields={"audience.registrants_of": "没有找到这个活动"})


def create_notice(session: Session, actor: Actor, data: dict[str, Any], *, idempotency_key: str | None = None,
                  digest: str | None = None) -> Notice:
    """A draft notice (validated: template values against WeChat's limits, a non-empty audience rule)."""
    from .kinds import get_kind

    v = _clean(session, data)
    _check_activity(session, v)
    kind = get_kind(NOTICE_KIND)
    notice = Notice(**v, template_id=kind.template_id if kind else "", created_by=actor.id,
                    idempotency_key=idempotency_key, request_digest=digest)
    session.add(notice)
    session.flush()
    audit(session, actor, "notice.created", notice, title=notice.title, audience=notice.audience)
    return notice


def request_digest(data: Any) -> str:
    """What a keyed create asks for: the same Idempotency-Key with another body is not the same request."""
    raw = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def keyed_notice(session: Session, actor: Actor, idempotency_key: str, digest: str) -> Notice | None:
    """The notice this staff member created with this Idempotency-Key, if any; with another body, a 409 (as for
    the mini-program's registrations and appeals) rather than the first draft answered for a notice never made."""
    existing = session.scalar(select(Notice).where(Notice.created_by == actor.id,
                                                   Notice.idempotency_key == idempotency_key))
    if existing is not None and existing.request_digest != digest:
        raise Conflict(f"这个提交编号已用于您之前新建的通知“{existing.title}”（编号 {existing.id}），这次填写的内容"
                       "与它不同，没有新建。请刷新页面后再新建。", code="idempotency_key_reused",
                       fields={"notice_id": str(existing.id)})
    return existing


def create_keyed_notice(session: Session, actor: Actor, data: dict[str, Any],
                        idempotency_key: str | None) -> tuple[Notice, bool]:
    """create_notice with an optional Idempotency-Key: (notice, created). A retry of the same request gets the
    draft it made (created False), even when the two raced."""
    if not idempotency_key:
        return create_notice(session, actor, data), True
    digest = request_digest(data)
    existing = keyed_notice(session, actor, idempotency_key, digest)
    if existing is not None:
        return existing, False
    try:
        with session.begin_nested():
            return create_notice(session, actor, data, idempotency_key=idempotency_key, digest=digest), True
    except IntegrityError:
        existing = keyed_notice(session, actor, idempotency_key, digest)  # the same key raced in: the winner
        if existing is None:
            raise
        return existing, False


def update_notice(session: Session, actor: Actor, notice_id: int, data: dict[str, Any]) -> Notice:
    notice = _get(session, notice_id, lock=True)
    if notice.status != NoticeStatus.DRAFT.value:
        raise Conflict("通知已发布，不能再修改。", code="already_published")
    v = _clean(session, data, notice)
    _check_activity(session, v)
    # From/to pairs (the summary, up to 2000 characters, by name): who the draft was meant for, and what it said.
    changes = {k: [getattr(notice, k), val] if k != "summary" else "changed" for k, val in v.items()
               if getattr(notice, k) != val}
    if not changes:
        return notice  # saved as it was (the edit form sent back unchanged): nothing to record
    for k, val in v.items():
        setattr(notice, k, val)
    audit(session, actor, "notice.updated", notice, changes=changes)
    return notice


def _get(session: Session, notice_id: int, *, lock: bool = False) -> Notice:
    stmt = select(Notice).where(Notice.id == notice_id)
    if lock:
        stmt = stmt.with_for_update()
    notice = session.scalar(stmt.execution_options(populate_existing=True))
    if notice is None:
        raise NotFound("没有找到这条通知。")
    return notice


# --- audience and reach --------------------------------------------------------------------------------

def audience_select(session: Session, audience: dict[str, Any]):
    """select(User.id) of everyone the audience rule names (every given criterion must hold)."""
    stmt = select(User.id).where(User.blocked.is_(False))
    verified = User.binding_state == BindingState.VERIFIED.value
    if audience.get("categories"):
        stmt = stmt.where(User.id.in_(select(CategorySubscription.user_id)
                                      .where(CategorySubscription.category.in_(audience["categories"]))))
    if audience.get("building_ids"):
        bids = audience["building_ids"]
        stmt = stmt.where(or_(User.building_id.in_(bids),
                              and_(verified, User.enterprise_id.in_(select(Enterprise.id)
                                                                    .where(Enterprise.building_id.in_(bids))))))
    if audience.get("industries"):
        stmt = stmt.where(verified, User.enterprise_id.in_(select(Enterprise.id)
                                                           .where(Enterprise.industry.in_(audience["industries"]))))
    if audience.get("tags"):
        wanted = set(audience["tags"])
        ids = [eid for eid, tags in session.execute(select(Enterprise.id, Enterprise.tags)) if wanted & set(tags or [])]
        stmt = stmt.where(verified, User.enterprise_id.in_(ids or [-1]))
    if audience.get("verified_only"):
        stmt = stmt.where(verified, User.enterprise_id.is_not(None))
    if audience.get("registrants_of"):
        stmt = stmt.where(User.id.in_(select(Registration.user_id).where(
            Registration.activity_id == audience["registrants_of"], Registration.status.in_(ACTIVE_STATUSES))))
    return stmt


def _has_credit(template_id: str):
    return select(SubscribeCredit.user_id).where(
        SubscribeCredit.template_id == template_id, SubscribeCredit.banned.is_(False),
        or_(SubscribeCredit.long_term.is_(True), SubscribeCredit.credits > 0))


def _template_at_publish(session: Session, notice: Notice) -> tuple[str, bool]:
    """(template id, whether it has values to send) a draft would be published with now: the template configured
    now, as publish() decides, not the one configured when the draft was written."""
    from .kinds import get_kind

    kind = get_kind(NOTICE_KIND)
    template_id = kind.template_id if kind else ""
    if not template_id or notice.template_fields:
        return template_id, bool(notice.template_fields)
    try:
        return template_id, bool(_template_data(notice.title, notice.summary or "", {},
                                                _activity_start(session, notice.activity_id)))
    except ValidationError:
        return template_id, False


def reach(session: Session, notice: Notice) -> dict[str, int]:
    """How many users the notice reaches; how many can get a subscribe message; how many only the inbox."""
    ids = audience_select(session, notice.audience or {}).subquery()
    total = session.scalar(select(func.count()).select_from(ids)) or 0
    subscribe = 0
    template_id, sends = notice.template_id, bool(notice.template_fields)
    if notice.status == NoticeStatus.DRAFT.value:
        template_id, sends = _template_at_publish(session, notice)
    if template_id and sends:
        subscribe = session.scalar(select(func.count()).select_from(ids).where(
            ids.c.id.in_(_has_credit(template_id)))) or 0
    return {"recipients": total, "subscribe": subscribe, "inbox_only": total - subscribe}


# --- test send and publish -----------------------------------------------------------------------------

def set_test_recipient(session: Session, actor: Actor, user_id: int | None) -> None:
    """Set (or clear, with None) the user the staff member's test sends go to; audited, since they reach a user."""
    row = session.get(StaffTestRecipient, actor.id)
    previous = row.user_id if row is not None else None
    if user_id is None:
        if row is not None:
            session.delete(row)
            audit(session, actor, "notice.test_recipient_cleared", user_id=None, previous=previous)
        return
    if session.get(User, user_id) is None:
        raise ValidationError("没有这个用户。", fields={"user_id": "没有这个用户"})
    if row is None:
        session.add(StaffTestRecipient(staff_id=actor.id, user_id=user_id))
    else:
        row.user_id = user_id
    audit(session, actor, "notice.test_recipient_set", user_id=user_id, previous=previous)


# Linking a staff member's own WeChat by a code they send from it, instead of typing a user number (a typo there
# sends test notices and 办不成事 alerts to a stranger).
LINK_CODE_TTL = 600
LINK_TRIES = 5  # wrong codes a WeChat user may send in LINK_CODE_TTL
_LINK_CODE = "staff-link:code:{}"
_LINK_OF = "staff-link:staff:{}"
_LINK_TRIES = "staff-link:tries:{}"


def issue_link_code(client: redis.Redis, staff_id: int) -> str:
    """A fresh 6-digit code (10 minutes, single use) that links whoever sends it to this staff member; the
    previous unused code of the same staff member stops working."""
    for _ in range(20):
        code = f"{secrets.randbelow(900_000) + 100_000}"
        if client.set(_LINK_CODE.format(code), staff_id, nx=True, ex=LINK_CODE_TTL):
            break
    else:  # pragma: no cover - a million codes, ten minutes each
        raise Conflict("绑定码生成失败，请稍后重试。")
    old = client.getset(_LINK_OF.format(staff_id), code)
    client.expire(_LINK_OF.format(staff_id), LINK_CODE_TTL)
    if old and (old.decode() if isinstance(old, bytes) else str(old)) != code:
        client.delete(_LINK_CODE.format(old.decode() if isinstance(old, bytes) else old))
    return code


def redeem_link_code(session: Session, client: redis.Redis, code: str, user_id: int) -> StaffUser | str:
    """The staff member a code links the sending user to (now their test recipient, audited), or a Chinese
    reason it did not: a wrong or used code, or too many wrong codes from this user."""
    # Counted before the code is tried, in one step: read first and raised after, guesses sent together all
    # read the count before any raised it, and none was stopped.
    tries_key = _LINK_TRIES.format(user_id)
    pipe = client.pipeline()
    pipe.incr(tries_key)
    pipe.ttl(tries_key)
    tries, ttl = pipe.execute()
    if tries == 1 or ttl < 0:
        client.expire(tries_key, LINK_CODE_TTL)
    if tries > LINK_TRIES:
        return "绑定码输错次数太多，请 10 分钟后再试。"
    # “绑定 ７９２０８４” from a Chinese keyboard's full-width digits (the chat takes any digit) is the same code: it
    # was looked up as typed, answered “绑定码不对或已过期” and counted as a wrong code.
    code = "".join(str(unicodedata.decimal(c, "")) for c in code.strip())
    raw = client.getdel(_LINK_CODE.format(code))
    staff = session.get(StaffUser, int(raw)) if raw else None
    if staff is None or not staff.active:
        return "绑定码不对或已过期，请在工作台“通知推送”页重新生成。"
    client.decr(tries_key)  # only wrong codes count
    client.delete(_LINK_OF.format(staff.id))
    set_test_recipient(session, Actor("staff", staff.id, staff.role, staff.department, staff.username), user_id)
    return staff


def _values_at_publish(session: Session, notice: Notice) -> dict[str, Any]:
    """The template values publish() gives a draft now (and so the values its test send shows)."""
    try:
        made = _template_data(notice.title, notice.summary or "", {}, _activity_start(session, notice.activity_id))
    except ValidationError:
        made = {}  # the template's values cannot be made from this text: the staff member's own ones go as they are
    given = dict(notice.template_fields or {})
    # No values at all: the draft was written while notices had no template ("" in NOTIFY_TEMPLATES), so nothing
    # could be made then; made now, with the template configured since, or its subscribers got the inbox only.
    if made and (not given or _made_from_text(notice)):
        return made  # its time value says when it was sent, not when the draft was started
    if given and made.keys() - given.keys():
        # Values the staff member wrote for some of the template's keys only: WeChat refuses a message that lacks
        # one (47003, for every subscriber). The rest are made from the text.
        return {**{k: val for k, val in made.items() if k not in given}, **given}
    return given


def _fanout_values(session: Session, notice: Notice) -> dict[str, Any]:
    """The template values the fan-out sends for a notice already published."""
    data = dict(notice.template_fields or {})
    start = _activity_start(session, notice.activity_id)
    if start is not None and data and _made_from_text(notice):
        # Its time is the activity's start, made at publishing: an activity moved while the notice goes out (a
        # large audience, a quota wait) invited the rest to the old time. Values staff wrote stay as written.
        data = _with_start(data, start)
    return data


# A double click on 发给自己测试 sent two tests and used two of the staff member's subscribe credits: a second test of
# the same notice by the same staff member within TEST_SEND_WINDOW seconds is refused (the same Idempotency-Key
# answers the first test's result for TEST_KEY_TTL).
TEST_SEND_WINDOW = 30
TEST_KEY_TTL = 86400
_TEST_SENT = "notice-test:sent:{}:{}"
_TEST_KEY = "notice-test:key:{}:{}"


def recent_test_key(staff_id: int, notice_id: int) -> str:
    """The Redis key that holds a staff member's test of a notice for TEST_SEND_WINDOW seconds."""
    return _TEST_SENT.format(staff_id, notice_id)


def send_test(session: Session, actor: Actor, notice_id: int, *,
              idempotency_key: str | None = None) -> dict[str, Any]:
    """Send the notice to the staff member's own linked user only; skipped (with a reason) when none.

    The subscribe message carries the values and the page the notice's fan-out sends (none when the notice has
    none): made through the notice kind, it opened the kind's default page (pages/notice/detail, no id), not what
    subscribers open. A second test of the same notice by the same staff member within TEST_SEND_WINDOW seconds is
    refused (409 test_just_sent); the same `idempotency_key` answers the first result without sending. Both hold
    only for a test that went out: the window is given back when the caller's transaction rolls back (a failed
    commit sent nothing), and the key's result is kept once it has committed. Redis down: refused (503
    test_unavailable), as nothing else stops a double click from sending twice."""
    from .services import notify

    r = current_app.extensions["wxapp"].redis
    notice = _get(session, notice_id)
    kept_key = _TEST_KEY.format(actor.id, idempotency_key) if idempotency_key else None
    try:
        kept = r.get(kept_key) if kept_key else None
    except redis.RedisError as exc:
        raise _test_unavailable(exc) from None
    if kept:
        first = json.loads(kept)
        if first.get("notice_id") != notice.id:
            raise Conflict(f"这个提交编号已用于测试发送另一条通知（编号 {first.get('notice_id')}），没有再发。"
                           "测试这条通知请换一个新的提交编号。", code="idempotency_key_reused",
                           fields={"notice_id": str(first.get("notice_id"))})
        return first["result"]
    link = session.get(StaffTestRecipient, actor.id)
    if link is None:
        return {"sent": False, "reason": "您还没有绑定自己的微信作为测试接收人，已跳过测试发送。请在工作台“通知推送”页"
                                         "点“用我的微信绑定”，按提示在自己的微信里发送绑定码。"}
    window = recent_test_key(actor.id, notice.id)
    # Taken before the send (SET NX: of two presses at once only one goes on), given back if this transaction
    # does not commit; a token of its own, so a late give-back never frees a later press's window.
    token = secrets.token_hex(8)
    try:
        took = r.set(window, token, nx=True, ex=TEST_SEND_WINDOW)
    except redis.RedisError as exc:
        raise _test_unavailable(exc) from None
    if not took:
        raise Conflict(f"这条通知的测试消息刚刚已发给您的测试接收人，请先在手机上查看；为免多用一次订阅消息次数，"
                       f"{TEST_SEND_WINDOW} 秒内不再重复发送，如需再测请稍候再点。", code="test_just_sent")
    result = {"sent": True, "user_id": link.user_id}
    _settle_test_after_transaction(session, r, window, token, kept_key,
                                   json.dumps({"notice_id": notice.id, "result": result}))
    if notice.status == NoticeStatus.DRAFT.value:
        data = _values_at_publish(session, notice)
    else:
        data = _fanout_values(session, notice)
    notify(session, link.user_id, NOTICE_KIND, {"title": notice.title, "note": notice.summary or "点击查看详情"},
           notice.page, title=f"【测试】{notice.title}"[:100], body=notice.summary, ref=f"notice:{notice.id}:test",
           subscribe_message={"data": data, "page": notice.page or ""})
    audit(session, actor, "notice.test_sent", notice, user_id=link.user_id)
    return result


def _test_unavailable(exc: Exception) -> ServiceUnavailable:
    log.warning("test send refused: Redis unavailable (%s: %s)", type(exc).__name__, exc)
    return ServiceUnavailable("暂时无法确认这条通知是否刚测试过（缓存服务连接不上），为免重复发送、多用订阅消息次数，"
                              "这次测试消息没有发出。请稍后再试。", code="test_unavailable")


# Deletes the window only while it still holds this press's token.
_RELEASE_IF_OURS = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _settle_test_after_transaction(session: Session, r: redis.Redis, window: str, token: str,
                                   kept_key: str | None, kept_value: str) -> None:
    """Once the test's transaction ends: committed, keep the Idempotency-Key's result; rolled back (an error in the
    send, a failed commit), give the window back so that the next press sends."""

    settled = False  # listeners stay on the session (removing one while its event runs breaks the dispatch)

    def committed(_session: Session) -> None:
        nonlocal settled
        if settled or session.in_nested_transaction():
            return  # a savepoint released (after_commit fires for it too): wait for the real commit
        settled = True
        if kept_key:
            try:
                r.set(kept_key, kept_value, ex=TEST_KEY_TTL)
            except redis.RedisError as exc:  # the test is sent; a retry with this key within the window gets 409
                log.warning("could not keep a test send's Idempotency-Key (%s: %s)", type(exc).__name__, exc)

    def rolled_back(_session: Session, previous_transaction: Any) -> None:
        nonlocal settled
        if settled or previous_transaction.parent is not None:
            return  # a savepoint inside the test's transaction: the outer one decides
        settled = True
        try:
            r.eval(_RELEASE_IF_OURS, 1, window, token)
        except redis.RedisError as exc:  # nothing was sent; the window ends by itself after TEST_SEND_WINDOW s
            log.warning("could not release a failed test send's window (%s: %s)", type(exc).__name__, exc)

    event.listen(session, "after_commit", committed)
    event.listen(session, "after_soft_rollback", rolled_back)


def _check_still_on(session: Session, notice: Notice) -> None:
    """A notice tied to an activity goes out only while that activity is published: one drafted for an activity a
    colleague has cancelled since invited every subscriber to it, and one about an activity still a draft opened
    “没有找到这个活动” on the worker's tap."""
    activity = session.get(Activity, notice.activity_id) if notice.activity_id is not None else None
    if activity is None:
        return
    if activity.status == ActivityStatus.CANCELLED.value:
        raise Conflict(f"相关活动“{activity.title}”已取消，这条通知没有发出。如需告诉订阅者活动取消了，请另建一条"
                       "不关联活动的通知（已报名的人已自动收到取消通知）。", code="activity_cancelled")
    if activity.status == ActivityStatus.DRAFT.value:
        raise Conflict(f"相关活动“{activity.title}”还是草稿，用户点开通知会看到“没有找到这个活动”。请先发布活动，"
                       "再发布这条通知。", code="activity_not_published")


def publish(session: Session, actor: Actor, notice_id: int) -> Notice:
    """Start the fan-out; publishing twice changes nothing. An empty audience is refused (422), so is a notice
    about an activity cancelled or still a draft (409)."""
    from .kinds import get_kind

    notice = _get(session, notice_id, lock=True)
    if notice.status == NoticeStatus.STOPPED.value:
        raise Conflict(STOPPED_FOR_GOOD, code="notice_stopped")
    if notice.status != NoticeStatus.DRAFT.value:
        return notice
    _check_still_on(session, notice)
    values = _values_at_publish(session, notice)
    if values != (notice.template_fields or {}):
        # Made for the template configured now (NOTIFY_TEMPLATES is re-read when it changes): a draft written before
        # a template was configured or replaced went out under the old id, which nobody holds credit for. The id is
        # set below, with the staff member's own values.
        notice.template_fields = values
    kind = get_kind(NOTICE_KIND)
    if notice.template_fields:
        # The staff member's own values go with the template configured now too: kept under the id the draft was
        # started with, they went to nobody (no one holds credit for a replaced template) or with the wrong keys.
        unknown = _unknown_template_keys(kind, notice.template_fields)
        if unknown and notice.template_id != kind.template_id:
            raise Conflict(f"订阅消息模板已更换，草稿里填写的字段 {'、'.join(unknown[:5])} 新模板没有（新模板的字段是 "
                           f"{'、'.join(kind.fields)}），这条通知没有发出。请在编辑页按新模板重新填写订阅消息字段后再发布。",
                           code="template_changed", fields={f"template_fields.{k}": "新模板没有这个字段"
                                                            for k in unknown[:20]})
        _check_template_keys(kind, notice.template_fields)
        notice.template_id = kind.template_id if kind else ""
    estimate = reach(session, notice)
    if estimate["recipients"] == 0:
        raise ValidationError("推送对象为空：没有符合条件的用户，请调整推送对象。", code="empty_audience",
                              fields={"audience": "没有符合条件的用户"})
    notice.status = NoticeStatus.EXPANDING.value
    notice.published_by = actor.id
    notice.published_at = utcnow()
    audit(session, actor, "notice.published", notice, **estimate)
    enqueue_after_commit(session, expand_notice, notice.id, job_id=f"notice-expand-{notice.id}-0")
    enqueue_after_commit(session, fanout_tick, job_id=f"fanout-tick-{int(time.time() // 60)}", delay=60)
    return notice



def stop(session: Session, actor: Actor, notice_id: int) -> tuple[Notice, bool]:
    """Stop a notice going out (停止发送): (notice, whether this call stopped it). Nobody more gets it: the rows not
    yet handed to WeChat are skipped as 已停止发送 with their credit kept (the send jobs skip the rest of the chunk in
    hand, giving its credit back), the expansion writes nobody more, and it is never resumed. Stopping again changes
    nothing (a double click); a draft or a finished notice is a 409."""
    notice = _get(session, notice_id, lock=True)
    if notice.status == NoticeStatus.STOPPED.value:
        return notice, False
    if notice.status == NoticeStatus.DRAFT.value:
        raise Conflict("这条通知还是草稿，尚未发送，无需停止（不发布就不会发出）。", code="not_sending")
    if notice.status == NoticeStatus.DONE.value:
        raise Conflict("这条通知已全部发送完成，无法停止。", code="already_finished")
    notice.status = NoticeStatus.STOPPED.value
    notice.finished_at = utcnow()
    # 'pending' and 'claimed' rows hold no credit (it is taken when a chunk moves to 'sending'); a claim racing this
    # waits for the row locks and then finds them skipped.
    skipped = len(session.scalars(update(OutboxRow).where(
        OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
        OutboxRow.status.in_((OutboxStatus.PENDING.value, OutboxStatus.CLAIMED.value)))
        .values(status=OutboxStatus.SKIPPED.value, lease_token=None, detail=STOPPED_DETAIL)
        .returning(OutboxRow.id).execution_options(synchronize_session=False)).all())
    reached = session.scalar(select(func.count()).where(
        OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
        OutboxRow.status == OutboxStatus.SENT.value)) or 0
    in_flight = session.scalar(select(func.count()).where(
        OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
        OutboxRow.status == OutboxStatus.SENDING.value)) or 0
    audit(session, actor, "notice.stopped", notice, reached=reached, in_flight=in_flight, skipped=skipped,
          inbox=notice.recipients)
    # Set before the commit: a worker that sees it waits on the notice lock for the verdict (_stop_rest), so the
    # sends between the commit and a flag set afterwards do not go out.
    current_app.extensions["wxapp"].redis.set(STOP_FLAG.format(notice_id), 1, ex=STOP_FLAG_TTL)
    return notice, True


# --- fan-out -------------------------------------------------------------------------------------------

def _dialect_insert(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert


def _expand_range(s: Session, notice: Notice, lo: int, hi: int, now: datetime) -> tuple[int, int]:
    """Outbox and inbox rows for the audience users with lo < id <= hi, set-based (INSERT ... SELECT ...
    ON CONFLICT DO NOTHING; only the new rows' ids come back, to be counted). Returns (inbox rows, subscribe rows)
    inserted."""
    ins = _dialect_insert(s)
    cols = OutboxRow.__table__.c
    aud = audience_select(s, notice.audience or {}).where(User.id > lo, User.id <= hi).subquery()
    # Rows this statement inserts get ids above every committed id (we hold the notice lock, so no other
    # expansion of this notice runs): that is how the inbox items go to the rows actually inserted only.
    before = s.scalar(select(func.max(OutboxRow.id))) or 0
    # (rowcount is -1 for INSERT ... SELECT with psycopg here: count what RETURNING gives back instead)
    inbox = len(s.execute(ins(OutboxRow.__table__).from_select(
        ["notice_id", "user_id", "channel", "status", "sent_at"],
        select(literal(notice.id, Integer), aud.c.id, literal("inbox", String), literal(OutboxStatus.SENT.value, String),
               literal(now, cols.sent_at.type)).where(aud.c.id > lo))  # (SQLite: an upsert's SELECT needs a WHERE)
        .on_conflict_do_nothing(index_elements=["notice_id", "user_id", "channel"]).returning(cols.id)).all())
    if inbox:
        s.execute(insert(InboxItem.__table__).from_select(
            ["user_id", "kind", "title", "body", "page", "ref", "created_at"],
            select(OutboxRow.user_id, literal(NOTICE_KIND, String), literal(notice.title[:100], String),
                   literal(notice.summary or "", Text), literal(notice.page or "", String),
                   literal(f"notice:{notice.id}", String), literal(now, InboxItem.__table__.c.created_at.type))
            .where(OutboxRow.notice_id == notice.id, OutboxRow.channel == "inbox", OutboxRow.id > before,
                   OutboxRow.user_id > lo, OutboxRow.user_id <= hi)))  # (either index bounds the scan)
    subscribe = 0
    if notice.template_id and notice.template_fields:
        subscribe = len(s.execute(ins(OutboxRow.__table__).from_select(
            ["notice_id", "user_id", "channel", "status"],
            select(literal(notice.id, Integer), aud.c.id, literal("subscribe", String),
                   literal(OutboxStatus.PENDING.value, String))
            .where(aud.c.id > lo, aud.c.id.in_(_has_credit(notice.template_id))))
            .on_conflict_do_nothing(index_elements=["notice_id", "user_id", "channel"]).returning(cols.id)).all())
    return inbox, subscribe


def _start_senders(s: Session, notice_id: int) -> None:
    for slot in range(int(_cfg("fanout_jobs", DEFAULT_JOBS))):
        enqueue_after_commit(s, send_notice, notice_id, slot, 0, job_id=f"notice-send-{notice_id}-{slot}-0",
                             timeout=600)


def expand_notice(notice_id: int, batch: int | None = None) -> int:
    """Write the outbox in id ranges of `batch` audience users (one transaction each, resumable), set-based.

    The send jobs start as soon as the first subscribe rows are committed, so sending overlaps the rest of
    the expansion (the claim only sees committed rows; a send job keeps polling while the notice expands).
    """
    batch = batch or int(_cfg("fanout_expand_batch", EXPAND_BATCH))
    written = 0
    senders_started: bool | None = None
    while True:
        with session_scope() as s:
            notice = _get(s, notice_id, lock=True)
            if notice.status != NoticeStatus.EXPANDING.value:
                return written
            if senders_started is None:  # a resumed expansion: the first run started them (or the sweeper will)
                senders_started = s.scalar(select(OutboxRow.id).where(
                    OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe").limit(1)) is not None
            window = (audience_select(s, notice.audience or {}).where(User.id > notice.expand_cursor)
                      .order_by(User.id).limit(batch).subquery())
            # The activity the notice invites to was cancelled (or taken back to draft) since it was published: the
            # users not yet written get no inbox invitation either (the send jobs skip the subscribe rows written).
            gone = _activity_gone(s, notice.activity_id)
            hi = None if gone else s.scalar(select(func.max(window.c.id)))
            if hi is None:
                if gone:
                    log.info("notice expansion stopped: its activity is gone", extra={"notice_id": notice_id})
                open_rows = s.scalar(select(OutboxRow.id).where(
                    OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
                    OutboxRow.status.not_in(TERMINAL)).limit(1))
                if open_rows is None:
                    _finish(s, notice)  # nothing (left) to send: done
                else:
                    notice.status = NoticeStatus.SENDING.value
                    if not senders_started:
                        _start_senders(s, notice_id)
                return written
            inbox, subscribe = _expand_range(s, notice, notice.expand_cursor, hi, utcnow())
            if subscribe and not senders_started:
                _start_senders(s, notice_id)
                senders_started = True
            notice.expand_cursor = hi
            notice.recipients += inbox
            written += inbox


def _claim(notice_id: int, limit: int) -> tuple[str, list[tuple[int, int, str]]]:
    """Lease up to `limit` due pending rows: (lease token, [(row id, user id, openid)])."""
    token = secrets.token_hex(8)
    with session_scope() as s:
        now = utcnow()
        ids = list(s.scalars(select(OutboxRow.id).where(
            OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
            OutboxRow.status == OutboxStatus.PENDING.value,
            or_(OutboxRow.next_attempt_at.is_(None), OutboxRow.next_attempt_at <= now))
            .order_by(OutboxRow.id).limit(limit).with_for_update(skip_locked=True)))
        if not ids:
            return token, []
        s.execute(update(OutboxRow).where(OutboxRow.id.in_(ids), OutboxRow.status == OutboxStatus.PENDING.value)
                  .values(status=OutboxStatus.CLAIMED.value, lease_token=token, claimed_at=now)
                  .execution_options(synchronize_session=False))
        # The audience again, for these users only: one who unsubscribed from the category or was blocked since
        # the expansion (a retry can come hours later) is left out, their credit unspent.
        audience, activity_id, status = s.execute(select(Notice.audience, Notice.activity_id, Notice.status)
                                                  .where(Notice.id == notice_id)).one()
        audience = audience or {}
        # Stopped by staff: rows given back after the stop (a retry, an error of ours) are not sent either.
        gone = STOPPED_DETAIL if status == NoticeStatus.STOPPED.value else _activity_gone(s, activity_id)
        if gone:
            # The activity the notice invites to was cancelled (or taken back to draft) while it went out: the rest
            # are not pushed (their inbox rows are there already), their credits left for a message they want.
            s.execute(update(OutboxRow).where(OutboxRow.id.in_(ids), OutboxRow.lease_token == token,
                                              OutboxRow.status == OutboxStatus.CLAIMED.value)
                      .values(status=OutboxStatus.SKIPPED.value, lease_token=None, detail=gone)
                      .execution_options(synchronize_session=False))
            return token, []
        leased = select(OutboxRow.user_id).where(OutboxRow.id.in_(ids), OutboxRow.lease_token == token)
        s.execute(update(OutboxRow).where(
            OutboxRow.id.in_(ids), OutboxRow.lease_token == token, OutboxRow.status == OutboxStatus.CLAIMED.value,
            OutboxRow.user_id.not_in(audience_select(s, audience).where(User.id.in_(leased))))
            .values(status=OutboxStatus.SKIPPED.value, lease_token=None, detail=LEFT_AUDIENCE)
            .execution_options(synchronize_session=False))
        rows = s.execute(select(OutboxRow.id, OutboxRow.user_id, User.openid).join(User, User.id == OutboxRow.user_id)
                         .where(OutboxRow.id.in_(ids), OutboxRow.lease_token == token,
                                OutboxRow.status == OutboxStatus.CLAIMED.value)
                         .order_by(OutboxRow.id)).all()
    return token, [tuple(r) for r in rows]


def _activity_gone(s: Session, activity_id: int | None) -> str | None:
    """Why a notice's remaining sends stop because of its activity (cancelled, or back to draft), else None."""
    status = s.scalar(select(Activity.status).where(Activity.id == activity_id)) if activity_id else None
    if status == ActivityStatus.CANCELLED.value:
        return "相关活动已取消，未发送"
    if status == ActivityStatus.DRAFT.value:
        return "相关活动已改回草稿，未发送"
    return None


def _fenced(row_id: int, token: str, status: str):
    return update(OutboxRow).where(OutboxRow.id == row_id, OutboxRow.lease_token == token,
                                   OutboxRow.status == status).execution_options(synchronize_session=False)


class RateLimiter:
    """Global GCRA limiter shared by every worker on every machine: one Lua script on the shared Redis.

    Redis's own clock (TIME) is used, so machines with skewed clocks still share one pace. Losing the key
    (a Redis restart) only allows one burst; it never causes a duplicate (the database decides that).
    """

    SCRIPT = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local interval = tonumber(ARGV[1])
    local tolerance = tonumber(ARGV[2])
    local tat = tonumber(redis.call('GET', KEYS[1]) or now)
    if tat < now then tat = now end
    local allow_at = tat - tolerance
    if now < allow_at then return allow_at - now end
    local new_tat = tat + interval
    redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1000)
    return 0
    """

    def __init__(self, client: redis.Redis, rate: float, burst: int = 1, key: str = LIMITER_KEY) -> None:
        self.key = key
        self.interval = max(int(1_000_000 / rate), 1)
        self.tolerance = self.interval * max(burst - 1, 0)
        self._script = client.register_script(self.SCRIPT)

    def acquire(self) -> None:
        while True:
            wait_us = int(self._script(keys=[self.key], args=[self.interval, self.tolerance]))
            if wait_us <= 0:
                return
            time.sleep(wait_us / 1_000_000)


def _api():
    from ..wechat.client import WeChatHTTP, build_api

    state = current_app.extensions["wxapp"]
    cached = current_app.extensions.get("wxapp_fanout_api")
    timeout = float(_cfg("fanout_timeout", state.settings.wechat_api_timeout))
    if cached is None or cached[0] != timeout:
        http = WeChatHTTP(state.settings.wechat_api_base, timeout)  # one keep-alive requests.Session
        # No in-call busy retries: a -1 goes back to the outbox with backoff instead of blocking a worker.
        cached = (timeout, build_api("wxa", state.settings, state.redis, http, busy_backoff=()))
        current_app.extensions["wxapp_fanout_api"] = cached
    return cached[1]


IN_FLIGHT = (NoticeStatus.EXPANDING.value, NoticeStatus.SENDING.value)


def send_notice(notice_id: int, slot: int = 0, generation: int = 0) -> dict[str, int]:
    """One fan-out worker's share: claim, pace, send, record; hands over to a fresh job after a while.

    Starts while the notice is still expanding: with nothing to claim yet it polls until the expansion
    commits more rows (or its time budget is spent)."""
    state = current_app.extensions["wxapp"]
    with session_scope() as s:
        notice = _get(s, notice_id)
        if notice.status == NoticeStatus.STOPPED.value:
            _skip_after_stop(s, notice_id)  # a job queued (or restarted) after the stop sends nothing
        if notice.status not in IN_FLIGHT:
            return {}
        template_id, data, page = notice.template_id, _fanout_values(s, notice), notice.page
    rate = float(_cfg("fanout_rate", DEFAULT_RATE))
    limiter = RateLimiter(state.redis, rate, int(_cfg("fanout_burst", 1)))
    # A chunk's rows are 'sending' from its commit until its last send: keep that to ~1 s of the limit per job.
    chunk = max(1, min(int(_cfg("fanout_send_chunk", SEND_CHUNK)), int(rate)))
    api = _api()
    deadline = time.monotonic() + float(_cfg("fanout_job_budget", JOB_BUDGET_SECONDS))
    counts: dict[str, int] = {}
    quota_wait = 0.0
    while True:
        quota_wait = api.quota_wait(SUBSCRIBE_API)
        if quota_wait:  # the daily quota is used up: nothing to send before the cool-down ends
            break
        token, rows = _claim(notice_id, int(_cfg("fanout_claim_batch", CLAIM_BATCH)))
        if not rows:
            with session_scope() as s:
                expanding = s.scalar(select(Notice.status).where(Notice.id == notice_id)) == NoticeStatus.EXPANDING.value
            if expanding and time.monotonic() < deadline:
                time.sleep(EXPAND_POLL)
                continue
            break
        for i in range(0, len(rows), chunk):
            try:
                outcomes = _send_chunk(api, limiter, token, rows[i:i + chunk], template_id, data, page,
                                       notice_id=notice_id)
            except _CredentialRefused as exc:  # the batch's other chunks wait too, untried
                quota_wait = exc.retry_in or 0.5
                counts["held"] = _defer_claimed(token, [r[0] for r in rows[i + chunk:]], quota_wait, exc.wait)
                break
            for outcome in outcomes:
                counts[outcome] = counts.get(outcome, 0) + 1
            if counts.get("stopped") or counts.get("halted"):  # stopped by staff, or refused for everyone (_halt)
                break
            if counts.get("deferred"):  # 45009: the batch's other chunks wait too, untried
                quota_wait = max(api.quota_wait(SUBSCRIBE_API), 1.0)
                counts["deferred"] += _defer_claimed(token, [r[0] for r in rows[i + chunk:]], quota_wait)
                break
        if quota_wait or counts.get("stopped") or counts.get("halted") or time.monotonic() >= deadline:
            break
    _continue(notice_id, slot, generation, not_before=quota_wait)
    return counts


def _claim_credits(s: Session, user_ids: list[int], template_id: str) -> set[int]:
    """credits.claim() for many users in one statement (each user once): the users who had credit."""
    if not user_ids:
        return set()
    return set(s.scalars(
        update(SubscribeCredit)
        .where(SubscribeCredit.user_id.in_(user_ids), SubscribeCredit.template_id == template_id,
               SubscribeCredit.banned.is_(False),
               or_(SubscribeCredit.long_term.is_(True), SubscribeCredit.credits > 0))
        .values(credits=case((SubscribeCredit.long_term.is_(True), SubscribeCredit.credits),
                             else_=SubscribeCredit.credits - 1),
                updated_at=utcnow())
        .returning(SubscribeCredit.user_id)
        .execution_options(synchronize_session=False)))


def _send_chunk(api, limiter: RateLimiter, token: str, rows: list[tuple[int, int, str]], template_id: str,
                data: dict[str, str], page: str, *, notice_id: int | None = None) -> list[str]:
    """Send a few claimed rows: move them ``claimed -> sending`` (fenced by the lease token) with their
    credits in one transaction, send each when the limiter allows, then mark the sent ones in one
    transaction. A crash in between leaves the chunk ``sending``: the sweeper reports those rows as
    "结果未知" and never sends them again."""
    by_id = {r[0]: r for r in rows}
    outcomes: dict[int, str] = {}
    with session_scope() as s:
        moved = set(s.scalars(update(OutboxRow).where(
            OutboxRow.id.in_(list(by_id)), OutboxRow.lease_token == token,
            OutboxRow.status == OutboxStatus.CLAIMED.value)
            .values(status=OutboxStatus.SENDING.value, attempts=OutboxRow.attempts + 1, claimed_at=utcnow())
            .returning(OutboxRow.id).execution_options(synchronize_session=False)))
        for row_id in by_id.keys() - moved:
            outcomes[row_id] = "lost_lease"  # the sweeper took it back; another worker owns it now
        with_credit = _claim_credits(s, [by_id[r][1] for r in moved], template_id)
        no_credit = [r for r in moved if by_id[r][1] not in with_credit]
        if no_credit:
            s.execute(update(OutboxRow).where(OutboxRow.id.in_(no_credit), OutboxRow.lease_token == token,
                                              OutboxRow.status == OutboxStatus.SENDING.value)
                      .values(status=OutboxStatus.SKIPPED.value, detail="没有订阅消息额度（仅站内信）")
                      .execution_options(synchronize_session=False))
            outcomes.update(dict.fromkeys(no_credit, "skipped"))
        _note_moved(token, [r for r in moved if r not in outcomes])
    sent: list[dict[str, Any]] = []
    called: set[int] = set()
    renewed = time.monotonic()
    try:
        for row_id, user_id, openid in rows:
            if row_id in outcomes:
                continue
            if time.monotonic() - renewed > LEASE_SECONDS / 3:
                # A slow WeChat (timeouts, busy retries) can make a chunk outlast its lease; renewing it keeps
                # the sweeper from reporting rows as 结果未知 that this worker is still sending, and a row the
                # sweeper took meanwhile is not sent.
                # Every row still 'sending' under our token: the ones sent are marked only at the chunk's end.
                renewed = time.monotonic()
                lost = _renew(token, [r[0] for r in rows]) - outcomes.keys()
                outcomes.update(dict.fromkeys(lost, "lost_lease"))
                if row_id in outcomes:
                    continue
            # A token per send, taken right before the call: booking a chunk's slots ahead saved round trips
            # but let a worker that fell behind its slots (CPU, a commit) catch up in a burst over the limit.
            limiter.acquire()
            if notice_id is not None and _stop_flagged(notice_id) and _stop_rest(
                    notice_id, token, [(r[0], r[1]) for r in rows if r[0] not in outcomes], template_id):
                # Stopped by staff while this chunk went out: the rows not yet handed to WeChat are skipped.
                outcomes.update({r[0]: "stopped" for r in rows if r[0] not in outcomes})
                break
            if not _mark_called(token, row_id):  # the sweeper took it back (this worker stalled past its lease)
                outcomes[row_id] = "lost_lease"
                continue
            at = utcnow()
            called.add(row_id)
            try:
                resp = api.send_subscribe(openid, template_id, data, page)
            except QuotaReached as exc:
                # The daily quota is used up: the rest of the chunk is not sent either (each would be refused and
                # spend a try); it goes back to 'pending' untried, for when the cool-down ends.
                if exc.called:
                    outcomes[row_id] = _record_error(row_id, token, user_id, template_id, exc.errcode, exc.errmsg,
                                                     retry_in=exc.retry_in)
                else:
                    called.discard(row_id)
                untried = [(r[0], r[1]) for r in rows if r[0] not in outcomes and r[0] not in called]
                _give_back(token, untried, template_id, retry_in=exc.retry_in)
                outcomes.update(dict.fromkeys((r for r, _ in untried), "deferred"))
                break
            except WeChatAPIError as exc:
                if exc.credential:
                    # Every other row would meet the same refusal: the row and the rest of the chunk wait, untried
                    # (WeChat took none of them), their credits given back, and the batch stops (send_notice).
                    retry_in = float(_cfg("fanout_backoff_override", CREDENTIAL_BACKOFF))
                    wait = _credential_wait_values(exc.errcode, retry_in)
                    log.error("fan-out stopped: WeChat would not take the access token",
                              extra={"alert": True, "errcode": exc.errcode, "errmsg": exc.errmsg, "api": exc.api})
                    held = [(r[0], r[1]) for r in rows if r[0] not in outcomes]
                    _give_back(token, held, template_id, wait=wait)
                    outcomes.update(dict.fromkeys((r for r, _ in held), "held"))
                    raise _CredentialRefused(wait, retry_in) from None
                outcomes[row_id] = _record_error(row_id, token, user_id, template_id, exc.errcode, exc.errmsg)
                if exc.errcode in NOTICE_WIDE and notice_id is not None:
                    untried = [(r[0], r[1]) for r in rows if r[0] not in outcomes and r[0] not in called]
                    _give_back(token, untried, template_id)  # pending again, credit back: failed with the rest
                    outcomes.update(dict.fromkeys((r for r, _ in untried), "halted"))
                    outcomes[row_id] = "halted"
                    _halt(notice_id, exc.errcode)
                    break
                continue
            except TemplateFieldError as exc:
                outcomes[row_id] = _record_error(row_id, token, user_id, template_id, 47003, str(exc))
                continue
            sent.append({"rid": row_id, "at": at, "msgid": msgid_of(resp)})
            outcomes[row_id] = "sent"
    except Exception:
        # An error of ours (Redis for the limiter, the database) and no kill: the rows after it never reached
        # WeChat, so they go back to 'pending' with their credit instead of waiting to be reported 结果未知.
        _give_back(token, [(r[0], r[1]) for r in rows if r[0] not in outcomes and r[0] not in called], template_id)
        raise
    finally:
        if sent:  # one transaction for the chunk's sent marks (each keeps its own send time)
            t = OutboxRow.__table__  # Core executemany (the ORM's bulk UPDATE would match by primary key only)
            with session_scope() as s:
                s.execute(update(t).where(t.c.id == bindparam("rid"), t.c.lease_token == token,
                                          t.c.status == OutboxStatus.SENDING.value)
                          .values(status=OutboxStatus.SENT.value, sent_at=bindparam("at"), errcode=0, detail="",
                                  msgid=bindparam("msgid")), sent)
                # WeChat's delivery reports that came while the chunk was still going (credits.apply_sent_event).
                early = credits.take_early_reports((by_id[x["rid"]][1], x["msgid"]) for x in sent)
                for x in sent:
                    if x["msgid"] in early:
                        s.execute(update(t).where(t.c.id == x["rid"], t.c.msgid == x["msgid"])
                                  .values(delivery=early[x["msgid"]]))
        unsent = {r: by_id[r][1] for r in moved if outcomes.get(r) == "lost_lease" and r not in called}
        if unsent:
            _reclaim_unsent(token, unsent, template_id)
    return [outcomes[r[0]] for r in rows if r[0] in outcomes]


def _note_moved(token: str, row_ids: list[int]) -> None:
    """Record (CALLED_KEY) that these rows, just moved to 'sending' under `token`, are not yet handed to WeChat. Without
    the record (Redis failing) they are sent all the same, and a kill leaves them 结果未知, as before."""
    if not row_ids:
        return
    try:
        pipe = current_app.extensions["wxapp"].redis.pipeline(transaction=True)
        pipe.hset(CALLED_KEY.format(token), mapping=dict.fromkeys(row_ids, "0"))
        pipe.expire(CALLED_KEY.format(token), CALLED_TTL)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("fan-out could not note its chunk's rows (%s: %s)", type(exc).__name__, exc)


def _mark_called(token: str, row_id: int) -> bool:
    """Right before WeChat is called for a row: False when the sweeper took it back. A Redis error propagates (the row
    is not sent: the chunk's unsent rows are given back)."""
    r = current_app.extensions["wxapp"].redis
    return bool(r.register_script(_MARK_CALLED)(keys=[CALLED_KEY.format(token)], args=[row_id]))


def _take_uncalled(token: str | None, row_ids: list[int]) -> set[int]:
    """The sweeper: which of these expired 'sending' rows of `token` were never handed to WeChat (none when unknown)."""
    if not token:
        return set()
    try:
        r = current_app.extensions["wxapp"].redis
        got = r.register_script(_TAKE_UNCALLED)(keys=[CALLED_KEY.format(token)], args=row_ids)
    except redis.RedisError as exc:
        log.warning("fan-out sweeper could not read which rows were sent (%s: %s)", type(exc).__name__, exc)
        return set()
    return {int(x) for x in got}


def _halt(notice_id: int, errcode: int) -> None:
    """WeChat refused the notice's template or page (NOTICE_WIDE): every row not yet sent fails with the reason, untried
    (no credit is held by them), instead of each being refused in turn. Rows other workers hold already in 'sending'
    finish as they go; rows the expansion writes later are tried once and halt again."""
    reason = PERMANENT_REASONS.get(errcode, "微信拒绝发送")
    detail = f"{reason}（{errcode}），这条通知的订阅消息都会被拒绝，其余未再发送；请改正后新建一条通知"
    with session_scope() as s:
        failed = len(s.scalars(update(OutboxRow).where(
            OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
            OutboxRow.status.in_((OutboxStatus.PENDING.value, OutboxStatus.CLAIMED.value)))
            .values(status=OutboxStatus.FAILED.value, lease_token=None, errcode=errcode, detail=detail[:200])
            .returning(OutboxRow.id).execution_options(synchronize_session=False)).all())
        audit(s, Actor("system", "system"), "notice.send_halted", s.get(Notice, notice_id), errcode=errcode,
              reason=reason, failed=failed)
    log.error("fan-out halted: WeChat refuses the notice for every subscriber",
              extra={"alert": True, "notice_id": notice_id, "errcode": errcode, "failed": failed})


def _stop_flagged(notice_id: int) -> bool:
    return bool(current_app.extensions["wxapp"].redis.exists(STOP_FLAG.format(notice_id)))


def _stop_rest(notice_id: int, token: str, rows: list[tuple[int, int]], template_id: str) -> bool:
    """The stop flag is up: wait for the stop's transaction (the notice lock) and, if the notice is stopped, skip this
    chunk's rows not yet sent as 已停止发送, their credit given back. A flag left by a stop that did not commit is
    dropped (False: carry on sending)."""
    with session_scope() as s:
        if _get(s, notice_id, lock=True).status != NoticeStatus.STOPPED.value:
            current_app.extensions["wxapp"].redis.delete(STOP_FLAG.format(notice_id))
            return False
        users = dict(rows)
        back = s.scalars(update(OutboxRow).where(
            OutboxRow.id.in_(list(users)), OutboxRow.lease_token == token,
            OutboxRow.status == OutboxStatus.SENDING.value)
            .values(status=OutboxStatus.SKIPPED.value, lease_token=None, detail=STOPPED_DETAIL,
                    attempts=OutboxRow.attempts - 1)
            .returning(OutboxRow.id).execution_options(synchronize_session=False)).all()
        for row_id in back:
            credits.refund(s, users[row_id], template_id)
    return True


def _skip_after_stop(s: Session, notice_id: int) -> None:
    """Rows of a stopped notice that became 'pending' again after the stop (a retry after an error, rows given back):
    skipped as 已停止发送 (they hold no credit)."""
    s.execute(update(OutboxRow).where(
        OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
        OutboxRow.status.in_((OutboxStatus.PENDING.value, OutboxStatus.CLAIMED.value)))
        .values(status=OutboxStatus.SKIPPED.value, lease_token=None, detail=STOPPED_DETAIL)
        .execution_options(synchronize_session=False))


def _reclaim_unsent(token: str, rows: dict[int, int], template_id: str) -> None:
    """Rows of this worker's chunk ({row id: user id}) it had moved to 'sending' under `token`, with their credits, but
    not yet sent when the sweeper took their lease (the worker stalled past it): the sweeper failed them as 结果未知, for
    good and with the credit spent, though WeChat never had them. Their credit is given back, and while the notice is
    still sending they are pending again (sent once, later); otherwise they stay failed, saying they were not sent.

    Only a row failed under this worker's own lease (the sweeper keeps the token on it): this worker knows it never
    called WeChat for it under that lease, and nobody else could. A row the sweeper had given back earlier may have
    gone to another worker since, been handed to WeChat by it and failed as 结果未知 under *that* lease; taking it
    back made it pending again and sent it a second time."""
    try:
        with session_scope() as s:
            notice_id = s.scalar(select(OutboxRow.notice_id).where(OutboxRow.id == next(iter(rows))))
            in_flight = s.scalar(select(Notice.status).where(Notice.id == notice_id)) in IN_FLIGHT
            values: dict[str, Any] = (
                {"status": OutboxStatus.PENDING.value, "errcode": 0, "detail": "",
                 "attempts": OutboxRow.attempts - 1} if in_flight else
                {"detail": "发送进程停顿超时，未发送（订阅消息额度已退回）"})
            back = s.scalars(update(OutboxRow).where(
                OutboxRow.id.in_(list(rows)), OutboxRow.status == OutboxStatus.FAILED.value,
                OutboxRow.errcode == UNKNOWN_RESULT, OutboxRow.lease_token == token)
                .values(lease_token=None, **values).returning(OutboxRow.id).execution_options(synchronize_session=False)).all()
            for row_id in back:
                credits.refund(s, rows[row_id], template_id)
    except Exception:  # noqa: BLE001 - they stay failed as 结果未知 (at most once), as before
        log.exception("fan-out could not take back rows it never sent", extra={"rows": len(rows)})


def _give_back(token: str, rows: list[tuple[int, int]], template_id: str, *, retry_in: float | None = None,
               wait: dict[str, Any] | None = None) -> None:
    """Rows moved to 'sending' under `token` that were never sent: 'pending' again, their credits refunded (not before
    `retry_in` seconds when given: the daily quota's cool-down)."""
    if not rows:
        return
    users = dict(rows)
    values: dict[str, Any] = {"status": OutboxStatus.PENDING.value, "lease_token": None,
                              "attempts": OutboxRow.attempts - 1}
    if retry_in is not None:
        values.update(_quota_wait_values(retry_in))
    values.update(wait or {})
    try:
        with session_scope() as s:
            back = s.scalars(update(OutboxRow).where(
                OutboxRow.id.in_(list(users)), OutboxRow.lease_token == token,
                OutboxRow.status == OutboxStatus.SENDING.value)
                .values(**values)
                .returning(OutboxRow.id).execution_options(synchronize_session=False)).all()
            for row_id in back:
                credits.refund(s, users[row_id], template_id)
    except Exception:  # noqa: BLE001 - the rows stay 'sending'; the sweeper reports them (at most once)
        log.exception("fan-out could not give back unsent rows", extra={"rows": len(rows)})


def _quota_wait_values(retry_in: float) -> dict[str, Any]:
    delay = float(_cfg("fanout_backoff_override", retry_in))
    return {"errcode": QUOTA, "detail": QUOTA_WAIT_DETAIL, "next_attempt_at": utcnow() + timedelta(seconds=delay)}


def _credential_wait_values(errcode: int, retry_in: float) -> dict[str, Any]:
    return {"errcode": errcode, "next_attempt_at": utcnow() + timedelta(seconds=retry_in),
            "detail": f"微信不接受本小程序的接口调用凭证（{errcode}），请检查 AppID、AppSecret 和 IP 白名单；恢复后自动发送"}


def _defer_claimed(token: str, row_ids: list[int], retry_in: float, wait: dict[str, Any] | None = None) -> int:
    """Rows of this batch still only claimed (no credit taken, never sent) when the daily quota ran out: 'pending'
    again for when its cool-down ends. Returns how many."""
    if not row_ids:
        return 0
    with session_scope() as s:
        return len(s.scalars(update(OutboxRow).where(
            OutboxRow.id.in_(row_ids), OutboxRow.lease_token == token, OutboxRow.status == OutboxStatus.CLAIMED.value)
            .values(status=OutboxStatus.PENDING.value, lease_token=None, **(wait or _quota_wait_values(retry_in)))
            .returning(OutboxRow.id).execution_options(synchronize_session=False)).all())


def _renew(token: str, row_ids: list[int]) -> set[int]:
    """Renew the lease of this chunk's rows still ``sending`` under `token`; returns the rows it no longer holds."""
    with session_scope() as s:
        kept = set(s.scalars(update(OutboxRow).where(
            OutboxRow.id.in_(row_ids), OutboxRow.lease_token == token, OutboxRow.status == OutboxStatus.SENDING.value)
            .values(claimed_at=utcnow()).returning(OutboxRow.id).execution_options(synchronize_session=False)))
    return set(row_ids) - kept


def _send_one(api, limiter: RateLimiter, row_id: int, token: str, user_id: int, openid: str, template_id: str,
              data: dict[str, str], page: str) -> str:
    return _send_chunk(api, limiter, token, [(row_id, user_id, openid)], template_id, data, page)[0]


def _record_error(row_id: int, token: str, user_id: int, template_id: str, errcode: int, errmsg: str, *,
                  retry_in: float | None = None) -> str:
    # WeChat ends each errmsg with the call's own "rid: ...": kept in the log, left out of the row's detail so
    # that the progress view's failure reasons add up across users instead of listing one per user.
    if _RID.search(errmsg):
        log.info("fan-out send refused", extra={"row": row_id, "errcode": errcode, "errmsg": errmsg})
        errmsg = _RID.sub("", errmsg)
    with session_scope() as s:
        stmt = _fenced(row_id, token, OutboxStatus.SENDING.value)
        if errcode == REFUSED:
            credits.zero_credits(s, user_id, template_id)
            s.execute(stmt.values(status=OutboxStatus.FAILED.value, errcode=errcode,
                                  detail="用户拒收或订阅额度已用完（43101），不再重试"))
            return "refused"
        credits.refund(s, user_id, template_id)
        if errcode == QUOTA:
            # The daily quota, not the message: the row waits with the untried ones, its try given back. Spending
            # one per cool-down failed it for good within hours on a day the quota stays used up.
            s.execute(stmt.values(status=OutboxStatus.PENDING.value, lease_token=None,
                                  attempts=OutboxRow.attempts - 1, **_quota_wait_values(retry_in or QUOTA_BACKOFF)))
            return "retry"
        if errcode in (-1, -2, TOO_FAST):
            attempts = s.scalar(select(OutboxRow.attempts).where(OutboxRow.id == row_id)) or 1
            if attempts >= MAX_ATTEMPTS:
                s.execute(stmt.values(status=OutboxStatus.FAILED.value, errcode=errcode,
                                      detail=f"多次重试仍失败：{errmsg}"[:200]))
                return "failed"
            delay = BACKOFF[min(attempts - 1, len(BACKOFF) - 1)]
            if errcode == TOO_FAST:
                delay = max(delay, 60)
            delay = float(_cfg("fanout_backoff_override", delay))
            s.execute(stmt.values(status=OutboxStatus.PENDING.value, lease_token=None, errcode=errcode,
                                  detail=f"暂时失败，稍后重试：{errmsg}"[:200],
                                  next_attempt_at=utcnow() + timedelta(seconds=delay)))
            return "retry"
        reason = PERMANENT_REASONS.get(errcode, "微信拒绝发送")
        s.execute(stmt.values(status=OutboxStatus.FAILED.value, errcode=errcode, detail=f"{reason}：{errmsg}"[:200]))
        return "failed"


def _continue(notice_id: int, slot: int, generation: int, not_before: float = 0.0) -> None:
    """After a job's turn: finish the notice, hand over to a fresh job, or wake up for the next retry (not before
    `not_before` seconds: the daily quota's cool-down)."""
    with session_scope() as s:
        notice = _get(s, notice_id, lock=True)
        if notice.status == NoticeStatus.EXPANDING.value:  # more rows are coming: keep this slot going
            enqueue_after_commit(s, send_notice, notice_id, slot, generation + 1,
                                 job_id=f"notice-send-{notice_id}-{slot}-{generation + 1}", timeout=600,
                                 delay=not_before or None)
            return
        if notice.status == NoticeStatus.STOPPED.value:
            _skip_after_stop(s, notice_id)
            return
        if notice.status != NoticeStatus.SENDING.value:
            return
        open_rows = s.execute(select(OutboxRow.status, func.min(OutboxRow.next_attempt_at), func.count())
                              .where(OutboxRow.notice_id == notice_id, OutboxRow.status.not_in(TERMINAL))
                              .group_by(OutboxRow.status)).all()
        if not open_rows:
            _finish(s, notice)
            return
        pending = [r for r in open_rows if r[0] == OutboxStatus.PENDING.value]
        if not pending:
            return  # others hold the rest; the sweeper covers them if those workers die
        now = utcnow()
        due_at: datetime | None = pending[0][1]
        due_now = s.scalar(select(func.count()).where(
            OutboxRow.notice_id == notice_id, OutboxRow.status == OutboxStatus.PENDING.value,
            or_(OutboxRow.next_attempt_at.is_(None), OutboxRow.next_attempt_at <= now)))
        delay = None if due_now else max((due_at - now).total_seconds(), 0.5) if due_at else None
        if not_before:
            delay = max(delay or 0.0, not_before)
        enqueue_after_commit(s, send_notice, notice_id, slot, generation + 1,
                             job_id=f"notice-send-{notice_id}-{slot}-{generation + 1}", delay=delay, timeout=600)


def _finish(s: Session, notice: Notice) -> None:
    notice.status = NoticeStatus.DONE.value
    notice.finished_at = utcnow()
    audit(s, Actor("system", "system"), "notice.finished", notice, recipients=notice.recipients)


def sweep_leases(now: datetime | None = None, lease_seconds: int | None = None, *,
                 force: bool = False, actor: Actor | None = None, notice_id: int | None = None) -> dict[str, int]:
    """Recover from dead workers and lost queues (see the module doc); safe to run any time, twice. A staff
    member's restart (the console's resume, `actor` and the notice they pressed it on) is audited."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=lease_seconds or LEASE_SECONDS)
    with session_scope() as s:
        requeued = s.execute(update(OutboxRow).where(OutboxRow.status == OutboxStatus.CLAIMED.value,
                                                     OutboxRow.claimed_at < cutoff)
                             .values(status=OutboxStatus.PENDING.value, lease_token=None)
                             .execution_options(synchronize_session=False)).rowcount
        unknown, returned = _sweep_sending(s, cutoff)
        active = list(s.execute(select(Notice.id, Notice.status).where(
            Notice.status.in_((NoticeStatus.EXPANDING.value, NoticeStatus.SENDING.value)))))
        # A notice whose workers are busy (fresh leases or sends in the last lease period) needs no kick.
        busy = set(s.scalars(select(OutboxRow.notice_id).where(
            OutboxRow.notice_id.in_([n for n, _ in active] or [-1]),
            OutboxRow.channel == "subscribe",
            or_(and_(OutboxRow.status.in_((OutboxStatus.CLAIMED.value, OutboxStatus.SENDING.value)),
                     OutboxRow.claimed_at >= cutoff),
                OutboxRow.sent_at >= cutoff)).distinct()))
        if actor is not None:
            target = s.get(Notice, notice_id) if notice_id is not None else None
            audit(s, actor, "notice.resumed", target, requeued=requeued, unknown=unknown, returned=returned,
                  active=[n for n, _ in active])
    kicked = 0
    stamp = int(now.timestamp() // 60)
    for notice_id, status in active:
        expanding = status == NoticeStatus.EXPANDING.value
        if expanding:  # always: a second expansion job only waits for the notice lock and carries on
            enqueue(expand_notice, notice_id, job_id=f"notice-expand-{notice_id}-sweep-{stamp}")
        if notice_id not in busy or force:
            # One fresh send job per slot (sending overlaps the expansion); _continue() finishes the notice
            # when nothing is open.
            for slot in range(int(_cfg("fanout_jobs", DEFAULT_JOBS))):
                enqueue(send_notice, notice_id, slot, 0, job_id=f"notice-send-{notice_id}-{slot}-sweep-{stamp}",
                        timeout=600)
        elif not expanding:
            continue
        kicked += 1
    if requeued or unknown or returned:
        log.warning("fan-out sweeper recovered leases", extra={"requeued": requeued, "unknown": unknown,
                                                               "returned": returned})
    return {"requeued": requeued, "unknown": unknown, "returned": returned, "notices": kicked}


def _sweep_sending(s: Session, cutoff: datetime) -> tuple[int, int]:
    """'sending' rows whose lease expired (their worker died or stalled): those WeChat was never handed (CALLED_KEY) go
    back to 'pending' with their credit (skipped, if the notice was stopped meanwhile); the others, which WeChat may
    have, fail as 结果未知 and are not sent again. Returns (unknown, returned)."""
    expired = s.execute(select(OutboxRow.id, OutboxRow.user_id, OutboxRow.lease_token, OutboxRow.notice_id)
                        .where(OutboxRow.status == OutboxStatus.SENDING.value, OutboxRow.claimed_at < cutoff)
                        .order_by(OutboxRow.id).with_for_update(skip_locked=True)).all()
    if not expired:
        return 0, 0
    by_token: dict[str | None, list[int]] = {}
    for row_id, _, token, _ in expired:
        by_token.setdefault(token, []).append(row_id)
    uncalled: set[int] = set()
    for token, ids in by_token.items():
        uncalled |= _take_uncalled(token, ids)
    # The lease token stays on a row failed as 结果未知: it says whose send is unknown, so that only that worker, if it
    # was merely stalled and never called WeChat for the row, takes it back (_reclaim_unsent).
    unknown = s.execute(update(OutboxRow).where(
        OutboxRow.id.in_([r.id for r in expired if r.id not in uncalled]), OutboxRow.status == OutboxStatus.SENDING.value)
        .values(status=OutboxStatus.FAILED.value, errcode=UNKNOWN_RESULT, detail=UNKNOWN_DETAIL)
        .execution_options(synchronize_session=False)).rowcount
    back = [r for r in expired if r.id in uncalled]
    notices = {n: (status, template) for n, status, template in s.execute(
        select(Notice.id, Notice.status, Notice.template_id).where(Notice.id.in_({r.notice_id for r in back})))}
    returned = 0
    for row in back:
        status, template_id = notices[row.notice_id]
        values: dict[str, Any] = (
            {"status": OutboxStatus.SKIPPED.value, "detail": STOPPED_DETAIL} if status == NoticeStatus.STOPPED.value
            else {"status": OutboxStatus.PENDING.value, "errcode": 0, "detail": ""})
        done = s.execute(update(OutboxRow).where(OutboxRow.id == row.id, OutboxRow.status == OutboxStatus.SENDING.value)
                         .values(lease_token=None, attempts=OutboxRow.attempts - 1, **values)
                         .execution_options(synchronize_session=False)).rowcount
        if done:
            credits.refund(s, row.user_id, template_id)
            returned += 1
    return unknown, returned


def fanout_tick() -> dict[str, int]:
    """Every minute while any notice is in flight: sweep, then re-arm."""
    result = sweep_leases()
    if result["notices"]:
        enqueue(fanout_tick, job_id=f"fanout-tick-{int(time.time() // 60) + 1}", delay=60)
    return result


# --- progress ------------------------------------------------------------------------------------------

STATUS_LABELS = {"pending": "等待发送", "claimed": "已领取", "sending": "发送中", "sent": "已发送", "failed": "失败",
                 "skipped": "无额度、已不在推送对象中、活动已取消或已停止发送（仅站内信）"}
NOTICE_STATUS_LABELS = {"draft": "草稿", "expanding": "生成名单中", "sending": "发送中", "done": "已完成",
                        "stopped": "已停止发送"}


def progress(session: Session, notice_id: int) -> dict[str, Any]:
    """Per-status counts of the subscribe channel, inbox deliveries, and the failure reasons."""
    notice = _get(session, notice_id)
    counts = {k: 0 for k in STATUS_LABELS}
    for status, n in session.execute(select(OutboxRow.status, func.count()).where(
            OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe").group_by(OutboxRow.status)):
        counts[status] = n
    reasons = [{"errcode": e, "detail": d, "count": n} for e, d, n in session.execute(
        select(OutboxRow.errcode, OutboxRow.detail, func.count()).where(
            OutboxRow.notice_id == notice_id, OutboxRow.status == OutboxStatus.FAILED.value)
        .group_by(OutboxRow.errcode, OutboxRow.detail).order_by(func.count().desc()).limit(10))]
    # Why rows wait (WeChat's daily quota, a busy WeChat retried later): without it a fan-out stopped for the day
    # showed only “等待发送” and no reason, and staff pressed 重新启动 again and again.
    waiting = [{"errcode": e, "detail": d, "count": n} for e, d, n in session.execute(
        select(OutboxRow.errcode, OutboxRow.detail, func.count()).where(
            OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
            OutboxRow.status == OutboxStatus.PENDING.value, OutboxRow.errcode != 0)
        .group_by(OutboxRow.errcode, OutboxRow.detail).order_by(func.count().desc()).limit(10))]
    # Why rows were skipped (left the audience, no credit left, the activity cancelled): counted together above.
    skipped = [{"errcode": e, "detail": d, "count": n} for e, d, n in session.execute(
        select(OutboxRow.errcode, OutboxRow.detail, func.count()).where(
            OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe",
            OutboxRow.status == OutboxStatus.SKIPPED.value)
        .group_by(OutboxRow.errcode, OutboxRow.detail).order_by(func.count().desc()).limit(10))]
    total = sum(counts.values())
    done = sum(counts[k] for k in TERMINAL)
    to_come = 0
    if notice.status == NoticeStatus.EXPANDING.value and notice.template_id and notice.template_fields:
        # The audience is still being written: the rows so far, all sent, read 100 % under “生成名单中”. Those still
        # to be written (users past the cursor who hold credit) count as well, and it is never 100 % yet.
        rest = audience_select(session, notice.audience or {}).where(
            User.id > notice.expand_cursor, User.id.in_(_has_credit(notice.template_id))).subquery()
        to_come = session.scalar(select(func.count()).select_from(rest)) or 0
    percent = round(done / (total + to_come) * 100, 1) if total + to_come else 0.0
    if notice.status == NoticeStatus.EXPANDING.value:
        percent = min(percent, 99.9)
    elif notice.status == NoticeStatus.DONE.value and not total:
        percent = 100.0
    # WeChat's later delivery reports (subscribe_msg_sent_event) on the messages it took.
    delivery = {"delivered": 0, "refused_by_user": 0, "delivery_failed": 0}
    for report, n in session.execute(select(OutboxRow.delivery, func.count()).where(
            OutboxRow.notice_id == notice_id, OutboxRow.channel == "subscribe", OutboxRow.delivery != "")
            .group_by(OutboxRow.delivery)):
        key = ("delivered" if report == "success" else
               "refused_by_user" if report == credits.REFUSED_STATUS else "delivery_failed")
        delivery[key] += n
    return {"delivery": delivery, "id": notice.id, "status": notice.status, "status_label": NOTICE_STATUS_LABELS[notice.status],
            "recipients": notice.recipients, "inbox": notice.recipients, "subscribe": counts,
            "subscribe_total": total, "subscribe_done": done,
            "percent": percent,
            "failures": reasons, "waiting": waiting, "skipped_reasons": skipped, "finished": notice.status == NoticeStatus.DONE.value,
            # Stopped by staff: how many the subscribe message reached before the stop (the inbox is `inbox`).
            "stopped": notice.status == NoticeStatus.STOPPED.value, "reached": counts[OutboxStatus.SENT.value],
            "published_at": notice.published_at.isoformat() if notice.published_at else None,
            "finished_at": notice.finished_at.isoformat() if notice.finished_at else None}
