"""Operating the service: health checks against a stuck Redis, init-db and beat with a part missing, staff
usernames and their case (QA pass 14, ops3)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
import redis


def test_healthz_and_metrics_answer_quickly_when_redis_takes_the_connection_but_never_answers(app, settings):
    """A Redis that accepts the TCP connection but never answers (stuck, or a half-dead proxy in front of it) kept
    /healthz and /metrics waiting the 10 s of the shared client's socket timeout: longer than a probe's or a
    scraper's own timeout, so they saw a time-out instead of 503 / dependency_up 0. The checks now use a client
    of their own with a short timeout; ordinary requests keep theirs."""
    stuck, got = ask_health_with_a_part_that_never_answers(
        lambda port: settings.with_overrides(redis_url=f"redis://127.0.0.1:{port}/0"))
    status, body, took = got["/healthz"]
    assert status == 503 and '"failing":["redis"]' in body.replace(" ", "") and took < 4, got["/healthz"]
    status, body, took = got["/metrics"]
    assert status == 200 and 'dependency_up{part="redis"} 0.0' in body and took < 4, got["/metrics"]
    # Ordinary requests and jobs keep the longer timeout: a slow command under load is not an outage.
    assert stuck.extensions["wxapp"].redis.connection_pool.connection_kwargs["socket_timeout"] == 10


def ask_health_with_a_part_that_never_answers(settings_for_port):
    """/healthz and /metrics, asked at once, of an app whose Redis or database (`settings_for_port(port)`) is a
    local socket that takes the connection and never answers; returns the app and {path: (status, body, seconds)}."""
    import wxapp_backend

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel completes the handshake; nothing ever answers
    try:
        stuck = wxapp_backend.create_app(settings_for_port(server.getsockname()[1]))
        answers: list = []

        def ask(path: str) -> None:
            started = time.monotonic()
            resp = stuck.test_client().get(path)
            answers.append((path, resp.status_code, resp.get_data(as_text=True), time.monotonic() - started))

        threads = [threading.Thread(target=ask, args=(path,), daemon=True) for path in ("/healthz", "/metrics")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert len(answers) == 2, f"still waiting after 20 s: {answers}"
        return stuck, {path: (status, body, took) for path, status, body, took in answers}
    finally:
        server.close()


def test_init_db_with_redis_down_says_so_in_one_warning_without_a_traceback(app, monkeypatch, caplog):
    """init-db with Redis down loaded the default knowledge base and then logged "could not bump the
    knowledge-base version" with a 30-line traceback inside a JSON log line, before saying all was well. The
    processes reload on their periodic look at the table anyway: one warning line is enough."""
    state = app.extensions["wxapp"]

    def refused(*a, **kw):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    monkeypatch.setattr(state.redis.connection_pool, "get_connection", refused)
    with caplog.at_level(logging.WARNING):
        result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    about = [r for r in caplog.records if "knowledge-base version" in r.getMessage()]
    assert len(about) == 1, [r.getMessage() for r in caplog.records]
    assert about[0].levelno == logging.WARNING and about[0].exc_info is None
    assert "Connection refused" in about[0].getMessage()


def test_beat_refuses_when_the_database_has_no_tables(app, settings, tmp_path):
    """`beat` (for cron) enqueued its periodic jobs on a database without tables (init-db not run) or with
    PostgreSQL down: every one of them then failed in the worker, and the slot was used up. It now checks the
    database and Redis first, as `worker` does, and says in one line what to do."""
    import wxapp_backend

    empty = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    state = empty.extensions["wxapp"]
    try:
        result = empty.test_cli_runner().invoke(args=["beat"])
        assert result.exit_code == 1, result.output
        assert "init-db" in result.output and "Traceback" not in result.output
        assert state.queue.count == 0
        assert not state.redis.keys("beat:*")
    finally:
        state.db.engine.dispose()


def test_staff_usernames_are_one_name_whatever_their_case(app, client, db):
    """The login lock-out counted `ADMIN` and `admin` as one name, yet an admin could create `ADMIN` next to
    `admin` (two accounts sharing one lock-out), and `Admin` could not log in to `admin`. Usernames are now one
    name whatever their case, for creating and logging in; two accounts that already differ only in case keep
    working under their exact spelling."""
    from werkzeug.security import generate_password_hash

    from wxapp_backend.auth.models import StaffUser

    runner = app.test_cli_runner()
    made = runner.invoke(args=["create-staff", "Wang.Li", "--password", "abcdefgh1", "--role", "staff"])
    assert made.exit_code == 0, made.output
    again = runner.invoke(args=["create-staff", "wang.li", "--password", "abcdefgh2", "--role", "staff"])
    assert again.exit_code == 1 and "已存在" in again.output, again.output
    assert db.query(StaffUser).count() == 1

    for spelling in ("Wang.Li", "wang.li", "WANG.LI"):
        login = client.post("/api/v1/staff/login", json={"username": spelling, "password": "abcdefgh1"})
        assert login.status_code == 200, (spelling, login.get_json())

    # Accounts differing only in case can no longer be written at all (QA pass 15: a unique index on
    # lower(username); migration 0006 renamed the later ones of any such pair made before).
    from sqlalchemy.exc import IntegrityError

    db.add(StaffUser(username="WANG.LI", password_hash=generate_password_hash("abcdefgh2"), role="staff",
                     department="", display_name="WANG.LI"))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()


def test_seed_demo_takes_an_admin_spelt_in_capitals_as_the_admin(app, db):
    """With usernames one name whatever their case, `seed-demo` on a database where `ADMIN` was made by hand
    stopped with a traceback (the name `admin` is taken); it now finds that account as the admin."""
    from wxapp_backend.auth.models import StaffUser

    runner = app.test_cli_runner()
    assert runner.invoke(args=["create-staff", "ADMIN", "--password", "abcdefgh1", "--role", "admin"]).exit_code == 0
    seeded = runner.invoke(args=["seed-demo"])
    assert seeded.exit_code == 0 and "已存在" in seeded.output, seeded.output
    assert [s.username for s in db.query(StaffUser)] == ["ADMIN"]
