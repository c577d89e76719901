"""indexes: audit_logs (actor_id, created_at) and users.binding_state

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00

Found by the session-19 scale pass (50,000 audit rows, 100,000 users on PostgreSQL): the audit page filtered by
操作人 (actor_id, or a staff username read as one) and counted its rows with a sequential scan of the whole log, and
the dashboard's 待核实 count and the users list's pending filter (binding_state = 'pending' or a pending
enterprise) read every user on each load. Both grow without bound; the indexes make them lookups.

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already creates
the indexes from the models: they are created only if missing.
"""
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

AUDIT_INDEX = "ix_audit_logs_actor_id_created_at"
USERS_INDEX = "ix_users_binding_state"


def upgrade() -> None:
    op.create_index(AUDIT_INDEX, "audit_logs", ["actor_id", "created_at"], unique=False, if_not_exists=True)
    op.create_index(USERS_INDEX, "users", ["binding_state"], unique=False, if_not_exists=True)


def downgrade() -> None:
    op.drop_index(USERS_INDEX, table_name="users", if_exists=True)
    op.drop_index(AUDIT_INDEX, table_name="audit_logs", if_exists=True)
