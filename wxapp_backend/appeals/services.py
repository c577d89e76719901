"""Appeal services: intake, the one transition(), staff actions, enterprise actions, duplicates, SLA steps.

Plain functions: they take the session and the acting `audit.Actor`, never commit, raise AppError subclasses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, object_session

from ..audit import SYSTEM, Actor, _jsonable, audit
from ..auth.models import ROLE_RANK, StaffRole, StaffUser, User
from ..db import utcnow
from ..enterprises.models import Building, Enterprise
from ..enterprises.services import building_to_point_at
from ..errors import Conflict, Forbidden, NotFound, TooManyRequests, ValidationError
from ..validation import DB_INT_MAX, Field, validate
from . import classify
from .calendar import DAY_MINUTES, TZ, WorkCalendar, local_date
from .models import (
    Appeal,
    AppealCategory,
    AppealCounter,
    AppealEvent,
    AppealExtension,
    AppealRating,
    AppealReturn,
    AppealTask,
    Holiday,
    TaskKind,
    handled_by,
)
from .states import CLOCK_RUNNING, LABELS, OPEN, AppealStatus, can_move

log = logging.getLogger(__name__)
S = AppealStatus

RESPONSE_DAYS = 1  # first response (受理) promised within one working day
ESCALATION_DAYS = 3  # 办不成事: the escalation owner answers within three working days
ESCALATION_OWNER = "营商服务中心（办不成事窗口）"
CENTRE = "营商服务中心"  # its staff and admins accept (受理) what enterprises submit
# The enterprise may rate (and reopen) within 7 working days of the 办结, on the SLA clocks' calendar: 7 calendar
# days ran out over the Spring Festival (or National Day) while the enterprise was away. See rating_window_ends.
RATING_WORKING_DAYS = 7
WARN_MINUTES = 510  # warn when less than one working day is left
AUTO_ESCALATE_OVERDUE_DAYS = 5  # working days overdue before the system escalates by itself
BAD_SATISFACTION = 2  # 1-2 of 5 is a bad rating (差评)
INFO_REMIND_DAYS = 3  # 待补充材料: the enterprise is reminded once after 3 working days without a supplement
INFO_GIVE_UP_DAYS = 10  # ... and after 10 the appeal goes back to the department, handled on what it has
LOCK_ROWS = True  # SELECT ... FOR UPDATE on the appeal row for every action (tests switch it off)
DEFAULT_PROMISED_DAYS = 5
# Appeals one user may file in any 24 hours (mini-program and chat alike): a script or an angry user can
# otherwise fill the queue (and the disk, nine photos each) faster than any team can triage.
MAX_APPEALS_PER_DAY = 20
# On the mini-program API, a submission without an Idempotency-Key that repeats one of the user's own (same words and
# contact) within this window is the page's retry after a timeout, or a double tap: the first appeal is answered again.
RETRY_WINDOW = timedelta(minutes=10)


def _after_load(appeal: Appeal) -> None:
    """Test hook: called between loading an appeal for an action and changing it."""


# --- catalogue and calendar ------------------------------------------------------------------------

def ensure_catalogue(session: Session) -> None:
    """Seed the 政府服务清单 defaults once (an empty table gets them; staff edits are kept)."""
    if session.scalar(select(func.count(AppealCategory.id))):
        return
    try:
        with session.begin_nested():
            for i, (code, name, dept, days, required, keywords) in enumerate(classify.DEFAULT_CATALOGUE):
                session.add(AppealCategory(code=code, name=name, department=dept, promised_days=days,
                                           required_fields=list(required), keywords=list(keywords), sort=i * 10))
            session.flush()
    except IntegrityError:  # another transaction seeded it at the same moment
        pass


def categories(session: Session, *, active_only: bool = True) -> list[AppealCategory]:
    ensure_catalogue(session)
    q = select(AppealCategory).order_by(AppealCategory.sort, AppealCategory.id)
    if active_only:
        q = q.where(AppealCategory.active.is_(True))
    return list(session.scalars(q))


def find_category(session: Session, value: str | int | None, *, active_only: bool = True) -> AppealCategory | None:
    """By id, code or name; None for None; 422 for a value that names no (active) category."""
    if value in (None, ""):
        return None
    for c in categories(session, active_only=active_only):
        if str(value) in (str(c.id), c.code, c.name):
            return c
    raise ValidationError("没有这个诉求类别，请从列表中选择。", fields={"category": "没有这个诉求类别"})


def work_calendar(session: Session) -> WorkCalendar:
    """The calendar with the staff-edited holiday table laid over chinesecalendar."""
    rows = session.execute(select(Holiday.day, Holiday.is_workday)).all()
    return WorkCalendar({d: w for d, w in rows})


def set_holiday(session: Session, actor: Actor, day: date, is_workday: bool, name: str = "", *,
                now: datetime | None = None) -> Holiday:
    old_cal = work_calendar(session)
    row = session.scalar(select(Holiday).where(Holiday.day == day))
    previous = None if row is None else {"is_workday": row.is_workday, "name": row.name}
    if row is None:
        try:
            with session.begin_nested():
                row = Holiday(day=day)
                session.add(row)
                session.flush()
        except IntegrityError:  # the same day saved at the same moment (PostgreSQL; SQLite queues writers)
            row = session.scalar(select(Holiday).where(Holiday.day == day))
            if row is None:
                raise
    row.is_workday, row.name, row.updated_by = is_workday, name, str(actor.name or actor.id)
    session.flush()
    moved = 0
    if old_cal.is_workday(day) != is_workday:
        moved = recount_deadlines(session, old_cal, day, f"{day.isoformat()} 改为{'工作日' if is_workday else '休息日'}",
                                  now=now)
    audit(session, actor, "appeal_holiday.set", row, day=day.isoformat(), is_workday=is_workday, name=name,
          previous=previous, deadlines_moved=moved)
    return row


def delete_holiday(session: Session, actor: Actor, holiday_id: int, *, now: datetime | None = None) -> None:
    row = session.get(Holiday, holiday_id)
    if row is None:
        raise NotFound("没有这一天的设置。")
    old_cal, day = work_calendar(session), row.day
    entry = audit(session, actor, "appeal_holiday.deleted", row, day=day.isoformat())
    session.delete(row)
    session.flush()
    if old_cal.is_workday(day) != work_calendar(session).is_workday(day):
        moved = recount_deadlines(session, old_cal, day, f"{day.isoformat()} 的设置已删除", now=now)
        entry.data = {**entry.data, "deadlines_moved": moved}


def recount_deadlines(session: Session, old_cal: WorkCalendar, day: date, why: str, *,
                      now: datetime | None = None) -> int:
    """The holiday table changed `day`: every open deadline that spans it keeps the working time it had left from
    now, counted on the new calendar (deadlines were set with the calendar of their day, which for a year
    chinesecalendar does not know counted holidays as working days). Returns the appeals moved."""
    now = now or utcnow()
    today = local_date(now)
    if day < today:
        return 0
    cal = work_calendar(session)

    def recount(when: datetime | None) -> datetime | None:
        if when is None or when <= now or local_date(when) < day:
            return when
        return cal.add_working_minutes(now, old_cal.working_minutes_between(now, when))

    moved = 0
    open_status = [s.value for s in OPEN]
    # Every task still owed, whatever the appeal's state: a 差评整改 (and a 办不成事 reported on a resolved appeal) is
    # owed on an appeal closed by then, and its deadline kept the old calendar — the tick flagged 整改超期 (and
    # 办不成事超期) on the day the holiday took away.
    tasks: dict[int, list[AppealTask]] = {}
    for task in session.scalars(select(AppealTask).where(AppealTask.status == "open")):
        tasks.setdefault(task.appeal_id, []).append(task)
    for appeal in session.scalars(select(Appeal).where(or_(Appeal.status.in_(open_status), Appeal.id.in_(list(tasks))))
                                  .order_by(Appeal.id)).unique():
        before = appeal.due_at
        changed = {}
        still_open = appeal.status in OPEN
        owed = {t.kind for t in tasks.get(appeal.id, ())}
        for attr in ("due_at", "response_due_at", "escalation_due_at"):
            if attr == "due_at" and appeal.status == S.PENDING_ENTERPRISE:
                continue  # paused: what is left is kept in working minutes (sla_minutes_left) until it resumes
            if not still_open and not (attr == "escalation_due_at" and TaskKind.ESCALATION in owed):
                continue  # ended: its own promise was kept or missed on the calendar of its day
            old, new = getattr(appeal, attr), recount(getattr(appeal, attr))
            if new != old:
                setattr(appeal, attr, new)
                changed[attr] = new
        for task in tasks.get(appeal.id, ()):
            new = recount(task.due_at)
            if new != task.due_at:
                task.due_at = new
                changed.setdefault("task_due_at", new)
        if not changed:
            continue
        moved += 1
        if appeal.due_at != before:
            appeal.warned_due_at = None
            if appeal.due_at is not None and appeal.due_at > now:
                appeal.overdue = False
        shown = appeal.due_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if appeal.due_at else "—"
        # The enterprise sees its promised date move: on its timeline too, with why (it changed without a word).
        moved_due = appeal.due_at != before and appeal.due_at is not None
        local = appeal.due_at.astimezone(TZ) if moved_due else None
        said = (f"办理时限重新计算为 {shown}" if still_open
                else "未完成的整改 / 办不成事任务期限相应重新计算（诉求本身的办结时限不变）")
        _event(session, appeal, SYSTEM, "deadline_recounted", at=now, note=f"工作日历调整（{why}），{said}",
               public=moved_due, **changed,
               public_note=f"节假日安排调整，承诺办结时间相应改为 {local.month}月{local.day}日 {local:%H:%M}"
               if local else None)
    return moved


def save_category(session: Session, actor: Actor, data: dict[str, Any], category_id: int | None = None
                  ) -> AppealCategory:
    ensure_catalogue(session)
    if category_id is None:
        row = AppealCategory(code=data["code"], name=data["name"], department=data["department"])
        session.add(row)
    else:
        row = session.get(AppealCategory, category_id)
        if row is None:
            raise NotFound("没有这个类别。")
    # From/to pairs: the promised days set every appeal's deadline, and the seeded values are in no earlier row.
    before = {key: getattr(row, key) for key in CATEGORY_AUDITED} if category_id is not None else {}
    for key in ("name", "department", "promised_days", "description", "active", "sort"):
        if data.get(key) is not None:
            setattr(row, key, data[key])
    if data.get("keywords") is not None:
        row.keywords = [k for k in data["keywords"] if k]
    if data.get("required_fields") is not None:
        row.required_fields = [k for k in data["required_fields"] if k in REQUIRABLE]
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("类别代码或名称已存在。") from None
    changes = {key: [before.get(key), getattr(row, key)] for key in CATEGORY_AUDITED
               if before.get(key) != getattr(row, key)}
    audit(session, actor, "appeal_category.saved", row, changes=changes,
          **{k: v for k, v in data.items() if v is not None})
    return row


REQUIRABLE = ("enterprise_id", "building_id", "images")
CATEGORY_AUDITED = ("name", "department", "promised_days", "description", "active", "sort", "keywords",
                    "required_fields")


# --- events, audit and notifications --------------------------------------------------------------

def _event(session: Session, appeal: Appeal, actor: Actor, action: str, *, note: str = "", public: bool = False,
           src: str = "", dst: str = "", at: datetime | None = None, **data: Any) -> AppealEvent:
    """One timeline row (and its audit row), stamped `at`: the caller's `now`, the clock the change itself was made
    on (a service run with `now=` wrote its status and deadlines at that time but the row at the real one, so the
    timeline, ordered by time, put a change before the one it followed and the day's checks read the wrong day)."""
    ev = AppealEvent(appeal_id=appeal.id, action=action, from_status=src, to_status=dst, actor_type=actor.type,
                     actor_id=str(actor.id or ""), actor_name=actor.name or "", note=note, public=public,
                     data=_jsonable({k: v for k, v in data.items() if v is not None}))
    if at is not None:
        ev.created_at = at
    session.add(ev)
    audit(session, actor, f"appeal.{action}", appeal, number=appeal.number, **({"from": src, "to": dst}
                                                                               if dst else {}), **data)
    return ev


# What a notice to the enterprise tells them to reply in the Official Account chat (handlers/appeal_followup.py).
REPLY_HINTS = {"appeal_resolved": "回复“评价”即可评价办理结果", "appeal_needs_info": "回复“补充”即可补充材料"}
NOTICE_TITLES = {
    "appeal_accepted": "您的诉求已受理",
    "appeal_needs_info": "您的诉求需要补充材料",
    "appeal_resolved": "您的诉求已办结，请评价",
    "appeal_closed": "您的诉求已关闭",
    "appeal_escalated": "您的诉求已转入“办不成事”反映窗口",
    "appeal_merged": "您的诉求已合并办理",
    "appeal_split": "您的诉求已恢复单独办理",
    "appeal_extended": "您的诉求办理期限已延长",
}


def _notify(session: Session, appeal: Appeal, kind: str, body: str, key: str, *, title: str | None = None,
            now: datetime | None = None) -> None:
    """Tell the enterprise; a failure is recorded on the timeline and never undoes the state change. `title`
    replaces the kind's own where one kind carries two outcomes (不予受理 goes out as appeal_closed)."""
    title = title or NOTICE_TITLES.get(kind, "诉求进展")
    from ..notices.models import Notification
    from ..notices.services import notify

    dedup = f"appeal:{appeal.id}:{key}"
    # The subscribe message's 备注 (20 characters): what happened, not “您的诉求 SQ…” again, which filled all 20 and
    # left out what to supplement or what was done (the number has its own field).
    gist = body.removeprefix(f"您的诉求 {appeal.number} ").strip() or body
    if session.scalar(select(Notification.id).where(Notification.dedup_key == dedup)) is not None:
        return  # a retried job or a repeated click: already told
    outcome = "queued"
    try:
        with session.begin_nested():
            notify(session, appeal.user_id, kind,
                   {"number": appeal.number, "status": appeal.status_label, "note": gist[:40],
                    "reply_hint": REPLY_HINTS.get(kind, "回复“我的诉求”查看办理进度")},
                   f"pages/appeals/detail?id={appeal.id}", title=title, body=body,
                   ref=f"appeal:{appeal.id}", dedup_key=dedup)
    except Exception:  # noqa: BLE001 - whatever broke, the appeal's own change stands
        log.exception("appeal notification failed", extra={"appeal_id": appeal.id, "kind": kind})
        outcome = "failed"
    _event(session, appeal, SYSTEM, "notified", note=f"已通知企业：{title}"
           + ("" if outcome == "queued" else "（通知发送失败，已记录）"), public=True, kind=kind, outcome=outcome, at=now)


# --- loading and visibility ------------------------------------------------------------------------

def _dept_only(actor: Actor) -> bool:
    return actor.type == "staff" and actor.role == StaffRole.DEPT


def _dept_clause(department: str):
    """What a department account sees: the appeals given out to it (交办 / 改派, see given_out) and those holding a
    task for it (会办, 整改, 办不成事). The department only guessed at submission saw (and counted) the appeal in its
    queue and 临期 list before the centre had accepted or given it out."""
    task_dept = exists().where(AppealTask.appeal_id == Appeal.id, AppealTask.department == department)
    return or_(handled_by(department), task_dept)


def get_appeal(session: Session, appeal_id: int, actor: Actor, *, lock: bool = False, nowait: bool = False
               ) -> Appeal:
    """The appeal this actor may see: users see their own, dept staff their department's; else 404.

    `nowait`: a second appeal an action changes (a merge's master) is locked without waiting, since the action
    already holds its own row and two actions taking two rows in opposite orders would deadlock: when another
    transaction holds it, 409 “稍后再试”."""
    q = select(Appeal).where(Appeal.id == appeal_id)
    if actor.type == "user":
        q = q.where(Appeal.user_id == int(actor.id))
    elif _dept_only(actor):
        q = q.where(_dept_clause(actor.department))
    if lock and LOCK_ROWS:
        q = q.with_for_update(of=Appeal, nowait=nowait)
    try:
        appeal = session.scalars(q).unique().first()
    except OperationalError as exc:
        if nowait and getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise Conflict("这条诉求正由他人处理，请稍后再试。", code="busy") from None
        raise
    if appeal is None:
        if _dept_only(actor) and _once_given_to(session, appeal_id, actor.department):
            # Its page opened before the centre re-routed the appeal: “没有找到这条诉求” read as if it had vanished.
            # Still a 404 that names nobody (which department has it now is the centre's business).
            raise NotFound("这件诉求已交办至其他部门，贵部门不再办理，操作未执行。请返回列表刷新。")
        raise NotFound("没有找到这条诉求。")
    if lock:
        session.refresh(appeal)
        _after_load(appeal)
    return appeal


def _once_given_to(session: Session, appeal_id: int, department: str) -> bool:
    """Whether the appeal was given to `department` (an `assigned` / `reassigned` event named it) at some time."""
    rows = session.scalars(select(AppealEvent.data).where(AppealEvent.appeal_id == appeal_id,
                                                          AppealEvent.action.in_(("assigned", "reassigned"))))
    return any((data or {}).get("department") == department for data in rows)


# --- the one transition ------------------------------------------------------------------------------

def transition(session: Session, appeal: Appeal, to: AppealStatus, actor: Actor, *, action: str, note: str = "",
               public: bool = True, now: datetime | None = None, **data: Any) -> AppealEvent:
    """Move the appeal along the table, keep the SLA clock, write the event and audit rows; 409 otherwise."""
    src = AppealStatus(appeal.status)
    if not can_move(src, to):
        if src == to:  # a double tap (or a colleague first): done already, not "cannot become what it is"
            raise Conflict(f"诉求已经是“{LABELS[src]}”了，不需要重复操作（可能刚刚已经办过）。", code="illegal_transition")
        raise Conflict(f"诉求当前为“{LABELS[src]}”，不能变为“{LABELS[to]}”。", code="illegal_transition")
    now = now or utcnow()
    cal = work_calendar(session)
    moved = 0
    if to == S.PENDING_ENTERPRISE:
        appeal.paused_from = src.value
        appeal.paused_at = now
        appeal.sla_minutes_left = cal.working_minutes_between(now, appeal.due_at) if appeal.due_at else None
    elif src == S.PENDING_ENTERPRISE:
        if appeal.sla_minutes_left is not None and appeal.sla_minutes_left > 0:
            appeal.due_at = cal.add_working_minutes(now, appeal.sla_minutes_left)
            # Time left again (a longer category's promise while it waited): no longer 超期 — the flag stayed, with a
            # deadline days away, in the 超期 filter and the weekly report, and no 临期 reminder came before it.
            appeal.overdue = False
        elif appeal.sla_minutes_left is not None and appeal.due_at is not None and appeal.paused_at is not None:
            # Already late when the material was asked for: as late as it was then (and as a category change in
            # the wait made it), not later by the wait as well. Kept, the enterprise's week counted as lateness and
            # the next tick escalated it as “超期 5 个工作日以上” (as _resume_after_merge does for a merge).
            shift = (cal.working_minutes_between(appeal.paused_at, now) + appeal.sla_minutes_left
                     - cal.working_minutes_between(appeal.paused_at, appeal.due_at))
            if shift > 0:
                appeal.due_at = cal.add_working_minutes(appeal.due_at, shift)
                appeal.warned_due_at = None
        appeal.paused_at, appeal.sla_minutes_left, appeal.paused_from = None, None, ""
        appeal.info_request = ""  # answered, or staff went on without it: no longer asked of the enterprise
    if to == S.DUPLICATE:
        appeal.paused_at = now  # merged: its own clock stops (the master's runs for it)
    elif src == S.DUPLICATE:  # split off or released (to 已受理): handled on its own from now
        moved = _resume_after_merge(session, appeal, cal, now) if to == S.ACCEPTED else 0
        appeal.paused_at = None
    if to in (S.CLOSED, S.REJECTED, S.WITHDRAWN):
        appeal.closed_at = now
    if src == S.SUBMITTED and actor.type == "staff":
        # The first staff member to act on it answers for it (首问负责): recorded once, never changed.
        appeal.first_response_at = appeal.first_response_at or now
        if appeal.first_responder_id is None:
            appeal.first_responder_id = int(actor.id)
    appeal.status = to.value
    appeal.version += 1
    appeal.updated_at = now
    ev = _event(session, appeal, actor, action, at=now, note=note, public=public, src=src.value, dst=to.value, **data)
    if src not in OPEN and to in OPEN and appeal.building_id is not None:
        # Back in handling (reopened, split off): a building moved to another grid while it was 已办结 or 已合并 took
        # only its open appeals along, and this one went back to the grid team no longer serving the building.
        building = session.get(Building, appeal.building_id)
        if building is not None and building.grid_id != appeal.grid_id:
            follow_building_to_grid(session, SYSTEM, building, appeal.grid_id)
    if src == S.DUPLICATE and moved:
        local = appeal.due_at.astimezone(TZ)
        _event(session, appeal, SYSTEM, "deadline_recounted", at=now, public=True, due_at=appeal.due_at,
               merged_minutes=moved, note=f"合并期间（{moved // DAY_MINUTES} 个工作日 {moved % DAY_MINUTES} 分钟）不计入办理时限，"
               f"承诺办结时间顺延为 {local:%Y-%m-%d %H:%M}",
               public_note=f"合并办理期间不计入办理时限，承诺办结时间相应改为 {local.month}月{local.day}日 {local:%H:%M}")
    return ev


def _resume_after_merge(session: Session, appeal: Appeal, cal: WorkCalendar, now: datetime) -> int:
    """An appeal split off or released from 已合并 (by staff, or when its master ends unresolved): the time it spent
    merged does not count against its own deadline (its master was being handled for it), like the paused clock of
    待补充材料 — the deadline moves later by that time, so the time left (or the lateness, when it was already
    overdue when merged) is what it was at the merge. Before, a deadline that passed while merged made it overdue,
    and soon auto-escalated, the moment it was split off. Returns the working minutes the deadline moved."""
    since, appeal.paused_at = appeal.paused_at, None
    if since is None:  # merged before the merge stopped the clock: the merge's own event says when
        since = session.scalar(select(func.max(AppealEvent.created_at)).where(
            AppealEvent.appeal_id == appeal.id, AppealEvent.action == "merged"))
    if since is None or appeal.due_at is None or now <= since:
        return 0
    merged = cal.working_minutes_between(since, now)
    if merged <= 0:
        return 0
    appeal.due_at = cal.add_working_minutes(appeal.due_at, merged)
    appeal.warned_due_at = None
    if appeal.due_at > now:
        appeal.overdue = False
    return merged


# --- intake -------------------------------------------------------------------------------------------

@dataclass
class Intake:
    content: str
    contact_name: str
    contact_phone: str
    category: str | None = None
    enterprise_id: int | None = None
    enterprise_name: str = ""
    building_id: int | None = None
    images: list[dict] | None = None
    channel: str = "miniprogram"


def next_number(session: Session, now: datetime) -> str:
    """SQyyyymmdd-NNNN, counted per Shanghai day; atomic on PostgreSQL and SQLite (upsert ... returning)."""
    day = local_date(now)
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(AppealCounter).values(day=day, last=1)
    stmt = stmt.on_conflict_do_update(index_elements=[AppealCounter.day],
                                      set_={"last": AppealCounter.last + 1}).returning(AppealCounter.last)
    n = session.execute(stmt).scalar_one()
    return f"SQ{day:%Y%m%d}-{n:04d}"


def _check_daily_quota(session: Session, user_id: int, now: datetime, limit: int) -> None:
    since = now - timedelta(days=1)
    recent = session.execute(select(func.count(Appeal.id), func.min(Appeal.submitted_at))
                             .where(Appeal.user_id == user_id, Appeal.submitted_at > since)).one()
    if recent[0] >= limit:
        wait = max(int((recent[1] + timedelta(days=1) - now).total_seconds()) + 1, 1)
        raise TooManyRequests(f"您 24 小时内已提交 {recent[0]} 条诉求，暂时不能再提交了。已提交的诉求可以补充说明；"
                              "急事请直接致电营商服务中心。", code="appeal_daily_limit",
                              headers={"Retry-After": str(wait)})


def _retried(session: Session, user_id: int, intake: Intake, since: datetime) -> Appeal | None:
    """The user's appeal since `since` that this keyless submission repeats, if any: one nobody has acted on yet
    (a retry comes within seconds; sent again after a withdrawal, a staff step or a 办不成事, it is meant as a new
    one)."""
    return session.scalar(select(Appeal).where(
        Appeal.user_id == user_id, Appeal.channel == intake.channel, Appeal.content == intake.content,
        Appeal.contact_name == intake.contact_name, Appeal.contact_phone == intake.contact_phone,
        Appeal.submitted_at > since, Appeal.status == S.SUBMITTED.value, Appeal.escalated.is_(False))
        .order_by(Appeal.id.desc()).limit(1))


def request_digest(fields: dict[str, Any], images: list[bytes]) -> str:
    """What a keyed submission asked for, as a short hash (kept in its `submitted` event): a retry with the same key
    must ask for the same thing."""
    import hashlib
    import json

    body = {**{k: v for k, v in fields.items() if k != "images"},
            "images": [hashlib.sha256(b).hexdigest() for b in images]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:32]


def keyed_appeal(session: Session, user_id: int, idempotency_key: str, digest: str | None = None) -> Appeal | None:
    """The user's appeal made with this Idempotency-Key, if any. Sent with another body (the page kept its key for
    the next problem), the key is not the same request: 409, as for registrations, rather than the first appeal
    answered in place of a problem nobody would ever see."""
    existing = session.scalar(select(Appeal).where(Appeal.user_id == user_id,
                                                   Appeal.idempotency_key == idempotency_key))
    if existing is None or digest is None:
        return existing
    if existing.status == S.WITHDRAWN.value:
        # A key names one request: the same words sent again after 撤回 are a new one (as a registration's key
        # after 取消). Replayed, the page said 提交成功 while nothing reached staff.
        raise Conflict(f"您之前这次提交的诉求 {existing.number} 已撤回，这次没有登记。如需重新反映，请重新打开"
                       "“我要反映”页面后再提交。", code="idempotency_key_reused")
    first = session.scalar(select(AppealEvent.data).where(AppealEvent.appeal_id == existing.id,
                                                          AppealEvent.action == "submitted")
                           .order_by(AppealEvent.id).limit(1))
    kept = (first or {}).get("request_digest")
    if kept is not None and kept != digest:  # (appeals made before digests were kept: taken as the same)
        raise Conflict(f"这个提交编号已用于您之前提交的诉求 {existing.number}，这次填写的内容与它不同，没有登记。"
                       "请重新打开“我要反映”页面后再提交。", code="idempotency_key_reused")
    return existing


def submit_appeal(session: Session, user_id: int, intake: Intake, *, idempotency_key: str | None = None,
                  now: datetime | None = None, daily_limit: int | None = None,
                  retry_window: timedelta | None = None, digest: str | None = None) -> tuple[Appeal, bool]:
    """接单: a new appeal (or the one this key already made, or, given `retry_window` and no key, the one this
    submission repeats within that window: created=False). Routes it by the catalogue.
    With `daily_limit` (the user's channels pass MAX_APPEALS_PER_DAY) the user's 24 hours are capped.
    With `digest` (request_digest of a keyed submission) the key answers only the same request again (409 else)."""
    if idempotency_key:
        existing = keyed_appeal(session, user_id, idempotency_key, digest)
        if existing is not None:
            return existing, False
    now = now or utcnow()
    # With a cap, the user's row is locked until the appeal is committed (PostgreSQL): submissions at the same
    # moment each counted the others' uncommitted appeals as absent and all went past the cap.
    if daily_limit is not None and LOCK_ROWS:
        # The user's building is share-locked before their row, in the order a building merge takes them (the
        # building, then the users in it): the other way round, a merge of it and this waited for each other.
        home = session.scalar(select(User.building_id).where(User.id == user_id))
        if home is not None:
            building_to_point_at(session, home)
        session.execute(select(User.id).where(User.id == user_id).with_for_update())
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("用户不存在。")
    if retry_window and not idempotency_key and (twin := _retried(session, user_id, intake, now - retry_window)):
        return twin, False  # before the cap: the retry of the day's last appeal is no new one
    if daily_limit is not None:
        _check_daily_quota(session, user_id, now, daily_limit)
    ensure_catalogue(session)
    chosen = find_category(session, intake.category)
    enterprise = None
    enterprise_name = intake.enterprise_name
    if intake.enterprise_id is not None:
        enterprise = session.get(Enterprise, intake.enterprise_id)
        if enterprise is not None and enterprise.retired:
            # A draft made before staff merged the file into another (the chat keeps it a while): the file that
            # carries on, where the merge moved its verified contacts.
            from ..enterprises.services import carrying_on

            enterprise = carrying_on(session, enterprise)
        if enterprise is None:
            raise ValidationError("没有找到这家企业。", fields={"enterprise_id": "没有找到这家企业"})
        if not (user.enterprise_id == enterprise.id and user.binding_state == "verified"):
            # An appeal counts in the enterprise's own record (企业问题清单) only when a verified contact files it;
            # anyone else's mention of a company stays the words they used, for staff to check.
            if intake.channel != "chat":
                msg = "只能选择您已核实绑定的企业；其他企业请直接填写企业名称。"
                raise ValidationError(msg, fields={"enterprise_id": msg})
            enterprise_name, enterprise = enterprise_name or enterprise.name, None
    elif user.enterprise_id and user.binding_state == "verified" and not intake.enterprise_name:
        enterprise = user.enterprise
    # The building is share-locked (building_to_point_at): one being merged away or deleted meanwhile is waited
    # for instead of failing the submission on the foreign key.
    building_id = intake.building_id
    if building_id is not None and building_to_point_at(session, building_id) is None:
        raise ValidationError("没有找到这栋楼宇。", fields={"building_id": "没有找到这栋楼宇"})
    if building_id is None:
        building_id = (enterprise.building_id if enterprise else None) or user.building_id
        if building_id is not None and building_to_point_at(session, building_id) is None:
            # merged away meanwhile: the merge moved the enterprise and the user to the building kept
            session.refresh(user)
            if enterprise is not None:
                session.refresh(enterprise)
            building_id = (enterprise.building_id if enterprise else None) or user.building_id
            if building_id is not None and building_to_point_at(session, building_id) is None:
                building_id = None
    building = session.get(Building, building_id) if building_id else None

    rules = [(c.code, c.keywords or []) for c in categories(session)]
    suggestion = classify.suggest(intake.content, rules)
    by_code = {c.code: c for c in categories(session)}
    suggested = by_code.get(suggestion.code) if suggestion.code else None
    category = chosen or (suggested if suggestion.confidence >= classify.TRIAGE_THRESHOLD else None)
    if chosen is not None:  # a guess by the rules never blocks a submission; staff ask for what is missing
        _check_required(chosen, enterprise, building, intake.images, enterprise_name=enterprise_name)
    kind, _ = classify.message_type(intake.content)
    cal = work_calendar(session)
    promised = category.promised_days if category else DEFAULT_PROMISED_DAYS
    appeal = Appeal(
        number=next_number(session, now), user_id=user_id, idempotency_key=idempotency_key, channel=intake.channel,
        status=S.SUBMITTED.value, content=intake.content, kind=kind, contact_name=intake.contact_name,
        contact_phone=intake.contact_phone, enterprise_id=enterprise.id if enterprise else None,
        enterprise_name=enterprise.name if enterprise else enterprise_name, building_id=building_id,
        grid_id=building.grid_id if building else None, images=list(intake.images or []),
        category_id=category.id if category else None,
        category_chosen_by="user" if chosen else ("rules" if category else ""),
        suggested_category_id=suggested.id if suggested else None, confidence=suggestion.confidence,
        needs_triage=category is None, department=category.department if category else "",
        specialist_staff_id=building.grid.specialist_staff_id if building and building.grid else None,
        submitted_at=now, response_due_at=cal.add_working_days(now, RESPONSE_DAYS),
        due_at=cal.add_working_days(now, promised), created_at=now, updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(appeal)
            session.flush()
    except IntegrityError:
        if idempotency_key:  # the same key raced in from a second request: return the winner
            existing = keyed_appeal(session, user_id, idempotency_key, digest)
            if existing is not None:
                return existing, False
        raise
    similar = similar_open(session, appeal, limit=5)
    actor = Actor("user", user_id, name=intake.contact_name)
    _event(session, appeal, actor, "submitted", at=now, note="企业提交诉求", public=True, dst=S.SUBMITTED.value,
           channel=intake.channel, suggested=suggestion.code, confidence=suggestion.confidence,
           triage=appeal.needs_triage, similar=[{"id": a.id, "number": a.number, "score": sc} for a, sc in similar],
           request_digest=digest if idempotency_key else None)
    return appeal, True


def _check_required(category: AppealCategory, enterprise, building, images, *, enterprise_name: str = "") -> None:
    missing = {}
    for f in category.required_fields or []:
        # Only a verified binding can be chosen: anyone else names the company, which staff read (it stays text).
        if f == "enterprise_id" and enterprise is None and not (enterprise_name or "").strip():
            missing["enterprise_id"] = f"“{category.name}”类诉求需要填写企业名称（企业绑定核实后可直接选择）"
        elif f == "building_id" and building is None:
            missing["building_id"] = f"“{category.name}”类诉求需要选择所在楼宇"
        elif f == "images" and not images:
            missing["images"] = f"“{category.name}”类诉求需要上传照片"
    if missing:
        raise ValidationError(next(iter(missing.values())), fields=missing)


# --- duplicates --------------------------------------------------------------------------------------

def follow_building_to_grid(session: Session, actor: Actor, building: Building, old_grid_id: int | None) -> list[int]:
    """A building moved to another grid (or out of every grid) takes its open appeals along: they were routed by
    the building's grid when filed, and left behind they stayed in the old grid team's list and with its
    specialist, while the team now serving the building never saw them. Closed ones keep the grid that handled
    them. Each moved appeal says so on its (internal) timeline; returns their ids."""
    from ..enterprises.models import Grid

    grid = session.get(Grid, building.grid_id) if building.grid_id is not None else None
    old = session.get(Grid, old_grid_id) if old_grid_id is not None else None
    moved = list(session.scalars(select(Appeal).where(
        Appeal.building_id == building.id, Appeal.status.in_([s.value for s in OPEN]),
        or_(Appeal.grid_id.is_(None), Appeal.grid_id != building.grid_id) if building.grid_id is not None
        else Appeal.grid_id.is_not(None)).order_by(Appeal.id)))
    note = (f"楼宇「{building.name}」从{f'「{old.name}」' if old else '未划分网格'}调整到"
            f"{f'「{grid.name}」' if grid else '未划分网格'}，诉求随楼宇转到新网格")
    with specialist_alerts(session, actor):  # one message per specialist, however many moved
        for appeal in moved:
            previous, specialist = appeal.grid_id, appeal.specialist_staff_id
            appeal.grid_id = building.grid_id
            appeal.specialist_staff_id = grid.specialist_staff_id if grid is not None else None
            ev = _event(session, appeal, actor, "grid_changed", note=note, grid_id=building.grid_id,
                        previous_grid_id=previous)
            _moved(session, appeal)
            notify_specialist(session, appeal, specialist, ev, actor=actor)
    return [a.id for a in moved]


def move_to_building(session: Session, actor: Actor, appeals: list[Appeal], building: Building, note: str, *,
                     at: datetime | None = None) -> list[int]:
    """Open appeals that now belong to another building (their enterprise moved there, or a duplicate building was
    merged into it) go there, and to the grid team serving it, as a building moved to another grid takes its own
    along (follow_building_to_grid). Each says so on its (internal) timeline. Returns the ids of those whose grid
    changed with it."""
    from ..enterprises.models import Grid

    grid = session.get(Grid, building.grid_id) if building.grid_id is not None else None
    rerouted = []
    with specialist_alerts(session, actor, now=at):  # one message per specialist, however many moved
        for appeal in appeals:
            previous_building, previous_grid = appeal.building_id, appeal.grid_id
            specialist = appeal.specialist_staff_id
            appeal.building_id = building.id
            if appeal.grid_id != building.grid_id:
                appeal.grid_id = building.grid_id
                appeal.specialist_staff_id = grid.specialist_staff_id if grid is not None else None
                rerouted.append(appeal.id)
            ev = _event(session, appeal, actor, "building_changed", note=note, building_id=building.id,
                        previous_building_id=previous_building, grid_id=building.grid_id,
                        previous_grid_id=previous_grid, at=at)
            _moved(session, appeal)
            notify_specialist(session, appeal, specialist, ev, actor=actor, now=at)
    return rerouted


# session.info key: the open appeals this unit of work moved to another building or grid, for the console's message
# (moved_summary) after a building or enterprise change that took them along (the services return their own rows).
MOVED_KEY = "appeals_moved"


def _moved(session: Session, appeal: Appeal) -> None:
    if appeal.status in OPEN:
        session.info.setdefault(MOVED_KEY, {})[appeal.id] = True


def moved_summary(session: Session) -> list[tuple[int, str, str]]:
    """Where the open appeals moved in this transaction went: (how many, the building's name, 「第二网格」 or 未划分网格),
    most first; [] when none moved. For the console's message after a save or a merge that took them along."""
    ids = list(session.info.get(MOVED_KEY, {}))
    if not ids:
        return []
    session.flush()
    rows = session.execute(select(Appeal.building_id, Appeal.grid_id, func.count(Appeal.id))
                           .where(Appeal.id.in_(ids)).group_by(Appeal.building_id, Appeal.grid_id)
                           .order_by(func.count(Appeal.id).desc(), Appeal.building_id)).all()
    out = []
    for building_id, grid_id, n in rows:
        building = session.get(Building, building_id) if building_id is not None else None
        out.append((n, building.name if building is not None else "", grid_words(session, grid_id)))
    return out


def notify_specialist(session: Session, appeal: Appeal, previous_specialist_id: int | None, ev: AppealEvent, *,
                      actor: Actor = SYSTEM, now: datetime | None = None) -> int:
    """An open appeal moved to another grid (its building changed grid, it moved building, it came back into
    handling there) lands with that grid's specialist (服务专员), who hears of it as a department hears of a 交办:
    once per move (`ev`, the move's timeline row), in the inbox and by WeChat if their account is linked; not the
    staff member moving it, not a specialist who already had it, never the enterprise (staff's routing). An appeal
    not being handled (已合并, 已办结) is nobody's work: nothing is said."""
    staff_id = appeal.specialist_staff_id
    batch: AlertBatch | None = session.info.get(ALERTS_KEY)
    merged_along = batch is not None and appeal.status == S.DUPLICATE  # counted in the message, no work of its own
    if staff_id is None or staff_id == previous_specialist_id or (appeal.status not in OPEN and not merged_along):
        return 0
    acting = int(actor.id) if actor.type == "staff" and actor.id is not None else None
    if staff_id == acting:
        return 0
    if batch is not None:  # told with the others moved in the same change, when it ends (specialist_alerts)
        batch.landed.append((appeal, staff_id, ev, merged_along))
        return 0
    session.flush()  # the move's row id is the key
    return _alert_staff(session, appeal, "grid_changed", f"grid_changed:{ev.id}", [StaffUser.id == staff_id],
                        "服务专员", acting=acting, grid=grid_words(session, appeal.grid_id), say_unreachable=False,
                        now=now)


# session.info key: the batch of appeals moved to a specialist during one change (specialist_alerts).
ALERTS_KEY = "specialist_alerts"
BATCH_SHOWN = 3  # numbers named in a batched message; the rest are counted (the text stays short for WeChat)


@dataclass
class AlertBatch:
    """The appeals one change moved to specialists, and (once sent) who was told: [{"staff_id", "name", "appeals"}]."""

    landed: list = field(default_factory=list)  # (appeal, staff_id, event, merged along)
    told: list = field(default_factory=list)
    sent: bool = False  # this scope sent them (an inner scope's batch is sent by the outer one, later)

    def audited(self, moved: Any) -> dict[str, Any]:
        """For the change's audit row: {"notified": told} once sent and when appeals moved (nobody told is said), or {}."""
        return {"notified": self.told} if self.sent and moved else {}


@contextmanager
def specialist_alerts(session: Session, actor: Actor = SYSTEM, *, now: datetime | None = None) -> Iterator[AlertBatch]:
    """Collect the alerts of appeals moved to another grid's specialist (notify_specialist) over one change, and tell
    each specialist once when it ends: a building regridded or merged, an import, an enterprise moved with several
    open appeals sent one message per appeal to the same person. A scope inside another adds to the outer one (which
    sends); nothing is sent when the change fails. `told` names who was told, for the change's audit row."""
    outer = session.info.get(ALERTS_KEY)
    if outer is not None:
        yield outer
        return
    batch = AlertBatch()
    session.info[ALERTS_KEY] = batch
    try:
        yield batch
    finally:
        session.info.pop(ALERTS_KEY, None)
    batch.told, batch.sent = _send_batch(session, batch.landed, actor, now), True


def _send_batch(session: Session, landed: list, actor: Actor, now: datetime | None) -> list[dict[str, Any]]:
    by_staff: dict[int, list] = {}
    for item in landed:
        by_staff.setdefault(item[1], []).append(item)
    acting = int(actor.id) if actor.type == "staff" and actor.id is not None else None
    told = []
    for staff_id, items in by_staff.items():
        open_ = [(a, ev) for a, _, ev, merged in items if not merged]
        merged = [a for a, _, _, m in items if m]
        try:
            session.flush()  # the moves' row ids are the keys
            if len(open_) == 1 and not merged:  # one appeal: its own message, as before
                appeal, ev = open_[0]
                n = _alert_staff(session, appeal, "grid_changed", f"grid_changed:{ev.id}", [StaffUser.id == staff_id],
                                 "服务专员", acting=acting, grid=grid_words(session, appeal.grid_id),
                                 say_unreachable=False, now=now)
            else:
                n = _tell_batch(session, staff_id, open_, merged, items[0][2], now)
        except Exception:  # noqa: BLE001 - the move is saved whatever happens here
            log.exception("specialist alert failed", extra={"staff_id": staff_id})
            n = 0
        if n:
            staff = session.get(StaffUser, staff_id)
            told.append({"staff_id": staff_id, "name": (staff.display_name or staff.username) if staff else "",
                         "appeals": len(items)})
    return told


def _tell_batch(session: Session, staff_id: int, open_: list, merged: list, first_ev: AppealEvent,
                now: datetime | None) -> int:
    """One message to `staff_id` for the open appeals (and the merged ones taken along) one change moved to their grid:
    the count, the first few numbers, the soonest deadline; a staff_notified row on each open one. 0 when their account
    has no linked WeChat (the list shows the appeals)."""
    from ..notices.broadcast_models import StaffTestRecipient
    from ..notices.models import Notification
    from ..notices.services import notify

    user_id = session.scalar(select(StaffTestRecipient.user_id).join(StaffUser, StaffUser.id == StaffTestRecipient.staff_id)
                             .where(StaffUser.id == staff_id, StaffUser.active.is_(True)))
    if user_id is None:
        return 0
    key = f"grid_moved:{first_ev.id}"
    dedup = f"staff:{key}:{staff_id}"
    if session.scalar(select(Notification.id).where(Notification.dedup_key == dedup)) is not None:
        return 0
    appeals = [a for a, _ in open_] or merged
    grids: list[str] = []
    for a in appeals:
        words = grid_words(session, a.grid_id)
        if words not in grids:
            grids.append(words)
    running = [a for a in appeals if a.due_at is not None and a.status in CLOCK_RUNNING]
    soonest = ""
    if running:
        first = min(running, key=lambda a: (a.due_at, a.id))
        local = first.due_at.astimezone(TZ)
        soonest = f"，最早的 {first.number} 请在 {local.month}月{local.day}日 {local:%H:%M} 前办结"
    numbers = [a.number for a in appeals]
    shown = "、".join(numbers[:BATCH_SHOWN]) + ("等" if len(numbers) > BATCH_SHOWN else "")
    where = "".join(grids[:BATCH_SHOWN]) + ("等网格" if len(grids) > BATCH_SHOWN else "")
    if open_:
        title = f"{STAFF_ALERT_TITLES['grid_changed']}：" + (numbers[0] if len(numbers) == 1 else f"{len(numbers)} 件诉求")
        body = f"诉求 {shown}（共 {len(numbers)} 件）已转由{where}办理，您是该网格的服务专员{soonest}"
        if merged:
            body += f"；另有 {len(merged)} 件合并办理的诉求随主诉求一并转入"
        body += "，请登录工作台查看并跟进。"
    else:
        title = f"{STAFF_ALERT_TITLES['grid_changed']}：{len(numbers)} 件合并诉求"
        body = (f"{len(numbers)} 件合并办理的诉求（{shown}）随楼宇转到{where}，由各自的主诉求一并办理，"
                "请登录工作台查看。")
    with session.begin_nested():
        notify(session, user_id, "appeal_staff_alert",
               {"number": appeals[0].number, "status": STAFF_ALERTS["grid_changed"][0], "note": "请登录工作台查看"},
               "pages/me/index", title=title, body=body, ref=f"appeal:{appeals[0].id}", dedup_key=dedup)
    for a, _ in open_:
        _event(session, a, SYSTEM, "staff_notified", note=f"已通知服务专员中已绑定微信的 1 人（{STAFF_ALERT_TITLES['grid_changed']}，"
               f"与同批转入的 {len(numbers)} 件一并通知）", alert="grid_changed", key=key, at=now)
    return 1


def grid_words(session: Session, grid_id: int | None) -> str:
    """「第一网格」, or 未划分网格: for the notes and messages that say where something went."""
    from ..enterprises.models import Grid

    grid = session.get(Grid, grid_id) if grid_id is not None else None
    return f"「{grid.name}」" if grid is not None else "未划分网格"


def follow_enterprise_to_building(session: Session, actor: Actor, enterprise: Enterprise,
                                  old_building_id: int | None, *, merged_into: Enterprise | None = None) -> list[int]:
    """An enterprise moved to another building takes the open appeals it filed at the old one along (left there,
    the old building's record and grid team kept a problem of a company no longer in it). Closed ones, and those
    filed about another building, stay as they are. With `merged_into`, the enterprise is a duplicate file being
    merged into that one (call it before its appeals are moved over): they go to the kept file's building, if it
    has one. Returns the ids moved."""
    target = merged_into or enterprise
    new = session.get(Building, target.building_id) if target.building_id is not None else None
    if new is None or old_building_id is None or new.id == old_building_id:
        return []
    moving = list(session.scalars(select(Appeal).where(
        Appeal.enterprise_id == enterprise.id, Appeal.building_id == old_building_id,
        Appeal.status.in_([s.value for s in OPEN])).order_by(Appeal.id)))
    if not moving:
        return []
    old = session.get(Building, old_building_id)
    where = f"「{old.name if old else '原楼宇'}」"
    if merged_into is not None:
        note = (f"企业档案「{enterprise.name}」（{where}）与「{merged_into.name}」（「{new.name}」）是同一家企业，已合并，"
                f"未办结的诉求随企业档案转到「{new.name}」")
    else:
        note = f"企业「{enterprise.name}」从{where}搬到「{new.name}」，未办结的诉求随企业转到新楼宇"
    if old is None or old.grid_id != new.grid_id:
        note += f"，由{grid_words(session, new.grid_id)}办理"
    move_to_building(session, actor, moving, new, note)
    return [a.id for a in moving]


def follow_grid_specialist(session: Session, grid_id: int, specialist_staff_id: int | None) -> list[int]:
    """A grid's specialist changed: its open appeals name the new one (the old one no longer serves it)."""
    ids = list(session.scalars(select(Appeal.id).where(
        Appeal.grid_id == grid_id, Appeal.status.in_([s.value for s in OPEN]),
        or_(Appeal.specialist_staff_id.is_(None), Appeal.specialist_staff_id != specialist_staff_id)
        if specialist_staff_id is not None else Appeal.specialist_staff_id.is_not(None)).order_by(Appeal.id)))
    for appeal in session.scalars(select(Appeal).where(Appeal.id.in_(ids))) if ids else ():
        appeal.specialist_staff_id = specialist_staff_id
    return ids


def notify_grid_specialist(session: Session, grid: Any, appeal_ids: list[int], key: str, *,
                           actor: Actor = SYSTEM) -> int:
    """A grid given another specialist (服务专员) hands them its open appeals (follow_grid_specialist): they hear of it
    as a specialist hears of an appeal moved to their grid (notify_specialist), but once for the change, in one
    message (网格「X」的 N 件未办结诉求转由您跟进, with the soonest deadline), not one per appeal. `key` names the change
    (its audit row): the same change replayed tells nobody again. Not the staff member making the change, never the
    enterprise; nothing when none of them is still open or the specialist has no linked WeChat (the list shows
    them). Written in the caller's transaction; never raises. Returns how many were told (0 or 1)."""
    from ..notices.broadcast_models import StaffTestRecipient
    from ..notices.models import Notification
    from ..notices.services import notify

    staff_id = grid.specialist_staff_id
    acting = int(actor.id) if actor.type == "staff" and actor.id is not None else None
    if staff_id is None or staff_id == acting or not appeal_ids:
        return 0
    try:
        appeals = list(session.scalars(select(Appeal).where(
            Appeal.id.in_(appeal_ids), Appeal.grid_id == grid.id, Appeal.specialist_staff_id == staff_id,
            Appeal.status.in_([s.value for s in OPEN])).order_by(Appeal.id)))
        user_id = session.scalar(select(StaffTestRecipient.user_id)
                                 .join(StaffUser, StaffUser.id == StaffTestRecipient.staff_id)
                                 .where(StaffUser.id == staff_id, StaffUser.active.is_(True)))
        if not appeals or user_id is None:
            return 0
        running = [a for a in appeals if a.due_at is not None and a.status in CLOCK_RUNNING]
        first = min(running, key=lambda a: (a.due_at, a.id)) if running else appeals[0]
        soonest = ""
        if running:
            local = first.due_at.astimezone(TZ)
            soonest = f"，最早的 {first.number} 请在 {local.month}月{local.day}日 {local:%H:%M} 前办结"
        status, title = STAFF_ALERTS["grid_specialist_changed"][0], STAFF_ALERT_TITLES["grid_specialist_changed"]
        body = STAFF_ALERTS["grid_specialist_changed"][1].format(grid=grid.name, n=len(appeals), soonest=soonest)
        dedup = f"grid:{grid.id}:{key}:{staff_id}"
        if session.scalar(select(Notification.id).where(Notification.dedup_key == dedup)) is not None:
            return 0
        with session.begin_nested():
            notify(session, user_id, "appeal_staff_alert",
                   {"number": first.number, "status": status, "note": "请登录工作台查看"}, "pages/me/index",
                   title=f"{title}：{grid.name}", body=body, ref=f"grid:{grid.id}", dedup_key=dedup)
        return 1
    except Exception:  # noqa: BLE001 - the grid's change is saved whatever happens here
        log.exception("grid specialist alert failed", extra={"grid_id": grid.id, "staff_id": staff_id})
        return 0


def similar_open(session: Session, appeal: Appeal, *, limit: int = 5, threshold: float = 0.2,
                 actor: Actor | None = None) -> list[tuple[Appeal, float]]:
    """Open appeals in the same building and category (when known) whose text looks alike, best first; for a
    department account only those it may open itself (get_appeal)."""
    q = select(Appeal).where(Appeal.id != appeal.id, Appeal.status.in_([s.value for s in OPEN]),
                             Appeal.master_id.is_(None))
    if actor is not None and _dept_only(actor):
        q = q.where(_dept_clause(actor.department))
    if appeal.building_id is not None:
        q = q.where(Appeal.building_id == appeal.building_id)
    if appeal.category_id is not None:
        q = q.where(Appeal.category_id == appeal.category_id)
    if appeal.building_id is None and appeal.category_id is None:
        return []
    scored = []
    for other in session.scalars(q.order_by(Appeal.id.desc()).limit(200)).unique():
        score = classify.similarity(appeal.content, other.content)
        if score >= threshold:
            scored.append((other, score))
    scored.sort(key=lambda t: -t[1])
    return scored[:limit]


# --- enterprise-side actions ----------------------------------------------------------------------------

# What an enterprise may withdraw: an open appeal, or one merged into another's (its problem may have gone away; it
# was refused with “已合并，不能撤回” and then told the master's result as its own).
WITHDRAWABLE = OPEN | {S.DUPLICATE}


def withdraw(session: Session, user_id: int, appeal_id: int, reason: str = "", now: datetime | None = None) -> Appeal:
    """企业撤回: its timeline rows, closing time and the tasks and requests it ends are stamped `now` (the caller's
    clock, as every other service: the real clock here put them after rows written on a travelled one)."""
    appeal = get_appeal(session, appeal_id, Actor("user", user_id), lock=True)
    if appeal.status == S.WITHDRAWN:
        return appeal  # a double tap: the first one did it (as cancelling a registration twice is harmless)
    if appeal.status not in WITHDRAWABLE:
        raise Conflict(f"诉求当前为“{appeal.status_label}”，不能撤回。", code="illegal_transition")
    now = now or utcnow()
    transition(session, appeal, S.WITHDRAWN, Actor("user", user_id), action="withdrawn", now=now,
               note=f"企业撤回诉求{('：' + reason) if reason else ''}")
    _cancel_open_tasks(session, appeal, "企业已撤回诉求，任务取消", now)
    _release_children(session, appeal, now)
    if appeal.master_id is not None:
        # A withdrawn child is no longer one of its master's: kept, it still made the master “已是其他诉求的主诉求”.
        master = session.get(Appeal, appeal.master_id)
        appeal.master_id = None
        if master is not None:
            master.version += 1
            _event(session, master, SYSTEM, "noted", at=now, note=f"并入本诉求的 {appeal.number} 已由企业撤回", child=appeal.number)
    return appeal


def press_own(session: Session, user_id: int, appeal_id: int, now: datetime | None = None) -> bool:
    """企业催办: the enterprise presses its own open appeal (in the chat: “催一下”). One a day per appeal is written on
    the timeline (an event and an audit row) for the staff handling it; returns False when already pressed today."""
    now = now or utcnow()
    actor = Actor("user", user_id)
    # Locked: two presses at once (a double tap, the chat and the mini-program) each found no press today and both
    # wrote one, alerting the department twice.
    appeal = get_appeal(session, appeal_id, actor, lock=True)
    if appeal.status not in OPEN:
        raise Conflict(f"诉求当前为“{appeal.status_label}”，不需要催办。", code="illegal_transition")
    if appeal.status == S.PENDING_ENTERPRISE:
        # Staff wait on the enterprise (its clock stopped): a press alerted the department that the enterprise was
        # in a hurry, and told the enterprise to wait, while the next step was theirs.
        asked = f"：{appeal.info_request}" if appeal.info_request else ""
        raise Conflict(f"诉求 {appeal.number} 正在等您补充材料{asked}。补充后工作人员会继续办理。",
                       code="awaiting_supplement")
    day_start = datetime.combine(local_date(now), datetime.min.time(), TZ)
    pressed = session.scalar(select(AppealEvent.id).where(
        AppealEvent.appeal_id == appeal.id, AppealEvent.action == "pressed", AppealEvent.actor_type == "user",
        AppealEvent.created_at >= day_start).limit(1))
    if pressed is not None:
        return False
    ev = _event(session, appeal, actor, "pressed", at=now, note="企业在对话中催办", public=True, department=appeal.department)
    session.flush()
    notify_department(session, appeal, "pressed", f"pressed:{ev.id}", now=now)
    return True


def _cancel_open_tasks(session: Session, appeal: Appeal, why: str, now: datetime, *,
                       kinds: tuple[str, ...] = (TaskKind.COORDINATION, TaskKind.ESCALATION),
                       requests: bool = True) -> None:
    """An appeal that ends without being handled (withdrawn, rejected) owes no 会办 and no 办不成事 answer: their
    tasks stayed open, so the window's 办不成事待处理 kept it for good (flagged overdue after 3 days) and the 会办
    departments kept it in their queues. A 差评整改 task is about work already done and stays. With `kinds` only
    those tasks (the 办结 closes the 会办 only: a 办不成事 on a resolved appeal is still owed an answer); without
    `requests` the pending 退单 and 延期 are left to the caller (the 办结 ends them with its own cause)."""
    for task in session.scalars(select(AppealTask).where(
            AppealTask.appeal_id == appeal.id, AppealTask.status == "open", AppealTask.kind.in_(list(kinds)))):
        task.status, task.result, task.closed_at = "cancelled", why, now
        _event(session, appeal, SYSTEM, "task_cancelled", at=now, note=f"{task.department}：{why}", task_id=task.id,
               department=task.department)
    if not requests:
        return
    # A 退单 or 延期 still waiting for the centre is moot too: left pending, it stayed in the centre's queue until
    # someone turned it down by hand.
    _end_pending_requests(session, appeal, why.split("，")[0], now)  # 企业已撤回诉求 / 诉求不予受理


def _end_pending_requests(session: Session, appeal: Appeal, cause: str, now: datetime) -> None:
    """The 退单 and 延期 requests still waiting for the centre end with the appeal's handling (withdrawn, rejected,
    办结): decided by "system", with a staff-only timeline entry saying why.

    The reads do not flush the caller's pending changes: flushed here, a merge wrote its own row before its master's
    (at commit), so two merges in opposite directions could deadlock where one flush writes both rows in key order."""
    with session.no_autoflush:
        pending = [*session.scalars(select(AppealReturn).where(AppealReturn.appeal_id == appeal.id,
                                                               AppealReturn.status == "pending")),
                   *session.scalars(select(AppealExtension).where(AppealExtension.appeal_id == appeal.id,
                                                                  AppealExtension.status == "pending"))]
    for req in pending:
        req.status, req.decided_by, req.decided_at = "rejected", "system", now
        if isinstance(req, AppealReturn):
            req.decision_note = f"{cause}，退单不再需要审核"
            what = f"{req.department}的退单申请"
        else:
            what = f"延期 {req.working_days} 个工作日的申请"
        _event(session, appeal, SYSTEM, "noted", at=now, note=f"{what}随之结束（{cause}）", request_id=req.id)


def _release_children(session: Session, master: Appeal, now: datetime) -> None:
    """A master that ends without a resolution (withdrawn, rejected) will never resolve its merged children:
    each goes on as its own appeal, as a split by staff would."""
    for child in session.scalars(select(Appeal).where(Appeal.master_id == master.id,
                                                      Appeal.status == S.DUPLICATE.value)).unique():
        transition(session, child, S.ACCEPTED, SYSTEM, action="split", now=now,
                   note=f"合并的主诉求 {master.number} 已不再办理，您的诉求恢复单独办理")
        child.master_id = None
        # It was told to wait for the master's result, which will not come now: say so, as a split by staff does.
        _notify(session, child, "appeal_split", f"您的诉求 {child.number} 原与 {master.number} 合并办理，该诉求已不再办理，"
                "您的诉求恢复单独办理，办结后会通知您结果。", f"split:{child.version}", now=now)


def _supplement_retried(session: Session, appeal: Appeal, user_id: int, content: str, since: datetime) -> bool:
    """The appeal's last supplement, since `since`, was this user's with these very words."""
    last = session.scalar(select(AppealEvent).where(AppealEvent.appeal_id == appeal.id,
                                                    AppealEvent.action == "supplemented")
                          .order_by(AppealEvent.id.desc()).limit(1))
    return (last is not None and last.actor_type == "user" and last.actor_id == str(user_id)
            and last.created_at > since and last.note == f"企业补充：{content}")


def supplement(session: Session, user_id: int, appeal_id: int, content: str, images: list[dict] | None = None,
               now: datetime | None = None, retry_window: timedelta | None = None) -> Appeal:
    """补充材料: only when asked; the paused clock resumes from where it stopped. Given `retry_window`, the same words
    sent again within it after they were taken (the page's retry) answer with the appeal and change nothing: the
    caller drops the photos the retry carried (they are not among appeal.images)."""
    actor = Actor("user", user_id)
    appeal = get_appeal(session, appeal_id, actor, lock=True)
    if appeal.status != S.PENDING_ENTERPRISE:
        if retry_window and _supplement_retried(session, appeal, user_id, content, (now or utcnow()) - retry_window):
            return appeal
        raise Conflict("这条诉求目前不需要补充材料。", code="not_pending_enterprise")
    if images:
        have = len(appeal.images or [])
        if have + len(images) > 9:  # say how many still fit: the nine are counted with those sent before
            msg = (f"这条诉求已有 {have} 张照片，最多还能补充 {9 - have} 张。" if have < 9
                   else "这条诉求的照片已满 9 张，不能再加照片，请用文字说明补充的内容。")
            raise ValidationError(msg, fields={"images": msg})
        appeal.images = list(appeal.images or []) + images
    back = AppealStatus(appeal.paused_from or S.IN_PROGRESS.value)
    transition(session, appeal, back, actor, action="supplemented", note=f"企业补充：{content}", now=now,
               images=[i["name"] for i in images or []])
    appeal.info_request = ""
    _end_coordination_if_done(session, appeal, now or utcnow())  # its tasks may have been done during the wait
    return appeal


def watch_info_wait(session: Session, appeal: Appeal, now: datetime) -> str:
    """待补充材料 waited for ever: after `INFO_REMIND_DAYS` working days the enterprise is reminded (once per
    request), after `INFO_GIVE_UP_DAYS` the tick ends the wait — the appeal goes back to where it was asked from
    (its clock resumes) to be handled on the material it has, and the enterprise is told. Returns what it did:
    "reminded", "resumed" or ""."""
    if appeal.status != S.PENDING_ENTERPRISE or appeal.paused_at is None:
        return ""
    cal = work_calendar(session)
    waited = cal.working_minutes_between(appeal.paused_at, now)
    asked = f"：{appeal.info_request}" if appeal.info_request else ""
    if waited >= INFO_GIVE_UP_DAYS * DAY_MINUTES:
        back = AppealStatus(appeal.paused_from or S.IN_PROGRESS.value)
        transition(session, appeal, back, SYSTEM, action="info_timeout", now=now, department=appeal.department,
                   note=f"企业 {INFO_GIVE_UP_DAYS} 个工作日未补充材料，转回{appeal.department or '承办部门'}按现有材料继续办理"
                   "（可联系企业核实）",
                   public_note=f"{INFO_GIVE_UP_DAYS} 个工作日内未收到补充材料，按现有材料继续办理")
        _end_coordination_if_done(session, appeal, now)
        _notify(session, appeal, "appeal_accepted", f"您的诉求 {appeal.number} 等待补充材料已满 {INFO_GIVE_UP_DAYS} 个工作日，"
                "我们将按现有材料继续办理，办结后会通知您结果。如还有材料要提供，请直接联系承办部门。",
                f"info_timeout:{appeal.version}", title="您的诉求已按现有材料继续办理", now=now)
        return "resumed"
    paused = appeal.paused_at.isoformat()
    if waited >= INFO_REMIND_DAYS * DAY_MINUTES and not any(
            (d or {}).get("paused_at") == paused for d in session.scalars(select(AppealEvent.data).where(
                AppealEvent.appeal_id == appeal.id, AppealEvent.action == "info_reminded"))):
        _event(session, appeal, SYSTEM, "info_reminded", at=now, note=f"企业 {INFO_REMIND_DAYS} 个工作日未补充材料，已提醒企业",
               paused_at=paused)
        _notify(session, appeal, "appeal_needs_info", f"您的诉求 {appeal.number} 还在等您补充材料{asked}。补充后我们马上继续办理；"
                f"满 {INFO_GIVE_UP_DAYS} 个工作日未补充的，将按现有材料继续办理。", f"info_reminder:{paused}",
                title="提醒：您的诉求还需补充材料", now=now)
        return "reminded"
    return ""


def rate(session: Session, user_id: int, appeal_id: int, *, resolved: bool, satisfaction: int, comment: str = "",
         now: datetime | None = None) -> AppealRating:
    """好差评, one per resolution round. 'Not resolved' reopens; a bad one opens 整改; two bad ones escalate."""
    now = now or utcnow()
    if isinstance(satisfaction, bool) or not isinstance(satisfaction, int) or not 1 <= satisfaction <= 5:
        # The API and the chat check it too; reaching the table's check, it read as “已经评价过了” in the chat.
        raise ValidationError("满意度请打 1 到 5 分。", fields={"satisfaction": "应为 1 到 5 分"})
    actor = Actor("user", user_id)
    appeal = get_appeal(session, appeal_id, actor, lock=True)
    if session.scalar(select(AppealRating.id).where(AppealRating.appeal_id == appeal.id,
                                                    AppealRating.round == appeal.round)):
        raise Conflict("这一轮办理您已经评价过了。", code="already_rated")
    if appeal.status in OPEN and appeal.round > 1 and session.scalar(select(AppealRating.id).where(
            AppealRating.appeal_id == appeal.id, AppealRating.round == appeal.round - 1)):
        # Their "not resolved" reopened it (a double tap lands here): they rated, it was not "never resolved".
        raise Conflict("您已经评价过了，诉求正在重新办理，办结后可以再次评价。", code="already_rated")
    if appeal.status in OPEN or appeal.status == S.DUPLICATE:
        raise Conflict("诉求尚未办结，办结后才能评价。", code="not_resolved_yet")
    ends = rating_window_ends(appeal, work_calendar(session), any_status=True)
    if appeal.status != S.RESOLVED or ends is None or now > ends:
        if appeal.status != S.RESOLVED and (ends is None or now <= ends):
            # Closed (staff confirmed it with the enterprise, say), rejected or withdrawn: not a lapsed window.
            raise Conflict(f"诉求当前为“{appeal.status_label}”，不需要再评价了。如问题仍未解决，请重新提交诉求。",
                           code="not_awaiting_rating")
        raise Conflict("已超过评价期限（办结后 7 个工作日内），如问题仍未解决请重新提交诉求。", code="rating_window_over")
    # Who handled this round: a merged child was resolved by its master's department, whatever its own routing.
    # Never given out (交办), the centre handled it: the department the rules guessed was credited the rating (its
    # 满意率) and given the 整改 of a 差评 on an appeal it never had.
    master = session.get(Appeal, appeal.master_id) if appeal.master_id else None
    handling = master if master is not None and master.department else appeal
    handled_by = handling.department if given_out(session, handling) else CENTRE
    rating = AppealRating(appeal_id=appeal.id, user_id=user_id, round=appeal.round, resolved=resolved,
                          satisfaction=satisfaction, comment=comment, department=handled_by, created_at=now)
    session.add(rating)
    session.flush()
    _event(session, appeal, actor, "rated", at=now, note=f"企业评价：{'已解决' if resolved else '未解决'}，满意度 {satisfaction} 星"
           + (f"，{comment}" if comment else ""), public=True, round=appeal.round, resolved=resolved,
           satisfaction=satisfaction)
    cal = work_calendar(session)
    if satisfaction <= BAD_SATISFACTION:
        task = AppealTask(appeal_id=appeal.id, kind=TaskKind.RECTIFICATION, department=handled_by or "营商服务中心",
                          description=f"差评整改（第 {appeal.round} 轮，{satisfaction} 星）：{comment}", required=False,
                          due_at=cal.add_working_days(now, 5), created_by="system")
        session.add(task)
        _event(session, appeal, SYSTEM, "rectification_opened", at=now, note="差评，已生成整改任务",
               department=task.department)
    bad = session.scalar(select(func.count(AppealRating.id)).where(
        AppealRating.appeal_id == appeal.id, AppealRating.satisfaction <= BAD_SATISFACTION)) or 0
    if bad >= 2 and not appeal.escalated:
        escalate(session, SYSTEM, appeal, reason="两次差评，系统自动转入办不成事窗口", now=now)
    if resolved:
        transition(session, appeal, S.CLOSED, actor, action="closed", note="企业确认已解决，诉求关闭", now=now)
    else:
        appeal.round += 1
        appeal.reopen_count += 1
        if appeal.master_id is not None:
            # Its 办结 was its master's, counted in 按时办结率 as the master's: on its own now, its own first 办结 is the
            # one to count (kept, it joined the figure of that week a second time, judged on its paused deadline).
            appeal.first_resolved_at, appeal.resolved_on_time = None, None
        appeal.master_id = None  # a merged child that is not resolved goes on as its own appeal
        promised = appeal.category.promised_days if appeal.category else DEFAULT_PROMISED_DAYS
        appeal.due_at = cal.add_working_days(now, promised)
        appeal.overdue, appeal.warned_due_at, appeal.resolved_at = False, None, None
        appeal.resolution = ""  # the result they said did not solve it stays on the timeline, not as this round's
        transition(session, appeal, S.IN_PROGRESS, actor, action="reopened", now=now,
                   note="企业反馈问题未解决，诉求重新办理")
    return rating


NOT_ESCALATABLE = frozenset({S.CLOSED, S.REJECTED, S.WITHDRAWN, S.DUPLICATE})


def escalate(session: Session, actor: Actor, appeal: Appeal, *, reason: str, now: datetime | None = None,
             public_note: str | None = None) -> bool:
    """办不成事: flag, set the escalation deadline, give the owner a task, tell the enterprise. Once only.
    `public_note`: what the enterprise's timeline reads instead of the reason (a staff member's reason is staff's)."""
    if appeal.escalated:
        return False
    if appeal.status in NOT_ESCALATABLE:
        raise Conflict(f"诉求当前为“{appeal.status_label}”，不能再反映办不成事。", code="illegal_transition")
    now = now or utcnow()
    cal = work_calendar(session)
    appeal.escalated, appeal.escalated_at, appeal.escalation_reason = True, now, reason
    appeal.escalation_due_at = cal.add_working_days(now, ESCALATION_DAYS)
    appeal.version += 1
    session.add(AppealTask(appeal_id=appeal.id, kind=TaskKind.ESCALATION, department=ESCALATION_OWNER,
                           description=f"办不成事：{reason}", required=False, due_at=appeal.escalation_due_at,
                           created_by=str(actor.name or actor.id)))
    _event(session, appeal, actor, "escalated", at=now, note=f"转入“办不成事”反映窗口：{reason}", public=True,
           escalation_due_at=appeal.escalation_due_at, public_note=public_note)
    _notify(session, appeal, "appeal_escalated", f"您的诉求 {appeal.number} 已转入“办不成事”反映窗口，"
            f"将在 3 个工作日内由专人联系您。", "escalated", now=now)
    _notify_escalation_owner(session, appeal, reason, actor, now=now)
    return True


def _tell_linked_staff(session: Session, appeal: Appeal, who: Any, kind: str, status: str, title: str, body: str,
                       key: str) -> int:
    """Each active staff account matching `who` whose account is linked to a WeChat user (“绑定 123456”,
    `notices.broadcast.redeem_link_code`; the link the notice composer's test sends use) gets an in-app notice
    (inbox always; a subscribe or customer-service message when WeChat lets it), once per `key`. The number only,
    not the complaint (the linked user is whoever the staff member named), and not the appeal's page: it is not
    the linked user's own appeal (诉求不存在 when tapped). One failure does not stop the others; returns how many."""
    from ..notices.broadcast_models import StaffTestRecipient
    from ..notices.services import notify

    rows = session.execute(select(StaffUser.id, StaffTestRecipient.user_id)
                           .join(StaffTestRecipient, StaffTestRecipient.staff_id == StaffUser.id)
                           .where(who, StaffUser.active.is_(True))).all()
    told = 0
    for staff_id, user_id in rows:
        try:
            with session.begin_nested():
                notify(session, user_id, kind, {"number": appeal.number, "status": status, "note": "请登录工作台查看"},
                       "pages/me/index", title=title, body=body, ref=f"appeal:{appeal.id}",
                       dedup_key=f"appeal:{appeal.id}:{key}:{staff_id}")
            told += 1
        except Exception:  # noqa: BLE001 - the others are still told; the task, timeline and dashboard show it
            log.exception("staff notification failed", extra={"appeal_id": appeal.id, "staff_id": staff_id})
    return told


def _notify_escalation_owner(session: Session, appeal: Appeal, reason: str, actor: Actor = SYSTEM,
                             now: datetime | None = None) -> None:
    """The 办不成事 window is the centre's admins and the window's own accounts (who hold its task, and were told
    nothing until it was 3 days late): each one with a linked WeChat user gets a message too, except the staff
    member escalating it; unlinked ones see the task and the dashboard count."""
    acting = int(actor.id) if actor.type == "staff" and actor.id is not None else 0
    who = and_(or_(StaffUser.role == StaffRole.ADMIN, StaffUser.department == ESCALATION_OWNER), StaffUser.id != acting)
    told = _tell_linked_staff(session, appeal, who, "appeal_escalated", "办不成事",
                              "办不成事：请 3 个工作日内处理",
                              f"诉求 {appeal.number} 已转入“办不成事”窗口，请在 3 个工作日内登录工作台查看处理。",
                              "escalated:owner")
    if told:
        _event(session, appeal, SYSTEM, "owner_notified", note=f"已通知办不成事窗口负责人 {told} 人", public=False, at=now)


STAFF_ALERTS = {"overdue": ("已超期", "诉求 {number} 已超过办结期限，请尽快办理并登录工作台查看。"),
                "pressed": ("企业催办", "企业催办诉求 {number}，请尽快办理并登录工作台查看。"),
                "due_soon": ("临期", "诉求 {number} 距办结期限不足 1 个工作日，请在 {due} 前办结，并登录工作台查看。"),
                "urged": ("催办", "营商服务中心催办诉求 {number}{note}，请尽快办理并登录工作台查看。"),
                "task_overdue": ("会办超期", "诉求 {number} 交{department}会办的任务已超过期限，请尽快办理并登录工作台查看。"),
                "rectification_overdue": ("整改超期", "诉求 {number} 差评后交{department}的整改任务已超过期限，"
                                          "请尽快整改并登录工作台查看。"),
                "escalation_overdue": ("办不成事", "诉求 {number} 转入“办不成事”窗口已超过 3 个工作日仍未处理完，"
                                       "请尽快联系企业并登录工作台查看。"),
                "task_assigned": ("会办", "诉求 {number} 需要{department}协助会办（期限{note}），请登录工作台查看并办理。"),
                "return_requested": ("待审核", "{department}申请退回诉求 {number}{note}，请登录工作台审核。"),
                "extension_requested": ("待审批", "{department}申请诉求 {number} 延期{note}，请在办结期限前登录工作台审批。"),
                "return_rejected": ("退单未通过", "诉求 {number} 的退单申请未获同意，仍由{department}办理{due_note}，"
                                    "请登录工作台查看。"),
                "extension_approved": ("延期已同意", "诉求 {number} 的延期申请已同意{note}，请登录工作台查看。"),
                "extension_rejected": ("延期未同意", "诉求 {number} 的延期申请未获同意{due_note}，请登录工作台查看。"),
                "assigned": ("已交办", "诉求 {number} 已交办{department}办理{due_note}，请登录工作台查看。"),
                "handler_changed": ("改派承办人", "诉求 {number} 已改由您承办{due_note}，请登录工作台查看。"),
                "grid_changed": ("转入网格", "诉求 {number} 已转由{grid}办理，您是该网格的服务专员{due_note}，"
                                 "请登录工作台查看并跟进。"),
                # one message for a grid's open appeals given to its new specialist (notify_grid_specialist)
                "grid_specialist_changed": ("转由您跟进", "网格「{grid}」的 {n} 件未办结诉求转由您跟进{soonest}，"
                                            "请登录工作台查看。")}
# The inbox title's word where the status phrase (5 characters at most in a subscribe message) says less.
STAFF_ALERT_TITLES = {"return_requested": "退单待审核", "extension_requested": "延期待审批",
                      "escalation_overdue": "办不成事超期", "rectification_overdue": "差评整改超期",
                      "task_assigned": "会办任务", "assigned": "新交办诉求", "handler_changed": "改由您承办",
                      "grid_changed": "转入您的网格", "grid_specialist_changed": "网格诉求转由您跟进"}


def notify_department(session: Session, appeal: Appeal, what: str, key: str, *, actor: Actor | None = None,
                      note: str = "", now: datetime | None = None) -> int:
    """临期 / 超期 / 催办 / 企业催办 reach the people answering for the appeal — the handling department's staff and
    its handler (承办人, whatever their department); while it is 已提交, or accepted but not given out (交办), the
    centre's staff and admins and its handler — whose account is linked to a WeChat user, once per event (`key`), never an unlinked account. `actor`,
    a staff member acting (a 催办), is not told of its own act."""
    acting = int(actor.id) if actor is not None and actor.type == "staff" and actor.id is not None else None
    handler = appeal.handler_id if appeal.handler_id != acting else None
    if appeal.status == S.SUBMITTED or not given_out(session, appeal):
        # Not accepted, or accepted and not given out (交办) yet: the centre owes the next step (受理, 交办) and its
        # handler, if any, holds it — not the department the rules guessed at submission, which has not been given
        # it (and is not told it is theirs until the 交办). Accepted, it alerted that department like its own.
        who = [StaffUser.role.in_([StaffRole.STAFF, StaffRole.ADMIN])]
        if handler is not None:
            who.append(StaffUser.id == handler)
        return _alert_staff(session, appeal, what, key, who, f"{CENTRE}工作人员" + ("和承办人" if handler else ""),
                            acting=acting, note=note, department=CENTRE, now=now)
    who = [StaffUser.department == appeal.department] if appeal.department else []
    if handler is not None:
        who.append(StaffUser.id == handler)
    whom = "和".join(([f"{appeal.department}工作人员"] if appeal.department else [])
                    + (["承办人"] if handler is not None else []))
    return _alert_staff(session, appeal, what, key, who, whom, acting=acting, note=note,
                        department=appeal.department, now=now)


def given_out(session: Session, appeal: Appeal) -> bool:
    """The appeal's department was given it (交办: the latest `assigned` or `reassigned` event named it, kept in
    `given_to`), rather than only guessed at submission by the rules (or the category) and kept in `department` as
    the suggestion. models.handled_by is the same rule in SQL."""
    return bool(appeal.department) and appeal.given_to == appeal.department


def notify_assignment(session: Session, appeal: Appeal, what: str, key: str, *, actor: Actor,
                      department: str | None = None, handler_id: int | None = None, now: datetime | None = None) -> int:
    """交办 (`assigned`: `department` newly answers for the appeal, and/or `handler_id` is its new 承办人) or 改派承办人
    (`handler_changed`): those who now answer for it hear of it once (`key`, one per assignment), as they hear of
    its 临期 and 超期 — not the staff member doing it. Nobody new to tell, or nobody of them linked to WeChat:
    nothing is sent and no 未能提醒 is written (the appeal is in their queue; a 临期 or 超期 is still said)."""
    acting = int(actor.id) if actor.type == "staff" and actor.id is not None else None
    handler = handler_id if handler_id != acting else None
    who = ([StaffUser.department == department] if department else []) \
        + ([StaffUser.id == handler] if handler is not None else [])
    if not who:
        return 0
    whom = "和".join(([f"{department}工作人员"] if department else []) + (["新承办人"] if handler is not None else []))
    return _alert_staff(session, appeal, what, key, who, whom, acting=acting,
                        department=department or appeal.department, say_unreachable=False, now=now)


def notify_request(session: Session, appeal: Appeal, what: str, key: str, *, actor: Actor, note: str = "",
                   now: datetime | None = None) -> int:
    """A department's 退单 or 延期 waits for the centre: its linked staff and admins (who decide it) hear of it, not
    the one asking; a 延期 asked for in time otherwise sat on the page while the deadline passed. No 未能提醒 (the
    dashboard's 待审核 card shows it)."""
    acting = int(actor.id) if actor.type == "staff" and actor.id is not None else None
    return _alert_staff(session, appeal, what, key, [StaffUser.role.in_([StaffRole.STAFF, StaffRole.ADMIN])],
                        f"{CENTRE}工作人员", acting=acting, note=note, department=appeal.department or CENTRE,
                        say_unreachable=False, now=now)


def notify_decision(session: Session, appeal: Appeal, what: str, key: str, *, actor: Actor, note: str = "",
                    now: datetime | None = None) -> int:
    """The centre's answer to a department's 退单 (not agreed: it stays) or 延期 reaches the handling department's
    staff and the handler, not the one deciding: it was on the appeal's page only, so a department went on
    waiting for an answer it had been given (or thought its deadline moved). No 未能提醒 (the page says it)."""
    acting = int(actor.id) if actor.type == "staff" and actor.id is not None else None
    handler = appeal.handler_id if appeal.handler_id != acting else None
    # Not given out (交办) yet: the centre's handler asked, not the department the rules guessed (told nothing else
    # of the appeal, it was told of a decision on a request it never made).
    department = appeal.department if given_out(session, appeal) else ""
    who = ([StaffUser.department == department] if department else []) \
        + ([StaffUser.id == handler] if handler is not None else [])
    if not who:
        return 0
    whom = "和".join(([f"{department}工作人员"] if department else []) + (["承办人"] if handler is not None else []))
    return _alert_staff(session, appeal, what, key, who, whom, acting=acting, note=note,
                        department=department or CENTRE, say_unreachable=False, now=now)


def notify_task_department(session: Session, appeal: Appeal, task: AppealTask, what: str, key: str, *,
                           actor: Actor | None = None, now: datetime | None = None) -> int:
    """An alert about a 会办 task (given to it: `task_assigned`; its deadline passed: `task_overdue`) to the staff
    of the department that owes it, not the staff member `actor` acting. A new task nobody could be told of is in
    the department's queue: no 未能提醒 for it."""
    acting = int(actor.id) if actor is not None and actor.type == "staff" and actor.id is not None else None
    note = ""
    if what == "task_assigned" and task.due_at is not None:
        local = task.due_at.astimezone(TZ)
        note = f"{local.month}月{local.day}日 {local:%H:%M}"
    # A 差评整改 of an appeal the centre handled itself (never given out) is the centre's: its staff and admins.
    who = (StaffUser.role.in_([StaffRole.STAFF, StaffRole.ADMIN]) if task.department == CENTRE
           else StaffUser.department == task.department)
    return _alert_staff(session, appeal, what, key, [who],
                        f"{task.department}工作人员", acting=acting, note=note, department=task.department,
                        say_unreachable=what != "task_assigned", now=now)


def notify_escalation_window(session: Session, appeal: Appeal, what: str, key: str, *,
                             now: datetime | None = None) -> int:
    """An alert about a 办不成事 to the window: the centre's admins and the window's own accounts."""
    return _alert_staff(session, appeal, what, key, [StaffUser.role == StaffRole.ADMIN,
                                                      StaffUser.department == ESCALATION_OWNER],
                        "办不成事窗口负责人", department=ESCALATION_OWNER, now=now)


def _alert_staff(session: Session, appeal: Appeal, what: str, key: str, who: list, whom: str, *,
                 acting: int | None = None, note: str = "", department: str = "", say_unreachable: bool = True,
                 grid: str = "", now: datetime | None = None) -> int:
    """Tell the linked staff matching any of `who` (not `acting`); a staff_notified event says who was told, or,
    when nobody could be, a staff_unreachable one says so (on the console's page): the alert is not dropped
    without a word (unless `say_unreachable` is False: news the queue itself shows, a 交办). Never raises: the tick
    and the press go on whatever happens here. Returns how many were told."""
    status, text = STAFF_ALERTS[what]
    due = ""
    if appeal.due_at is not None:
        local = appeal.due_at.astimezone(TZ)
        due = f"{local.month}月{local.day}日 {local:%H:%M}"
    told = 0
    try:
        if who:
            due_note = f"，请在 {due} 前办结" if due and appeal.status in CLOCK_RUNNING else ""
            body = text.format(number=appeal.number, due=due, note=f"：{note}" if note else "", department=department,
                               due_note=due_note, grid=grid)
            told = _tell_linked_staff(session, appeal, and_(or_(*who), StaffUser.id != (acting or 0)),
                                      "appeal_staff_alert", status,
                                      f"{STAFF_ALERT_TITLES.get(what, status)}：{appeal.number}", body, f"staff:{key}")
        if told:
            _event(session, appeal, SYSTEM, "staff_notified", note=f"已通知{whom}中已绑定微信的 {told} 人"
                   f"（{STAFF_ALERT_TITLES.get(what, status)}）", department=department, alert=what, key=key, at=now)
        elif say_unreachable and not _flagged_alert(session, appeal, "staff_unreachable", key):
            why = (f"{whom}的账号都未绑定微信（可在工作台“通知推送”页点“用我的微信绑定”）" if who
                   else "诉求尚未交办，也没有承办人")
            _event(session, appeal, SYSTEM, "staff_unreachable", note=f"{STAFF_ALERT_TITLES.get(what, status)}提醒未能发出："
                   f"{why}，请在工作台跟进", department=department, alert=what, key=key, at=now)
    except Exception:  # noqa: BLE001 - never fails the tick or the enterprise's press
        log.exception("staff alerts failed", extra={"appeal_id": appeal.id})
    return told


def _flagged_alert(session: Session, appeal: Appeal, action: str, key: str) -> bool:
    return any((d or {}).get("key") == key for d in session.scalars(select(AppealEvent.data).where(
        AppealEvent.appeal_id == appeal.id, AppealEvent.action == action)))


def escalate_by_user(session: Session, user_id: int, appeal_id: int, reason: str) -> tuple[Appeal, bool]:
    appeal = get_appeal(session, appeal_id, Actor("user", user_id), lock=True)
    changed = escalate(session, Actor("user", user_id), appeal, reason=reason or "企业反映办不成事")
    return appeal, changed


# --- staff actions -------------------------------------------------------------------------------------

def _staff(session: Session, staff_id: int | None) -> StaffUser | None:
    if staff_id is None:
        return None
    staff = session.get(StaffUser, staff_id)
    if staff is None or not staff.active:
        raise ValidationError("没有这个工作人员。", fields={"handler_id": "没有这个工作人员"})
    return staff


def _check_handler(handler: StaffUser | None, appeal: Appeal, department: str) -> None:
    """A department account handles only its own department's appeals (and the 办不成事 window the escalated
    ones): named for another, it could not even open the appeal it was given."""
    if handler is None or handler.role != StaffRole.DEPT or not department or handler.department == department:
        return
    if not (appeal.escalated and handler.department == ESCALATION_OWNER):
        msg = f"{handler.display_name or handler.username}是{handler.department}的账号，不能承办{department}的诉求。"
        raise ValidationError(msg, fields={"handler_id": msg})


def known_departments(session: Session) -> list[str]:
    """The departments an appeal can go to: those the service list (服务清单) names and those staff accounts
    belong to, in the console's order."""
    names = set(session.scalars(select(AppealCategory.department)))
    names |= {d for d in session.scalars(select(StaffUser.department)) if d}
    names.discard("")
    return sorted(names)


def _check_department(session: Session, department: str, field: str, label: str = "") -> None:
    """交办 / 会办 through the API took any text: a typo (税物所) sent the appeal to a department no account
    belongs to, where nobody ever saw it. A name the service list and the staff accounts do not know is refused
    (an install with neither yet takes any)."""
    known = known_departments(session)
    if known and department not in known:
        msg = (f"{label}没有“{department}”这个部门。现有部门：{'、'.join(known)}。"
               "如需新部门，请先在服务清单里设它为承办部门，或为它建工作人员账号。")
        raise ValidationError(msg, fields={field: f"没有“{department}”这个部门"})


def _need(data: dict, name: str, label: str) -> Any:
    value = data.get(name)
    if value in (None, "", []):
        raise ValidationError(f"请填写{label}。", fields={name: f"请填写{label}"})
    return value


def _not_merged(session: Session, appeal: Appeal, what: str) -> None:
    """A merged child leaves 已合并 with its master (办结) or by 取消合并 (split), which also forgets the master: moved
    by another action it kept master_id, so it stayed out of every figure and its master's 办结 passed it by."""
    if appeal.status == S.DUPLICATE:
        master = session.get(Appeal, appeal.master_id) if appeal.master_id else None
        raise Conflict(f"这条诉求已合并到 {master.number if master else '主诉求'}，随主诉求一并办理；"
                       f"如需单独{what}，请先“取消合并”。", code="merged")


def act_accept(session, actor, appeal, data, now):
    _not_merged(session, appeal, "受理")
    if appeal.status != S.SUBMITTED:
        # The table lets 已交办 / 待补充材料 go back to 已受理 (for a supplement or a split), not for a second 受理: it
        # took an appeal back from its department (or ended the enterprise's wait) and told the enterprise again.
        if appeal.status in (S.REJECTED, S.WITHDRAWN):
            raise Conflict(f"诉求当前为“{appeal.status_label}”，不能受理。", code="illegal_transition")
        raise Conflict(f"诉求已受理过了（当前为“{appeal.status_label}”），不需要再次受理。", code="illegal_transition")
    if data.get("category"):
        _set_category(session, actor, appeal, find_category(session, data["category"]), now)
    # The one who accepts handles it unless someone already does: an assignment, so on the audit row too.
    appeal.handler_id = appeal.handler_id or int(actor.id)
    transition(session, appeal, S.ACCEPTED, actor, action="accepted", now=now,
               note=data.get("note") or "诉求已受理", handler_id=appeal.handler_id,
               public_note=_for_enterprise(data, "诉求已受理"))
    # The promise itself, not “见详情”: a WeChat message is read where it arrives.
    due = appeal.due_at.astimezone(TZ) if appeal.due_at else None
    promise = f"承诺 {due.month}月{due.day}日 前办结" if due else "承诺办结时间见详情"
    _notify(session, appeal, "appeal_accepted", f"您的诉求 {appeal.number} 已受理，{promise}。", "accepted", now=now)


def _for_enterprise(data: dict[str, Any], wording: str) -> str | None:
    """The enterprise's timeline line for a step whose note staff typed (受理, 交办, 开始办理, 协调会办, 关闭, 转办不成事):
    the step's own wording. The note is staff's (names, internal remarks); None, without one, shows the default note."""
    return wording if data.get("note") else None


def act_assign(session, actor, appeal, data, now):
    handler = _staff(session, data.get("handler_id"))
    department = data.get("department") or (handler.department if handler and handler.department else None) \
        or appeal.department or (appeal.category.department if appeal.category else "")
    if not department:
        raise ValidationError("请选择承办部门。", fields={"department": "请选择承办部门"})
    if department != appeal.department:
        _check_department(session, department, "department")
    _check_handler(handler, appeal, department)
    old, old_handler = appeal.department, appeal.handler_id
    holder = old if given_out(session, appeal) else CENTRE  # who asked for any 延期 still waiting
    appeal.department = appeal.given_to = department
    if handler is not None:
        appeal.handler_id = handler.id
    elif appeal.handler_id is not None:  # 交办 elsewhere: the old department's account no longer handles it
        current = session.get(StaffUser, appeal.handler_id)
        try:
            _check_handler(current, appeal, department)
        except ValidationError:
            appeal.handler_id = None
    note = data.get("note") or f"交办至{department}"
    public_note = _for_enterprise(data, f"交办至{department}")
    settled = _settle_returns(session, actor, appeal, department, now) if department != old else []
    if department != holder:
        _settle_extensions(session, appeal, holder, department, now)
    newly = department != old
    if appeal.status in (S.ASSIGNED, S.PENDING_ENTERPRISE):
        if appeal.status == S.PENDING_ENTERPRISE:
            # Re-routed while the enterprise owes material: the wait goes on (it was told to supplement; ended
            # here it got 409), and the supplement hands the appeal to the new department.
            appeal.paused_from = S.ASSIGNED.value
        appeal.version += 1
        ev = _event(session, appeal, actor, "reassigned", at=now, note=note, department=department, previous=old,
                    handler_id=appeal.handler_id, previous_handler_id=old_handler, returns_settled=settled or None)
    else:
        first = appeal.status == S.ACCEPTED  # the first 交办: the department is given the appeal now
        ev = transition(session, appeal, S.ASSIGNED, actor, action="assigned", note=note, now=now,
                        public_note=public_note, department=department, handler_id=appeal.handler_id,
                        previous_handler_id=old_handler, returns_settled=settled or None)
        newly = newly or first
    # Those who now answer for it hear of it (they heard of its 临期 and 超期, not that it was theirs).
    session.flush()
    notify_assignment(session, appeal, "assigned", f"assigned:{ev.id}", actor=actor,
                      department=department if newly else None,
                      handler_id=appeal.handler_id if appeal.handler_id != old_handler else None, now=now)


def _settle_returns(session: Session, actor: Actor, appeal: Appeal, department: str, now: datetime) -> list[int]:
    """交办 to another department answers the old department's pending 退单 (it no longer handles the appeal). Left
    pending, it kept 同意并改派 on the page and refused the new department's own 退单 (“已有待中心审核的退单申请”)."""
    settled = []
    for ret in session.scalars(select(AppealReturn).where(AppealReturn.appeal_id == appeal.id,
                                                          AppealReturn.status == "pending",
                                                          AppealReturn.department != department)):
        ret.status, ret.new_department = "accepted", department
        ret.decided_by, ret.decided_at = str(actor.name or actor.id), now
        ret.decision_note = ret.decision_note or f"已交办至{department}"
        settled.append(ret.id)
        _event(session, appeal, actor, "return_settled", at=now, note=f"{ret.department}的退单申请随交办至{department}办结",
               return_id=ret.id)  # staff only: the enterprise's timeline shows the 交办
    return settled


def _settle_extensions(session: Session, appeal: Appeal, holder: str, department: str, now: datetime) -> None:
    """交办 to another department ends the 延期 its old holder asked for and the centre has not decided: it was the
    old holder's estimate of its own work. Left pending, it stayed in the centre's 待审核 card, granted it moved the
    new department's deadline on a reason not its own (and told it of a 延期 it never asked for), and the new
    department's own request was refused (“已有待审批的延期申请”)."""
    for ext in session.scalars(select(AppealExtension).where(AppealExtension.appeal_id == appeal.id,
                                                             AppealExtension.status == "pending")):
        ext.status, ext.decided_by, ext.decided_at = "rejected", "system", now
        _event(session, appeal, SYSTEM, "noted", at=now, request_id=ext.id,
               note=f"{holder}延期 {ext.working_days} 个工作日的申请随之结束（诉求已交办至{department}，"
               f"如仍需延期由{department}申请）")


def act_start(session, actor, appeal, data, now):
    if appeal.status == S.RESOLVED:
        # 已办结 → 办理中 is the enterprise's “未解决” (a new round, a new deadline, rated again); started by staff it
        # kept the round, the old result and resolved_at, and the next 办结 was never told (its notice was sent).
        raise Conflict("诉求已办结，正在等企业评价；企业反馈“未解决”时会自动重新办理。", code="illegal_transition")
    if appeal.status == S.COORDINATING and _open_required(session, appeal):
        # Started, it left 会办 with required tasks open: shown 办理中 yet not resolvable, and the last task's
        # completion no longer brought it back (it was not 协调会办中 any more).
        raise Conflict("协调会办进行中：会办任务全部完成后会自动回到办理中；不再需要的会办任务可以取消。",
                       code="open_subtasks")
    transition(session, appeal, S.IN_PROGRESS, actor, action="started", note=data.get("note") or "开始办理", now=now,
               public_note=_for_enterprise(data, "开始办理"))


def act_request_info(session, actor, appeal, data, now):
    note = _need(data, "note", "需要企业补充的内容")
    transition(session, appeal, S.PENDING_ENTERPRISE, actor, action="info_requested", note=f"请企业补充：{note}",
               now=now)
    appeal.info_request = note
    _notify(session, appeal, "appeal_needs_info", f"您的诉求 {appeal.number} 需要补充：{note}",
            f"needs_info:{appeal.version}", now=now)


_TASK_TEXTS = (Field("department", "str", "部门", required=True, max_len=64),
               Field("description", "text", "说明", max_len=1000, default=""))


def act_coordinate(session, actor, appeal, data, now):
    tasks = _need(data, "tasks", "会办部门")
    if not isinstance(tasks, list) or len(tasks) > 20:
        raise ValidationError("会办任务应为列表，最多 20 项。", fields={"tasks": "应为列表，最多 20 项"})
    cal = work_calendar(session)
    made, added = [], []
    # What is already asked and not yet answered: the same task again (a double tap, a request retried without
    # `version`) gave the department a second task to answer, alerted it twice, and both held up the 办结.
    asked = set(session.execute(select(AppealTask.department, AppealTask.description).where(
        AppealTask.appeal_id == appeal.id, AppealTask.kind == TaskKind.COORDINATION, AppealTask.status == "open")))
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or not isinstance(t.get("department"), str) or not t["department"].strip():
            raise ValidationError(f"第 {i + 1} 个会办任务缺少部门。", fields={"tasks": f"第 {i + 1} 项缺少部门"})
        days = t.get("working_days", 3)
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 30:
            raise ValidationError("会办期限应为 1-30 个工作日。", fields={"tasks": f"第 {i + 1} 项期限应为 1-30 个工作日"})
        required = t.get("required", True)
        if not isinstance(required, bool):  # "no" or 0 must not silently mean required
            raise ValidationError(f"第 {i + 1} 个会办任务的“是否必须”应为 true 或 false。",
                                  fields={"tasks": f"第 {i + 1} 项 required 应为 true 或 false"})
        description = t.get("description") or ""
        if not isinstance(description, str):
            raise ValidationError(f"第 {i + 1} 个会办任务的说明应为文字。", fields={"tasks": f"第 {i + 1} 项说明应为文字"})
        try:  # NUL and other control characters out, lengths checked rather than cut
            text = validate({"department": t["department"], "description": description}, _TASK_TEXTS)
        except ValidationError as exc:
            problem = next(iter(exc.fields.values()))
            raise ValidationError(f"第 {i + 1} 个会办任务：{problem}。", fields={"tasks": f"第 {i + 1} 项：{problem}"}) \
                from None
        _check_department(session, text["department"], "tasks", f"第 {i + 1} 个会办任务：")
        if (text["department"], text["description"]) in asked:
            continue
        asked.add((text["department"], text["description"]))
        task = AppealTask(appeal_id=appeal.id, kind=TaskKind.COORDINATION, department=text["department"],
                          description=text["description"], required=required,
                          due_at=cal.add_working_days(now, days), created_by=str(actor.name or actor.id),
                          created_at=now)
        session.add(task)
        made.append(task.department)
        added.append(task)
    if not added:
        return  # every task asked for is already open: nothing changed, nothing to record or tell
    if appeal.status == S.PENDING_ENTERPRISE:
        # The enterprise still owes the material it was asked for: the wait (and the paused clock) goes on, the
        # tasks start now, and the appeal comes back into 会办 with the supplement.
        appeal.paused_from = S.COORDINATING.value
        appeal.version += 1
        _event(session, appeal, actor, "tasks_added", at=now, departments=made,
               note=f"增加会办部门：{'、'.join(made)}（企业补充材料后进入协调会办）")
    elif appeal.status != S.COORDINATING:
        transition(session, appeal, S.COORDINATING, actor, action="coordinating", now=now,
                   note=data.get("note") or f"启动协调会办：{'、'.join(made)}", departments=made,
                   public_note=_for_enterprise(data, f"启动协调会办：{'、'.join(made)}"))
    else:
        appeal.version += 1
        _event(session, appeal, actor, "tasks_added", at=now, note=f"增加会办部门：{'、'.join(made)}", departments=made)
    session.flush()
    for task in added:  # each department asked to 会办 hears of it (before, only once its deadline had passed)
        notify_task_department(session, appeal, task, "task_assigned", f"task_assigned:{task.id}", actor=actor, now=now)


def act_complete_task(session, actor, appeal, data, now):
    task_id = _need(data, "task_id", "任务")
    task = session.get(AppealTask, task_id)
    if task is None or task.appeal_id != appeal.id:
        raise NotFound("没有这个任务。")
    if _dept_only(actor):
        if data.get("cancel"):
            # A 会办 is withdrawn by the department that asked for it (or the centre); the department asked, and the
            # 整改 department, answer theirs: cancelled by them, the 会办 ended unanswered. The 办不成事 window may
            # end its own.
            may = ((task.kind == TaskKind.COORDINATION and _handles(actor, appeal) and _handed_to(session, actor, appeal))
                   or (task.kind == TaskKind.ESCALATION and task.department == actor.department))
            if not may:
                raise Forbidden("这个任务只能由承办部门或营商服务中心取消；如本部门无法办理，请在“完成”时写明情况和原因。")
        elif task.department != actor.department:
            raise Forbidden("只能办结本部门的任务。")
    if task.status != "open":
        if task.kind == TaskKind.COORDINATION and task.result == COORDINATION_ENDED:
            raise Conflict(f"诉求已办结，{task.department}的这个会办任务已随之关闭，不需要再办理；如有情况请添加备注。",
                           code="task_closed")
        raise Conflict("这个任务已经办结或取消了。", code="task_closed")
    if task.kind == TaskKind.COORDINATION and appeal.status in ENDED and not data.get("cancel"):
        # The handling is over (one left open by an 办结 before the 办结 closed them): what the 会办 found can no
        # longer change the result; the task may still be cancelled (tidied away).
        raise Conflict(f"诉求当前为“{appeal.status_label}”，办理已结束，会办任务不能再办结；如有情况请添加备注。",
                       code="task_closed")
    task.status = "cancelled" if data.get("cancel") else "done"
    task.result, task.closed_at = data.get("result") or data.get("note") or "", now
    appeal.version += 1
    _event(session, appeal, actor, "task_done" if task.status == "done" else "task_cancelled", at=now,
           note=f"{task.department}：{task.result or ('已取消' if task.status == 'cancelled' else '已完成')}",
           task_id=task.id)
    if task.kind == TaskKind.ESCALATION:
        # The enterprise was promised an answer from the 办不成事 window within 3 working days: the window's
        # answer is that answer (it heard nothing when the task was done).
        outcome = task.result or ("窗口已结束处理" if task.status == "cancelled" else "窗口已处理完毕")
        said = outcome.rstrip().rstrip("。.！!；;，,、 ") or outcome
        _notify(session, appeal, "appeal_escalated", f"您的诉求 {appeal.number} 在“办不成事”反映窗口的处理结果：{said}。"
                "如仍有问题，可回复“我的诉求”查看进度或联系我们。", f"escalation_done:{task.id}",
                title="“办不成事”窗口已答复您的诉求", now=now)
    _end_coordination_if_done(session, appeal, now)


def _end_coordination_if_done(session: Session, appeal: Appeal, now: datetime) -> None:
    """会办 over (no required task open): the appeal goes back to its handling department."""
    if appeal.status == S.COORDINATING and not _open_required(session, appeal):
        session.flush()
        transition(session, appeal, S.IN_PROGRESS, SYSTEM, action="coordination_done", now=now,
                   note="会办任务已全部完成，回到主办部门办理")


def _open_required(session: Session, appeal: Appeal) -> list[AppealTask]:
    session.flush()
    return list(session.scalars(select(AppealTask).where(
        AppealTask.appeal_id == appeal.id, AppealTask.kind == TaskKind.COORDINATION,
        AppealTask.required.is_(True), AppealTask.status == "open")))


def act_resolve(session, actor, appeal, data, now):
    resolution = _need(data, "resolution", "办理结果")
    _not_merged(session, appeal, "办结")
    open_tasks = _open_required(session, appeal)
    if open_tasks:
        raise Conflict("还有必须完成的会办任务未办结（" + "、".join(t.department for t in open_tasks) + "），暂不能办结。",
                       code="open_subtasks")
    _resolve(session, actor, appeal, resolution, now)
    for child in session.scalars(select(Appeal).where(Appeal.master_id == appeal.id,
                                                      Appeal.status == S.DUPLICATE.value)).unique():
        _resolve(session, SYSTEM, child, f"已随主诉求 {appeal.number} 一并办结：{resolution}", now)


# What a 会办 task still open at the 办结 is closed with (its `result`): the lead department answered the appeal.
COORDINATION_ENDED = "诉求已办结，会办任务随之关闭"


def _resolve(session, actor, appeal, resolution, now):
    transition(session, appeal, S.RESOLVED, actor, action="resolved", note=f"办结：{resolution}", now=now)
    appeal.resolution, appeal.resolved_at = resolution, now
    # An optional 会办 still open (a required one refuses the 办结) was left open for good: in the department's
    # tasks with a 完成 button, and 完成 afterwards wrote a result after the appeal's. It ends with the handling.
    _cancel_open_tasks(session, appeal, COORDINATION_ENDED, now, kinds=(TaskKind.COORDINATION,), requests=False)
    # 办结 answers what a 退单 or 延期 still waiting asked: the department did the work, and the deadline no longer
    # matters (the on-time figure is taken now). Left pending they kept the appeal in the centre's 待审核 queue and
    # card until someone recorded a 不同意 nobody meant.
    _end_pending_requests(session, appeal, "诉求已办结", now)
    if appeal.first_resolved_at is None:
        # 按时办结率 judges the first resolution (its period is first_resolved_at); a later round must not
        # rewrite a figure already reported.
        appeal.first_resolved_at = now
        appeal.resolved_on_time = appeal.due_at is None or now <= appeal.due_at
    # Staff end their result with a full stop as often as not: “…税控盘。。请在 7 个工作日内评价” read as a typo.
    said = resolution.rstrip().rstrip("。.！!；;，,、 ") or resolution
    _notify(session, appeal, "appeal_resolved", f"您的诉求 {appeal.number} 已办结：{said}。请在 7 个工作日内"
            f"（{_local_when(rating_window_ends(appeal, work_calendar(session)))} 前）评价。",
            f"resolved:{appeal.round}", now=now)


def _local_when(value: datetime | None) -> str:
    local = value.astimezone(TZ) if value else None
    return f"{local.month}月{local.day}日 {local:%H:%M}" if local else ""


def rating_window_ends(appeal: Appeal, cal: WorkCalendar | None = None, *, any_status: bool = False) -> datetime | None:
    """When the enterprise's 7 working days to rate this round's 办结 end: RATING_WORKING_DAYS working days after
    resolved_at on the SLA clocks' calendar (`cal`, default work_calendar of the appeal's session: holidays and
    调休 from the staff's table). None when it is not resolved; `any_status`: also once it left 已办结 (closed,
    say), for telling a lapsed window from a closed appeal. The one answer rate(), the chat, the tick's auto-close,
    the console and the API use."""
    if appeal.resolved_at is None or (appeal.status != S.RESOLVED and not any_status):
        return None
    if cal is None:
        session = object_session(appeal)
        # Detached (never in practice: every caller holds its session): the library's holidays, no staff table.
        cal = work_calendar(session) if session is not None else WorkCalendar()
    return cal.add_working_days(appeal.resolved_at, RATING_WORKING_DAYS)


def act_close(session, actor, appeal, data, now):
    ends = rating_window_ends(appeal, work_calendar(session))
    if ends is not None and now <= ends:
        # 办结反馈 → 好差评: the enterprise was told it may rate within 7 working days. Closed by staff on day 1
        # (“电话确认已解决”), it could no longer rate or say “未解决”, and a staff member's word stood for the enterprise's.
        raise Conflict(f"企业可在办结后 7 个工作日内评价（至 {_local_when(ends)}），评价期内不能关闭。"
                       "企业评价“已解决”后诉求自动关闭，到期未评价的由系统自动关闭；电话回访的情况可以先添加备注。",
                       code="rating_window_open")
    # Past the window (the tick closes it within minutes): the record says the enterprise gave no rating.
    unrated = ends is not None
    note = data.get("note") or "诉求关闭"
    why = "（评价期已过，企业未评价）" if unrated else ""
    transition(session, appeal, S.CLOSED, actor, action="closed", now=now, note=f"{note}{why}",
               rated=False if unrated else None, public_note=_for_enterprise(data, f"诉求关闭{why}"))
    _notify(session, appeal, "appeal_closed", f"您的诉求 {appeal.number} 已关闭。", "closed", now=now)


def act_reject(session, actor, appeal, data, now):
    reason = _need(data, "reason", "不予受理的理由")
    transition(session, appeal, S.REJECTED, actor, action="rejected", note=f"不予受理：{reason}", now=now)
    _cancel_open_tasks(session, appeal, "诉求不予受理，任务取消", now)
    # Its own title: “您的诉求已关闭” above a refusal read as if the matter had been dealt with.
    _notify(session, appeal, "appeal_closed", f"您的诉求 {appeal.number} 不予受理：{reason}", "closed",
            title="您的诉求不予受理", now=now)
    _release_children(session, appeal, now)


def act_merge(session, actor, appeal, data, now):
    master_id = _need(data, "master_id", "主诉求")
    if master_id == appeal.id:
        raise Conflict("不能把诉求合并到它自己。", code="merge_into_self")
    # Locked, and read again under the lock: two merges in opposite directions at once (A into B, B into A) each
    # saw the other still open and made each appeal the other's duplicate.
    master = get_appeal(session, master_id, actor, lock=True, nowait=True)
    if master.master_id is not None or master.status == S.DUPLICATE:
        raise Conflict(f"{master.number} 本身已并入其他诉求，请合并到它的主诉求。", code="merge_into_child")
    if master.status not in OPEN:
        raise Conflict(f"主诉求 {master.number} 已不在办理中，不能合并。", code="master_not_open")
    if session.scalar(select(Appeal.id).where(Appeal.master_id == appeal.id)):
        raise Conflict(f"{appeal.number} 已是其他诉求的主诉求，不能再并入别的诉求。", code="merge_master")
    transition(session, appeal, S.DUPLICATE, actor, action="merged", now=now,
               note=f"与 {master.number} 为同一问题，已合并办理", master=master.number)
    appeal.master_id = master.id
    # Merged, it is handled as its master: a 延期 can no longer be granted nor a 退单 re-route it, and left pending
    # they stayed in the centre's 待审核 queue until someone turned them down by hand.
    _end_pending_requests(session, appeal, f"诉求已合并到 {master.number}", now)
    master.version += 1
    _event(session, master, actor, "child_merged", at=now, note=f"合并了 {appeal.number}", child=appeal.number)
    # The enterprise saw its appeal turn 已合并 without a word, and cannot open the master (another's appeal).
    _notify(session, appeal, "appeal_merged", f"您的诉求 {appeal.number} 与另一条诉求反映的是同一问题，已合并到 "
            f"{master.number} 一并办理，办结后会通知您结果。", f"merged:{master.id}", now=now)


def act_split(session, actor, appeal, data, now):
    if appeal.status != S.DUPLICATE:
        raise Conflict("这条诉求没有被合并。", code="not_merged")
    transition(session, appeal, S.ACCEPTED, actor, action="split", now=now, note="取消合并，单独办理")
    appeal.master_id = None
    # It was told of the merge: without a word it would wait for the master's result, which will not come.
    _notify(session, appeal, "appeal_split", f"您的诉求 {appeal.number} 已取消合并，将单独办理，办结后会通知您结果。",
            f"split:{appeal.version}", now=now)


def act_return(session, actor, appeal, data, now):
    reason = _need(data, "reason", "退单理由")
    if appeal.status not in (S.ACCEPTED, S.ASSIGNED, S.IN_PROGRESS):
        raise Conflict(f"诉求当前为“{appeal.status_label}”，不能退单。", code="illegal_transition")
    if not appeal.department:
        raise Conflict("诉求尚未交办到部门，无需退单。", code="no_department")
    if _dept_only(actor) and appeal.department != actor.department:
        raise Forbidden("只能退回本部门承办的诉求。")
    if session.scalar(select(AppealReturn.id).where(AppealReturn.appeal_id == appeal.id,
                                                    AppealReturn.status == "pending")):
        raise Conflict("已有待中心审核的退单申请。", code="return_pending")
    # Not given out (交办) yet, the centre holds it (its handler asks): the department the rules guessed never had
    # it, and was named as the one returning it (and, turned down, as the one it stayed with).
    holder = appeal.department if given_out(session, appeal) else CENTRE
    ret = AppealReturn(appeal_id=appeal.id, department=holder, reason=reason,
                       requested_by=str(actor.name or actor.id), created_at=now)
    session.add(ret)
    session.flush()
    appeal.version += 1
    _event(session, appeal, actor, "return_requested", at=now, note=f"{holder}申请退单：{reason}",
           return_id=ret.id, department=holder)
    notify_request(session, appeal, "return_requested", f"return_requested:{ret.id}", actor=actor, now=now)


def act_decide_return(session, actor, appeal, data, now):
    ret = session.get(AppealReturn, _need(data, "return_id", "退单申请"))
    if ret is None or ret.appeal_id != appeal.id:
        raise NotFound("没有找到这个退单申请，可能已被撤回或删除，请刷新页面后查看。")
    if ret.status != "pending":
        raise Conflict("这个退单申请已经处理过了。", code="return_decided")
    ret.decided_by, ret.decided_at, ret.decision_note = str(actor.name or actor.id), now, data.get("note") or ""
    if data.get("accept"):
        department = _need(data, "department", "改派的部门")
        if department == ret.department:
            raise ValidationError("请改派到另一个部门。", fields={"department": "与退单部门相同"})
        ret.status, ret.new_department = "accepted", department
        # Re-route; the SLA clock keeps running from the original submission (due_at untouched).
        appeal.handler_id = None  # the returning department's handler no longer owns it
        # The enterprise reads the 交办 (the departments' 退单 is the centre's business, as on its request).
        act_assign(session, actor, appeal, {"department": department, "handler_id": data.get("handler_id"),
                                            "note": f"同意退单，改派至{department}",
                                            "public_note": f"交办至{department}"}, now)
    else:
        ret.status = "rejected"
        appeal.version += 1
        # It stays with whoever holds it now: the centre until a 交办 (a 退单 stored before the centre was named
        # carries the guessed department).
        holder = appeal.department if given_out(session, appeal) else CENTRE
        ev = _event(session, appeal, actor, "return_rejected", at=now,
                    note=f"不同意退单，仍由{holder}办理" + (f"：{ret.decision_note}" if ret.decision_note else ""),
                    return_id=ret.id)
        session.flush()
        notify_decision(session, appeal, "return_rejected", f"return_rejected:{ev.id}", actor=actor, now=now)


def act_request_extension(session, actor, appeal, data, now):
    days = _need(data, "working_days", "延期工作日数")
    reason = _need(data, "reason", "延期理由")
    if appeal.status not in OPEN:
        raise Conflict("诉求已不在办理中，无需延期。", code="illegal_transition")
    if appeal.status == S.SUBMITTED:
        # Not accepted, not given to anyone: the department the rules guessed could ask for more time on an appeal
        # the centre had not even taken on (and may yet reject or send elsewhere).
        raise Conflict("诉求尚未受理，不能申请延期；受理并交办后，承办部门可以申请。", code="illegal_transition")
    if session.scalar(select(AppealExtension.id).where(AppealExtension.appeal_id == appeal.id,
                                                       AppealExtension.status == "pending")):
        raise Conflict("已有待审批的延期申请。", code="extension_pending")
    if not isinstance(days, int) or not 1 <= days <= 30:
        raise ValidationError("延期应为 1-30 个工作日。", fields={"working_days": "应为 1-30"})
    if _past_deadline(appeal, now):
        # An extension is asked for before the deadline: granted afterwards it moved an overdue appeal's deadline
        # past today, cleared 超期 and counted its late 办结 as on time.
        raise Conflict("诉求已超过办结期限，不能再申请延期（延期须在期限届满前申请），请尽快办结。", code="overdue")
    ext = AppealExtension(appeal_id=appeal.id, working_days=days, reason=reason,
                          requested_by=str(actor.name or actor.id), created_at=now)
    session.add(ext)
    session.flush()
    appeal.version += 1
    _event(session, appeal, actor, "extension_requested", at=now, note=f"申请延期 {days} 个工作日：{reason}",
           extension_id=ext.id)
    notify_request(session, appeal, "extension_requested", f"extension_requested:{ext.id}", actor=actor,
                   note=f"{days} 个工作日", now=now)


def _past_deadline(appeal: Appeal, now: datetime) -> bool:
    """The promised time is used up (while waiting for the enterprise: none of it was left when the wait began)."""
    if appeal.status == S.PENDING_ENTERPRISE:
        return appeal.sla_minutes_left is not None and appeal.sla_minutes_left <= 0
    return appeal.due_at is not None and now >= appeal.due_at


def act_decide_extension(session, actor, appeal, data, now):
    ext = session.get(AppealExtension, _need(data, "extension_id", "延期申请"))
    if ext is None or ext.appeal_id != appeal.id:
        raise NotFound("没有找到这个延期申请，可能已被撤回或删除，请刷新页面后查看。")
    if ext.status != "pending":
        raise Conflict("这个延期申请已经处理过了。", code="extension_decided")
    if data.get("accept") and appeal.status not in OPEN:
        # Moving the deadline of an appeal already 办结 (or closed) rewrites its promise after the fact, and the
        # enterprise read “同意延期” after “办结”; the request can only be turned down now.
        raise Conflict(f"诉求当前为“{appeal.status_label}”，不需要再延期；这个申请可以选“不同意”结束。",
                       code="illegal_transition")
    own = data.get("accept") and own_extension_request(session, actor, ext)
    if own and not may_approve_own_extension(session, actor):
        raise Forbidden("这是您本人提出的延期申请，须由其他工作人员审批（本人可以选“不同意”撤回）。")
    ext.decided_by, ext.decided_at = str(actor.name or actor.id), now
    appeal.version += 1
    if data.get("accept"):
        ext.status = "approved"
        if appeal.status == S.PENDING_ENTERPRISE and appeal.sla_minutes_left is not None:
            appeal.sla_minutes_left += ext.working_days * 510
            if appeal.sla_minutes_left > 0:  # time left again: the deadline moves ahead when the clock resumes
                appeal.overdue = False
        elif appeal.due_at is not None:
            appeal.due_at = work_calendar(session).add_working_days(appeal.due_at, ext.working_days)
            if appeal.due_at > now:
                appeal.overdue = False
        appeal.warned_due_at = None
        local = appeal.due_at.astimezone(TZ) \
            if appeal.status != S.PENDING_ENTERPRISE and appeal.due_at is not None else None
        # The enterprise reads what changed for it, not who asked or who could approve (the staff note says it).
        _event(session, appeal, actor, "extension_approved", at=now, note=f"同意延期 {ext.working_days} 个工作日"
               + ("（本人申请，中心没有其他可审批的工作人员）" if own else ""),
               public=True, due_at=appeal.due_at, own_request=bool(own) or None,
               public_note=f"办理期限延长 {ext.working_days} 个工作日"
               + (f"，承诺办结时间改为 {local.month}月{local.day}日 {local:%H:%M}" if local else ""))
        # The promise the enterprise was given moves: tell them (the timeline alone said it to nobody).
        when = f"，预计 {local.month}月{local.day}日 前办结" if local else ""
        _notify(session, appeal, "appeal_extended", f"您的诉求 {appeal.number} 办理期限已延长 {ext.working_days} 个工作日"
                f"{when}。", f"extended:{ext.id}", now=now)
        moved = f"办结期限延至 {local.month}月{local.day}日 {local:%H:%M}" if local else ""
        session.flush()
        notify_decision(session, appeal, "extension_approved", f"extension_decided:{ext.id}", actor=actor,
                        note=moved, now=now)
    else:
        ext.status = "rejected"
        _event(session, appeal, actor, "extension_rejected", at=now, note=data.get("note") or "不同意延期")
        session.flush()
        notify_decision(session, appeal, "extension_rejected", f"extension_decided:{ext.id}", actor=actor, now=now)


def own_extension_request(session: Session, actor: Actor, ext: AppealExtension) -> bool:
    """The staff member `actor` asked for this 延期 (its extension_requested event names who did)."""
    if actor.type != "staff" or actor.id is None:
        return False
    return any((d or {}).get("extension_id") == ext.id for d in session.scalars(select(AppealEvent.data).where(
        AppealEvent.appeal_id == ext.appeal_id, AppealEvent.action == "extension_requested",
        AppealEvent.actor_type == "staff", AppealEvent.actor_id == str(actor.id))))


def may_approve_own_extension(session: Session, actor: Actor) -> bool:
    """Separation of duties: a 延期 is granted by someone other than the one who asked (a centre account could ask and
    grant its own). The one exception is an admin when no other active centre account (staff or admin) exists to
    decide it: a one-person centre would otherwise have no way to grant it."""
    if actor.role != StaffRole.ADMIN:
        return False
    return not session.scalar(select(StaffUser.id).where(
        StaffUser.active.is_(True), StaffUser.id != int(actor.id),
        StaffUser.role.in_([StaffRole.STAFF, StaffRole.ADMIN])).limit(1))


def act_urge(session, actor, appeal, data, now):
    if appeal.status not in OPEN:
        raise Conflict("诉求已不在办理中，无需催办。", code="illegal_transition")
    if data.get("version") is None:
        # Without the version of a page just read (a script, a retry) a second 催办 the same day alerted the
        # department twice; like the enterprise's, it is once a Shanghai day. A person on a fresh page sees today's
        # 催办 on the timeline, and pressing again is asking again.
        day_start = datetime.combine(local_date(now), datetime.min.time(), TZ)
        last = session.scalars(select(AppealEvent).where(
            AppealEvent.appeal_id == appeal.id, AppealEvent.action == "urged", AppealEvent.actor_type == "staff",
            AppealEvent.created_at >= day_start).order_by(AppealEvent.created_at.desc()).limit(1)).first()
        if last is not None:
            who = last.actor_name or "工作人员"
            raise Conflict(f"诉求 {appeal.number} 今天 {last.created_at.astimezone(TZ):%H:%M} 已由{who}催办过，每天催办一次即可；"
                           "如需再次催办，请刷新页面后操作。", code="already_urged")
    appeal.urge_count += 1
    appeal.version += 1
    ev = _event(session, appeal, actor, "urged", at=now, note=data.get("note") or "催办", department=appeal.department)
    session.flush()
    # A 催办 is for the department handling it: written only on the timeline, nobody there heard it.
    notify_department(session, appeal, "urged", f"urged:{ev.id}", actor=actor, note=(data.get("note") or "")[:60], now=now)


def _set_category(session, actor, appeal, category: AppealCategory, now):
    old = appeal.category.name if appeal.category else ""
    old_days = appeal.category.promised_days if appeal.category else DEFAULT_PROMISED_DAYS
    appeal.category_id, appeal.category = category.id, category
    appeal.category_chosen_by, appeal.needs_triage = "staff", False
    if appeal.status in (S.SUBMITTED, S.ACCEPTED) or not appeal.department:
        appeal.department = category.department
    # Only the promise changes: the deadline moves by the difference, so what already moved it stays (granted
    # extensions, time paused for the enterprise, the new start of a reopened round).
    delta = (category.promised_days - old_days) * DAY_MINUTES
    if appeal.status == S.PENDING_ENTERPRISE:
        if appeal.sla_minutes_left is not None:
            appeal.sla_minutes_left += delta
    elif appeal.due_at is not None and delta:
        cal = work_calendar(session)
        total = cal.working_minutes_between(appeal.submitted_at, appeal.due_at) + delta
        appeal.due_at = cal.add_working_minutes(appeal.submitted_at, total)
        if appeal.due_at > now:  # a longer promise: no longer overdue (the tick marks a shorter one that is)
            appeal.overdue = False
        appeal.warned_due_at = None
    _event(session, appeal, actor, "categorised", at=now, note=f"分类：{old or '未分类'} → {category.name}",
           category=category.code, department=appeal.department)


# 办结 and after: the handling is over (a reopened round, the enterprise's “未解决”, brings it back into 办理中).
ENDED = frozenset({S.RESOLVED, S.CLOSED, S.WITHDRAWN, S.REJECTED})


def _not_ended(appeal: Appeal, what: str) -> None:
    """改派承办人 and 改分类 change who answers for an appeal and what it promised: on an ended one they rewrote the
    record after the fact (a resolved late appeal recategorised moved its deadline, a handler named for a closed
    one was answerable for nothing, and an 办结 one was told to no one)."""
    if appeal.status in ENDED:
        again = "；企业反馈“未解决”时诉求会重新办理，届时可以调整" if appeal.status == S.RESOLVED else ""
        raise Conflict(f"诉求当前为“{appeal.status_label}”，办理已结束，不能再{what}{again}。", code="illegal_transition")


def act_set_category(session, actor, appeal, data, now):
    _not_ended(appeal, "调整分类")
    category = find_category(session, _need(data, "category", "类别"))
    appeal.version += 1
    _set_category(session, actor, appeal, category, now)


def act_reassign(session, actor, appeal, data, now):
    _not_ended(appeal, "改派承办人")
    handler = _staff(session, _need(data, "handler_id", "承办人"))
    _check_handler(handler, appeal, appeal.department)
    previous = appeal.handler_id
    if handler.id == previous:
        return  # already the handler (a second click, a resent form): nothing changed, nothing to record or tell
    appeal.handler_id = handler.id
    appeal.version += 1
    ev = _event(session, appeal, actor, "handler_changed", at=now, note=f"承办人改为 {handler.display_name or handler.username}",
                handler_id=handler.id, previous_handler_id=previous)
    session.flush()
    notify_assignment(session, appeal, "handler_changed", f"handler_changed:{ev.id}", actor=actor,
                      handler_id=handler.id, now=now)


def act_set_building(session, actor, appeal, data, now):
    """Correct the building an appeal is about (the enterprise picked the wrong one, a walk-in was filed at one):
    it goes there and to the grid team serving it, as when its enterprise moves (move_to_building). The department
    and handler stay: they come from the category and the 交办, not from the building. The appeals merged into it
    (已合并, the same problem) go along, each with its own timeline row: left at the wrong building they stayed in its
    record and grid, and went back there when split off (transition sends one to the grid serving its building)."""
    if appeal.status == S.DUPLICATE:
        master = session.get(Appeal, appeal.master_id) if appeal.master_id else None
        raise Conflict(f"诉求已合并到 {master.number if master else '主诉求'} 一并办理，楼宇随主诉求调整：请在主诉求"
                       f"{f' {master.number} ' if master else ''}上调整楼宇，合并的诉求会随之调整。", code="illegal_transition")
    if appeal.status not in OPEN:
        raise Conflict(f"诉求当前为“{appeal.status_label}”，已不在办理中，不能再调整楼宇（办结后的诉求留在办理时的楼宇）。",
                       code="illegal_transition")
    building_id = _need(data, "building_id", "楼宇")
    known = isinstance(building_id, int) and 0 < building_id <= DB_INT_MAX  # (a console number past any id)
    # share-locked (see building_to_point_at): a merge of it under way is waited for, or waits and moves this appeal
    building = building_to_point_at(session, building_id, current=appeal.building_id) if known else None
    if building is None:
        raise ValidationError("没有找到这栋楼宇，它可能已被合并或删除；请刷新页面后重新选择。",
                              fields={"building_id": "没有找到这栋楼宇"})
    if building.id == appeal.building_id:
        return  # already there (a second click, a resent form): nothing changed, nothing to record
    old = session.get(Building, appeal.building_id) if appeal.building_id is not None else None
    note = (f"楼宇由{f'「{old.name}」' if old else '未填写'}调整为「{building.name}」"
            + (f"，由{grid_words(session, building.grid_id)}办理" if appeal.grid_id != building.grid_id else "")
            + (f"：{data['note']}" if data.get("note") else ""))
    appeal.version += 1
    appeal.updated_at = now
    children = list(session.scalars(select(Appeal).where(
        Appeal.master_id == appeal.id, Appeal.status == S.DUPLICATE.value,
        or_(Appeal.building_id.is_(None), Appeal.building_id != building.id)).order_by(Appeal.id)))
    with specialist_alerts(session, actor, now=now):  # the new specialist hears of the family in one message
        move_to_building(session, actor, [appeal], building, note, at=now)
        for child in children:
            child.version += 1
            child.updated_at = now
        if children:
            regridded = any(c.grid_id != building.grid_id for c in children)
            move_to_building(session, actor, children, building, f"主诉求 {appeal.number} 的楼宇调整为「{building.name}」，"
                             "合并的诉求随之调整" + (f"，由{grid_words(session, building.grid_id)}办理" if regridded else ""),
                             at=now)


def act_note(session, actor, appeal, data, now):
    appeal.version += 1
    _event(session, appeal, actor, "noted", at=now, note=_need(data, "note", "备注"))


def act_escalate(session, actor, appeal, data, now):
    reason = data.get("reason") or data.get("note")
    escalate(session, actor, appeal, reason=reason or "工作人员转办不成事", now=now,
             public_note=_for_enterprise({"note": reason}, "转入“办不成事”反映窗口"))


ACTIONS: dict[str, tuple[str, Callable, str]] = {
    # name: (minimum role, function, Chinese label)
    "accept": (StaffRole.STAFF, act_accept, "受理"),
    "assign": (StaffRole.STAFF, act_assign, "交办"),
    "start": (StaffRole.DEPT, act_start, "开始办理"),
    "request_info": (StaffRole.DEPT, act_request_info, "请企业补充材料"),
    "coordinate": (StaffRole.DEPT, act_coordinate, "协调会办"),
    "complete_task": (StaffRole.DEPT, act_complete_task, "办结会办任务"),
    "resolve": (StaffRole.DEPT, act_resolve, "办结"),
    "close": (StaffRole.STAFF, act_close, "关闭"),
    "reject": (StaffRole.STAFF, act_reject, "不予受理"),
    "merge": (StaffRole.STAFF, act_merge, "合并"),
    "split": (StaffRole.STAFF, act_split, "取消合并"),
    "return": (StaffRole.DEPT, act_return, "退单"),
    "decide_return": (StaffRole.STAFF, act_decide_return, "审核退单"),
    "request_extension": (StaffRole.DEPT, act_request_extension, "申请延期"),
    "decide_extension": (StaffRole.STAFF, act_decide_extension, "审批延期"),
    "urge": (StaffRole.STAFF, act_urge, "催办"),
    "set_category": (StaffRole.STAFF, act_set_category, "分类"),
    "reassign": (StaffRole.STAFF, act_reassign, "改派承办人"),
    "set_building": (StaffRole.STAFF, act_set_building, "调整楼宇"),
    "note": (StaffRole.DEPT, act_note, "备注"),
    "escalate": (StaffRole.STAFF, act_escalate, "转办不成事"),
}


# What a department refused a centre-only action can do instead (the refusal named neither the step nor a way on).
CENTRE_ONLY_HINT = "如需中心处理，请在诉求上添加备注，或联系营商服务中心。"
CENTRE_ONLY_HINTS = {
    **dict.fromkeys(("assign", "reassign", "set_category", "set_building"),
                    "如这件诉求不属于贵部门职责或分派有误，请申请退单并写明理由，由中心改派。"),
    "decide_return": "退单申请由中心审核，审核结果会通知贵部门。",
    "decide_extension": "延期申请由中心审批，审批结果会通知贵部门。",
}

# What a department that only holds a 会办 task on an appeal may do on it.
TASK_ONLY_ACTIONS = frozenset({"complete_task", "note"})


def _handed_to(session: Session, actor: Actor, appeal: Appeal) -> bool:
    """A department account handles the appeal once it was given it (交办), not while its department is only the
    one the rules (or the category) suggested: the centre accepts and dispatches (分类交办), and the department
    started, 办结 or 退单 an appeal it had never been given. The 办不成事 window handles the escalated ones."""
    return (appeal.escalated and actor.department == ESCALATION_OWNER) or given_out(session, appeal)


def _handles(actor: Actor, appeal: Appeal) -> bool:
    """The department handling the appeal, or the 办不成事 window once the appeal is escalated to it."""
    return appeal.department == actor.department or (appeal.escalated and actor.department == ESCALATION_OWNER)


def perform(session: Session, actor: Actor, appeal_id: int, action: str, data: dict[str, Any],
            *, now: datetime | None = None) -> Appeal:
    """One staff action on one appeal, under a row lock; `version` (optional) must match the current one."""
    if action not in ACTIONS:
        raise ValidationError("不支持这个操作。", fields={"action": "不支持这个操作"})
    min_role, fn, label = ACTIONS[action]
    # Found (and visible to this account) first: a department refused for its role on an appeal it cannot see was
    # told of the appeal (the console's 404 page carried the refusal).
    appeal = get_appeal(session, appeal_id, actor, lock=True)
    if ROLE_RANK[StaffRole(actor.role)] < ROLE_RANK[StaffRole(min_role)]:
        raise Forbidden(f"“{label}”由{CENTRE}的工作人员办理，部门账号不能操作。{CENTRE_ONLY_HINTS.get(action, CENTRE_ONLY_HINT)}")
    if _dept_only(actor) and action not in TASK_ONLY_ACTIONS:
        if not _handles(actor, appeal):
            raise Forbidden("您的部门只承担这件诉求的会办任务：可以办结本部门的任务或添加备注，办理本身由承办部门负责。")
        if appeal.status != S.SUBMITTED and not _handed_to(session, actor, appeal):  # (submitted: “尚未受理”)
            raise Conflict("这件诉求还没有交办给贵部门（目前是按类别预先分到的部门），营商服务中心交办后才能办理；"
                           "现在可以查看和添加备注。", code="not_assigned")
    if data.get("version") is not None and data["version"] != appeal.version:
        raise Conflict("诉求已被他人更新，请刷新后再操作。", code="stale_version")
    fn(session, actor, appeal, data, now or utcnow())
    session.flush()
    return appeal


# --- queries -------------------------------------------------------------------------------------------

@dataclass
class Page:
    items: list
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def escalation_pending():
    """办不成事 the window still owes an answer: escalated, and the appeal still open or its escalation task not
    done (an enterprise may report 办不成事 on a resolved appeal, which then closes when its rating window ends)."""
    return and_(Appeal.escalated.is_(True), or_(Appeal.status.in_([s.value for s in OPEN]), _escalation_task_open()))


def escalation_overdue(now: datetime):
    """办不成事 whose 3 working days have passed with the window's task still open."""
    return and_(Appeal.escalated.is_(True), _escalation_task_open(), Appeal.escalation_due_at.is_not(None),
                Appeal.escalation_due_at <= now)


def _escalation_task_open():
    """The appeal's 办不成事 task is not done yet."""
    return exists().where(AppealTask.appeal_id == Appeal.id, AppealTask.kind == TaskKind.ESCALATION,
                          AppealTask.status == "open")


def requests_pending():
    """A 退单 or 延期 the department asked for is waiting for the centre's decision."""
    return or_(exists().where(AppealReturn.appeal_id == Appeal.id, AppealReturn.status == "pending"),
               exists().where(AppealExtension.appeal_id == Appeal.id, AppealExtension.status == "pending"))


def due_soon_before(cal: WorkCalendar, now: datetime) -> datetime:
    """临期: a deadline at or before this instant has less than one working day left (the tick's 临期提醒)."""
    return cal.add_working_minutes(now, WARN_MINUTES)


def due_soon_clause(cal: WorkCalendar, now: datetime):
    """Appeals whose clock runs and whose deadline has not passed but is less than one working day away."""
    return and_(Appeal.status.in_([s.value for s in CLOCK_RUNNING]), Appeal.overdue.is_(False),
                Appeal.due_at > now, Appeal.due_at <= due_soon_before(cal, now))


def is_due_soon(appeal: Appeal, soon_before: datetime, now: datetime) -> bool:
    """The same test as due_soon_clause, on a loaded appeal (the queue's 临期 badge)."""
    return (appeal.status in CLOCK_RUNNING and not appeal.overdue and appeal.due_at is not None
            and now < appeal.due_at <= soon_before)


def list_for_staff(session: Session, actor: Actor, *, status: str | None = None, category: str | None = None,
                   department: str | None = None, grid_id: int | None = None, building_id: int | None = None,
                   enterprise_id: int | None = None, overdue: bool | None = None, escalated: bool | None = None,
                   triage: bool | None = None, q: str | None = None, open_only: bool | None = None,
                   escalation_open: bool | None = None, due_soon: bool | None = None,
                   pending_requests: bool | None = None, no_enterprise: bool | None = None,
                   typed_enterprise: str | None = None, page: int = 1, per_page: int = 20,
                   now: datetime | None = None, oldest_first: bool = False) -> Page:
    """One page of the appeals `actor` may see, the filters given applied. `no_enterprise` and `typed_enterprise`
    pick the 企业问题清单's groups of appeals linked to no enterprise file: 未关联企业 (no name typed either), and
    “<name>（未核实）” (that name typed, exactly)."""
    stmt = select(Appeal)
    if _dept_only(actor):
        stmt = stmt.where(_dept_clause(actor.department))
    if status:
        stmt = stmt.where(Appeal.status.in_(status.split(",")))
    if open_only:
        stmt = stmt.where(Appeal.status.in_([s.value for s in OPEN]))
    if category:  # a retired category still names the appeals filed under it
        cat = find_category(session, category, active_only=False)
        stmt = stmt.where(Appeal.category_id == cat.id)
    if department:
        stmt = stmt.where(Appeal.department == department)
    if grid_id:
        stmt = stmt.where(Appeal.grid_id == grid_id)
    if building_id:
        stmt = stmt.where(Appeal.building_id == building_id)
    if enterprise_id:
        stmt = stmt.where(Appeal.enterprise_id == enterprise_id)
    if no_enterprise:
        stmt = stmt.where(Appeal.enterprise_id.is_(None), or_(Appeal.enterprise_name.is_(None),
                                                              Appeal.enterprise_name == ""))
    if typed_enterprise:
        stmt = stmt.where(Appeal.enterprise_id.is_(None), Appeal.enterprise_name == typed_enterprise)
    if overdue is not None:
        stmt = stmt.where(Appeal.overdue.is_(overdue))
    if escalated is not None:
        stmt = stmt.where(Appeal.escalated.is_(escalated))
    if triage is not None:
        stmt = stmt.where(Appeal.needs_triage.is_(triage))
    if escalation_open:
        stmt = stmt.where(escalation_pending())
    if due_soon:
        stmt = stmt.where(due_soon_clause(work_calendar(session), now or utcnow()))
    if pending_requests:
        stmt = stmt.where(requests_pending())
    if q:  # "%" or "_" typed (a rate, a file name) is a character, not a wildcard
        # The enterprise by its file's name too, as the list shows it (the name copied onto the appeal when it was
        # sent stays as it was after the file is renamed).
        renamed = select(Enterprise.id).where(Enterprise.name.icontains(q, autoescape=True))
        stmt = stmt.where(or_(*(c.icontains(q, autoescape=True)
                                for c in (Appeal.number, Appeal.content, Appeal.enterprise_name)),
                              Appeal.enterprise_id.in_(renamed)))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = list(session.scalars(stmt.order_by(Appeal.id.asc() if oldest_first else Appeal.id.desc())
                                 .offset((page - 1) * per_page).limit(per_page))
                 .unique())
    return Page(items, total, page, per_page)


def list_own(session: Session, user_id: int, *, page: int = 1, per_page: int = 20) -> Page:
    stmt = select(Appeal).where(Appeal.user_id == user_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = list(session.scalars(stmt.order_by(Appeal.id.desc()).offset((page - 1) * per_page).limit(per_page))
                 .unique())
    return Page(items, total, page, per_page)


def timeline(session: Session, appeal: Appeal, *, public_only: bool) -> list[AppealEvent]:
    q = select(AppealEvent).where(AppealEvent.appeal_id == appeal.id)
    if public_only:
        q = q.where(AppealEvent.public.is_(True))
    return list(session.scalars(q.order_by(AppealEvent.created_at, AppealEvent.id)))


def detail_for_staff(session: Session, appeal: Appeal, actor: Actor | None = None) -> dict[str, Any]:
    """The staff view of an appeal; `actor` (the one reading it) limits the similar appeals to those it may see."""
    body = appeal.to_staff()
    body["timeline"] = [e.to_dict() for e in timeline(session, appeal, public_only=False)]
    if actor is not None and _dept_only(actor):
        # The similar appeals found at submission, as the 相似诉求 list below: only those the department may open.
        found = {s["id"] for e in body["timeline"] for s in (e["data"] or {}).get("similar") or []}
        mine = set(session.scalars(select(Appeal.id).where(Appeal.id.in_(found), _dept_clause(actor.department)))
                   ) if found else set()
        for e in body["timeline"]:
            if (e["data"] or {}).get("similar"):
                e["data"] = {**e["data"], "similar": [s for s in e["data"]["similar"] if s["id"] in mine]}
    body["tasks"] = [t.to_dict() for t in session.scalars(select(AppealTask).where(
        AppealTask.appeal_id == appeal.id).order_by(AppealTask.id))]
    body["returns"] = [r.to_dict() for r in session.scalars(select(AppealReturn).where(
        AppealReturn.appeal_id == appeal.id).order_by(AppealReturn.id))]
    body["extensions"] = [x.to_dict() for x in session.scalars(select(AppealExtension).where(
        AppealExtension.appeal_id == appeal.id).order_by(AppealExtension.id))]
    body["ratings"] = [r.to_dict() for r in ratings(session, appeal)]
    # The appeals merged into this one, for everyone who may read it, a department handling it too: they are the same
    # issue, resolved with this one (act_resolve), and the list holds no content or enterprise; opening one is still
    # get_appeal's rule. Unlike the similar appeals, which may be any department's other matters.
    body["children"] = [{"id": c.id, "number": c.number, "status": c.status} for c in session.scalars(
        select(Appeal).where(Appeal.master_id == appeal.id)).unique()]
    body["similar"] = [{"id": a.id, "number": a.number, "score": sc, "content": a.content[:80]}
                       for a, sc in similar_open(session, appeal, actor=actor)]
    return body


def ratings(session: Session, appeal: Appeal) -> list[AppealRating]:
    return list(session.scalars(select(AppealRating).where(AppealRating.appeal_id == appeal.id)
                                .order_by(AppealRating.round)))


def detail_for_user(session: Session, appeal: Appeal) -> dict[str, Any]:
    body = appeal.to_public()
    body["timeline"] = [e.to_public() for e in timeline(session, appeal, public_only=True)]
    body_ratings = ratings(session, appeal)
    body["ratings"] = [r.to_dict() for r in body_ratings]
    ends = rating_window_ends(appeal, work_calendar(session))
    # When the mini-program may show 评价 and until when (the same end rate() checks).
    body["rating_ends"] = ends.isoformat() if ends is not None else None
    body["can_rate"] = (ends is not None and utcnow() <= ends
                        and not any(r.round == appeal.round for r in body_ratings))
    body["can_withdraw"] = appeal.status in WITHDRAWABLE
    body["can_supplement"] = appeal.status == S.PENDING_ENTERPRISE
    # The 办不成事 button: what escalate_by_user accepts (once; not on a closed, rejected, withdrawn or merged one).
    body["can_escalate"] = not appeal.escalated and appeal.status not in NOT_ESCALATABLE
    return body
