"""The RQ worker process: runs jobs inside the application context and counts them in /metrics."""

from __future__ import annotations

import logging

from flask import current_app
from rq import Queue, Worker

from .metrics import JOBS

log = logging.getLogger(__name__)


class AppWorker(Worker):
    """A forking worker; the work horse inherits the app context pushed by `flask worker`."""

    def handle_job_success(self, job, queue, started_job_registry):  # type: ignore[override]
        JOBS.labels(job.func_name, "ok").inc()
        return super().handle_job_success(job, queue, started_job_registry)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string=""):  # type: ignore[override]
        JOBS.labels(job.func_name, "failed").inc()
        return super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                          exc_string=exc_string)

    def revive_scheduler(self) -> None:
        """Start RQ's scheduler process again if it has died (it dies when Redis goes away, even for a restart).
        RQ itself looks only at its maintenance, every 10 minutes: until then no delayed job ran, nor a retry
        (a customer-service reply's retry after 5 s, a reminder). The beat calls this every 15 s."""
        scheduler = self.scheduler
        # Only one that ran and ended: one being started by work() right now has no exit code yet.
        process = scheduler._process if scheduler is not None else None
        if process is not None and process.exitcode is not None:
            scheduler.acquire_locks(auto_start=True)  # a scheduler of another worker may hold the lock: fine


def run_worker(queue_names: list[str], *, burst: bool = False) -> bool:
    state = current_app.extensions["wxapp"]
    queues = [Queue(n, connection=state.redis) for n in queue_names]
    worker = AppWorker(queues, connection=state.redis)
    log.info("worker starting", extra={"queues": ",".join(queue_names)})
    stop = None
    if not burst:
        from .periodic import start_beat

        stop = start_beat(state.redis, state.queue, also=worker.revive_scheduler)
    try:
        # LOG_LEVEL governs rq's own loggers too (rq sets rq.worker to INFO otherwise).
        return worker.work(burst=burst, with_scheduler=True, logging_level=state.settings.log_level)
    finally:
        if stop is not None:
            stop.set()
