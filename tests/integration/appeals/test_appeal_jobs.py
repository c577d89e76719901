"""The SLA tick: deadlines on working days, pause, warnings, overdue, 催办, escalation, closing, reports."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, select

from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import Appeal, AppealEvent, AppealReport, Holiday
from wxapp_backend.db import session_scope


def sh(*a):
    return datetime(*a, tzinfo=TZ)


def _get(appeal_id):
    with session_scope() as s:
        a = s.get(Appeal, appeal_id)
        s.expunge(a)
        return a


def _events(appeal_id, action):
    with session_scope() as s:
        return s.scalar(select(func.count(AppealEvent.id)).where(AppealEvent.appeal_id == appeal_id,
                                                                 AppealEvent.action == action))


def test_due_date_over_national_day(arrange):
    # 税务 is promised in 5 working days; a 7-day category gives the required 10-16 deadline.
    with session_scope() as s:
        services.ensure_catalogue(s)
        cat = s.scalar(select(services.AppealCategory).where(services.AppealCategory.code == "labour"))
        assert cat.promised_days == 7
    appeal_id = arrange.submit(sh(2025, 9, 30, 16, 0), content="员工社保断缴怎么补缴", category="社保/用工")
    assert _get(appeal_id).due_at.astimezone(TZ).date() == date(2025, 10, 16)


def test_holiday_table_moves_the_deadline(arrange, app_ctx):
    with session_scope() as s:
        services.set_holiday(s, arrange.actor, date(2025, 10, 9), False, "临时放假")
    appeal_id = arrange.submit(sh(2025, 9, 30, 16, 0), content="员工社保断缴怎么补缴", category="社保/用工")
    assert _get(appeal_id).due_at.astimezone(TZ).date() == date(2025, 10, 17)


def test_clock_pauses_while_pending_enterprise(arrange):
    appeal_id = arrange.submit(sh(2025, 11, 3, 9, 0))  # Monday, 5 working days -> Fri 11-07 17:30
    assert _get(appeal_id).due_at.astimezone(TZ) == sh(2025, 11, 7, 17, 30)
    arrange.act(appeal_id, "accept", now=sh(2025, 11, 3, 10, 0))
    arrange.act(appeal_id, "request_info", now=sh(2025, 11, 4, 9, 0), note="请补充发票号码")
    # the enterprise answers two working days later: the deadline moves by two days
    with session_scope() as s:
        services.supplement(s, arrange.user.id, appeal_id, "发票号码 123", now=sh(2025, 11, 6, 9, 0))
    a = _get(appeal_id)
    assert a.status == "accepted" and a.due_at.astimezone(TZ) == sh(2025, 11, 11, 17, 30)
    # a tick while paused flags nothing
    arrange.act(appeal_id, "request_info", now=sh(2025, 11, 6, 10, 0), note="再补充")
    assert jobs.tick(now=sh(2025, 11, 20, 10, 0))["overdue"] == 0


def test_tick_warns_flags_urges_once_per_day(arrange):
    appeal_id = arrange.submit(sh(2025, 11, 3, 9, 0))
    arrange.act(appeal_id, "accept", now=sh(2025, 11, 3, 9, 30))
    done = jobs.tick(now=sh(2025, 11, 7, 10, 0))
    assert done["warned"] == 1 and done["overdue"] == 0
    assert jobs.tick(now=sh(2025, 11, 7, 10, 5))["warned"] == 0  # ran twice: nothing new
    done = jobs.tick(now=sh(2025, 11, 10, 9, 30))
    assert done["overdue"] == 1 and done["urged"] == 1
    again = jobs.tick(now=sh(2025, 11, 10, 9, 35))
    assert again["overdue"] == 0 and again["urged"] == 0
    assert _events(appeal_id, "overdue") == 1 and _events(appeal_id, "urged") == 1
    assert jobs.tick(now=sh(2025, 11, 11, 9, 30))["urged"] == 1  # next working day: urged again
    assert _get(appeal_id).overdue is True and _get(appeal_id).urge_count == 2


def test_long_overdue_escalates_once(arrange):
    appeal_id = arrange.submit(sh(2025, 11, 3, 9, 0))
    done = jobs.tick(now=sh(2025, 11, 17, 9, 0))  # 5 working days after the deadline
    assert done["escalated"] == 1 and _get(appeal_id).escalated
    assert jobs.tick(now=sh(2025, 11, 17, 9, 5))["escalated"] == 0
    assert _events(appeal_id, "escalated") == 1


def test_unrated_resolved_appeal_closes_after_window(arrange):
    appeal_id = arrange.submit(sh(2025, 11, 3, 9, 0))
    arrange.act(appeal_id, "accept", now=sh(2025, 11, 3, 9, 10))
    arrange.act(appeal_id, "resolve", now=sh(2025, 11, 4, 9, 0), resolution="已处理")
    assert jobs.tick(now=sh(2025, 11, 6, 9, 0))["closed"] == 0
    assert jobs.tick(now=sh(2025, 11, 12, 9, 0))["closed"] == 0  # 8 calendar days, 6 working days
    assert jobs.tick(now=sh(2025, 11, 13, 9, 5))["closed"] == 1  # 7 working days ended at 9:00
    assert _get(appeal_id).status == "closed"
    assert jobs.tick(now=sh(2025, 11, 13, 9, 10))["closed"] == 0


def test_monday_prepares_last_weeks_report_once(arrange):
    arrange.submit(sh(2025, 9, 30, 10, 0))
    monday = sh(2025, 10, 6, 8, 0)  # 2025-W41 Monday; the report is for 2025-W40
    with session_scope() as s:
        row, created = services_reports_prepare(s, "2025-W40")
        assert created and row.data["totals"]["submitted"] == 1
    assert jobs.tick(now=monday)["reports"] in (0, 1)
    assert jobs.tick(now=monday)["reports"] == 0
    with session_scope() as s:
        assert s.scalar(select(func.count(AppealReport.id)).where(AppealReport.week == "2025-W40")) == 1


def services_reports_prepare(s, week):
    from wxapp_backend.appeals import reports

    return reports.prepare_weekly(s, week)


def test_cli_tick(app, arrange):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["appeals", "tick"])
    assert result.exit_code == 0, result.output
    assert "诉求定时检查完成" in result.output


def test_holiday_rows_are_unique(arrange):
    with session_scope() as s:
        services.set_holiday(s, arrange.actor, date(2026, 1, 2), False, "元旦")
        services.set_holiday(s, arrange.actor, date(2026, 1, 2), True, "改为上班")
    with session_scope() as s:
        rows = s.scalars(select(Holiday)).all()
        assert len(rows) == 1 and rows[0].is_workday is True


def test_tick_is_a_registered_periodic_job(app):
    from wxapp_backend.periodic import PERIODIC

    entry = [p for p in PERIODIC if p.name == "appeals_tick"]
    assert entry and entry[0].func == "wxapp_backend.appeals.jobs.tick" and entry[0].every <= 600
