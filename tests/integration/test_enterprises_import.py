"""Enterprise and building import on a real database: all or nothing, upsert, row reports, round trips."""

from __future__ import annotations

import codecs
import io

import openpyxl
from sqlalchemy import func, select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import importer
from wxapp_backend.enterprises.models import Building, Enterprise

ACTOR = Actor("staff", 3, role="staff")
HEADER = "企业名称,统一社会信用代码,行业,楼宇,楼层房间,纳税规模,标签,联系人,联系电话"


def code(n: int) -> str:
    return demo_credit_code("91310105", n)


def bad_check_digit(c: str) -> str:
    return c[:-1] + ("0" if c[-1] != "0" else "1")


def run(kind: str, data: bytes | str, filename: str = "企业.csv") -> importer.ImportReport:
    if isinstance(data, str):
        data = data.encode("utf-8")
    with session_scope() as s:
        return importer.import_file(s, ACTOR, kind, filename, data)


def count(model) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count(model.id))) or 0


def test_good_file_creates_then_updates(app_ctx, make_building):
    make_building(name="新华大厦")
    text = "\n".join([HEADER,
                      f"甲科技有限公司,{code(1)},信息技术,新华大厦,12F 1201,50万以上,高新技术|专精特新,张三,13800000001",
                      f"乙餐饮有限公司,{code(2)},餐饮,,,,重点企业、小微,李四,021-62001234"])
    report = run("enterprises", text)
    assert report.ok, report.error_lines()
    assert (report.rows, report.created, report.updated, report.unchanged) == (2, 2, 0, 0)
    assert "新建 2 个企业" in report.summary()
    with session_scope() as s:
        e = s.scalar(select(Enterprise).where(Enterprise.credit_code == code(1)))
        assert e.building.name == "新华大厦" and e.tags == ["高新技术", "专精特新"] and e.floor_room == "12F 1201"
        assert s.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "enterprise.created")) == 2
        assert s.scalar(select(AuditLog).where(AuditLog.action == "enterprises.imported")).data["created"] == 2
    # The same codes again with a change: an update, not a duplicate.
    report = run("enterprises", "企业名称,统一社会信用代码,行业\n"
                                f"甲科技有限公司,{code(1)},软件\n乙餐饮有限公司,{code(2)},餐饮\n")
    assert (report.created, report.updated, report.unchanged) == (0, 1, 1)
    with session_scope() as s:
        e = s.scalar(select(Enterprise).where(Enterprise.credit_code == code(1)))
        assert e.industry == "软件" and e.contact_name == "张三"  # columns absent from the file are kept


def test_one_bad_row_imports_nothing_and_names_row_and_column(app_ctx):
    text = "\n".join(["企业名称,统一社会信用代码,联系电话",
                      f"甲公司,{code(1)},13800000001",
                      f"乙公司,{code(2)},12345",
                      f"丙公司,{bad_check_digit(code(3))},13800000003",
                      f",{code(4)},"])
    report = run("enterprises", text)
    assert not report.ok
    lines = report.error_lines()
    assert any(line.startswith("第 3 行「联系电话」") for line in lines), lines
    assert any(line.startswith("第 4 行「统一社会信用代码」") and "校验位" in line for line in lines), lines
    assert any(line.startswith("第 5 行「企业名称」") for line in lines), lines
    assert len(lines) == 3
    assert "没有导入任何数据" in report.summary()
    assert count(Enterprise) == 0


def test_gbk_csv_from_excel(app_ctx):
    text = f"企业名称,统一社会信用代码,行业\r\n上海甲乙丙丁有限公司,{code(7)},商务服务\r\n"
    report = run("enterprises", text.encode("gbk"))
    assert report.ok and report.created == 1
    with session_scope() as s:
        assert s.scalar(select(Enterprise.name)) == "上海甲乙丙丁有限公司"


def test_english_headers_and_unknown_columns_warn(app_ctx):
    report = run("enterprises", f"Name,Credit_Code,industry,favourite colour\n甲公司,{code(8)},餐饮,蓝\n")
    assert report.ok and report.created == 1
    assert any("favourite colour" in w for w in report.warnings)


def test_missing_required_column_is_an_error(app_ctx):
    report = run("enterprises", "企业名称,行业\n甲公司,餐饮\n")
    assert not report.ok
    assert "缺少必填列「统一社会信用代码」" in report.error_lines()[0]
    assert count(Enterprise) == 0


