"""Activities and registrations: create/edit, eligibility, register without overbooking, waitlist, approval.

Seats are decided under a lock on the activity row: `SELECT ... FOR UPDATE` on PostgreSQL, and on SQLite
the `BEGIN IMMEDIATE` that db.py issues for every transaction already serialises writers. Everything that
changes who holds a seat (register, cancel, approve, reject, capacity change, promotion) takes that lock
first, so counting seats inside the transaction is exact.

Waitlist order (documented rule): by the hour of registration, then users with two or more no-shows in
the last 90 days behind the others of that hour, then first come first served. Newcomers never jump the
queue: while anyone is waitlisted, a newcomer is waitlisted too. An audience narrowed after people registered
cancels nobody (staff decide), but those on the waitlist now outside it are moved up only after everyone inside
it (in the same order among themselves): a freed seat goes to the people the activity is now meant for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..audit import SYSTEM, Actor, audit
from ..auth.models import ROLE_RANK, BindingState, StaffRole, User
from ..db import utcnow
from ..enterprises.models import Building, Enterprise
from ..enterprises.services import building_to_point_at
from ..errors import Conflict, Forbidden, NotFound, ValidationError
from ..notices.models import Notification
from ..notices.services import notify
from ..queue import enqueue_after_commit
from ..validation import Field, clean_text, strip_invisible, validate
from .models import (
    ACTIVE_STATUSES,
    ACTIVITY_STATUS_LABELS,
    CATEGORIES,
    QUESTION_TYPES,
    SEAT_STATUSES,
    STATUS_LABELS,
    TRANSITIONS,
    Activity,
    ActivityStatus,
    CategorySubscription,
    Registration,
    RegistrationEvent,
    RegStatus,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NO_SHOW_WINDOW = timedelta(days=90)
NO_SHOW_PENALTY_AT = 2
REMINDER_KIND = "activity_reminder"
CHANGED_KIND = "activity_changed"  # 活动调整: time or place changed, to the registrants
# The reminders' labels, in the dedup key "reminder:<registration>:<label>:<start stamp>" (activities.jobs).
EARLY_REMINDER, NEAR_REMINDER = "24h", "1h"


# A number question's answers lie in [min, max]: staff may set either on the question; without them 随行人数 took -3
# and 1e15. Staff's own bounds stay within ±NUMBER_BOUND. "integer": true takes whole numbers only (参加人数 took 2.5).
NUMBER_MIN, NUMBER_MAX, NUMBER_BOUND = 0, 99999, 10**9


def _number_range(q: dict) -> tuple[float, float]:
    return q.get("min", NUMBER_MIN), q.get("max", NUMBER_MAX)


def _check_range(q: dict, label: str) -> str | None:
    given = [k for k in ("min", "max") if k in q]
    if "integer" in q:  # 参加人数 and the like: no 2.5 people
        if q.get("type") != "number":
            return f"问题“{label}”：只有数字题可以设置 integer（只收整数）"
        if not isinstance(q["integer"], bool):
            return f"问题“{label}”的 integer 应为 true（只收整数）或 false，不要加引号"
    if not given:
        return None
    if q.get("type") != "number":
        return f"问题“{label}”：只有数字题可以设置 min / max"
    for k in given:
        v = q[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) > NUMBER_BOUND:
            return f"问题“{label}”的 {k} 应为 -{NUMBER_BOUND} 到 {NUMBER_BOUND} 之间的数字"
        if q.get("integer") is True and not float(v).is_integer():
            return f"问题“{label}”只收整数，{k} 也应为整数"
    low, high = _number_range(q)
    if low > high:
        return (f"问题“{label}”的最小值不能大于最大值（未设置时最小值为 {NUMBER_MIN}、最大值为 {NUMBER_MAX}）")
    return None


# Everything a question item may carry; _answer_field and the mini-program read nothing else.
QUESTION_KEYS = ("key", "label", "type", "required", "options", "min", "max", "integer")


def _check_question(q: Any) -> str | None:
    if not isinstance(q, dict):
        return "每个问题应为对象（含 key、label、type）"
    key, label, kind = q.get("key"), q.get("label"), q.get("type")
    if not isinstance(key, str) or not key.isidentifier() or len(key) > 32:
        return "问题的 key 应为 1-32 位英文字母、数字或下划线"
    if not isinstance(label, str) or not label.strip() or len(label) > 60:
        return f"问题“{key}”缺少标题（最多 60 个字）"
    if kind not in QUESTION_TYPES:
        return f"问题“{label}”的类型只能是：{'、'.join(QUESTION_TYPES)}"
    # A misspelt setting ("requried", "opitons", "maxx") was dropped without a word and the question saved without
    # the rule staff meant: name it rather than guess.
    unknown = [str(k)[:40] for k in q if k not in QUESTION_KEYS]
    if unknown:
        return (f"问题“{label}”里有不认识的设置 {'、'.join(unknown[:5])}，"
                f"可用的设置只有 {'、'.join(QUESTION_KEYS)}")
    # {"required": "false"} is a non-empty string, which reads as true: the question staff meant optional would
    # block every registration left without an answer. Only JSON's own true / false say it.
    if "required" in q and not isinstance(q["required"], bool):
        return f"问题“{label}”的 required 应为 true（必填）或 false（选填），不要加引号"
    if kind in {"choice", "multi"}:
        options = q.get("options")
        if not isinstance(options, list) or not options or not all(isinstance(o, str) and o for o in options):
            return f"问题“{label}”需要至少一个选项"
    return _check_range(q, label)


def _check_questions(qs: list) -> str | None:
    keys = set()
    for q in qs:
        problem = _check_question(q)
        if problem:
            return problem
        if q["key"] in keys:
            return f"问题的 key“{q['key']}”重复了"
        keys.add(q["key"])
    return None


def _check_cover(url: str) -> str | None:
    """The mini-program shows only https images (and the console's page loads what the address names): a web
    address without blanks or quotes, or nothing."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or any(c in url for c in " \"'<>\\") or not url.isprintable():
        return "封面图片地址需为 https:// 开头的网址（不含空格和引号），或留空"
    return None


ACTIVITY_FIELDS = (
    Field("category", "enum", "活动类别", required=True, choices=tuple(CATEGORIES), choice_names=CATEGORIES),
    Field("title", "str", "活动名称", required=True, max_len=100),
    Field("description", "text", "活动介绍", max_len=5000, default=""),
    Field("building_id", "int", "所在楼宇", min=1),
    Field("address", "str", "活动地点", max_len=200, default=""),
    Field("starts_at", "datetime", "开始时间", required=True),
    Field("ends_at", "datetime", "结束时间", required=True),
    Field("registration_opens_at", "datetime", "报名开始时间"),
    Field("registration_closes_at", "datetime", "报名截止时间"),
    Field("cancel_deadline", "datetime", "取消报名截止时间"),
    Field("capacity", "int", "名额", required=True, max=100000),
    Field("waitlist_enabled", "bool", "候补", default=True),
    Field("audience_building_ids", "list", "面向楼宇", item=Field("building_id", "int", "楼宇", min=1),
          max_items=200, default=[]),
    Field("audience_industries", "list", "面向行业", item=Field("industry", "str", "行业", max_len=64),
          max_items=100, default=[]),
    Field("audience_tags", "list", "面向企业标签", item=Field("tag", "str", "标签", max_len=32), max_items=100,
          default=[]),
    Field("verified_only", "bool", "仅限已核实的企业联系人", default=False),
    Field("per_enterprise_cap", "int", "每家企业名额上限", max=100000),
    Field("questions", "list", "报名问题", max_items=20, default=[], check=_check_questions,
          description="每项 {key, label, type, required}；单选、多选题带 options；数字题可带 min、max（不设时为 0 到 99999），"
                      "只收整数的（如参加人数）再带 \"integer\": true"),
    Field("requires_approval", "bool", "报名需审核", default=False),
    Field("cover_image", "str", "封面图片地址", max_len=300, default="", check=_check_cover,
          description="https:// 开头的图片网址，可留空"),
    Field("status", "enum", "状态", choices=tuple(s.value for s in ActivityStatus),
          choice_names=ACTIVITY_STATUS_LABELS, default=ActivityStatus.PUBLISHED.value),
)


def _cross_check(v: dict[str, Any]) -> dict[str, str]:
    """The checks that involve more than one field, with Chinese messages per field."""
    errors: dict[str, str] = {}
    if v.get("capacity") is not None and v["capacity"] <= 0:
        errors["capacity"] = "名额必须大于 0"
    cap = v.get("per_enterprise_cap")
    if cap is not None and cap <= 0:
        errors["per_enterprise_cap"] = "每家企业名额上限必须大于 0（不限请留空）"
    starts, ends = v.get("starts_at"), v.get("ends_at")
    if starts and ends and ends <= starts:
        errors["ends_at"] = "结束时间必须晚于开始时间"
        if ends.astimezone(SHANGHAI).date() == starts.astimezone(SHANGHAI).date():
            # 22:00 to 02:00 typed on one date: the end is meant on the next day, and the bare rule reads as wrong.
            errors["ends_at"] += "（活动跨过午夜的，结束日期请选第二天）"
    opens, closes = v.get("registration_opens_at"), v.get("registration_closes_at")
    if opens and starts and opens >= starts:
        errors["registration_opens_at"] = "报名开始时间必须早于活动开始时间"
    if closes and starts and closes > starts:
        errors["registration_closes_at"] = "报名截止时间不能晚于活动开始时间"
    if opens and closes and closes <= opens:
        errors["registration_closes_at"] = "报名截止时间必须晚于报名开始时间"
    deadline = v.get("cancel_deadline")
    if deadline and starts and deadline > starts:
        errors["cancel_deadline"] = "取消报名截止时间不能晚于活动开始时间"
    if not v.get("building_id") and not v.get("address"):
        errors["address"] = "请选择楼宇或填写活动地点"
    return errors


# Optional settings an edit may remove (a partial validation reads a missing or null value as "unchanged").
CLEARABLE = ("registration_opens_at", "registration_closes_at", "cancel_deadline", "per_enterprise_cap",
             "building_id")
CANCEL_REASON = Field("cancel_reason", "str", "取消原因", max_len=50, default="",
                      description="把活动状态改为已取消时可填，写进给报名者的通知")


def _tidy_question(q: Any) -> Any:
    """A question's label and options as an answer is read (no control characters, no surrounding blanks): an
    answer is cleaned before it is compared with the options, so an option pasted as "S\x01" or " M " could
    never be chosen."""
    if not isinstance(q, dict):
        return q
    out = dict(q)
    if isinstance(out.get("label"), str):
        out["label"] = clean_text(out["label"])
    if isinstance(out.get("options"), list):
        out["options"] = [clean_text(o) if isinstance(o, str) else o for o in out["options"]]
    return out


