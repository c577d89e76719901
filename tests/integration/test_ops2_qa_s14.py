"""Operating the service: migrations with data, commands when a part is down, the worker (QA pass 14)."""

from __future__ import annotations

import contextlib
import re

import redis
from sqlalchemy import text

import wxapp_backend


@contextlib.contextmanager
def sqlite_database_at(settings, tmp_path, revision: str):
    """A fresh SQLite database migrated to `revision` only, inside its app's context: yields its engine."""
    from alembic import command

    from wxapp_backend.cli import alembic_config

    app = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'old.sqlite3'}"))
    try:
        with app.app_context():
            engine = app.extensions["wxapp"].db.engine
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), revision)
            yield engine
    finally:
        app.extensions["wxapp"].db.engine.dispose()


def test_upgrading_an_sqlite_database_keeps_the_rows_that_hang_on_a_rebuilt_table(settings, tmp_path):
    """0005 rebuilds `notices` on SQLite (batch mode: copy, DROP TABLE, rename). With the application's
    foreign_keys=ON the DROP deleted every notice_outbox row through ON DELETE CASCADE: after `init-db` on a
    database of 0004 each published notice had lost its whole delivery list (who got it, who is still due)."""
    from wxapp_backend.cli import upgrade_database

    with sqlite_database_at(settings, tmp_path, "0004") as engine:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, openid, nickname, phone, role, binding_state, followed, blocked, no_show_count,"
                " created_at, updated_at) VALUES (1, 'o-old', '', '', 'white_collar', 'none', 0, 0, 0,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO notices (id, kind, title, summary, page, template_id, template_fields, audience, status,"
                " expand_cursor, recipients, created_at, updated_at) VALUES (1, 'policy', '政策速递', '新政策', '',"
                " 'tpl', '{}', '{\"all\": true}', 'sending', 1, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO notice_outbox (notice_id, user_id, channel, status, attempts, errcode, detail, delivery)"
                " VALUES (1, 1, 'subscribe', 'sent', 1, 0, '', '')"))
        assert upgrade_database() >= "0005"  # the head: 0005 or a later revision
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM notice_outbox")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM notices")).scalar() == 1
            # Foreign keys are on again for the connections the application goes on using.
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        upgrade_database()  # idempotent


