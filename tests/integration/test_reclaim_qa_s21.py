"""QA session 21: what a stalled fan-out worker takes back after its lease (no push twice, nothing lost), and how a
worker tells that another worker's process has died (a reused pid, a start time it cannot read)."""

from __future__ import annotations

import os

import pytest

from wxapp_backend.db import session_scope
from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import OutboxRow

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


# --------------------------------------------------------------------------- 1. fan-out: _reclaim_unsent


class _DiesAfterWeChatTookIt:
    """Worker B's WeChat client: WeChat takes the message, then B is killed before it marks the row sent."""

    def __init__(self, api) -> None:
        self._api = api

    def send_subscribe(self, *args, **kwargs):
        self._api.send_subscribe(*args, **kwargs)
        raise SystemExit("worker B killed right after WeChat took the message")


def _chunk_args(nid: int) -> tuple[str, dict, str]:
    with session_scope() as s:
        notice = broadcast._get(s, nid)
        return notice.template_id, broadcast._fanout_values(s, notice), notice.page


def _calls_for(standin, openid: str) -> int:
    return sum(1 for c in standin.calls_to(SUBSCRIBE) if c.body["touser"] == openid)


def test_a_stalled_worker_does_not_take_back_a_row_another_worker_has_sent_since(
        app_ctx, published_notice, run_jobs, standin, db, redis_client, monkeypatch):
    """Worker A moves a row to 'sending' and stalls before calling WeChat, past two lease periods. The sweeper gives
    the row back (A never called it); worker B claims it, WeChat takes it, B is killed before marking it sent; the
    next sweep fails it as 结果未知 (WeChat may have it). A wakes up, finds its lease gone and the row failed as
    结果未知, and took it back as "never sent by me": pending again, and the next worker pushed it a second time. A now
    takes back only a row failed under its own lease."""
    nid = published_notice(1, fanout_claim_batch=10, fanout_send_chunk=10)
    broadcast.expand_notice(nid)
    api = broadcast._api()
    template, data, page = _chunk_args(nid)
    limiter = broadcast.RateLimiter(redis_client, 10000, 100)
    token_a, rows_a = broadcast._claim(nid, 10)
    ((row_id, _user_id, openid),) = rows_a
    real_acquire = broadcast.RateLimiter.acquire
    seen: dict[str, int] = {}

    def a_stalls_here(self) -> None:
        if not seen:  # A, between moving the row to 'sending' and calling WeChat
            seen["first_sweep"] = broadcast.sweep_leases(lease_seconds=-1)["returned"]
            token_b, rows_b = broadcast._claim(nid, 10)
            seen["b_claimed"] = len(rows_b)
            with pytest.raises(SystemExit):
                broadcast._send_chunk(_DiesAfterWeChatTookIt(api), limiter, token_b, rows_b, template, data, page,
                                      notice_id=nid)
            seen["second_sweep"] = broadcast.sweep_leases(lease_seconds=-1)["unknown"]
        real_acquire(self)

    monkeypatch.setattr(broadcast.RateLimiter, "acquire", a_stalls_here)
    outcomes = broadcast._send_chunk(api, limiter, token_a, rows_a, template, data, page, notice_id=nid)
    monkeypatch.setattr(broadcast.RateLimiter, "acquire", real_acquire)
    assert seen == {"first_sweep": 1, "b_claimed": 1, "second_sweep": 1}, seen
    assert outcomes == ["lost_lease"]
    assert _calls_for(standin, openid) == 1  # B's call

    broadcast.sweep_leases(force=True)  # the tick (or 重新启动): restarts the fan-out if anything is open
    run_jobs()
    assert _calls_for(standin, openid) == 1, "the user got the notice twice"
    db.expire_all()
    row = db.get(OutboxRow, row_id)
    assert (row.status, row.errcode) == ("failed", broadcast.UNKNOWN_RESULT)  # at most once: B's call may have gone


