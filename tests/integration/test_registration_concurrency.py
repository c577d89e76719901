"""Registration bursts from many threads never overbook; the same burst without the row lock does (PostgreSQL).

The race window is widened on purpose (a short sleep after counting seats) so that the negative control
overbooks every time, not only on a lucky run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from wxapp_backend.activities import services
from wxapp_backend.activities.models import Activity, Registration
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.errors import AppError


@pytest.fixture
def slow_count(monkeypatch):
    original = services.seat_and_waitlist

    def slow(session, activity_id):
        n = original(session, activity_id)
        time.sleep(0.02)
        return n

    monkeypatch.setattr(services, "seat_and_waitlist", slow)


def _activity(capacity: int, waitlist: bool) -> int:
    start = datetime.now(UTC) + timedelta(days=1)
    with session_scope() as s:
        a = Activity(category="vertical_marathon", title="垂直马拉松", address="中心大厦", starts_at=start,
                     ends_at=start + timedelta(hours=3), capacity=capacity, waitlist_enabled=waitlist)
        s.add(a)
        s.flush()
        return a.id


def _burst(app, activity_id: int, user_ids: list[int], *, lock: bool = True) -> Counter:
    barrier = threading.Barrier(len(user_ids))
    outcomes: Counter = Counter()
    guard = threading.Lock()

    def one(uid: int) -> None:
        with app.app_context():
            barrier.wait()
            try:
                with session_scope() as s:
                    reg, _ = services.register(s, activity_id=activity_id, user_id=uid, lock=lock)
                    result = reg.status
            except AppError as exc:
                result = exc.code
            with guard:
                outcomes[result] += 1

    threads = [threading.Thread(target=one, args=(u,)) for u in user_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def _confirmed(db, activity_id: int) -> int:
    db.expire_all()
    return db.query(Registration).filter_by(activity_id=activity_id, status="confirmed").count()


@pytest.mark.postgres
def test_burst_never_overbooks_on_postgres(app, app_ctx, make_user, db, slow_count):
    aid = _activity(capacity=10, waitlist=False)
    users = [make_user().id for _ in range(40)]
    outcomes = _burst(app, aid, users)
    assert outcomes == Counter({"confirmed": 10, "activity_full": 30})
    assert _confirmed(db, aid) == 10


@pytest.mark.postgres
def test_burst_with_waitlist_on_postgres(app, app_ctx, make_user, db, slow_count):
    aid = _activity(capacity=10, waitlist=True)
    users = [make_user().id for _ in range(40)]
    assert _burst(app, aid, users) == Counter({"confirmed": 10, "waitlisted": 30})


@pytest.mark.postgres
def test_negative_control_without_the_lock_overbooks(app, app_ctx, make_user, db, slow_count):
    aid = _activity(capacity=10, waitlist=False)
    users = [make_user().id for _ in range(40)]
    _burst(app, aid, users, lock=False)
    assert _confirmed(db, aid) > 10  # the race the lock prevents


@pytest.mark.postgres
def test_same_user_twice_at_once_gets_one_registration(app, app_ctx, make_user, db):
    aid = _activity(capacity=10, waitlist=True)
    uid = make_user().id
    outcomes = _burst(app, aid, [uid] * 8)
    assert outcomes["confirmed"] == 1 and outcomes["already_registered"] == 7
    # and without the lock the unique active_key constraint still refuses the duplicates
    aid2 = _activity(capacity=10, waitlist=True)
    outcomes = _burst(app, aid2, [uid] * 8, lock=False)
    assert outcomes["confirmed"] == 1 and outcomes["already_registered"] == 7


@pytest.mark.postgres
def test_concurrent_cancels_promote_one_each(app, app_ctx, make_user, db):
    aid = _activity(capacity=5, waitlist=True)
    users = [make_user().id for _ in range(15)]
    for uid in users:  # in order: 5 confirmed, 10 waitlisted
        with session_scope() as s:
            services.register(s, activity_id=aid, user_id=uid)
    confirmed = [r.id for r in db.query(Registration).filter_by(activity_id=aid, status="confirmed")]
    barrier = threading.Barrier(len(confirmed))

    def cancel(rid: int) -> None:
        with app.app_context():
            barrier.wait()
            with session_scope() as s:
                services.cancel_registration(s, Actor("staff", 1), rid)

    threads = [threading.Thread(target=cancel, args=(r,)) for r in confirmed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    db.expire_all()
    rows = db.query(Registration).filter_by(activity_id=aid).order_by(Registration.id).all()
    assert [r.status for r in rows] == ["cancelled"] * 5 + ["confirmed"] * 5 + ["waitlisted"] * 5


def test_burst_on_sqlite_or_postgres(app, app_ctx, make_user, db):
    """The same guarantee on whichever database the suite runs on (SQLite: BEGIN IMMEDIATE serialises)."""
    aid = _activity(capacity=3, waitlist=True)
    users = [make_user().id for _ in range(12)]
    assert _burst(app, aid, users) == Counter({"confirmed": 3, "waitlisted": 9})
