"""wxapp_backend: the Flask application of the enterprise-service centre's WeChat backend."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, Response, current_app, g, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from rq import Queue
from sqlalchemy import text
from werkzeug.routing import IntegerConverter

from . import astguard
from .config import ROOT, Settings
from .db import Database
from .errors import register_error_handlers
from .kv import HEALTH_CHECK_TIMEOUT, make_redis, resolve_redis_url
from .logs import configure_logging, request_id_var
from .validation import DB_INT_MAX
from .wechat.client import WeChatHTTP

log = logging.getLogger(__name__)
astguard.install()


@dataclass
class AppState:
    """Everything one application instance shares: reached as app.extensions['wxapp']."""

    settings: Settings
    db: Database
    redis: redis.Redis
    redis_url: str
    queue: Queue
    wechat_http: WeChatHTTP
    # For /healthz and /metrics only: its own pool with a short timeout (kv.HEALTH_CHECK_TIMEOUT).
    health_redis: redis.Redis


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Only the console has a cookie session; webhooks and the API skip the signing work entirely."""

    def open_session(self, app: Flask, request):  # type: ignore[override]
        if not request.path.startswith("/console"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def _import_models() -> None:
    # Every model module, so that metadata (and Alembic) see every table.
    from . import audit  # noqa: F401
    from .activities import models as _act  # noqa: F401
    from .appeals import models as _app  # noqa: F401
    from .auth import models as _auth  # noqa: F401
    from .enterprises import models as _ent  # noqa: F401
    from .knowledge_store import models as _kb  # noqa: F401
    from .notices import models as _not  # noqa: F401
    from .wechat import models as _wx  # noqa: F401


class RowIdConverter(IntegerConverter):
    """`<int:...>` URL segments: at most 2**31 - 1, the largest INTEGER (the id columns' type in PostgreSQL). A
    larger number is "not found" (404) like any other id that does not exist, instead of an out-of-range error
    from the database (a 500)."""

    def __init__(self, url_map, fixed_digits: int = 0, min: int | None = None, max: int | None = DB_INT_MAX,
                 signed: bool = False) -> None:
        super().__init__(url_map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application; reads the environment only when no settings are given."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_json, settings.secret_values())
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"),
                instance_path=str(settings.instance_path), instance_relative_config=False)
    # Before any route is added: every <int:...> in a URL is a row id and must fit the database's INTEGER.
    app.url_map.converters["int"] = RowIdConverter
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SESSION_COOKIE_NAME="wxapp_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=settings.staff_token_ttl,
        JSON_AS_ASCII=False,
        TESTING=settings.env == "testing",
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.session_interface = ConsoleSessionInterface()
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    _import_models()

    redis_url = resolve_redis_url(settings)
    client = make_redis(redis_url)
    app.extensions["wxapp"] = AppState(
        settings=settings,
        db=Database(settings.resolved_database_url),
        redis=client,
        redis_url=redis_url,
        queue=Queue(settings.queue_name, connection=client),
        wechat_http=WeChatHTTP(settings.wechat_api_base, settings.wechat_api_timeout),
        health_redis=make_redis(redis_url, timeout=HEALTH_CHECK_TIMEOUT),
    )

    register_error_handlers(app)
    _install_request_hooks(app)
    _register_blueprints(app)
    from .cli import register_cli

    register_cli(app)
    from .http import ClientAddress

    app.wsgi_app = ClientAddress(app.wsgi_app, settings.forwarded_allow_ips)  # type: ignore[method-assign]
    return app


def warm_up(app: Flask) -> None:
    """Load what the first request would otherwise wait for (jieba, the search index); gunicorn calls it."""
    for hook in app.extensions.get("wxapp_warmups", []):
        try:
            with app.app_context():
                hook()
        except Exception:  # a failed warm-up only means the first request does the work
            log.exception("warm-up failed")


def _register_blueprints(app: Flask) -> None:
    from . import openapi
    from .auth.api import bp as auth_api
    from .console import bp as console_bp
    from .console import check_csrf
    from .enterprises import api as enterprises_api
    from .enterprises import console as enterprises_console

    app.register_blueprint(_ops)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(auth_api)
    app.before_request(check_csrf)
    app.register_blueprint(console_bp)
    app.register_blueprint(enterprises_api.bp)
    app.register_blueprint(enterprises_console.bp)
    # Domains that bring their own blueprints, console pages, commands and periodic jobs.
    from .activities import api as activities_api
    from .appeals import api as appeals_api
    from .knowledge_store import api as kb_api
    from .notices import api as notices_api
    from .wechat import webhook

    for domain in (webhook, notices_api, kb_api, appeals_api, activities_api):
        domain.register(app)
    # Imported last, so that the admins' system pages come last in the navigation.
    from .auth.console import bp as staff_console
    from .console.audit_log import bp as audit_console

    app.register_blueprint(staff_console)
    app.register_blueprint(audit_console)


def _install_request_hooks(app: Flask) -> None:
    from .metrics import LATENCY, REQUESTS
    from .wechat.crypto import random_bytes

    # Labelled metric children, looked up once per (endpoint, method, status) rather than per request.
    counters: dict[tuple[str, str, int], Any] = {}
    histograms: dict[str, Any] = {}

    @app.before_request
    def _start() -> None:
        rid = request.headers.get("X-Request-Id", "")
        # ASCII: echoed in a header, the logs and the 500 message (isalnum() alone takes é and ²).
        if not rid or len(rid) > 64 or not rid.isascii() or not rid.replace("-", "").isalnum():
            rid = random_bytes(8).hex()  # os.urandom bytes, read in 4 KiB batches
        g.request_id = rid
        # Who is logged in is this request's to find out: under an outer app context (a script, the tests) g is
        # shared by the requests made inside it, and a page would be drawn for the staff member of the one before.
        g.pop("staff", None)
        g.pop("actor", None)
        g.started = time.perf_counter()
        request_id_var.set(rid)
        _no_api_redirect()

    @app.after_request
    def _finish(resp: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        elapsed = time.perf_counter() - getattr(g, "started", time.perf_counter())
        key = (endpoint, request.method, resp.status_code)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = REQUESTS.labels(endpoint, request.method, str(resp.status_code))
        counter.inc()
        histogram = histograms.get(endpoint)
        if histogram is None:
            histogram = histograms[endpoint] = LATENCY.labels(endpoint)
        histogram.observe(elapsed)
        resp.headers["X-Request-Id"] = getattr(g, "request_id", "")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        # A console address names what was searched for (a phone number, an enterprise) and which appeal was open:
        # other sites are not told it. same-origin, not no-referrer: the console sends a staff member back to the
        # page a form was on by its Referer.
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        # The HTML error page is also what a mistyped address outside /console gets: it is no less frameable there.
        if request.path.startswith("/console") or resp.mimetype == "text/html":
            resp.headers.setdefault("X-Frame-Options", "DENY")
            resp.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data: https://mp.weixin.qq.com; style-src 'self'; "
                                    "script-src 'self'; frame-ancestors 'none'")
        if request.path.startswith("/console"):
            # Not a default: send_file's no-cache still lets the browser keep an appeal's photo on disk.
            resp.headers["Cache-Control"] = "no-store"
        elif request.path.startswith("/api/"):
            _api_cache_headers(resp)
        if resp.status_code >= 500 or elapsed > 1:
            log.info("request", extra={"method": request.method, "path": request.path,
                                       "status": resp.status_code, "ms": round(elapsed * 1000, 1)})
        return resp


def _no_api_redirect() -> None:
    """/api/v1//me: werkzeug merges the slashes and answers 308 with an English HTML page (text/html, to an absolute
    address), which the mini-program cannot read and wx.request does not resend a POST's body to. An API address
    is exact: this one does not exist, said in Chinese with the one meant. The console keeps its redirect."""
    import re
    from urllib.parse import urlsplit

    from werkzeug.exceptions import HTTPException, MethodNotAllowed
    from werkzeug.exceptions import NotFound as HTTPNotFound
    from werkzeug.routing import RequestRedirect

    from .errors import NotFound

    moved = request.routing_exception
    if isinstance(moved, RequestRedirect) and (target := urlsplit(moved.new_url).path).startswith("/api/"):
        raise NotFound(f"请求地址不对（多了斜杠“/”），应为 {target}。")
    if isinstance(moved, HTTPNotFound) and request.path.lower().startswith("/api/"):
        # /api/v1/me/ and /API/v1/me: a bare 没有找到 (the second the console's HTML page) left the front-end
        # developer guessing; the address meant is named, and still not served under the wrong one.
        meant = re.sub(r"^/api/v1/", "/api/v1/", request.path, flags=re.IGNORECASE).rstrip("/")
        if meant and meant != request.path and len(meant) <= 200:
            try:
                current_app.url_map.bind_to_environ(request.environ).match(meant, method=request.method)
            except MethodNotAllowed:
                pass  # the address exists, for another method: naming it still helps
            except HTTPException:
                return
            slips = [s for s, wrong in (("末尾多了斜杠“/”", request.path.endswith("/")),
                                        ("开头的 /api/v1/ 应为小写", not request.path.startswith("/api/v1/"))) if wrong]
            raise NotFound(f"请求地址不对（{'，'.join(slips)}），应为 {meant}。")


# Views open to anonymous callers (doc(auth=...)): only their answers to a request without a token are the same for
# everyone.
_PUBLIC_AUTH = frozenset({"none", "optional"})


def _api_cache_headers(resp: Response) -> None:
    """/api/v1 answers depend on who asks: /me/... is one person's data, an optional-login view adds
    my_registration and ineligible_reason for a token, a login answer carries a token. A cache (a proxy, the
    WebView's) must key them by Authorization and keep none that a token, a login or a change produced. What an
    anonymous GET of an open view gets is the same for all, yet seats and statuses change by the minute: no-cache.
    A view marked same_for_everyone (the OpenAPI document) answers all alike, token or not: no-cache, no Vary."""
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "same_for_everyone", False) and request.method in {"GET", "HEAD"}:
        resp.headers["Cache-Control"] = "no-cache"
        return
    resp.vary.add("Authorization")
    auth = getattr(view, "__openapi__", {}).get("auth")
    if request.method in {"GET", "HEAD"} and auth in _PUBLIC_AUTH and "Authorization" not in request.headers:
        resp.headers.setdefault("Cache-Control", "no-cache")
    else:
        # Not setdefault: send_file's "no-cache" lets a cache store the photo of someone's appeal.
        resp.headers["Cache-Control"] = "private, no-store"


