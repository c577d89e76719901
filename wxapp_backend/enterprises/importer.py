"""Spreadsheet exchange for 一企一档 / 一楼一档: all-or-nothing import from CSV/XLSX and export back.

Policy: every row is checked first; if any row is bad nothing is written and every problem is reported as
"第 N 行「列名」: 问题" with N the row number Excel shows (header = row 1). Otherwise enterprises are
upserted by credit code (buildings by name) in the caller's one transaction. Columns that are absent from
the file are left as they are; a present but empty cell empties the field.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePath
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from knowledge.loaders import decode_utf16_without_bom

from ..audit import Actor, audit
from ..db import refusal
from ..errors import AppError, Conflict, ValidationError
from ..validation import strip_invisible
from . import services
from .models import Building, Enterprise, Grid

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 20_000
MAX_COLUMNS = 60
MAX_SHEET_ROWS = 200_000  # counting empty rows: a sheet "used" far below its data is refused, not crawled
# A 5 MB .xlsx that inflates beyond this is not a spreadsheet of 20,000 rows but a zip bomb.
MAX_XLSX_INFLATED = 200 * 1024 * 1024
# Cells in the workbook's sheets, counted in their XML before openpyxl opens it: opening parses every sheet
# without a <dimension> in full (~300,000 cells a second, past MAX_COLUMNS too), so a 300 KB file with one row of
# six million cells held a web worker for 40 seconds. Twice a full sheet leaves room for columns not imported.
MAX_SHEET_CELLS = 2 * MAX_ROWS * MAX_COLUMNS
_CELL_RE = re.compile(rb"<(?:\w+:)?c[\s>/]")
# Cells starting with these are run as formulas by Excel/WPS (CSV injection); exports prefix them with '.
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Column:
    """One spreadsheet column: its service field, the Chinese header we write, the headers we accept."""

    key: str
    label: str
    aliases: tuple[str, ...] = ()
    required: bool = False

    def names(self) -> set[str]:
        return {_norm_header(n) for n in (self.key, self.label, *self.aliases)}


ENTERPRISE_COLUMNS = (
    Column("name", "企业名称", ("企业", "单位名称"), required=True),
    Column("credit_code", "统一社会信用代码", ("信用代码", "社会信用代码"), required=True),
    Column("industry", "行业", ("所属行业",)),
    Column("building", "楼宇", ("所在楼宇", "楼宇名称")),
    Column("floor_room", "楼层房间", ("楼层", "房间", "楼层/房间")),
    Column("tax_bracket", "纳税规模", ()),
    Column("tags", "标签", ()),
    Column("contact_name", "联系人", ()),
    Column("contact_phone", "联系电话", ("电话", "手机", "手机号")),
    Column("note", "备注", ()),
)

BUILDING_COLUMNS = (
    Column("name", "楼宇名称", ("楼宇",), required=True),
    Column("address", "地址", ("楼宇地址",)),
    Column("grid", "网格", ("所属网格", "网格名称")),
    Column("note", "备注", ()),
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
KINDS = {"enterprises": ("企业", ENTERPRISE_COLUMNS), "buildings": ("楼宇", BUILDING_COLUMNS)}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file: a row and column, or the file as a whole (row None)."""

    message: str
    row: int | None = None
    column: str = ""

    def __str__(self) -> str:
        if self.row is None:
            return self.message
        return f"第 {self.row} 行「{self.column}」: {self.message}" if self.column else \
            f"第 {self.row} 行: {self.message}"


@dataclass
class ImportReport:
    """What an import did, or why it did nothing."""

    kind: str
    filename: str = ""
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def label(self) -> str:
        return KINDS[self.kind][0]

    def error_lines(self) -> list[str]:
        return [str(p) for p in self.errors]

    def summary(self) -> str:
        if self.errors:
            return f"发现 {len(self.errors)} 处问题，本次没有导入任何数据。请修改后重新上传整个文件。"
        return (f"导入完成：共 {self.rows} 行，新建 {self.created} 个{self.label}，更新 {self.updated} 个，"
                f"{self.unchanged} 个没有变化。")

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "kind": self.kind, "rows": self.rows, "created": self.created,
                "updated": self.updated, "unchanged": self.unchanged, "errors": self.error_lines(),
                "warnings": list(self.warnings), "summary": self.summary()}


