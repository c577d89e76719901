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


# ------------------------------------------------------------------------------------ pushes answered inline

PUSH = (b"POST /wechat?signature=s&timestamp=1&nonce=n HTTP/1.1\r\nHost: h\r\nContent-Type: text/xml\r\n"
        b"X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\nContent-Length: 12\r\n\r\n<xml>a</xml>")


def test_a_whole_plain_push_is_read_off_the_front_of_the_bytes():
    req = http_worker.parse_inline(PUSH + b"POST /wechat HTTP/1.1\r\n")  # a pipelined next request stays
    assert req is not None and req.size == len(PUSH)
    assert req.path == b"/wechat" and req.query == b"signature=s&timestamp=1&nonce=n" and req.body == b"<xml>a</xml>"
    assert req.headers == {"HTTP_HOST": "h", "CONTENT_TYPE": "text/xml", "CONTENT_LENGTH": "12",
                           "HTTP_X_FORWARDED_FOR": "1.2.3.4,5.6.7.8"}  # repeated headers joined, as gunicorn does
    assert http_worker.parse_inline(PUSH.replace(b"/wechat", b"/wxa/message", 1)).path == b"/wxa/message"


@pytest.mark.parametrize("data", [
    PUSH[:40],  # the head has not all arrived
    PUSH[:-1],  # nor the body
    PUSH.replace(b"POST", b"GET", 1),
    PUSH.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    PUSH.replace(b"/wechat", b"/wechat/", 1),
    PUSH.replace(b"/wechat", b"/wech%61t", 1),
    PUSH.replace(b"/wechat", b"http://h/wechat", 1),
    PUSH.replace(b"nonce=n", b"nonce=n#f", 1),
    PUSH.replace(b"nonce=n", b"nonce=\x01", 1),
    PUSH.replace(b"Content-Length: 12\r\n", b""),
    PUSH.replace(b"Content-Length: 12\r\n", b"Content-Length: 12\r\nContent-Length: 12\r\n"),
    PUSH.replace(b"Content-Length: 12", b"Content-Length: +12"),
    PUSH.replace(b"Host: h", b"Transfer-Encoding: chunked"),
    PUSH.replace(b"Host: h", b"Expect: 100-continue"),
    PUSH.replace(b"Host: h", b"Connection: close"),
    PUSH.replace(b"Host: h", b"Connection: Upgrade"),
    PUSH.replace(b"Host: h", b"Host: h\r\n folded"),
    PUSH.replace(b"Host: h", b"X_Under: 1"),  # gunicorn drops or refuses names with "_"
    PUSH.replace(b"Host: h", b"Bad Name: 1"),
    PUSH.replace(b"Host: h", b"Host: h\x00"),
    PUSH.replace(b"Host: h", b"Host" + b"h" * 9000),
], ids=["head-partial", "body-partial", "get", "http10", "other-path", "escaped", "absolute", "fragment",
        "control-in-query", "no-length", "two-lengths", "signed-length", "chunked", "expect", "close", "upgrade",
        "folded", "underscore", "space-in-name", "nul-in-value", "long-field"])
def test_anything_unusual_is_left_to_gunicorn(data):
    assert http_worker.parse_inline(data) is None


def test_gunicorns_limits_are_kept():
    assert http_worker.parse_inline(PUSH, max_line=20) is None
    assert http_worker.parse_inline(PUSH, max_fields=4) is None
    assert http_worker.parse_inline(PUSH, max_fields=5) is not None
    assert http_worker.parse_inline(PUSH, max_field=10) is None


def test_the_date_header_is_worked_out_once_a_second(monkeypatch):
    monkeypatch.setattr(http_worker.time, "time", lambda: 1_700_000_000.2)
    first = http_worker.http_date()
    monkeypatch.setattr(http_worker, "formatdate", lambda *a, **k: pytest.fail("formatted again"))
    monkeypatch.setattr(http_worker.time, "time", lambda: 1_700_000_000.9)
    assert http_worker.http_date() == first == "Tue, 14 Nov 2023 22:13:20 GMT"


@pytest.mark.parametrize("line, fields, field", [
    (4094, 100, 8190),  # gunicorn's defaults
    (0, 0, 0),  # "no limit" as configured: gunicorn still caps the header count
    (-1, -1, -1),
    (10_000, 40_000, 20_000),  # past gunicorn's maximums
    (8190, 32768, 10),
    (20, 3, 50),
])
def test_the_inline_limits_are_the_ones_gunicorns_parser_applies(line, fields, field):
    from gunicorn.http.message import Request

    cfg = SimpleNamespace(limit_request_line=line, limit_request_fields=fields, limit_request_field_size=field)
    # The limits gunicorn's own parser works with for this configuration, read off a request it parsed.
    gcfg = SimpleNamespace(
        **vars(cfg), is_ssl=False, proxy_protocol=False, forwarded_allow_ips=["127.0.0.1"],
        secure_scheme_headers={}, forwarder_headers=[], strip_header_spaces=False, permit_obsolete_folding=False,
        casefold_http_method=False, permit_unconventional_http_method=False,
        permit_unconventional_http_version=False, header_map="drop", tolerate_dangerous_framing=False,
    )

    class Unreader:
        def __init__(self):
            self.data = [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]

        def read(self):
            return self.data.pop(0) if self.data else b""

        def unread(self, _):
            pass

    req = Request(gcfg, Unreader(), ("127.0.0.1", 1))
    assert http_worker.inline_limits(cfg) == (
        req.limit_request_line, req.limit_request_fields, req.limit_request_field_size
    )
