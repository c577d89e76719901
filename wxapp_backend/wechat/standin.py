"""A loopback stand-in for api.weixin.qq.com (tokens, login, kefu/subscribe/template sends, media, QR codes) for tests and the demo.

Run it alone with ``python -m wxapp_backend.wechat.standin --port 8900``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ERRMSG", "Call", "WeChatStandIn", "main"]

# errmsg texts as WeChat sends them (before the " rid: ..." suffix).
ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    41030: "invalid page",
    42001: "access_token expired",
    43101: "user refuse to accept the msg",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    47001: "data format error",
    47003: "argument invalid!",
    40052: "invalid action name",
    40053: "invalid action info, please check document",
}

_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CODE = re.compile(r"[A-Za-z0-9_~.-]{1,128}")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_KEFU_TYPES = frozenset(
    {
        "text",
        "image",
        "voice",
        "video",
        "music",
        "news",
        "mpnews",
        "mpnewsarticle",
        "msgmenu",
        "wxcard",
        "miniprogrampage",
        "link",
    }
)
_STATES = frozenset({"developer", "trial", "formal"})
_LANGS = frozenset({"zh_CN", "en_US", "zh_HK", "zh_TW"})
_JSON_TYPE = "application/json; charset=utf-8"
_MAX_BODY = 4 * 1024 * 1024


class _Reply(Exception):
    """Raised inside an endpoint to answer with a WeChat error body."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__(errcode)


@dataclass(frozen=True)
class Call:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    at: float
    errcode: int | None = None  # the errcode answered (0: ok); None until answered or when not JSON (media, HTTP error)
    raw: bytes = field(default=b"", repr=False)  # the body as it came over the wire


@dataclass
class _Token:
    value: str
    appid: str
    stable: bool
    expires_at: float
    revoked_at: float | None = None
    refused: bool = False  # API calls answer 40001 while stable_token (normal mode) still hands it out


@dataclass
class _Failure:
    errcode: int | None
    errmsg: str | None
    http_status: int | None
    remaining: int


@dataclass
class _State:
    tokens: dict[str, _Token] = field(default_factory=dict)
    stable: dict[str, str] = field(default_factory=dict)  # appid -> current stable token
    basic: dict[str, str] = field(default_factory=dict)  # appid -> newest /cgi-bin/token token
    used_codes: set[tuple[str, str]] = field(default_factory=set)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    failures: dict[str, deque[_Failure]] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    msgid: int = 1_000_000_000_000_000_000


def _rid() -> str:
    return f"{int(time.time()):08x}-{os.urandom(4).hex()}-{os.urandom(4).hex()}"


def error_body(errcode: int, errmsg: str | None = None) -> dict[str, Any]:
    """A WeChat error body: {"errcode": n, "errmsg": "<text> rid: ..."}."""
    text = errmsg or ERRMSG.get(errcode, "unknown error")
    return {"errcode": errcode, "errmsg": f"{text} rid: {_rid()}"}


