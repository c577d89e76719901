"""Shared fixtures: one app per test session on the embedded defaults or on DATABASE_URL / REDIS_URL.

Isolation: every test starts with empty tables and an empty Redis database. We truncate after each test
rather than wrap it in a rolled-back outer transaction, because many tests commit from several
connections at once (job workers, concurrent requests, gunicorn) and must see each other's commits.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from wxapp_backend import create_app
from wxapp_backend.config import Settings
from wxapp_backend.db import Base
from wxapp_backend.wechat.standin import WeChatStandIn

WXA_APPID = "wxa0000000000demo"
WXA_SECRET = "wxa-secret-for-tests"
OA_APPID = "wxoa000000000demo"
OA_SECRET = "oa-secret-for-tests"


def _env_url(name: str) -> str:
    return os.environ.get(f"TEST_{name}") or os.environ.get(name) or ""


@pytest.fixture(scope="session")
def standin() -> Iterator[object]:
    s = WeChatStandIn()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, standin) -> Settings:
    instance = tmp_path_factory.mktemp("instance")
    env = {
        "APP_ENV": "testing",
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": secrets.token_urlsafe(24),
        "DATABASE_URL": _env_url("DATABASE_URL"),
        "REDIS_URL": _env_url("REDIS_URL"),
        "WECHAT_API_BASE": standin.base_url,
        "WXA_APPID": WXA_APPID,
        "WXA_SECRET": WXA_SECRET,
        "WECHAT_APPID": OA_APPID,
        "WECHAT_SECRET": OA_SECRET,
        "LOG_JSON": "1",
        "LOG_LEVEL": "WARNING",
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def app(settings: Settings):
    from wxapp_backend.cli import upgrade_database
    from wxapp_backend.kv import stop_embedded_redis

    application = create_app(settings)
    with application.app_context():
        state = application.extensions["wxapp"]
        if state.db.dialect == "postgresql":
            # Start from a clean schema: the suite owns this database.
            with state.db.engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        upgrade_database()
    yield application
    application.extensions["wxapp"].db.engine.dispose()
    if settings.uses_embedded_redis:
        stop_embedded_redis(settings.instance_path)


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Empty tables and Redis after every test that used the app; forget the stand-in's calls after every test that
    used it (one that talks to it without the app left its counters to the next)."""
    yield
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin").reset()
    if "app" not in request.fixturenames:
        return
    application = request.getfixturevalue("app")
    state = application.extensions["wxapp"]
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with state.db.engine.begin() as conn:
        if state.db.dialect == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))
    state.redis.flushdb()
    # The process's knowledge-base index mirrors the table just emptied, under a version key just flushed: the
    # next test would search this one's entries (for up to a minute when it adds rows without a version bump).
    application.extensions.pop("wxapp_kb", None)


@pytest.fixture
def app_ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def _assert_engine(app):
    """An autocommit engine for the `db` fixture: its reads hold no lock and no stale snapshot.

    The application's SQLite engine starts every transaction with BEGIN IMMEDIATE (the write lock), so a
    long-lived test session on it would block every request the test makes.
    """
    from sqlalchemy import create_engine

    url = app.extensions["wxapp"].db.url
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    engine = create_engine(url, isolation_level="AUTOCOMMIT", **kwargs)
    yield engine
    engine.dispose()


@pytest.fixture
def db(app_ctx, _assert_engine):
    """A session for arranging and asserting; each statement commits at once (call expire_all to re-read)."""
    from sqlalchemy.orm import Session

    session = Session(_assert_engine, expire_on_commit=False)
    yield session
    session.close()


@pytest.fixture
def redis_client(app):
    return app.extensions["wxapp"].redis


@pytest.fixture
def run_jobs(app):
    """Run every queued job now, in this process (a burst worker without forking)."""
    from rq import SimpleWorker

    class CountingWorker(SimpleWorker):
        ran = 0

        def perform_job(self, job, queue):
            self.ran += 1
            return super().perform_job(job, queue)

    def run(max_jobs: int | None = None) -> int:
        """Returns how many jobs ran (succeeded or failed)."""
        state = app.extensions["wxapp"]
        with app.app_context():
            worker = CountingWorker([state.queue], connection=state.redis)
            worker.work(burst=True, max_jobs=max_jobs, with_scheduler=False)
            return worker.ran

    return run


# --- factories -----------------------------------------------------------------------------------

@pytest.fixture
def make_grid(app_ctx):
    from wxapp_backend.db import session_scope
    from wxapp_backend.enterprises.models import Grid

    def make(**kw) -> Grid:
        kw.setdefault("name", f"网格{secrets.token_hex(3)}")
        with session_scope() as s:
            g = Grid(**kw)
            s.add(g)
        return g

    return make


@pytest.fixture
def make_building(app_ctx):
    from wxapp_backend.db import session_scope
    from wxapp_backend.enterprises.models import Building

    def make(**kw) -> Building:
        kw.setdefault("name", f"楼宇{secrets.token_hex(3)}")
        kw.setdefault("address", "新华路 1 号")
        with session_scope() as s:
            b = Building(**kw)
            s.add(b)
        return b

    return make


