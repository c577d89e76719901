"""notices.status 'stopped': staff can stop a notice that is going out (停止发送)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 04:30:00

A wrong notice going to thousands of subscribers could not be stopped. A stopped notice sends to nobody more and is
never resumed; the status CHECK constraint takes the new value (SQLite: the table is rebuilt in batch mode, as
0005 did; PostgreSQL: the constraint is dropped and added again).

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already creates
the constraint from the models: it is replaced by the same one.
"""
import warnings

from alembic import op
from sqlalchemy.exc import SAWarning

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CHECK = "ck_notices_status"
WITH_STOPPED = "status in ('draft','expanding','sending','done','stopped')"
WITHOUT_STOPPED = "status in ('draft','expanding','sending','done')"


def _replace(condition: str) -> None:
    with warnings.catch_warnings():
        # SQLite's batch mode reflects staff_users too (notices refer to it) and cannot reflect 0006's index on
        # lower(username): SQLAlchemy warned on every fresh init-db. That table and its index are not touched here.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index", SAWarning)
        with op.batch_alter_table("notices") as batch:
            batch.drop_constraint(op.f(CHECK), type_="check")
            batch.create_check_constraint(op.f(CHECK), condition)


def upgrade() -> None:
    _replace(WITH_STOPPED)


def downgrade() -> None:
    # A stopped notice reads as a finished one to the older release (nothing more is sent either way).
    op.execute("UPDATE notices SET status = 'done' WHERE status = 'stopped'")
    _replace(WITHOUT_STOPPED)