def test_control_a_stalled_worker_still_takes_back_the_rows_it_never_sent_when_redis_lost_its_record(
        app_ctx, published_notice, run_jobs, standin, db, redis_client, monkeypatch):
    """The other side (nothing lost): Redis lost the record of which rows A handed to WeChat, so the sweeper failed all
    of A's chunk as 结果未知. A, still alive, sends the row in hand (unknown to the sweeper) and finds at its next
    renewal that it lost the lease of the row it never called: that one it takes back (its own lease), and it goes out
    once, later. Without _reclaim_unsent that user never got the notice."""
    nid = published_notice(2, fanout_claim_batch=10, fanout_send_chunk=10)
    broadcast.expand_notice(nid)
    monkeypatch.setattr(broadcast, "LEASE_SECONDS", 0)  # A renews (and so learns what it lost) before every send
    api = broadcast._api()
    template, data, page = _chunk_args(nid)
    limiter = broadcast.RateLimiter(redis_client, 10000, 100)
    token_a, rows_a = broadcast._claim(nid, 10)
    (first, second) = rows_a
    real_acquire = broadcast.RateLimiter.acquire
    seen: dict[str, int] = {}

    def a_stalls_here(self) -> None:
        if not seen:
            redis_client.delete(broadcast.CALLED_KEY.format(token_a))  # Redis restarted empty meanwhile
            seen["unknown"] = broadcast.sweep_leases(lease_seconds=-1)["unknown"]
        real_acquire(self)

    monkeypatch.setattr(broadcast.RateLimiter, "acquire", a_stalls_here)
    outcomes = broadcast._send_chunk(api, limiter, token_a, rows_a, template, data, page, notice_id=nid)
    monkeypatch.setattr(broadcast.RateLimiter, "acquire", real_acquire)
    assert seen == {"unknown": 2}
    assert outcomes == ["sent", "lost_lease"]
    db.expire_all()
    assert db.get(OutboxRow, second[0]).status == "pending"  # taken back, its credit with it

    monkeypatch.setattr(broadcast, "LEASE_SECONDS", 120)
    broadcast.sweep_leases(force=True)
    run_jobs()
    db.expire_all()
    assert (db.get(OutboxRow, first[0]).status, db.get(OutboxRow, second[0]).status) == ("failed", "sent")
    assert _calls_for(standin, first[2]) == 1 and _calls_for(standin, second[2]) == 1  # each once, none lost


# --------------------------------------------------------------------------- 2. jobs: is the holder's process gone?


@pytest.fixture
def other_process():
    """Another worker's process on this machine (alive until the test ends, or ended at once with end())."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _hide_from_proc(monkeypatch, pid: int) -> None:
    """/proc mounted hidepid= (systemd's ProtectProc=, workers under different users): `pid`'s entry cannot be read."""
    from pathlib import Path

    real = Path.read_text
    hidden = f"/proc/{pid}/stat"

    def read_text(self, *args, **kwargs):
        if str(self) == hidden:
            raise PermissionError(13, "Permission denied", hidden)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)


def _started_job_of(redis_client, queue_name: str, worker_name: str, pid: int, started: str):
    """A job in the started registry, in the hands of `worker_name` (pid, start), which beats (its alive key is set)."""
    from rq import Queue

    from wxapp_backend.jobs_runtime import (
        BEAT_FIELD,
        HOST_FIELD,
        STARTED_FIELD,
        AppWorker,
        alive_key,
        host_identity,
    )

    queue = Queue(queue_name, connection=redis_client)
    job = queue.enqueue(os.getpid, job_id=f"{queue_name}-job")
    AppWorker([queue], connection=redis_client, name=worker_name).prepare_execution(job)
    redis_client.hset(f"rq:worker:{worker_name}", mapping={HOST_FIELD: host_identity(), STARTED_FIELD: started,
                                                           "pid": pid, BEAT_FIELD: 5})
    redis_client.set(alive_key(worker_name), 1, ex=60)
    return queue, job


def test_a_live_worker_whose_start_cannot_be_read_keeps_its_job(app_ctx, redis_client, other_process, monkeypatch):
    """Worker B runs a job on this machine under another user, and /proc hides B's entry from worker A (hidepid=):
    A's beat read B's start time as missing, took B for dead and had RQ run B's job a second time beside it (a
    second push, a second reminder). Not being able to read a process is not knowing it gone: the kernel is asked
    (signal 0), and B's beats decide."""
    from rq.registry import StartedJobRegistry

    from wxapp_backend.jobs_runtime import process_started, reclaim_jobs_of_dead_workers

    started = process_started(other_process.pid)
    assert started
    queue, job = _started_job_of(redis_client, "qa-s21-hidden", "qa-s21-worker-b", other_process.pid, started)
    _hide_from_proc(monkeypatch, other_process.pid)
    assert reclaim_jobs_of_dead_workers(queue, own_name="qa-s21-worker-a") == []
    assert job.id in StartedJobRegistry(queue=queue).get_job_ids()


def test_control_a_dead_worker_hidden_from_proc_or_with_its_pid_reused_loses_its_job(app_ctx, redis_client,
                                                                                   other_process, monkeypatch):
    """The same look finds a dead worker: its pid gone (though /proc would not have shown it anyway), or its pid now
    another process's (the start differs)."""
    from wxapp_backend.jobs_runtime import process_started, reclaim_jobs_of_dead_workers

    started = process_started(other_process.pid)
    other_process.kill()
    other_process.wait()  # reaped: the pid is free
    queue, job = _started_job_of(redis_client, "qa-s21-dead", "qa-s21-worker-dead", other_process.pid, started)
    _hide_from_proc(monkeypatch, other_process.pid)
    assert reclaim_jobs_of_dead_workers(queue, own_name="qa-s21-worker-a") == [job.id]
    me = process_started(os.getpid())
    queue, job = _started_job_of(redis_client, "qa-s21-reused", "qa-s21-worker-reused", os.getpid(),
                                 str(int(me) + 1))  # this pid, another start: its pid was reused
    assert reclaim_jobs_of_dead_workers(queue, own_name="qa-s21-worker-a") == [job.id]


