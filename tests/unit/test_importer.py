"""Spreadsheet reading and writing without a database: encodings, merged cells, limits, formula guard."""

from __future__ import annotations

import codecs
import csv
import io
import zipfile

import openpyxl
import pytest

from wxapp_backend.enterprises import importer
from wxapp_backend.enterprises.importer import _FileProblem, read_table


def xlsx(rows, merge: str | None = None) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    if merge:
        sheet.merge_cells(merge)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def test_csv_utf8_with_and_without_bom_and_gbk():
    text = "企业名称,行业\r\n甲公司,餐饮\r\n"
    expected = [(1, ["企业名称", "行业"]), (2, ["甲公司", "餐饮"])]
    assert read_table("a.csv", text.encode("utf-8")) == expected
    assert read_table("a.csv", codecs.BOM_UTF8 + text.encode("utf-8")) == expected
    assert read_table("a.csv", text.encode("gbk")) == expected
    assert read_table("a.csv", text.encode("utf-16")) == expected


def test_tab_separated_text_is_read():
    assert read_table("a.txt", "企业名称\t行业\n甲\t乙\n".encode())[1] == (2, ["甲", "乙"])


def test_row_numbers_are_excel_rows_despite_blank_and_multiline_rows():
    text = '企业名称,备注\n甲,"两行\n备注"\n,\n乙,x\n'
    rows = read_table("a.csv", text.encode())
    assert [n for n, _ in rows] == [1, 2, 4]
    assert rows[1][1][1] == "两行\n备注"


def test_xlsx_cells_become_text():
    data = xlsx([["企业名称", "联系电话", "数字"], ["甲", 13800000000, 1.5]])
    assert read_table("a.xlsx", data)[1] == (2, ["甲", "13800000000", "1.5"])


def test_xlsx_with_merged_cells_is_refused():
    data = xlsx([["企业名称", "行业"], ["甲", "餐饮"]], merge="A2:B2")
    with pytest.raises(_FileProblem, match="合并单元格.*A2:B2"):
        read_table("a.xlsx", data)


@pytest.mark.parametrize("name,data,why", [
    ("a.csv", b"", "空"),
    ("a.xls", b"\xd0\xcf\x11\xe0" + b"\0" * 100, ".xls"),
    ("a.pdf", b"%PDF-1.4", "只支持"),
    ("a.xlsx", b"PK\x03\x04not really a zip", "不是有效"),
    ("a.csv", b'a,"b\n', "CSV"),
])
def test_unreadable_files_get_a_clear_message(name, data, why):
    with pytest.raises(_FileProblem, match=why):
        read_table(name, data)


def test_csv_with_nul_byte_does_not_crash():
    # Control characters are removed when the cell is validated.
    assert read_table("a.csv", b"a,b\n\x00x,y\n")[1] == (2, ["\x00x", "y"])


def test_size_and_row_limits(monkeypatch):
    with pytest.raises(_FileProblem, match="5 MB"):
        read_table("a.csv", b"a\n" + b"x" * importer.MAX_BYTES)
    monkeypatch.setattr(importer, "MAX_ROWS", 3)
    ok = "企业名称\n" + "甲\n" * 3
    assert len(read_table("a.csv", ok.encode())) == 4
    with pytest.raises(_FileProblem, match="超过 3 行"):
        read_table("a.csv", (ok + "乙\n").encode())


def test_zip_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(importer, "MAX_XLSX_INFLATED", 1000)
    data = xlsx([["企业名称"], ["x" * 5000]])
    with pytest.raises(_FileProblem, match="太大"):
        read_table("a.xlsx", data)


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "=HYPERLINK(\"http://evil\")"])
def test_csv_export_guards_formulas_and_import_restores_them(cell):
    data = importer.to_csv(["企业名称"], [[cell]])
    assert data.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline="")))
    assert rows == [["企业名称"], ["'" + cell]]
    assert importer._cell_text(rows[1][0]) == cell


def test_plain_cells_are_not_touched():
    assert importer.guard_formula("甲公司") == "甲公司"
    assert importer._cell_text("'普通引号开头") == "'普通引号开头"


def test_xlsx_export_has_no_formulas():
    data = importer.to_xlsx(["企业名称", "备注"], [["=cmd|' /C calc'!A0", "-2"]])
    sheet_xml = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml")
    assert b"<f>" not in sheet_xml
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    assert list(book.worksheets[0].iter_rows(values_only=True))[1] == ("=cmd|' /C calc'!A0", "-2")