def _validated(data: dict[str, Any], existing: Activity | None, clear: Iterable[str] = ()) -> dict[str, Any]:
    if isinstance(data.get("questions"), list):
        data = {**data, "questions": [_tidy_question(q) for q in data["questions"]]}
    clean = validate(data, ACTIVITY_FIELDS, partial=existing is not None)
    clean.update({name: None for name in clear if name in CLEARABLE and name not in clean})
    merged = dict(clean)
    if existing is not None:
        for f in ACTIVITY_FIELDS:
            merged.setdefault(f.name, getattr(existing, f.name))
    errors = _cross_check(merged)
    if errors:
        raise ValidationError(f"填写的内容有误：{next(iter(errors.values()))}", fields=errors)
    return clean


def _check_buildings(session: Session, v: dict[str, Any], current: int | None = None) -> None:
    """The venue and the audience's buildings must exist: a mistyped id in 面向楼宇 would leave out the
    building meant (everyone, when it is the only one), with nothing to tell staff why. `current`: the venue now."""
    if v.get("building_id") and building_to_point_at(session, v["building_id"], current=current) is None:  # (share-locked)
        raise ValidationError("所选楼宇不存在", fields={"building_id": "所选楼宇不存在"})
    wanted = set(v.get("audience_building_ids") or [])
    missing = sorted(wanted - set(session.scalars(select(Building.id).where(Building.id.in_(wanted))))) if wanted else []
    if missing:
        msg = f"面向楼宇中有不存在的楼宇（编号 {'、'.join(map(str, missing[:5]))}），请重新选择"
        raise ValidationError(msg, fields={"audience_building_ids": msg})


