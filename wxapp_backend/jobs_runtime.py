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


def run_worker(queue_names: list[str], *, burst: bool = False) -> bool:
    state = current_app.extensions["wxapp"]
    queues = [Queue(n, connection=state.redis) for n in queue_names]
    worker = AppWorker(queues, connection=state.redis)
    log.info("worker starting", extra={"queues": ",".join(queue_names)})
    stop = None
    if not burst:
        from .periodic import start_beat

        stop = start_beat(state.redis, state.queue)
    try:
        # LOG_LEVEL governs rq's own loggers too (rq sets rq.worker to INFO otherwise).
        return worker.work(burst=burst, with_scheduler=True, logging_level=state.settings.log_level)
    finally:
        if stop is not None:
            stop.set()
