"""Prometheus metrics: requests, latencies, jobs and WeChat API calls (multiprocess-aware under gunicorn)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

REQUESTS = Counter("http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram("http_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOBS = Counter("jobs_total", "Background jobs by outcome", ["func", "outcome"])
WECHAT_CALLS = Counter("wechat_api_calls_total", "WeChat API calls", ["api", "errcode"])
WECHAT_LATENCY = Histogram("wechat_api_seconds", "WeChat API call latency", ["api"])


class LiveCollector:
    """What is read at scrape time: the queue depths, and whether the database and Redis answer. A gauge kept
    per process showed the largest depth any web process had ever read (a drained queue stayed "full"), and
    the last one read before Redis went down; unknown depths are now NaN, with `dependency_up` 0."""

    def __init__(self, check_db: Callable[[], None], redis_client: Any, queue: Any) -> None:
        self.check_db, self.redis, self.queue = check_db, redis_client, queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("dependency_up", "Whether the database and Redis answer (1) or not (0)",
                               labels=["part"])
        depth = GaugeMetricFamily("job_queue_depth", "Jobs waiting and failed", labels=["state"])
        try:
            self.check_db()
            up.add_metric(["db"], 1)
        except Exception:  # any failure means it does not answer
            up.add_metric(["db"], 0)
        try:
            counts = {"queued": self.queue.count, "failed": self.queue.failed_job_registry.count,
                      "scheduled": self.queue.scheduled_job_registry.count}
            up.add_metric(["redis"], 1)
        except redis.RedisError:
            counts = dict.fromkeys(("queued", "failed", "scheduled"), math.nan)
            up.add_metric(["redis"], 0)
        for state, count in counts.items():
            depth.add_metric([state], count)
        yield up
        yield depth


def render(live: LiveCollector | None = None) -> tuple[bytes, str]:
    """The exposition text; aggregates all gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set, and adds
    what `live` reads now."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    body = generate_latest(registry)
    if live is not None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(live)
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST
