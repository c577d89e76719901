"""QA round 14 on privacy (who can see what): each test shows a defect that was found and fixed."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.audit import AuditLog


def _changes(db, action: str) -> list[dict]:
    db.expire_all()
    return [r.data["changes"] for r in db.scalars(select(AuditLog).where(AuditLog.action == action)
                                                   .order_by(AuditLog.id))]


def test_audit_rows_do_not_keep_contact_phone_numbers_in_full(client, make_staff, staff_headers, make_enterprise,
                                                             make_grid, db):
    """A user's own phone change is audited as ***5678, but an enterprise contact's or a grid specialist's number
    changed by staff went into the audit log in full, old and new: every admin reading 操作日志 (and every copy of
    the table) had other people's mobile numbers. The changes now keep the last four digits only, as for users."""
    hs = staff_headers(make_staff(role="staff"))
    ent = make_enterprise(contact_phone="13900001234")
    resp = client.patch(f"/api/v1/staff/enterprises/{ent.id}", json={"contact_phone": "13700005678"}, headers=hs)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["contact_phone"] == "13700005678"  # the file itself keeps the number
    [changes] = _changes(db, "enterprise.updated")
    assert changes["contact_phone"] == ["***1234", "***5678"]
    assert "13900001234" not in repr(changes) and "13700005678" not in repr(changes)

    from wxapp_backend.audit import Actor
    from wxapp_backend.db import session_scope
    from wxapp_backend.enterprises import services

    grid = make_grid(specialist_phone="")
    with session_scope() as s:
        services.update_grid(s, Actor("staff", 1, role="admin"), grid.id, {"specialist_phone": "13611112222"})
    [changes] = _changes(db, "grid.updated")
    assert changes["specialist_phone"] == ["", "***2222"]
