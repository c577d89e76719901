"""End-to-end fixtures: the real service in subprocesses, started as a newcomer would, and headless Chromium.

Each service gets its own instance directory (SQLite file, embedded Redis, dev secret). When DATABASE_URL
points at PostgreSQL, a private database is created next to it and dropped afterwards, because other test
runs use the database named in the URL. An external REDIS_URL database is flushed before and after, like
the rest of the suite does.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.helpers import ROOT, descendants, free_port, run_flask, stop_process, wait_for_health

INSTALL_HINT = "Chromium is not installed: run .ci/install-browser (it installs Debian's chromium)."
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Settings the service reads from the environment: a developer's own values must not leak into the test.
_APP_ENV_NAMES = {
    "APP_ENV",
    "INSTANCE_PATH",
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "MAX_CONTENT_LENGTH",
    "USER_TOKEN_TTL",
    "STAFF_TOKEN_TTL",
    "COOKIE_SECURE",
    "LOG_LEVEL",
    "LOG_JSON",
    "BIND",
    "WEB_CONCURRENCY",
    "WEB_THREADS",
    "WEB_TIMEOUT",
    "ACCESS_LOG",
    "FORWARDED_ALLOW_IPS",
    "PROMETHEUS_MULTIPROC_DIR",
    "WXAPP_METRICS_SHARED",
}
_APP_ENV_PREFIXES = ("WECHAT_", "WXA_", "WEBHOOK_", "FLASK_", "TEST_")


def _configured(name: str) -> str:
    return (os.environ.get(f"TEST_{name}") or os.environ.get(name) or "").strip()


# --- the service's environment --------------------------------------------------------------------


@dataclass
class ServiceEnv:
    instance: Path
    env: dict[str, str]
    database_url: str  # what the service uses (resolved: the SQLite file when none is configured)
    external_redis_url: str  # empty: the embedded Redis under instance/
    cleanups: list = field(default_factory=list)

    def redis_url(self) -> str:
        if self.external_redis_url:
            return self.external_redis_url
        from wxapp_backend.kv import ensure_embedded_redis

        return ensure_embedded_redis(self.instance)


def _create_pg_database(base_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"wxapp_e2e_{secrets.token_hex(4)}"
    engine = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return name, make_url(base_url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(base_url: str, name: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def make_service_env(instance: Path) -> ServiceEnv:
    env = {
        k: v for k, v in os.environ.items() if k not in _APP_ENV_NAMES and not k.startswith(_APP_ENV_PREFIXES)
    }
    env.update({"APP_ENV": "development", "INSTANCE_PATH": str(instance), "PYTHONUNBUFFERED": "1"})
    instance.mkdir(parents=True, exist_ok=True)
    svc = ServiceEnv(
        instance=instance,
        env=env,
        database_url=f"sqlite:///{instance / 'wxapp.sqlite3'}",
        external_redis_url=_configured("REDIS_URL"),
    )
    base_db = _configured("DATABASE_URL")
    if base_db.startswith(("postgres", "postgresql")):
        name, svc.database_url = _create_pg_database(base_db)
        svc.cleanups.append(lambda: _drop_pg_database(base_db, name))
    if base_db:
        env["DATABASE_URL"] = svc.database_url
    if svc.external_redis_url:
        env["REDIS_URL"] = svc.external_redis_url
        _flush_redis(svc.external_redis_url)
        svc.cleanups.append(lambda: _flush_redis(svc.external_redis_url))
    return svc


def close_service_env(svc: ServiceEnv) -> None:
    from wxapp_backend.kv import stop_embedded_redis

    stop_embedded_redis(svc.instance)
    errors = []
    for cleanup in reversed(svc.cleanups):
        try:
            cleanup()
        except Exception as exc:  # run every cleanup, then report
            errors.append(repr(exc))
    assert not errors, f"e2e clean-up failed: {errors}"


@pytest.fixture
def service_env(tmp_path: Path) -> Iterator[ServiceEnv]:
    svc = make_service_env(tmp_path / "instance")
    yield svc
    close_service_env(svc)


# --- the web service under gunicorn ---------------------------------------------------------------


@dataclass
class LiveServer:
    base_url: str
    admin_password: str
    service: ServiceEnv
    proc: subprocess.Popen
    stderr_path: Path


ADMIN_LINE = re.compile(r"工作台管理员账号：admin\s+密码：(\S+)")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """init-db, seed-demo, then `gunicorn -c gunicorn.conf.py wsgi:app` with two workers."""
    base = tmp_path_factory.mktemp("live")
    svc = make_service_env(base / "instance")
    proc = None
    try:
        run_flask(["init-db"], svc.env)
        seeded = run_flask(["seed-demo"], svc.env)
        found = ADMIN_LINE.search(seeded)
        assert found, f"seed-demo did not print the admin password:\n{seeded}"
        port = free_port()
        env = dict(svc.env, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2")
        stderr_path = base / "gunicorn.stderr"
        with open(base / "gunicorn.stdout", "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        server = LiveServer(f"http://127.0.0.1:{port}", found.group(1), svc, proc, stderr_path)
        wait_for_health(server.base_url, proc, stderr_path)
        yield server
    finally:
        if proc is not None:
            children = descendants(proc.pid)
            stop_process(proc)
            for pid in children:  # workers orphaned by a master that had to be killed
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        close_service_env(svc)


# --- the browser ----------------------------------------------------------------------------------


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(INSTALL_HINT, pytrace=False)
        pytest.skip(INSTALL_HINT)
    return path


@dataclass
class BrowserLog:
    requests: list[str] = field(default_factory=list)
    responses: dict[str, int] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)

    def non_loopback(self) -> list[str]:
        return [u for u in self.requests if urlsplit(u).hostname != "127.0.0.1"]


@contextmanager
def chromium_page(executable: str, *, width: int = 1280, prefix: str = "wxapp-e2e-chromium-"
                  ) -> Iterator[tuple[object, BrowserLog]]:
    """A page in a fresh headless Chromium profile `width` pixels wide, and a log of every request, response,
    console error and page error; requests to anything but the loopback are recorded and refused."""
    from playwright.sync_api import sync_playwright

    log = BrowserLog()
    profile = tempfile.mkdtemp(prefix=prefix)
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=CHROMIUM_ARGS,
                locale="zh-CN",
                viewport={"width": width, "height": 800},
                timeout=30_000,
            )
            try:
                context.set_default_timeout(10_000)
                context.on("request", lambda r: log.requests.append(r.url))
                context.on("response", lambda r: log.responses.__setitem__(r.url, r.status))

                def only_loopback(route):
                    if urlsplit(route.request.url).hostname == "127.0.0.1":
                        route.continue_()
                    else:  # recorded by the request listener; never leaves the machine
                        route.abort()

                context.route("**/*", only_loopback)
                page = context.pages[0] if context.pages else context.new_page()
                page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: log.console_errors.append(f"pageerror: {e}"))
                yield page, log
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium_executable: str) -> Iterator[tuple[object, BrowserLog]]:
    """A page in a fresh headless Chromium profile, and a log of every request, response and console error."""
    with chromium_page(chromium_executable) as opened:
        yield opened


@pytest.fixture
def database(live_server):
    """The live server's database, for reading what the browser's clicks wrote."""
    from wxapp_backend.db import Database

    db = Database(live_server.service.database_url)
    yield db
    db.engine.dispose()


@pytest.fixture
def posts(browser):
    """Every POST the page makes, by path: nothing may be sent on the staff member's behalf."""
    page, _log = browser
    sent: list[str] = []
    page.on("request", lambda r: sent.append(urlsplit(r.url).path) if r.method == "POST" else None)
    return sent
