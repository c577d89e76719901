"""Background jobs on RQ; jobs are enqueued only after the transaction that asked for them commits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from rq import Queue, Retry
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.utils import now
from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_PENDING = "wxapp_pending_jobs"


@dataclass
class _PendingJob:
    queue: Queue
    func: Callable[..., Any] | str
    args: tuple
    kwargs: dict
    options: dict = field(default_factory=dict)
    within: Any = None  # the savepoint it was queued in (None: the outer transaction)


def get_queue(name: str | None = None) -> Queue:
    from flask import current_app

    state = current_app.extensions["wxapp"]
    return state.queue if name is None else Queue(name, connection=state.redis)


def enqueue(func: Callable[..., Any] | str, *args: Any, job_id: str | None = None, delay: float | None = None,
            retries: int = 0, timeout: int | None = None, queue: Queue | None = None, **kwargs: Any) -> Job:
    """Enqueue now. Prefer enqueue_after_commit when the job reads rows this request writes."""
    q = queue or get_queue()
    options: dict[str, Any] = {"job_id": job_id, "job_timeout": timeout or 600, "failure_ttl": 30 * 24 * 3600}
    if retries:
        options["retry"] = Retry(max=retries, interval=[5, 30, 120, 600][:retries] or 30)
    if delay:
        return q.enqueue_in(timedelta(seconds=delay), func, args=args, kwargs=kwargs, **options)
    return q.enqueue(func, args=args, kwargs=kwargs, **options)


def enqueue_after_commit(session: Session, func: Callable[..., Any] | str, *args: Any,
                         job_id: str | None = None, delay: float | None = None, retries: int = 0,
                         timeout: int | None = None, **kwargs: Any) -> None:
    """Enqueue when `session` commits; dropped if it rolls back, so no job ever sees uncommitted data."""
    pending = session.info.setdefault(_PENDING, [])
    pending.append(_PendingJob(get_queue(), func, args, kwargs,
                               {"job_id": job_id, "delay": delay, "retries": retries, "timeout": timeout},
                               within=session.get_nested_transaction()))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released (SQLAlchemy fires after_commit for it too): wait for the real commit
    pending: list[_PendingJob] = session.info.pop(_PENDING, [])
    for job in pending:
        try:
            enqueue(job.func, *job.args, queue=job.queue, **job.options, **job.kwargs)
        except Exception:  # the data is committed; the periodic sweepers (notifications, fan-out, reminders,
            # the SLA tick) pick their work up again; any other lost enqueue is this log line
            log.exception("could not enqueue %s after commit", getattr(job.func, "__name__", job.func))


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:  # the outermost rollback discards all the work
        session.info.pop(_PENDING, None)
    elif session.info.get(_PENDING):  # a savepoint's rollback discards what was queued inside it
        session.info[_PENDING] = [job for job in session.info[_PENDING]
                                  if not _inside(job.within, previous_transaction)]


def _inside(transaction: Any, savepoint: Any) -> bool:
    while transaction is not None:
        if transaction is savepoint:
            return True
        transaction = transaction.parent
    return False


def failed_jobs(limit: int = 50) -> list[dict[str, Any]]:
    """Failed jobs, newest first, for the console and the CLI."""
    q = get_queue()
    registry = FailedJobRegistry(queue=q)
    ids = registry.get_job_ids(0, -1)[-limit:][::-1]
    out = []
    for job in Job.fetch_many(ids, connection=q.connection):
        if job is None:
            continue
        try:
            args = repr(job.args)[:200]
        except Exception:  # pickled from a class a later release renamed or moved: the page must still show
            args = "（参数无法读取：可能由旧版本排队，任务所用的类已更名或移除）"
        out.append({
            "id": job.id,
            "func": _func_name(job),
            "args": args,
            "enqueued_at": job.enqueued_at,
            "ended_at": job.ended_at,
            "error": (job.latest_result().exc_string if job.latest_result() else "")[-2000:],
        })
    return out


def started_jobs(limit: int | None = None) -> list[dict[str, Any]]:
    """Jobs running now, the longest-running first, for the console: what each is, since when, on which worker."""
    q = get_queue()
    # No clean-up from a web request (RQ's would fail the jobs of dead workers without the workers' handlers).
    ids = list(dict.fromkeys(StartedJobRegistry(queue=q).get_job_ids(0, -1, cleanup=False)))
    out = []
    for job in Job.fetch_many(ids, connection=q.connection):
        if job is None:
            continue
        started = job.started_at
        out.append({"id": job.id, "func": _func_name(job), "started_at": started, "worker": job.worker_name or "",
                    "running_for": _duration((now() - started).total_seconds()) if started else ""})
    out.sort(key=lambda j: (j["started_at"] is None, j["started_at"] or now()))
    return out[:limit]


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} 秒"
    if seconds < 3600:
        return f"{seconds // 60} 分钟"
    return f"{seconds // 3600} 小时 {seconds % 3600 // 60} 分钟"


def requeue_failed(job_id: str) -> str:
    """Put a failed job back on its queue; returns its function's name."""
    q = get_queue()
    job = FailedJobRegistry(queue=q).requeue(job_id)
    return _func_name(job)


def _func_name(job: Job) -> str:
    """The job's function; read from its description when its pickled data no longer loads (the function's name
    and arguments are pickled together)."""
    try:
        return job.func_name
    except Exception:
        return (job.description or job.id).split("(", 1)[0][:200]
