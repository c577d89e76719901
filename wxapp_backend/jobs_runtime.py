"""The RQ worker process: runs jobs inside the application context and counts them in /metrics.

Stopping and crashing: a job is never left behind. Asked to stop (SIGTERM / Ctrl-C, `serve` stopping), the worker
takes no new job and gives the one in hand STOP_GRACE seconds; then it stops the job's process and puts the job
back at the head of its queue, where the next worker start (or another worker) picks it up. A job whose process
died under it (killed -9, out of memory), or whose worker died (its work-horse dies with it), runs once more; a
job that dies a second time goes to the failed jobs, where staff can requeue it. A dead worker's job is found by
every other worker's beat thread (every JOB_HEARTBEAT seconds, busy or idle) and at its start: at once when the
dead worker ran on the same machine (its process is gone), by `serve` when its own worker has ended, and for a
worker elsewhere (killed, powered off) once its beats have stopped for LAPSE_BEATS beats and stayed stopped for
CONFIRM_BEATS more: 7 to 8 beats, under 40 s by default (it was RQ's 90-s heartbeat lapse, found by a clean-up
that an idle worker ran only between its 405-s waits for a job). A live worker beats all through a long job, so its job is
never taken from it; RQ's own 90-s lapse stays as the last resort.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import redis
from flask import current_app
from rq import Queue, Worker, worker_registration
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.registry import StartedJobRegistry, clean_registries
from rq.scheduler import RQScheduler
from rq.utils import now

from .kv import make_redis
from .metrics import JOBS

log = logging.getLogger(__name__)

STOP_GRACE = 10.0  # seconds a job may go on after the worker is asked to stop; `serve` waits longer than this
RERUN_KEY = "wxapp_reruns"  # job.meta: times the job was run again because its process died under it
MAINTENANCE_INTERVAL = 60  # seconds between RQ's registry clean-ups, which find the jobs of a worker that died
HOST_FIELD = "wxapp_host"  # in RQ's worker hash: the machine and process namespace the worker runs in
STARTED_FIELD = "wxapp_started"  # ...and when its process started (clock ticks since boot), against a reused pid
BEAT_FIELD = "wxapp_beat"  # ...and its heartbeat interval: it keeps alive_key() while it runs a job
HEARTBEAT = 5  # seconds between a busy worker's heartbeats (JOB_HEARTBEAT)
LAPSE_BEATS = 4  # a worker's alive key lapses after this many heartbeats without one
CONFIRM_BEATS = 2  # ...and it is taken for dead when the key stays missing this many more (Redis's clock, both)
RQ_LAPSE = 90  # seconds: RQ's own heartbeat lapse (its registries, on each machine's clock), kept as it was


PERIODIC_PREFIX = "periodic-"  # the ids periodic.py gives the ticks it enqueues
# In a job's process: whether that job is a periodic tick (see QuietTicks).
_tick_in_hand = False


class QuietTicks(logging.Filter):
    """Keeps RQ's routine INFO lines about the periodic ticks out of the log.

    Every tick (reminders, fan-out, SLA clocks ... several a minute) took three or four lines: dequeued, completed,
    "Job OK", "Result is kept": a minute of a quiet service was a screen of them, and the lines that matter
    scrolled away. A tick that fails still logs (WARNING and up), and LOG_LEVEL=DEBUG shows everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or logging.getLogger("rq.worker").getEffectiveLevel() <= logging.DEBUG:
            return True
        if _tick_in_hand:
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(a, str) and a.startswith(PERIODIC_PREFIX) for a in args)


def quiet_ticks() -> None:
    """Install QuietTicks on RQ's worker logger once."""
    rq_log = logging.getLogger("rq.worker")
    if not any(isinstance(f, QuietTicks) for f in rq_log.filters):
        rq_log.addFilter(QuietTicks())