class _FileProblem(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


# --- reading ----------------------------------------------------------------------------------------

def _norm_header(name: Any) -> str:
    text = "" if name is None else str(name)
    text = text.replace("\ufeff", "").strip().rstrip("*＊").strip()
    return re.sub(r"\s+", "_", text).lower()


def _cell_text(value: Any) -> str:
    """A cell as the text the user sees: numbers without '.0', dates as ISO, the formula guard removed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    if len(text) > 1 and text[0] == "'" and text[1] in FORMULA_CHARS:
        text = text[1:]  # our own export's guard against formula injection
    return text


def _human_size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{max(1, n // 1024)} KB"


def read_table(filename: str, data: bytes, columns: tuple[Column, ...] = ()) -> list[tuple[int, list[str]]]:
    """The rows of a CSV or XLSX file as (Excel row number, cell texts), empty rows left out.

    Merged cells are refused, except, given the `columns` to find the header by, those above the header (a
    register's title is usually merged across the table)."""
    if not data:
        raise _FileProblem("文件是空的，请选择要导入的表格文件。")
    if len(data) > MAX_BYTES:
        raise _FileProblem(f"文件太大了（{_human_size(len(data))}），上限 {MAX_BYTES // 1024 // 1024} MB，请分批导入。")
    ext = PurePath(filename or "").suffix.lower()
    if data[:4] == b"\xd0\xcf\x11\xe0" or ext == ".xls":
        raise _FileProblem("暂不支持旧版 .xls 文件，请在 Excel 中「另存为」.xlsx 或 CSV UTF-8 后再导入。")
    merges: list[tuple[str, str]] = []  # (range, sheet title), filled as an .xlsx is opened
    if data[:4] == b"PK\x03\x04" or ext in {".xlsx", ".xlsm"}:
        rows = _read_xlsx(data, merges)
    elif ext in {".csv", ".txt", ""}:
        rows = _read_csv(data)
    else:
        raise _FileProblem("只支持 .csv 和 .xlsx 文件。")
    out = []
    for number, cells in rows:
        if number > MAX_SHEET_ROWS:
            raise _FileProblem(f"表格有 {MAX_SHEET_ROWS} 行以上（含空行），请删除多余的空行后再导入。")
        texts = [_cell_text(c) for c in cells]
        while texts and texts[-1] == "":
            texts.pop()  # read-only sheets pad every row to the widest one
        if any(t.strip() for t in texts):
            out.append((number, texts))
        if len(out) > MAX_ROWS + 1:
            raise _FileProblem(f"文件超过 {MAX_ROWS} 行（不含表头），请拆分成几个文件分批导入。")
    if not out:
        raise _FileProblem("文件里没有内容，第一行应为表头。")
    _refuse_merges(merges, out, columns)
    return out


def _refuse_merges(merges: list[tuple[str, str]], rows: list[tuple[int, list[str]]],
                   columns: tuple[Column, ...]) -> None:
    header_row = rows[_header_index(rows, columns)][0] if columns else 1
    for ref, title in merges:
        last_row = int(re.sub(r"[A-Za-z]", "", ref.split(":")[-1]) or 0)
        if last_row >= header_row:
            raise _FileProblem(f"工作表「{title}」中有合并单元格（如 {ref}），请取消合并并把每一格填完整后再导入"
                               "（合并单元格只有左上角一格有内容）。")


def _decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8):].decode("utf-8")
        except UnicodeDecodeError:
            raise _FileProblem("文件标明是 UTF-8 编码，但内容有损坏，请重新保存后再导入。") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise _FileProblem("文件编码无法识别，请在 Excel 中另存为「CSV UTF-8」后再导入。") from None
    # Before UTF-8: UTF-16 without a BOM is valid UTF-8 when it is all ASCII (a NUL after every character).
    if (text := decode_utf16_without_bom(data)) is not None:
        return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        # Excel and WPS in China save CSV as GBK; GB18030 is its superset.
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise _FileProblem("文件编码无法识别，请在 Excel 中另存为「CSV UTF-8」后再导入。") from None


def _read_csv(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    text = _decode(data)
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        # A record is one spreadsheet row even when a quoted cell spans several lines.
        for number, record in enumerate(reader, start=1):
            yield number, record[:MAX_COLUMNS]
    except csv.Error as exc:
        # The csv module's messages are English; staff get the likely cause in Chinese instead.
        if "field limit" in str(exc):
            cause = "有一格内容过长"
        elif "end of data" in str(exc):
            cause = "有一个引号到文件末尾都没有结束"
        else:
            cause = "引号后面紧跟了其他文字"
        raise _FileProblem(f"CSV 格式有误（第 {reader.line_num} 行附近：{cause}），请检查引号是否成对。") from None


# A long number in a cell formatted as a number: Excel keeps 15 significant digits and shows 9.13101E+17.
_SCIENTIFIC_RE = re.compile(r"\s*\d(\.\d+)?[eE]\+\d+\s*$")
_MERGE_RE = re.compile(rb"<(?:\w+:)?mergeCell\s+ref=\"([A-Za-z0-9:$]+)\"")
# A cell with a formula and no (or an empty) cached value, unless typed as a text result (t="str"), which is
# how Excel saves a formula whose result is the empty text.
_UNCALCULATED_RE = re.compile(
    rb"<(?:\w+:)?c\s+r=\"([A-Z]+\d+)\"(?![^>]*\bt=\"str\")[^>]*>\s*"
    rb"<(?:\w+:)?f\b[^>]*(?:/>|>[^<]*</(?:\w+:)?f>)\s*(?:<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*"
    rb"</(?:\w+:)?c>")


def _read_xlsx(data: bytes, merges: list[tuple[str, str]]) -> Iterator[tuple[int, list[Any]]]:
    """The first sheet's rows; its merged ranges go into `merges` as (ref, sheet title) before the first row."""
    import openpyxl

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise _FileProblem("这个文件不是有效的 .xlsx 文件，请用 Excel 打开后重新保存再导入。") from None
    if inflated > MAX_XLSX_INFLATED:
        raise _FileProblem("表格解压后太大了，请删除多余的工作表或格式后再导入。")
    _refuse_too_many_cells(archive)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many types for damaged files; all mean the same to the user
        raise _FileProblem("无法读取这个 Excel 文件，请用 Excel 打开后另存为 .xlsx 再导入。") from None
    try:
        if not book.worksheets:
            raise _FileProblem("Excel 文件里没有工作表。")
        sheet = book.worksheets[0]
        merges.extend((ref, sheet.title) for ref in _scan_sheet(archive, getattr(sheet, "_worksheet_path", ""),
                                                                sheet.title))
        for number, values in enumerate(sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS), start=1):
            yield number, list(values)
    finally:
        book.close()


def _refuse_too_many_cells(archive: zipfile.ZipFile) -> None:
    cells = 0
    try:
        for info in archive.infolist():
            if not (info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml")):
                continue
            with archive.open(info) as fh:
                while chunk := fh.read(1 << 20):
                    cells += len(_CELL_RE.findall(chunk))  # a tag cut between two chunks is one cell in millions
                    if cells > MAX_SHEET_CELLS:
                        raise _FileProblem(f"表格的单元格太多了（超过 {MAX_SHEET_CELLS} 个），请删除多余的行、列或工作表，"
                                           "或拆分成几个文件后再导入。")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError, EOFError,
            zlib.error):
        raise _FileProblem("无法读取这个 Excel 文件，请用 Excel 打开后另存为 .xlsx 再导入。") from None


def _scan_sheet(archive: zipfile.ZipFile, path: str, title: str) -> list[str]:
    """The sheet's merged ranges ("A1:J1"); a formula saved without its result is refused here."""
    # openpyxl's read-only mode reports neither merged cells nor formulas without a result, so look in the
    # sheet's XML; merged cells are listed after the cell data, so read it as a stream.
    if not path:
        return []
    tail = b""
    merges: dict[str, None] = {}  # in order; the overlap between chunks finds a range twice
    with archive.open(path.lstrip("/")) as fh:
        while chunk := fh.read(1 << 20):
            for found in _MERGE_RE.finditer(tail + chunk):
                if len(merges) < 1000:
                    merges.setdefault(found.group(1).decode("ascii").replace("$", ""), None)
            # A formula saved without its result (files written by programs, not by Excel or WPS) reads as an
            # empty cell, which would silently empty the field.
            found = _UNCALCULATED_RE.search(tail + chunk)
            if found:
                ref = found.group(1).decode("ascii")
                raise _FileProblem(f"工作表「{title}」的单元格 {ref} 是公式，但文件里没有保存计算结果，"
                                   "请用 Excel 或 WPS 打开并保存一次后再导入（或把公式改成数值）。")
            tail = chunk[-20000:]
    return list(merges)


def _map_headers(header: list[str], columns: tuple[Column, ...], report: ImportReport) -> dict[str, tuple[int, str]]:
    """column key -> (cell index, header text as written); problems go into the report."""
    by_name = {n: c for c in columns for n in c.names()}
    found: dict[str, tuple[int, str]] = {}
    unknown = []
    for i, raw in enumerate(header):
        written = str(raw).replace("\ufeff", "").strip()
        if not written:
            continue
        col = by_name.get(_norm_header(written))
        if col is None:
            unknown.append(written)
        elif col.key in found:
            report.errors.append(Problem(f"表头中「{found[col.key][1]}」和「{written}」是同一列（{col.label}），"
                                         "请只保留一列。", row=1))
        else:
            found[col.key] = (i, written)
    if unknown:
        report.warnings.append("以下列无法识别，已忽略：" + "、".join(f"「{u}」" for u in unknown)
                               + "。可用的列：" + "、".join(c.label for c in columns) + "。")
    for col in columns:
        if col.required and col.key not in found:
            report.errors.append(Problem(f"缺少必填列「{col.label}」（也可写作 {col.key}），请在第一行表头中加上。"))
    return found


def _records(rows: list[tuple[int, list[str]]], colmap: Mapping[str, tuple[int, str]]):
    for number, cells in rows:
        yield number, {key: (cells[i] if i < len(cells) else "") for key, (i, _) in colmap.items()}


def _row_problems(number: int, exc: ValidationError, colmap: Mapping[str, tuple[int, str]],
                  field_to_column: Mapping[str, str]) -> list[Problem]:
    out = []
    for field_name, message in exc.fields.items():
        key = field_to_column.get(field_name, field_name)
        out.append(Problem(message, row=number, column=colmap[key][1] if key in colmap else key))
    return out


# --- import -----------------------------------------------------------------------------------------

def import_file(session: Session, actor: Actor, kind: str, filename: str, data: bytes) -> ImportReport:
    """Import enterprises or buildings from one file, all or nothing; see the module docstring."""
    report = ImportReport(kind=kind, filename=filename)
    try:
        rows = read_table(filename, data, KINDS[kind][1])
    except _FileProblem as exc:
        report.errors.append(Problem(exc.message))
        return report
    above = _header_index(rows, KINDS[kind][1])
    rows = rows[above:]
    header_row, header = rows[0]
    if above:
        report.warnings.append(f"第 {header_row} 行是表头，上面的 {header_row - 1} 行（标题、说明或空行）没有导入。")
    elif header_row != 1:
        report.warnings.append(f"第 1 至 {header_row - 1} 行为空，已把第 {header_row} 行当作表头。")
    colmap = _map_headers(header, KINDS[kind][1], report)
    if report.errors:
        return report
    body = rows[1:]
    report.rows = len(body)
    if not body:
        report.errors.append(Problem("表头下面没有数据行。"))
        return report
    if kind == "enterprises":
        _import_enterprises(session, actor, body, colmap, report)
    else:
        _import_buildings(session, actor, body, colmap, report)
    return report


HEADER_SEARCH_ROWS = 10


def _header_index(rows: list[tuple[int, list[str]]], columns: tuple[Column, ...]) -> int:
    """Where the header is: registers often open with a title line (“2024年企业名单”) or a note above it.

    The first of the opening rows that names every required column; the first row when none does (its missing
    columns are then reported)."""
    required = [c.names() for c in columns if c.required]
    for i, (_number, cells) in enumerate(rows[:HEADER_SEARCH_ROWS]):
        names = {_norm_header(c) for c in cells}
        if all(names & r for r in required):
            return i
    return 0


def _by_name(ref_ids: Mapping[str, int]) -> dict[str, list[str]]:
    """Names on file by their fold (blanks, brackets, ASCII case, full-width letters and digits), to find a name
    written another way."""
    out: dict[str, list[str]] = {}
    for name in ref_ids:
        out.setdefault(services.place_name_key(name), []).append(name)
    return out


def _checked_rows(body, colmap, report: ImportReport, *, ref: str, ref_ids: dict[str, int], ref_field: str,
                  missing: str, fields, key: str, duplicate: str, fold: Callable[[str], str] = str,
                  rows: list[int] | None = None) -> list[dict[str, Any]]:
    """Validate every row; problems go to the report (naming row and column), good rows are returned.

    `ref` is the column naming another record by name (楼宇 for enterprises, 网格 for buildings), resolved
    through `ref_ids` into `ref_field` (the exact name first, else the one name written another way:
    “新华（一期）大厦” is “新华(一期)大厦”); `key` must be unique within the file, compared by `fold`. `rows`, when
    given, receives each good row's number (Excel's), in the order of the rows returned.
    """
    valid: list[dict[str, Any]] = []
    first_row: dict[str, int] = {}
    folded = _by_name(ref_ids)
    for number, record in _records(body, colmap):
        data: dict[str, Any] = {k: v for k, v in record.items() if k != ref}
        problems: list[Problem] = []
        if ref in record:
            name = strip_invisible(record[ref]).strip()  # as the names on file were written: see validation
            near = folded.get(services.place_name_key(name), [])
            if name and name not in ref_ids and len(near) == 1:
                name = near[0]
            if name and name not in ref_ids:
                problem = (missing.format(name=name) if not near else
                           f"「{name}」和已有的{'、'.join(f'「{n}」' for n in near[:3])}写法相近，请写出其中准确的一个")
                problems.append(Problem(problem, row=number, column=colmap[ref][1]))
            data[ref_field] = ref_ids.get(name)
        for k, text in data.items():
            if isinstance(text, str) and _SCIENTIFIC_RE.match(text):
                problems.append(Problem(f"这一格被 Excel 当成了数字（{text.strip()}），长数字的后几位已经丢失；请把这一列"
                                        "设置为「文本」格式，重新填写后再导入", row=number, column=colmap[k][1]))
        try:
            values = services.clean_values(data, fields, partial=True)
        except ValidationError as exc:
            problems.extend(p for p in _row_problems(number, exc, colmap, {ref_field: ref})
                            if all(p.column != q.column for q in problems))
            values = {}
        value = values.get(key)
        if value:
            if fold(value) in first_row:
                problems.append(Problem(duplicate.format(value=value, row=first_row[fold(value)]), row=number,
                                        column=colmap[key][1]))
            else:
                first_row[fold(value)] = number
        if problems:
            report.errors.extend(problems)
        else:
            valid.append(values)
            if rows is not None:
                rows.append(number)
    return valid


def _import_enterprises(session: Session, actor: Actor, body, colmap, report: ImportReport) -> None:
    buildings = {name: id_ for id_, name in session.execute(select(Building.id, Building.name))}
    numbers: list[int] = []
    valid = _checked_rows(body, colmap, report, ref="building", ref_ids=buildings, ref_field="building_id",
                          missing="楼宇「{name}」不存在，请先在楼宇页面建档（或先导入楼宇）后再导入企业。",
                          fields=services.ENTERPRISE_FIELDS, key="credit_code",
                          duplicate="统一社会信用代码 {value} 与第 {row} 行重复。", rows=numbers)
    if report.errors:
        return
    # Files on record by their folded code (an old file may have it in lower case or with blanks): a current file
    # before a retired duplicate, which stands for the file it was merged into.
    existing: dict[str, Enterprise] = {}
    codes = [values["credit_code"] for values in valid]
    for i in range(0, len(codes), 500):
        for e in session.scalars(select(Enterprise).where(services.code_key(Enterprise.credit_code)
                                                          .in_(codes[i:i + 500]))
                                 .order_by(Enterprise.retired_at.is_(None), Enterprise.id.desc())):
            existing[services.normalized_code(e.credit_code)] = e  # the last written wins: current, lowest id
    targets: list[tuple[dict, Enterprise | None]] = []
    for number, values in zip(numbers, valid, strict=True):
        current = existing.get(values["credit_code"])
        if current is not None and current.retired:
            current = services.carrying_on(session, current)
            if current is None:  # merged into a file deleted since (old data): nothing to update, nor to add
                report.errors.append(Problem(f"统一社会信用代码 {values['credit_code']} 对应的企业档案已合并停用，"
                                             "而它合并到的档案已被删除；请先请管理员核实处理，再导入这一行。",
                                             row=number, column=colmap["credit_code"][1]))
                continue
            if current.credit_code != values["credit_code"]:
                values = {k: v for k, v in values.items() if k != "credit_code"}  # the kept file keeps its own
        elif current is not None and services.keeps_its_spelling(session, current, values["credit_code"]):
            values = {k: v for k, v in values.items() if k != "credit_code"}
        targets.append((values, current))
    if report.errors:
        return
    _warn_same_names(session, report, targets, numbers)
    created, notified = _write(session, actor, report, targets, lambda values: Enterprise(**{"tags": [], **values}),
                               services.enterprise_moved, "enterprise", numbers,
                               {id_: name for name, id_ in buildings.items()})
    for e in created:
        audit(session, actor, "enterprise.created", e, via="import", name=e.name, credit_code=e.credit_code)
    audit(session, actor, "enterprises.imported", None, filename=report.filename, rows=report.rows,
          created=report.created, updated=report.updated, unchanged=report.unchanged, **notified)


