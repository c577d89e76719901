"""Helpers for JSON views: body parsing, validation, pagination and the OpenAPI annotations."""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import current_app, request

from .errors import BadRequest, PayloadTooLarge, TooManyRequests, ValidationError
from .validation import Field, validate

F = TypeVar("F", bound=Callable[..., Any])


# Set in a WSGI environ by a server that runs the request where it must not block (http_worker's inline pushes):
# the application may then answer with a `Deferred` instead of an iterable of bytes.
DEFER_KEY = "wxapp.defer"


class Deferred:
    """An answer still to be worked out: `finish()` runs the rest (it may block), calls start_response and
    returns the body's chunks. Only given to a server that set DEFER_KEY."""

    __slots__ = ("finish",)

    def __init__(self, finish: Callable[[], list[bytes]]) -> None:
        self.finish = finish


class JSONTextError(ValueError):
    """Text that json.loads would read but that is no JSON we can store or answer with; the message is Chinese."""


class _NotFinite(Exception):
    pass


def _not_a_number(name: str) -> float:
    # NaN and Infinity are no JSON; Python reads them, PostgreSQL's json refuses them where they get stored.
    raise _NotFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 reads as infinity
        raise _NotFinite(text)
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits(), 4300)
        raise _NotFinite(text) from None


def loads(text: str) -> Any:
    """json.loads for text from outside (a request body, a form's JSON box). Raises json.JSONDecodeError for
    malformed text and JSONTextError for what Python reads beyond JSON or cannot take: NaN, Infinity and 1e999,
    integers of more digits than Python converts, nesting deeper than the parser recurses, and lone surrogates
    ("\\ud800": no UTF-8 text, so the database, WeChat and our own answer would fail on it).

    One leading byte-order mark is skipped: Notepad and some HTTP tools put it before the text, and json.loads
    refuses it (the body was a 400 malformed_json)."""
    text = text.removeprefix("\ufeff")
    try:
        data = json.loads(text, parse_constant=_not_a_number, parse_float=_finite, parse_int=_integer)
    except _NotFinite:
        raise JSONTextError("提交的数字超出范围（不能是 NaN、Infinity 或 1e999 这样的数），请检查后再试。") from None
    except RecursionError:  # [[[[... nested too deep
        raise JSONTextError("提交的 JSON 嵌套太深了，请检查后再试。") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JSONTextError("提交的内容含有无法识别的字符，请检查后再试。") from None
    return data


def json_body(*, max_bytes: int | None = None) -> dict[str, Any]:
    """The request's JSON object, or a clear 400/413 in Chinese."""
    limit = max_bytes or current_app.extensions["wxapp"].settings.api_max_json_body
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"提交的内容太大了（上限 {limit // 1024} KB）。")
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise BadRequest("请求格式不对，请用 JSON 提交（Content-Type: application/json）。",
                         code="unsupported_media_type")
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        raise PayloadTooLarge(f"提交的内容太大了（上限 {limit // 1024} KB）。")
    try:
        data = loads(raw.decode("utf-8") or "null")
    except JSONTextError as exc:
        raise BadRequest(str(exc), code="malformed_json") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("提交的 JSON 格式有误，请检查后再试。", code="malformed_json") from None
    if not isinstance(data, dict):
        raise BadRequest("提交的内容应为 JSON 对象。", code="malformed_json")
    return data


def parse(fields: Iterable[Field], *, partial: bool = False) -> dict[str, Any]:
    """Parse and validate the JSON body against fields."""
    return validate(json_body(), fields, partial=partial)


def query(fields: Iterable[Field]) -> dict[str, Any]:
    """Validate query-string parameters.

    A name that is not one of `fields` is left alone (a mini-program adds `t=<time>` to dodge caches), except one
    that is a slip of a known name not sent as well (`categroy`, `Page`, `per-page`): that filter would have been
    dropped without a word and the answer would have listed everything."""
    fields = tuple(fields)
    args = {k: v for k, v in request.args.items()}
    slips = {name: known for name in args if (known := _slip_of(name, fields, args))}
    if slips:
        first, known = next(iter(slips.items()))
        raise ValidationError(f"查询参数 {first[:40]} 不认识，您是不是想写 {known.name}（{known.title}）？",
                              fields={k[:40]: f"不认识这个参数，应为 {f.name}" for k, f in slips.items()})
    return validate(args, fields)


def _slip_of(name: str, fields: tuple[Field, ...], sent: dict[str, Any]) -> Field | None:
    """The known field `name` is a misspelling of (same letters but for case, - for _, one or two letters off), when
    that field was not sent itself; None for a name that is known or looks like nothing known."""
    names = {f.name: f for f in fields}
    if name in names:
        return None
    folded = name.strip().lower().replace("-", "_")
    for f in fields:
        if f.name in sent:
            continue
        if folded == f.name or (len(f.name) >= 4 and difflib.SequenceMatcher(None, folded, f.name).ratio() >= 0.8):
            return f
    return None


PAGE_FIELDS = (
    Field("page", "int", "页码", min=1, max=100000, default=1),
    Field("per_page", "int", "每页条数", min=1, max=100, default=20),
)