def load_prctl():
    """libc's prctl, or None (not Linux): looked up once, in the process that forks, never in the child."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up at import, in the parent. The scheduler process and each job's work horse are forked from a worker whose
# beat thread runs beside: a child that loads a library itself (`import ctypes`, dlopen) hangs for good when that
# thread held the loader's lock at the fork; such a scheduler never ran a delayed job nor a retry again.
_PRCTL = load_prctl()


def _die_with_parent(sig: int) -> None:
    """Linux: this process gets `sig` when its parent dies, even by SIGKILL. Loads nothing (see _PRCTL)."""
    if _PRCTL is not None:
        _PRCTL(1, sig)  # PR_SET_PDEATHSIG


def host_identity() -> str | None:
    """This machine's boot and process namespace: two workers with the same identity see each other's pids. None
    when it cannot be known (not Linux, /proc not readable)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}|{boot}|{pid_namespace}" if boot else None


def _read_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of process `pid`; None when its /proc entry cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # state is field 3 of stat, the start field 22: the fields after the name start at 3


def process_started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot); None when no such process runs (a zombie is gone), or
    when its start cannot be read."""
    stat = _read_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    return stat[1]


def still_runs(pid: int, started: str) -> bool | None:
    """Whether the process that started at `started` still runs as `pid` on this machine: False when it is known to be
    gone (no such pid, a zombie, or the pid is another process's now), None when this process cannot tell.

    A /proc entry that cannot be read is not a process gone: /proc mounted hidepid= (systemd's ProtectProc=, workers
    under different users such as DynamicUser=) hides another user's processes. Read as gone, a live worker's job
    was run a second time beside it, and a live scheduler's lock was dropped (two schedulers). The kernel still
    says whether the pid exists (signal 0)."""
    stat = _read_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X") and stat[1] == started
    if pid <= 0:
        return None  # signal 0 would go to a process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return None  # EPERM: it runs, as another user, and its start is hidden from us
    return None  # it exists, and its start cannot be read: this one or another process with its pid


def worker_is_gone(connection, worker_name: str, host: str | None) -> bool:
    """Whether the worker `worker_name` is known to have died: it ran where this process runs (same machine,
    same process namespace) and its process no longer runs (or its pid is another process's now). A worker
    elsewhere, or one whose record has expired, is not known to be gone: RQ's heartbeat finds its jobs."""
    if host is None:
        return False
    recorded_host, started, pid = connection.hmget(Worker.redis_worker_namespace_prefix + worker_name,
                                                   HOST_FIELD, STARTED_FIELD, "pid")
    if recorded_host is None or started is None or pid is None or recorded_host.decode() != host:
        return False
    try:
        return still_runs(int(pid), started.decode()) is False
    except ValueError:
        return False


def alive_key(worker_name: str) -> str:
    """Set by a worker with each heartbeat while it runs a job, expiring (on Redis's clock) LAPSE_BEATS beats on."""
    return f"wxapp:worker:alive:{worker_name}"


def _missed_key(worker_name: str) -> str:
    return f"wxapp:worker:missed:{worker_name}"


def stopped_beating(connection, worker_name: str) -> bool:
    """Whether the worker `worker_name`, wherever it runs, has stopped its heartbeats: its alive key has lapsed
    and is still missing CONFIRM_BEATS beats after a clean-up first saw it missing. Both on Redis's own clock, so
    no machine's clock matters; and the second look is what keeps a live worker's job when Redis itself was away
    (a restart, a fail-over): keys lapse meanwhile, and the worker's next beat, one interval after Redis is back,
    comes before the second look. A worker that keeps no alive key (an older release) is not known to be gone."""
    beat = connection.hget(Worker.redis_worker_namespace_prefix + worker_name, BEAT_FIELD)
    try:
        beat = float(beat) if beat is not None else None
    except ValueError:
        beat = None
    if beat is None:
        return False
    if connection.exists(alive_key(worker_name)):
        connection.delete(_missed_key(worker_name))
        return False
    seconds, micros = connection.time()
    redis_now = seconds + micros / 1e6
    if connection.set(_missed_key(worker_name), redis_now, nx=True, ex=int(beat * (LAPSE_BEATS + CONFIRM_BEATS) * 4)):
        return False  # missing for the first time: look again
    first = connection.get(_missed_key(worker_name))
    try:
        return first is not None and redis_now - float(first) >= beat * CONFIRM_BEATS
    except ValueError:
        return False


def allow_one_rerun(job) -> None:
    """A job whose process died under it runs again once (RQ would fail a job without retries for good, and
    retry one with retries as often as it has them: a job that kills its process each time would do it again)."""
    reruns = int(job.meta.get(RERUN_KEY, 0))
    if reruns >= 1:
        job.retries_left = 0
        return
    job.meta[RERUN_KEY] = reruns + 1
    if not job.retries_left:
        job.retries_left = 1


def _abandoned(job, exc_type, exc_value, traceback) -> bool:
    """RQ's clean-up found a job whose worker stopped sending heartbeats (it was killed): run it once more."""
    if exc_type is AbandonedJobError:
        log.warning("job abandoned by a worker that died: running it again", extra={"job_id": job.id})
        allow_one_rerun(job)
    return True  # the other handlers (and RQ's own handling) still run


def reclaim_jobs_of_dead_workers(queue: Queue, exception_handlers: list | None = None,
                                 own_name: str | None = None) -> list[str]:
    """Jobs "started" by a worker known to be dead: on this machine, its process is gone (kill -9, out of memory);
    elsewhere, it stopped beating (`stopped_beating`). RQ finds them only when their heartbeat lapses (90 s), at a
    clean-up after that. They are marked lapsed now, and RQ's clean-up runs them once more (`_abandoned`). Call it
    holding the queue's maintenance lock (two clean-ups at once could both requeue a job). Returns their ids."""
    connection = queue.connection
    host = host_identity()
    registry = StartedJobRegistry(queue=queue)
    gone: dict[str, bool] = {}
    lapsed = []
    for entry in connection.zrange(registry.key, 0, -1):
        # Only the job's worker, not the whole job (every worker's beat thread looks, every few seconds).
        job_id = registry.parse_job_id(entry)
        name = connection.hget(Job.key_for(job_id), "worker_name")
        name = name.decode() if name else None
        if not name or name == own_name:
            continue
        if name not in gone:
            gone[name] = worker_is_gone(connection, name, host) or stopped_beating(connection, name)
        if gone[name]:
            connection.zadd(registry.key, {entry: 0}, xx=True)  # as if its heartbeat had lapsed long ago
            lapsed.append(job_id)
    if lapsed:
        log.warning("jobs of a worker that died: running them again now", extra={"job_ids": ",".join(lapsed)})
        registry.cleanup(timestamp=1, exception_handlers=exception_handlers or [_abandoned])  # those scored 0
    return lapsed


def reclaim_after_stop(queue: Queue) -> list[str]:
    """For `serve`, once its worker has ended: a worker that was killed (or died) left its job "started"; it is put
    back on the queue now, for the next start or another machine's worker, instead of 90 s after. Returns the ids
    (none when another worker is cleaning up right now: that clean-up finds them)."""
    if not queue.acquire_maintenance_lock():
        return []
    try:
        return reclaim_jobs_of_dead_workers(queue)
    finally:
        queue.release_maintenance_lock()


SCHEDULER_HOLDER = "wxapp:scheduler:holder:{}"  # who took a queue's scheduler lock: "<host>|<pid>|<started>"
HOLDER_TTL = 7 * 24 * 3600
# RQ's SET NX of the lock (value: the taker's pid) and the holder note in one step. Written after the lock, the note
# left by an earlier holder (kept for days) was there for a moment beside the new lock: when the new taker had that
# holder's pid (reused on this machine), another worker looking then took the note's start for the taker's and
# dropped a live lock. A taker that cannot say who it is (ARGV[3] empty) leaves no stale note behind either.
_TAKE_LOCK = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
if ARGV[3] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
return 1
"""
# Compare-and-delete: the lock goes only while it still holds the dead holder's value.
_DROP_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def free_locks_of_dead_schedulers(connection, queue_names, host: str | None) -> list[str]:
    """Drop the scheduler locks (RQ's, 61 s long) held by a worker known to be gone: it ran on this machine and its
    process no longer runs. Left in place, the next worker started without a scheduler, and no delayed job ran (nor
    a retry: the rerun of the killed worker's own job is one) until the lock lapsed and RQ's maintenance, between its
    long waits for a job, tried again: 85 s in a test, minutes at worst. Returns the queues whose lock was dropped."""
    if host is None:
        return []
    dropped = []
    for name in queue_names:
        lock_key = RQScheduler.get_locking_key(name)
        value, holder = connection.mget(lock_key, SCHEDULER_HOLDER.format(name))
        if value is None or holder is None:
            continue
        try:
            held_on, pid, started = holder.decode().rsplit("|", 2)
        except ValueError:
            continue
        if held_on != host or pid != value.decode() or not pid.isdigit() or still_runs(int(pid), started) is not False:
            continue  # elsewhere (its lock lapses by itself), someone else's, alive, or not known to be gone
        if connection.eval(_DROP_LOCK, 1, lock_key, value):
            log.warning("scheduler lock of a worker that died taken over", extra={"queue": name, "pid": pid})
            dropped.append(name)
    return dropped


_SCHEDULER_LOCKING = threading.Lock()
# Release: the lock goes only while it holds one of ARGV (this scheduler's pids: its worker's, its own process's).
_RELEASE_OWN = """
local v = redis.call('GET', KEYS[1])
for _, mine in ipairs(ARGV) do
  if v == mine then return redis.call('DEL', KEYS[1]) end
end
return 0
"""


class AppScheduler(RQScheduler):
    """RQ's scheduler process, which dies with its worker: left alone it ran on after a kill -9 of the worker,
    holding the scheduler lock (no other worker's scheduler could take over) and a Redis connection. Its lock, left
    by a worker that was killed, is taken over at once (free_locks_of_dead_schedulers)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._worker_pid = os.getpid()
        self._host = host_identity()

    def acquire_locks(self, auto_start=False):  # type: ignore[override]
        # The worker's loop and its beat thread may both try to take the lock. The thread lock is the module's, not
        # the scheduler's: RQ pickles the scheduler to start it under spawn/forkserver, and a lock cannot be.
        with _SCHEDULER_LOCKING:
            try:
                free_locks_of_dead_schedulers(self.connection, self._queue_names, self._host)
            except redis.RedisError:
                pass  # the attempt below meets the same Redis and says so
            self._keep_own_locks()
            return self._take_locks(auto_start)

    def _take_locks(self, auto_start: bool) -> set[str]:
        """RQ's acquire_locks (rq 2.6), each lock taken together with its holder note (_TAKE_LOCK)."""
        pid = os.getpid()
        started = process_started(pid)
        holder = f"{self._host}|{pid}|{started}" if self._host is not None and started is not None else ""
        got = set()
        for name in self._queue_names:
            if self.connection.eval(_TAKE_LOCK, 2, self.get_locking_key(name), SCHEDULER_HOLDER.format(name),
                                    pid, self.interval + 60, holder, HOLDER_TTL):
                self.log.info("Acquired scheduler lock for %s", name)
                got.add(name)
        self._scheduled_job_registries = []
        self._acquired_locks = self._acquired_locks.union(got)
        self.lock_acquisition_time = datetime.now()  # naive local time, as RQ compares it (should_reacquire_locks)
        if self._acquired_locks and auto_start and (not self._process or not self._process.is_alive()):
            self.start()
        return got

    def _own_values(self) -> list[str]:
        """The values RQ gives this scheduler's locks: the pid of the process that took them (the worker's; the
        scheduler's own process when it took one again itself)."""
        return list(dict.fromkeys((str(self._worker_pid), str(os.getpid()))))

    def _keep_own_locks(self) -> None:
        # RQ's acquire_locks adds the locks it gets now to those got before, held or not: a scheduler that died with
        # Redis (a lapse of more than 61 s, a restart) was started again by the beat on the lock it had at its
        # start, though another worker's scheduler held it since: two schedulers moving the same delayed jobs.
        if not self._acquired_locks:
            return
        names = sorted(self._acquired_locks)
        values = self.connection.mget([self.get_locking_key(n) for n in names])
        mine = self._own_values()
        self._acquired_locks = {n for n, v in zip(names, values, strict=True) if v is not None and v.decode() in mine}

    def release_locks(self) -> None:  # type: ignore[override]
        # RQ deletes the keys whatever they hold. A worker killed -9: its scheduler stops on the SIGTERM that follows
        # (up to a second later), while a worker on this machine may have taken its lock over already: RQ's delete
        # dropped that worker's lock, and a third scheduler took it. Only a lock still this scheduler's goes.
        mine = self._own_values()
        for name in self._acquired_locks:
            self.connection.eval(_RELEASE_OWN, 1, self.get_locking_key(name), *mine)
        self._acquired_locks = set()

    def work(self) -> None:
        # SIGTERM: it stops as asked, releasing its locks. (Linux sends it when the forking *thread* ends: a scheduler
        # revived by the beat thread goes when the beat does, i.e. when the worker stops.)
        _die_with_parent(signal.SIGTERM)
        if os.getppid() != self._worker_pid:  # the worker died before the line above
            return
        super().work()


class AppWorker(Worker):
    """A forking worker; the work horse inherits the app context pushed by `flask worker`."""

    log_result_lifespan = False  # "Result is kept for 500 seconds" after every job: nothing an operator acts on

    def __init__(self, *args, stop_grace: float = STOP_GRACE, heartbeat: int = HEARTBEAT, **kwargs) -> None:
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_monitoring_interval", heartbeat)  # RQ's beat while a job runs (its default: 30 s)
        super().__init__(*args, **kwargs)
        self.stop_grace = stop_grace
        self._main_pid = os.getpid()
        self._job_in_hand: str | None = None
        self._handing_back: str | None = None
        self.push_exc_handler(_abandoned)
        self._host = host_identity()

    def register_birth(self) -> None:  # type: ignore[override]
        super().register_birth()
        started = process_started(os.getpid())
        if self._host is not None and started is not None:  # for another worker to tell that this one died
            self.connection.hset(self.key, mapping={HOST_FIELD: self._host, STARTED_FIELD: started})
        self.connection.hset(self.key, BEAT_FIELD, self.job_monitoring_interval)

    # --- heartbeats ---------------------------------------------------------------------------------------

    def beat_alive(self, pipeline=None) -> None:
        """Say this worker lives, for LAPSE_BEATS beats (`stopped_beating`)."""
        (pipeline or self.connection).set(alive_key(self.name), 1,
                                          px=int(self.job_monitoring_interval * LAPSE_BEATS * 1000))

    def heartbeat(self, timeout=None, pipeline=None):  # type: ignore[override]
        # RQ keeps the worker's record for the beat + 60 s while a job runs: kept at 90 s as with RQ's 30-s beat, so a
        # shorter beat does not lose the record (and this module's fields in it) to a shorter Redis outage.
        return super().heartbeat(max(timeout, RQ_LAPSE) if timeout else timeout, pipeline=pipeline)

    def get_heartbeat_ttl(self, job) -> int:  # type: ignore[override]
        # RQ's lapse is the beat + 60 s, compared on each machine's clock: kept at its 90 s (the fast way to find a
        # dead worker is the alive key, on Redis's clock), whatever the beat.
        remaining = job.timeout - self.current_job_working_time if job.timeout and job.timeout > 0 else RQ_LAPSE
        return int(min(remaining, self.job_monitoring_interval)) + RQ_LAPSE - self.job_monitoring_interval

    def reclaim_in_beat(self, connection) -> list[str]:
        """From the beat thread: the jobs of dead workers, busy or idle (RQ's clean-up runs only between jobs, and an
        idle worker waits up to 405 s for one)."""
        lapsed = []
        for queue in self.queues:
            q = Queue(queue.name, connection=connection)
            if q.acquire_maintenance_lock():
                # RQ's lock lasts 15 minutes: a worker killed while holding it (more likely now that it is taken
                # every few seconds) would stop every clean-up for that long. Ours is done within a second or two.
                connection.expire(q.registry_cleaning_key, 30)
                try:
                    lapsed += reclaim_jobs_of_dead_workers(q, self._exc_handlers, own_name=self.name)
                finally:
                    q.release_maintenance_lock()
        return lapsed

    # --- jobs of a worker that died -------------------------------------------------------------------------

    def clean_registries(self) -> None:  # type: ignore[override]
        """RQ's (rq 2.6), first handing the jobs of a worker known to be dead to RQ's clean-up at once."""
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                try:
                    reclaim_jobs_of_dead_workers(queue, self._exc_handlers, own_name=self.name)
                except Exception:  # the heartbeat still finds them
                    log.exception("could not look for the jobs of dead workers")
                clean_registries(queue, self._exc_handlers)
                worker_registration.clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    def _start_scheduler(self, burst=False, logging_level=None, date_format=None, log_format=None):  # type: ignore[override]
        """RQ's own (rq 2.6), with the scheduler process that dies with this worker."""
        formats = {k: v for k, v in (("date_format", date_format), ("log_format", log_format)) if v is not None}
        self.scheduler = AppScheduler(self.queues, connection=self.connection, serializer=self.serializer,
                                      logging_level=logging_level if logging_level is not None else self.log.level,
                                      **formats)
        self.scheduler.acquire_locks()
        self.scheduler.tried_at_start = True  # from now on revive_scheduler may start it (lock taken elsewhere)
        if self.scheduler.acquired_locks:
            if burst:
                self.scheduler.enqueue_scheduled_jobs()
                self.scheduler.release_locks()
            else:
                self.scheduler.start()

    # --- the job's process ------------------------------------------------------------------------------

    def prepare_execution(self, job):  # type: ignore[override]
        # RQ registers the job as started here and writes the worker's name into the job only in the work horse,
        # after the fork. In between, a rerun still named the worker killed under it, and another worker's beat
        # (reclaim_jobs_of_dead_workers) failed the fresh rerun as abandoned. Named first, registered after.
        self.connection.hset(job.key, "worker_name", self.name)
        return super().prepare_execution(job)

    def main_work_horse(self, job, queue):  # type: ignore[override]
        # RQ gives the horse a process group of its own, so signals to the worker's group miss it: without this it
        # ran its job on, unsupervised, after its worker was killed (and a second worker then ran the same job).
        _die_with_parent(signal.SIGKILL)
        if os.getppid() != self._main_pid:  # the worker died before the line above
            os._exit(1)
        global _tick_in_hand
        _tick_in_hand = job.id.startswith(PERIODIC_PREFIX)  # this process runs this one job, then exits
        return super().main_work_horse(job, queue)

    def execute_job(self, job, queue):  # type: ignore[override]
        self._job_in_hand = job.id
        try:
            self.beat_alive()
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # the job's own bookkeeping needs Redis next: RQ handles that
        try:
            return super().execute_job(job, queue)
        finally:
            self._job_in_hand = self._handing_back = None

    # While a job runs, the worker notes its working time and heartbeat in Redis every job_monitoring_interval
    # seconds. RQ let a Redis that did not answer then (a restart, a fail-over) end the worker ("found an unhandled
    # exception, quitting"), and the job's process died with it, half done. The job now runs on; the next beat
    # tries again.

    def set_current_job_working_time(self, current_job_working_time, pipeline=None) -> None:  # type: ignore[override]
        try:
            super().set_current_job_working_time(current_job_working_time, pipeline=pipeline)
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # only shown in RQ's worker list; maintain_heartbeats says Redis is away

    def maintain_heartbeats(self, job) -> None:  # type: ignore[override]
        try:
            super().maintain_heartbeats(job)
            self.beat_alive()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("heartbeat missed, Redis does not answer: the job runs on", extra={"job_id": job.id,
                                                                                        "error": str(exc)[:200]})

    # --- stopping -----------------------------------------------------------------------------------------

    def request_stop(self, signum, frame):  # type: ignore[override]
        job_id = self._job_in_hand
        super().request_stop(signum, frame)  # idle: raises StopRequested; busy: stops after this job
        if job_id is not None:
            log.info("worker stopping: the job in hand has %s s to finish", self.stop_grace,
                     extra={"job_id": job_id})
            threading.Thread(target=self._cut_off_after_grace, args=(job_id,), name="stop-grace",
                             daemon=True).start()

    def request_force_stop(self, signum, frame):  # type: ignore[override]
        # Asked a second time: hand the job back now instead of killing it and leaving it "started" (RQ's way).
        if self._job_in_hand is not None and self.horse_pid:
            self._cut_off(self._job_in_hand)
            return
        super().request_force_stop(signum, frame)

    def _cut_off_after_grace(self, job_id: str) -> None:
        deadline = time.monotonic() + self.stop_grace
        while self._job_in_hand == job_id and time.monotonic() < deadline:
            time.sleep(0.1)
        while self._job_in_hand == job_id and not self.horse_pid:  # dequeued, its process not forked yet
            time.sleep(0.05)
        if self._job_in_hand == job_id:
            self._cut_off(job_id)

    def _cut_off(self, job_id: str) -> None:
        if self._handing_back == job_id:
            return
        log.warning("worker stopping: handing the unfinished job back to the queue", extra={"job_id": job_id})
        self._handing_back = job_id
        self.kill_horse()  # the monitor loop then sees the horse gone and calls handle_job_failure

    def _hand_back(self, job, queue) -> None:
        """Put a job this worker stopped back at the head of its queue (it was not run to its end)."""
        job.started_at = job.ended_at = None
        with self.connection.pipeline() as pipeline:
            pipeline.multi()  # one transaction: out of "started" and back in the queue, or neither
            self.cleanup_execution(job, pipeline=pipeline)
            queue.enqueue_job(job, pipeline=pipeline, at_front=True)
            pipeline.execute()
        JOBS.labels(job.func_name, "handed_back").inc()
        log.warning("unfinished job handed back to the head of its queue (not failed): the next worker runs it",
                    extra={"job_id": job.id})

    # --- outcomes -----------------------------------------------------------------------------------------

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):  # type: ignore[override]
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        if job.id != self._handing_back:
            allow_one_rerun(job)

    def handle_job_success(self, job, queue, started_job_registry):  # type: ignore[override]
        JOBS.labels(job.func_name, "ok").inc()
        return super().handle_job_success(job, queue, started_job_registry)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string=""):  # type: ignore[override]
        if self._handing_back is not None and job.id == self._handing_back:
            self._hand_back(job, queue)
            return None
        JOBS.labels(job.func_name, "failed").inc()
        return super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                          exc_string=exc_string)

    def revive_scheduler(self) -> None:
        """Start RQ's scheduler process again if it has died (it dies when Redis goes away, even for a restart).
        RQ itself looks only at its maintenance, every 10 minutes: until then no delayed job ran, nor a retry
        (a customer-service reply's retry after 5 s, a reminder). The beat calls this every 15 s."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        # One that ran and ended; or one that never started because another worker held the lock when this one
        # started (that worker was killed since: its lock is taken over, or lapses). Not one being started by work()
        # right now (made, its lock not tried yet, or held with no process yet): started twice, two processes would
        # move the same delayed jobs.
        process = scheduler._process
        never_started = (process is None and getattr(scheduler, "tried_at_start", False)
                         and not scheduler._acquired_locks)
        if (process is not None and process.exitcode is not None) or never_started:
            scheduler.acquire_locks(auto_start=True)  # a scheduler of another worker may hold the lock: fine


def run_worker(queue_names: list[str], *, burst: bool = False) -> bool:
    state = current_app.extensions["wxapp"]
    # A Redis client of the worker's own: RQ waits for a job with a blocking pop of up to 405 s and raises the
    # client's socket timeout for it, but only for connections made after. On the shared client the connection
    # `flask worker` had checked Redis with (10-s timeout) stayed in the pool, the wait took it, and the worker
    # quit ("Redis connection timeout") after 10 quiet seconds. The jobs keep the shared client and its timeout.
    connection = make_redis(state.redis_url)
    queues = [Queue(n, connection=connection) for n in queue_names]
    heartbeat = int(state.settings.extra.get("job_heartbeat", HEARTBEAT))
    worker = AppWorker(queues, connection=connection, heartbeat=heartbeat)
    quiet_ticks()
    log.info("worker starting", extra={"queues": ",".join(queue_names)})
    stop = None
    if not burst:
        from .periodic import start_beat

        def also() -> None:
            worker.revive_scheduler()
            worker.reclaim_in_beat(state.redis)

        stop = start_beat(state.redis, state.queue, interval=min(15.0, heartbeat), also=also)
    try:
        # LOG_LEVEL governs rq's own loggers too (rq sets rq.worker to INFO otherwise).
        return worker.work(burst=burst, with_scheduler=True, logging_level=state.settings.log_level)
    finally:
        if stop is not None:
            stop.set()
        connection.close()
