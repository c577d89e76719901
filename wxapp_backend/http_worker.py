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

Pushes answered in the poller's thread. A WeChat push (POST /wechat, /wxa/message) that has arrived whole, in a
plain HTTP/1.1 request, is read and answered by the worker's main loop itself, without the hand-over to a pool
thread and back, gunicorn's request parser and its WSGI environ (together about as much CPU as the pipeline's own
work: docs/bench/webhook.md, session 15). The application then runs with `DEFER_KEY` set, and a push whose answer
needs a handler or a wait (anything but an answer the claim settled) comes back as a `Deferred`, finished on a
pool thread as every other request is. Anything unusual (a request not yet complete, chunked, `Expect`, a header
gunicorn would refuse or rewrite, a connection that has used gunicorn's parser, an access log or request hooks
configured) takes gunicorn's own path unchanged. `WEB_INLINE_PUSHES=0` turns the inline path off.

Everything else is gunicorn 23's ThreadWorker as it is.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import selectors
import socket
import sys
import time
from email.utils import formatdate

from gunicorn import SERVER, SERVER_SOFTWARE, glogging
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.http.wsgi import FileWrapper
from gunicorn.workers.gthread import ThreadWorker

from .http import DEFER_KEY, Deferred

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


PEEK = 65536  # bytes looked at for a whole push; a larger request takes gunicorn's path
INLINE_PATHS = frozenset((b"/wechat", b"/wxa/message"))  # wechat/webhook.py's FastPushPath.ROUTES


class InlineRequest:
    """A complete, plain HTTP/1.1 POST to a push route, read off the first `size` bytes of `data`."""

    __slots__ = ("body", "headers", "path", "query", "size", "target")

    def __init__(self, target: bytes, path: bytes, query: bytes, headers: dict[str, str], body: bytes,
                 size: int) -> None:
        self.target, self.path, self.query, self.headers, self.body, self.size = target, path, query, headers, body, size


def parse_inline(data: bytes, *, max_line: int = 4094, max_fields: int = 100,
                 max_field: int = 8190) -> InlineRequest | None:
    """The push at the start of `data` when it can be answered inline, else None (gunicorn's path decides: it
    may be incomplete, unusual or wrong, and gunicorn answers those as it always has). Header names are given in
    environ form (HTTP_X_Y, CONTENT_TYPE, CONTENT_LENGTH)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    line = lines[0]
    if (max_line and len(line) > max_line) or (max_fields and len(lines) - 1 > max_fields):
        return None
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    target = parts[1]
    path, _, query = target.partition(b"?")
    # Only the routes' exact paths: no escapes, fragments or absolute forms for gunicorn to rewrite.
    if path not in INLINE_PATHS or not all(0x21 <= c <= 0x7E for c in query) or b"#" in query:
        return None
    headers: dict[str, str] = {}
    length = -1
    for raw in lines[1:]:
        if max_field and len(raw) + 2 > max_field:  # gunicorn counts the line's CRLF
            return None
        name, sep, value = raw.partition(b":")
        # No folded lines, no odd names (gunicorn refuses or drops "_" and non-token names), no control bytes.
        if not sep or not name or not name.replace(b"-", b"").isalnum() or not name.isascii():
            return None
        value = value.strip(b" \t")
        if any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
            return None
        key = name.upper().decode("ascii").replace("-", "_")
        if key == "CONTENT_LENGTH":
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)
        elif key in ("TRANSFER_ENCODING", "EXPECT", "UPGRADE", "TE", "TRAILER"):
            return None
        elif key == "CONNECTION" and value.lower() != b"keep-alive":
            return None  # "close" and the rest: gunicorn's path
        if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        headers[key] = headers[key] + "," + text if key in headers else text
    if length < 0:
        return None
    size = end + 4 + length
    if len(data) < size:
        return None  # the body has not all arrived: gunicorn's path reads the rest
    return InlineRequest(target, path, query, headers, data[end + 4:size], size)


def inline_limits(cfg) -> tuple[int, int, int]:
    """(request line, header count, header line) limits as gunicorn's parser applies them to `cfg`: a request line
    limit below 0 or past MAX_REQUEST_LINE is MAX_REQUEST_LINE (0: none); a header count of 0 or past MAX_HEADERS
    is MAX_HEADERS; a header line limit below 0 is the default (0: none). parse_inline's 0 means "no limit"."""
    line = cfg.limit_request_line
    if line < 0 or line >= MAX_REQUEST_LINE:
        line = MAX_REQUEST_LINE
    fields = cfg.limit_request_fields
    if fields <= 0 or fields > MAX_HEADERS:
        fields = MAX_HEADERS
    field = cfg.limit_request_field_size
    if field < 0:
        field = DEFAULT_MAX_HEADERFIELD_SIZE
    return line, fields, field


