"""Operating the service and staff accounts: the database health check against a stuck PostgreSQL, the audit
log's username filter and two admins creating one name at once (QA pass 14, ops4)."""

from __future__ import annotations

import threading

from tests.integration.test_ops3_qa_s14 import ask_health_with_a_part_that_never_answers


def test_healthz_and_metrics_answer_quickly_when_the_database_takes_the_connection_but_never_answers(app, settings):
    """A PostgreSQL that accepts the TCP connection but never answers (stuck, or a half-dead proxy in front of it)
    kept /healthz and /metrics waiting the 5 s connect timeout of the shared engine: longer than a probe's or a
    scraper's own timeout, so they saw a time-out instead of 503 / dependency_up 0. The checks now connect with
    a short timeout of their own; ordinary requests keep theirs."""
    _, got = ask_health_with_a_part_that_never_answers(lambda port: settings.with_overrides(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing"))
    status, body, took = got["/healthz"]
    assert status == 503 and '"failing":["db"]' in body.replace(" ", "") and took < 4, got["/healthz"]
    status, body, took = got["/metrics"]
    assert status == 200 and 'dependency_up{part="db"} 0.0' in body and took < 4, got["/metrics"]


def test_audit_filter_by_username_finds_the_account_whatever_the_case(app, db):
    """Usernames are one name whatever their case for logging in and creating accounts, yet the audit log's
    用户名 filter matched the exact spelling only: `wang.li` found nothing for the account `Wang.Li`. It now means
    the account the name logs in to; two old accounts differing only in case each keep their exact spelling."""
    from werkzeug.security import generate_password_hash

    from wxapp_backend.audit import Actor, audit, search_audit
    from wxapp_backend.auth.models import StaffUser
    from wxapp_backend.auth.services import create_staff

    state = app.extensions["wxapp"]
    with state.db.session_scope() as s:
        wang = create_staff(s, username="Wang.Li", password="abcdefgh1", role="staff")
        # Two accounts differing only in case, which the database now refuses (QA pass 15), are left out.
        for name in ("zhao",):
            s.add(StaffUser(username=name, password_hash=generate_password_hash("abcdefgh1"), role="staff",
                            department="", display_name=name))
        s.flush()
        ids = {u.username: u.id for u in s.query(StaffUser)}
        for name, staff_id in ids.items():
            audit(s, Actor("staff", staff_id, role="staff"), "notice.created", wang, by=name)
    with state.db.session_scope() as s:
        for spelling in ("Wang.Li", "wang.li", "WANG.LI"):
            page = search_audit(s, username=spelling)
            assert [r.data["by"] for r in page.items] == ["Wang.Li"], spelling
        assert [r.data["by"] for r in search_audit(s, username="Zhao").items] == ["zhao"]
        assert search_audit(s, username="nobody").total == 0


def test_two_admins_creating_one_name_in_different_cases_at_once_get_one_account(app, db):
    """The case-insensitive "already exists" check read the table before inserting; on PostgreSQL two admins
    creating `Bob` and `bob` at the same moment both found nothing and both accounts were made (the unique
    constraint is on the exact spelling). Creating an account now waits for another creation of the same name,
    whatever its case, and then says it exists."""
    from wxapp_backend.auth.models import StaffUser
    from wxapp_backend.auth.services import create_staff
    from wxapp_backend.errors import Conflict

    state = app.extensions["wxapp"]
    first = state.db.Session()
    outcome: list = []

    def second() -> None:
        try:
            with state.db.session_scope() as s:
                create_staff(s, username="bob", password="abcdefgh2", role="staff")
            outcome.append("created")
        except Conflict as exc:
            outcome.append(exc.message)

    try:
        create_staff(first, username="Bob", password="abcdefgh1", role="staff")  # not committed yet
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        thread.join(1.5)  # it waits for the first creation (before the fix, it had gone ahead)
        first.commit()
    finally:
        first.close()
    thread.join(20)
    assert len(outcome) == 1 and "已存在" in outcome[0], outcome
    assert [u.username for u in db.query(StaffUser)] == ["Bob"]
