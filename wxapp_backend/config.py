"""Settings: the one place that reads the environment."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """Raised when the environment cannot make a valid configuration; the message names the variable (in Chinese,
    for the operator) and never shows a secret's value."""


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        # A typo (COOKIE_SECURE=ture) must not quietly turn a safety off.
        raise ConfigError(f"环境变量 {name} 应为 true 或 false（也可写 1/0、yes/no、on/off），现在是 {raw!r}")
    return value in _TRUE


def _int(env: Mapping[str, str], name: str, default: int, *, positive: bool = False) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"环境变量 {name} 应为整数，现在是 {raw!r}") from exc
    if positive and value <= 0:
        raise ConfigError(f"环境变量 {name} 应大于 0，现在是 {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, positive: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"环境变量 {name} 应为数字，现在是 {raw!r}") from exc
    if positive and not 0 < value < float("inf"):  # also refuses nan
        raise ConfigError(f"环境变量 {name} 应为大于 0 的有限数字，现在是 {raw!r}")
    return value


def web_count(env: Mapping[str, str], name: str, default: int, least: int = 1) -> int:
    """WEB_CONCURRENCY, WEB_THREADS, WEB_TIMEOUT: a whole number of at least `least` (gunicorn.conf.py, and `serve`
    before it starts gunicorn, which reads WEB_CONCURRENCY itself when imported and died of "abc" with a traceback).
    WEB_CONCURRENCY=0 started a master with no worker (nothing answered, no word why), WEB_THREADS=0 workers that
    failed to boot."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and int(raw) >= least):
        raise ConfigError(f"环境变量 {name} 应为不小于 {least} 的整数，现在是 {raw!r}")
    return int(raw)


# Names whose values must never reach a log line.
SECRET_FIELDS = ("secret_key", "wechat_secret", "wechat_aes_key", "wechat_aes_key_previous", "wxa_secret",
                 "wxa_aes_key", "wxa_aes_key_previous", "wechat_token", "wxa_token", "metrics_token")


@dataclass(frozen=True)
class Settings:
    """Frozen application settings; build with `Settings.from_env()`."""

    env: str = "development"  # development | production | testing
    secret_key: str = ""
    instance_path: Path = ROOT / "instance"
    # Appeal photos (UPLOADS_PATH); None: instance/uploads. With several machines, a folder they all mount.
    uploads_path: Path | None = None
    database_url: str = ""  # empty: SQLite file under instance/
    redis_url: str = ""  # empty: private redis server under instance/
    # Official Account
    wechat_appid: str = ""
    wechat_secret: str = ""
    wechat_token: str = ""
    wechat_aes_key: str = ""
    wechat_aes_key_previous: str = ""
    # None (unset): an account with an EncodingAESKey refuses plain pushes, one without takes them.
    wechat_require_encryption: bool | None = None
    # Mini-program
    wxa_appid: str = ""
    wxa_secret: str = ""
    wxa_token: str = ""
    wxa_aes_key: str = ""
    wxa_aes_key_previous: str = ""
    wxa_msg_format: str = "json"  # xml | json
    wxa_state: str = "formal"  # miniprogram_state for subscribe messages: developer | trial | formal
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_api_timeout: float = 5.0
    # Webhook
    webhook_deadline: float = 4.0
    webhook_timestamp_window: int = 300
    webhook_max_body: int = 256 * 1024
    # HTTP and sessions
    max_content_length: int = 16 * 1024 * 1024
    api_max_json_body: int = 1024 * 1024
    user_token_ttl: int = 7 * 24 * 3600
    staff_token_ttl: int = 12 * 3600
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    cookie_secure: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    # METRICS_TOKEN: when set, GET /metrics answers only `Authorization: Bearer <token>` (401 otherwise); unset, it
    # stays open as the contract has it (then keep it off the internet at the reverse proxy). A secret: never logged.
    metrics_token: str = ""
    # Reverse proxies whose X-Forwarded-For is believed (comma list, "*" for any), as gunicorn's setting.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Jobs
    queue_name: str = "default"
    # Notifications: kind -> subscribe-message template file (YAML/JSON, see notices/kinds.py)
    notify_templates_path: str = ""
    # Tuning knobs read by domain code (from the environment: _TUNING; tests set others).
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.instance_path / 'wxapp.sqlite3'}"

    @property
    def uses_embedded_redis(self) -> bool:
        return not self.redis_url

    def secret_values(self) -> list[str]:
        """The configured secret strings, for log redaction."""
        return [v for v in (getattr(self, n) for n in SECRET_FIELDS) if isinstance(v, str) and len(v) >= 4]

    def with_overrides(self, **kw) -> Settings:
        return replace(self, **kw)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; production refuses to start without its secrets."""
        env = os.environ if environ is None else environ
        app_env = (env.get("APP_ENV") or env.get("FLASK_ENV") or "development").strip().lower()
        if app_env not in {"development", "production", "testing"}:
            raise ConfigError(f"环境变量 APP_ENV 应为 development、production 或 testing，现在是 {app_env!r}")
        # Absolute: Flask refuses a relative instance path, and `serve` starts its children in the checkout.
        instance = _folder(env, "INSTANCE_PATH", ROOT / "instance", make=True)
        # prometheus_client's multiprocess folder (gunicorn.conf.py, `serve`): one that did not exist (under /run
        # after a reboot) failed every request and job outside gunicorn on opening its metrics file.
        _folder(env, "PROMETHEUS_MULTIPROC_DIR", None, make=True)
        secret = env.get("SECRET_KEY", "")
        missing = []
        if app_env == "production":
            if not secret:
                missing.append("SECRET_KEY")
            elif len(secret) < 16:
                raise ConfigError("环境变量 SECRET_KEY 太短：生产环境至少需要 16 个字符")
        if missing:
            raise ConfigError("生产环境缺少必需的环境变量：" + "、".join(missing))
        if not secret:
            secret = _dev_secret(instance)
        fmt = (env.get("WXA_MSG_FORMAT") or "json").strip().lower()
        if fmt not in {"xml", "json"}:
            raise ConfigError(f"环境变量 WXA_MSG_FORMAT 应为 xml 或 json，现在是 {fmt!r}")
        wxa_state = (env.get("WXA_STATE") or "formal").strip().lower()
        if wxa_state not in {"developer", "trial", "formal"}:
            # The only miniprogram_state values WeChat knows: any other would go out with every subscribe message.
            raise ConfigError(f"环境变量 WXA_STATE 应为 developer、trial 或 formal，现在是 {wxa_state!r}")
        log_level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"环境变量 LOG_LEVEL 应为 DEBUG、INFO、WARNING、ERROR 或 CRITICAL，现在是 {log_level!r}")
        aes = {name: _aes_key(env, name) for name in ("WECHAT_AES_KEY", "WECHAT_AES_KEY_PREVIOUS", "WXA_AES_KEY",
                                                      "WXA_AES_KEY_PREVIOUS")}
        settings = cls(
            env=app_env,
            secret_key=secret,
            instance_path=instance,
            uploads_path=_folder(env, "UPLOADS_PATH", None),
            database_url=_database_url(env),
            redis_url=_redis_url(env),
            wechat_appid=env.get("WECHAT_APPID", ""),
            wechat_secret=env.get("WECHAT_SECRET", ""),
            wechat_token=env.get("WECHAT_TOKEN", ""),
            wechat_aes_key=aes["WECHAT_AES_KEY"],
            wechat_aes_key_previous=aes["WECHAT_AES_KEY_PREVIOUS"],
            wechat_require_encryption=(None if not (env.get("WECHAT_REQUIRE_ENCRYPTION") or "").strip()
                                       else _bool(env, "WECHAT_REQUIRE_ENCRYPTION")),
            wxa_appid=env.get("WXA_APPID", ""),
            wxa_secret=env.get("WXA_SECRET", ""),
            wxa_token=env.get("WXA_TOKEN", ""),
            wxa_aes_key=aes["WXA_AES_KEY"],
            wxa_aes_key_previous=aes["WXA_AES_KEY_PREVIOUS"],
            wxa_msg_format=fmt,
            wxa_state=wxa_state,
            wechat_api_base=_api_base(env),
            wechat_api_timeout=_float(env, "WECHAT_API_TIMEOUT", 5.0, positive=True),
            webhook_deadline=_float(env, "WEBHOOK_DEADLINE", 4.0, positive=True),
            webhook_timestamp_window=_int(env, "WEBHOOK_TIMESTAMP_WINDOW", 300),
            max_content_length=_int(env, "MAX_CONTENT_LENGTH", 16 * 1024 * 1024, positive=True),
            user_token_ttl=_int(env, "USER_TOKEN_TTL", 7 * 24 * 3600, positive=True),
            staff_token_ttl=_int(env, "STAFF_TOKEN_TTL", 12 * 3600, positive=True),
            cookie_secure=_bool(env, "COOKIE_SECURE", default=app_env == "production"),
            log_level=log_level,
            log_json=_bool(env, "LOG_JSON", default=True),
            notify_templates_path=env.get("NOTIFY_TEMPLATES", "").strip(),
            forwarded_allow_ips=_proxies(env),
            metrics_token=_metrics_token(env),
            extra=_tuning(env),
        )
        return settings

    def describe(self) -> dict[str, str]:
        """Settings for display, secrets masked."""
        out = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                out[f.name] = "***"
            elif f.name in ("database_url", "redis_url") and value:
                out[f.name] = _without_password(str(value))
            else:
                out[f.name] = str(value)
        return out


