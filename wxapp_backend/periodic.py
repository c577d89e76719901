"""Periodic jobs: every worker runs a small beat; a Redis key per time slot makes each run happen once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from rq import Queue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    name: str
    every: int  # seconds
    func: str  # import path of a job that takes no arguments and is safe to run twice


PERIODIC: list[Periodic] = []


def register_periodic(name: str, every: int, func: str) -> None:
    """Run `func` every `every` seconds somewhere in the cluster (domains call this at import)."""
    if all(p.name != name for p in PERIODIC):
        PERIODIC.append(Periodic(name, every, func))


def beat_once(r: redis.Redis, queue: Queue, now: float | None = None) -> list[str]:
    """Enqueue every periodic job whose current slot has not been claimed yet; returns the names enqueued."""
    now = time.time() if now is None else now
    started = []
    for p in PERIODIC:
        slot = int(now // p.every)
        # Whoever sets the slot's key first enqueues; every other beat (other workers, other machines) skips.
        key = f"beat:{p.name}:{slot}"
        if r.set(key, "1", nx=True, ex=max(p.every * 2, 60)):
            try:
                queue.enqueue(p.func, job_id=f"periodic-{p.name}-{slot}", job_timeout=max(p.every, 300),
                              failure_ttl=7 * 24 * 3600)
            except Exception:
                # Give the slot back, so the next beat (here or on another worker) enqueues it instead of every
                # beat skipping a slot whose job never reached the queue.
                try:
                    r.delete(key)
                except redis.RedisError:
                    pass  # Redis is down: the key expires, and the next slot runs
                raise
            started.append(p.name)
    return started


def start_beat(r: redis.Redis, queue: Queue, interval: float = 15.0,
               also: Callable[[], None] | None = None) -> threading.Event:
    """A daemon thread calling beat_once (and `also`) every `interval` seconds; set the returned event to stop
    it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                beat_once(r, queue)
                if also is not None:
                    also()
            except redis.RedisError:
                log.warning("beat: redis unavailable, will retry")
            except Exception:
                log.exception("beat failed")
            stop.wait(interval)

    threading.Thread(target=loop, name="periodic-beat", daemon=True).start()
    return stop
