"""Operating the service: the CLI as an operator runs it, its settings and its processes (QA pass 16)."""

from __future__ import annotations

import re

import pytest

from wxapp_backend.config import ConfigError, Settings

HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/abc",
        "redis://:Pw-Secret-9@127.0.0.1:notaport/1",
        "redis://127.0.0.1:6379/1/2",
        "redis://127.0.0.1:6379/-1",
        "redis://127.0.0.1:70000/0",
    ],
)
def test_a_redis_url_with_a_wrong_port_or_database_number_is_refused_naming_the_variable(tmp_path, url):
    """REDIS_URL=redis://host:6379/abc was taken and redis-py quietly used database 0 (another service's, or
    another environment's: beat enqueued its jobs there); a port that is not a number stopped every command with
    urllib's traceback. Both are now a ConfigError naming the variable, without the password."""
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"INSTANCE_PATH": str(tmp_path), "REDIS_URL": url})
    message = str(exc.value)
    assert "REDIS_URL" in message and HAN.search(message) and "Pw-Secret-9" not in message
    for good in (
        "redis://h:6379/15",
        "redis://h",
        "redis://h/",
        "rediss://:p@h:1/2",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=3",
        "redis://h:6379/0?socket_timeout=2",
    ):
        assert Settings.from_env({"INSTANCE_PATH": str(tmp_path), "REDIS_URL": good}).redis_url == good


def test_a_redis_database_number_the_server_does_not_have_is_one_line(app, monkeypatch):
    """REDIS_URL=redis://host:6379/99 on a server with 16 databases: every command printed redis-py's traceback
    ("DB index is out of range") instead of the one line naming REDIS_URL that an unreachable Redis gets."""
    import redis

    from wxapp_backend import cli as cli_module

    def refuse(*_a, **_k):
        raise redis.ResponseError("DB index is out of range")

    monkeypatch.setattr(cli_module, "_check_dependencies", refuse, raising=True)
    result = app.test_cli_runner().invoke(args=["beat"])
    assert result.exit_code == 1, result.output
    assert "REDIS_URL" in result.output and "DB index is out of range" in result.output
    assert "Traceback" not in result.output


def test_commands_on_a_database_not_yet_upgraded_say_to_run_init_db_and_change_nothing(settings, tmp_path):
    """After a release, with init-db forgotten (database still at 0003, before `appeals.given_to`): `appeals tick`
    and `appeals weekly` printed SQLAlchemy's traceback (UndefinedColumn), and `seed-demo`, `create-staff` and
    `kb import` wrote into the old schema as if all were well. Each now says, in one line, to run init-db first."""
    from alembic import command
    from sqlalchemy import func, select

    import wxapp_backend
    from wxapp_backend.auth.models import StaffUser
    from wxapp_backend.cli import alembic_config

    app = wxapp_backend.create_app(
        settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'behind.sqlite3'}")
    )
    kb = tmp_path / "kb.csv"
    kb.write_text("id,question,answer\nops6-q,怎么办?,这样办。\n", encoding="utf-8")
    try:
        with app.app_context():
            with app.extensions["wxapp"].db.engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0003")
        runner = app.test_cli_runner()
        for args in (
            ["appeals", "tick"],
            ["appeals", "weekly"],
            ["seed-demo"],
            ["create-staff", "ops6", "--password", "Passw0rd9", "--role", "staff"],
            ["kb", "import", str(kb)],
        ):
            with (
                app.app_context()
            ):  # the `kb` group is a plain click group: `flask` itself gives it the context
                result = runner.invoke(args=args)
            assert result.exit_code == 1, (args, result.output, result.exception)
            assert "init-db" in result.output and "0003" in result.output, (args, result.output)
        with app.app_context(), app.extensions["wxapp"].db.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(StaffUser)) == 0
            assert conn.exec_driver_sql("SELECT count(*) FROM kb_entries").scalar() == 0
    finally:
        app.extensions["wxapp"].db.engine.dispose()


def test_appeals_weekly_refuses_a_week_not_yet_over_and_stores_nothing(app, db):
    """`appeals weekly --week <this week>` (or 2099-W01) stored that week's report at once, with the appeals so
    far (none, for a week to come); the report is stored once, so the Monday job then found it "已存在" and the
    real report for that week was never made. A week not yet over is refused; a past one is stored as before."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from wxapp_backend.appeals.calendar import TZ
    from wxapp_backend.appeals.models import AppealReport
    from wxapp_backend.db import session_scope, utcnow

    today = utcnow().astimezone(TZ).date()
    this_week = "{}-W{:02d}".format(*today.isocalendar()[:2])
    last_week = "{}-W{:02d}".format(*(today - timedelta(days=7)).isocalendar()[:2])
    runner = app.test_cli_runner()
    for week in (this_week, "2099-W01"):
        result = runner.invoke(args=["appeals", "weekly", "--week", week])
        assert result.exit_code == 1 and "还没有结束" in result.output, (week, result.output)
    result = runner.invoke(args=["appeals", "weekly", "--week", last_week])
    assert result.exit_code == 0 and "已生成" in result.output, result.output
    with app.app_context(), session_scope() as s:
        assert s.scalars(select(AppealReport.week)).all() == [last_week]
        assert s.scalar(select(func.count(AppealReport.id))) == 1


def test_serve_refuses_a_bind_host_without_a_port_that_is_no_address_in_one_line(app):
    """`serve --bind nonsense` (a host without a port: gunicorn takes port 8000) skipped the address check, said
    "已启动：网页服务 http://nonsense/console/", then gunicorn died looking the name up. Now it is refused first."""
    from wxapp_backend.cli import _bind_problem

    said = _bind_problem("no-such-host.invalid")
    assert said is not None and "BIND" in said, said
    result = app.test_cli_runner().invoke(args=["serve", "--no-worker", "--bind", "no-such-host.invalid"])
    assert result.exit_code == 1 and "已启动" not in result.output and "BIND" in result.output, result.output


def test_appeals_tick_reports_in_chinese(app, db):
    """`appeals tick` printed the job's dictionary keys ("warned 0，overdue 0，urged 0 …") to the operator."""
    result = app.test_cli_runner().invoke(args=["appeals", "tick"])
    assert result.exit_code == 0, result.output
    assert "诉求定时检查完成" in result.output and "超期" in result.output
    assert not re.search(r"[a-z]{3,}", result.output), result.output
