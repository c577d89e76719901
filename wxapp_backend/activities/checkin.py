"""Check-in: a short-lived signed token per confirmed registration, shown as a QR code and scanned by staff.

Token = "C<registration id>.<time step>.<mac>", mac = HMAC-SHA256(SECRET_KEY, "checkin|id|step") cut to
96 bits. A step is STEP_SECONDS long; the current and the previous step are accepted, so a code shown at
the end of a minute still works when scanned a few seconds later, and a screenshot stops working within two
minutes (the next step too: the issuing server's clock may run a little ahead of the scanning one's). Scanning again is harmless (the registration is already marked attended).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..audit import Actor, audit
from ..auth.models import StaffRole, User
from ..db import utcnow
from ..errors import Conflict, NotFound, ValidationError
from .models import Activity, ActivityStatus, Registration, RegStatus
from .services import (
    ATTENDANCE_GRACE,
    SHANGHAI,
    STATUS_LABELS,
    counts_as_no_show,
    lock_activity,
    no_show_penalty,
    roster_name,
    roster_phone,
    seats_taken,
    sees_phones,
    transition,
)

STEP_SECONDS = 60
CHECKIN_OPENS_BEFORE = timedelta(hours=2)
_TOKEN_RE = re.compile(r"^C(\d{1,12})\.(\d{1,12})\.([A-Za-z0-9_-]{16})$")


def _step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def _mac(secret: str, registration_id: int, step: int) -> str:
    digest = hmac.new(secret.encode(), f"checkin|{registration_id}|{step}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode()


def make_token(secret: str, registration_id: int, now: datetime | None = None) -> dict:
    now = now or utcnow()
    step = _step(now)
    left = STEP_SECONDS - int(now.timestamp()) % STEP_SECONDS
    return {"token": f"C{registration_id}.{step}.{_mac(secret, registration_id, step)}",
            "refresh_in": left, "valid_for": left + STEP_SECONDS}


def qr_for(session: Session, secret: str, registration_id: int, user_id: int, now: datetime | None = None) -> dict:
    """The current token for the user's own confirmed registration."""
    reg = session.get(Registration, registration_id)
    if reg is None or reg.user_id != user_id:
        raise NotFound("没有找到这条报名记录。")
    if reg.status not in (RegStatus.CONFIRMED.value, RegStatus.ATTENDED.value):
        raise Conflict(f"报名状态为“{STATUS_LABELS[reg.status]}”，没有签到码。", code="no_checkin_code")
    if reg.activity.status != ActivityStatus.PUBLISHED.value:
        raise Conflict("活动已取消，没有签到码。", code="activity_cancelled")
    if (now or utcnow()) >= reg.activity.ends_at + ATTENDANCE_GRACE:  # as check_in (and can_show_code) decide
        raise Conflict("活动已结束，签到已关闭。", code="checkin_closed")
    return {**make_token(secret, reg.id, now), "registration_id": reg.id, "status": reg.status}


def verify_token(secret: str, token: str, now: datetime | None = None) -> int:
    """The registration id in a valid token; 422 with a Chinese reason otherwise."""
    now = now or utcnow()
    m = _TOKEN_RE.match((token or "").strip())
    if not m:
        raise ValidationError("签到码无法识别，请让参与者打开小程序中的签到码重新扫描。",
                              code="invalid_token", fields={"token": "签到码格式不对"})
    reg_id, step, mac = int(m.group(1)), int(m.group(2)), m.group(3)
    if not hmac.compare_digest(mac, _mac(secret, reg_id, step)):
        raise ValidationError("签到码无效（不是本系统签发或已被改动）。", code="invalid_token",
                              fields={"token": "签到码无效"})
    current = _step(now)
    # The step comes from the server that issued the code (the phone's clock plays no part): one step ahead is a
    # server whose clock runs a little fast, and is taken as the previous step is.
    if step > current + 1:
        raise ValidationError("签到码的时间晚于服务器时间，可能是服务器之间的时钟不一致。请稍后重新扫描；"
                              "反复出现请联系管理员检查服务器时间。", code="invalid_token",
                              fields={"token": "签到码时间不对"})
    if step < current - 1:
        raise ValidationError("签到码已过期，请让参与者刷新小程序中的签到码后重新扫描。", code="expired_token",
                              fields={"token": "签到码已过期"})
    return reg_id


