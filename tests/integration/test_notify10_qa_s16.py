"""Notices QA (session 16, notify10): staff stop a notice that is going out (停止发送) — nobody more gets it, the rest
are recorded as skipped with their credit kept, it is audited, and it is never resumed."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import OutboxRow

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _rows(db, nid):
    db.expire_all()
    return db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").order_by(OutboxRow.id).all()


# --- migration 0007 ---------------------------------------------------------------------------------------------


def test_upgrading_to_0007_lets_a_notice_be_stopped_and_keeps_its_rows(settings, tmp_path):
    """0007 widens the notices' status CHECK by 'stopped' (SQLite rebuilds the table): an old database's notices and
    their outbox rows stay, 'stopped' is taken afterwards and a word the constraint does not know is still refused."""
    from tests.integration.test_ops2_qa_s14 import sqlite_database_at
    from wxapp_backend.cli import upgrade_database

    with sqlite_database_at(settings, tmp_path, "0006") as engine:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, openid, nickname, phone, role, binding_state, followed, blocked, no_show_count,"
                " created_at, updated_at) VALUES (1, 'o-old', '', '', 'white_collar', 'none', 0, 0, 0,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO notices (id, kind, title, summary, page, template_id, template_fields, audience, status,"
                " expand_cursor, recipients, created_at, updated_at) VALUES (1, 'policy', '政策速递', '新政策', '',"
                " 'tpl', '{}', '{\"all\": true}', 'sending', 1, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO notice_outbox (notice_id, user_id, channel, status, attempts, errcode, detail, delivery)"
                " VALUES (1, 1, 'subscribe', 'pending', 0, 0, '', '')"))
            with pytest.raises(Exception, match="CHECK"):
                with conn.begin_nested():
                    conn.execute(text("UPDATE notices SET status = 'stopped' WHERE id = 1"))
        assert upgrade_database() >= "0007"
        with engine.begin() as conn:
            conn.execute(text("UPDATE notices SET status = 'stopped' WHERE id = 1"))
            assert conn.execute(text("SELECT status FROM notices")).scalar() == "stopped"
            assert conn.execute(text("SELECT count(*) FROM notice_outbox")).scalar() == 1
            ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'notices'")).scalar()
            assert "kind in ('policy','activity')" in ddl and "idempotency_key" in ddl, ddl  # the rest is kept
            with pytest.raises(Exception, match="CHECK"):
                with conn.begin_nested():
                    conn.execute(text("UPDATE notices SET status = 'paused' WHERE id = 1"))
        upgrade_database()  # idempotent


def test_the_database_in_use_takes_stopped_and_refuses_other_words(db, published_notice):
    """On the suite's own database (SQLite or PostgreSQL, migrated to the head)."""
    nid = published_notice(1)
    db.execute(text("UPDATE notices SET status = 'stopped' WHERE id = :id"), {"id": nid})
    with pytest.raises(Exception, match="(?i)check"):
        db.execute(text("UPDATE notices SET status = 'paused' WHERE id = :id"), {"id": nid})
    db.rollback()
