"""Pushes answered in the worker's poller thread (wxapp_backend/http_worker.py): a whole, plain HTTP/1.1 POST to a
push route is read and answered by the main loop; a `Deferred` answer is finished on a pool thread; everything
unusual takes gunicorn's own path, and `WEB_INLINE_PUSHES=0` turns the inline path off (the negative control of
every "inline" assertion below)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.e2e.test_http_worker_balance import _gunicorn

pytestmark = pytest.mark.e2e

# The test apps' common head: imports and the balance helper's probe (GET / answers the worker's pid).
APP_HEAD = '''
import json
import os
import threading
import time

from wxapp_backend.http import DEFER_KEY, Deferred


def pid_answer(start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

APP = APP_HEAD + '''

def app(environ, start_response):
    if environ["PATH_INFO"] == "/":
        return pid_answer(start_response)
    if environ["QUERY_STRING"] == "boom":
        raise RuntimeError("boom")
    if environ["QUERY_STRING"] == "boom-later":  # fails while its body is being read
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (str(1 / 0).encode() for _ in range(1))
    info = {"pid": os.getpid(), "thread": threading.current_thread().name, "inline": DEFER_KEY in environ,
            "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
            "body": environ["wsgi.input"].read().decode("utf-8"), "type": environ.get("CONTENT_TYPE"),
            "x": environ.get("HTTP_X_TEST"), "scheme": environ["wsgi.url_scheme"],
            "remote": environ.get("REMOTE_ADDR"),
            "env": {k: repr(v) for k, v in environ.items() if k.isupper() and k not in ("REMOTE_PORT", "RAW_URI")}
                   | {k: repr(environ.get(k)) for k in ("wsgi.url_scheme", "wsgi.multiprocess", "wsgi.version",
                                                        "wsgi.run_once", "wsgi.input_terminated")}}

    def respond():
        info["finished_in"] = threading.current_thread().name
        body = json.dumps(info).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    if environ["QUERY_STRING"].startswith("defer") and DEFER_KEY in environ:
        return Deferred(respond)
    return respond()


app.extensions = {}
'''


_READERS: dict[int, object] = {}


def _read(sock: socket.socket) -> tuple[dict[str, str], bytes, str]:
    """One response: (headers with lower-case names, body, status line). Buffered per socket: several responses
    may arrive in one segment."""
    rfile = _READERS.get(id(sock))
    if rfile is None or rfile.raw._sock is not sock:  # type: ignore[attr-defined]
        rfile = _READERS[id(sock)] = sock.makefile("rb")
    status = rfile.readline().decode("latin-1").rstrip("\r\n")
    if not status:
        raise ConnectionError("closed")
    headers: dict[str, str] = {}
    while (line := rfile.readline().decode("latin-1").rstrip("\r\n")):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = rfile.read(int(headers.get("content-length", "0")))
    return headers, body, status


def _send_late(sock: socket.socket, request: bytes) -> socket.socket:
    """Send `request` with its last bytes 0.3 s after the rest: the poller sees it incomplete, gunicorn's path reads it."""
    sock.sendall(request[:-3])
    time.sleep(0.3)
    sock.sendall(request[-3:])
    return sock


def _closed(sock: socket.socket) -> bool:
    return _READERS[id(sock)].read(1) == b""  # type: ignore[attr-defined]


def _push(path: str = "/wechat?signature=s&nonce=n", body: str = "<xml>你好</xml>", extra: str = "") -> bytes:
    raw = body.encode("utf-8")
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nX-Test: t\r\n{extra}"
            f"Content-Length: {len(raw)}\r\n\r\n").encode("latin-1") + raw


def _ask(sock: socket.socket, request: bytes) -> tuple[dict, dict]:
    sock.sendall(request)
    headers, body, status = _read(sock)
    assert status.startswith("HTTP/1.1 200"), status
    return headers, json.loads(body)


@pytest.fixture(params=["on", "off"])
def server(request, tmp_path):
    """One worker (so every connection meets the same process); inline on, or off as the negative control."""
    extra = {} if request.param == "on" else {"WEB_INLINE_PUSHES": "0"}
    with _gunicorn(tmp_path, 1, app=APP, env_extra=extra) as (_, port, socks):
        yield request.param == "on", port, socks


def _connect(port: int, socks: list) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    socks.append(sock)
    return sock


def test_a_whole_push_is_answered_by_the_poller_thread_and_the_connection_kept(server):
    inline, port, socks = server
    sock = _connect(port, socks)
    for path in ("/wechat?signature=s&nonce=n", "/wxa/message?x=1", "/wechat"):
        headers, info = _ask(sock, _push(path))
        assert info["inline"] is inline
        assert (info["thread"] == "MainThread") is inline  # gunicorn's path runs every request on a pool thread
        assert info["method"] == "POST" and path == info["path"] + (f"?{info['query']}" if info["query"] else "")
        assert info["body"] == "<xml>你好</xml>" and info["type"] == "text/xml" and info["x"] == "t"
        assert info["scheme"] == "http" and info["remote"] == "127.0.0.1"
        assert headers["connection"] == "keep-alive" and headers["server"].startswith("gunicorn")
        assert headers["date"].endswith("GMT") and headers["content-type"] == "application/json"


def test_a_deferred_answer_is_finished_on_a_pool_thread_and_the_connection_stays_usable(server):
    inline, port, socks = server
    sock = _connect(port, socks)
    _, info = _ask(sock, _push("/wechat?defer"))
    assert info["inline"] is inline
    assert info["finished_in"] != "MainThread"  # a handler never runs in the poller's thread
    _, again = _ask(sock, _push("/wechat?again", body="第二条"))
    assert again["body"] == "第二条" and again["inline"] is inline


