"""Operating the service: the SQLite health check behind a long writer, UTF-16 files without a BOM and staff
usernames unique whatever their case in the database itself (QA pass 15, ops5)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy.engine import make_url


def test_healthz_answers_503_quickly_when_a_long_writer_holds_the_sqlite_database(app, settings):
    """On the embedded SQLite a writer holding the database (a long import, a stuck process with BEGIN EXCLUSIVE)
    kept /healthz waiting the shared engine's 30 s busy timeout: a probe saw a time-out instead of 503. The check
    now waits a short bound of its own and says the database could not be checked in time."""
    state = app.extensions["wxapp"]
    if state.db.dialect != "sqlite":
        pytest.skip("SQLite's file lock; PostgreSQL's check has its own statement timeout")
    path = make_url(state.db.url).database
    holder = sqlite3.connect(path, timeout=5, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    answers: list = []

    def ask() -> None:
        started = time.monotonic()
        resp = app.test_client().get("/healthz")
        answers.append((resp.status_code, resp.get_json(), time.monotonic() - started))

    try:
        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        thread.join(40)
    finally:
        holder.rollback()
        holder.close()
    assert answers, "still waiting after 40 s"
    status, body, took = answers[0]
    assert status == 503 and body["failing"] == ["db"] and "数据库忙" in body["message"] and took < 3, answers[0]
    # Ordinary requests keep waiting their 30 s: a writer finishing a long import is not an outage for them.
    with state.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