def create_activity(session: Session, actor: Actor, data: dict[str, Any]) -> Activity:
    """Create an activity from raw input (validated here: 422 with a Chinese message per field)."""
    v = _validated(data, None)
    _check_buildings(session, v)
    if v["starts_at"] <= utcnow():
        # A mistyped year: published at once, it could never be registered for, was closed with nobody in it, and
        # was missing from the mini-program, with “活动已保存” the only word staff had.
        shown = v["starts_at"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        msg = f"开始时间 {shown} 已经过去，请核对日期"
        raise ValidationError(f"填写的内容有误：{msg}", fields={"starts_at": msg})
    activity = Activity(**v, created_by=actor.id if actor.type == "staff" else None)
    session.add(activity)
    session.flush()
    audit(session, actor, "activity.created", activity, title=activity.title, capacity=activity.capacity,
          status=activity.status)
    _schedule(session, activity)
    return activity


def update_activity(session: Session, actor: Actor, activity_id: int, data: dict[str, Any],
                    *, clear: Iterable[str] = ()) -> Activity:
    """Edit an activity; raising the capacity promotes that many from the waitlist in this transaction.
    `clear` names optional settings (CLEARABLE) to remove, as the console's editor does with an emptied box."""
    activity = lock_activity(session, activity_id)
    # 取消原因: not a setting of the activity, the registrants' notice and the audit row carry it.
    reason = validate({"cancel_reason": data.get("cancel_reason", "")}, (CANCEL_REASON,))["cancel_reason"]
    v = _validated({k: val for k, val in data.items() if k != "cancel_reason"}, activity, clear)
    if reason and v.get("status", activity.status) != ActivityStatus.CANCELLED.value:
        # Typed with the status left at 已发布 (or sent alone): the reason went nowhere, the activity stayed on and
        # nobody was told, while staff believed the registrants had been.
        msg = "填写了取消原因，但活动状态不是“已取消”：如要取消活动，请把状态改为“已取消”；不取消请清空取消原因"
        raise ValidationError(f"填写的内容有误：{msg}", fields={"cancel_reason": msg})
    _check_buildings(session, v, activity.building_id)
    now = utcnow()
    if activity.starts_at > now and v.get("starts_at") is not None and v["starts_at"] <= now:
        # A mistyped year: moved into the past, the attendance close would run at once and make every registrant a
        # no-show (and cancel the waitlist), which putting the right date back does not undo.
        shown = v["starts_at"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        msg = f"开始时间 {shown} 已经过去，活动还没开始，请核对日期"
        raise ValidationError(f"填写的内容有误：{msg}", fields={"starts_at": msg})
    moved = [k for k in ("starts_at", "ends_at") if v.get(k) is not None and v[k] != getattr(activity, k)]
    if activity.attendance_closed_at is not None and moved:
        # Reusing a past activity for a new date would carry its attendees and no-shows along (holding seats,
        # unable to register again), and its attendance, closed already, would never close for the new date.
        msg = "活动已结束并已记录签到情况，不能再改时间；如需再办一期，请新建一个活动"
        raise ValidationError(f"填写的内容有误：{msg}", fields={moved[0]: msg})
    taken = seats_taken(session, activity.id)
    if "capacity" in v and v["capacity"] < taken:
        msg = f"名额不能少于已占用的 {taken} 个（请先取消部分报名）"
        raise ValidationError(msg, fields={"capacity": msg})
    if v.get("per_enterprise_cap") is not None and v["per_enterprise_cap"] < (activity.per_enterprise_cap or 10**9):
        # Lowered below what one enterprise holds already: its registrants all kept their places over the new cap,
        # and nothing said so (as the capacity, above).
        most = session.scalar(select(func.count(Registration.id)).where(
            Registration.activity_id == activity.id, Registration.enterprise_id.is_not(None),
            Registration.status.in_(ACTIVE_STATUSES)).group_by(Registration.enterprise_id)
            .order_by(func.count(Registration.id).desc()).limit(1)) or 0
        if v["per_enterprise_cap"] < most:
            msg = f"每家企业名额上限不能少于已有企业报名的 {most} 人（请先取消该企业的部分报名）"
            raise ValidationError(msg, fields={"per_enterprise_cap": msg})
    changed = {k: val for k, val in v.items() if getattr(activity, k) != val}
    if not changed:
        # The editor sent back as shown, a PATCH of the values read: nothing to record, nobody to tell. Each such
        # save wrote an “activity.updated” row naming no change, burying the saves that changed something.
        return activity
    if "status" in changed:
        _check_status_change(session, activity, changed["status"])
    starts = changed.get("starts_at", activity.starts_at)
    if changed.get("status") == ActivityStatus.PUBLISHED and starts <= now:
        # A draft left past its date, then published: nobody could register, attendance closed at once with nobody
        # in it, and the mini-program never listed it (create_activity refuses such a start in the same words).
        shown = starts.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        msg = f"开始时间 {shown} 已经过去，不能发布，请先核对日期"
        raise ValidationError(f"填写的内容有误：{msg}", fields={"starts_at": msg})
    deadline = changed.get("cancel_deadline", activity.cancel_deadline)
    if (changed.get("status", activity.status) == ActivityStatus.PUBLISHED and deadline is not None
            and deadline <= utcnow() and {"starts_at", "ends_at", "address", "building_id"} & changed.keys()):
        # The change notice asks those who cannot come to cancel; a deadline already passed (the console's
        # edit form sends it back unchanged) would refuse them, so it is lifted until the start.
        changed["cancel_deadline"] = None
    # From/to pairs: publishing and cancelling are edits of the status, and the log must say which it was.
    changes = {k: [getattr(activity, k), val] for k, val in changed.items() if k != "description"}
    for k, val in changed.items():
        setattr(activity, k, val)
    session.flush()
    cancelled = changed.get("status") == ActivityStatus.CANCELLED
    outside = out_of_audience(session, activity) if set(AUDIENCE_FIELDS) & changed.keys() and not cancelled else 0
    audit(session, actor, "activity.updated", activity, changed=sorted(changed), changes=changes,
          **({"cancel_reason": reason} if cancelled and reason else {}),
          **({"out_of_audience": outside} if outside else {}))
    if changed.get("requires_approval") is False and activity.status != ActivityStatus.CANCELLED:
        # No approval any more: those waiting for one (their seats held already) are in, and told so; they would
        # have stayed 待审核 with nobody left to decide.
        for reg in session.scalars(select(Registration).where(
                Registration.activity_id == activity.id,
                Registration.status == RegStatus.PENDING_APPROVAL.value).order_by(Registration.id)):
            transition(session, reg, RegStatus.CONFIRMED, actor, "活动改为无需审核")
            reg.promoted_at = now  # a seat given now, as an approval (decide)
            if now < activity.ends_at:  # after the end, as decide: nothing to tell about an evening that is over
                tell(session, reg, activity, "registration_approved", "报名成功",
                     f"您报名的活动“{activity.title}”已改为无需审核，报名已确认。", "报名成功")
    if "starts_at" in changed and not cancelled:
        _void_early_check_ins(session, activity, actor, now)
    if cancelled:
        _cancel_registrations(session, activity, actor, reason)
    elif activity.status == ActivityStatus.PUBLISHED and {"starts_at", "ends_at", "address", "building_id"} & changed.keys():
        _tell_changed(session, activity)
    if activity.status == ActivityStatus.PUBLISHED:
        promote(session, activity, actor, cause=f"activity:{activity.id}", why="活动名额或设置调整")
    if changed.get("waitlist_enabled") is False and activity.status != ActivityStatus.CANCELLED:
        _release_waitlist(session, activity, actor)
    if {"starts_at", "ends_at"} & changed.keys():
        _schedule(session, activity)
    return activity


def _check_status_change(session: Session, activity: Activity, to: str) -> None:
    """Cancelling is final (its registrations were cancelled and their users told), an activity whose attendance
    is recorded is past cancelling, and a published activity that people have registered for cannot quietly go
    back to draft: they would lose it without a word."""
    if activity.status == ActivityStatus.CANCELLED.value:
        msg = "活动已取消，不能再改状态；如需重新举办，请新建一个活动。"
        raise ValidationError(msg, fields={"status": msg})
    if to == ActivityStatus.CANCELLED.value and activity.attendance_closed_at is not None:
        # It took place: who came and who did not is recorded (no-shows counted against them), and cancelling
        # would leave that record under an activity that "never happened".
        msg = "活动已结束并已记录签到情况，不能再取消。"
        raise ValidationError(msg, fields={"status": msg})
    if to == ActivityStatus.CANCELLED.value and utcnow() >= activity.ends_at:
        # Over, in the hour before attendance closes: those not scanned were told it had been cancelled, about an
        # evening that took place (and escaped their no-show).
        msg = "活动已结束，不能再取消；如有人到场未签到，请在报名名单中更正为已到场。"
        raise ValidationError(msg, fields={"status": msg})
    if to == ActivityStatus.DRAFT.value and activity.status == ActivityStatus.PUBLISHED.value:
        active = session.scalar(select(func.count(Registration.id)).where(
            Registration.activity_id == activity.id, Registration.status.in_(ACTIVE_STATUSES))) or 0
        if active:
            msg = f"已有 {active} 人报名，不能改回草稿；如不再举办，请把状态改为“已取消”（报名者会收到通知）。"
            raise ValidationError(msg, fields={"status": msg})


# Attendance closes (no-shows recorded, check-in refused) this long after an activity ends.
ATTENDANCE_GRACE = timedelta(hours=1)
# Registrations whose holders have yet to come (a seat, the waitlist, awaiting approval): the ones a cancelled or
# changed activity concerns. Checked in or recorded as no-show, it has happened already.
STILL_TO_COME = (RegStatus.PENDING_APPROVAL.value, RegStatus.CONFIRMED.value, RegStatus.WAITLISTED.value)
# The good news told of a registration, and the statuses in which it is still true: delivered later than that (its
# push waited), it stays in 消息 only (notices.jobs._stale_reminder).
STANDS_WHILE: dict[str, tuple[str, ...]] = {
    "waitlist_promoted": (RegStatus.PENDING_APPROVAL.value, RegStatus.CONFIRMED.value, RegStatus.ATTENDED.value),
    "registration_approved": (RegStatus.CONFIRMED.value, RegStatus.ATTENDED.value),
}


def _cancel_registrations(session: Session, activity: Activity, actor: Actor, reason: str = "") -> int:
    """The activity is cancelled: every registration still waiting for it (a seat, the waitlist, awaiting
    approval) is cancelled with it and its user told, with staff's reason when they gave one (a bare apology
    left people asking why, and whether it would be held later); the caller holds the activity lock. Those
    already checked in (check-in opens before the start) or recorded as no-shows keep that record."""
    regs = session.scalars(select(Registration).where(Registration.activity_id == activity.id,
                                                      Registration.status.in_(STILL_TO_COME))).all()
    now = utcnow()
    note = f"活动取消：{reason}" if reason else "很抱歉，活动已取消"
    for reg in regs:
        transition(session, reg, RegStatus.CANCELLED, actor, note=f"活动取消：{reason}" if reason else "活动取消")
        reg.cancelled_at = now
        why = f"（{reason.rstrip('。.')}）" if reason else ""
        tell_cancelled(session, reg, activity, "活动已取消",
                       f"很抱歉，您报名的活动“{activity.title}”已取消{why}，给您带来不便，敬请谅解。", note)
    return len(regs)


def _void_early_check_ins(session: Session, activity: Activity, actor: Actor, now: datetime) -> None:
    """The start moved beyond the check-in window (postponed by days after the first scans at the door): those
    checked in are confirmed again, for the new date. Left 已签到, they were not told the new time, got no reminder
    for it and could never be a no-show. Put back within the window (a late speaker), they are there and stay in.
    The caller holds the activity lock."""
    from .checkin import CHECKIN_OPENS_BEFORE

    if now >= activity.starts_at - CHECKIN_OPENS_BEFORE:
        return
    for reg in session.scalars(select(Registration).where(Registration.activity_id == activity.id,
                                                          Registration.status == RegStatus.ATTENDED.value)):
        transition(session, reg, RegStatus.CONFIRMED, actor, note="活动改期，原签到不计入新的时间")
        reg.checked_in_at = None
        reg.checked_in_by = None


WAITLIST_CLOSED = "活动不再设候补"


def _release_waitlist(session: Session, activity: Activity, actor: Actor) -> int:
    """候补 switched off: those still waiting (after any seat this save freed went to the head) are released and
    told, as a registration staff cancel is; left waitlisted, they heard nothing and a seat freed later still went
    to them from a waitlist the organiser had closed. The caller holds the activity lock."""
    regs = session.scalars(select(Registration).where(Registration.activity_id == activity.id,
                                                      Registration.status == RegStatus.WAITLISTED.value)
                           .order_by(Registration.id)).all()
    now = utcnow()
    # Once it has started nobody can register again: the hint would send them to a 报名 button that refuses.
    hint = "如之后有名额空出，可在小程序中重新报名。" if now < activity.starts_at else "给您带来不便，敬请谅解。"
    for reg in regs:
        transition(session, reg, RegStatus.CANCELLED, actor, note=WAITLIST_CLOSED)
        reg.cancelled_at = now
        tell_cancelled(session, reg, activity, "候补已取消",
                       f"很抱歉，您候补的活动“{activity.title}”已不再设候补，您的候补已取消；{hint}",
                       f"{WAITLIST_CLOSED}，候补已取消")
    return len(regs)


def tell_cancelled(session: Session, reg: Registration, activity: Activity, title: str, body: str,
                   note: str) -> None:
    """Tell a registrant their registration is off before the activity (it was cancelled, or staff cancelled the
    registration): on the registration-result template (registration_cancelled) when they hold credit for it (a
    waitlisted or pending registration asks for it), else as 活动调整 (CHANGED_KIND), the template every registration
    asks the worker to allow (subscribe_hint), whose credit is of no more use to them. Always on the former, a
    confirmed registrant (never asked for it) had no credit: the news stayed in 消息 and they came to the door."""
    from ..notices import credits

    result = "registration_cancelled"
    kind = result if credits.available(session, reg.user_id, template_for(result)) else CHANGED_KIND
    notify(session, reg.user_id, kind,
           {"activity": activity.title, "title": activity.title if kind == result else f"{title}：{activity.title}",
            "result": title, "time": activity.starts_at.isoformat(), "place": activity.place or "详见活动页面",
            "note": note},
           f"pages/activity/detail?id={activity.id}", title=title, body=body, ref=f"registration:{reg.id}",
           dedup_key=f"registration_cancelled:{reg.id}")


def _tell_changed(session: Session, activity: Activity) -> int:
    """The time or place of a published activity changed: everyone still to come (a seat, the waitlist, awaiting
    approval) is told the new time and place, once per change (a double save of one change tells nobody twice).
    Someone already checked in is not asked to cancel if they cannot come (staff push the end back mid-way)."""
    regs = session.scalars(select(Registration).where(Registration.activity_id == activity.id,
                                                      Registration.status.in_(STILL_TO_COME))).all()
    session.refresh(activity, ["building"])
    starts, ends = activity.starts_at.astimezone(SHANGHAI), activity.ends_at.astimezone(SHANGHAI)
    start = starts.strftime("%Y-%m-%d %H:%M")
    # The end's date too when it is another day (past midnight, or several days): "09:00-17:00" misled.
    end = ends.strftime("%H:%M" if ends.date() == starts.date() else "%Y-%m-%d %H:%M")
    place = activity.place or "详见活动页面"
    version = change_version(activity)
    # How many change notices each has had: moved there and back and there again, the third is a new notice
    # even though its time and place were told once before.
    told = dict(session.execute(select(Notification.ref, func.count(Notification.id)).where(
        Notification.ref.in_([f"registration:{r.id}" for r in regs] or [""]),
        Notification.dedup_key.startswith("activity_changed:", autoescape=True)).group_by(Notification.ref)).all())
    now = utcnow()
    for reg in regs:
        # Asked to cancel only while they can: once it has started (the end pushed back mid-way) the mini-program
        # refuses the cancel the notice asked for.
        hint = ("如不能参加，请在小程序中取消报名。" if now < user_cancel_deadline(reg, activity)
                else "如有疑问，请联系活动工作人员。")
        notify(session, reg.user_id, CHANGED_KIND,
               {"activity": activity.title, "title": f"活动调整：{activity.title}",
                "time": activity.starts_at.isoformat(), "place": place, "note": "时间或地点有调整"},
               f"pages/activity/detail?id={activity.id}", title=f"活动调整：{activity.title}"[:100],
               body=f"您报名的活动“{activity.title}”时间或地点有调整：{start}-{end}，{place}。{hint}",
               ref=f"registration:{reg.id}", dedup_key=f"activity_changed:{reg.id}:{version}:{told.get(f'registration:{reg.id}', 0)}")
    return len(regs)


def change_version(activity: Activity) -> str:
    """The time and place a 活动调整 notice tells, as a short hash (in its dedup key "activity_changed:<registration>:
    <version>:<n>"): delivery compares it with the activity's, and does not push a notice a later change overtook. By
    the instants, not their text: the values saved carry the offset typed, those read back are UTC."""
    place = activity.place or "详见活动页面"
    told = f"{int(activity.starts_at.timestamp())}|{int(activity.ends_at.timestamp())}|{place}"
    return hashlib.sha1(told.encode()).hexdigest()[:12]


def _schedule(session: Session, activity: Activity) -> None:
    """Delayed jobs for reminders and no-shows; they re-check the activity, so a moved one is harmless."""
    now = utcnow()
    stamp = int(activity.starts_at.timestamp())
    for label, before in (("24h", timedelta(hours=24)), ("1h", timedelta(hours=1))):
        at = activity.starts_at - before
        enqueue_after_commit(session, "wxapp_backend.activities.jobs.send_reminders", activity.id, label,
                             job_id=f"act-remind-{activity.id}-{label}-{stamp}",
                             delay=max((at - now).total_seconds(), 0) or None)
    close_at = activity.ends_at + ATTENDANCE_GRACE
    enqueue_after_commit(session, "wxapp_backend.activities.jobs.close_attendance", activity.id,
                         job_id=f"act-noshow-{activity.id}-{int(activity.ends_at.timestamp())}",
                         delay=max((close_at - now).total_seconds(), 0) or None)


def lock_activity(session: Session, activity_id: int, *, lock: bool = True) -> Activity:
    """The activity row, locked until the transaction ends (FOR UPDATE; a no-op on SQLite, see module doc)."""
    stmt = select(Activity).where(Activity.id == activity_id)
    if lock:
        stmt = stmt.with_for_update(of=Activity)
    activity = session.scalar(stmt.execution_options(populate_existing=True))
    if activity is None:
        raise NotFound("没有找到这个活动。")
    return activity


def seats_taken(session: Session, activity_id: int) -> int:
    return session.scalar(select(func.count(Registration.id)).where(
        Registration.activity_id == activity_id, Registration.status.in_(SEAT_STATUSES))) or 0


def waitlist_length(session: Session, activity_id: int) -> int:
    return session.scalar(select(func.count(Registration.id)).where(
        Registration.activity_id == activity_id, Registration.status == RegStatus.WAITLISTED.value)) or 0


def seat_counts(session: Session, activity_ids: list[int]) -> dict[int, tuple[int, int]]:
    """{activity_id: (seats taken, waitlisted)} in one query."""
    if not activity_ids:
        return {}
    rows = session.execute(select(Registration.activity_id, Registration.status, func.count(Registration.id))
                           .where(Registration.activity_id.in_(activity_ids),
                                  Registration.status.in_(ACTIVE_STATUSES))
                           .group_by(Registration.activity_id, Registration.status)).all()
    out = {i: [0, 0] for i in activity_ids}
    for aid, status, n in rows:
        out[aid][1 if status == RegStatus.WAITLISTED.value else 0] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


LIST_PARAMS = (
    Field("category", "enum", "活动类别", choices=tuple(CATEGORIES), choice_names=CATEGORIES),
    Field("date", "date", "日期"),
    Field("building_id", "int", "活动地点所在楼宇", min=1,
          description="只按活动地点所在的楼宇筛选，不是“面向这栋楼宇白领的活动”：在别处举办、面向这栋楼宇的活动不在其中。"
                      "活动面向哪些楼宇见每项的 audience.building_ids；带登录令牌时 ineligible_reason 为 null 即本人可以报名"),
    Field("include_past", "bool", "包括已结束的活动", default=False),
    Field("page", "int", "页码", min=1, max=100000, default=1),
    Field("per_page", "int", "每页条数", min=1, max=100, default=20),
)


def list_activities(session: Session, q: dict[str, Any], *, staff: bool = False,
                    user_id: int | None = None) -> tuple[list[dict], int]:
    """Activities for the mini-program (published, not yet ended unless include_past) or the console; for a
    logged-in user each says whether they may register (`ineligible_reason`: why not, or null: see refusal())."""
    stmt = select(Activity)
    if not staff:
        stmt = stmt.where(Activity.status == ActivityStatus.PUBLISHED.value)
    elif q.get("status"):
        stmt = stmt.where(Activity.status == q["status"])
    if q.get("category"):
        stmt = stmt.where(Activity.category == q["category"])
    if q.get("building_id"):
        stmt = stmt.where(Activity.building_id == q["building_id"])
    if q.get("date"):
        day: date = q["date"]
        start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)
        stmt = stmt.where(Activity.starts_at < start + timedelta(days=1), Activity.ends_at > start)
    elif not q.get("include_past") and not staff:
        stmt = stmt.where(Activity.ends_at > utcnow())
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(*list_order(utcnow())).offset((q["page"] - 1) * q["per_page"])
                           .limit(q["per_page"])).unique().all()
    counts = seat_counts(session, [a.id for a in rows])
    items = [a.to_dict(seats_taken=counts[a.id][0], waitlisted=counts[a.id][1]) for a in rows]
    now = utcnow()
    if not staff:
        for item, a in zip(items, rows, strict=True):
            item["register_note"] = register_note(a, *counts[a.id], now)
    user = session.get(User, user_id) if user_id is not None else None
    if user is not None:  # the list greys out what they cannot join, instead of a 403 / 409 after they tap 报名
        standing = own_standing(session, user.id, [a.id for a in rows])
        for item, a in zip(items, rows, strict=True):
            item["ineligible_reason"] = refusal(a, user, *counts[a.id], now, standing.get(a.id))
            if item["ineligible_reason"] is not None:  # about a registration they cannot make
                item["register_note"] = None
    return items, total


