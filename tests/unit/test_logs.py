"""Structured logs: JSON lines with the request id; configured secrets never appear."""

from __future__ import annotations

import json
import logging

from wxapp_backend.logs import JsonFormatter, RedactFilter, RequestIdFilter, request_id_var


def _format(record: logging.LogRecord, secrets: list[str]) -> dict:
    RequestIdFilter().filter(record)
    RedactFilter(secrets).filter(record)
    return json.loads(JsonFormatter().format(record))


def test_json_line_has_request_id_and_extras():
    token = request_id_var.set("req-42")
    try:
        rec = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        rec.path = "/api"
        out = _format(rec, [])
    finally:
        request_id_var.reset(token)
    assert out["msg"] == "hello world" and out["request_id"] == "req-42" and out["path"] == "/api"


def test_secrets_are_redacted():
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "token fetch with secret=%s", ("s3cr3t-value",), None)
    out = _format(rec, ["s3cr3t-value"])
    assert "s3cr3t-value" not in json.dumps(out) and "***" in out["msg"]