from flask import Blueprint  # noqa: E402

_ops = Blueprint("ops", __name__)


@_ops.get("/healthz")
def healthz():
    from flask import current_app

    state: AppState = current_app.extensions["wxapp"]
    result: dict[str, Any] = {"status": "ok", "db": "ok", "redis": "ok"}
    no_tables = False
    busy = False
    behind = None
    try:
        from .cli import schema_behind

        with state.db.health_connection() as conn:
            # Not SELECT 1: an empty database (or one still at an older migration) answers that too, while every
            # page and push fails on it.
            behind = schema_behind(conn)
        if behind:
            result["db"] = "error"
    except Exception as exc:  # any failure means unhealthy; say which part
        log.warning("health: database failed: %s", type(exc).__name__)
        result["db"] = "error"
        no_tables = "alembic_version" in str(getattr(exc, "orig", "") or "")
        busy = state.db.timed_out(exc)
    try:
        state.health_redis.ping()
    except Exception as exc:
        log.warning("health: redis failed: %s", type(exc).__name__)
        result["redis"] = "error"
    failing = [k for k in ("db", "redis") if result[k] != "ok"]
    if failing:
        result["status"] = "error"
        result["failing"] = failing
        result["message"] = "以下部分不可用：" + "、".join({"db": "数据库", "redis": "Redis"}[k] for k in failing)
        if no_tables:
            result["message"] += "（数据库还没有建表，请运行 flask --app wsgi init-db）"
        elif busy:
            result["message"] += "（数据库忙，检查没能在限时内完成：可能有长时间的写入占着数据库，请稍后再看）"
        elif behind:
            result["message"] += f"（{behind}）"
        return jsonify(result), 503
    return jsonify(result)


@_ops.get("/metrics")
def metrics():
    from flask import current_app

    from .metrics import LiveCollector, render

    state: AppState = current_app.extensions["wxapp"]
    if state.settings.metrics_token:
        _require_metrics_token(state.settings.metrics_token)

    def check_db() -> None:
        with state.db.health_connection() as conn:
            conn.execute(text("SELECT 1"))

    # The short-timeout client: a scraper gives up long before the shared client's timeout.
    queue = Queue(state.queue.name, connection=state.health_redis)
    body, ctype = render(LiveCollector(check_db, state.health_redis, queue))
    return Response(body, content_type=ctype)


def _require_metrics_token(expected: str) -> None:
    """METRICS_TOKEN is set: only a scraper that sends it sees the metrics (compared in constant time)."""
    import hmac

    from .errors import Unauthorized

    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    # As bytes: compare_digest refuses a str with non-ASCII characters, and the header is the caller's text.
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode("utf-8"), expected.encode("utf-8")):
        raise Unauthorized("访问监控指标需要令牌：请在请求头中带上 Authorization: Bearer <METRICS_TOKEN>。",
                           code="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
