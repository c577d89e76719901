"""`flask chat` before `init-db`."""

from __future__ import annotations

import wxapp_backend


def test_chat_before_init_db_says_to_run_init_db(settings, tmp_path):
    """On a fresh checkout `flask chat` started, and every line got "小二刚才开了个小差，请稍后再发一次" with a
    traceback (no such table: users) in the log; it now stops at once saying what to run."""
    fresh = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'fresh.sqlite3'}"))
    result = fresh.test_cli_runner().invoke(args=["chat"], input="你好\n")
    assert result.exit_code == 1, result.output
    assert "请先运行 flask --app wsgi init-db" in result.output
    assert "店小二>" not in result.output
