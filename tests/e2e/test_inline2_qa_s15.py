"""Adversarial checks of the inline push path (wxapp_backend/http_worker.py) against a real gunicorn: slow readers,
split and broken requests, limits, failures after the application returned, graceful stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time

import pytest

from tests.e2e.test_http_worker_balance import _gunicorn
from tests.e2e.test_http_worker_inline import APP_HEAD, _push, _read, _send_late

pytestmark = pytest.mark.e2e

APP = APP_HEAD + '''

def app(environ, start_response):
    if environ["PATH_INFO"] == "/":
        return pid_answer(start_response)
    query = environ["QUERY_STRING"]
    data = environ["wsgi.input"].read()
    if query == "big":
        body = b"x" * (16 * 1024 * 1024)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if query == "nolength":  # no Content-Length: the server frames the answer
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no", b"length"]
    if query == "text":  # an application bug: a str chunk
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return ["ok"]

    def respond():
        if query == "defer-text":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return ["ok"]
        if query == "defer-slow":
            time.sleep(2)
        info = {"pid": os.getpid(), "inline": DEFER_KEY in environ, "thread": threading.current_thread().name,
                "body": data.decode("utf-8"), "x": environ.get("HTTP_X_TEST"),
                "scheme": environ["wsgi.url_scheme"]}
        body = json.dumps(info).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    if query.startswith("defer") and DEFER_KEY in environ:
        return Deferred(respond)
    return respond()


app.extensions = {}
'''


@pytest.fixture(params=["on", "off"])
def server(request, tmp_path):
    extra = {} if request.param == "on" else {"WEB_INLINE_PUSHES": "0"}
    with _gunicorn(tmp_path, 1, app=APP, env_extra=extra) as (proc, port, socks):
        yield request.param == "on", port, socks, proc


def _send_whole_or_late(port: int, socks: list, request: bytes, late: bool) -> socket.socket:
    """`request` on a new connection: whole (the inline path), or its last bytes 0.3 s later (gunicorn's path)."""
    sock = _connect(port, socks)
    if late:
        return _send_late(sock, request)
    sock.sendall(request)
    return sock


def _connect(port: int, socks: list, timeout: float = 10, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    socks.append(sock)
    return sock


def _json(sock: socket.socket, request: bytes) -> tuple[dict, dict, str]:
    sock.sendall(request)
    headers, body, status = _read(sock)
    return headers, json.loads(body), status


def _worker_pid(port: int, socks: list) -> int:
    sock = _connect(port, socks)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return int(_read(sock)[1])


def test_a_client_that_never_reads_a_large_answer_does_not_stall_the_poller(server):
    """The answer does not fit the socket buffers and its client reads nothing: other connections are still
    served at once (the rest of the write is not waited for in the poller's thread), and the slow client gets
    its whole answer, on a connection still usable, once it reads."""
    inline, port, socks, _ = server
    slow = _connect(port, socks, rcvbuf=4096)
    slow.sendall(_push("/wechat?big"))
    time.sleep(0.5)
    other = _connect(port, socks, timeout=3)
    started = time.monotonic()
    _, info, _ = _json(other, _push(body="别人"))
    assert info["body"] == "别人" and time.monotonic() - started < 2
    assert info["inline"] is inline
    headers, body, status = _read(slow)
    assert " 200 " in status and len(body) == 16 * 1024 * 1024 and body == b"x" * len(body)
    _, again, _ = _json(slow, _push(body="还在"))
    assert again["body"] == "还在"


def test_a_request_split_at_every_byte_is_answered(server):
    inline, port, socks, _ = server
    request = _push(body="<xml>拆开</xml>").replace(b"X-Test: t", "X-Test: 分开".encode())
    sock = _connect(port, socks)
    for cut in range(1, len(request)):
        if cut % 7 == 0:  # now and then a fresh connection (never answered inline before) too
            sock = _connect(port, socks)
        sock.sendall(request[:cut])
        time.sleep(0.005)
        sock.sendall(request[cut:])
        headers, body, status = _read(sock)
        assert " 200 " in status, (cut, status)
        info = json.loads(body)
        assert info["body"] == "<xml>拆开</xml>" and info["x"].encode("latin-1").decode("utf-8") == "分开", cut


def test_non_ascii_header_values_are_the_same_inline_and_through_gunicorn(tmp_path):
    with _gunicorn(tmp_path, 1, app=APP) as (_, port, socks):
        request = _push().replace(b"X-Test: t", b"X-Test: \xe4\xbd\xa0\xff ok")
        inline = _json(_connect(port, socks), request)[1]
        gunicorn = json.loads(_read(_send_late(_connect(port, socks), request))[1])
        assert inline["inline"] is True and gunicorn["inline"] is False
        assert inline["x"] == gunicorn["x"] == "\xe4\xbd\xa0\xff ok"


@pytest.mark.parametrize("size", [8186, 8187, 8188, 8189, 8190, 8191])
def test_a_header_line_at_gunicorns_field_limit_is_judged_as_gunicorn_does(tmp_path, size):
    """gunicorn counts a header line's CRLF against limit_request_field_size (8190 by default)."""
    with _gunicorn(tmp_path, 1, app=APP) as (_, port, socks):
        line = "X-Pad: " + "a" * (size - len("X-Pad: "))
        request = _push(extra=line + "\r\n")
        answers = []
        for late in (False, True):
            answers.append(_read(_send_whole_or_late(port, socks, request, late))[2].split(" ")[1])
        assert answers[0] == answers[1], answers
        assert answers[0] == ("200" if size + 2 <= 8190 else "431")


@pytest.mark.parametrize("query", ["text", "defer-text"])
def test_an_answer_that_fails_after_the_application_returned_leaves_the_worker_serving(server, query):
    """A str chunk (an application bug) fails the answer after the application returned: the connection is
    closed (gunicorn's path has sent its head by then; inline, nothing is sent yet and the answer is a bare 500),
    and the worker process goes on."""
    inline, port, socks, _ = server
    pid = _worker_pid(port, socks)
    sock = _connect(port, socks)
    sock.sendall(_push(f"/wechat?{query}"))
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data.startswith(b"HTTP/1.1 500" if inline else b"HTTP/1.1 200"), data
    assert _worker_pid(port, socks) == pid


def test_garbage_half_requests_and_resets_leave_the_worker_serving(server):
    inline, port, socks, _ = server
    pid = _worker_pid(port, socks)
    junk = [b"\x00\xff garbage\r\n\r\n", b"POST /wechat HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST /wechat HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
            b"POST /wechat HTTP/1.1\r\nHost: x\r\n", _push()[:-4]]
    for data in junk:
        sock = _connect(port, socks)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # a half request then the client's end closed
    request = _push(body="abcdefghij")
    sock = _connect(port, socks)
    sock.sendall(request.replace(b"Content-Length: 10", b"Content-Length: 99"))  # more declared than sent
    sock.close()
    for _ in range(20):  # a whole push, then a reset before the answer is read
        sock = _connect(port, socks)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(_push("/wechat?big" if _ % 2 else "/wechat"))
        sock.close()
    time.sleep(0.5)
    assert _worker_pid(port, socks) == pid
    _, info, _ = _json(_connect(port, socks), _push())
    assert info["inline"] is inline


def test_an_idle_connection_is_closed_after_the_keepalive_time(server):
    inline, port, socks, _ = server
    sock = _connect(port, socks, timeout=12)
    _json(sock, _push())
    started = time.monotonic()
    assert sock.recv(1) == b""
    assert 4.5 < time.monotonic() - started < 8


def test_sigterm_while_a_deferred_answer_runs_still_delivers_it(server):
    inline, port, socks, _ = server
    pid = _worker_pid(port, socks)
    sock = _connect(port, socks)
    sock.sendall(_push("/wechat?defer-slow", body="慢"))
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    headers, body, status = _read(sock)
    assert " 200 " in status and json.loads(body)["body"] == "慢"


@pytest.mark.parametrize("extra,status,scheme", [
    ("X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\n", "200", "https"),
    ("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n", "200", "https"),
    ("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n", "400", None),  # gunicorn: InvalidSchemeHeaders
    ("X-Forwarded-Proto: https,http\r\n", "200", "http"),
], ids=["twice", "agree", "conflict", "list"])
def test_a_trusted_proxys_scheme_headers_are_judged_as_gunicorn_does(tmp_path, extra, status, scheme):
    with _gunicorn(tmp_path, 1, app=APP) as (_, port, socks):
        request = _push(extra=extra)
        answers = []
        for late in (False, True):
            headers, body, line = _read(_send_whole_or_late(port, socks, request, late))
            answers.append((line.split(" ")[1], json.loads(body)["scheme"] if " 200 " in line else None))
        assert answers == [(status, scheme)] * 2


def test_a_unix_socket_peers_scheme_header_is_trusted_as_gunicorn_does():
    """gunicorn trusts the scheme headers of any peer that is not an (address, port) pair (a UNIX socket's),
    whatever FORWARDED_ALLOW_IPS says."""
    from types import SimpleNamespace

    from gunicorn.config import Config

    from wxapp_backend.http_worker import BalancedThreadWorker, parse_inline

    worker = object.__new__(BalancedThreadWorker)
    worker.cfg = Config()
    worker.cfg.set("forwarded_allow_ips", "10.0.0.1")
    req = parse_inline(_push(extra="X-Forwarded-Proto: https\r\n"))
    unix = worker._environ(SimpleNamespace(client="", server="/tmp/app.sock", sock=None), req)
    tcp = worker._environ(SimpleNamespace(client=("127.0.0.1", 5000), server=("127.0.0.1", 80), sock=None), req)
    assert unix["wsgi.url_scheme"] == "https" and tcp["wsgi.url_scheme"] == "http"


def test_many_connections_pushing_at_once_are_all_answered(server):
    inline, port, socks, _ = server
    conns = [_connect(port, socks) for _ in range(300)]
    for i, sock in enumerate(conns):
        sock.sendall(_push("/wechat?defer" if i % 3 == 0 else "/wechat", body=f"第{i}条"))
    for i, sock in enumerate(conns):
        headers, body, status = _read(sock)
        info = json.loads(body)
        assert " 200 " in status and info["body"] == f"第{i}条" and info["inline"] is inline
        assert headers["connection"] == "keep-alive"
    for i, sock in enumerate(conns[:50]):  # each still usable
        assert _json(sock, _push(body=str(i)))[1]["body"] == str(i)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_a_push_at_the_peek_size_is_answered_whole(tmp_path, delta):
    """A request of exactly PEEK bytes is answered inline, one byte more takes gunicorn's path (the default
    WEBHOOK_MAX_BODY, 256 KiB, is above PEEK: a body at or over it never meets the inline path)."""
    from wxapp_backend.http_worker import PEEK

    with _gunicorn(tmp_path, 1, app=APP) as (_, port, socks):
        head = len(_push(body=""))
        size = PEEK - head - len(str(PEEK)) + 1 + delta  # Content-Length's digits grow from 1 to 5
        request = _push(body="a" * size)
        assert len(request) == PEEK + delta
        _, info, _ = _json(_connect(port, socks), request)
        assert info["body"] == "a" * size
        if delta > 0:  # (at or under PEEK it is inline when it arrived in one piece before the poller looked)
            assert info["inline"] is False


def test_an_inline_answer_without_content_length_is_framed_and_the_connection_stays_usable(tmp_path):
    with _gunicorn(tmp_path, 1, app=APP) as (_, port, socks):
        sock = _connect(port, socks, timeout=3)
        sock.sendall(_push("/wechat?nolength"))
        headers, body, status = _read(sock)
        assert " 200 " in status and headers.get("content-length") == "8" and body == b"nolength"
        _, info, _ = _json(sock, _push(body="下一条"))
        assert info["body"] == "下一条" and info["inline"] is True
