"""kb_feedback: one vote per user per entry outside a chat turn

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 15:30:00

Two 有用 taps at the same moment on a search result both found no earlier vote and both were saved (PostgreSQL).
Duplicates already stored are folded into the user's first vote (the row the service has always updated), then a
partial unique index makes the rule hold in the database.

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already
creates the index from the models: the index is created only if it is missing.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

INDEX = "uq_kb_feedback_user_entry_without_turn"


def upgrade() -> None:
    op.execute(
        "DELETE FROM kb_feedback WHERE turn_id IS NULL AND user_id IS NOT NULL AND id NOT IN ("
        "SELECT MIN(id) FROM kb_feedback WHERE turn_id IS NULL AND user_id IS NOT NULL "
        "GROUP BY user_id, entry_id)")
    op.create_index(INDEX, "kb_feedback", ["user_id", "entry_id"], unique=True, if_not_exists=True,
                    postgresql_where=sa.text("turn_id IS NULL"), sqlite_where=sa.text("turn_id IS NULL"))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="kb_feedback", if_exists=True)
