"""The tick watches the 办不成事 window's 3 working days and each 会办 task's deadline, as it watches the appeal's.

Both dates were set and shown, but nothing noticed when they passed: an escalation could sit unanswered for
weeks while the dashboard card counted it like a fresh one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import Appeal, AppealEvent, AppealTask
from wxapp_backend.db import session_scope


def at(*a) -> datetime:
    return datetime(*a, tzinfo=TZ)


def _events(appeal_id: int, action: str) -> list[AppealEvent]:
    with session_scope() as s:
        rows = s.scalars(select(AppealEvent).where(AppealEvent.appeal_id == appeal_id, AppealEvent.action == action))
        return [(e.note, e.data) for e in rows]


def test_an_escalation_past_its_three_working_days_is_flagged_once(arrange):
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = arrange.submit(monday)
    arrange.act(appeal_id, "accept", now=monday)
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, arrange.actor, lock=True)
        services.escalate(s, arrange.actor, appeal, reason="跑了三次都没办成", now=monday)
        due = appeal.escalation_due_at.astimezone(TZ)
    assert due == at(2025, 11, 6, 10, 0)
    assert jobs.tick(now=at(2025, 11, 6, 9, 0))["escalation_overdue"] == 0
    assert jobs.tick(now=at(2025, 11, 6, 11, 0))["escalation_overdue"] == 1
    assert jobs.tick(now=at(2025, 11, 7, 11, 0))["escalation_overdue"] == 0  # once
    (note, data), = _events(appeal_id, "escalation_overdue")
    assert "办不成事" in note and data["escalation_due_at"]
    with session_scope() as s:
        assert s.scalar(select(Appeal.id).where(services.escalation_overdue(at(2025, 11, 7, 11, 0)))) == appeal_id
        # Its task done: no longer owed.
        task = s.scalars(select(AppealTask).where(AppealTask.appeal_id == appeal_id,
                                                  AppealTask.kind == "escalation")).one()
        task_id = task.id
    arrange.act(appeal_id, "complete_task", now=at(2025, 11, 7, 12, 0), task_id=task_id, result="已电话联系企业")
    with session_scope() as s:
        assert s.scalar(select(Appeal.id).where(services.escalation_overdue(at(2025, 11, 7, 13, 0)))) is None


def test_a_coordination_task_past_its_deadline_is_flagged_once(arrange):
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = arrange.submit(monday)
    arrange.act(appeal_id, "accept", now=monday)
    arrange.act(appeal_id, "coordinate", now=monday,
                tasks=[{"department": "税务所", "working_days": 2, "description": "核实发票问题"},
                       {"department": "城运中心", "working_days": 5, "description": "现场查看"}])
    assert jobs.tick(now=at(2025, 11, 5, 11, 0))["tasks_overdue"] == 1  # the 2-day one
    assert jobs.tick(now=at(2025, 11, 6, 11, 0))["tasks_overdue"] == 0
    (note, data), = _events(appeal_id, "task_overdue")
    assert "税务所" in note and "超过期限" in note


def test_the_dashboard_card_says_how_many_are_late(arrange, client, console_login, monkeypatch):
    from wxapp_backend.appeals import console as appeals_console
    from wxapp_backend.db import utcnow

    appeal_id = arrange.submit(utcnow())
    arrange.act(appeal_id, "accept")
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, arrange.actor, lock=True)
        services.escalate(s, arrange.actor, appeal, reason="跑了三次都没办成")
        due = appeal.escalation_due_at
    console_login(arrange.admin)
    assert "超过 3 个工作日未处理" not in client.get("/console/").get_data(as_text=True)
    from datetime import timedelta

    monkeypatch.setattr(appeals_console, "utcnow", lambda: due + timedelta(minutes=1))
    assert "超过 3 个工作日未处理 1 件" in client.get("/console/").get_data(as_text=True)