def test_pipelined_pushes_are_answered_in_order(tmp_path):
    # Inline only: gunicorn's gthread path does not serve pipelined requests (its parser keeps the next request's
    # bytes while the connection waits for the socket to become readable again); the inline path takes only its
    # own request's bytes off the socket, so the next one is polled like any other.
    with _gunicorn(tmp_path, 1, app=APP) as (_, port, socks):
        sock = _connect(port, socks)
        sock.sendall(_push(body="一") + _push("/wechat?defer", body="二") + _push(body="三") +
                     b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [_read(sock)[1] for _ in range(4)]
        assert [json.loads(a)["body"] for a in answers[:3]] == ["一", "二", "三"]
        assert int(answers[3]) == json.loads(answers[0])["pid"]  # then gunicorn's path, on the same connection


@pytest.mark.parametrize("request_bytes", [
    b"GET /wechat?signature=s HTTP/1.1\r\nHost: x\r\n\r\n",  # the URL check is Flask's
    _push("/other"),  # not a push route
    _push("/wechat%3Fx"),  # an escaped path: gunicorn decodes it
    _push(extra="Expect: 100-continue\r\n"),
    b"POST /wechat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    _push().replace(b"HTTP/1.1", b"HTTP/1.0", 1).replace(b"Host", b"Connection: keep-alive\r\nHost", 1),
], ids=["get", "other-path", "escaped", "expect", "chunked", "http10"])
def test_anything_unusual_takes_gunicorns_path(server, request_bytes):
    _, port, socks = server
    sock = _connect(port, socks)
    sock.sendall(request_bytes)
    headers, body, status = _read(sock)
    if " 100 " in status:  # Expect: 100-continue, answered by gunicorn before the body
        headers, body, status = _read(sock)
    assert " 200 " in status, status
    info = json.loads(body)
    assert info["inline"] is False and info["thread"] != "MainThread"
    if b"chunked" in request_bytes:
        assert info["body"] == "abc"


def test_a_request_whose_body_arrives_later_is_read_by_gunicorns_path(server):
    _, port, socks = server
    sock = _connect(port, socks)
    request = _push(body="分两次到达的内容")
    sock.sendall(request[:-10])
    time.sleep(0.3)  # the poller sees the head (and part of the body) first
    sock.sendall(request[-10:])
    headers, body, _ = _read(sock)
    info = json.loads(body)
    assert info["body"] == "分两次到达的内容" and info["inline"] is False
    # Once gunicorn's parser has read from a connection, the connection stays on its path.
    _, later = _ask(sock, _push(body="后来的"))
    assert later["body"] == "后来的" and later["inline"] is False


def test_connection_close_is_honoured(server):
    _, port, socks = server
    sock = _connect(port, socks)
    sock.sendall(_push(extra="Connection: close\r\n"))
    headers, body, _ = _read(sock)
    assert headers["connection"] == "close" and json.loads(body)["body"] == "<xml>你好</xml>"
    assert _closed(sock)  # by the server


@pytest.mark.parametrize("query", ["boom", "boom-later"])
def test_an_application_error_is_a_500_and_the_connection_closed(server, query):
    inline, port, socks = server
    sock = _connect(port, socks)
    sock.sendall(_push(f"/wechat?{query}"))
    headers, body, status = _read(sock)
    assert status.startswith("HTTP/1.1 500")
    assert _closed(sock)
    fresh = _connect(port, socks)  # the worker lives on
    assert _ask(fresh, _push())[1]["inline"] is inline


def test_max_requests_restarts_the_worker_after_an_inline_answer(tmp_path):
    with _gunicorn(tmp_path, 1, app=APP, env_extra={"GUNICORN_CMD_ARGS": "--max-requests 40"}) as (_, port, socks):
        sock = _connect(port, socks)
        pids, closed_after = set(), None
        for i in range(40):
            sock.sendall(_push(body=str(i)))
            headers, body, _ = _read(sock)
            pids.add(json.loads(body)["pid"])
            if headers["connection"] == "close":
                closed_after = i
                break
        assert closed_after is not None and len(pids) == 1  # the probes of the helper count too
        assert _closed(sock)
        deadline = time.monotonic() + 30
        while True:  # a new worker takes over
            try:
                fresh = socket.create_connection(("127.0.0.1", port), timeout=5)
                socks.append(fresh)
                info = _ask(fresh, _push())[1]
                break
            except (OSError, ConnectionError):
                assert time.monotonic() < deadline, "no new worker"
                time.sleep(0.2)
        assert info["pid"] not in pids


def test_the_inline_environ_is_the_one_gunicorns_path_gives(tmp_path):
    """The same request, once inline and once through gunicorn's parser (its body sent later, which leaves it to
    gunicorn): the application sees the same environ (but for the client's port and the defer flag)."""
    with _gunicorn(tmp_path, 1, app=APP) as (_, port, socks):
        extra = "X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\nX-Forwarded-Proto: https\r\n"
        request = _push("/wxa/message?a=1&b=%E4%BD%A0", extra=extra)
        inline = _ask(_connect(port, socks), request)[1]
        late = _send_late(_connect(port, socks), request)
        gunicorn = json.loads(_read(late)[1])
        assert inline["inline"] is True and gunicorn["inline"] is False
        inline["env"].pop("wxapp.defer", None)
        assert inline["env"] == gunicorn["env"]
        assert inline["scheme"] == "https"  # 127.0.0.1 is a trusted proxy (FORWARDED_ALLOW_IPS' default)
        assert inline["env"]["HTTP_X_FORWARDED_FOR"] == repr("1.2.3.4,5.6.7.8")
