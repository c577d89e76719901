"""Notices + CLI QA (session 18): the 30-second “刚测试过” lock of 发给自己测试 holds only for a test that was really
sent (a failed commit releases it, and its Idempotency-Key does not answer “sent”), Redis down refuses with a
Chinese 503 and sends nothing, a burst of presses sends one test; the CLI refuses a database at an older
migration for every command that uses it, and its arguments' mistakes are said in Chinese without a traceback."""

from __future__ import annotations

import itertools
import threading
import warnings

import click
import pytest
import redis
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests.integration.test_notices2_qa_s17 import (  # noqa: F401
    SUBSCRIBE,
    _create,
    _credits,
    _test,
    _with_credit,
)
from wxapp_backend.audit import AuditLog
from wxapp_backend.notices import broadcast
from wxapp_backend.notices.models import Notification


@pytest.fixture
def tester(make_staff, staff_headers, make_user, client):
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    me = _with_credit(make_user, credit=3)[0]
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": me.id}, headers=h).status_code == 200
    return staff, h, me


@pytest.fixture
def commit_fails_once():
    """The next commit of a transaction that wrote a test notification fails (a dropped connection, a
    serialization failure): the test is rolled back, nothing is sent."""
    fired = []

    def boom(session: Session) -> None:
        if fired:
            return
        if any(getattr(job, "func", None) == "wxapp_backend.notices.jobs.deliver_notification"
               for job in session.info.get("wxapp_pending_jobs", [])):
            fired.append(1)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    event.listen(Session, "before_commit", boom)
    yield fired
    event.remove(Session, "before_commit", boom)


def _tests_written(db) -> int:
    db.expire_all()
    return len(db.scalars(select(Notification).where(Notification.ref.like("notice:%:test"))).all())


# --- 1. the lock says a test was really sent -----------------------------------------------------------------------

def test_a_test_whose_commit_failed_does_not_lock_the_next_press(app_ctx, client, tester, commit_fails_once,
                                                                 run_jobs, standin, db, redis_client):
    """The lock was set before the commit and kept when it failed: 30 s of “刚刚已发给您” with nothing sent."""
    staff, h, me = tester
    nid = _create(client, h)
    failed = _test(client, h, nid)
    assert commit_fails_once and failed.status_code == 500
    assert _tests_written(db) == 0
    assert redis_client.get(broadcast.recent_test_key(staff.id, nid)) is None
    again = _test(client, h, nid)
    assert again.status_code == 200 and again.get_json()["sent"] is True, again.get_json()
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1 and _credits(db, me) == 2
    # Negative control: the test that went out holds the lock.
    assert _test(client, h, nid).status_code == 409


def test_an_idempotency_key_of_a_failed_test_does_not_answer_sent(app_ctx, client, tester, commit_fails_once,
                                                                 run_jobs, standin, db):
    """The key's result was kept before the commit: the client's retry was told {"sent": true} and nothing went."""
    staff, h, me = tester
    nid = _create(client, h)
    assert _test(client, h, nid, **{"Idempotency-Key": "k-1"}).status_code == 500
    retry = _test(client, h, nid, **{"Idempotency-Key": "k-1"})
    assert retry.status_code == 200 and retry.get_json()["sent"] is True
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1 and _tests_written(db) == 1
    # Negative control: the retry of the test that went out answers it without sending again.
    third = _test(client, h, nid, **{"Idempotency-Key": "k-1"})
    assert third.get_json() == retry.get_json()
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1


def test_the_console_button_after_a_failed_commit_sends(app_ctx, client, make_staff, make_user, console_login,
                                                       staff_headers, commit_fails_once, run_jobs, standin, db):
    staff = make_staff(role="staff")
    me = _with_credit(make_user, credit=3)[0]
    csrf = console_login(staff)
    nid = _create(client, staff_headers(staff))
    client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": str(me.id)})
    first = client.post(f"/console/notices/{nid}/test", data={"csrf_token": csrf}, follow_redirects=True)
    assert first.status_code == 500 and commit_fails_once
    second = client.post(f"/console/notices/{nid}/test", data={"csrf_token": csrf}, follow_redirects=True)
    assert "测试消息已发给您的测试接收人" in second.get_data(as_text=True)
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1 and _credits(db, me) == 2