def list_order(now: datetime) -> tuple:
    """The lists' order (mini-program, console, staff API): those not over yet first, soonest first (one under way at
    the top), then those over, the most recent first. By start alone, oldest first, a worker with include_past read
    last year's concert before last week's and scrolled past every old one to reach what they could join; latest
    first, the console put an activity three months out above tomorrow's."""
    coming = Activity.ends_at > now
    # Within each group the other key is NULL for every row, so the databases' different NULL orders never matter.
    return (case((coming, 0), else_=1), case((coming, Activity.starts_at), else_=None).asc(),
            case((coming, None), else_=Activity.starts_at).desc(), Activity.id)


STAFF_LIST_PARAMS = (
    Field("category", "enum", "活动类别", choices=tuple(CATEGORIES), choice_names=CATEGORIES),
    Field("status", "enum", "状态", choices=tuple(s.value for s in ActivityStatus),
          choice_names=ACTIVITY_STATUS_LABELS),
    Field("page", "int", "页码", min=1, max=100000, default=1),
    Field("per_page", "int", "每页条数", min=1, max=100, default=20),
)


def get_activity(session: Session, activity_id: int, *, staff: bool = False) -> Activity:
    activity = session.get(Activity, activity_id)
    if activity is None or (not staff and activity.status == ActivityStatus.DRAFT.value):
        raise NotFound("没有找到这个活动。")
    return activity


# --- eligibility ---------------------------------------------------------------------------------------

def _verified_enterprise(user: User) -> Enterprise | None:
    if user.enterprise is not None and user.binding_state == BindingState.VERIFIED.value:
        return user.enterprise
    return None


def ineligibility(activity: Activity, user: User) -> str | None:
    """Why `user` may not register for `activity` (Chinese), or None when they may."""
    if user.blocked:
        return "您的账号已被限制报名，请联系营商服务中心。"
    return audience_miss(activity, user)


def audience_miss(activity: Activity, user: User) -> str | None:
    """Why `user` is outside `activity`'s audience (楼宇, 行业, 标签, verified-only), or None when inside."""
    ent = _verified_enterprise(user)
    # Without a verified enterprise there is no industry or tag to compare: "not in range" would be about an
    # enterprise they never gave, and "please bind" is wrong for someone whose binding staff are still checking.
    if user.binding_state == BindingState.PENDING.value:
        unverified = "您的企业绑定正在核实中，核实通过后即可报名。"
    else:
        unverified = "请先在“我的”中绑定并核实所在企业后再报名。"
    if activity.verified_only and ent is None:
        return "本活动仅限已核实的企业联系人报名，" + unverified
    if activity.audience_building_ids:
        buildings = {user.building_id, ent.building_id if ent else None} - {None}
        if not buildings:  # nothing to compare: "not in range" would be news to them; say what is missing
            return "本活动仅面向指定楼宇的白领，请先在“我的”中填写您所在的楼宇后再报名。"
        if not buildings & set(activity.audience_building_ids):
            return "本活动仅面向指定楼宇的白领，您所在的楼宇不在范围内。"
    if activity.audience_industries:
        if ent is None:
            return "本活动仅面向指定行业的企业，" + unverified
        if ent.industry not in activity.audience_industries:
            return "本活动仅面向指定行业的企业，您所在企业的行业不在范围内。"
    if activity.audience_tags:
        if ent is None:
            return "本活动仅面向特定企业，" + unverified
        if not set(ent.tags or []) & set(activity.audience_tags):
            return "本活动仅面向特定企业，您所在的企业不在范围内。"
    return None


AUDIENCE_FIELDS = ("audience_building_ids", "audience_industries", "audience_tags", "verified_only")


def has_audience(activity: Activity) -> bool:
    """Whether the activity is meant for some users only (楼宇, 行业, 标签, verified-only)."""
    return any(getattr(activity, k) for k in AUDIENCE_FIELDS)


# What a registrant left outside an audience narrowed after they registered reads: by the rule above their
# registration stands; “不在范围内” beside 报名成功 read as if it no longer counted.
STILL_REGISTERED = "您已报名这个活动了。活动的报名范围调整过，您的报名仍然有效。"
AUDIENCE_NOTE = "活动的报名范围调整过，您已不在新的范围内，但您的报名仍然有效。"
AUDIENCE_NOTE_WAITLISTED = ("活动的报名范围调整过，您已不在新的范围内，您的候补仍然保留；有名额时会先递补范围内的"
                            "候补者，再轮到您。")


def audience_note(reg: Registration) -> str | None:
    """For a registration still to come whose holder the activity's audience, narrowed since, no longer takes in:
    that it stands (and, on the waitlist, that those inside go first); None otherwise."""
    if reg.status not in STILL_TO_COME or not has_audience(reg.activity) or reg.user is None:
        return None
    if audience_miss(reg.activity, reg.user) is None:
        return None
    return AUDIENCE_NOTE_WAITLISTED if reg.status == RegStatus.WAITLISTED.value else AUDIENCE_NOTE


def waitlist_order(session: Session, activity: Activity, limit: int | None = None) -> list[Registration]:
    """The activity's waitlist in the order promote() takes it: the documented order, those outside an audience
    narrowed since they registered after everyone inside it."""
    stmt = select(Registration).where(
        Registration.activity_id == activity.id, Registration.status == RegStatus.WAITLISTED.value).order_by(
        Registration.queue_hour, Registration.penalty, Registration.id)
    if not has_audience(activity):  # nobody can be outside it: the order is the database's
        return list(session.scalars(stmt.limit(limit) if limit is not None else stmt).all())
    regs = list(session.scalars(stmt).all())
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_({r.user_id for r in regs})))} \
        if regs else {}
    inside = [r for r in regs if users.get(r.user_id) is not None and audience_miss(activity, users[r.user_id]) is None]
    chosen = {r.id for r in inside}
    ordered = inside + [r for r in regs if r.id not in chosen]
    return ordered[:limit] if limit is not None else ordered


def out_of_audience(session: Session, activity: Activity, statuses: tuple[str, ...] = STILL_TO_COME) -> int:
    """How many registrants still to come (or in `statuses`) fall outside the activity's audience as it is now:
    narrowed after they registered, they are not cancelled (staff decide), but staff must know they are there."""
    users = session.scalars(select(User).join(Registration, Registration.user_id == User.id).where(
        Registration.activity_id == activity.id, Registration.status.in_(statuses))).unique().all()
    return sum(1 for user in users if audience_miss(activity, user) is not None)


# --- answers -------------------------------------------------------------------------------------------

def _answer_field(q: dict) -> Field:
    kind = q["type"]
    label, required = q["label"], bool(q.get("required"))
    if kind == "text":
        return Field(q["key"], "str", label, required=required, max_len=500)
    if kind == "number":
        low, high = _number_range(q)
        return Field(q["key"], "float", label, required=required, min=low, max=high, whole=q.get("integer") is True)
    if kind == "choice":
        return Field(q["key"], "enum", label, required=required, choices=tuple(q["options"]))
    if kind == "multi":
        # An empty list is not "missing" to validate(); a required question needs at least one choice.
        return Field(q["key"], "list", label, required=required, max_items=len(q["options"]),
                     item=Field(q["key"], "enum", label, choices=tuple(q["options"])),
                     check=(lambda v: None if v else f"请选择{label}") if required else None)
    if kind == "bool":
        return Field(q["key"], "bool", label, required=required)
    if kind == "phone":
        return Field(q["key"], "phone", label, required=required)
    return Field(q["key"], "date", label, required=required)


def check_answers(activity: Activity, answers: dict[str, Any] | None) -> dict[str, Any]:
    """Validate answers against the activity's typed questions (422 naming answers.<key>)."""
    questions = list(activity.questions or [])
    answers = answers or {}
    unknown = set(answers) - {q["key"] for q in questions}
    if unknown:
        # Named as sent, but briefly and without control or bidi characters: a 3000-character key with a
        # right-to-left override came back whole in the message and in `fields`.
        key = strip_invisible(clean_text(sorted(unknown)[0]))
        key = key if len(key) <= 40 else key[:40] + "…"
        raise ValidationError(f"没有这个报名问题：{key}", fields={f"answers.{key}": "没有这个报名问题"})
    # The form sends a box left empty as "": no answer, for a number or 是/否 question as validate() already reads a
    # blank text, choice or date (an optional 随行人数 left empty was “应为数字”, and the user could not register).
    answers = {k: v for k, v in answers.items() if not (isinstance(v, str) and not clean_text(v))}
    # A 多选 option sent twice (a double tap) counts once, as it is stored: ["瑜伽", "瑜伽", "跑步"] out of two options
    # was refused with “最多 2 项”.
    multi = {q["key"] for q in questions if q.get("type") == "multi"}
    answers = {k: list(dict.fromkeys(v)) if k in multi and isinstance(v, list)
               and all(isinstance(x, str) for x in v) else v for k, v in answers.items()}
    try:
        clean = validate(answers, [_answer_field(q) for q in questions])
    except ValidationError as exc:
        raise ValidationError(exc.message, fields={f"answers.{k}": v for k, v in exc.fields.items()}) from None
    return {k: _stored_answer(v) for k, v in clean.items() if v is not None}


