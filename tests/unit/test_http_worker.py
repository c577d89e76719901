"""The gunicorn worker that spreads keep-alive connections evenly (wxapp_backend/http_worker.py): the accept
rule, the shared rows kept by the master, and the poller's pause of the listening socket."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest

from wxapp_backend import http_worker
from wxapp_backend.http_worker import SLACK, STALE, WIDTH, _Selector, assign_slot, release_slot, should_accept

NOW = 10**12  # a fixed monotonic_ns for the rule; every row's heartbeat is fresh unless a test says otherwise


def _rows(*rows: tuple[int, ...]) -> list[int]:
    flat = [0] * (WIDTH * 8)
    for i, (pid, conns, *beat) in enumerate(rows):
        flat[WIDTH * i], flat[WIDTH * i + 1], flat[WIDTH * i + 2] = pid, conns, (beat[0] if beat else NOW)
    return flat


def _accepts(rows: list[int], slot: int) -> bool:
    return should_accept(rows, slot, now_ns=NOW)


def test_the_least_loaded_process_always_accepts():
    rows = _rows((101, 7), (102, 3), (103, 9))
    assert _accepts(rows, 1)


def test_a_process_within_the_slack_accepts_and_one_beyond_it_leaves_the_connection():
    rows = _rows((101, 3 + SLACK - 1), (102, 3), (103, 3 + SLACK))
    assert _accepts(rows, 0)
    assert not _accepts(rows, 2)  # negative control: the rule does refuse


def test_rows_of_dead_or_unborn_workers_do_not_count():
    rows = _rows((101, 10), (0, 0), (102, 10))  # row 1 is free (pid 0): its zero is no one's load
    assert _accepts(rows, 0)
    rows = _rows((101, 10), (103, 0), (102, 10))  # negative control: a live process with none
    assert not _accepts(rows, 0)


def test_a_spread_reached_by_the_rule_never_exceeds_the_slack():
    """Connections arrive one by one; each goes to the first process (in a shuffled order) the rule lets
    accept, as the processes race for it. Whatever the order, loads stay within SLACK of each other."""
    import random

    rng = random.Random(5)
    rows = _rows(*((200 + i, 0) for i in range(4)))
    for _ in range(200):
        order = rng.sample(range(4), 4)
        taker = next(i for i in order if _accepts(rows, i))
        rows[WIDTH * taker + 1] += 1
        loads = [rows[WIDTH * i + 1] for i in range(4)]
        assert max(loads) - min(loads) <= SLACK
    # negative control: without the rule the same race piles connections up unevenly
    rows = _rows(*((200 + i, 0) for i in range(4)))
    for _ in range(200):
        rows[WIDTH * rng.sample(range(4), 4)[0] + 1] += 1
    loads = [rows[WIDTH * i + 1] for i in range(4)]
    assert max(loads) - min(loads) > SLACK


def test_a_process_whose_heartbeat_stopped_does_not_hold_the_others_back():
    stale = NOW - int((STALE + 1) * 1e9)
    rows = _rows((101, 10), (102, 0, stale), (103, 10))  # 102 is hung (no turn of its loop for STALE + 1 s)
    assert _accepts(rows, 0)
    rows = _rows((101, 10), (102, 0, NOW - int((STALE - 1) * 1e9)), (103, 10))  # negative control: alive
    assert not _accepts(rows, 0)


def test_only_rows_within_the_span_are_read():
    rows = _rows((101, 10), (102, 10), (103, 0))
    assert should_accept(rows, 0, now_ns=NOW, span=2)  # row 2 was never handed out as far as the span says
    assert not should_accept(rows, 0, now_ns=NOW, span=3)  # negative control: within the span it counts


def test_the_master_gives_each_worker_a_free_row_and_clears_it_when_the_worker_exits(monkeypatch):
    rows = [0] * (WIDTH * http_worker.SLOTS)
    span = [0]
    monkeypatch.setattr(http_worker, "_ROWS", rows)
    monkeypatch.setattr(http_worker, "_SPAN", span)
    server = SimpleNamespace(WORKERS={})
    workers = []
    for pid in (11, 12, 13):
        w = SimpleNamespace()
        assign_slot(server, w)
        server.WORKERS[pid] = w
        workers.append(w)
    assert [w.wxapp_slot for w in workers] == [0, 1, 2]
    assert span == [3]  # the rows a worker reads
    rows[WIDTH:2 * WIDTH] = [12, 40, NOW]  # worker 12 running with 40 connections
    release_slot(server, workers[1])
    del server.WORKERS[12]
    assert rows[WIDTH:2 * WIDTH] == [0, 0, 0]
    again = SimpleNamespace()
    assign_slot(server, again)
    assert again.wxapp_slot == 1  # the freed row is reused
    assert span == [3]


def test_a_paused_listener_is_not_polled_until_the_pause_is_over(monkeypatch):
    monkeypatch.setattr(http_worker, "PAUSE", 0.05)
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    client = socket.create_connection(listener.getsockname())
    poller = _Selector()
    poller.lock = threading.RLock()
    try:
        poller.register(listener, 1, "accept")
        assert [key.data for key, _ in poller.select(1.0)] == ["accept"]  # a connection waits
        poller.pause(listener)
        started = time.monotonic()
        assert poller.select(0.01) == []  # left out: not reported although still waiting
        events = poller.select(1.0)  # the timeout is cut to the pause's end, and the listener is back
        assert [key.data for key, _ in events] == ["accept"]
        assert 0.03 <= time.monotonic() - started < 0.5
    finally:
        client.close()
        poller.close()
        listener.close()


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_a_pause_shortens_any_longer_wait(monkeypatch, timeout):
    monkeypatch.setattr(http_worker, "PAUSE", 0.02)
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    poller = _Selector()
    poller.lock = threading.RLock()
    try:
        poller.register(listener, 1, "accept")
        poller.pause(listener)
        started = time.monotonic()
        assert poller.select(timeout) == []  # nothing to report, but the wait ends with the pause
        assert time.monotonic() - started < 1.0
        assert poller.get_key(listener).data == "accept"  # registered again
    finally:
        poller.close()
        listener.close()
