"""Migrations: init-db is idempotent and the migrations match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from wxapp_backend.cli import upgrade_database
from wxapp_backend.db import Base


def test_init_db_is_idempotent(app_ctx):
    first = upgrade_database()
    second = upgrade_database()
    assert first == second == "0001" or first == second


def test_migrations_match_models(app_ctx):
    engine = app_ctx.extensions["wxapp"].db.engine
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == [], f"models and migrations differ; run migrations/regenerate_initial.py: {diff}"


def test_init_db_cli(app, runner_env=None):
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "数据库已就绪" in result.output
    assert "知识库" in result.output, result.output  # it says what it loaded (the empty knowledge base's defaults)


def test_init_db_on_a_new_database_prints_no_python_warning(settings, tmp_path):
    """The first command a newcomer runs printed SQLAlchemy's “SAWarning: Skipped unsupported reflection of
    expression-based index uq_staff_users_lower_username” (SQLite's batch rebuild in 0007 reflects staff_users)."""
    import warnings

    import wxapp_backend
    from wxapp_backend.auth.models import StaffUser

    app = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'new.sqlite3'}"))
    try:
        with app.app_context(), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            upgrade_database()
        assert [str(w.message) for w in seen] == []
        # The index 0006 made still refuses a second “Admin” beside “admin”.
        with app.app_context(), app.extensions["wxapp"].db.engine.connect() as conn:
            names = {r[1] for r in conn.exec_driver_sql("PRAGMA index_list('staff_users')")}
        assert "uq_staff_users_lower_username" in names, names
        assert StaffUser.__tablename__ == "staff_users"
    finally:
        app.extensions["wxapp"].db.engine.dispose()