def _field_ok(key: str, value: str) -> bool:
    """Subscribe-message field limits (47003 otherwise), by the key's type prefix (thing1 -> thing)."""
    kind = key.rstrip("0123456789")
    if not value:
        return False
    n = len(value)
    if kind == "thing":
        return n <= 20
    if kind == "phrase":
        return n <= 5 and all(_CJK.match(c) for c in value)
    if kind == "character_string":
        return n <= 32 and value.isascii()
    if kind == "number":
        return n <= 32 and re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", value) is not None
    if kind == "letter":
        return n <= 32 and value.isascii() and value.isalpha()
    if kind == "symbol":
        return n <= 5
    if kind == "name":
        return n <= (10 if _CJK.search(value) else 20)
    if kind == "phone_number":
        # Digits and symbols (+86-021-..., (021)..., *, #); no letters.
        return n <= 17 and value.isascii() and not any(c.isalpha() for c in value)
    if kind == "car_number":
        return n <= 8
    if kind in ("time", "date"):
        return n <= 64 and not re.search(r"[AaPp][Mm]\b", value)  # 24-hour clock only
    if kind == "amount":  # a currency sign, at most 10 digits (decimals allowed), "元" at the end
        return (re.fullmatch(r"[¥￥$]?[0-9]+(\.[0-9]+)?元?", value) is not None
                and sum(c.isdigit() for c in value) <= 10)
    return n <= 200


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a benchmark's connection pool reuses sockets
    disable_nagle_algorithm = True  # headers and body go out as two writes; don't wait for the ACK
    timeout = 60  # idle keep-alive connections give their thread back eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self.close_connection = True
            status, ctype, payload, extra = 413, "text/plain; charset=utf-8", b"bad length", {}
        else:
            raw = self.rfile.read(length) if length else b""
            try:
                status, ctype, payload, extra = self.server.standin._dispatch(method, parts.path, query, raw)
            except Exception:  # a stand-in bug must show up in the client's test output, not hang it
                detail = traceback.format_exc().encode("utf-8", "replace")
                status, ctype, payload, extra = 500, "text/plain; charset=utf-8", detail, {}
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait for idle keep-alive threads on stop
    request_queue_size = 1024  # hundreds of clients connect at once in benchmarks

    def __init__(self, addr: tuple[str, int], standin: WeChatStandIn) -> None:
        self.standin = standin
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class WeChatStandIn:
    """Threaded loopback server speaking the WeChat API protocol, with call recording and error injection."""

    def __init__(
        self,
        latency: float = 0.0,
        appid_secrets: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        token_ttl: int = 7200,
        old_token_grace: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.appid_secrets = dict(appid_secrets) if appid_secrets is not None else None
        self.record = record
        self.token_ttl = token_ttl
        # A new /cgi-bin/token leaves the previous one usable for about 5 minutes (WECHAT.md).
        self.old_token_grace = old_token_grace
        self.clock = clock
        self._host, self._port = host, port
        self._default_latency = latency
        self._lock = threading.Lock()
        self._state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[str, Callable[[str, dict[str, str], dict[str, Any] | None, bytes], Any]] = {
            "/cgi-bin/token": self._token,
            "/cgi-bin/stable_token": self._stable_token,
            "/sns/jscode2session": self._jscode2session,
            "/cgi-bin/message/custom/send": self._custom_send,
            "/cgi-bin/message/subscribe/send": self._subscribe_send,
            "/cgi-bin/message/template/send": self._template_send,
            "/cgi-bin/media/get": self._media_get,
            "/cgi-bin/user/info": self._user_info,
            "/cgi-bin/qrcode/create": self._qrcode_create,
        }
        # Official Account openid -> person, for the unionid that user/info gives (see oa_openid_for); kept
        # across reset(): who a person is does not change between tests.
        self._people: dict[str, str] = {}
        self._unfollowed: set[str] = set()

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> WeChatStandIn:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="wechat-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close open keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WeChatStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._server is None:
            raise RuntimeError("stand-in not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """e.g. http://127.0.0.1:PORT, for WECHAT_API_BASE."""
        return f"http://{self._host}:{self.port}"

    # ------------------------------------------------------------------------------------ control

    @property
    def calls(self) -> list[Call]:
        """A copy of the recorded calls (empty when record=False)."""
        with self._lock:
            return list(self._state.calls)

    def calls_to(self, path: str) -> list[Call]:
        """Recorded calls to one path."""
        return [c for c in self.calls if c.path == path]

    def count(self, path: str | None = None) -> int:
        """How many requests reached `path` (all paths when None); kept even with record=False."""
        with self._lock:
            if path is None:
                return sum(self._state.counts.values())
            return self._state.counts.get(path, 0)

    def fail_next(
        self,
        path: str,
        errcode: int | None = -1,
        times: int = 1,
        *,
        errmsg: str | None = None,
        http_status: int | None = None,
    ) -> None:
        """Answer the next `times` calls to `path` with `errcode` (or a bare HTTP error if http_status)."""
        with self._lock:
            self._state.failures.setdefault(path, deque()).append(
                _Failure(errcode, errmsg, http_status, times)
            )

    def set_latency(self, seconds: float, path: str | None = None) -> None:
        """Delay every answer (or only those for `path`) by `seconds`."""
        with self._lock:
            if path is None:
                self._default_latency = seconds
            else:
                self._state.latency[path] = seconds

    def expire_tokens(self) -> None:
        """Make every access token issued so far expired: its next use gets 42001."""
        now = self.clock()
        with self._lock:
            for tok in self._state.tokens.values():
                tok.expires_at = min(tok.expires_at, now)

    def refuse_token(self, value: str) -> None:
        """Make API calls with `value` answer 40001 while stable_token's normal mode keeps handing it out (as WeChat
        has been seen to do): only a forced refresh replaces it."""
        with self._lock:
            self._state.tokens[value].refused = True

    def add_media(self, media_id: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """Serve `data` for media_id from /cgi-bin/media/get."""
        with self._lock:
            self._state.media[media_id] = (data, content_type)

    def reset(self) -> None:
        """Forget tokens, codes, calls, counters, injected failures and per-path latencies."""
        with self._lock:
            self._state = _State()

    def current_token(self, appid: str, *, stable: bool = True) -> str | None:
        """The token the stand-in currently considers newest for appid (for assertions)."""
        with self._lock:
            return (self._state.stable if stable else self._state.basic).get(appid)

    @staticmethod
    def openid_for(code: str) -> str:
        """The openid jscode2session gives for `code`; "alice~1" and "alice~2" are the same user "alice"."""
        return "o" + hashlib.sha1(code.split("~", 1)[0].encode("utf-8")).hexdigest()[:27]

    @staticmethod
    def unionid_for(code: str) -> str:
        """The unionid jscode2session gives for `code`."""
        user = code.split("~", 1)[0]
        return "u" + hashlib.sha1(f"union:{user}".encode()).hexdigest()[:27]

    def oa_openid_for(self, person: str) -> str:
        """The Official Account openid of `person` ("alice"), whose user/info then carries the same unionid
        as jscode2session gives for the codes "alice~1", "alice~2" ... (one open-platform account behind the
        Official Account and the mini-program). Openids not made here get user/info without a unionid, as
        from an account that is not bound to an open-platform account."""
        openid = "o" + hashlib.sha1(f"oa:{person}".encode()).hexdigest()[:27]
        with self._lock:
            self._people[openid] = person
        return openid

    def set_following(self, openid: str, following: bool) -> None:
        """Whether user/info reports `openid` as a follower (default: yes)."""
        with self._lock:
            (self._unfollowed.discard if following else self._unfollowed.add)(openid)

    # ------------------------------------------------------------------------------------ dispatch

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], raw: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        recorded: list[Call] = []
        status, ctype, data, headers = self._answer(method, path, query, raw, recorded)
        if recorded and status == 200 and ctype == _JSON_TYPE:
            errcode = json.loads(data).get("errcode", 0)
            call = recorded[0]
            with self._lock:
                calls = self._state.calls
                for i in range(len(calls) - 1, -1, -1):  # recent calls are at the end
                    if calls[i] is call:
                        calls[i] = replace(call, errcode=errcode if isinstance(errcode, int) else None)
                        break
        return status, ctype, data, headers

    def _answer(
        self, method: str, path: str, query: dict[str, str], raw: bytes, recorded: list[Call]
    ) -> tuple[int, str, bytes, dict[str, str]]:
        body: dict[str, Any] | None = None
        bad_json = False
        if raw:
            try:
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else None
                bad_json = body is None
            except ValueError:
                bad_json = True
        with self._lock:
            st = self._state
            st.counts[path] = st.counts.get(path, 0) + 1
            if self.record:
                recorded.append(Call(method, path, query, body, self.clock(), raw=raw))
                st.calls.append(recorded[0])
            delay = st.latency.get(path, self._default_latency)
            failure = None
            queue = st.failures.get(path)
            if queue:
                failure = queue[0]
                failure.remaining -= 1
                if failure.remaining <= 0:
                    queue.popleft()
        if delay > 0:
            time.sleep(delay)
        if failure is not None:
            if failure.http_status is not None:
                return failure.http_status, "text/plain; charset=utf-8", b"stand-in injected failure", {}
            return self._json(
                error_body(failure.errcode if failure.errcode is not None else -1, failure.errmsg)
            )
        route = self._routes.get(path)
        if route is None:
            return 404, "text/plain; charset=utf-8", b"not found", {}
        try:
            if bad_json:
                raise _Reply(47001)
            result = route(method, query, body, raw)
        except _Reply as reply:
            return self._json(error_body(reply.errcode, reply.errmsg))
        if isinstance(result, tuple):  # (bytes, content type, headers) for media
            data, ctype, headers = result
            return 200, ctype, data, headers
        return self._json(result)

    @staticmethod
    def _json(payload: dict[str, Any]) -> tuple[int, str, bytes, dict[str, str]]:
        # WeChat answers errors with HTTP 200 and an errcode in the body.
        return 200, _JSON_TYPE, json.dumps(payload, ensure_ascii=False).encode("utf-8"), {}

    # ------------------------------------------------------------------------------------ credentials

    def _check_app(self, appid: Any, secret: Any) -> str:
        if not appid or not isinstance(appid, str):
            raise _Reply(41002)
        if not secret or not isinstance(secret, str):
            raise _Reply(41004)
        if self.appid_secrets is not None:
            if appid not in self.appid_secrets:
                raise _Reply(40013)
            if not secrets.compare_digest(self.appid_secrets[appid].encode(), secret.encode()):
                raise _Reply(40125)
        return appid

    def _issue(self, appid: str, stable: bool, now: float) -> _Token:
        tok = _Token(secrets.token_urlsafe(96), appid, stable, now + self.token_ttl)
        self._state.tokens[tok.value] = tok
        return tok

    def _check_token(self, query: dict[str, str]) -> _Token:
        value = query.get("access_token")
        if not value:
            raise _Reply(41001)
        now = self.clock()
        with self._lock:
            tok = self._state.tokens.get(value)
        if tok is None or tok.refused or (tok.revoked_at is not None and now >= tok.revoked_at):
            raise _Reply(40001)
        if now >= tok.expires_at:
            raise _Reply(42001)
        return tok

    def _token(self, method: str, query: dict[str, str], body: Any, raw: bytes) -> dict[str, Any]:
        if query.get("grant_type") != "client_credential":
            raise _Reply(40002)
        appid = self._check_app(query.get("appid"), query.get("secret"))
        now = self.clock()
        with self._lock:
            previous = self._state.tokens.get(self._state.basic.get(appid, ""))
            if previous is not None and previous.revoked_at is None:
                previous.revoked_at = now + self.old_token_grace
            tok = self._issue(appid, False, now)
            self._state.basic[appid] = tok.value
        return {"access_token": tok.value, "expires_in": self.token_ttl}

    def _stable_token(
        self, method: str, query: dict[str, str], body: dict[str, Any] | None, raw: bytes
    ) -> dict[str, Any]:
        if body is None:
            raise _Reply(44002)
        if body.get("grant_type") != "client_credential":
            raise _Reply(40002)
        appid = self._check_app(body.get("appid"), body.get("secret"))
        force = body.get("force_refresh") in (True, "true", 1)
        now = self.clock()
        with self._lock:
            current = self._state.tokens.get(self._state.stable.get(appid, ""))
            usable = current is not None and current.revoked_at is None and now < current.expires_at
            if usable and not force:
                assert current is not None
                # Repeated calls return the same token with the time it has left.
                return {"access_token": current.value, "expires_in": max(1, int(current.expires_at - now))}
            if current is not None and current.revoked_at is None:
                # force_refresh invalidates the previous stable token at once (WeChat's docs).
                current.revoked_at = now
            tok = self._issue(appid, True, now)
            self._state.stable[appid] = tok.value
        return {"access_token": tok.value, "expires_in": self.token_ttl}

    def _jscode2session(self, method: str, query: dict[str, str], body: Any, raw: bytes) -> dict[str, Any]:
        appid = self._check_app(query.get("appid"), query.get("secret"))
        if query.get("grant_type") != "authorization_code":
            raise _Reply(40002)
        code = query.get("js_code") or ""
        if not code:
            raise _Reply(41008)
        if not _CODE.fullmatch(code) or code.startswith("invalid"):
            raise _Reply(40029)
        with self._lock:
            if (appid, code) in self._state.used_codes:
                raise _Reply(40163)
            self._state.used_codes.add((appid, code))
        digest = hashlib.sha256(f"{appid}:{code}".encode()).digest()
        return {
            "openid": self.openid_for(code),
            "session_key": base64.b64encode(digest[:16]).decode("ascii"),
            "unionid": self.unionid_for(code),
        }

    # ------------------------------------------------------------------------------------ sends

    @staticmethod
    def _need_body(body: dict[str, Any] | None) -> dict[str, Any]:
        if body is None:
            raise _Reply(44002)
        return body

    @staticmethod
    def _check_openid(value: Any) -> None:
        if not isinstance(value, str) or not _OPENID.fullmatch(value):
            raise _Reply(40003)

    def _next_msgid(self) -> int:
        with self._lock:
            self._state.msgid += 1
            return self._state.msgid

    def _custom_send(
        self, method: str, query: dict[str, str], body: dict[str, Any] | None, raw: bytes
    ) -> dict[str, Any]:
        self._check_token(query)
        body = self._need_body(body)
        self._check_openid(body.get("touser"))
        msgtype = body.get("msgtype")
        if msgtype not in _KEFU_TYPES:
            raise _Reply(40008)
        payload = body.get(msgtype)
        if not isinstance(payload, dict):
            raise _Reply(47001)
        if msgtype == "text" and (not isinstance(payload.get("content"), str) or not payload["content"]):
            raise _Reply(47001)
        if msgtype in ("image", "voice", "video") and not payload.get("media_id"):
            raise _Reply(40007)
        return {"errcode": 0, "errmsg": "ok"}

    @staticmethod
    def _check_data(data: Any) -> None:
        if not isinstance(data, dict) or not data:
            raise _Reply(47003, "argument invalid! data invalid")
        for key, item in data.items():
            value = item.get("value") if isinstance(item, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not _field_ok(key, value):
                raise _Reply(47003, f"argument invalid! data.{key}.value invalid")

    def _subscribe_send(
        self, method: str, query: dict[str, str], body: dict[str, Any] | None, raw: bytes
    ) -> dict[str, Any]:
        self._check_token(query)
        body = self._need_body(body)
        self._check_openid(body.get("touser"))
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or not template_id.strip():
            raise _Reply(40037)
        page = body.get("page")
        if page is not None and (not isinstance(page, str) or "://" in page or re.search(r"\s", page)):
            raise _Reply(41030)
        self._check_data(body.get("data"))
        if body.get("miniprogram_state", "formal") not in _STATES:
            raise _Reply(47003, "argument invalid! miniprogram_state invalid")
        if body.get("lang", "zh_CN") not in _LANGS:
            raise _Reply(47003, "argument invalid! lang invalid")
        return {"errcode": 0, "errmsg": "ok", "msgid": self._next_msgid()}

    def _template_send(
        self, method: str, query: dict[str, str], body: dict[str, Any] | None, raw: bytes
    ) -> dict[str, Any]:
        self._check_token(query)
        body = self._need_body(body)
        self._check_openid(body.get("touser"))
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or not template_id.strip():
            raise _Reply(40037)
        data = body.get("data")
        if not isinstance(data, dict) or not all(isinstance(v, dict) and "value" in v for v in data.values()):
            raise _Reply(47003, "argument invalid! data invalid")
        return {"errcode": 0, "errmsg": "ok", "msgid": self._next_msgid()}

    def _user_info(self, method: str, query: dict[str, str], body: Any, raw: bytes) -> dict[str, Any]:
        """cgi-bin/user/info of a follower of the Official Account."""
        self._check_token(query)
        openid = query.get("openid") or ""
        self._check_openid(openid)
        with self._lock:
            person = self._people.get(openid)
            following = openid not in self._unfollowed
        if not following:  # only these fields; the unionid still comes for a bound account
            gone: dict[str, Any] = {"subscribe": 0, "openid": openid, "tagid_list": []}
            if person is not None:
                gone["unionid"] = self.unionid_for(person)
            return gone
        info: dict[str, Any] = {
            "subscribe": 1, "openid": openid, "language": "zh_CN",
            "subscribe_time": int(self.clock()), "remark": "", "groupid": 0, "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_OTHERS", "qr_scene": 0, "qr_scene_str": "",
        }
        if person is not None:
            info["unionid"] = self.unionid_for(person)
        return info

    def _qrcode_create(self, method: str, query: dict[str, str], body: dict[str, Any] | None,
                       raw: bytes) -> dict[str, Any]:
        """cgi-bin/qrcode/create: a parametric QR code. The ticket is the same for the same scene (the stand-in's
        own choice; it holds "+", "/" and "=", which the image address must encode)."""
        self._check_token(query)
        body = self._need_body(body)
        action = body.get("action_name")
        if action not in ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"):
            raise _Reply(40052)
        info = body.get("action_info")
        scene = info.get("scene") if isinstance(info, dict) else None
        if not isinstance(scene, dict):
            raise _Reply(40053)
        if action.endswith("STR_SCENE"):
            value = scene.get("scene_str")
            if not isinstance(value, str) or not 1 <= len(value) <= 64:
                raise _Reply(40053)
        else:
            value = scene.get("scene_id")
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= (
                    100000 if action == "QR_LIMIT_SCENE" else 2**32 - 1):
                raise _Reply(40053)
        digest = hashlib.sha256(f"{action}:{value}".encode()).digest()
        ticket = "gQH+" + base64.b64encode(digest).decode()
        answer: dict[str, Any] = {"ticket": ticket, "url": "http://weixin.qq.com/q/" + digest.hex()[:22]}
        if not action.startswith("QR_LIMIT"):
            answer["expire_seconds"] = int(body.get("expire_seconds") or 60)
        return answer

    def _media_get(
        self, method: str, query: dict[str, str], body: Any, raw: bytes
    ) -> tuple[bytes, str, dict[str, str]]:
        self._check_token(query)
        media_id = query.get("media_id") or ""
        with self._lock:
            stored = self._state.media.get(media_id)
        if stored is None:
            if not media_id or media_id.startswith("invalid"):
                raise _Reply(40007)
            # Any other id yields stable pseudo-image bytes so handlers can be exercised without setup.
            stored = (
                b"\xff\xd8\xff\xe0" + hashlib.sha256(media_id.encode()).digest() + b"\xff\xd9",
                "image/jpeg",
            )
        data, ctype = stored
        ext = {"image/jpeg": "jpg", "image/png": "png", "audio/amr": "amr", "video/mp4": "mp4"}.get(
            ctype, "bin"
        )
        return data, ctype, {"Content-disposition": f'attachment; filename="{media_id}.{ext}"'}


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the stand-in in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description="Loopback WeChat API stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="APPID:SECRET",
        help="accept only these credentials (repeatable); default accepts any",
    )
    parser.add_argument("--no-record", action="store_true", help="keep counters only")
    args = parser.parse_args(argv)
    apps = dict(item.split(":", 1) for item in args.app) if args.app else None
    standin = WeChatStandIn(args.latency, apps, host=args.host, port=args.port, record=not args.no_record)
    standin.start()
    print(f"WeChat stand-in listening on {standin.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