def _attend(session: Session, reg: Registration, actor: Actor, now: datetime, note: str) -> None:
    """confirmed / no_show -> attended (event and audit row by transition); a no-show taken back lowers the
    user's count (when it was counted: not for a seat promoted just before the start)."""
    was_no_show = reg.status == RegStatus.NO_SHOW.value and counts_as_no_show(reg.promoted_at, reg.activity.starts_at)
    transition(session, reg, RegStatus.ATTENDED, actor, note=note)
    reg.checked_in_at = now
    reg.checked_in_by = actor.id if actor.type == "staff" else None
    if was_no_show:
        # In SQL, as mark_user_no_shows counts: read and written back in Python, a no-show counted meanwhile for
        # another activity (its attendance closing, which does not wait for this one's lock) was overwritten.
        session.execute(update(User).where(User.id == reg.user_id, User.no_show_count > 0)
                        .values(no_show_count=User.no_show_count - 1))
        if not no_show_penalty(session, reg.user_id, now):
            # The no-show that put them behind the others of their hour on the waitlists they are on is taken back.
            session.execute(update(Registration).where(
                Registration.user_id == reg.user_id, Registration.status == RegStatus.WAITLISTED.value,
                Registration.penalty != 0).values(penalty=0))


def _who(reg: Registration, activity: Activity, actor: Actor) -> dict:
    """Who is at the door, for staff to confirm: the nickname (often “微信用户” or an emoji) alone confirmed nothing.
    Also the name they gave (the answer to a 姓名 question, None without one) and their phone as the roster shows it
    to this account (masked for a department: sees_phones)."""
    user = reg.user
    full = actor.type == "staff" and actor.role in {r.value for r in StaffRole} and sees_phones(actor.role)
    named = [q["key"] for q in activity.questions or []
             if isinstance(q, dict) and q.get("type") == "text" and "姓名" in str(q.get("label", ""))]
    name = next((a for k in named if isinstance(a := (reg.answers or {}).get(k), str) and a.strip()), None)
    return {"user": roster_name(user), "name": name, "phone": roster_phone(user.phone, full)}


def check_in(session: Session, actor: Actor, secret: str, token: str, now: datetime | None = None, *,
             activity_id: int | None = None) -> dict:
    """Mark the token's registration attended; a repeated scan answers `already: true`. With `activity_id`
    (the activity at this door), a code for another activity is refused instead of checked in there."""
    now = now or utcnow()
    reg_id = verify_token(secret, token, now)
    reg = session.get(Registration, reg_id)
    if reg is None:
        raise NotFound("没有找到这条报名记录。")
    if activity_id is not None and reg.activity_id != activity_id:
        other = session.get(Activity, reg.activity_id)
        raise Conflict(f"这是另一场活动（{other.title if other else '未知活动'}）的签到码，请核对参与者报名的活动。",
                       code="wrong_activity")
    activity: Activity = lock_activity(session, reg.activity_id)
    session.refresh(reg)
    if activity.status == ActivityStatus.CANCELLED.value:
        raise Conflict("活动已取消，不能签到。", code="activity_cancelled")
    if now < activity.starts_at - CHECKIN_OPENS_BEFORE:
        # Which activity and when: someone at today's door with next week's code read to staff as a broken scanner.
        starts = activity.starts_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        raise Conflict(f"这是“{activity.title}”（{starts} 开始）的签到码，签到尚未开始（活动开始前 2 小时开放签到），"
                       "请核对参与者报名的活动和日期。", code="checkin_not_open")
    if now >= activity.ends_at + ATTENDANCE_GRACE:
        raise Conflict("活动已结束，签到已关闭。", code="checkin_closed")
    who = {"registration_id": reg.id, **_who(reg, activity, actor), "activity": activity.title}
    if reg.status == RegStatus.ATTENDED.value:
        # When: a replayed screenshot (the code used before its owner came) and a scan the network sent twice read
        # alike otherwise, and staff could not tell which to ask about.
        at = reg.checked_in_at.astimezone(SHANGHAI) if reg.checked_in_at else None
        shape = "%H:%M" if at is not None and at.date() == now.astimezone(SHANGHAI).date() else "%Y-%m-%d %H:%M"
        when = f"于 {at.strftime(shape)} " if at is not None else ""
        return {**who, "status": reg.status, "already": True,
                "checked_in_at": reg.checked_in_at.isoformat() if reg.checked_in_at else None,
                "message": f"已{when}签到过，无需重复签到。"}
    if reg.status not in (RegStatus.CONFIRMED.value, RegStatus.NO_SHOW.value):
        reasons = {RegStatus.CANCELLED.value: "该报名已取消，不能签到。",
                   RegStatus.WAITLISTED.value: "该报名还在候补中，不能签到。",
                   RegStatus.PENDING_APPROVAL.value: "该报名尚未审核通过，不能签到。",
                   RegStatus.REJECTED.value: "该报名未通过审核，不能签到。"}
        raise Conflict(reasons.get(reg.status, "该报名不能签到。"), code="not_checkable")
    _attend(session, reg, actor, now, "扫码签到")
    audit(session, actor, "registration.checked_in", reg, activity_id=activity.id)
    return {**who, "status": reg.status, "already": False, "message": "签到成功。"}


