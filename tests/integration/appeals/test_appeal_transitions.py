"""transition(): every allowed move succeeds and writes an event; forbidden moves are 409 and change nothing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from wxapp_backend.appeals import services
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.appeals.states import TRANSITIONS, AppealStatus
from wxapp_backend.db import session_scope
from wxapp_backend.errors import Conflict

NOW = datetime(2025, 10, 20, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Shanghai
ALLOWED = [(src, dst) for src, dsts in TRANSITIONS.items() for dst in sorted(dsts)]
FORBIDDEN_ALL = [(src, dst) for src in AppealStatus for dst in AppealStatus
                 if dst not in TRANSITIONS[src] and dst != src]
FORBIDDEN = random.Random(20251020).sample(FORBIDDEN_ALL, 30) + [
    (AppealStatus.CLOSED, AppealStatus.IN_PROGRESS), (AppealStatus.WITHDRAWN, AppealStatus.RESOLVED),
    (AppealStatus.SUBMITTED, AppealStatus.RESOLVED), (AppealStatus.REJECTED, AppealStatus.ACCEPTED)]


def _put_in(appeal_id: int, status: AppealStatus) -> None:
    """Place the appeal directly in `status` (arrangement only; the moves under test go through transition)."""
    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        appeal.status = status.value
        if status == AppealStatus.PENDING_ENTERPRISE:
            appeal.paused_at, appeal.paused_from, appeal.sla_minutes_left = NOW, "in_progress", 600


def test_tables_are_complete():
    assert len(ALLOWED) == sum(len(v) for v in TRANSITIONS.values()) and len(FORBIDDEN_ALL) > 60


@pytest.mark.parametrize("src,dst", ALLOWED, ids=[f"{a.value}->{b.value}" for a, b in ALLOWED])
def test_every_allowed_move(arrange, src, dst, db):
    appeal_id = arrange.submit(NOW)
    _put_in(appeal_id, src)
    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        version = appeal.version
        services.transition(s, appeal, dst, arrange.actor, action="test_move", now=NOW)
    row = db.get(Appeal, appeal_id)
    assert row.status == dst.value and row.version == version + 1
    last = db.query(AppealEvent).filter_by(appeal_id=appeal_id).order_by(AppealEvent.id.desc()).first()
    assert (last.from_status, last.to_status, last.action) == (src.value, dst.value, "test_move")


@pytest.mark.parametrize("src,dst", FORBIDDEN, ids=[f"{a.value}->{b.value}" for a, b in FORBIDDEN])
def test_forbidden_move_is_409_and_changes_nothing(arrange, src, dst, db):
    appeal_id = arrange.submit(NOW)
    _put_in(appeal_id, src)
    before_events = db.query(AppealEvent).filter_by(appeal_id=appeal_id).count()
    version = db.get(Appeal, appeal_id).version
    with pytest.raises(Conflict) as exc, session_scope() as s:
        services.transition(s, s.get(Appeal, appeal_id), dst, arrange.actor, action="test_move", now=NOW)
    assert exc.value.status == 409 and exc.value.code == "illegal_transition"
    db.expire_all()
    row = db.get(Appeal, appeal_id)
    assert row.status == src.value and row.version == version
    assert db.query(AppealEvent).filter_by(appeal_id=appeal_id).count() == before_events


SAME = [status for status in AppealStatus if status not in TRANSITIONS[status]]


@pytest.mark.parametrize("status", SAME, ids=[s.value for s in SAME])
def test_a_move_to_the_state_it_is_in_says_it_is_done_already(arrange, status, db):
    """关闭 (or 不予受理 ...) sent twice: "已关闭, cannot become 已关闭" read like an error in the system."""
    appeal_id = arrange.submit(NOW)
    _put_in(appeal_id, status)
    version = db.get(Appeal, appeal_id).version
    with pytest.raises(Conflict) as exc, session_scope() as s:
        services.transition(s, s.get(Appeal, appeal_id), status, arrange.actor, action="test_move", now=NOW)
    assert exc.value.code == "illegal_transition" and "已经是" in exc.value.message and "不能变为" not in exc.value.message
    db.expire_all()
    assert db.get(Appeal, appeal_id).version == version
