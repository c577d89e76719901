"""Exports of personal data (registration lists, enterprise and building lists, appeal reports) leave an audit
row naming who took them: names and phone numbers leave the system, and nothing said who had taken them."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.activities import services as activity_services
from wxapp_backend.activities.models import Activity
from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope


def _audited(db, action: str) -> list[AuditLog]:
    db.expire_all()
    return list(db.scalars(select(AuditLog).where(AuditLog.action == action)))


def test_registration_list_export_is_audited(client, make_staff, console_login, make_activity, make_user, db):
    staff = make_staff(role="staff")
    console_login(staff)
    activity = make_activity()
    with session_scope() as s:
        activity_services.register(s, activity_id=activity.id, user_id=make_user(nickname="张三").id)
    assert client.get(f"/console/activities/{activity.id}/registrations.xlsx").status_code == 200
    (row,) = _audited(db, "activity.registrations_exported")
    assert row.actor_id == str(staff.id) and row.target_id == str(activity.id) and row.data["rows"] == 1
    assert db.get(Activity, activity.id) is not None


def test_enterprise_and_building_exports_are_audited(client, make_staff, console_login, make_enterprise, db):
    staff = make_staff(role="staff")
    console_login(staff)
    make_enterprise(name="上海测试科技有限公司")
    assert client.get("/console/enterprises/export.csv").status_code == 200
    assert client.get("/console/buildings/export.xlsx").status_code == 200
    (ent,) = _audited(db, "enterprises.exported")
    (bld,) = _audited(db, "buildings.exported")
    assert ent.actor_id == bld.actor_id == str(staff.id)
    assert ent.data["format"] == "csv" and bld.data["format"] == "xlsx"


def test_appeal_report_exports_are_audited(client, make_staff, console_login, staff_headers, db):
    admin = make_staff(role="admin")
    console_login(admin)
    assert client.get("/console/appeals/report.xlsx?week=2025-W40").status_code == 200
    assert client.get("/console/appeals/issues.xlsx").status_code == 200
    headers = staff_headers(admin)
    assert client.get("/api/v1/staff/reports/weekly?week=2025-W40&format=xlsx", headers=headers).status_code == 200
    assert client.get("/api/v1/staff/reports/weekly?week=2025-W40", headers=headers).status_code == 200  # JSON
    assert [r.data["week"] for r in _audited(db, "appeal.weekly_exported")] == ["2025-W40", "2025-W40"]
    assert len(_audited(db, "appeal.issues_exported")) == 1