def test_a_live_schedulers_lock_is_not_dropped_when_its_start_cannot_be_read(redis_client, other_process,
                                                                           monkeypatch):
    """The same misreading dropped the scheduler lock of a live worker hidden from /proc: two schedulers moved the
    same delayed jobs. A dead one's lock still goes at once (the control)."""
    from rq.scheduler import RQScheduler

    from wxapp_backend.jobs_runtime import (
        SCHEDULER_HOLDER,
        free_locks_of_dead_schedulers,
        host_identity,
        process_started,
    )

    host, name = host_identity(), "qa-s21-lock"
    lock, holder = RQScheduler.get_locking_key(name), SCHEDULER_HOLDER.format(name)
    redis_client.set(lock, other_process.pid, ex=60)
    redis_client.set(holder, f"{host}|{other_process.pid}|{process_started(other_process.pid)}", ex=60)
    _hide_from_proc(monkeypatch, other_process.pid)
    assert free_locks_of_dead_schedulers(redis_client, [name], host) == []
    assert redis_client.get(lock) == str(other_process.pid).encode()
    other_process.kill()
    other_process.wait()
    assert free_locks_of_dead_schedulers(redis_client, [name], host) == [name]
    assert redis_client.get(lock) is None
    redis_client.delete(holder)


class _LooksAfterEachWrite:
    """Worker B's Redis client: after each command that writes the scheduler lock, worker C (same machine) runs its
    look for dead schedulers' locks, as its beat may at any moment."""

    def __init__(self, connection, lock: str, look) -> None:
        self._connection, self._lock, self._look = connection, lock, look

    def __getattr__(self, name: str):
        return getattr(self._connection, name)

    def set(self, key, *args, **kwargs):
        got = self._connection.set(key, *args, **kwargs)
        if key == self._lock:
            self._look()
        return got

    def eval(self, script, numkeys, *keys_and_args):
        got = self._connection.eval(script, numkeys, *keys_and_args)
        if self._lock in keys_and_args[:numkeys]:
            self._look()
        return got


def test_a_stale_scheduler_holder_of_the_same_pid_does_not_cost_the_new_holder_its_lock(redis_client):
    """A worker that took the scheduler lock left its holder note (host|pid|start, kept for days) when it went; the
    lock went with it. Much later the pid came round again on the same machine, to worker B, which took the free
    lock (value: its pid) and only then wrote its own note. Worker C looking in between read the old note: same
    machine, same pid as the lock, another start -> "its holder died", and dropped B's live lock; C's scheduler
    took it too, and two schedulers moved the same delayed jobs. The lock and its note are now written in one step."""
    from rq import Queue
    from rq.scheduler import RQScheduler

    from wxapp_backend.jobs_runtime import (
        SCHEDULER_HOLDER,
        AppScheduler,
        free_locks_of_dead_schedulers,
        host_identity,
        process_started,
    )

    host, me = host_identity(), process_started(os.getpid())
    queue = Queue("qa-s21-stale-holder", connection=redis_client)
    lock, holder = RQScheduler.get_locking_key(queue.name), SCHEDULER_HOLDER.format(queue.name)
    redis_client.set(holder, f"{host}|{os.getpid()}|{int(me) - 1}", ex=3600)  # an earlier process with B's pid
    dropped: list[list[str]] = []
    b = AppScheduler([queue], connection=redis_client)  # B: this process
    b._connection = _LooksAfterEachWrite(
        redis_client, lock, lambda: dropped.append(free_locks_of_dead_schedulers(redis_client, [queue.name], host)))
    try:
        assert b.acquire_locks() == {queue.name}
        assert dropped and dropped[0] == [], "C dropped B's live lock"
        assert redis_client.get(lock) == str(os.getpid()).encode()
        assert redis_client.get(holder) == f"{host}|{os.getpid()}|{me}".encode()
    finally:
        redis_client.delete(lock, holder)


def test_control_the_lock_of_a_dead_holder_is_still_dropped_at_once(redis_client, other_process):
    """The control: a holder that died (its pid free) loses its lock at the first look, and B then takes it with its
    own note."""
    from rq import Queue
    from rq.scheduler import RQScheduler

    from wxapp_backend.jobs_runtime import SCHEDULER_HOLDER, AppScheduler, host_identity, process_started

    host = host_identity()
    queue = Queue("qa-s21-dead-holder", connection=redis_client)
    lock, holder = RQScheduler.get_locking_key(queue.name), SCHEDULER_HOLDER.format(queue.name)
    redis_client.set(lock, other_process.pid, ex=60)
    redis_client.set(holder, f"{host}|{other_process.pid}|{process_started(other_process.pid)}", ex=3600)
    other_process.kill()
    other_process.wait()
    b = AppScheduler([queue], connection=redis_client)
    try:
        assert b.acquire_locks() == {queue.name}
        assert redis_client.get(lock) == str(os.getpid()).encode()
        assert redis_client.get(holder) == f"{host}|{os.getpid()}|{process_started(os.getpid())}".encode()
    finally:
        redis_client.delete(lock, holder)
