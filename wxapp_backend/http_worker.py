"""gunicorn's threaded worker, with keep-alive connections spread evenly over the worker processes.

With the stock gthread worker every process polls the shared listening socket and whichever wakes first
accepts; a keep-alive connection then stays with that process for its whole life. When many connections
open at once (WeChat's servers after a lull, a load balancer's pool), the split is left to chance (30
connections on 3 processes landed 19 / 8 / 3 in the negative-control test), and the clients on a crowded
process wait while the others idle: at 50 closed-loop clients the full webhook's p99 was 96-149 ms with the
stock worker and 66-95 ms with this one (docs/bench/webhook.md, session 4). Here each process publishes how many
connections it holds in a small table shared by every process of the server (an anonymous shared mapping
made by the master before it forks), and a process holding `SLACK` or more connections than the least
loaded live process leaves a waiting connection to the others: it stops polling the listener for a moment
(`PAUSE` seconds) instead of accepting. The least loaded process always accepts, so nothing waits on a
decision. A process counts only while it is alive and its main loop is turning: a process leaves the table
as soon as it stops accepting (gunicorn sets `alive` to False on SIGTERM, SIGQUIT, SIGINT, SIGABRT and after
max_requests; it may then finish its requests for up to graceful_timeout), the master clears the row of a
process that exited (`release_slot`, from `child_exit`), and a row whose heartbeat (written on every turn of
the loop, which turns at least once a second) is older than `STALE` seconds is ignored, so a hung process
cannot hold the others back.

Everything else is gunicorn 23's ThreadWorker as it is.
"""

from __future__ import annotations

import mmap
import os
import selectors
import time

from gunicorn import glogging
from gunicorn.workers.gthread import ThreadWorker

SLOTS = 256  # worker processes one server can have at once (gunicorn's own limit is far above real use)
SLACK = 2  # accept while holding fewer than (least loaded live process + SLACK) connections
PAUSE = 0.0005  # seconds a process that left a connection to the others stops polling the listener
STALE = 3.0  # seconds without a heartbeat after which a process no longer counts
WIDTH = 3  # native 64-bit integers per row: pid, connections, heartbeat (time.monotonic_ns())
PID, CONNS, BEAT = range(WIDTH)  # a row's fields

# One row per worker slot. Made at import, which happens in the master when gunicorn loads the worker class,
# so every forked worker shares the same pages. CLOCK_MONOTONIC is one clock for every process.
_TABLE = mmap.mmap(-1, SLOTS * WIDTH * 8)
_ROWS = memoryview(_TABLE).cast("q")
# How many rows have ever been handed out (the master's high-water mark): the rows a worker has to read.
_SPAN = memoryview(mmap.mmap(-1, 8)).cast("q")


def _clear(rows, slot: int) -> None:
    for i in range(WIDTH):
        rows[WIDTH * slot + i] = 0


def assign_slot(server, worker) -> None:
    """Master, before forking `worker` (gunicorn's pre_fork hook): give it the lowest free row."""
    taken = {getattr(w, "wxapp_slot", None) for w in server.WORKERS.values()}
    worker.wxapp_slot = next((i for i in range(SLOTS) if i not in taken), None)
    if worker.wxapp_slot is not None:
        _clear(_ROWS, worker.wxapp_slot)
        _SPAN[0] = max(_SPAN[0], worker.wxapp_slot + 1)


def release_slot(server, worker) -> None:
    """Master, after `worker` exited (gunicorn's child_exit hook): its connections are gone."""
    slot = getattr(worker, "wxapp_slot", None)
    if slot is not None:
        _clear(_ROWS, slot)


def should_accept(rows, slot: int, slack: int = SLACK, now_ns: int | None = None, span: int | None = None) -> bool:
    """May the process in row `slot` accept one more connection? Yes while it holds fewer than the least
    loaded live process (pid != 0, heartbeat younger than STALE) among the first `span` rows (default: all)
    plus `slack`; the least loaded process itself always may."""
    mine = rows[WIDTH * slot + CONNS]
    least = mine
    oldest = (time.monotonic_ns() if now_ns is None else now_ns) - int(STALE * 1e9)
    for i in range(0, WIDTH * span if span else len(rows), WIDTH):
        if rows[i + PID] and rows[i + CONNS] < least and rows[i + BEAT] >= oldest:
            least = rows[i + CONNS]
    return mine < least + slack


class _Selector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """The worker's poller, able to leave the listening sockets out for a moment."""

    def __init__(self) -> None:
        super().__init__()
        self.paused: list[tuple] = []  # (fileobj, events, data) of listeners taken out
        self.resume_at = 0.0
        self.lock = None  # the worker's lock around poller changes (set by the worker)

    def pause(self, fileobj) -> None:
        key = self.get_key(fileobj)
        with self.lock:
            self.unregister(fileobj)
        self.paused.append((key.fileobj, key.events, key.data))
        self.resume_at = time.monotonic() + PAUSE

    def select(self, timeout=None):
        if not self.paused:
            return super().select(timeout)
        left = self.resume_at - time.monotonic()
        if left > 0:
            events = super().select(left if timeout is None else min(timeout, left))
            if events or time.monotonic() < self.resume_at:
                return events
        # The pause is over: the listeners are polled again, without waiting past the pause's end (the
        # worker's loop calls again at once, and any connection that waited all along is reported now).
        with self.lock:
            for fileobj, events, data in self.paused:
                self.register(fileobj, events, data)
        self.paused = []
        return super().select(0)


class BalancedThreadWorker(ThreadWorker):
    """gthread with even keep-alive connections (see the module's docstring)."""

    _conns = 0
    _alive = True

    @property
    def alive(self) -> bool:  # type: ignore[override]
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        self._alive = value
        if not value:
            self._publish(PID, 0)  # stopping: it accepts nothing more, so its load no longer counts

    @property
    def nr_conns(self) -> int:  # type: ignore[override]
        return self._conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._conns = value
        self._publish(CONNS, value)

    def _publish(self, field: int, value: int) -> None:
        """Write one field of this process's row (nothing for a worker the master gave no row)."""
        slot = getattr(self, "wxapp_slot", None)
        if slot is not None:
            _ROWS[WIDTH * slot + field] = value

    def notify(self) -> None:
        """gunicorn's heartbeat to the master, once per turn of the main loop; also ours to the others."""
        super().notify()
        self._publish(BEAT, time.monotonic_ns())

    def run(self) -> None:
        if self.alive:  # the pid last: the others never see a live row with stale fields
            self._publish(CONNS, self._conns)
            self._publish(BEAT, time.monotonic_ns())
            self._publish(PID, os.getpid())
        poller = _Selector()
        poller.lock = self._lock
        self.poller.close()
        self.poller = poller
        super().run()

    def accept(self, server, listener) -> None:
        slot = getattr(self, "wxapp_slot", None)
        if not self.alive or (slot is not None and not should_accept(_ROWS, slot, span=_SPAN[0])):
            # Stopping (a signal can land while the loop waits in select, and gthread would still accept
            # and then drop the connection when it exits), or another process is less loaded: leave it.
            self.poller.pause(listener)
            return
        super().accept(server, listener)


class JsonLogger(glogging.Logger):
    """gunicorn's own log lines as the application's JSON (LOG_JSON); set as `logger_class` in gunicorn.conf.py."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        from .logs import JsonFormatter

        formatter = JsonFormatter()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)
