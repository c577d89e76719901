"""Enterprises and bindings: defects found in session 11, each test failing without its fix."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services
from wxapp_backend.errors import Conflict

ACTOR = Actor("staff", 3, role="staff")


def code(n: int) -> str:
    return demo_credit_code("91310106", n)


def _user(db, user_id: int) -> User:
    return db.scalar(select(User).where(User.id == user_id))


# --- 1. an application never takes away a verified binding ------------------------------------------

@pytest.fixture
def switching(client, make_enterprise, make_user, user_token):
    """A verified contact of A who has just applied to bind to B (a new file, made by the request)."""
    a = make_enterprise(name="甲科技有限公司")
    u = make_user(enterprise_id=a.id, binding_state="verified", role="enterprise_contact")
    r = client.post("/api/v1/me/enterprise", json={"name": "乙科技有限公司", "credit_code": code(1)},
                    headers=user_token(u))
    assert r.status_code == 200, r.get_json()
    return a, u, r.get_json()


def test_applying_to_another_enterprise_keeps_the_verified_binding_while_pending(switching, db):
    a, u, body = switching
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state) == (a.id, "verified")
    assert body["binding_state"] == "verified" and body["enterprise"]["id"] == a.id
    assert body["pending_enterprise"]["name"] == "乙科技有限公司"
    # Staff see the application among the pending ones, with what the user typed.
    with session_scope() as s:
        page = services.list_users(s, state="pending")
        assert u.id in [x.id for x in page.items]


def test_approving_the_switch_moves_the_binding(switching, db):
    a, u, body = switching
    b_id = body["pending_enterprise"]["id"]
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True, enterprise_id=b_id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (b_id, "verified", None)
    verified = db.scalar(select(AuditLog).where(AuditLog.action == "binding.verified"))
    assert verified.data["enterprise_id"] == b_id and verified.data["previous_enterprise_id"] == a.id


def test_rejecting_the_switch_keeps_the_old_binding(switching, db):
    a, u, body = switching
    b_id = body["pending_enterprise"]["id"]
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=False, enterprise_id=b_id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (a.id, "verified", None)
    # A decision about A (the page was stale) is not mistaken for one about B.
    with pytest.raises(Conflict), session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=False, enterprise_id=a.id)


def test_withdrawing_the_switch_keeps_the_old_binding(switching, client, user_token, db):
    a, u, _body = switching
    r = client.delete("/api/v1/me/enterprise", headers=user_token(u))
    assert r.status_code == 200
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (a.id, "verified", None)


def test_deleting_the_applied_enterprise_drops_only_the_application(switching, db):
    a, u, body = switching
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, body["pending_enterprise"]["id"])
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (a.id, "verified", None)


def test_deleting_the_verified_enterprise_leaves_the_application_pending(switching, db):
    a, u, body = switching
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, a.id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (
        body["pending_enterprise"]["id"], "pending", None)


def test_console_lists_and_decides_the_switch(switching, client, make_staff, console_login, db):
    a, u, body = switching
    b_id = body["pending_enterprise"]["id"]
    staff = make_staff(role="staff")
    token = console_login(staff)
    page = client.get("/console/users?state=pending").get_data(as_text=True)
    assert f'id="approve-{u.id}"' in page and "乙科技有限公司" in page and "甲科技有限公司" in page
    assert f'name="enterprise_id" value="{b_id}"' in page
    r = client.post(f"/console/users/{u.id}/binding", data={"approve": "1", "enterprise_id": str(b_id),
                                                            "csrf_token": token})
    assert r.status_code == 302
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (b_id, "verified", None)