MAX_NAME_WARNINGS = 20


def _warn_same_names(session: Session, report: ImportReport, targets: list[tuple[dict, Enterprise | None]],
                     numbers: list[int]) -> None:
    """A new file under the name of another row, or of a file on record, with a different credit code: names are
    unique in a region, so one of the codes is likely mistyped (a valid check digit by chance). The files are made
    (two valid codes may be two enterprises) and the report says which rows to check."""
    new = [(number, values) for number, (values, current) in zip(numbers, targets, strict=True) if current is None]
    if not new:
        return
    keys = sorted({services.normalized_name(values["name"]) for _n, values in new})
    on_file: dict[str, Enterprise] = {}
    for i in range(0, len(keys), 500):
        for e in session.scalars(select(Enterprise).where(Enterprise.retired_at.is_(None),
                                                          services.name_key(Enterprise.name).in_(keys[i:i + 500]))
                                 .order_by(Enterprise.id.desc())):
            on_file[services.normalized_name(e.name)] = e  # the oldest wins
    first: dict[str, int] = {}
    for number, values in zip(numbers, (v for v, _c in targets), strict=True):
        first.setdefault(services.normalized_name(values["name"]), number)
    lines = []
    for number, values in new:
        key, name = services.normalized_name(values["name"]), values["name"]
        known = on_file.get(key)
        if known is not None:
            lines.append(f"第 {number} 行的企业名称「{name}」已登记（信用代码 {known.credit_code}），本行的信用代码 "
                         f"{values['credit_code']} 不同，已另建一份档案；如是同一家企业，请核对信用代码后合并。")
        elif first[key] != number:
            lines.append(f"第 {number} 行的企业名称「{name}」与第 {first[key]} 行相同，但统一社会信用代码不同，已分别建档；"
                         "如是同一家企业，请核对信用代码后合并。")
    if len(lines) > MAX_NAME_WARNINGS:
        lines = [*lines[:MAX_NAME_WARNINGS], f"……另有 {len(lines) - MAX_NAME_WARNINGS} 行企业名称重复，未一一列出。"]
    report.warnings.extend(lines)


def _import_buildings(session: Session, actor: Actor, body, colmap, report: ImportReport) -> None:
    grids = {name: id_ for id_, name in session.execute(select(Grid.id, Grid.name))}
    numbers: list[int] = []
    valid = _checked_rows(body, colmap, report, ref="grid", ref_ids=grids, ref_field="grid_id",
                          missing="网格「{name}」不存在，请先在网格页面新建后再导入。",
                          fields=services.BUILDING_FIELDS, key="name", duplicate="楼宇「{value}」与第 {row} 行重复。",
                          fold=services.place_name_key, rows=numbers)
    if report.errors:
        return
    existing = {b.name: b for b in session.scalars(select(Building))}
    folded = _by_name(existing)
    # Every row is matched to its building before any is changed: a row refused here must leave the rows above it
    # unwritten too (the caller commits whatever the session holds).
    targets: list[tuple[dict, Building | None]] = []
    for number, values in zip(numbers, valid, strict=True):
        current = existing.get(values["name"])
        near = folded.get(services.place_name_key(values["name"]), [])
        if current is None and len(near) == 1:
            # The building on file written another way (“SOHO 东海广场”): it is updated, and keeps its name.
            current = existing[near[0]]
            values = {k: v for k, v in values.items() if k != "name"}
        elif current is None and near:
            report.errors.append(Problem(f"楼宇「{values['name']}」和已有的{'、'.join(f'「{n}」' for n in near[:3])}"
                                         "写法相近，请写出其中准确的一个", row=number, column=colmap["name"][1]))
            continue
        targets.append((values, current))
    if report.errors:
        return
    created, notified = _write(session, actor, report, targets, lambda values: Building(**values),
                               services.building_moved, "building", numbers, {id_: name for name, id_ in grids.items()})
    for b in created:
        audit(session, actor, "building.created", b, via="import", name=b.name, grid_id=b.grid_id)
    audit(session, actor, "buildings.imported", None, filename=report.filename, rows=report.rows,
          created=report.created, updated=report.updated, unchanged=report.unchanged, **notified)


