"""QA round 13 on staff and user authentication: each test shows a defect that was found and fixed."""

from __future__ import annotations

import re

from sqlalchemy import select

from wxapp_backend.audit import AuditLog


def _login_page_token(client) -> str:
    page = client.get("/console/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _rows(db, action: str) -> list[AuditLog]:
    return list(db.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def test_refused_staff_logins_are_audited(client, make_staff, db):
    """Only a successful login left an audit row: wrong passwords, unknown names and a disabled account's
    attempts, at the console or by script, left nothing for an admin to look back on after a break-in attempt.
    Each is now a staff.login_failed row with the name tried, the address and why (never the password)."""
    from wxapp_backend.auth.models import StaffUser

    staff = make_staff(role="staff")
    gone = make_staff(role="dept")
    db.get(StaffUser, gone.id).active = False
    db.commit()
    resp = client.post("/api/v1/staff/login", json={"username": staff.username, "password": "Wrong-pass1"})
    assert resp.status_code == 401
    resp = client.post("/api/v1/staff/login", json={"username": "nobody", "password": "Wrong-pass2"})
    assert resp.status_code == 401
    resp = client.post("/console/login", data={"username": gone.username, "password": gone.plain_password,
                                               "csrf_token": _login_page_token(client)})
    assert resp.status_code == 401 and "用户名或密码不正确" in resp.get_data(as_text=True)
    rows = _rows(db, "staff.login_failed")
    assert [(r.data["username"], r.data["reason"]) for r in rows] == [
        (staff.username, "wrong_password"), ("nobody", "unknown_user"), (gone.username, "disabled")]
    assert [r.target_id for r in rows] == [str(staff.id), "", str(gone.id)]
    assert all(r.data["ip"] for r in rows)
    for row in rows:
        text = repr(row.data)
        assert "Wrong-pass" not in text and gone.plain_password not in text
    assert not _rows(db, "staff.login")  # and none of them logged in