def open_for_checkin(session: Session, now: datetime | None = None) -> list[Activity]:
    """Published activities whose check-in is open now (from 2 hours before the start to the grace after the
    end), soonest first: the console's choice of "the activity at this door"."""
    from sqlalchemy import select

    now = now or utcnow()
    return list(session.scalars(select(Activity).where(
        Activity.status == ActivityStatus.PUBLISHED.value, Activity.starts_at <= now + CHECKIN_OPENS_BEFORE,
        Activity.ends_at > now - ATTENDANCE_GRACE).order_by(Activity.starts_at).limit(50)))


def _staff_door_action(session: Session, registration_id: int, note: str,
                       example: str) -> tuple[str, Registration, Activity]:
    """The note staff must give, the registration read afresh and its activity locked: what every correction at
    the door starts with."""
    note = (note or "").strip()
    if not note:
        raise ValidationError(f"请说明情况（例如：{example}）。", fields={"note": "请填写说明"})
    reg = session.get(Registration, registration_id)
    if reg is None:
        raise NotFound("没有找到这条报名记录。")
    activity = lock_activity(session, reg.activity_id)
    session.refresh(reg)
    return note, reg, activity


def mark_attended(session: Session, actor: Actor, registration_id: int, note: str,
                  now: datetime | None = None) -> Registration:
    """Staff correct the record: someone came without being scanned (the phone was flat, the scanner down)
    and was marked no-show, or is confirmed and check-in is open. The no-show count goes back down."""
    now = now or utcnow()
    note, reg, activity = _staff_door_action(session, registration_id, note, "现场手工登记")
    if reg.status == RegStatus.ATTENDED.value:
        return reg
    if reg.status not in (RegStatus.CONFIRMED.value, RegStatus.NO_SHOW.value):
        raise Conflict(f"报名当前为“{STATUS_LABELS[reg.status]}”，不能改为已到场。", code="illegal_transition")
    if now < activity.starts_at - CHECKIN_OPENS_BEFORE:
        # From when the scan is taken: someone at the door early with a flat phone is recorded then, not at the start.
        raise Conflict("签到尚未开始（活动开始前 2 小时开放签到）。", code="checkin_not_open")
    _attend(session, reg, actor, now, f"工作人员更正为已到场：{note}"[:200])
    return reg


def admit_waitlisted(session: Session, actor: Actor, registration_id: int, note: str,
                     now: datetime | None = None) -> Registration:
    """Staff let a waitlisted person in at the door: once the activity has started the waitlist no longer moves
    (promote() stops), so a seat left free can only be given here. Allowed while check-in is open and a seat is
    free; the registration is confirmed and checked in at once, with an audit row naming the staff member."""
    now = now or utcnow()
    note, reg, activity = _staff_door_action(session, registration_id, note, "现场候补入场")
    if reg.status == RegStatus.ATTENDED.value:
        return reg  # tapped twice (or a colleague was quicker): they are in, as mark_attended answers
    if reg.status != RegStatus.WAITLISTED.value:
        raise Conflict(f"报名当前为“{STATUS_LABELS[reg.status]}”，不是候补，不能现场候补入场。",
                       code="not_waitlisted")
    if activity.status != ActivityStatus.PUBLISHED.value:
        raise Conflict("活动已取消，不能入场。", code="activity_cancelled")
    if now < activity.starts_at - CHECKIN_OPENS_BEFORE:
        raise Conflict("签到尚未开始（活动开始前 2 小时开放签到）。", code="checkin_not_open")
    if now >= activity.ends_at + ATTENDANCE_GRACE:
        raise Conflict("活动已结束，签到已关闭。", code="checkin_closed")
    if activity.capacity - seats_taken(session, activity.id) <= 0:
        raise Conflict("名额已满，不能现场候补入场。", code="activity_full")
    text = f"现场候补入场：{note}"[:200]
    transition(session, reg, RegStatus.CONFIRMED, actor, note=text)
    _attend(session, reg, actor, now, text)
    audit(session, actor, "registration.admitted_from_waitlist", reg, activity_id=activity.id, note=note)
    return reg
