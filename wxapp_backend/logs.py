"""Structured JSON logs carrying the request id, with configured secrets redacted."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id_var.get()
        return True


# Credentials that travel in URLs and are not configured anywhere: WeChat takes the access token in the query
# string of every call, jscode2session the login code. A library that logs the URL (urllib3 at DEBUG) must not
# write them.
# Any name ending so (appsecret, client_secret, component_access_token) is masked as well.
URL_SECRETS = re.compile(r"((?:access_token|js_code|secret|session_key|refresh_token)=)[^&\s\"']+")


class RedactFilter(logging.Filter):
    """Replace any configured secret, and any credential in a URL, that slipped into a message with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        text = URL_SECRETS.sub(r"\1***", text)
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        redacted = self.redact(msg)
        if redacted != msg:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[0] is not None:
            # The traceback too: an exception's text is where a library puts what it was given. Formatters
            # print exc_text when it is set (another handler may have set it already).
            record.exc_text = self.redact(record.exc_text or _PLAIN.formatException(record.exc_info))
        for key, value in list(vars(record).items()):  # and the extra fields the JSON line carries
            if isinstance(value, str) and key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, self.redact(value))
        return True


_PLAIN = logging.Formatter()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", ""),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str, json_logs: bool, secrets: list[str]) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_wxapp", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._wxapp = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactFilter(secrets))
    handler.setFormatter(JsonFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("jieba").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO: nine lines around init-db's and serve's own report.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
