"""Sixteenth QA pass on enterprise records: imports that must be all or nothing, linking, reports."""

from __future__ import annotations

from sqlalchemy import func, select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises import importer
from wxapp_backend.enterprises.models import Building

ADMIN = Actor("staff", 1, role="admin")


def test_a_building_import_refused_for_an_ambiguous_name_changes_no_other_building(app_ctx, make_building, db):
    """Row 2 updated a building, row 3 was refused (its name is written like two legacy buildings): the report said
    nothing was imported, yet row 2's change and its audit row were committed."""
    kept = make_building(name="SOHO东海广场", address="旧地址")
    make_building(name="新华大厦")
    make_building(name="新华 大厦")  # a legacy pair, from before names written another way were refused
    data = "楼宇名称,地址\nSOHO东海广场,延安西路1号\n新\u3000华大厦,新华路1号\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv", data)
    assert not report.ok and str(report.errors[0]).startswith("第 3 行「楼宇名称」") and "写法相近" in str(report.errors[0]), report
    assert "没有导入任何数据" in report.summary()
    assert db.scalar(select(Building.address).where(Building.id == kept.id)) == "旧地址"
    assert db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "building.updated")) == 0