def _stored_answer(value: Any) -> Any:
    """A date as ISO text; a whole number as an int (2 people, not 2.0, on the page and in the export); the options
    of a multiple choice once each, in the order chosen."""
    if isinstance(value, list):
        return list(dict.fromkeys(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


# --- registration --------------------------------------------------------------------------------------

def _event(session: Session, reg: Registration, from_status: str, actor: Actor, note: str = "") -> None:
    session.add(RegistrationEvent(registration_id=reg.id, from_status=from_status, to_status=reg.status,
                                  actor=f"{actor.type}:{actor.id}", note=note[:200]))


def transition(session: Session, reg: Registration, to: RegStatus, actor: Actor, note: str = "",
               **data: Any) -> None:
    """Move a registration to `to` if the workflow allows it (409 otherwise), with an event and audit row (`data`
    goes into the audit row too)."""
    if to.value not in {s.value for s in TRANSITIONS[RegStatus(reg.status)]}:
        raise Conflict(f"报名当前状态为“{STATUS_LABELS[reg.status]}”，不能改为“{STATUS_LABELS[to.value]}”。",
                       code="illegal_transition")
    before = reg.status
    reg.status = to.value
    if to.value in ACTIVE_STATUSES:
        reg.active_key = f"{reg.activity_id}:{reg.user_id}"
    else:
        reg.active_key = None
    _event(session, reg, before, actor, note)
    audit(session, actor, f"registration.{to.value}", reg, **{"from": before, "note": note, **data})


# A seat given from the waitlist this close to the start may reach a worker too late to come (someone cancelled ten
# minutes before): not taking it up is recorded (未到场) but not held against them (no_show_count, the waitlist
# penalty).
LATE_PROMOTION = timedelta(hours=2)


def counts_as_no_show(promoted_at: datetime | None, starts_at: datetime) -> bool:
    """Whether missing a seat promoted at `promoted_at` (None: held from the start) counts against the worker."""
    return promoted_at is None or promoted_at < starts_at - LATE_PROMOTION


def no_show_penalty(session: Session, user_id: int, now: datetime) -> int:
    rows = session.execute(select(Registration.promoted_at, Activity.starts_at)
                           .join(Activity, Activity.id == Registration.activity_id)
                           .where(Registration.user_id == user_id, Registration.status == RegStatus.NO_SHOW.value,
                                  Activity.ends_at >= now - NO_SHOW_WINDOW)).all()
    n = sum(1 for promoted_at, starts_at in rows if counts_as_no_show(promoted_at, starts_at))
    return 1 if n >= NO_SHOW_PENALTY_AT else 0


def _closed(activity: Activity, now: datetime) -> tuple[str, str] | None:
    """(code, Chinese reason) when nobody may register for the published or cancelled `activity` at `now`."""
    if activity.status == ActivityStatus.CANCELLED.value:
        return "activity_cancelled", "活动已取消，不能报名。"
    if now >= activity.starts_at:
        return "registration_closed", f"活动已{'结束' if now >= activity.ends_at else '开始'}，不能再报名了。"
    if activity.registration_opens_at and now < activity.registration_opens_at:
        opens = activity.registration_opens_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        return "registration_not_open", f"报名尚未开始（{opens} 开始）。"
    if activity.registration_closes_at and now >= activity.registration_closes_at:
        return "registration_closed", "报名已截止。"
    return None


FULL = "名额已满，本活动不设候补。"


ALREADY_REGISTERED = "您已报名这个活动了。"


def enterprise_full(activity: Activity) -> str:
    return f"您所在企业的报名人数已达上限（每家 {activity.per_enterprise_cap} 人）。"


REJECTED = "您这次活动的报名没有通过审核，不能再次报名；如有疑问，请联系活动工作人员。"


def own_standing(session: Session, user_id: int, activity_ids: list[int]) -> dict[int, str]:
    """{activity_id: "active" | "rejected" | "enterprise_full"} for the user among `activity_ids`: their registrations
    (an active one wins), else whether their verified enterprise has used its 每家企业名额上限 (register() refuses it)."""
    out: dict[int, str] = {}
    if not activity_ids:
        return out
    for aid, status in session.execute(select(Registration.activity_id, Registration.status).where(
            Registration.user_id == user_id, Registration.activity_id.in_(activity_ids),
            Registration.status.in_(ACTIVE_STATUSES + (RegStatus.REJECTED.value,)))):
        if out.get(aid) != "active":
            out[aid] = "rejected" if status == RegStatus.REJECTED.value else "active"
    user = session.get(User, user_id)
    ent = _verified_enterprise(user) if user is not None else None
    if ent is not None:
        for aid, cap, used in session.execute(
                select(Activity.id, Activity.per_enterprise_cap, func.count(Registration.id))
                .join(Registration, Registration.activity_id == Activity.id)
                .where(Activity.id.in_(activity_ids), Activity.per_enterprise_cap.is_not(None),
                       Registration.enterprise_id == ent.id, Registration.status.in_(ACTIVE_STATUSES))
                .group_by(Activity.id, Activity.per_enterprise_cap)):
            if aid not in out and used >= cap:
                out[aid] = "enterprise_full"
    return out


def refusal(activity: Activity, user: User, taken: int, queued: int, now: datetime | None = None,
            standing: str | None = None) -> str | None:
    """Why register() would refuse `user` a new registration for `activity` now, in its words and order (the list
    and the detail grey out 报名 with it), or None; `taken`/`queued` are the activity's seats taken and waitlist,
    `standing` the user's own (own_standing()). One who is registered reads that first: their registration stands,
    an audience narrowed since they registered notwithstanding."""
    closed = _closed(activity, now or utcnow())
    if closed is not None:
        return closed[1]
    if standing == "active":
        # Before the audience: one narrowed since they registered left their registration standing, and
        # “不在范围内” read as if it no longer counted.
        return STILL_REGISTERED if audience_miss(activity, user) is not None else ALREADY_REGISTERED
    problem = ineligibility(activity, user)
    if problem:
        return problem
    if standing == "rejected":
        return REJECTED
    if standing == "enterprise_full":
        return enterprise_full(activity)
    if not (taken < activity.capacity and queued == 0) and not activity.waitlist_enabled:
        return FULL
    return None


def _precheck(activity: Activity, user: User, now: datetime, answers: dict[str, Any] | None) -> dict[str, Any]:
    """Everything about a registration that needs no seat count (pure: no queries); returns clean answers."""
    if activity.status == ActivityStatus.DRAFT.value:
        raise NotFound("没有找到这个活动。")
    closed = _closed(activity, now)
    if closed is not None:
        raise Conflict(closed[1], code=closed[0])
    problem = ineligibility(activity, user)
    if problem:
        raise Forbidden(problem, code="not_eligible")
    return check_answers(activity, answers)


def seat_and_waitlist(session: Session, activity_id: int) -> tuple[int, int]:
    """(seats taken, waitlisted) in one query."""
    row = session.execute(select(
        func.count(Registration.id).filter(Registration.status.in_(SEAT_STATUSES)),
        func.count(Registration.id).filter(Registration.status == RegStatus.WAITLISTED.value))
        .where(Registration.activity_id == activity_id)).one()
    return int(row[0] or 0), int(row[1] or 0)


def _cancelled_retry_message(session: Session, previous: Registration, now: datetime) -> str:
    """What a retried registration (its Idempotency-Key's registration cancelled) is told. Cancelled with the
    activity, or once the activity is past registering, “请重新打开活动页面后点报名” sent the worker to a page that
    refuses them: it says why there is nothing to register for (with staff's reason for cancelling, when given)."""
    activity = previous.activity
    if activity.status == ActivityStatus.CANCELLED.value:
        note = session.scalar(select(RegistrationEvent.note).where(
            RegistrationEvent.registration_id == previous.id,
            RegistrationEvent.to_status == RegStatus.CANCELLED.value).order_by(RegistrationEvent.id.desc()).limit(1))
        reason = note.partition("活动取消：")[2].rstrip("。.") if note else ""
        why = f"（{reason}）" if reason else ""
        return f"活动“{activity.title}”已取消{why}，您的报名已随之取消，不能再报名了。"
    closed = _closed(activity, now)
    if closed is not None:
        return f"您之前这次提交的报名已取消，这次没有重新报名。{closed[1]}"
    return "您之前这次提交的报名已取消，这次没有重新报名。如需再次报名，请重新打开活动页面后点“报名”。"


def register(session: Session, *, activity_id: int, user_id: int, answers: dict[str, Any] | None = None,
             idempotency_key: str | None = None, now: datetime | None = None,
             lock: bool = True) -> tuple[Registration, bool]:
    """Register a user; returns (registration, created). A replayed Idempotency-Key returns the first one.

    The checks that need no seat count run before the lock (so refusals and the no-show lookup do not queue
    behind it) and again, without queries, on the locked row. `lock=False` exists only for the
    negative-control test that shows the lock is what prevents overbooking.
    """
    now = now or utcnow()
    actor = Actor("user", user_id)
    idem = f"{user_id}:{idempotency_key}" if idempotency_key else None

    def replay() -> Registration | None:
        previous = session.scalar(select(Registration).where(Registration.idempotency_key == idem)) if idem else None
        if previous is None:
            return None
        if previous.activity_id != activity_id:
            raise Conflict("这个提交编号已用于您另一个活动的报名，这次没有报名。请重新打开活动页面后再报名。",
                           code="idempotency_key_reused")
        # A key names one request. Once its registration is cancelled, the same key again is a new 报名 from a page
        # that kept its key (or a retry that arrived after the cancel): replayed, the page read the cancelled row's
        # 200 as 报名成功 while the user held no seat; registered anew, a late retry would sign up someone who had
        # just cancelled. So it is refused, saying what happened and what to do.
        if previous.status == RegStatus.CANCELLED.value:
            raise Conflict(_cancelled_retry_message(session, previous, now), code="idempotency_key_reused",
                           fields={"registration_id": str(previous.id)})
        # The same key with other answers is not the same request: answered with the first registration, the
        # change was silently lost. (Answers that no longer fit the questions, edited since, cannot be compared.)
        try:
            same = check_answers(previous.activity, answers) == (previous.answers or {})
        except ValidationError:
            same = True
        if not same:
            raise Conflict("这个提交编号已用于您之前的报名，这次填写的内容与它不同，没有更改。如需修改请先取消原报名后"
                           "重新打开活动页面报名。", code="idempotency_key_reused")
        return previous

    if (previous := replay()) is not None:
        return previous, False
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("没有找到您的账号，请重新进入小程序。")
    unlocked = session.get(Activity, activity_id)
    if unlocked is None:
        raise NotFound("没有找到这个活动。")
    if audience_miss(unlocked, user) is not None and (held := session.scalar(select(Registration.id).where(
            Registration.active_key == f"{activity_id}:{user_id}"))) is not None:
        # Registered before the audience was narrowed: their registration stands (refusal() says so too); a
        # 403 “不在范围内” on a second tap read as if it no longer counted.
        raise Conflict(STILL_REGISTERED, code="already_registered", fields={"registration_id": str(held)})
    _precheck(unlocked, user, now, answers)
    penalty = no_show_penalty(session, user_id, now)

    activity = lock_activity(session, activity_id, lock=lock)
    if idem and (previous := replay()) is not None:
        return previous, False
    clean_answers = _precheck(activity, user, now, answers)
    existing = session.scalar(select(Registration.id).where(Registration.active_key == f"{activity_id}:{user_id}"))
    if existing is not None:
        raise Conflict(ALREADY_REGISTERED, code="already_registered", fields={"registration_id": str(existing)})
    rejected = session.scalar(select(Registration.id).where(
        Registration.activity_id == activity_id, Registration.user_id == user_id,
        Registration.status == RegStatus.REJECTED.value).limit(1))
    if rejected is not None:
        # Staff said no once; a new row would put the same person back in their queue without end.
        raise Conflict(REJECTED, code="registration_rejected", fields={"registration_id": str(rejected)})
    ent = _verified_enterprise(user)
    if activity.per_enterprise_cap and ent is not None:
        used = session.scalar(select(func.count(Registration.id)).where(
            Registration.activity_id == activity_id, Registration.enterprise_id == ent.id,
            Registration.status.in_(ACTIVE_STATUSES))) or 0
        if used >= activity.per_enterprise_cap:
            raise Conflict(enterprise_full(activity), code="enterprise_cap_reached")
    taken, queued = seat_and_waitlist(session, activity_id)
    if taken < activity.capacity and queued == 0:
        status = RegStatus.PENDING_APPROVAL if activity.requires_approval else RegStatus.CONFIRMED
    elif activity.waitlist_enabled:
        status = RegStatus.WAITLISTED
    else:
        raise Conflict(FULL, code="activity_full")
    reg = Registration(activity_id=activity_id, user_id=user_id, enterprise_id=ent.id if ent else None,
                       status=status.value, active_key=f"{activity_id}:{user_id}", idempotency_key=idem,
                       answers=clean_answers, queue_hour=int(now.timestamp() // 3600),
                       penalty=penalty if status == RegStatus.WAITLISTED else 0, created_at=now)
    if lock:
        session.add(reg)
        session.flush()
    else:
        try:
            with session.begin_nested():
                session.add(reg)
                session.flush()
        except IntegrityError:
            # Without the lock, the database constraint is what still refuses a second active row.
            raise Conflict(ALREADY_REGISTERED, code="already_registered") from None
    _event(session, reg, "", actor)
    audit(session, actor, "registration.created", reg, status=reg.status, activity_id=activity_id)
    return reg, True


def promote(session: Session, activity: Activity, actor: Actor, *, cause: str = "",
            why: str = "") -> list[Registration]:
    """Fill free seats from the head of the waitlist; the caller holds the activity lock. Nothing moves for an
    activity that is not published or has started (a seat freed then would only make a no-show).

    The promotion is the system's doing, not `actor`'s (the person whose cancel, rejection or capacity change freed
    the seat): its event and audit row name the system, with `cause` (e.g. "registration:12"), `actor` and `why`
    (the words the history shows) as the reference to what set it off."""
    if activity.status != ActivityStatus.PUBLISHED.value or utcnow() >= activity.starts_at:
        return []
    free = activity.capacity - seats_taken(session, activity.id)
    if free <= 0:
        return []
    heads = waitlist_order(session, activity, limit=free)
    to = RegStatus.PENDING_APPROVAL if activity.requires_approval else RegStatus.CONFIRMED
    now = utcnow()
    by = f"{actor.type}:{actor.id}"
    note = f"候补递补（{why}）" if why else "候补递补"
    for reg in heads:
        transition(session, reg, to, SYSTEM, note=note, cause=cause, caused_by=by)
        reg.promoted_at = now
        if to == RegStatus.CONFIRMED:
            tell(session, reg, activity, "waitlist_promoted", "候补成功",
                 f"您候补的活动“{activity.title}”已有名额，报名成功。", "候补成功")
        else:
            tell(session, reg, activity, "waitlist_promoted", "候补已有名额，等待审核",
                 f"您候补的活动“{activity.title}”已有名额，正在等待工作人员审核，结果会通知您。", "等待审核",
                 note="已有名额，等待工作人员审核")
    return list(heads)


def tell(session: Session, reg: Registration, activity: Activity, kind: str, title: str, body: str,
         result: str, *, note: str | None = None) -> None:
    """Tell the user about their registration (inbox always; subscribe message when they gave credit). The
    message's short note is `note` when given, else the kind's own (the body cut to 20 characters stopped
    mid-word)."""
    notify(session, reg.user_id, kind,
           {"title": activity.title, "result": result, "time": activity.starts_at.isoformat(),
            "place": activity.place or "详见活动页面", "note": note},
           f"pages/activity/detail?id={activity.id}", title=title, body=body, ref=f"registration:{reg.id}",
           dedup_key=f"{kind}:{reg.id}")


def _own_registration(session: Session, registration_id: int, user_id: int | None) -> Registration:
    reg = session.get(Registration, registration_id)
    if reg is None or (user_id is not None and reg.user_id != user_id):  # another's looks missing
        raise NotFound("没有找到这条报名记录。")
    return reg


def user_cancel_deadline(reg: Registration, activity: Activity) -> datetime:
    """Until when the user may cancel `reg` themselves."""
    # The deadline protects the seats the organiser counts on; leaving the waitlist (no seat held) or withdrawing a
    # registration staff have not approved yet (not counted on) is fine until the start.
    counted = reg.status in SEAT_STATUSES and reg.status != RegStatus.PENDING_APPROVAL.value
    deadline = (activity.cancel_deadline or activity.starts_at) if counted else activity.starts_at
    if reg.promoted_at is not None and activity.cancel_deadline and reg.promoted_at >= activity.cancel_deadline:
        # A seat given from the waitlist after the deadline was never theirs to give back in time.
        deadline = activity.starts_at
    return deadline


WAITLIST_MISSED = "活动已开始，候补未能递补"

# Registration stays open after the 取消报名截止时间, and a seat taken then cannot be given back online
# (user_cancel_deadline): said before the tap (register_note) and after it (cancel_note).
LATE_REGISTER_NOTE = "取消报名截止时间已过：现在报名后不能在线取消，请确认能参加。"
LATE_APPROVAL_NOTE = "取消报名截止时间已过：现在报名，审核通过后不能在线取消，请确认能参加。"
LATE_WAITLIST_NOTE = ("取消报名截止时间已过：现在报名将进入候补，候补期间可以取消；递补成功后也可在活动开始前取消。")
LATE_CANCEL_NOTE = "您是在取消报名截止时间之后报名的，这次报名不能在线取消；如确实不能参加，请尽早联系活动工作人员。"
LATE_PENDING_NOTE = "您是在取消报名截止时间之后报名的：审核通过前可以取消，审核通过后不能在线取消。"


def open_past_cancel_deadline(activity: Activity, now: datetime | None = None) -> bool:
    """Whether the published `activity` takes registrations now, its cancel deadline passed (they cannot be undone)."""
    now = now or utcnow()
    return (activity.status == ActivityStatus.PUBLISHED.value and activity.cancel_deadline is not None
            and now >= activity.cancel_deadline and _closed(activity, now) is None)


def register_note(activity: Activity, taken: int, queued: int, now: datetime | None = None) -> str | None:
    """What a registration made now could not undo, while registration is open past the cancel deadline (None
    otherwise): a seat cannot be cancelled online; a waitlisted one can (until the start, moved up or not)."""
    if not open_past_cancel_deadline(activity, now):
        return None
    if not (taken < activity.capacity and queued == 0):
        return LATE_WAITLIST_NOTE if activity.waitlist_enabled else None
    return LATE_APPROVAL_NOTE if activity.requires_approval else LATE_REGISTER_NOTE


def cancel_note(reg: Registration, activity: Activity) -> str | None:
    """Why a registration made after the cancel deadline cannot (or, once approved, will not) be cancelled online."""
    deadline = activity.cancel_deadline
    if (activity.status != ActivityStatus.PUBLISHED.value or deadline is None or reg.created_at < deadline
            or (reg.promoted_at is not None and reg.promoted_at >= deadline)):
        return None
    if reg.status == RegStatus.CONFIRMED.value:
        return LATE_CANCEL_NOTE
    if reg.status == RegStatus.PENDING_APPROVAL.value:
        return LATE_PENDING_NOTE
    return None


def user_actions(reg: Registration, now: datetime | None = None) -> dict[str, Any]:
    """What 我的报名 may offer on `reg`: cancel (and until when), the check-in code (while check-in is open, as
    checkin.check_in decides: a code after that is refused at the door); what the actions accept. A registration
    still waitlisted when the activity starts will not move up any more (promote() stops then): `waitlist_note`
    says so instead of a place in a queue that no longer moves."""
    now = now or utcnow()
    activity = reg.activity
    live = activity.status == ActivityStatus.PUBLISHED.value
    cancellable = live and reg.status in (RegStatus.PENDING_APPROVAL.value, RegStatus.CONFIRMED.value,
                                          RegStatus.WAITLISTED.value)
    deadline = user_cancel_deadline(reg, activity) if cancellable else None
    return {"can_cancel": deadline is not None and now < deadline,
            "cancel_until": deadline.isoformat() if deadline is not None and now < deadline else None,
            "cancel_note": cancel_note(reg, activity),
            "can_show_code": live and reg.status in (RegStatus.CONFIRMED.value, RegStatus.ATTENDED.value)
            and now < activity.ends_at + ATTENDANCE_GRACE,
            "waitlist_note": WAITLIST_MISSED if reg.status == RegStatus.WAITLISTED.value and live
            and now >= activity.starts_at else None}


def waitlist_position(session: Session, reg: Registration, now: datetime | None = None) -> int | None:
    """Where `reg` stands on its activity's waitlist (1: the next seat is theirs), in the order promote() takes;
    None when it is not waitlisted, or once the activity has started (the waitlist no longer moves)."""
    if reg.status != RegStatus.WAITLISTED.value or (now or utcnow()) >= reg.activity.starts_at:
        return None
    if has_audience(reg.activity):  # those outside an audience narrowed since go after everyone inside it
        return next((n for n, r in enumerate(waitlist_order(session, reg.activity), 1) if r.id == reg.id), None)
    ahead = session.scalar(select(func.count(Registration.id)).where(
        Registration.activity_id == reg.activity_id, Registration.status == RegStatus.WAITLISTED.value,
        tuple_(Registration.queue_hour, Registration.penalty, Registration.id)
        < tuple_(reg.queue_hour, reg.penalty, reg.id)))
    return (ahead or 0) + 1


def registration_roster(session: Session, activity_id: int
                        ) -> list[tuple[Registration, User, Enterprise | None, int | None]]:
    """An activity's registrations by number, each with its user, enterprise and place on the waitlist (None when
    not waitlisted): the console's list, its export and the staff API read the same rows."""
    rows = session.execute(select(Registration, User, Enterprise)
                           .join(User, User.id == Registration.user_id)
                           .outerjoin(Enterprise, Enterprise.id == Registration.enterprise_id)
                           .where(Registration.activity_id == activity_id)
                           .order_by(Registration.id)).unique().all()
    # The waitlist's order is promote()'s (hour of registration, repeated no-shows last within it), not the number.
    # Those outside an audience narrowed since they registered come after everyone inside it (promote()).
    activity = session.get(Activity, activity_id)
    queue = {r.id: n for n, r in enumerate(waitlist_order(session, activity), 1)} if activity is not None else {}
    return [(reg, user, ent, queue.get(reg.id)) for reg, user, ent in rows]


def roster_label(reg: Registration, place: int | None) -> str:
    """A registration's status as staff read it (候补中（第 n 位） on the waitlist)."""
    return f"候补中（第 {place} 位）" if place is not None else STATUS_LABELS[reg.status]


def sees_phones(role: str) -> bool:
    """Whether a staff account of `role` reads registrants' phone numbers whole: staff and admins do; a department
    account checks people in and decides nothing, and every user's phone is not its business (as /console/users)."""
    return ROLE_RANK[StaffRole(role)] >= ROLE_RANK[StaffRole.STAFF]


def roster_phone(phone: str | None, full: bool) -> str | None:
    """A phone number as a roster shows it: whole, or with its middle hidden (138****8000) for a department."""
    if full or not phone:
        return phone
    return f"{phone[:3]}****{phone[-4:]}" if len(phone) >= 8 else "****"


def roster_answers(answers: dict[str, Any] | None, questions: list | None, full: bool) -> dict[str, Any]:
    """A registration's answers as a roster shows them: the answers to 电话 questions (or once 电话: roster_questions
    marks them was_phone) as roster_phone()."""
    phones = {q.get("key") for q in questions or []
              if isinstance(q, dict) and (q.get("type") == "phone" or q.get("was_phone"))}
    return {k: roster_phone(v, full) if k in phones and isinstance(v, str) else v for k, v in (answers or {}).items()}


def roster_questions(session: Session, activity: Activity, answers: Iterable[dict | None]) -> list[dict]:
    """The questions a roster shows answers under: the activity's, then any removed after people answered it (its
    answers dropped out of the export, and the page showed its bare key), as it was (the edit history keeps it: its
    label, marked 已删除, and its type, for roster_answers)."""
    from ..audit import AuditLog

    questions = [q for q in activity.questions or [] if isinstance(q, dict) and "key" in q]
    asked = {q["key"] for q in questions}
    answered = list(dict.fromkeys(k for a in answers for k in (a or {})))
    gone = [k for k in answered if k not in asked]
    if not gone and not [q for q in questions if q["key"] in answered and q.get("type") != "phone"]:
        return questions
    known: dict[str, dict] = {}  # the last form of each, with its type: a removed 电话 question stays masked
    was_phone: set[str] = set()  # and one changed to another type: its answers given as 电话 are phone numbers
    for data in session.scalars(select(AuditLog.data).where(
            AuditLog.action == "activity.updated", AuditLog.target_type == Activity.__tablename__,
            AuditLog.target_id == str(activity.id)).order_by(AuditLog.id.desc())):
        before = ((data or {}).get("changes") or {}).get("questions") or [[]]
        for q in before[0] or []:
            if isinstance(q, dict) and isinstance(q.get("label"), str):
                known.setdefault(q.get("key"), q)
                if q.get("type") == "phone":
                    was_phone.add(q.get("key"))
    questions = [{**q, "was_phone": True} if q["key"] in was_phone and q.get("type") != "phone" else q
                 for q in questions]
    return questions + [{**known.get(k, {}), "key": k, "label": f"{known.get(k, {}).get('label', k)}（已删除的问题）",
                         **({"was_phone": True} if k in was_phone else {})} for k in gone]


def roster_name(user: User) -> str:
    """The name staff see for a registrant (nickname, else 用户<id>)."""
    return user.nickname or f"用户{user.id}"


def cancel_registration(session: Session, actor: Actor, registration_id: int, *, user_id: int | None = None,
                        now: datetime | None = None) -> Registration:
    """Cancel (by the user before the deadline, or by staff); a freed seat goes to the waitlist head."""
    now = now or utcnow()
    reg = _own_registration(session, registration_id, user_id)
    activity = lock_activity(session, reg.activity_id)
    session.refresh(reg)
    if reg.status == RegStatus.CANCELLED.value:
        return reg  # cancelling twice is harmless
    if user_id is not None:
        if reg.status == RegStatus.ATTENDED.value:
            # Checked in at the door: the workflow's “不能改为“已取消”” told the worker nothing of what to do.
            raise Conflict("您已签到，报名不能再取消；如需提前离开或有特殊情况，请告诉现场工作人员。",
                           code="illegal_transition")
        if now >= user_cancel_deadline(reg, activity):
            raise Conflict("已过取消报名的截止时间，如有特殊情况请联系工作人员。", code="cancel_deadline_passed")
    held_seat = reg.status in SEAT_STATUSES
    transition(session, reg, RegStatus.CANCELLED, actor)
    reg.cancelled_at = now
    if user_id is None and now < activity.ends_at:  # staff did it: the user would otherwise learn it at the door
        # (after the end, as an approval or rejection then: about an evening that is over, the record is enough)
        tell_cancelled(session, reg, activity, "报名已取消",
                       f"您报名的活动“{activity.title}”的报名已由工作人员取消，如有疑问，请联系活动工作人员。",
                       "您的报名已由工作人员取消")
    session.flush()
    if held_seat and activity.status == ActivityStatus.PUBLISHED.value:
        promote(session, activity, actor, cause=f"registration:{reg.id}", why=f"报名 #{reg.id} 取消后空出名额")
    return reg


def decide(session: Session, actor: Actor, registration_id: int, approve: bool, note: str = "") -> Registration:
    """Staff approve or reject a pending registration; the user is told either way."""
    reg = _own_registration(session, registration_id, None)
    activity = lock_activity(session, reg.activity_id)
    session.refresh(reg)
    if reg.status != RegStatus.PENDING_APPROVAL.value:
        # The same decision again (a colleague on the same list, a retried request) is what was asked: answered with
        # the registration as decided, nobody told twice. A 409 read as "the approval failed".
        approved = reg.status == RegStatus.CONFIRMED.value and session.scalar(select(RegistrationEvent.id).where(
            RegistrationEvent.registration_id == reg.id,
            RegistrationEvent.from_status == RegStatus.PENDING_APPROVAL.value,
            RegistrationEvent.to_status == RegStatus.CONFIRMED.value).limit(1)) is not None
        if (approved and approve) or (reg.status == RegStatus.REJECTED.value and not approve):
            return reg
        if approved:
            raise Conflict("这条报名已审核通过，不能再驳回；如需取消，请用“取消报名”。", code="illegal_transition")
        raise Conflict(f"这条报名当前为“{STATUS_LABELS[reg.status]}”，不在待审核状态。", code="illegal_transition")
    if approve:
        transition(session, reg, RegStatus.CONFIRMED, actor, note)
        # The seat is theirs from now: approved minutes before the start (or at the door), missing it is not held
        # against them, as for a seat promoted that late (counts_as_no_show); nor is the cancel deadline past.
        reg.promoted_at = utcnow()
        if reg.promoted_at < activity.ends_at:
            # Approved after the end (to record at the door someone who came): “审核通过” about an evening that is
            # over would only puzzle them; the approval is on record, and mark_attended can follow.
            tell(session, reg, activity, "registration_approved", "报名审核通过",
                 f"您报名的活动“{activity.title}”已审核通过。", "审核通过")
    else:
        transition(session, reg, RegStatus.REJECTED, actor, note)
        reason = note.strip().rstrip("。.！!")
        if utcnow() < activity.ends_at:  # after the end, as an approval then: the decision is on record, untold
            tell(session, reg, activity, "registration_rejected", "报名未通过审核",
                 f"很抱歉，您报名的活动“{activity.title}”未通过审核" + (f"，说明：{reason}。" if reason else "。"),
                 "未通过")
        promote(session, activity, actor, cause=f"registration:{reg.id}", why=f"报名 #{reg.id} 未通过审核后空出名额")
    return reg


def my_registrations_page(session: Session, user_id: int, *, page: int = 1,
                          per_page: int = 20) -> tuple[list[Registration], int]:
    """我的报名 one page at a time, newest first, and how many there are in all (it stopped at 200, with no total)."""
    total = session.scalar(select(func.count(Registration.id)).where(Registration.user_id == user_id)) or 0
    stmt = (select(Registration).where(Registration.user_id == user_id).order_by(Registration.id.desc())
            .offset((page - 1) * per_page).limit(per_page))
    return list(session.scalars(stmt).unique()), total


def subscribe_hint(status: str = RegStatus.CONFIRMED.value) -> dict[str, Any]:
    """Which subscribe templates the mini-program should ask credit for after registering (at most 3).

    Always the reminder template (kind activity_reminder); a waitlisted user also gets the promotion
    template, a pending one the approval template; then the 活动调整 template (kind activity_changed).
    """
    kinds = [REMINDER_KIND]
    if status == RegStatus.WAITLISTED.value:
        kinds.append("waitlist_promoted")
    if status == RegStatus.PENDING_APPROVAL.value:
        kinds.append("registration_approved")
    kinds.append(CHANGED_KIND)
    from ..notices.kinds import subscribe_request

    ids = subscribe_request(kinds)["template_ids"]
    return {"kind": REMINDER_KIND, "template_id": template_for(REMINDER_KIND), "template_ids": ids}


def reminder_credits_to_keep(session: Session, note: Notification) -> int:
    """How many of the user's subscribe credits for the reminder template a reminder must leave unspent.

    A one-time acceptance allows one message, and a user who registers usually gives one. The 1-hour reminder is
    the one that gets them there, so it comes first: a 24-hour reminder spends a credit only when one is left for
    every 1-hour reminder still to come for the user (their confirmed registrations of published activities not yet
    started, whose 1-hour reminder has not gone out). Otherwise it goes by customer-service message when a window
    is open, else to 消息 only. Any other notification keeps nothing back.
    """
    parts = (note.dedup_key or "").split(":")
    if note.kind != REMINDER_KIND or len(parts) != 4 or parts[0] != "reminder" or parts[2] != EARLY_REMINDER:
        return 0
    rows = session.execute(select(Registration.id, Activity.starts_at).join(Activity).where(
        Registration.user_id == note.user_id, Registration.status == RegStatus.CONFIRMED.value,
        Activity.status == ActivityStatus.PUBLISHED.value, Activity.starts_at > utcnow())).all()
    keys = {f"reminder:{rid}:{NEAR_REMINDER}:{int(starts.timestamp())}" for rid, starts in rows}
    if not keys:
        return 0
    # A 1-hour reminder made but not yet delivered still needs its credit; one that has finished does not.
    gone = session.scalar(select(func.count(Notification.id)).where(
        Notification.dedup_key.in_(keys), Notification.status != "pending")) or 0
    return len(keys) - gone


def reminder_body(activity: Activity, when: str) -> str:
    """A reminder's text in 消息 (and a customer-service message): `when` is "明天" / "1 小时后" as it was made."""
    start = activity.starts_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    return f"您报名的活动“{activity.title}”将于{when}（{start}）开始，地点：{activity.place or '详见活动页面'}。"


def refresh_reminder(session: Session, note: Notification) -> None:
    """A reminder about to be sent names the activity's time and place as they are now, not as when it was made:
    one waiting in the queue (or for a retry) while staff moved the activity to another room went out with the old
    room, after the 活动调整 notice had told the new one. (A moved start makes it stale instead: _stale_reminder.)"""
    from ..notices.models import InboxItem

    prefix, _, reg_id = (note.ref or "").partition(":")
    if note.kind != REMINDER_KIND or prefix != "registration" or not reg_id.isdigit():
        return
    reg = session.get(Registration, int(reg_id))
    if reg is None:
        return
    activity = reg.activity
    fields = {**(note.fields or {}), "time": activity.starts_at.isoformat(),
              "place": activity.place or "详见活动页面"}
    if fields != note.fields:
        note.fields = fields
    item = session.get(InboxItem, note.inbox_item_id) if note.inbox_item_id else None
    when = fields.get("when")
    if item is not None and isinstance(when, str) and item.body != (body := reminder_body(activity, when)):
        item.body = body


def template_for(kind: str) -> str:
    """The subscribe template id configured for a notification kind ("" when none)."""
    from ..notices.kinds import get_kind

    k = get_kind(kind)
    return k.template_id if k is not None else ""


# --- subscriptions -------------------------------------------------------------------------------------

def get_subscriptions(session: Session, user_id: int) -> list[str]:
    """The user's categories the app still has: a retired one sent back by the page made every save a 422 (the
    next save drops its row, set_subscriptions() replacing the whole set)."""
    return sorted(c for c in session.scalars(select(CategorySubscription.category)
                                             .where(CategorySubscription.user_id == user_id)) if c in CATEGORIES)


def set_subscriptions(session: Session, user_id: int, categories: list[str]) -> list[str]:
    # One save per user at a time (a double tap): the second reads what the first wrote.
    session.scalar(select(User.id).where(User.id == user_id).with_for_update())
    wanted = set(categories)
    have = {c.category: c for c in session.scalars(select(CategorySubscription)
                                                  .where(CategorySubscription.user_id == user_id))}
    for cat, row in have.items():
        if cat not in wanted:
            session.delete(row)
    for cat in wanted - have.keys():
        session.add(CategorySubscription(user_id=user_id, category=cat))
    session.flush()
    if wanted != have.keys() & CATEGORIES.keys():  # the page saves on every visit: only a change is worth a row
        audit(session, Actor("user", user_id), "subscriptions.set", None, categories=sorted(wanted))
    return sorted(wanted)


def subscriptions_hint(categories: list[str]) -> dict[str, list[str]]:
    """What the mini-program should ask wx.requestSubscribeMessage for after a save: the new-activity notice reaches
    WeChat only for a worker who allowed its template (kind notice); nothing once they subscribe to no category."""
    from ..notices.kinds import subscribe_request

    return subscribe_request(["notice"] if categories else [])


# --- statistics ----------------------------------------------------------------------------------------

def attendance_stats(session: Session, activity_id: int | None = None) -> dict[str, list[dict]]:
    """Attended / no-show counts by building and by enterprise, and the attendance rate of those.

    Check-ins at an activity cancelled afterwards (check-in opens 2 hours before the start, and staff may cancel
    until the end) are not attendance: the activity never took place. They are counted apart, as
    `cancelled_checked_in`, and play no part in the rate (nor in the no-shows: a cancelled activity has none)."""
    base = (select(Registration.status, Activity.status, User.building_id, Registration.enterprise_id,
                   func.count(Registration.id))
            .join(User, User.id == Registration.user_id)
            .join(Activity, Activity.id == Registration.activity_id)
            .where(Registration.status.in_((RegStatus.ATTENDED.value, RegStatus.NO_SHOW.value,
                                            RegStatus.CONFIRMED.value)))
            .group_by(Registration.status, Activity.status, User.building_id, Registration.enterprise_id))
    if activity_id:
        base = base.where(Registration.activity_id == activity_id)
    by_b: dict[int | None, dict[str, int]] = {}
    by_e: dict[int | None, dict[str, int]] = {}
    for status, activity_status, bid, eid, n in session.execute(base).all():
        off = activity_status == ActivityStatus.CANCELLED.value
        if off and status != RegStatus.ATTENDED.value:
            continue  # cancelled with the activity already (_cancel_registrations): nothing to count
        column = "cancelled_checked_in" if off else status
        for table, key in ((by_b, bid), (by_e, eid)):
            row = table.setdefault(key, {"attended": 0, "no_show": 0, "confirmed": 0, "cancelled_checked_in": 0})
            row[column] += n
    names_b = dict(session.execute(select(Building.id, Building.name)
                                   .where(Building.id.in_([k for k in by_b if k]))).all())
    names_e = dict(session.execute(select(Enterprise.id, Enterprise.name)
                                   .where(Enterprise.id.in_([k for k in by_e if k]))).all())

    def rows(table, names, none_label):
        out = []
        for key, c in table.items():
            done = c["attended"] + c["no_show"]
            out.append({"id": key, "name": names.get(key, none_label) if key else none_label, **c,
                        "rate": round(c["attended"] / done * 100, 1) if done else None})
        return sorted(out, key=lambda r: (-(r["attended"] + r["no_show"] + r["confirmed"]),
                                          -r["cancelled_checked_in"]))

    return {"buildings": rows(by_b, names_b, "未填楼宇"), "enterprises": rows(by_e, names_e, "未绑定企业")}


def mark_user_no_shows(session: Session, user_ids: list[int]) -> None:
    if user_ids:
        for uid in user_ids:
            session.execute(update(User).where(User.id == uid).values(no_show_count=User.no_show_count + 1))


_ELIGIBLE_SCAN = 200  # activities looked at to find `limit` a user may join (most are open to everyone)


def open_for_registration(session: Session, limit: int = 5, *, user_id: int | None = None,
                          category: str | None = None, title: str | None = None) -> list[tuple[Activity, int]]:
    """The next published activities still taking registrations, soonest first, with their seats left (the chat's
    “活动”). With `user_id`, only those that user may register for (the registration's own `ineligibility`);
    `category` (a key of CATEGORIES) or `title` (words of the title) narrow the list further."""
    return open_for_registration_and_rest(session, limit, user_id=user_id, category=category, title=title)[0]


def open_for_registration_and_rest(session: Session, limit: int = 5, *, user_id: int | None = None,
                                   category: str | None = None, title: str | None = None
                                   ) -> tuple[list[tuple[Activity, int]], int]:
    """`open_for_registration` and how many more there are beyond `limit` (the chat says so: five listed out of
    eight read as all there is)."""
    now = utcnow()
    where = [Activity.status == ActivityStatus.PUBLISHED.value, Activity.starts_at > now,
             or_(Activity.registration_opens_at.is_(None), Activity.registration_opens_at <= now),
             or_(Activity.registration_closes_at.is_(None), Activity.registration_closes_at > now)]
    if category:
        where.append(Activity.category == category)
    if title:
        where.append(Activity.title.contains(title, autoescape=True))
    query = select(Activity).where(*where).order_by(Activity.starts_at, Activity.id)
    user = session.get(User, user_id) if user_id is not None else None
    if user is None:
        rows = list(session.scalars(query.limit(limit)).unique().all())
        total = session.scalar(select(func.count(Activity.id)).where(*where)) or 0
    else:
        eligible = [a for a in session.scalars(query.limit(_ELIGIBLE_SCAN)).unique().all()
                    if ineligibility(a, user) is None]
        rows, total = eligible[:limit], len(eligible)
    return [(a, a.capacity - seats_taken(session, a.id)) for a in rows], max(0, total - len(rows))


_UPCOMING = (RegStatus.CONFIRMED.value, RegStatus.PENDING_APPROVAL.value, RegStatus.WAITLISTED.value,
             RegStatus.ATTENDED.value)


def upcoming_registrations(session: Session, user_id: int, limit: int = 5) -> list[tuple[str, datetime, str]]:
    """(title, start, status) of the user's active registrations for activities not over yet (the chat's “我的报名”)."""
    return [row[1:] for row in upcoming_registrations_with_ids(session, user_id, limit)]


def upcoming_registrations_with_ids(session: Session, user_id: int, limit: int = 5
                                    ) -> list[tuple[int, str, datetime, str]]:
    """`upcoming_registrations` with each activity's id first: (activity id, title, start, status)."""
    return [tuple(r) for r in session.execute(
        select(Activity.id, Activity.title, Activity.starts_at, Registration.status)
        .join(Activity, Activity.id == Registration.activity_id)
        .where(*_upcoming_where(user_id))
        .order_by(Activity.starts_at, Activity.id).limit(limit))]


def waitlist_positions(session: Session, user_id: int, activity_ids: list[int]) -> dict[int, int]:
    """Where the user stands on the waitlists of these activities (activity id -> 1 for the next seat), as
    `waitlist_position` gives it to the mini-program's 我的报名; activities the user is not waitlisted for (or that
    have started) are left out."""
    if not activity_ids:
        return {}
    regs = session.scalars(select(Registration).where(
        Registration.user_id == user_id, Registration.activity_id.in_(activity_ids),
        Registration.status == RegStatus.WAITLISTED.value))
    places = {reg.activity_id: waitlist_position(session, reg) for reg in regs}
    return {activity_id: place for activity_id, place in places.items() if place is not None}


def upcoming_registrations_count(session: Session, user_id: int) -> int:
    """How many registrations `upcoming_registrations` would list without a limit."""
    return session.scalar(select(func.count(Registration.id)).join(Activity, Activity.id == Registration.activity_id)
                          .where(*_upcoming_where(user_id))) or 0


def _upcoming_where(user_id: int) -> tuple:
    return Registration.user_id == user_id, Registration.status.in_(_UPCOMING), Activity.ends_at > utcnow()


def on_poster(session: Session, activity_id: int) -> bool:
    """Whether an activity's poster (its QR code) still leads to it in the chat: published or cancelled (the detail
    says so), and not yet over; not a draft, a deleted one or one that has ended."""
    activity = session.get(Activity, activity_id)
    return (activity is not None and activity.status != ActivityStatus.DRAFT.value
            and activity.ends_at > utcnow())


def chat_detail(session: Session, activity_id: int, user_id: int | None = None
                ) -> tuple[Activity, int, int, str | None, str | None] | None:
    """One activity as the chat shows it when picked from a list: (activity, seats taken, waitlisted, the user's own
    active registration status or None, why a new registration would be refused now or None); None when there is
    nothing to show (gone, or a draft)."""
    activity = session.get(Activity, activity_id)
    if activity is None or activity.status == ActivityStatus.DRAFT.value:
        return None
    taken, queued = seat_and_waitlist(session, activity_id)
    own = None
    if user_id is not None:
        own = session.scalar(select(Registration.status).where(
            Registration.user_id == user_id, Registration.activity_id == activity_id,
            Registration.status.in_(ACTIVE_STATUSES)).order_by(Registration.id.desc()).limit(1))
    user = session.get(User, user_id) if user_id is not None else None
    if own is not None:
        why = None
    elif user is not None:
        why = refusal(activity, user, taken, queued, standing=own_standing(session, user.id, [activity_id]).get(
            activity_id))
    else:
        closed = _closed(activity, utcnow())
        why = closed[1] if closed else (FULL if taken >= activity.capacity and not activity.waitlist_enabled
                                        else None)
    return activity, taken, queued, own, why

