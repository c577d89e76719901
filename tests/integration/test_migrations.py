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
