"""wechat_custom_sends: the customer-service messages WeChat has taken, by send id

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 18:00:00

A late chat reply or mini-program reply noted its send only in Redis: when Redis did not answer right after
WeChat's ok, the job failed, ran again and the user got the reply twice. The send is now a row here.

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already
creates the table from the models: the table and its index are created only if missing.
"""
from alembic import op
import sqlalchemy as sa
import wxapp_backend.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('wechat_custom_sends',
    sa.Column('send_id', sa.String(length=80), nullable=False),
    sa.Column('account', sa.String(length=8), nullable=False),
    sa.Column('sent_at', wxapp_backend.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('send_id', name=op.f('pk_wechat_custom_sends')),
    if_not_exists=True,
    )
    op.create_index(op.f('ix_wechat_custom_sends_sent_at'), 'wechat_custom_sends', ['sent_at'], unique=False,
                    if_not_exists=True)


def downgrade() -> None:
    op.drop_index(op.f('ix_wechat_custom_sends_sent_at'), table_name='wechat_custom_sends', if_exists=True)
    op.drop_table('wechat_custom_sends', if_exists=True)
