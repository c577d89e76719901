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


# --- the weekly report: the workbook sent upwards carries what the page and the JSON count ------------------


def _submit(user_id, now, **kw):
    from wxapp_backend.appeals import services as appeals

    with session_scope() as s:
        appeal, _ = appeals.submit_appeal(s, user_id, appeals.Intake(
            content="我们公司的增值税发票开不出来，税控盘坏了", contact_name="张三", contact_phone="13800138000", **kw),
            now=now)
        return appeal.id


def test_the_weekly_workbook_counts_by_building_across_shanghai_midnight(client, make_user, make_building,
                                                                          make_enterprise, make_staff,
                                                                          staff_headers):
    """The JSON counts the week's appeals per building (一楼一档), the workbook sent upwards left them out. Sunday
    23:59 and Monday 00:00 Shanghai time fall in two weeks (16:00 UTC the Sunday)."""
    import io
    from datetime import datetime

    from openpyxl import load_workbook

    from wxapp_backend.appeals.calendar import TZ

    building = make_building(name="新华大厦")
    user = make_user(enterprise_id=make_enterprise(building_id=building.id).id, binding_state="verified")
    _submit(user.id, datetime(2025, 10, 26, 23, 59, tzinfo=TZ))  # the Sunday of 2025-W43
    _submit(user.id, datetime(2025, 10, 27, 0, 0, tzinfo=TZ))  # the Monday of 2025-W44
    _submit(user.id, datetime(2025, 10, 31, 23, 59, tzinfo=TZ))  # the month's end, the same week
    h = staff_headers(make_staff(role="admin"))
    report = client.get("/api/v1/staff/reports/weekly?week=2025-W44", headers=h).get_json()
    assert report["totals"]["submitted"] == 2 and report["by_building"] == {"新华大厦": 2}, report
    x = client.get("/api/v1/staff/reports/weekly?week=2025-W44&format=xlsx", headers=h)
    sheet = load_workbook(io.BytesIO(x.data))["概览"]
    rows = [[c.value for c in row if c.value is not None] for row in sheet.iter_rows()]
    assert ["新华大厦", 2] in rows[rows.index(["按楼宇"]):], rows
    assert client.get("/api/v1/staff/reports/weekly?week=2025-W43", headers=h).get_json()["totals"]["submitted"] == 1


def test_an_empty_week_says_none_under_each_heading(client, make_staff, console_login):
    """A week without appeals showed 按类别 and 按部门 headings over nothing, as if the page had failed to load."""
    console_login(make_staff(role="admin"))
    page = client.get("/console/appeals/report?week=2025-W44").get_data(as_text=True)
    for heading in ("按状态", "按类别", "按部门", "按楼宇"):
        section = page.split(f"<h2>{heading}</h2>")[1].split("</ul>")[0]
        assert "无" in section, (heading, section)