def test_seed_demo_shows_the_reset_admin_password_even_when_redis_does_not_answer(app, client, db, monkeypatch):
    """`seed-demo --reset-admin-password` committed the new password, then failed clearing the login lock-out in
    Redis before printing it: the operator saw only a Redis error and admin's password was now one nobody knew."""
    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, first.output
    old = re.search(r"密码：(\S+)", first.output).group(1)
    from wxapp_backend.auth.services import LoginThrottle

    def down(self, *args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    with monkeypatch.context() as m:
        m.setattr(LoginThrottle, "forget", down)
        reset = runner.invoke(args=["seed-demo", "--reset-admin-password"])
    assert "Traceback" not in reset.output and "Redis" in reset.output, reset.output
    found = re.search(r"密码：(\S+)", reset.output)
    assert found, reset.output
    assert found.group(1) != old
    login = client.post("/api/v1/staff/login", json={"username": "admin", "password": found.group(1)})
    assert login.status_code == 200, login.get_json()


def test_an_instance_or_uploads_path_that_is_a_file_stops_the_start_naming_the_variable(tmp_path):
    """INSTANCE_PATH naming a file (or a place no folder can be made) stopped every command with a Python
    traceback (FileExistsError from pathlib) naming no variable; UPLOADS_PATH naming a file was taken, and every
    appeal photo later failed. Both are now a ConfigError naming the variable, and `flask` says it in one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from wxapp_backend.config import ConfigError, Settings

    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    for env in ({"INSTANCE_PATH": str(afile)}, {"INSTANCE_PATH": str(afile / "sub")},
                {"INSTANCE_PATH": str(tmp_path / "inst"), "UPLOADS_PATH": str(afile)}):
        with pytest.raises(ConfigError) as exc:
            Settings.from_env(env)
        name = "UPLOADS_PATH" if "UPLOADS_PATH" in env else "INSTANCE_PATH"
        assert name in str(exc.value) and re.search(r"[\u4e00-\u9fff]", str(exc.value)), str(exc.value)
    ok = Settings.from_env({"INSTANCE_PATH": str(tmp_path / "new" / "inst"), "UPLOADS_PATH": str(tmp_path / "up")})
    assert ok.instance_path.is_dir() and ok.uploads_path == tmp_path / "up"
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSTANCE_PATH", "UPLOADS_PATH", "APP_ENV"))}
    env.update(INSTANCE_PATH=str(afile), REDIS_URL="redis://127.0.0.1:1/0", SECRET_KEY="k" * 24)
    run = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init-db"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "INSTANCE_PATH" in run.stderr and "配置有误" in run.stderr, run.stderr


def test_init_db_on_a_database_of_a_newer_release_says_so_in_one_line(settings, tmp_path):
    """Rolled back to this release after a newer one had migrated the database, `init-db` (and `serve`) stopped
    with alembic's traceback "Can't locate revision identified by '0099'". It now says in one Chinese line what
    the revision is and what to do, exit status 1, the database untouched."""
    app = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'new.sqlite3'}"))
    runner = app.test_cli_runner()
    first = runner.invoke(args=["init-db"])
    assert first.exit_code == 0, first.output
    engine = app.extensions["wxapp"].db.engine
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    again = runner.invoke(args=["init-db"])
    assert again.exit_code == 1, again.output
    assert "0099" in again.output and "错误：" in again.output and "Traceback" not in again.output, again.output
    assert not isinstance(again.exception, Exception) or isinstance(again.exception, SystemExit), again.exception
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099"
    engine.dispose()


def test_init_db_on_a_database_that_holds_another_programs_tables_says_so(settings, tmp_path, app):
    """DATABASE_URL pointing at a database that already has a `users` table but no migrations of ours: on
    PostgreSQL `init-db` stopped with a traceback (DuplicateTable is a ProgrammingError), on SQLite it said the
    database was down ("请确认它已启动"). Both now say the database already holds such tables."""
    from sqlalchemy.exc import ProgrammingError

    from wxapp_backend.cli import _outage_message

    path = tmp_path / "other.sqlite3"
    other = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{path}"))
    with other.extensions["wxapp"].db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY)"))
    result = other.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 1, result.output
    assert "已有" in result.output and "请确认它已启动" not in result.output, result.output
    other.extensions["wxapp"].db.engine.dispose()

    class DuplicateTable(Exception):
        sqlstate = "42P07"

    with app.app_context():
        said = _outage_message(ProgrammingError("CREATE TABLE users", {}, DuplicateTable('relation "users" already exists')))
    assert said is not None and "已有" in said and "users" in said, said


def test_chat_without_redis_stops_at_once_in_one_line(app, monkeypatch):
    """`flask chat` with a Redis that does not answer started the conversation, then answered every line with
    "［错误 500］" and a traceback in the log. It now stops before the first line, as `worker` does: one Chinese
    line naming REDIS_URL, exit status 1."""
    state = app.extensions["wxapp"]

    def refused(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    monkeypatch.setattr(state.redis.connection_pool, "get_connection", refused)
    result = app.test_cli_runner().invoke(args=["chat"], input="你好\n")
    assert result.exit_code == 1, result.output
    assert "REDIS_URL" in result.output and "店小二>" not in result.output and "500" not in result.output, \
        result.output


def test_serve_refuses_a_port_beyond_65535_in_one_line(app):
    """`serve --bind 127.0.0.1:99999` passed the address check (the probe's port wrapped round), said it had
    started, then gunicorn died with an OverflowError traceback. The port's range is now checked first."""
    from wxapp_backend.cli import _bind_problem

    for address in ("127.0.0.1:99999", "127.0.0.1:65536", "[::1]:70000"):
        said = _bind_problem(address)
        assert said is not None and "65535" in said and "BIND" in said, (address, said)
    assert _bind_problem("127.0.0.1:0") is None
    result = app.test_cli_runner().invoke(args=["serve", "--no-worker", "--bind", "127.0.0.1:99999"])
    assert result.exit_code == 1 and "65535" in result.output and "已启动" not in result.output, result.output


def test_a_database_not_yet_upgraded_is_unhealthy_and_the_worker_says_to_run_init_db(settings, tmp_path):
    """New code started on a database still at an older migration (init-db forgotten after an upgrade): /healthz
    answered 200 (the load balancer sent traffic to pages that failed on the missing column) and `worker`
    started and failed its jobs. /healthz now answers 503 naming the database and init-db; `worker` refuses."""
    from alembic import command

    from wxapp_backend.cli import alembic_config, upgrade_database

    app = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'behind.sqlite3'}"))
    with app.app_context():
        with app.extensions["wxapp"].db.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0004")
    resp = app.test_client().get("/healthz")
    body = resp.get_json()
    assert resp.status_code == 503 and body["db"] == "error" and body["failing"] == ["db"], body
    assert "init-db" in body["message"] and "0004" in body["message"], body
    worker = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert worker.exit_code == 1 and "init-db" in worker.output and "0004" in worker.output, worker.output
    with app.app_context():
        upgrade_database()
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200, resp.get_json()
    app.extensions["wxapp"].db.engine.dispose()


def test_a_metrics_directory_that_is_missing_is_made_at_start_and_a_wrong_one_refused(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR naming a folder that does not exist (under /run, emptied by a reboot) was taken:
    then every request outside gunicorn (and every job's counter) failed on opening its metrics file: a 500 for
    /healthz and /metrics. The folder is now made at start; one that cannot be is a ConfigError naming it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from wxapp_backend.config import ConfigError, Settings

    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"INSTANCE_PATH": str(tmp_path / "i"), "PROMETHEUS_MULTIPROC_DIR": str(afile)})
    assert "PROMETHEUS_MULTIPROC_DIR" in str(exc.value)
    root = Path(__file__).resolve().parents[2]
    missing = tmp_path / "run" / "metrics"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_ENV", "DATABASE_URL", "TEST_", "WXAPP_"))}
    env.update(INSTANCE_PATH=str(tmp_path / "inst"), PROMETHEUS_MULTIPROC_DIR=str(missing), LOG_LEVEL="ERROR")
    code = ("from wsgi import app\n"
            "from wxapp_backend.cli import upgrade_database\n"
            "from wxapp_backend.kv import stop_embedded_redis\n"
            "try:\n"
            "    with app.app_context():\n"
            "        upgrade_database()\n"
            "    c = app.test_client()\n"
            "    print(c.get('/healthz').status_code, c.get('/metrics').status_code)\n"
            "finally:\n"
            "    stop_embedded_redis(app.extensions['wxapp'].settings.instance_path)\n")
    env.pop("REDIS_URL", None)
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["200", "200"], run.stdout + run.stderr[-2000:]
    assert missing.is_dir()


def test_serve_refuses_a_non_numeric_web_concurrency_before_starting_anything(app):
    """WEB_CONCURRENCY=abc: gunicorn reads it when it is imported, before gunicorn.conf.py can check it, so `serve`
    printed 已启动 and then gunicorn's ValueError traceback. `serve` now checks the web counts itself first."""
    runner = app.test_cli_runner()
    for name, bad in (("WEB_CONCURRENCY", "abc"), ("WEB_THREADS", "0"), ("WEB_TIMEOUT", "1.5")):
        result = runner.invoke(args=["serve", "--no-worker", "--bind", "127.0.0.1:0"], env={name: bad})
        assert result.exit_code == 1, result.output
        assert name in result.output and "已启动" not in result.output and "Traceback" not in result.output, \
            result.output
    # --workers names the count itself: the environment's is not used then.
    from wxapp_backend.config import ConfigError, web_count

    assert web_count({"WEB_TIMEOUT": "0"}, "WEB_TIMEOUT", 30, least=0) == 0
    try:
        web_count({"WEB_CONCURRENCY": "-2"}, "WEB_CONCURRENCY", 2)
    except ConfigError as exc:
        assert "WEB_CONCURRENCY" in str(exc)
    else:
        raise AssertionError("WEB_CONCURRENCY=-2 was taken")