def _write(session: Session, actor: Actor | None, report: ImportReport, targets: list[tuple[dict, Any]],
           make: Callable[[dict], Any], moved: Callable[..., dict], kind: str, numbers: list[int],
           names: Mapping[int, str]) -> tuple[list[Any], dict]:
    """Write the matched rows of an import: a new record for each row with none (returned, for the caller's audit
    rows), the changed fields of the others (an audit row each, and what moved along with them: open appeals to
    another grid). The specialists those appeals went to hear of them once for the whole import; returns the new
    records and the import's audit fields naming who was told. `numbers` are the rows' numbers (Excel's), in the
    order of `targets`; `names` the names of the buildings (grids) the rows may point at, by id.

    A colleague's write since the rows were checked can make the database refuse them: that is said for what it is
    (see _refused) and nothing is written. The rows are written in a savepoint, so that what is gone can be read
    after the refusal (the caller rolls the whole transaction back); a refusal met while they are still being
    written (a building moved to another grid reads its appeals, which flushes) is caught as well."""
    from ..appeals.services import specialist_alerts

    created: list[Any] = []
    any_moved = False
    try:
        with specialist_alerts(session, actor) as alerts, session.begin_nested():
            for values, current in targets:
                if current is None:
                    current = make(values)
                    session.add(current)
                    created.append(current)
                    continue
                changes = services.changed_fields(current, values)
                if changes:
                    for k, v in values.items():
                        setattr(current, k, v)
                    report.updated += 1
                    along = moved(session, actor, current, changes)
                    any_moved = any_moved or bool(along)
                    audit(session, actor, f"{kind}.updated", current, via="import", changes=changes, **along)
                else:
                    report.unchanged += 1
            session.flush()
    except IntegrityError as exc:
        raise _refused(session, exc, kind, targets, numbers, names) from None
    except StaleDataError:  # a file (building) a row updates was deleted since it was matched
        raise Conflict(MEANWHILE) from None
    report.created = len(created)
    return created, alerts.audited(any_moved)


MEANWHILE = "导入时有其他人同时修改了相同的档案，本次没有导入任何数据，请稍后重新导入。"
# By kind of import: the column its rows are matched by (a clash on it: a colleague wrote the same file meanwhile),
# and the one pointing at another record, the record's model, what it is called and how it goes away.
_MATCHED_BY = {"enterprise": "credit_code", "building": "name"}
_POINTS_AT = {"enterprise": ("building_id", Building, "楼宇", "被合并或删除"),
              "building": ("grid_id", Grid, "网格", "被删除")}
MAX_ROWS_NAMED = 10