def _without_password(url: str) -> str:
    """A connection URL with its password (if any) shown as ***: redis://:pw@host, postgresql://user:pw@host/db."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:  # a URL urllib cannot read: show no part of it
        return "***"


# URLs are checked here, where the variable's name is known: a wrong one stopped the start with a library's
# traceback that named no variable. The value itself is never shown (it may hold a password).
def _database_url(env: Mapping[str, str]) -> str:
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        return ""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from .db import normalise_url

    try:
        backend = make_url(normalise_url(url)).get_backend_name()
    except (ArgumentError, ValueError):
        backend = ""
    if backend not in {"postgresql", "sqlite"}:
        raise ConfigError("环境变量 DATABASE_URL 格式不对：应形如 postgresql+psycopg://用户:密码@主机:5432/库名"
                          "（也可用 postgres:// 或 sqlite:///文件路径）")
    return url


def _folder(env: Mapping[str, str], name: str, default: Path | None, *, make: bool = False) -> Path | None:
    """A folder setting, absolute; one that names a file (or, with `make`, a folder that cannot be made) stopped
    the start with pathlib's traceback, or (UPLOADS_PATH) failed every appeal photo later."""
    raw = (env.get(name) or "").strip()
    if not raw and default is None:
        return None
    path = Path(raw or default).absolute()
    try:
        if make:
            path.mkdir(parents=True, exist_ok=True)
        elif path.exists() and not path.is_dir():
            raise NotADirectoryError(path)
    except OSError as exc:
        raise ConfigError(f"环境变量 {name} 应为一个可用的文件夹，{path} 不行"
                          f"（{'它是一个文件' if path.is_file() else '无法创建：' + (exc.strerror or type(exc).__name__)}）") from None
    return path


