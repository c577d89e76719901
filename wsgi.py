"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from wxapp_backend import create_app
from wxapp_backend.config import ConfigError
from wxapp_backend.kv import EmbeddedRedisError

try:
    app = create_app()
except ConfigError as exc:
    # The operator reads one line naming the variable, not a traceback; the exit status is 1.
    raise SystemExit(f"配置有误，未能启动：{exc}") from None
except EmbeddedRedisError as exc:
    raise SystemExit(f"内置 Redis 未能启动：{exc}") from None
