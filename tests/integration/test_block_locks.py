"""Two colleagues blocking two rows of one person at the same moment (PostgreSQL row locks): each locked the row they
chose, then waited for the other's to block the rest of the person, a deadlock PostgreSQL broke with an error (a 500
for one of them). The person's rows are now locked together in id order: the second waits, then is told the person
is blocked already (409)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.orm import Session

from wxapp_backend.audit import Actor
from wxapp_backend.auth.blocking import set_blocked
from wxapp_backend.db import session_scope
from wxapp_backend.errors import Conflict

pytestmark = pytest.mark.postgres


def test_two_colleagues_blocking_two_rows_of_one_person_at_once(app_ctx, make_user, make_staff, monkeypatch):
    first = make_user(openid="oLockMini", unionid="uLockPerson")
    second = make_user(openid="oa:oLockOA", oa_openid="oLockOA", unionid="uLockPerson")
    actors = [Actor("staff", make_staff(role="staff").id, role="staff") for _ in range(2)]
    # Both transactions run their first statement before either goes on: the interleaving that deadlocked.
    step = threading.Barrier(2, timeout=10)
    seen = threading.local()
    execute = Session.execute

    def paced(self, *a, **kw):
        result = execute(self, *a, **kw)
        if getattr(seen, "pacing", False) and not getattr(seen, "passed", False):
            seen.passed = True
            try:
                step.wait()
            except threading.BrokenBarrierError:
                pass
        return result

    monkeypatch.setattr(Session, "execute", paced)
    outcomes: list[object] = [None, None]

    def block(i: int, user_id: int) -> None:
        seen.pacing = True
        with app_ctx.app_context():
            try:
                with session_scope() as s:
                    set_blocked(s, actors[i], user_id, blocked=True, reason="刷屏骚扰")
                outcomes[i] = "blocked"
            except Conflict as exc:
                outcomes[i] = exc.code
            except Exception as exc:  # noqa: BLE001 - what the colleague would have got as a 500
                outcomes[i] = type(exc).__name__

    threads = [threading.Thread(target=block, args=(0, second.id)), threading.Thread(target=block, args=(1, first.id))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(str, outcomes)) == ["already_blocked", "blocked"], outcomes
    with session_scope() as s:
        from wxapp_backend.auth.models import User

        assert all(s.get(User, u.id).blocked for u in (first, second))
