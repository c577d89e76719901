"""notifications.subscribe_message: a notification that carries its exact subscribe message (template values, page)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 16:00:00

发给自己测试 went out through notify() as a "notice" notification: its values were made again through the notice kind
and a notice with no page opened the kind's default page (pages/notice/detail, no id), while the fan-out sends the
notice's own values and page (none at all when it has none). The test send now stores the message the fan-out would
send, and delivery sends exactly that. Null for every other notification (made from the kind, as before).

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already creates
the column from the models: it is added only if missing.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("notifications")}
    if "subscribe_message" not in columns:
        with op.batch_alter_table("notifications") as batch:
            batch.add_column(sa.Column("subscribe_message", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("subscribe_message")
