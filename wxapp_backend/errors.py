"""One AppError hierarchy, mapped to JSON for /api and to Chinese error pages for the console."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    """An error the user can act on: carries an HTTP status, a machine code and a Chinese message."""

    status = 400
    code = "bad_request"
    message = "请求有误，请检查后再试。"

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 fields: dict[str, str] | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.fields = fields or {}
        self.headers = headers or {}
        if status is not None:
            self.status = status
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "fields": self.fields}


class BadRequest(AppError):
    status, code, message = 400, "bad_request", "请求有误，请检查后再试。"


class Unauthorized(AppError):
    status, code, message = 401, "unauthorized", "请先登录。"


class Forbidden(AppError):
    status, code, message = 403, "forbidden", "抱歉，您没有权限进行这个操作。"


class NotFound(AppError):
    status, code, message = 404, "not_found", "没有找到您要的内容。"


class Conflict(AppError):
    status, code, message = 409, "conflict", "操作和当前状态冲突，请刷新后再试。"


class PayloadTooLarge(AppError):
    status, code, message = 413, "payload_too_large", "提交的内容太大了。"


class ValidationError(AppError):
    status, code, message = 422, "validation_error", "填写的内容有误，请按提示修改。"


class TooManyRequests(AppError):
    status, code, message = 429, "too_many_requests", "操作太频繁了，请稍后再试。"


class ServiceUnavailable(AppError):
    status, code, message = 503, "unavailable", "服务暂时不可用，请稍后再试。"


# Werkzeug's HTTP errors (routing, method, size) in the same Chinese voice.
_HTTP_MESSAGES = {
    400: ("bad_request", "请求有误，请检查后再试。"),
    401: ("unauthorized", "请先登录。"),
    403: ("forbidden", "抱歉，您没有权限进行这个操作。"),
    404: ("not_found", "没有找到您要的内容。"),
    405: ("method_not_allowed", "不支持这种请求方式。"),
    406: ("not_acceptable", "无法提供这种格式的内容。"),
    409: ("conflict", "操作和当前状态冲突，请刷新后再试。"),
    413: ("payload_too_large", "提交的内容太大了。"),
    415: ("unsupported_media_type", "请求格式不对，请用 JSON 提交。"),
    416: ("range_not_satisfiable", "请求的内容范围超出了文件大小，请重新打开后再试。"),
    422: ("validation_error", "填写的内容有误，请按提示修改。"),
    429: ("too_many_requests", "操作太频繁了，请稍后再试。"),
}


def _wants_json() -> bool:
    path = request.path
    return path.lower().startswith("/api/") or path in {"/healthz", "/metrics"} or path.startswith("/wechat") \
        or path.startswith("/wxa/")


def _render(status: int, code: str, message: str, fields: dict | None = None, headers: dict | None = None):
    if _wants_json():
        resp = jsonify({"error": code, "message": message, "fields": fields or {}})
    else:
        from .console import referrer_path

        # Back to the page the staff member came from (an expired form, a stale link), not only to the dashboard.
        resp = render_template("error.html", status=status, code=code, message=message, back=referrer_path(),
                               request_id=getattr(g, "request_id", "")), status
        from flask import make_response

        resp = make_response(resp)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register_error_handlers(app: Flask) -> None:
    """Install the handlers that turn every failure into a clean answer."""

    @app.errorhandler(AppError)
    def _app_error(exc: AppError):
        if exc.status >= 500:
            log.warning("service error %s: %s", exc.code, exc.message)
        return _render(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        # Werkzeug's own description is English: never shown, whatever the status.
        code, message = _HTTP_MESSAGES.get(status, ("error", "请求无法完成，请稍后再试。"))
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return _render(status, code, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Internals stay in the log; the client gets the request id to quote.
        log.exception("unhandled error", extra={"request_id": getattr(g, "request_id", "")})
        rid = getattr(g, "request_id", "")
        return _render(500, "internal_error", f"服务开了个小差，请稍后再试（编号 {rid}）。")
