"""Webhook views: GET/POST /wechat (Official Account, XML) and GET/POST /wxa/message (mini-program).

The views only read the request within the body limit and hand it to `pipeline.Pipeline`; every
envelope failure becomes a 4xx JSON {"error","message","fields"} and a log line, never a 500.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from urllib.parse import parse_qsl

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.http import HTTP_STATUS_CODES

from ..http import DEFER_KEY, Deferred
from ..logs import request_id_var
from ..metrics import LATENCY, REQUESTS
from .crypto import PayloadTooLarge, WeChatEnvelopeError, random_bytes
from .pipeline import Outcome, Pending, Pipeline

log = logging.getLogger(__name__)

bp = Blueprint("wechat_webhook", __name__)


def register(app: Flask) -> None:
    """Install the webhooks, the console chat simulator and `flask chat` (called by create_app)."""
    from handlers import build_router

    from ..periodic import register_periodic
    from . import chat, console

    router = app.extensions["wxapp"].settings.extra.get("wechat_router") or build_router()
    app.extensions["wxapp_pipeline"] = Pipeline(app, router)
    app.wsgi_app = FastPushPath(app, app.wsgi_app)  # type: ignore[method-assign]
    app.register_blueprint(bp)
    app.register_blueprint(console.bp)
    chat.register_cli(app)
    register_periodic("kefu_sends_cleanup", 24 * 3600, "wxapp_backend.wechat.jobs.forget_old_sends")


def get_pipeline() -> Pipeline:
    return current_app.extensions["wxapp_pipeline"]


@bp.route("/wechat", methods=["GET", "POST"])
def official_account() -> Response:
    return _serve("oa")


@bp.route("/wxa/message", methods=["GET", "POST"])
def mini_program() -> Response:
    return _serve("wxa")


def _serve(account: str) -> Response:
    if request.method == "GET":
        try:
            body = get_pipeline().verify_url(account, request.args)
        except WeChatEnvelopeError as exc:
            log.warning("wechat url check refused", extra={"account": account, "code": exc.code})
            resp = jsonify({"error": exc.code, "message": exc.message_zh, "fields": getattr(exc, "fields", {})})
            resp.status_code = exc.status
            return resp
        return Response(body, content_type="text/plain; charset=utf-8")
    # POSTs are answered by FastPushPath before Flask routes them; this runs only when it is bypassed.
    status, content_type, body = FastPushPath(current_app, None)._answer(account, request.environ,
                                                                         time.monotonic())
    return Response(body, status=status, content_type=content_type)


def query_args(query: str) -> dict[str, str]:
    """The query string as Flask's request.args.get sees it (the first value of a name wins)."""
    args: dict[str, str] = {}
    if "%" in query or "+" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
    else:  # WeChat's own parameters need no decoding: split them as parse_qsl would
        pairs = [(key, value) for key, _, value in (part.partition("=") for part in query.split("&") if part)]
    for key, value in pairs:
        args.setdefault(key, value)
    return args


class FastPushPath:
    """WSGI layer that takes POST /wechat and /wxa/message straight to the pipeline.

    A push needs nothing of Flask's request machinery (routing, sessions, request context, after-request
    hooks), and on this hot path that machinery cost more than the pipeline itself. GET (the URL check) and
    every other route go through Flask as usual. The answers are the same as the views above give.
    """

    ROUTES = {"/wechat": ("oa", "wechat_webhook.official_account"),
              "/wxa/message": ("wxa", "wechat_webhook.mini_program")}

    def __init__(self, app: Flask, inner) -> None:
        self.app, self.inner = app, inner
        self.settings = app.extensions["wxapp"].settings
        self._children: dict[tuple[str, int], tuple] = {}  # labelled metric children, looked up once

    def _metrics(self, endpoint: str, status: int) -> tuple:
        children = self._children.get((endpoint, status))
        if children is None:
            children = self._children[(endpoint, status)] = (REQUESTS.labels(endpoint, "POST", str(status)),
                                                              LATENCY.labels(endpoint))
        return children

    def __call__(self, environ, start_response):
        route = self.ROUTES.get(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        if route is None:
            return self.inner(environ, start_response)
        account, endpoint = route
        started = time.monotonic()
        rid = random_bytes(8).hex()
        token = request_id_var.set(rid)
        try:
            answer = self._answer(account, environ, started, defer=environ.get(DEFER_KEY, False))
        finally:
            request_id_var.reset(token)
        if isinstance(answer, Pending):
            pending = answer

            # The server runs this request where it must not block (http_worker's inline pushes): the rest (a
            # handler, or the wait for a first try's answer) runs where the server calls `finish`.
            def finish() -> list[bytes]:
                token = request_id_var.set(rid)
                try:
                    rest = self._guarded(account, environ, pending)
                finally:
                    request_id_var.reset(token)
                return self._respond(endpoint, started, rid, rest, start_response)  # type: ignore[arg-type]

            return Deferred(finish)
        return self._respond(endpoint, started, rid, answer, start_response)

    def _respond(self, endpoint: str, started: float, rid: str, answer: tuple[int, str, bytes],
                 start_response) -> list[bytes]:
        status, content_type, body = answer
        count, latency = self._metrics(endpoint, status)
        count.inc()
        latency.observe(time.monotonic() - started)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, '')}", [
            ("Content-Type", content_type), ("Content-Length", str(len(body))), ("X-Request-Id", rid),
            ("X-Content-Type-Options", "nosniff")])
        return [body]

    def _answer(self, account: str, environ, started: float, *,
                defer: bool = False) -> tuple[int, str, bytes] | Pending:
        """The push's answer (status, content type, body); with `defer`, a `Pending` instead when the rest needs a
        handler or a wait (then `_guarded(account, environ, pending)` gives the answer, where blocking is fine)."""
        return self._guarded(account, environ, partial(self._begin, account, environ, started, defer))

    def _begin(self, account: str, environ, started: float, defer: bool) -> Outcome | Pending:
        pipeline: Pipeline = self.app.extensions["wxapp_pipeline"]
        limit = self.settings.webhook_max_body
        args = query_args(environ.get("QUERY_STRING", ""))
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared.strip() and (not declared.strip().isdigit() or int(declared) > limit):
            raise PayloadTooLarge()
        body = environ["wsgi.input"].read(limit + 1) if declared.strip() != "0" else b""
        if len(body) > limit:
            raise PayloadTooLarge()
        # No app context here: the pipeline opens one once a push needs more than its stored answer.
        answer = pipeline.begin(account, args, body, started=started)
        return answer if defer or isinstance(answer, Outcome) else answer()

    def _guarded(self, account: str, environ, step) -> tuple[int, str, bytes] | Pending:
        """Run `step` (giving an Outcome, or a Pending to pass on); refusals and failures become their JSON."""
        try:
            outcome = step()
            if isinstance(outcome, Pending):
                return outcome
            return outcome.status, outcome.content_type, outcome.body.encode("utf-8")
        except WeChatEnvelopeError as exc:
            log.warning("wechat push refused", extra={"account": account, "code": exc.code, "status": exc.status,
                                                      "remote": environ.get("REMOTE_ADDR", "")})
            payload = {"error": exc.code, "message": exc.message_zh, "fields": getattr(exc, "fields", {})}
            return exc.status, "application/json", json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except Exception:  # internals stay in the log; WeChat gets a clean 500 and retries
            log.exception("wechat push failed", extra={"account": account})
            payload = {"error": "internal_error", "message": "服务开了个小差，请稍后再试。", "fields": {}}
            return 500, "application/json", json.dumps(payload, ensure_ascii=False).encode("utf-8")
