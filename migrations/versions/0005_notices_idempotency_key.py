"""notices.idempotency_key / request_digest: POST /api/v1/staff/notices takes an Idempotency-Key

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 19:00:00

A client that retried creating a notice (the answer lost on the way) made a second draft. The key is kept on the
draft it made, unique per staff member, with a digest of the request body (the same key with another body is a 409).

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already creates
the columns and the constraint from the models: they are added only if missing.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

UNIQUE = "uq_notices_created_by_idempotency_key"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("notices")}
    uniques = {u["name"] for u in inspector.get_unique_constraints("notices")}
    with op.batch_alter_table("notices") as batch:
        if "idempotency_key" not in columns:
            batch.add_column(sa.Column("idempotency_key", sa.String(length=80), nullable=True))
        if "request_digest" not in columns:
            batch.add_column(sa.Column("request_digest", sa.String(length=32), nullable=True))
        if UNIQUE not in uniques:
            batch.create_unique_constraint(UNIQUE, ["created_by", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.drop_constraint(UNIQUE, type_="unique")
        batch.drop_column("request_digest")
        batch.drop_column("idempotency_key")
