"""appeals.given_to: the department the appeal was given to (交办 / 改派)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 18:30:00

A department account saw, counted and reported the appeals its department was only guessed for at submission
(`department` is also the rules' suggestion): its view is what was given out to it. The column holds the department
the latest `assigned` / `reassigned` event named; the backfill reads those events.

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already creates
the column and its index from the models: they are added only if missing (the backfill runs either way).
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

INDEX = "ix_appeals_given_to"


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if "given_to" not in {c["name"] for c in inspector.get_columns("appeals")}:
        op.add_column("appeals", sa.Column("given_to", sa.String(length=64), nullable=False, server_default=""))
    op.create_index(INDEX, "appeals", ["given_to"], unique=False, if_not_exists=True)
    events = sa.table("appeal_events", sa.column("id", sa.Integer), sa.column("appeal_id", sa.Integer),
                      sa.column("action", sa.String), sa.column("data", sa.JSON))
    appeals = sa.table("appeals", sa.column("id", sa.Integer), sa.column("given_to", sa.String))
    last: dict[int, str] = {}
    for appeal_id, data in bind.execute(sa.select(events.c.appeal_id, events.c.data)
                                        .where(events.c.action.in_(["assigned", "reassigned"]))
                                        .order_by(events.c.id)):
        department = (data or {}).get("department") if isinstance(data, dict) else None
        if department:
            last[appeal_id] = str(department)[:64]
    for appeal_id, department in last.items():
        bind.execute(appeals.update().where(appeals.c.id == appeal_id).values(given_to=department))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="appeals", if_exists=True)
    with op.batch_alter_table("appeals") as batch:
        batch.drop_column("given_to")
