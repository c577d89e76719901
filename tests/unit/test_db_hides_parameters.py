"""Database errors are logged (and kept by RQ for a failed job) with their text: it must not carry the values."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from wxapp_backend.db import make_engine


def test_a_failed_statement_does_not_show_its_values(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE staff (name TEXT UNIQUE, password_hash TEXT)"))
        conn.execute(text("INSERT INTO staff VALUES ('admin', 'pbkdf2$first')"))
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(text("INSERT INTO staff VALUES (:n, :h)"), {"n": "admin", "h": "pbkdf2$SECRET-HASH"})
    message = str(caught.value)
    assert "INSERT INTO staff" in message  # the statement is still named
    assert "SECRET-HASH" not in message and "pbkdf2" not in message