def page_json(items: list[Any], total: int, page: int, per_page: int) -> dict[str, Any]:
    """One page of a listing in the shape every paginated /api/v1 list answers with (as appeals and
    enterprises): {items, total, page, per_page, pages}."""
    return {"items": items, "total": total, "page": page, "per_page": per_page,
            "pages": max(1, -(-total // per_page))}


def idempotency_header(max_len: int, description: str) -> dict[str, Any]:
    """The optional Idempotency-Key request header as the OpenAPI document states it (for doc(headers=...)); the
    view's own check takes the same: letters, digits and - _ : ., at most `max_len` long."""
    return {"name": "Idempotency-Key", "in": "header", "required": False, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": r"^[A-Za-z0-9_.:-]+$"}}


def idempotency_key(max_len: int) -> str | None:
    """The request's Idempotency-Key (None when not sent), checked as idempotency_header documents it."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return None
    # ASCII as documented: str.isalnum() also takes é, ª and ² (a header arrives as Latin-1 text).
    if len(key) > max_len or not key.isascii() or not all(c.isalnum() or c in "-_:." for c in key):
        raise BadRequest(f"Idempotency-Key 格式不对（最多 {max_len} 位英文字母、数字或 - _ : .）。", code="bad_idempotency_key")
    return key


def doc(summary: str, *, body: Iterable[Field] | None = None, params: Iterable[Field] | None = None,
        responses: dict[int, str] | None = None, auth: str = "user", tags: Iterable[str] = (),
        headers: Iterable[dict[str, Any]] = ()) -> Callable[[F], F]:
    """Attach OpenAPI facts to a view; the document at /api/v1/openapi.json is built from these. `auth`: "user"
    (a mini-program login), "staff", "none" (no token is read) or "optional" (optional_user_id: anonymous
    callers are served, a login gives more, a bad token is a 401)."""

    def wrap(fn: F) -> F:
        fn.__openapi__ = {  # type: ignore[attr-defined]
            "summary": summary,
            "body": tuple(body) if body is not None else None,
            "params": tuple(params) if params is not None else (),
            "responses": responses or {200: "成功"},
            "auth": auth,
            "tags": tuple(tags),
            "headers": tuple(headers),
        }
        return fn

    return wrap


def _ip(value: str) -> str | None:
    """An address as a proxy writes it ("203.0.113.7", "203.0.113.7:5678", "2001:db8::1", "[2001:db8::1]:443"),
    normalised ("::ffff:1.2.3.4" is 1.2.3.4); None for anything that is not an IP address."""
    v = value.strip()
    if v.startswith("[") and "]" in v:
        v = v[1 : v.index("]")]
    elif v.count(":") == 1:
        v = v.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def limit_key(addr: str) -> str:
    """What per-address limits count: an IPv4 address, or an IPv6 address's /64 (one line, one handset or one
    household holds a whole /64, so counting single IPv6 addresses would let one client have 2**64 buckets)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr or "?"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def throttle(name: str, who: str, limit: int, window: int, message: str) -> None:
    """Count one request of `who` (a user id, or a client address through limit_key) in a fixed window kept in
    Redis, so every web process shares it; past `limit` a 429 with Retry-After. `limit` is read from the
    `<name>_limit` tuning knob (settings.extra) when one is set."""
    state = current_app.extensions["wxapp"]
    limit = int(state.settings.extra.get(f"{name}_limit", limit))
    key = f"rl:{name}:{who}"
    pipe = state.redis.pipeline()
    pipe.incr(key)
    pipe.ttl(key)
    count, ttl = pipe.execute()
    if count == 1 or ttl < 0:
        state.redis.expire(key, window)
        ttl = window
    if count > limit:
        raise TooManyRequests(message, headers={"Retry-After": str(max(int(ttl), 1))})


class ClientAddress:
    """WSGI middleware: behind a reverse proxy listed in FORWARDED_ALLOW_IPS (as gunicorn's setting of that name:
    comma list, "*" for any; a peer on a UNIX socket, which gunicorn gives an empty REMOTE_ADDR, is trusted as
    gunicorn trusts it), REMOTE_ADDR becomes the client's address from X-Forwarded-For: the rightmost hop that is
    not itself a trusted proxy, which is the one the nearest proxy appended (nginx: `proxy_set_header
    X-Forwarded-For $proxy_add_x_forwarded_for`). So per-address limits (the anonymous chat, staff login
    throttling) count clients, not nginx. A hop that is not an IP address is never taken; a request that does
    not come from a trusted proxy keeps its address whatever it sends. The proxy's address stays in
    `wxapp.proxy_addr`."""

    def __init__(self, app: Callable, trusted: str) -> None:
        self.app = app
        names = {part.strip() for part in trusted.split(",") if part.strip()}
        self.any = "*" in names
        self.trusted = frozenset(_ip(n) or n for n in names - {"*"})

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            peer = environ.get("REMOTE_ADDR") or ""
            if self.any or not peer or peer in self.trusted or _ip(peer) in self.trusted:
                client = None
                for hop in reversed(forwarded.split(",")):
                    ip = _ip(hop)
                    if ip is None:
                        break  # a hop that is not an address: nothing left of it can be believed
                    client = ip
                    if ip not in self.trusted:
                        break
                if client is not None:
                    environ["wxapp.proxy_addr"] = peer
                    environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)
