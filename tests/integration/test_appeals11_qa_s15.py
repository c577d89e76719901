"""Appeals, QA pass 15 (11): the withdrawal and the chat photos' timeline rows run on the caller's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_appeals10_qa_s15 import people  # noqa: F401 - the first pass's fixture
from wxapp_backend import queue as queue_mod
from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.intake import queue_chat_photos, submit_from_chat
from wxapp_backend.appeals.models import Appeal, AppealEvent, AppealReturn, AppealTask
from wxapp_backend.db import session_scope

NOW = datetime(2025, 10, 20, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Shanghai; long past: never the real clock


def _utc(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)  # SQLite hands back naive UTC



def _submit(user_id: int, now: datetime | None = None) -> int:
    with session_scope() as s:
        appeal, _ = services.submit_appeal(s, user_id, services.Intake(
            content="办公楼门口的路灯坏了，晚上很黑", contact_name="张三", contact_phone="13800138000"), now=now)
        return appeal.id


def _events(appeal_id: int, action: str | None = None) -> list[AppealEvent]:
    with session_scope() as s:
        stmt = select(AppealEvent).where(AppealEvent.appeal_id == appeal_id).order_by(AppealEvent.id)
        if action:
            stmt = stmt.where(AppealEvent.action == action)
        rows = list(s.scalars(stmt))
        s.expunge_all()
        return rows


def test_a_withdrawal_runs_on_the_callers_clock(people):  # noqa: F811
    """withdraw() alone read the real clock: a test travelling in time (or a replay) got its 撤回 row, the closing
    time and the cancelled tasks and requests at today's date, after rows written on the travelled clock."""
    user, staff = people
    appeal_id = _submit(user.id, now=NOW)
    with session_scope() as s:
        services.perform(s, staff, appeal_id, "accept", {}, now=NOW + timedelta(hours=1))
    with session_scope() as s:
        services.perform(s, staff, appeal_id, "assign", {"department": "税务所"}, now=NOW + timedelta(hours=1, minutes=30))
    with session_scope() as s:  # a 退单 waiting and a 会办 task: both end with the withdrawal
        services.perform(s, staff, appeal_id, "return", {"reason": "不属于本部门职责范围"},
                         now=NOW + timedelta(hours=2))
    with session_scope() as s:
        services.perform(s, staff, appeal_id, "coordinate",
                         {"tasks": [{"department": "城运中心", "description": "请协助"}]},
                         now=NOW + timedelta(hours=2, minutes=30))
    at = NOW + timedelta(hours=3)
    with session_scope() as s:
        services.withdraw(s, user.id, appeal_id, "已自行解决", now=at)
    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        assert appeal.status == "withdrawn"
        assert _utc(appeal.closed_at) == at
        task = s.scalars(select(AppealTask).where(AppealTask.appeal_id == appeal_id)).one()
        assert task.status == "cancelled" and _utc(task.closed_at) == at
        ret = s.scalars(select(AppealReturn).where(AppealReturn.appeal_id == appeal_id)).one()
        assert ret.status == "rejected" and _utc(ret.decided_at) == at
    rows = [(e.action, _utc(e.created_at)) for e in _events(appeal_id)]
    assert ("withdrawn", at) in rows, rows
    assert all(when == at for action, when in rows if action in ("withdrawn", "task_cancelled")), rows
    assert all(NOW <= when <= at for _, when in rows), rows  # not one row on the real clock


def test_chat_photos_pending_row_is_on_the_callers_clock_and_the_sweep_reads_it(people, run_jobs, monkeypatch):  # noqa: F811
    """The sweep compares `photos_pending` rows with its `now`, but the row was written on the real clock: a sweep run
    on a travelled clock found every row "in the future" (or long expired) whatever its age. The row (and the
    `photos_attached` one the fetch writes) now carry the caller's clock."""
    user, _ = people

    def redis_down(*args, **kwargs):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(queue_mod, "enqueue", redis_down)  # the job is lost: only the sweep can fetch them
    with session_scope() as s:
        appeal = submit_from_chat(s, user.id, {"id": "d-travel", "content": "楼道里堆满了垃圾，已经一周了",
                                               "contact_name": "张三", "contact_phone": "13800138000",
                                               "media": ["MEDIA-T"]}, account="oa", now=NOW)
        appeal_id = appeal.id
    monkeypatch.undo()
    (pending,) = _events(appeal_id, "photos_pending")
    assert _utc(pending.created_at) == NOW
    assert _utc(_events(appeal_id, "submitted")[0].created_at) == NOW
    assert jobs.sweep_chat_photos(NOW + timedelta(minutes=5)) == 0  # too fresh: its job may be on its way
    assert jobs.sweep_chat_photos(NOW + timedelta(days=4)) == 0  # WeChat no longer keeps it
    later = NOW + timedelta(minutes=20)
    assert jobs.sweep_chat_photos(later) == 1
    assert run_jobs() == 1
    (attached,) = _events(appeal_id, "photos_attached")
    assert _utc(attached.created_at) == later  # the sweep's clock, after the pending row
    assert jobs.sweep_chat_photos(later + timedelta(minutes=5)) == 0  # attached: nothing left


def test_supplement_photos_pending_row_takes_the_callers_now(people):  # noqa: F811
    user, staff = people
    appeal_id = _submit(user.id, now=NOW)
    with session_scope() as s:
        queue_chat_photos(s, s.get(Appeal, appeal_id), "oa", ["MEDIA-S"], job_id="t-supp", now=NOW + timedelta(hours=1))
    (pending,) = _events(appeal_id, "photos_pending")
    assert _utc(pending.created_at) == NOW + timedelta(hours=1)


def test_pressing_an_appeal_that_waits_for_the_enterprise_asks_for_the_supplement(people):  # noqa: F811
    """“催一下” on an appeal staff had asked material for (待补充材料, its clock stopped) was recorded as a press and
    alerted the department (“企业很着急”) while it waited on the enterprise, who was told “请您耐心等待”. Without a
    number the newest open appeal was pressed even when it was that one. Now the user is told what is asked and how
    to send it, nothing is pressed, and without a number the appeal that is really being handled is pressed."""
    from handlers import appeal_followup as followup
    from wxapp_backend.errors import Conflict

    user, staff = people
    handled = _submit(user.id)
    waiting = _submit(user.id)
    with session_scope() as s:
        services.perform(s, staff, waiting, "accept", {})
    with session_scope() as s:
        services.perform(s, staff, waiting, "request_info", {"note": "请提供路灯的具体位置"})
        number, handled_number = s.get(Appeal, waiting).number, s.get(Appeal, handled).number
    reply = followup.press_text(user.id, number)
    assert "记下您的催办" not in reply and "请提供路灯的具体位置" in reply and f"补充 {number}" in reply, reply
    with pytest.raises(Conflict):
        with session_scope() as s:
            services.press_own(s, user.id, waiting)
    assert _events(waiting, "pressed") == []
    reply = followup.press_text(user.id, None)  # the newest open one waits on them: the other is the one pressed
    assert handled_number in reply and "记下您的催办" in reply, reply
    assert _events(waiting, "pressed") == [] and len(_events(handled, "pressed")) == 1