_date_cache: list = [0, ""]


def http_date() -> str:
    """gunicorn's Date header, formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[1] = formatdate(now, localtime=False, usegmt=True)
        _date_cache[0] = now
    return _date_cache[1]


def _is_default(cfg, name: str) -> bool:
    setting = cfg.settings[name]
    return setting.value is type(setting).default


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

    def _inline_allowed(self) -> bool:
        """May pushes be answered in the poller's thread? Not when anything gunicorn does per request would be
        skipped by it: an access log, request hooks, TLS, the PROXY protocol, a SCRIPT_NAME."""
        cfg = self.cfg
        if (os.environ.get("WEB_INLINE_PUSHES", "1").strip() == "0" or cfg.is_ssl or cfg.proxy_protocol
                or os.environ.get("SCRIPT_NAME")):
            return False
        if cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json or cfg.syslog:
            return False
        return _is_default(cfg, "pre_request") and _is_default(cfg, "post_request")

    def run(self) -> None:
        self.inline = self._inline_allowed()
        if self.alive:  # the pid last: the others never see a live row with stale fields
            self._publish(CONNS, self._conns)
            self._publish(BEAT, time.monotonic_ns())
            self._publish(PID, os.getpid())
        poller = _Selector()
        poller.lock = self._lock
        self.poller.close()
        self.poller = poller
        super().run()

    def on_client_socket_readable(self, conn, client) -> None:
        # A connection gunicorn's parser has read from may hold bytes in that parser: it stays on gunicorn's path.
        if self.inline and conn.parser is None:
            try:
                if self._answer_inline(conn):
                    return
            except Exception:  # never the poller's loop: that would end the process and all its connections
                self.log.exception("Error handling request")
                self._drop(conn)
                return
        super().on_client_socket_readable(conn, client)

    def _answer_inline(self, conn) -> bool:
        """Answer one whole push from the poller's thread; False leaves the connection to gunicorn's path."""
        try:
            data = conn.sock.recv(PEEK, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing to read after all: still registered, polled again
        except OSError:
            return False
        cfg = self.cfg
        line, fields, field = inline_limits(cfg)
        req = parse_inline(data, max_line=line, max_fields=fields, max_field=field)
        if req is None:
            return False
        environ = self._environ(conn, req)
        if environ is None:
            return False
        try:
            got = conn.sock.recv(req.size)  # the bytes looked at, taken off the socket (a pipelined next stays)
        except OSError:
            got = b""
        if len(got) != req.size:  # reset meanwhile (with TCP the bytes looked at are there to take)
            self._drop(conn)
            return True
        captured: list = []

        def start_response(status, headers, exc_info=None):
            captured[:] = [status, headers]
            return None

        # Counted and judged before the application runs, as gunicorn's path does (handle_request).
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
        with self._lock:
            try:
                self._keep.remove(conn)
            except ValueError:
                pass
            close = not self.alive or not cfg.keepalive or len(self._keep) >= self.max_keepalived
        try:
            result = self.wsgi(environ, start_response)
            if isinstance(result, Deferred):  # a handler or a wait: finished on a pool thread, as gunicorn would
                self._hand_over(conn, self._finish_deferred, result, captured, close)
                return True
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            data = self._response(captured, body, close)
        except Exception:  # the application's or its answer's (a str chunk, a header not latin-1): logged, a
            # bare 500, the connection closed; never out of the poller's loop, which would end the worker
            self.log.exception("Error handling request")
            with contextlib.suppress(OSError):
                conn.sock.send(self._error_response())
            self._drop(conn)
            return True
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(conn)
            return True
        if sent < len(data):  # the peer reads slowly: a pool thread waits for it, never the poller's thread
            self._hand_over(conn, self._send_rest, memoryview(data)[sent:], close)
            return True
        if close:
            self._drop(conn)
            return True
        conn.initialized = True  # so that gunicorn's path takes it off the keep-alive queue when it reads it
        conn.set_timeout()
        with self._lock:
            self._keep.append(conn)
        return True

    def _hand_over(self, conn, task, *args) -> None:
        """The rest of this connection's answer is `task(conn, *args)` on a pool thread; its result, (keep-alive,
        conn), goes back to gunicorn's finish_request, which polls the connection again or closes it."""
        with self._lock:
            self.poller.unregister(conn.sock)
        conn.initialized = True
        self._wrap_future(self.tpool.submit(task, conn, *args), conn)

    def _finish_deferred(self, conn, deferred: Deferred, captured: list, close: bool) -> tuple[bool, object]:
        try:
            data = self._response(captured, b"".join(deferred.finish()), close)
        except Exception:  # nothing is sent yet: a bare 500, as gunicorn's path answers
            self.log.exception("Error handling request")
            data, close = self._error_response(), True
        return self._send_rest(conn, data, close)

    @staticmethod
    def _send_rest(conn, data, close: bool) -> tuple[bool, object]:
        conn.sock.setblocking(True)
        try:
            conn.sock.sendall(data)
        except OSError:
            return False, conn
        return not close, conn

    def _environ(self, conn, req: InlineRequest) -> dict | None:
        """The WSGI environ gunicorn's path would give this request (gunicorn.http.wsgi.create); None when the
        scheme headers need gunicorn's own judgement."""
        client, server = conn.client, conn.server
        environ = {
            "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": req.path.decode("ascii"),
            "QUERY_STRING": req.query.decode("ascii"), "RAW_URI": req.target.decode("ascii"),
            "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(req.body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": self.cfg.workers > 1,
            "wsgi.run_once": False, "wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper,
            "gunicorn.socket": conn.sock, DEFER_KEY: True,
        }
        environ.update(req.headers)
        if isinstance(client, tuple):
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
        else:  # a UNIX socket's peer
            environ["REMOTE_ADDR"] = client.decode() if isinstance(client, bytes) else str(client or "")
        if isinstance(server, tuple):
            environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
        else:  # a UNIX socket: named after the Host header, as gunicorn does
            name, _, port = environ.get("HTTP_HOST", "").partition(":")
            environ["SERVER_NAME"], environ["SERVER_PORT"] = name or str(server), port or ("80" if name else "")
        # wsgi.url_scheme as gunicorn works it out: a trusted proxy's (or a UNIX socket peer's) word on TLS
        # (secure_scheme_headers). gunicorn judges each header line and refuses lines that disagree: a header
        # given twice (joined with ",") or headers that disagree take its path.
        cfg = self.cfg
        if ("*" in cfg.forwarded_allow_ips or not isinstance(client, tuple)
                or environ["REMOTE_ADDR"] in cfg.forwarded_allow_ips):
            verdicts = set()
            for name, value in cfg.secure_scheme_headers.items():
                given = environ.get("HTTP_" + name.upper().replace("-", "_"))
                if given is not None:
                    if "," in given:
                        return None
                    verdicts.add(given == value)
            if len(verdicts) > 1:
                return None
            if True in verdicts:
                environ["wsgi.url_scheme"] = "https"
        return environ

    @staticmethod
    def _response(captured: list, body: bytes, close: bool) -> bytes:
        status, headers = captured
        head = [f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {http_date()}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers)
        if not any(name.lower() == "content-length" for name, _ in headers):  # framed, as gunicorn frames it
            head.append(f"Content-Length: {len(body)}\r\n")  # (chunked there; the whole body is here)
        head.append("\r\n")
        return "".join(head).encode("latin-1") + body

    @classmethod
    def _error_response(cls) -> bytes:
        return cls._response(["500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", "21")]],
                             b"Internal Server Error", True)

    def _drop(self, conn) -> None:
        """Close a connection answered (or failed) inline and forget it."""
        with self._lock:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            try:
                self._keep.remove(conn)
            except ValueError:
                pass
        self.nr_conns -= 1
        conn.close()

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
