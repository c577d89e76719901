"""A holiday entered (or removed) after an appeal's deadline was set moves that deadline.

chinesecalendar stops at 2026, so staff enter the next year's holidays by hand, often after appeals whose
deadlines reach into those days were filed: those deadlines were counted with the days as working days. Saving
the holiday table re-counts every open deadline that spans the day: the working time left from now stays the
same, counted on the new calendar. Closed appeals and deadlines the day does not fall inside keep theirs.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from wxapp_backend.appeals.calendar import local_date
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.appeals.services import delete_holiday, set_holiday, work_calendar
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope, utcnow

ADMIN = Actor("staff", 1, "admin")


def _appeal(db, appeal_id) -> Appeal:
    db.expire_all()
    return db.get(Appeal, appeal_id)


def _a_working_day_inside(db, appeal: Appeal):
    """A working day after today and before the appeal's due date."""
    cal = work_calendar(db)
    day = local_date(utcnow()) + timedelta(days=1)
    while not cal.is_workday(day):
        day += timedelta(days=1)
    assert day < local_date(appeal.due_at)
    return day


def test_a_new_holiday_inside_the_deadline_moves_it_one_working_day(world, db):
    a = world.submit()
    before = _appeal(db, a["id"])
    due, response_due = before.due_at, before.response_due_at
    day = _a_working_day_inside(db, before)
    left = work_calendar(db).working_minutes_between(utcnow(), due)
    with session_scope() as s:
        holiday = set_holiday(s, ADMIN, day, False, "临时休息日")
        holiday_id = holiday.id
    after = _appeal(db, a["id"])
    assert local_date(after.due_at) > local_date(due)
    # The working time left is the same, counted on the calendar with the holiday in it.
    assert abs(work_calendar(db).working_minutes_between(utcnow(), after.due_at) - left) <= 1
    if local_date(response_due) >= day:
        assert after.response_due_at > response_due
    events = db.scalars(select(AppealEvent).where(AppealEvent.appeal_id == a["id"],
                                                  AppealEvent.action == "deadline_recounted")).all()
    assert len(events) == 1 and day.isoformat() in events[0].note
    # Taking the holiday out again gives the first deadline back.
    with session_scope() as s:
        delete_holiday(s, ADMIN, holiday_id)
    assert _appeal(db, a["id"]).due_at == due


def test_a_holiday_after_the_deadline_or_a_closed_appeal_changes_nothing(world, db):
    a = world.submit()
    b = world.submit(content="我们公司的增值税发票开不出来，税控盘坏了，请帮忙！")  # not a retry of a's words
    world.act(b["id"], "reject", reason="重复提交")
    first = _appeal(db, a["id"])
    due = first.due_at
    closed_due = _appeal(db, b["id"]).due_at
    later = local_date(due) + timedelta(days=7)
    with session_scope() as s:
        set_holiday(s, ADMIN, later, False, "远处的假日")
    assert _appeal(db, a["id"]).due_at == due
    day = _a_working_day_inside(db, first)
    with session_scope() as s:
        set_holiday(s, ADMIN, day, False, "临时休息日")
    assert _appeal(db, b["id"]).due_at == closed_due
    assert _appeal(db, a["id"]).due_at > due


def test_saving_the_same_day_again_does_not_move_it_twice(world, db):
    a = world.submit()
    first = _appeal(db, a["id"])
    day = _a_working_day_inside(db, first)
    with session_scope() as s:
        set_holiday(s, ADMIN, day, False, "临时休息日")
    moved = _appeal(db, a["id"]).due_at
    with session_scope() as s:
        set_holiday(s, ADMIN, day, False, "临时休息日（改名）")
    assert _appeal(db, a["id"]).due_at == moved


def test_a_holiday_entered_later_moves_the_deadlines_still_running(world, db):
    from datetime import date, datetime

    from sqlalchemy import select

    from wxapp_backend.appeals import jobs, services
    from wxapp_backend.appeals.calendar import TZ
    from wxapp_backend.appeals.models import Appeal, AppealEvent, Holiday
    from wxapp_backend.audit import Actor, AuditLog
    from wxapp_backend.db import session_scope

    def at(*a):
        return datetime(*a, tzinfo=TZ)

    def submit(now):
        with session_scope() as s:
            appeal, _ = services.submit_appeal(s, world.user.id, services.Intake(
                content="我们公司的增值税发票开不出来，税控盘坏了", contact_name="张三", contact_phone="13800138000",
                category="税务"), now=now)
            return appeal.id

    def due(appeal_id):
        with session_scope() as s:
            a = s.get(Appeal, appeal_id)
            return a.due_at.astimezone(TZ), a.response_due_at.astimezone(TZ)

    staff = Actor("staff", world.admin.id, role="admin", name="管理员")
    monday = at(2025, 11, 3, 9, 0)  # 5 working days: Friday 11-07 17:30; first response by Monday 17:30
    running, done, waiting = submit(monday), submit(monday), submit(monday)
    with session_scope() as s:
        services.perform(s, staff, done, "accept", {}, now=monday)
        services.perform(s, staff, done, "resolve", {"resolution": "已处理"}, now=monday)
        services.perform(s, staff, waiting, "accept", {}, now=monday)
        services.perform(s, staff, waiting, "request_info", {"note": "请提供发票号码"}, now=monday)
    assert due(running) == (at(2025, 11, 7, 17, 30), at(2025, 11, 3, 17, 30))
    # Wednesday is declared a day off (a typhoon) at Monday noon: the appeal still has 4.5 working days to go,
    # so its deadline is Monday 11-10; it stayed Friday and the tick would flag it overdue a day early.
    with session_scope() as s:
        services.set_holiday(s, staff, date(2025, 11, 5), False, "台风停工", now=at(2025, 11, 3, 12, 0))
    assert due(running) == (at(2025, 11, 10, 17, 30), at(2025, 11, 3, 17, 30))
    assert jobs.tick(now=at(2025, 11, 7, 18, 0))["overdue"] == 0
    with session_scope() as s:
        assert s.get(Appeal, done).due_at.astimezone(TZ) == at(2025, 11, 7, 17, 30)  # resolved: its figure stands
        assert s.get(Appeal, waiting).sla_minutes_left is not None  # paused: counted in working minutes already
        ev = s.scalars(select(AppealEvent).where(AppealEvent.appeal_id == running,
                                                 AppealEvent.action == "deadline_recounted")).one()
        # Shown to the enterprise too (pass 11): its promised date moved, and it reads why.
        assert "2025-11-05" in ev.note and ev.public
        assert ev.to_public()["note"] == "节假日安排调整，承诺办结时间相应改为 11月10日 17:30"
        entry = s.scalars(select(AuditLog).where(AuditLog.action == "appeal_holiday.set")).one()
        assert entry.data["deadlines_moved"] == 1
        holiday_id = s.scalar(select(Holiday.id))
    # Taking the day off the table gives the day back.
    with session_scope() as s:
        services.delete_holiday(s, staff, holiday_id, now=at(2025, 11, 4, 12, 0))
    assert due(running) == (at(2025, 11, 7, 17, 30), at(2025, 11, 3, 17, 30))
