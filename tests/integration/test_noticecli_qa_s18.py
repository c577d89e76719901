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
    tester,  # noqa: F401 (a fixture)
)
from wxapp_backend.audit import AuditLog
from wxapp_backend.notices import broadcast
from wxapp_backend.notices.models import Notification


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


# --- 3. the CLI at large: help, bad arguments, Ctrl-C, progress -----------------------------------------------------

def _command_paths(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _command_paths(cmd, (*prefix, name))


def test_every_command_s_help_is_in_chinese(app, app_ctx):
    """`--help` was click's English frame round the Chinese text: Usage:, Options:, Show this message and exit.,
    [required], [default: 5; …]."""
    runner = app.test_cli_runner()
    for path in _command_paths(app.cli):
        result = runner.invoke(args=[*path, "--help"])
        out = result.output
        assert result.exit_code == 0, (path, out)
        first = out.splitlines()[0]
        assert first.startswith("用法：") and f" {' '.join(path)} " in f"{first} ", (path, out)
        assert "选项：" in out, (path, out)
        for english in ("Usage:", "Options", "Commands", "Show this message", "required]", "default:"):
            assert english not in out, (path, english, out)
        assert "显示本帮助并退出" in out, (path, out)
    for path in _command_paths(app.cli):
        cmd = app.cli
        for name in path:
            cmd = cmd.commands[name]
        assert cmd.help and any("\u4e00" <= ch <= "\u9fff" for ch in cmd.help), path
        assert cmd.help.rstrip().endswith("。"), (path, cmd.help)
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help and any("\u4e00" <= ch <= "\u9fff" for ch in p.help), (path, p.name)


def test_a_group_without_its_sub_command_lists_them_aligned(app, app_ctx):
    result = app.test_cli_runner().invoke(args=["appeals"])
    assert result.exit_code == 2
    rows = [line for line in result.output.splitlines() if line.startswith("  ")]
    assert len(rows) == 2 and len({line.index(next(ch for ch in line if "\u4e00" <= ch <= "\u9fff"))
                                   for line in rows}) == 1, result.output


def test_kb_search_with_an_empty_question_is_a_usage_mistake(app, app_ctx, monkeypatch):
    """`kb search ""` loaded the whole knowledge base (tens of seconds at 20,000 entries) to say the question was
    empty, with exit status 0."""
    from wxapp_backend.knowledge_store import cli as kb_cli

    def no_load():
        raise AssertionError("the index was loaded for an empty question")

    monkeypatch.setattr(kb_cli, "get_runtime", no_load)
    for q in ("", "   ", "\u3000"):
        result = app.test_cli_runner().invoke(args=["kb", "search", q])
        assert result.exit_code == 2 and "要检索的问题" in result.output, result.output
        assert "Traceback" not in result.output


def _kb_count(app) -> tuple[int, int]:
    from sqlalchemy import func, text

    from wxapp_backend.knowledge_store.models import KBEntry

    with app.extensions["wxapp"].db.engine.connect() as conn:
        return (conn.execute(select(func.count(KBEntry.id))).scalar(),
                conn.execute(text("SELECT count(*) FROM audit_logs WHERE action LIKE 'kb.%'")).scalar())


def _big_csv(tmp_path, n=50):
    f = tmp_path / "big.csv"
    rows = "".join(f"b{i},第{i}号问题：如何申请第{i}类稳岗补贴,请到第{i}号窗口办理\n" for i in range(n))
    f.write_text("id,question,answer\n" + rows, encoding="utf-8")
    return f


def test_kb_import_stopped_with_ctrl_c_half_way_changes_nothing(app, app_ctx, tmp_path, monkeypatch):
    from wxapp_backend.knowledge_store import services

    before = _kb_count(app)
    real_audit, calls = services.audit, []

    def ctrl_c_on_the_20th(*args, **kwargs):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real_audit(*args, **kwargs)

    monkeypatch.setattr(services, "audit", ctrl_c_on_the_20th)
    result = app.test_cli_runner().invoke(args=["kb", "import", str(_big_csv(tmp_path))])
    assert result.exit_code == 130, result.output
    assert "已中断" in result.output and "知识库未改动" in result.output and "Traceback" not in result.output
    assert len(calls) == 20 and _kb_count(app) == before
    monkeypatch.undo()  # not stopped: the same file imports in full (the control)
    done = app.test_cli_runner().invoke(args=["kb", "import", str(_big_csv(tmp_path))])
    assert done.exit_code == 0 and "新增 50 条" in done.output, done.output
    assert _kb_count(app)[0] == before[0] + 50


def test_a_long_import_and_search_say_what_they_are_doing(app, app_ctx, tmp_path, monkeypatch):
    """A 20,000-entry import ran 24 s without a word (reading, writing, the phrasing check: 6-8 s each), and the
    first `kb search` on it 20-30 s (the index being built)."""
    from wxapp_backend.knowledge_store import cli as kb_cli

    runner = app.test_cli_runner()
    small = runner.invoke(args=["kb", "import", str(_big_csv(tmp_path, 5))])
    assert small.exit_code == 0 and "正在" not in small.output, small.output  # a small file: the result alone
    monkeypatch.setattr(kb_cli, "PROGRESS_FROM", 10)
    monkeypatch.setattr(kb_cli, "PROGRESS_FROM_BYTES", 100)
    big = runner.invoke(args=["kb", "import", str(_big_csv(tmp_path, 50))])
    assert big.exit_code == 0, big.output
    said = big.output
    assert said.index("正在读取") < said.index("正在写入知识库（50 条）") < said.index("导入完成") \
        < said.index("正在检查重复的问法"), said
    app.extensions.pop("wxapp_kb", None)  # this process has not loaded the index yet
    search = runner.invoke(args=["kb", "search", "稳岗补贴"])
    assert search.exit_code == 0 and "正在载入知识库" in search.output, search.output


def test_ctrl_c_in_the_phrasing_check_after_the_import_skips_only_the_check(app, app_ctx, tmp_path, monkeypatch):
    """The check runs after the commit: a Ctrl-C there said “已中断” with exit status 130 for an import done."""
    from wxapp_backend.knowledge_store import cli as kb_cli

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kb_cli, "clashes_among", ctrl_c)
    before = _kb_count(app)[0]
    result = app.test_cli_runner().invoke(args=["kb", "import", str(_big_csv(tmp_path, 5))])
    assert result.exit_code == 0 and "导入完成" in result.output and "已跳过重复问法的检查" in result.output
    assert _kb_count(app)[0] == before + 5
