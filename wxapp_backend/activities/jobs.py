"""Activity jobs: T-24 h / T-1 h reminders and closing attendance (no-shows). All safe to run twice at once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..audit import SYSTEM
from ..db import session_scope, utcnow
from ..notices.models import Notification
from ..notices.services import notify
from .models import Activity, ActivityStatus, Registration, RegStatus
from .services import (
    ATTENDANCE_GRACE,
    EARLY_REMINDER,
    NEAR_REMINDER,
    REMINDER_KIND,
    SHANGHAI,
    counts_as_no_show,
    lock_activity,
    mark_user_no_shows,
    reminder_body,
    tell,
    transition,
)

log = logging.getLogger(__name__)

REMINDERS = {EARLY_REMINDER: timedelta(hours=24), NEAR_REMINDER: timedelta(hours=1)}
EARLY_SLACK = timedelta(minutes=5)


def send_reminders(activity_id: int, label: str, now: datetime | None = None) -> int:
    """Remind every confirmed registrant once per label; returns how many were newly reminded.

    Two schedulers may run this at the same moment: the activity lock serialises them and the
    notification's dedup_key ("reminder:<registration>:<label>", unique in the database) makes the
    second a no-op.
    """
    now = now or utcnow()
    before = REMINDERS[label]
    sent = 0
    try:
        with session_scope() as s:
            if s.get(Activity, activity_id) is None:
                return 0
            # Judged on the row as locked: staff moving or cancelling it while this job waited for the lock would
            # otherwise leave a "24 小时" reminder going out a week early, under the new start's key (so the real
            # one would never go out).
            activity = lock_activity(s, activity_id)
            if activity.status != ActivityStatus.PUBLISHED.value:
                return 0
            due = activity.starts_at - before
            if now < due - EARLY_SLACK or now >= activity.starts_at:
                return 0  # moved (a job for the new time exists) or already started
            if label == "24h" and now >= activity.starts_at - REMINDERS["1h"]:
                return 0  # the 1-hour reminder covers it; don't spend two credits within the hour
            regs = s.scalars(select(Registration).where(Registration.activity_id == activity_id,
                                                        Registration.status == RegStatus.CONFIRMED.value)).all()
            # The start time is in the key: a postponed activity reminds again for its new time.
            stamp = int(activity.starts_at.timestamp())
            keys = {f"reminder:{r.id}:{label}:{stamp}" for r in regs}
            done = set(s.scalars(select(Notification.dedup_key).where(Notification.dedup_key.in_(keys)))) \
                if keys else set()
            if label == EARLY_REMINDER and regs:
                # Reminded the day before within the last day, for a start since put back a little: the change notice
                # told the new time, and a second day-before reminder on top of it (due at once) is one too many.
                # Postponed by days, the last one is older than that and the new one goes out in its time.
                recent = set(s.scalars(select(Notification.ref).where(
                    Notification.kind == REMINDER_KIND, Notification.ref.in_([f"registration:{r.id}" for r in regs]),
                    Notification.dedup_key.like(f"reminder:%:{EARLY_REMINDER}:%"),
                    Notification.created_at >= now - REMINDERS[EARLY_REMINDER])))
                done |= {f"reminder:{r.id}:{label}:{stamp}" for r in regs if f"registration:{r.id}" in recent}
            when = _day_word(now, activity.starts_at) if label == "24h" else _soon_word(now, activity.starts_at)
            for reg in regs:
                key = f"reminder:{reg.id}:{label}:{stamp}"
                if key in done:
                    continue
                # "when" kept: the text is made again with the place the activity has when it is sent.
                notify(s, reg.user_id, REMINDER_KIND,
                       {"title": activity.title, "time": activity.starts_at.isoformat(),
                        "place": activity.place or "详见活动页面", "note": f"活动将于{when}开始", "when": when},
                       f"pages/activity/detail?id={activity.id}", title=f"活动提醒：{activity.title}"[:100],
                       body=reminder_body(activity, when), ref=f"registration:{reg.id}", dedup_key=key)
                sent += 1
    except IntegrityError:
        # Another scheduler committed the same reminders between our check and insert: theirs count.
        log.info("reminders for activity %s/%s already sent by another run", activity_id, label)
        return 0
    return sent


def _soon_word(now: datetime, starts: datetime) -> str:
    """"1 小时后" when about an hour is left; less, in minutes (the sweep, or someone registered at the last moment,
    can send the 1-hour reminder 25 minutes before the start)."""
    minutes = int((starts - now).total_seconds() // 60)
    return "1 小时后" if minutes >= 55 else f"{max(1, minutes)} 分钟后"


def _day_word(now: datetime, starts: datetime) -> str:
    """今天 / 明天 / 后天 by the Shanghai calendar: a 24-hour reminder may go out the same day (the activity was
    moved to this evening, or the sweep catches someone registered a few hours before)."""
    days = (starts.astimezone(SHANGHAI).date() - now.astimezone(SHANGHAI).date()).days
    return {0: "今天", 1: "明天", 2: "后天"}.get(days, "")


def send_due_reminders(now: datetime | None = None) -> int:
    """Sweep: reminders whose time has come for every upcoming activity (cron-style safety net)."""
    now = now or utcnow()
    with session_scope() as s:
        rows = s.execute(select(Activity.id, Activity.starts_at).where(
            Activity.status == ActivityStatus.PUBLISHED.value, Activity.starts_at > now,
            Activity.starts_at <= now + REMINDERS["24h"] + EARLY_SLACK)).all()
    total = 0
    for aid, starts in rows:
        for label, before in REMINDERS.items():
            if now >= starts - before - EARLY_SLACK:
                total += send_reminders(aid, label, now)
    return total


def close_attendance(activity_id: int, now: datetime | None = None) -> int:
    """After the event, confirmed registrations that never checked in become no-shows (returns how many); those
    still waitlisted or awaiting approval are cancelled."""
    now = now or utcnow()
    with session_scope() as s:
        activity = lock_activity(s, activity_id)
        # Not before the grace after the end, which check-in keeps open: the job scheduled for an end since moved
        # later would otherwise close it early (its new job comes at the new end plus the grace).
        if activity.ends_at + ATTENDANCE_GRACE > now or activity.attendance_closed_at is not None:
            return 0
        if activity.status != ActivityStatus.PUBLISHED.value:
            return 0  # a cancelled (or unpublished) activity has no no-shows
        regs = s.scalars(select(Registration).where(Registration.activity_id == activity_id,
                                                    Registration.status == RegStatus.CONFIRMED.value)).all()
        counted = {r.id for r in regs if counts_as_no_show(r.promoted_at, activity.starts_at)}
        for reg in regs:
            transition(s, reg, RegStatus.NO_SHOW, SYSTEM,
                       note="活动结束未签到" if reg.id in counted else "活动结束未签到（开始前不久才候补递补，不计爽约）")
        mark_user_no_shows(s, [r.user_id for r in regs if r.id in counted])
        # Still waiting when it ended (no seat came free, or staff never decided): it ends here, or 我的报名 would
        # show 候补中 / 待审核 for ever, and the user can no longer cancel it.
        waiting = s.scalars(select(Registration).where(
            Registration.activity_id == activity_id,
            Registration.status.in_((RegStatus.WAITLISTED.value, RegStatus.PENDING_APPROVAL.value)))).all()
        for reg in waiting:
            queued = reg.status == RegStatus.WAITLISTED.value
            note = "活动已结束，候补未递补" if queued else "活动已结束，报名未审核"
            transition(s, reg, RegStatus.CANCELLED, SYSTEM, note=note)
            reg.cancelled_at = now
            # They were still waiting for a seat or a decision: say it is over rather than let it end unsaid.
            why = "一直没有空出名额，这次未能参加" if queued else "报名没有来得及审核，这次未能参加"
            tell(s, reg, activity, "registration_cancelled", "活动已结束",
                 f"“{activity.title}”已经结束，您的{'候补' if queued else '报名'}{why}，欢迎关注下一期活动。",
                 "未能参加", note="活动已结束")
        activity.attendance_closed_at = now
        return len(regs)


def close_ended_activities(now: datetime | None = None) -> int:
    """Sweep: close attendance of every ended activity not yet closed."""
    now = now or utcnow()
    with session_scope() as s:
        ids = s.scalars(select(Activity.id).where(Activity.ends_at <= now - ATTENDANCE_GRACE,
                                                  Activity.attendance_closed_at.is_(None),
                                                  Activity.status == ActivityStatus.PUBLISHED.value)).all()
    return sum(close_attendance(i, now) for i in ids)
