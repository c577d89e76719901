"""Session 8 QA of enterprise, building and grid management: imports, deletions and their audit rows."""

from __future__ import annotations

import io
import re
import zipfile

import openpyxl
import pytest
from sqlalchemy import select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import importer, services
from wxapp_backend.enterprises.models import Enterprise

ACTOR = Actor("staff", 3, role="staff")


def code(n: int) -> str:
    return demo_credit_code("91310105", n)


def run(kind: str, data: bytes | str, filename: str = "企业.csv") -> importer.ImportReport:
    if isinstance(data, str):
        data = data.encode("utf-8")
    with session_scope() as s:
        return importer.import_file(s, ACTOR, kind, filename, data)


@pytest.mark.parametrize("body", [f'"甲科技有限公司"x,{code(1)}\n', f'"甲科技有限公司,{code(1)}\n'])
def test_broken_csv_quotes_are_reported_in_chinese(app_ctx, body):
    report = run("enterprises", "企业名称,统一社会信用代码\n" + body)
    assert not report.ok
    [line] = report.error_lines()
    assert "第 2 行" in line and "引号" in line
    # The csv module's own English words ("',' expected after '\"'", "unexpected end of data") are not shown.
    assert not re.search(r"[A-Za-z]{3,}", line.replace("CSV", "")), line


def _xlsx(rows: list[list[object]], patch: tuple[bytes, bytes] | None = None) -> bytes:
    """An .xlsx written by openpyxl (formulas saved without a result); `patch` rewrites the sheet's XML."""
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    buf = io.BytesIO()
    book.save(buf)
    if patch is None:
        return buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                assert patch[0] in data
                data = data.replace(*patch)
            dst.writestr(info, data)
    return out.getvalue()


def test_formula_without_a_saved_result_is_refused_not_imported_as_empty(app_ctx, make_enterprise):
    make_enterprise(name="甲科技有限公司", credit_code=code(1), contact_name="张三")
    data = _xlsx([["企业名称", "统一社会信用代码", "联系人"], ["甲科技有限公司", code(1), '=IF(1,"张三","")']])
    report = run("enterprises", data, filename="企业.xlsx")
    assert not report.ok
    assert "C2" in report.error_lines()[0] and "公式" in report.error_lines()[0]
    with session_scope() as s:
        assert s.scalar(select(Enterprise.contact_name).where(Enterprise.credit_code == code(1))) == "张三"


def test_formula_with_its_result_saved_imports_the_result(app_ctx):
    # As Excel saves them: the formula and its cached value; an empty text result is typed t="str".
    data = _xlsx([["企业名称", "统一社会信用代码", "联系人", "备注"], ["甲科技有限公司", code(1), "=B1", '=""']],
                 patch=(b'<c r="C2"><f>B1</f><v /></c><c r="D2"><f>""</f><v /></c>',
                        b'<c r="C2" t="str"><f>B1</f><v>\xe6\x9d\x8e\xe5\x9b\x9b</v></c>'
                        b'<c r="D2" t="str"><f>""</f><v></v></c>'))
    report = run("enterprises", data, filename="企业.xlsx")
    assert report.ok, report.error_lines()
    with session_scope() as s:
        assert s.scalar(select(Enterprise.contact_name).where(Enterprise.credit_code == code(1))) == "李四"


def test_credit_code_excel_turned_into_a_number_is_explained(app_ctx):
    # An all-digit code typed into a number-formatted cell keeps 15 significant digits: the .xlsx holds a
    # float, and Excel's "CSV" writes it as 9.13101E+17. "应为 18 位" would send staff looking for a typo.
    xlsx = _xlsx([["企业名称", "统一社会信用代码"], ["甲科技有限公司", 913101050000000001]])
    csv_text = "企业名称,统一社会信用代码\n甲科技有限公司,9.13101E+17\n"
    for data, name in [(xlsx, "企业.xlsx"), (csv_text.encode(), "企业.csv")]:
        report = run("enterprises", data, filename=name)
        [line] = report.error_lines()
        assert line.startswith("第 2 行「统一社会信用代码」") and "文本" in line, line


def test_deleting_a_building_audits_the_users_who_lose_it(app_ctx, make_building, make_user):
    b = make_building()
    users = [make_user(building_id=b.id), make_user(building_id=b.id)]
    other = make_user()
    with session_scope() as s:
        services.delete_building(s, ACTOR, b.id)
    with session_scope() as s:
        assert s.scalar(select(User.building_id).where(User.id == users[0].id)) is None
        row = s.scalar(select(AuditLog).where(AuditLog.action == "building.deleted"))
        # Like enterprise.deleted's unbound_users: whose building the deletion cleared.
        assert row.data["cleared_users"] == [u.id for u in users] and other.id not in row.data["cleared_users"]


def test_a_building_an_upcoming_activity_or_draft_notice_is_for_is_not_deleted(app_ctx, make_building,
                                                                                make_activity):
    """An audience is a JSON list of building ids without a foreign key: deleting the building left a dangling id
    (one a new building could take on SQLite) or an empty list, which means everyone."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.errors import Conflict
    from wxapp_backend.notices.broadcast_models import Notice

    b, past_only, free = make_building(name="新华大厦"), make_building(name="幸福大楼"), make_building(name="空楼")
    make_activity(title="午间瑜伽", audience_building_ids=[b.id])
    make_activity(title="去年的活动", audience_building_ids=[past_only.id],
                  starts_at=datetime.now(UTC) - timedelta(days=300))
    with session_scope() as s:
        s.add(Notice(title="停水通知", summary="", audience={"all": False, "building_ids": [free.id]}))
    for building, word in ((b, "活动「午间瑜伽」"), (free, "通知「停水通知」")):
        with pytest.raises(Conflict) as info, session_scope() as s:
            services.delete_building(s, ACTOR, building.id)
        assert word in info.value.message
    with session_scope() as s:  # an activity that is over does not hold its building
        services.delete_building(s, ACTOR, past_only.id)


def test_the_api_takes_tags_alike_on_create_and_edit(client, make_staff, staff_headers, app_ctx):
    h = staff_headers(make_staff(role="staff"))
    created = client.post("/api/v1/staff/enterprises", json={"name": "标签科技有限公司", "credit_code": code(801),
                                                             "tags": "专精特新|高新技术企业"}, headers=h)
    assert created.status_code == 201, created.get_json()  # was 422 “标签应为列表” while PATCH took the same text
    body = created.get_json()
    assert body["tags"] == ["专精特新", "高新技术企业"]
    assert client.post("/api/v1/staff/enterprises", json={"credit_code": code(802)}, headers=h).status_code == 422
    assert client.post("/api/v1/staff/enterprises", json=["not", "an", "object"], headers=h).status_code in (400, 422)