class _TestKeysDown:
    """The application's Redis, refusing every command on the test-send keys (Redis down at that moment)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if name not in ("get", "set", "delete", "eval", "evalsha", "register_script"):
            return attr

        def call(*args, **kwargs):
            if name == "register_script" or any(isinstance(a, str) and a.startswith("notice-test:") for a in args):
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            return attr(*args, **kwargs)

        return call


def test_with_redis_down_the_test_is_refused_in_chinese_and_nothing_is_sent(app, app_ctx, client, tester,
                                                                           monkeypatch, run_jobs, standin, db):
    """Redis down: a 500 “服务开了个小差”. Without the lock a double click would send twice, so the test is refused
    with a 503 that says why, and nothing is written or sent."""
    staff, h, me = tester
    nid = _create(client, h)
    state = app.extensions["wxapp"]
    monkeypatch.setattr(state, "redis", _TestKeysDown(state.redis))
    for headers in ({}, {"Idempotency-Key": "k-9"}):
        resp = _test(client, h, nid, **headers)
        assert resp.status_code == 503, resp.get_json()
        body = resp.get_json()
        assert body["error"] == "test_unavailable" and "稍后" in body["message"] and "没有发出" in body["message"]
    monkeypatch.undo()
    run_jobs()
    assert _tests_written(db) == 0 and standin.count(SUBSCRIBE) == 0
    db.expire_all()
    assert not db.scalars(select(AuditLog).where(AuditLog.action == "notice.test_sent")).all()
    assert _test(client, h, nid).get_json()["sent"] is True  # Redis back: the test goes


def _presses(app, h, nid, n=6):
    barrier = threading.Barrier(n)
    out: list = []
    guard = threading.Lock()

    def one():
        with app.app_context():
            c = app.test_client()
            barrier.wait()
            r = c.post(f"/api/v1/staff/notices/{nid}/test", json={}, headers=h)
            with guard:
                out.append((r.status_code, (r.get_json() or {}).get("error")))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sorted(out, key=str)


@pytest.mark.parametrize("lock", [True, False], ids=["lock", "negative-control-no-lock"])
def test_presses_at_once_send_one_test(app, app_ctx, tester, client, monkeypatch, run_jobs, standin, db, lock):
    staff, h, me = tester
    nid = _create(client, h)
    if not lock:  # every press gets a key of its own: the lock holds nothing
        fresh = itertools.count()
        monkeypatch.setattr(broadcast, "recent_test_key", lambda s, n: f"notice-test:sent:{s}:{n}:{next(fresh)}")
    out = _presses(app, h, nid)
    run_jobs()
    sent = [code for code, _ in out if code == 200]
    if lock:
        assert len(sent) == 1 and all(o == (409, "test_just_sent") for o in out if o[0] != 200), out
        assert standin.count(SUBSCRIBE) == 1 and _tests_written(db) == 1
    else:
        assert len(sent) == 6 and _tests_written(db) == 6, out


# --- 2. every command that uses the tables refuses a database at an older migration ---------------------------------

@pytest.fixture(scope="module")
def behind_app(settings, tmp_path_factory):
    """An application whose database is one migration behind this release (upgraded code, init-db not run)."""
    from alembic import command

    import wxapp_backend
    from wxapp_backend.cli import alembic_config, upgrade_database

    path = tmp_path_factory.mktemp("behind") / "behind.sqlite3"
    behind = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{path}"))
    with behind.app_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite's batch rebuild cannot reflect an expression index: said, harmless
        upgrade_database()
        command.downgrade(alembic_config(), "-1")
    yield behind
    behind.extensions["wxapp"].db.engine.dispose()


def _kb_file(tmp_path):
    f = tmp_path / "kb.csv"
    f.write_text("id,question,answer\nq1,怎么办营业执照,到一网通办申请\n", encoding="utf-8")
    return f


BEHIND_COMMANDS = {
    "kb export": lambda tmp: ["kb", "export", str(tmp / "out.yaml")],
    "kb search": lambda tmp: ["kb", "search", "营业执照"],
    "kb import": lambda tmp: ["kb", "import", str(_kb_file(tmp))],
    "link-followers": lambda tmp: ["link-followers"],
    "create-staff": lambda tmp: ["create-staff", "zhangsan", "--password", "Secret123", "--role", "staff"],
    "seed-demo": lambda tmp: ["seed-demo"],
    "worker": lambda tmp: ["worker", "--burst"],
    "beat": lambda tmp: ["beat"],
    "chat": lambda tmp: ["chat"],
    "appeals tick": lambda tmp: ["appeals", "tick"],
    "appeals weekly": lambda tmp: ["appeals", "weekly"],
}


@pytest.mark.parametrize("name", list(BEHIND_COMMANDS))
def test_commands_refuse_a_database_at_an_older_migration(behind_app, tmp_path, name):
    """kb export wrote a backup of the old schema and kb search answered from it (or died on a missing column with
    a traceback) while the other commands said to run init-db; link-followers queued jobs against it."""
    with behind_app.app_context():
        result = behind_app.test_cli_runner().invoke(args=BEHIND_COMMANDS[name](tmp_path), input="你好\n")
    assert result.exit_code == 1, result.output
    assert "数据库还停在迁移版本" in result.output and "init-db" in result.output, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out.yaml").exists()
    with behind_app.app_context():
        from sqlalchemy import text

        with behind_app.extensions["wxapp"].db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM staff_users")).scalar() == 0


# Commands that do not read the tables as they are: init-db and serve migrate them first; stop-redis uses none.
NO_SCHEMA_CHECK = {"init-db", "serve", "stop-redis"}


def test_every_command_is_checked_against_an_older_migration(app):
    """A command added later without the check is caught here: it is either in BEHIND_COMMANDS or exempt."""

    def leaves(group, prefix=""):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from leaves(cmd, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}"

    assert set(leaves(app.cli)) == set(BEHIND_COMMANDS) | NO_SCHEMA_CHECK
