"""Webhook views: GET/POST /wechat (Official Account, XML) and GET/POST /wxa/message (mini-program).

The views only read the request within the body limit and hand it to `pipeline.Pipeline`; every
envelope failure becomes a 4xx JSON {"error","message","fields"} and a log line, never a 500.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from .crypto import PayloadTooLarge, WeChatEnvelopeError
from .pipeline import Pipeline

log = logging.getLogger(__name__)

bp = Blueprint("wechat_webhook", __name__)


def register(app: Flask) -> None:
    """Install the webhooks, the console chat simulator and `flask chat` (called by create_app)."""
    from handlers import build_router

    from . import chat, console

    router = app.extensions["wxapp"].settings.extra.get("wechat_router") or build_router()
    app.extensions["wxapp_pipeline"] = Pipeline(app, router)
    app.register_blueprint(bp)
    app.register_blueprint(console.bp)
    chat.register_cli(app)


def get_pipeline() -> Pipeline:
    return current_app.extensions["wxapp_pipeline"]


@bp.route("/wechat", methods=["GET", "POST"])
def official_account() -> Response:
    return _serve("oa")


@bp.route("/wxa/message", methods=["GET", "POST"])
def mini_program() -> Response:
    return _serve("wxa")


def _read_body(limit: int) -> bytes:
    # Refuse by the declared length before reading anything, then read at most limit + 1 bytes.
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge()
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge()
    return data


def _serve(account: str) -> Response:
    started = time.monotonic()
    pipeline = get_pipeline()
    try:
        if request.method == "GET":
            return Response(pipeline.verify_url(account, request.args), content_type="text/plain; charset=utf-8")
        body = _read_body(pipeline.settings.webhook_max_body)
        outcome = pipeline.handle(account, request.args, body, started=started)
    except WeChatEnvelopeError as exc:
        log.warning("wechat push refused", extra={"account": account, "code": exc.code, "status": exc.status,
                                                  "remote": request.remote_addr})
        resp = jsonify({"error": exc.code, "message": exc.message_zh, "fields": getattr(exc, "fields", {})})
        resp.status_code = exc.status
        return resp
    return Response(outcome.body, status=outcome.status, content_type=outcome.content_type)
