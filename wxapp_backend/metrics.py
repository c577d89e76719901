"""Prometheus metrics: requests, latencies, jobs and WeChat API calls (multiprocess-aware under gunicorn)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REQUESTS = Counter("http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram("http_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOBS = Counter("jobs_total", "Background jobs by outcome", ["func", "outcome"])
WECHAT_CALLS = Counter("wechat_api_calls_total", "WeChat API calls", ["api", "errcode"])
WECHAT_LATENCY = Histogram("wechat_api_seconds", "WeChat API call latency", ["api"])
QUEUE_DEPTH = Gauge("job_queue_depth", "Jobs waiting and failed", ["state"], multiprocess_mode="livemax")


def render() -> tuple[bytes, str]:
    """The exposition text; aggregates all gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