def test_duplicate_codes_in_file(app_ctx):
    report = run("enterprises", f"企业名称,统一社会信用代码\n甲公司,{code(9)}\n乙公司,{code(9).lower()}\n")
    assert report.error_lines() == [f"第 3 行「统一社会信用代码」: 统一社会信用代码 {code(9)} 与第 2 行重复。"]
    assert count(Enterprise) == 0


def test_unknown_building_is_named(app_ctx):
    report = run("enterprises", f"企业名称,统一社会信用代码,楼宇\n甲公司,{code(10)},不存在大厦\n")
    assert len(report.errors) == 1
    assert "第 2 行「楼宇」" in report.error_lines()[0] and "不存在大厦" in report.error_lines()[0]


def test_sql_and_html_are_stored_verbatim(app_ctx):
    name = "<script>alert(1)</script>公司"
    note = "'); DROP TABLE enterprises; --"
    data = f'企业名称,统一社会信用代码,备注\n"{name}",{code(11)},"{note}"\n'
    report = run("enterprises", data)
    assert report.ok, report.error_lines()
    with session_scope() as s:
        e = s.scalar(select(Enterprise))
        assert (e.name, e.note) == (name, note)


def test_merged_xlsx_is_refused_and_nothing_written(app_ctx):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["企业名称", "统一社会信用代码"])
    sheet.append(["甲公司", code(12)])
    sheet.append(["乙公司", code(13)])
    sheet.merge_cells("A2:A3")
    buf = io.BytesIO()
    book.save(buf)
    report = run("enterprises", buf.getvalue(), "企业.xlsx")
    assert not report.ok and "合并单元格" in report.error_lines()[0]
    assert count(Enterprise) == 0


def test_round_trip_csv_and_xlsx_change_nothing(app_ctx, make_building, make_grid):
    grid = make_grid(name="一网格")
    make_building(name="新华大厦", grid_id=grid.id)
    text = "\n".join([HEADER,
                      f"\"=HYPERLINK(\"\"http://x\"\")\",{code(20)},信息技术,新华大厦,12F,50万以上,高新技术|专精特新,张三,13800000001",
                      f"乙公司,{code(21)},,,,,,,",
                      f"\"-丙 <b>公司</b>\",{code(22)},餐饮,新华大厦,,,\"a,b\",@李四,021-62001234"])
    assert run("enterprises", text).ok
    with session_scope() as s:
        before = sorted((e.credit_code, e.name, e.tags, e.contact_name) for e in s.scalars(select(Enterprise)))
    for fmt in ("csv", "xlsx"):
        with session_scope() as s:
            content, _mime, filename = importer.export_file(s, "enterprises", fmt)
        assert filename.endswith("." + fmt)
        if fmt == "csv":
            assert content.startswith(codecs.BOM_UTF8)
            assert b"'=HYPERLINK" in content and b"'-" in content and b"'@" in content
        report = run("enterprises", content, filename)
        assert report.ok, report.error_lines()
        assert (report.created, report.updated, report.unchanged) == (0, 0, 3), fmt
    with session_scope() as s:
        after = sorted((e.credit_code, e.name, e.tags, e.contact_name) for e in s.scalars(select(Enterprise)))
    assert after == before
    # Buildings round-trip too.
    with session_scope() as s:
        content, _m, filename = importer.export_file(s, "buildings", "csv")
    report = run("buildings", content, filename)
    assert report.ok and (report.created, report.updated, report.unchanged) == (0, 0, 1)


def test_building_import_upserts_by_name_and_checks_grid(app_ctx, make_grid, make_building):
    make_grid(name="一网格")
    make_building(name="老楼", address="旧地址")
    report = run("buildings", "楼宇名称,地址,网格\n老楼,新地址,一网格\n新楼,新华路 2 号,\n", "楼宇.csv")
    assert report.ok and (report.created, report.updated) == (1, 1)
    with session_scope() as s:
        old = s.scalar(select(Building).where(Building.name == "老楼"))
        assert old.address == "新地址" and old.grid.name == "一网格"
    report = run("buildings", "name,address,grid\n第三楼,x,没有的网格\n第三楼,y,\n", "b.csv")
    assert not report.ok
    assert any("没有的网格" in line and line.startswith("第 2 行「grid」") for line in report.error_lines())
    assert any(line.startswith("第 3 行「name」") for line in report.error_lines())
    assert count(Building) == 2
