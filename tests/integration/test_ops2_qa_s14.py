"""Operating the service: migrations with data, commands when a part is down, the worker (QA pass 14)."""

from __future__ import annotations

import re

import redis
from sqlalchemy import text

import wxapp_backend


def test_upgrading_an_sqlite_database_keeps_the_rows_that_hang_on_a_rebuilt_table(settings, tmp_path):
    """0005 rebuilds `notices` on SQLite (batch mode: copy, DROP TABLE, rename). With the application's
    foreign_keys=ON the DROP deleted every notice_outbox row through ON DELETE CASCADE: after `init-db` on a
    database of 0004 each published notice had lost its whole delivery list (who got it, who is still due)."""
    app = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'old.sqlite3'}"))
    from alembic import command

    from wxapp_backend.cli import alembic_config, upgrade_database

    with app.app_context():
        engine = app.extensions["wxapp"].db.engine
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0004")
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
        assert upgrade_database() == "0005"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM notice_outbox")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM notices")).scalar() == 1
            # Foreign keys are on again for the connections the application goes on using.
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        upgrade_database()  # idempotent
    app.extensions["wxapp"].db.engine.dispose()


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