def _refused(session: Session, exc: IntegrityError, kind: str, targets: list[tuple[dict, Any]], numbers: list[int],
             names: Mapping[int, str]) -> AppError:
    """The error to show for an import's write the database refused (db.refusal says which constraint). Every
    refusal was once “其他人同时修改了相同的档案”, right only for a clash on the column the rows are matched by."""
    said = refusal(exc, session)
    table = f"{kind}s"
    columns = said.columns if said.table in ("", table) else ()
    ref_field, model, what, went = _POINTS_AT[kind]
    if said.kind == "unique" and columns == (_MATCHED_BY[kind],):
        return Conflict(MEANWHILE)
    if said.kind == "foreign_key" and said.table in ("", table) and columns in ((), (ref_field,)):
        # (Where SQLite's refusal was not traced to its column: the one the rows point with is meant.) The rows
        # pointing at one no longer there, read after the savepoint's rollback.
        pointed = {n: values[ref_field] for n, (values, _current) in zip(numbers, targets, strict=True)
                   if values.get(ref_field) is not None}
        with session.no_autoflush:
            there = set(session.scalars(select(model.id)))
        rows = [n for n, id_ in pointed.items() if id_ not in there]
        if not rows:
            return ValidationError(f"导入过程中有{what}{went}，本次没有导入任何数据，请刷新后重新导入。")
        gone = "".join(dict.fromkeys(f"「{names[pointed[n]]}」" for n in rows if pointed[n] in names))
        more = f"等 {len(rows)} " if len(rows) > MAX_ROWS_NAMED else " "
        return ValidationError(f"第 {'、'.join(map(str, rows[:MAX_ROWS_NAMED]))}{more}行的{what}{gone}在导入过程中"
                               f"{went}了，本次没有导入任何数据；请刷新页面核对后重新导入。")
    # None of these is expected (the row checks cover them): worth a look, with what the database named.
    log.warning("%s import not written: the database refused it (%s, constraint %s, columns %s)", kind,
                said.kind or "unknown", said.constraint or "-", ",".join(columns) or "-")
    labels = {c.key: c.label for c in KINDS[table][1]} | {"id": "档案编号", ref_field: what}
    named = "、".join(labels.get(c, c) for c in columns)
    if said.kind == "unique":
        return Conflict(f"导入的{named or '内容'}与已有的记录重复，本次没有导入任何数据；请刷新页面核对后重新导入，"
                        "如果一直这样，请联系管理员。")
    if said.kind == "foreign_key":
        return ValidationError("导入过程中有相关的档案被合并或删除，本次没有导入任何数据；请刷新页面核对后重新导入。")
    if said.kind == "not_null":
        return ValidationError(f"导入的{named or '必填的内容'}不能为空，本次没有导入任何数据；请填写后重新导入。")
    if said.kind == "check":
        return ValidationError("导入的内容不符合要求，本次没有导入任何数据；请核对后重新导入。")
    return Conflict(MEANWHILE)


# --- export -----------------------------------------------------------------------------------------

def export_rows(session: Session, kind: str, **filters: Any) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for an export; the same headers the import reads."""
    columns = KINDS[kind][1]
    headers = [c.label for c in columns]
    rows: list[list[str]] = []
    if kind == "enterprises":
        for e in session.scalars(services.enterprise_query(**filters)).unique():
            rows.append([e.name, e.credit_code, e.industry, e.building.name if e.building else "", e.floor_room,
                         e.tax_bracket, "|".join(e.tags or []), e.contact_name, e.contact_phone, e.note])
    else:
        for b, _n in services.list_buildings(session, **filters):
            rows.append([b.name, b.address, b.grid.name if b.grid else "", b.note])
    return headers, rows


def guard_formula(text: str) -> str:
    """Neutralise a cell that a spreadsheet would run as a formula."""
    return "'" + text if text.startswith(FORMULA_CHARS) else text


def to_csv(headers: list[str], rows: Iterable[list[str]]) -> bytes:
    """UTF-8 with BOM (so Excel shows the Chinese), CRLF, formula-guarded."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow([guard_formula(v or "") for v in row])
    return codecs.BOM_UTF8 + buf.getvalue().encode("utf-8")


def to_xlsx(headers: list[str], rows: Iterable[list[str]], *, title: str = "Sheet1") -> bytes:
    """An .xlsx file whose every cell is text: nothing is ever evaluated as a formula."""
    import openpyxl
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet(title)

    def text_cell(value: str) -> Any:
        if not value:
            return None
        if not value.startswith(FORMULA_CHARS):
            return value  # plain text: openpyxl writes it as a string (and fast)
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"  # never "f", whatever the text starts with
        cell.quotePrefix = True  # Excel keeps treating it as text when the cell is edited
        return cell

    header = []
    for h in headers:
        cell = WriteOnlyCell(sheet, value=h)
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    for row in rows:
        sheet.append([text_cell(v or "") for v in row])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def export_file(session: Session, kind: str, fmt: str, **filters: Any) -> tuple[bytes, str, str]:
    """(content, mimetype, file name) of an export in `fmt` ('csv' or 'xlsx')."""
    headers, rows = export_rows(session, kind, **filters)
    stamp = datetime.now(SHANGHAI).strftime("%Y%m%d-%H%M")
    label = KINDS[kind][0]
    if fmt == "xlsx":
        return (to_xlsx(headers, rows, title=label),
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", f"{label}-{stamp}.xlsx")
    return to_csv(headers, rows), "text/csv; charset=utf-8", f"{label}-{stamp}.csv"


def template_file(kind: str) -> tuple[bytes, str, str]:
    """An empty CSV with the headers, for staff to fill in."""
    headers = [c.label for c in KINDS[kind][1]]
    return to_csv(headers, []), "text/csv; charset=utf-8", f"{KINDS[kind][0]}导入模板.csv"
