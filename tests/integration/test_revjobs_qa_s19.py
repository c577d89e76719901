"""QA session 19, a second look at session 18's crash safety of the job workers: the RQ scheduler's lock, taken over
from a worker that was killed, must stay with the one worker that took it."""

from __future__ import annotations

import os
import subprocess
import sys

from rq import Queue
from rq.scheduler import RQScheduler


class _Process:
    """A scheduler process as the worker sees it: running (exitcode None) or ended."""

    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_scheduler_of_a_killed_worker_stopping_leaves_the_lock_another_worker_took_over(redis_client):
    """Worker A killed -9: its scheduler process gets SIGTERM (it dies with its worker) and stops at its next loop, up
    to a second later, releasing its lock; RQ's release deletes the key whatever it holds. Meanwhile worker B, on the
    same machine, had found A's process gone and taken the lock over (session 18): A's scheduler deleted B's lock,
    and the next worker to try took it too; two schedulers then moved the same delayed jobs (a retry, a reminder run
    twice). A scheduler now releases only a lock that is still its own."""
    from wxapp_backend.jobs_runtime import SCHEDULER_HOLDER, AppScheduler, host_identity

    queue = Queue("qa-s19-release", connection=redis_client)
    lock = RQScheduler.get_locking_key(queue.name)
    dead = _dead_pid()
    dying = AppScheduler([queue], connection=redis_client)  # A's scheduler, in its own process
    dying._worker_pid = dead
    dying._acquired_locks = {queue.name}
    redis_client.set(lock, dead, ex=60)
    redis_client.set(SCHEDULER_HOLDER.format(queue.name), f"{host_identity()}|{dead}|1", ex=60)
    taker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # worker B, alive
    try:
        redis_client.delete(lock)  # what free_locks_of_dead_schedulers does in B ...
        redis_client.set(lock, taker.pid, nx=True, ex=60)  # ... before B's own SET NX (pid: B's process)
        dying.stop()  # A's scheduler, on its SIGTERM
        assert redis_client.get(lock) == str(taker.pid).encode()
        assert dying.acquired_locks == set()
        # Its own lock it does release (a worker stopped, or burst mode), as RQ did.
        redis_client.set(lock, dead, ex=60)
        dying._acquired_locks = {queue.name}
        dying.release_locks()
        assert redis_client.get(lock) is None
    finally:
        taker.kill()
        taker.wait()
        redis_client.delete(lock, SCHEDULER_HOLDER.format(queue.name))


def test_a_scheduler_that_died_is_not_started_again_while_another_worker_holds_the_lock(app, redis_client,
                                                                                       monkeypatch):
    """A worker's scheduler dies when Redis goes away; the beat starts it again (revive_scheduler). RQ's acquire_locks
    adds the locks it gets to those the scheduler got at its start, so a scheduler that had the lock once was started
    again even though the lock had lapsed meanwhile (Redis away longer than 61 s, or restarted empty) and another
    worker's scheduler had taken it (that worker's beat came first): two schedulers for good, moving the same delayed
    jobs. Only a lock Redis still holds for this worker counts."""
    from wxapp_backend.jobs_runtime import AppScheduler, AppWorker

    queue = app.extensions["wxapp"].queue
    lock = RQScheduler.get_locking_key(queue.name)
    started: list[int] = []
    monkeypatch.setattr(RQScheduler, "start", lambda self: started.append(1))
    worker = AppWorker([queue], connection=redis_client)
    worker.scheduler = AppScheduler([queue], connection=redis_client)
    worker.scheduler.acquire_locks()  # its start: the lock was free
    worker.scheduler.tried_at_start = True
    assert worker.scheduler.acquired_locks == {queue.name}
    try:
        worker.scheduler._process = _Process(exitcode=1)  # died with Redis
        redis_client.set(lock, "424242", ex=60)  # lapsed meanwhile, and another worker's scheduler took it
        worker.revive_scheduler()
        assert started == []
        assert redis_client.get(lock) == b"424242"
        # The other worker gone for good (its lock lapsed): this one takes it and starts.
        redis_client.delete(lock)
        worker.revive_scheduler()
        assert started == [1] and redis_client.get(lock) == str(os.getpid()).encode()
        # Redis back with its data, the lock still this worker's: started again (test_ops_qa_s10's case).
        worker.scheduler._process = _Process(exitcode=1)
        worker.revive_scheduler()
        assert started == [1, 1]
    finally:
        redis_client.delete(lock)