def _redis_url(env: Mapping[str, str]) -> str:
    url = env.get("REDIS_URL", "").strip()
    if not url:
        return url
    from redis.connection import parse_url

    parts = urlsplit(url)
    try:
        port = parts.port  # ValueError for a port that is not a number or beyond 65535
        parse_url(url)  # ValueError for an option it cannot read (?db=abc, ?socket_timeout=x)
    except ValueError:
        port = -1
    # redis-py quietly takes database 0 for a path it cannot read as a number (redis://host:6379/abc): another
    # service's or environment's database.
    if parts.scheme not in {"redis", "rediss", "unix"} or port == -1 or (
            parts.scheme != "unix" and not re.fullmatch(r"/?(\d{1,5})?/?", parts.path)):
        raise ConfigError("环境变量 REDIS_URL 格式不对：应形如 redis://主机:6379/0（也可用 rediss:// 或 unix://；"
                          "端口和末尾的库号须为数字）")
    return url


def _api_base(env: Mapping[str, str]) -> str:
    url = (env.get("WECHAT_API_BASE") or "https://api.weixin.qq.com").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError("环境变量 WECHAT_API_BASE 应为 http:// 或 https:// 开头的网址（不设置即为微信官方接口）")
    return url


def _proxies(env: Mapping[str, str]) -> str:
    """FORWARDED_ALLOW_IPS: addresses or "*", as gunicorn takes them (a network such as 10.0.0.0/8 is not
    taken): a wrong entry was never matched, so every client behind the proxy was counted as the proxy."""
    import ipaddress

    raw = (env.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1").strip()
    for part in (p.strip() for p in raw.split(",")):
        if part and part != "*":
            try:
                ipaddress.ip_address(part)
            except ValueError:
                raise ConfigError(f"环境变量 FORWARDED_ALLOW_IPS 应为逗号分隔的反向代理 IP 地址（或 *），"
                                  f"{part!r} 不是 IP 地址（不支持网段写法）") from None
    return raw


def _metrics_token(env: Mapping[str, str]) -> str:
    """METRICS_TOKEN, when set: long enough that the scraper's header cannot be guessed (/metrics has no rate limit)."""
    token = (env.get("METRICS_TOKEN") or "").strip()
    if token and (len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token):
        raise ConfigError(f"环境变量 METRICS_TOKEN 应为至少 16 位、不含空格的字母数字等可见字符（现在是 {len(token)} 位）；"
                          "不需要保护 /metrics 时不设置即可")
    return token


def _aes_key(env: Mapping[str, str], name: str) -> str:
    """An EncodingAESKey as the WeChat admin page shows it (43 base64 characters for 32 bytes), surrounding
    whitespace of a paste dropped; a wrong one stops the start naming the variable (never showing the key)."""
    key = (env.get(name) or "").strip()
    if not key:
        return ""
    try:
        ok = len(key) == 43 and len(base64.b64decode(key + "=", validate=True)) == 32
    except binascii.Error:
        ok = False
    if not ok:
        raise ConfigError(f"环境变量 {name} 应为微信后台显示的 43 位 EncodingAESKey（现在是 {len(key)} 位）")
    return key


# Optional tuning knobs read by domain code through settings.extra (name -> parser, largest sensible value).
_TUNING = {"FANOUT_RATE": (float, 10_000.0), "FANOUT_BURST": (int, 10_000), "FANOUT_JOBS": (int, 64),
           "WECHAT_QUOTA_COOLDOWN": (float, 86_400.0),  # seconds an API waits after its 45009 (wechat/client.py)
           # Seconds between a busy job worker's heartbeats; a worker elsewhere that died is found ~7 beats on.
           "JOB_HEARTBEAT": (int, 60),
           # Per-user / per-address limits of the mini-program API (http.throttle reads `<name>_limit`).
           **{f"{name}_LIMIT": (int, 100_000) for name in ("WXA_LOGIN", "CHAT", "KB_SEARCH", "KB_FEEDBACK",
                                                           "REGISTRATION", "SUBSCRIBE_RESULTS", "ENTERPRISE_BINDING",
                                                           "PROFILE", "SUBSCRIPTIONS")}}


def _tuning(env: Mapping[str, str]) -> dict:
    out = {}
    for name, (kind, most) in _TUNING.items():
        if env.get(name, "").strip():
            value = _float(env, name, 0.0) if kind is float else _int(env, name, 0)
            if not (0 < value <= most):  # also refuses nan; inf is above the most
                raise ConfigError(f"环境变量 {name} 应大于 0 且不超过 {most:g}，现在是 {env[name]!r}")
            out[name.lower()] = value
    return out


def _dev_secret(instance: Path) -> str:
    """A per-checkout random secret for development, kept under instance/ so sessions survive restarts."""
    import secrets

    instance.mkdir(parents=True, exist_ok=True)
    path = instance / "dev-secret-key"
    try:
        # O_EXCL: when several processes start at once, exactly one writes and all read the same value. 0600: it
        # signs the console's cookies and the check-in codes.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    except FileExistsError:
        if path.stat().st_mode & 0o077:  # written readable to all by an earlier version
            with contextlib.suppress(OSError):  # not ours to change: it still works
                path.chmod(0o600)
    for _ in range(50):
        value = path.read_text().strip()
        if value:
            return value
        import time

        time.sleep(0.01)
    raise ConfigError(f"{path} 是空文件；请删除它后重新启动")
