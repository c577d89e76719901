"""Two staff act on one appeal at the same moment: one wins, the other gets 409 (PostgreSQL row locks)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from wxapp_backend.appeals import services
from wxapp_backend.appeals.models import AppealEvent
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.errors import Conflict


def _race(app, arrange, monkeypatch, *, lock: bool):
    appeal_id = arrange.submit(utcnow())
    arrange.act(appeal_id, "accept")
    arrange.act(appeal_id, "start")
    monkeypatch.setattr(services, "LOCK_ROWS", lock)
    # Hold each transaction open between reading the appeal and changing it, so that both read first.
    monkeypatch.setattr(services, "_after_load", lambda appeal: time.sleep(0.5))
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def run(action, data):
        with app.app_context():
            barrier.wait()
            try:
                with session_scope() as s:
                    services.perform(s, arrange.actor, appeal_id, action, data)
                results[action] = "ok"
            except Conflict:
                results[action] = "409"

    threads = [threading.Thread(target=run, args=("resolve", {"resolution": "已办结"})),
               threading.Thread(target=run, args=("request_info", {"note": "请补充材料"}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with session_scope() as s:
        moves = s.scalars(select(AppealEvent).where(AppealEvent.appeal_id == appeal_id,
                                                    AppealEvent.from_status == "in_progress")).all()
    return results, moves


@pytest.mark.postgres
def test_conflicting_actions_one_wins(app, arrange, monkeypatch):
    results, moves = _race(app, arrange, monkeypatch, lock=True)
    assert sorted(results.values()) == ["409", "ok"]
    assert len(moves) == 1


@pytest.mark.postgres
def test_negative_control_without_the_lock_both_win(app, arrange, monkeypatch):
    results, moves = _race(app, arrange, monkeypatch, lock=False)
    assert sorted(results.values()) == ["ok", "ok"]  # the race the lock prevents
    assert len(moves) == 2


@pytest.mark.postgres
def test_same_idempotency_key_at_the_same_moment_makes_one_appeal(app, arrange):
    from wxapp_backend.appeals.models import Appeal

    barrier = threading.Barrier(4)
    got: list[tuple[int, bool]] = []

    def run():
        with app.app_context():
            barrier.wait()
            with session_scope() as s:
                appeal, created = services.submit_appeal(s, arrange.user.id, services.Intake(
                    content="增值税发票开不出来", contact_name="张三", contact_phone="13800138000"),
                    idempotency_key="same-key")
                got.append((appeal.id, created))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 4 and len({i for i, _ in got}) == 1 and sum(c for _, c in got) == 1
    with session_scope() as s:
        assert len(s.scalars(select(Appeal)).unique().all()) == 1


def _merge_race(app, arrange, monkeypatch, *, lock: bool):
    """A into B and B into A by two staff at the same moment."""
    from wxapp_backend.appeals.models import Appeal

    a, b = arrange.submit(utcnow()), arrange.submit(utcnow())
    for appeal_id in (a, b):
        arrange.act(appeal_id, "accept")
    monkeypatch.setattr(services, "LOCK_ROWS", lock)
    monkeypatch.setattr(services, "_after_load", lambda appeal: time.sleep(0.5))
    results: dict[int, str] = {}
    barrier = threading.Barrier(2)

    def run(child, master):
        with app.app_context():
            barrier.wait()
            try:
                with session_scope() as s:
                    services.perform(s, arrange.actor, child, "merge", {"master_id": master})
                results[child] = "ok"
            except Conflict:
                results[child] = "409"

    threads = [threading.Thread(target=run, args=(a, b)), threading.Thread(target=run, args=(b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with session_scope() as s:
        links = {i: s.get(Appeal, i).master_id for i in (a, b)}
    return results, links, (a, b)


@pytest.mark.postgres
def test_opposite_merges_at_once_never_make_a_cycle(app, arrange, monkeypatch):
    results, links, (a, b) = _merge_race(app, arrange, monkeypatch, lock=True)
    assert "ok" not in results.values() or sorted(results.values()) == ["409", "ok"]
    assert not (links[a] == b and links[b] == a)


@pytest.mark.postgres
def test_negative_control_opposite_merges_without_locks_make_a_cycle(app, arrange, monkeypatch):
    results, links, (a, b) = _merge_race(app, arrange, monkeypatch, lock=False)
    assert sorted(results.values()) == ["ok", "ok"]
    assert links[a] == b and links[b] == a  # each the other's duplicate: the race the locks prevent


def _quota_race(app, arrange, monkeypatch, *, lock: bool) -> int:
    """Four submissions at the same moment by a user one appeal short of a cap of 3."""
    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.errors import TooManyRequests

    for _ in range(2):
        arrange.submit(utcnow())
    monkeypatch.setattr(services, "LOCK_ROWS", lock)
    real = services.ensure_catalogue

    def slow_catalogue(session):  # runs after the count: hold each submission open there
        time.sleep(0.4)
        return real(session)

    monkeypatch.setattr(services, "ensure_catalogue", slow_catalogue)
    barrier = threading.Barrier(4)

    def run():
        with app.app_context():
            barrier.wait()
            try:
                with session_scope() as s:
                    services.submit_appeal(s, arrange.user.id, services.Intake(
                        content="增值税发票开不出来", contact_name="张三", contact_phone="13800138000"), daily_limit=3)
            except TooManyRequests:
                pass

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with session_scope() as s:
        return len(s.scalars(select(Appeal.id).where(Appeal.user_id == arrange.user.id)).all())


@pytest.mark.postgres
def test_submissions_at_once_keep_to_the_daily_cap(app, arrange, monkeypatch):
    assert _quota_race(app, arrange, monkeypatch, lock=True) == 3


@pytest.mark.postgres
def test_negative_control_without_the_lock_they_go_past_the_cap(app, arrange, monkeypatch):
    assert _quota_race(app, arrange, monkeypatch, lock=False) > 3