@pytest.fixture
def make_enterprise(app_ctx):
    from wxapp_backend.db import session_scope
    from wxapp_backend.demo import demo_credit_code
    from wxapp_backend.enterprises.models import Enterprise

    counter = iter(range(1, 10**6))

    def make(**kw) -> Enterprise:
        kw.setdefault("name", f"测试企业{secrets.token_hex(3)}有限公司")
        kw.setdefault("credit_code", demo_credit_code("91310105", 500000 + next(counter)))
        with session_scope() as s:
            e = Enterprise(**kw)
            s.add(e)
        return e

    return make


@pytest.fixture
def make_user(app_ctx):
    from wxapp_backend.auth.models import User
    from wxapp_backend.db import session_scope

    def make(**kw) -> User:
        kw.setdefault("openid", "o" + secrets.token_hex(13))
        with session_scope() as s:
            u = User(**kw)
            s.add(u)
        return u

    return make


@pytest.fixture
def make_activity(app_ctx):
    """A published activity starting tomorrow (three hours long); keyword arguments override the columns."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Activity
    from wxapp_backend.db import session_scope

    def make(**kw) -> Activity:
        start = kw.pop("starts_at", datetime.now(UTC) + timedelta(days=1))
        kw = {"category": "vertical_marathon", "title": "垂直马拉松", "address": "中心大厦", "capacity": 10,
              "starts_at": start, "ends_at": start + timedelta(hours=3), **kw}
        with session_scope() as s:
            a = Activity(**kw)
            s.add(a)
        return a

    return make


@pytest.fixture
def staff(make_staff):
    """A console account of role staff (modules may define their own)."""
    return make_staff(role="staff")


@pytest.fixture
def new_activity(client, staff, staff_headers):
    """An activity published by `staff` through the console API (two seats and a waitlist, in two days unless
    `start` says otherwise); keyword arguments override the request's fields. Returns its id."""
    from datetime import UTC, datetime, timedelta

    def make(**kw):
        start = kw.pop("start", datetime.now(UTC) + timedelta(days=2))
        body = {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂",
                "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=2)).isoformat(),
                "capacity": 2, "waitlist_enabled": True, **kw}
        resp = client.post("/api/v1/staff/activities", json=body, headers=staff_headers(staff))
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()["id"]

    return make


@pytest.fixture
def user_token(app):
    from wxapp_backend.auth import tokens

    def issue(user) -> dict[str, str]:
        state = app.extensions["wxapp"]
        token = tokens.issue(state.redis, "user", user.id, 600)
        return {"Authorization": f"Bearer {token}"}

    return issue


@pytest.fixture
def make_staff(app_ctx):
    from wxapp_backend.auth.services import create_staff
    from wxapp_backend.db import session_scope

    def make(username: str | None = None, role: str = "admin", department: str = "", password: str = "Passw0rd!x"):
        username = username or f"staff_{secrets.token_hex(3)}"
        with session_scope() as s:
            staff = create_staff(s, username=username, password=password, role=role,
                                 department=department or ("营商办" if role == "dept" else ""))
        staff.plain_password = password  # type: ignore[attr-defined]
        return staff

    return make


@pytest.fixture
def published_notice(app_ctx, make_user, make_staff, monkeypatch):
    """publish(n, **tuning): a published notice (not yet expanded) to n new users (or to the users listed) who all
    hold credit for its template; `tuning` sets fan-out knobs (fanout_send_chunk=2 ...) over a fast limiter and one send job. Returns the
    notice id."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import broadcast, credits
    from wxapp_backend.notices.kinds import get_kind

    def publish(n: int | list, **tuning) -> int:
        extra = app_ctx.extensions["wxapp"].settings.extra
        for k, v in {"fanout_rate": 10000, "fanout_burst": 100, "fanout_jobs": 1, **tuning}.items():
            monkeypatch.setitem(extra, k, v)
        template = get_kind("notice").template_id
        users = [make_user() for _ in range(n)] if isinstance(n, int) else n  # or the test's own users
        actor = broadcast.Actor("staff", make_staff(role="staff").id, role="staff")
        with session_scope() as s:
            for u in users:
                credits.add_credit(s, u.id, template)
            nid = broadcast.create_notice(s, actor, {"title": "政策速递", "summary": "新政策发布",
                                                     "audience": {"all": True}}).id
        with session_scope() as s:
            broadcast.publish(s, actor, nid)
        return nid

    return publish


@pytest.fixture
def staff_headers(app):
    from wxapp_backend.auth import tokens

    def issue(staff) -> dict[str, str]:
        state = app.extensions["wxapp"]
        token = tokens.issue(state.redis, "staff", staff.id, 600)
        return {"Authorization": f"Bearer {token}"}

    return issue


@pytest.fixture
def console_login(client):
    """Log a staff member into the console through the real form; returns the CSRF token."""
    import re

    def login(staff) -> str:
        page = client.get("/console/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                                    "csrf_token": token})
        assert resp.status_code == 302, resp.get_data(as_text=True)
        page = client.get("/console/").get_data(as_text=True)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    return login


def pytest_collection_modifyitems(config, items):
    """Tests marked postgres need row locks and many connections: they say so when run on SQLite."""
    url = _env_url("DATABASE_URL")
    if url.startswith(("postgres", "postgresql")):
        return
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL); .ci/run runs it"))


ROOT = Path(__file__).resolve().parent.parent
