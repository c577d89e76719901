"""Periodic jobs run once per slot however many workers beat."""

from __future__ import annotations

from wxapp_backend.periodic import PERIODIC, Periodic, beat_once

CALLS: list[int] = []


def tick() -> int:
    CALLS.append(1)
    return len(CALLS)


def test_each_slot_is_enqueued_once_across_beats(app_ctx, monkeypatch, run_jobs):
    state = app_ctx.extensions["wxapp"]
    monkeypatch.setattr("wxapp_backend.periodic.PERIODIC", [Periodic("t", 60, f"{__name__}.tick")])
    first = beat_once(state.redis, state.queue, now=6000.0)
    others = [beat_once(state.redis, state.queue, now=6000.0 + i) for i in range(1, 5)]  # other workers
    assert first == ["t"] and all(o == [] for o in others)
    assert beat_once(state.redis, state.queue, now=6060.0) == ["t"]  # next slot
    CALLS.clear()
    assert run_jobs() == 2 and len(CALLS) == 2


def test_domains_register_their_periodic_jobs(app):
    names = {p.name for p in PERIODIC}
    assert {"activity_reminders", "activity_attendance", "notice_fanout"} <= names


def test_beat_command(app):
    result = app.test_cli_runner().invoke(args=["beat"])
    assert result.exit_code == 0 and "定时任务" in result.output


def test_a_slot_whose_enqueue_failed_is_tried_again_by_the_next_beat(app_ctx, monkeypatch, run_jobs):
    """The slot is claimed in Redis before the job is enqueued; when enqueueing fails, every later beat used to
    skip the slot (its job ran zero times in it)."""
    import pytest

    state = app_ctx.extensions["wxapp"]
    monkeypatch.setattr("wxapp_backend.periodic.PERIODIC", [Periodic("t", 60, f"{__name__}.tick")])
    real = state.queue.enqueue

    def broken(*args, **kwargs):
        raise ConnectionError("queue unavailable")

    monkeypatch.setattr(state.queue, "enqueue", broken)
    with pytest.raises(ConnectionError):
        beat_once(state.redis, state.queue, now=9000.0)
    monkeypatch.setattr(state.queue, "enqueue", real)
    assert beat_once(state.redis, state.queue, now=9015.0) == ["t"]  # the next beat, same slot
    CALLS.clear()
    assert run_jobs() == 1 and CALLS == [1]
