"""Read and write knowledge-base files (.yaml/.yml, .jsonl, .csv, .xlsx) with row-precise Chinese errors."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from .schema import DATE_FIELDS, POLICY_FIELDS, REQUIRED_FIELDS, Entry, validate_entry
from .text import strip_invisible

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".yaml", ".yml", ".jsonl", ".csv", ".xlsx")
LIST_FIELDS: tuple[str, ...] = ("similar", "tags")
SCALAR_FIELDS: tuple[str, ...] = ("id", "question", "answer", "category")
FLAT_COLUMNS: tuple[str, ...] = (
    "id",
    "question",
    "similar",
    "answer",
    "category",
    "tags",
    *POLICY_FIELDS,
    "retired",
)
KNOWN_KEYS: frozenset[str] = frozenset((*FLAT_COLUMNS, "policy"))

# Staff often export spreadsheets with Chinese headers; accept the obvious ones.
HEADER_ALIASES: dict[str, str] = {
    "编号": "id",
    "问题": "question",
    "标准问题": "question",
    "相似问题": "similar",
    "相似问法": "similar",
    "答案": "answer",
    "分类": "category",
    "类别": "category",
    "标签": "tags",
    "发布部门": "issuer",
    "适用对象": "eligibility",
    "申请条件": "conditions",
    "申报时间": "window",
    "支持内容": "benefit",
    "办理渠道": "where_to_apply",
    "链接": "url",
    "原文链接": "url",  # the console form's label
    "生效日期": "valid_from",
    "截止日期": "valid_until",
    "已下线": "retired",
}
LIST_SEPARATOR = "|"
# The table files' list separator (the console's 相似问法 box takes it too: a phrasing holding it stopped every
# .csv/.xlsx export).
LIST_SEPARATORS = re.compile(r"[|｜]")
# In a table file's cell a bar that belongs to the text is written “\|” (a phrasing holding one, stored from a YAML
# list, stopped every .csv/.xlsx export): only a bar without a backslash before it separates.
_CELL_SEPARATORS = re.compile(r"(?<!\\)[|｜]")
_ESCAPED_SEPARATOR = re.compile(r"\\([|｜])")
# Tags are keywords: a file's “高新、专精特新” is two, as the console's form reads it (a form save of an entry with
# that one tag otherwise changed its tags behind the editor's back).
TAG_SEPARATORS = re.compile(r"[,，、|｜]")
# Control characters other than tab/newline (Word's soft line break is \x0b) never belong in an entry, and an
# .xlsx cannot hold them; the console drops them the same way.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAK_RE = re.compile(r"\r\n?")
# A .csv cell starting with one of these is run as a formula by Excel or WPS (CSV injection: a phrasing comes from
# a user's chat in one click); the .csv export puts ' before it and the .csv reader takes it off again.
FORMULA_CHARS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
_TRUE = {"1", "true", "yes", "y", "是", "t", "on"}
_FALSE = {"0", "false", "no", "n", "否", "f", "off", ""}


@dataclass(frozen=True, slots=True)
class LoadIssue:
    """One problem found while loading: where it is and what is wrong (Chinese)."""

    file: str
    row: int | None
    field: str | None
    message: str
    row_label: str = "行"

    def __str__(self) -> str:
        where = f"第 {self.row} {self.row_label}" if self.row is not None else ""
        field = f" “{self.field}”" if self.field else ""
        sep = " " if where or field else ""
        return f"{self.file}：{where}{field}{sep}{self.message}".replace("： ", "：")


class KBLoadError(Exception):
    """Raised once per load with every problem found, so staff can fix a file in one pass."""

    def __init__(self, issues: list[LoadIssue]):
        self.issues = list(issues)
        super().__init__(self.summary())

    @property
    def errors(self) -> list[str]:
        """The issues as human-readable Chinese lines."""
        return [str(i) for i in self.issues]

    def summary(self) -> str:
        """A Chinese headline plus one line per issue."""
        head = f"知识库文件导入失败，共 {len(self.issues)} 处错误："
        return "\n".join([head, *self.errors])


class _Collector:
    """Accumulates issues for one file so every check can keep going after a failure."""

    def __init__(self, path: Path, row_label: str = "行"):
        self.file = path.name
        self.row_label = row_label
        self.issues: list[LoadIssue] = []
        self.columns: frozenset[str] | None = None  # a table's known columns; None for YAML/JSONL

    def add(self, row: int | None, field: str | None, message: str, row_label: str | None = None) -> None:
        self.issues.append(LoadIssue(self.file, row, field, message, row_label or self.row_label))


# ---------------------------------------------------------------- value coercion


def _text(value: Any) -> str:
    """Cell/field value as stripped text; spreadsheet integers must not come out as '12.0'."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    # Line breaks as LF whatever the file held (an .xlsx gives CRLF back as LF): a re-import is not a change.
    # Invisible characters out, as the console's form takes them out: an id pasted with a zero-width space made a
    # second entry looking like the first, one the console could then not edit.
    return strip_invisible(_CONTROL_RE.sub("", _LINE_BREAK_RE.sub("\n", str(value)))).strip()


def _as_list(value: Any) -> tuple[list[str], bool]:
    """List field from a YAML/JSON list or a '|'-separated string; second item False if the type is wrong."""
    if value is None:
        return [], True
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, (str, int, float)) for v in value):
            return [], False
        items = [_text(v) for v in value]
    elif isinstance(value, (str, int, float)):
        items = split_separated(_text(value))
    else:
        return [], False
    return list(read_list("similar", items)), True


def read_list(name: str, items: Iterable[Any]) -> tuple[str, ...]:
    """A list field's items (`name`: similar or tags) as a file import reads them. One a line, as the console's box
    takes them: staff type a cell's phrasings on lines of their own (Alt+Enter), and the whole cell was one phrasing
    with line breaks in it (the console's next save split it unasked). Tags are split at their separators too, and
    kept once. The writers and the import's comparison with what is stored read a list so as well: a phrasing
    stored with line breaks (before imports split them) was written so by every export, split by the re-import,
    and the entry counted 更新 though nothing had changed."""
    out = [line.strip() for i in items for line in _text(i).split("\n") if line.strip()]
    if name == "tags":
        out = list(dict.fromkeys(t.strip() for i in out for t in TAG_SEPARATORS.split(i) if t.strip()))
    return tuple(out)


def split_separated(text: str) -> list[str]:
    """`text` split at its unescaped bars, each “\\|” given back as the bar it stands for (a table's cell, a line of
    the console's 相似问法 box)."""
    return [_ESCAPED_SEPARATOR.sub(r"\1", i) for i in _CELL_SEPARATORS.split(text)]


def escape_separators(text: str) -> str:
    """`text` with its bars written “\\|”, read back whole by split_separated."""
    return re.sub(r"([|｜])", r"\\\1", text)


def _join_cell(items: tuple[str, ...]) -> str:
    """A list as one table cell, read back by _as_list: a bar in an item is escaped, and a space keeps an item's
    final backslash from escaping the separator after it."""
    escaped = [escape_separators(i) for i in items]
    return LIST_SEPARATOR.join(i + " " if i.endswith("\\") and n < len(escaped) - 1 else i
                               for n, i in enumerate(escaped))


# Also 20251231, and a time of day after the date (Excel saves a cell formatted 日期时间 as “2025/12/31 0:00”).
_DATE_RE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T]+([01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?)?$"
                      r"|^(\d{4})(\d{2})(\d{2})$")


def _as_date(value: Any) -> tuple[date | None, bool]:
    """Parse YYYY-MM-DD (also / . and 年月日); second item False if the value is not a real date."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, True
    if isinstance(value, datetime):
        return value.date(), True
    if isinstance(value, date):
        return value, True
    m = _DATE_RE.match(_text(value))
    if not m:
        return None, False
    parts = m.groups()[:3] if m.group(1) else m.groups()[4:]
    try:
        return date(*map(int, parts)), True
    except ValueError:
        return None, False


# Excel's serial number of a date (46022 is 2025-12-31): a date cell pasted as values into a text cell, or a .csv
# saved from a column formatted 常规. Five digits are 1927 to 2173.
_EXCEL_SERIAL_RE = re.compile(r"^(\d{5})(?:\.\d+)?$")
_EXCEL_DAY_ZERO = date(1899, 12, 30)  # serial 1 is 1900-01-01 and Excel counts 1900-02-29: from March on, this


def _bad_date(text: str, table: bool) -> str:
    """Why `text` is no date, and the date it stands for when it looks like Excel's serial number of one."""
    m = _EXCEL_SERIAL_RE.match(text)
    if not m:
        return f"不是有效日期：{text}（应为 YYYY-MM-DD）"
    day = (_EXCEL_DAY_ZERO + timedelta(days=int(m.group(1)))).isoformat()
    how = f"请把单元格设成日期格式或写成 {day}" if table else f"请写成 {day}"
    return f"不是有效日期：{text}——看起来是 Excel 日期序号，对应 {day}；{how}"


def _as_bool(value: Any) -> tuple[bool, bool]:
    """Parse a yes/no cell; second item False if it is neither."""
    if isinstance(value, bool):
        return value, True
    t = _text(value).lower()
    if t in _TRUE:
        return True, True
    if t in _FALSE:
        return False, True
    return False, False


# How Excel shows (and saves to .csv) a long number: 123456789012 becomes 1.23457E+11, its digits lost.
_EXCEL_NUMBER_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?[eE][+-]?\d+$")
UNKNOWN_FIELD, UNKNOWN_POLICY_FIELD = "是未知字段", "是未知的政策字段"


def unknown_fields_only(exc: KBLoadError) -> list[str] | None:
    """The unknown field names, when a strict load failed for them alone (the file loads when they are ignored)."""
    if not exc.issues or any(i.message not in (UNKNOWN_FIELD, UNKNOWN_POLICY_FIELD) for i in exc.issues):
        return None
    return sorted({i.field or "" for i in exc.issues})


class _Uncalculated:
    """A spreadsheet cell holding a formula saved without its result: said by its cell already, so its field is
    not also called empty (or a bad date)."""

    def __str__(self) -> str:
        return ""


_UNCALCULATED = _Uncalculated()


def _build_entry(
    raw: dict[str, Any], row: int, col: _Collector, strict: bool, row_label: str | None = None
) -> Entry | None:
    """Turn one raw mapping (flat keys, optional nested `policy`) into an Entry, reporting every problem."""
    before = len(col.issues)

    def err(field: str | None, msg: str) -> None:
        col.add(row, field, msg, row_label)

    data: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "policy":
            continue
        data[key] = value
    policy = raw.get("policy")
    if policy is not None:
        if not isinstance(policy, dict):
            err("policy", "必须是键值对（issuer、eligibility、valid_until 等）")
        else:
            for key, value in policy.items():
                key = str(key).strip()
                if key not in POLICY_FIELDS:
                    if strict:
                        err(f"policy.{key}", UNKNOWN_POLICY_FIELD)
                    continue
                data[key] = value
    if strict and col.columns is None:  # a table's columns are checked once, at its header
        for key in data:
            if key not in KNOWN_KEYS:
                err(key, UNKNOWN_FIELD)

    pending = {k for k, v in data.items() if v is _UNCALCULATED}
    data = {k: None if k in pending else v for k, v in data.items()}
    kwargs: dict[str, Any] = {}
    for name in REQUIRED_FIELDS:
        value = data.get(name)
        if name in pending:
            continue
        if isinstance(value, (dict, list)):
            err(name, "必须是文本")
            continue
        text = _text(value)
        if not text:
            err(name, "不能为空")
        if name == "id" and _EXCEL_NUMBER_RE.match(text):
            err(name, f"是科学计数法 “{text}”，像是 Excel 打开并保存时把长数字编号改掉了（编号已经丢失）："
                      "请改回原来的编号（在 Excel 里先把这一列设为“文本”格式），或改用导出的 .xlsx 文件编辑")
        kwargs[name] = text
    kwargs["category"] = (
        _text(data.get("category")) if not isinstance(data.get("category"), (dict, list)) else ""
    )
    for name in LIST_FIELDS:
        items, ok = _as_list(data.get(name))
        if not ok:
            err(name, "必须是文本列表（YAML/JSON 用列表，CSV/Excel 用 “|” 分隔）")
        kwargs[name] = read_list(name, items)
    for name in POLICY_FIELDS:
        if name in DATE_FIELDS:
            d, ok = _as_date(data.get(name))
            if not ok:
                err(name, _bad_date(_text(data.get(name)), table=col.columns is not None))
            kwargs[name] = d
        else:
            value = data.get(name)
            if isinstance(value, (dict, list)):
                err(name, "必须是文本")
                value = None
            text = _text(value)
            kwargs[name] = text or None
    retired, ok = _as_bool(data.get("retired"))
    if not ok:
        err("retired", f"应为 是/否（true/false）：{_text(data.get('retired'))}")
    kwargs["retired"] = retired

    if len(col.issues) > before or pending:
        return None
    entry = Entry(**kwargs)
    for msg in validate_entry(entry):
        # validate_entry messages already quote the field name.
        err(None, msg)
    return entry if len(col.issues) == before else None


def _check_duplicates(items: list[tuple[int, Entry]], col: _Collector, row_label: str | None = None,
                      labels: dict[int, str] | None = None) -> None:
    """Report ids that occur more than once in one file, naming the first occurrence. `labels`: each row's own
    label (a YAML entry's “条（第 7 行）”), else `row_label`."""
    first: dict[str, int] = {}
    for row, e in items:
        if e.id in first:
            label = (labels or {}).get(first[e.id]) or row_label or col.row_label
            col.add(row, "id", f"编号 “{e.id}” 与第 {first[e.id]} {label}重复", (labels or {}).get(row) or row_label)
        else:
            first[e.id] = row


# ---------------------------------------------------------------- readers


# The parsers' messages are English; staff get the likely cause in Chinese (the line and column stay).
_YAML_CAUSES: tuple[tuple[str, str], ...] = (
    ("mapping values are not allowed", "这里不能有冒号“: ”；文字里有冒号时，请把整段文字用引号括起来"),
    ("'\\t'", "不能用 Tab 缩进，请改用空格"),
    ("end of stream", "文件在引号或括号结束之前就结束了，请检查引号、括号是否成对"),
    ("could not find expected ':'", "缺少冒号：每个字段写成 “字段名: 内容”"),
    ("expected <block end>", "缩进没有对齐，请检查这一行和上一行的缩进"),
    ("did not find expected key", "缩进没有对齐，或文字里的引号没有成对"),
    ("did not find expected '-'", "列表的每一项要以 “- ” 开头，并且对齐"),
    ("undefined alias", "以 “*” 开头的文字在 YAML 里有特殊含义，请把整段文字用引号括起来"),
    ("cannot start any token", "以 “@”、“`”、“%” 等符号开头的文字，请把整段文字用引号括起来"),
    ("escape", "双引号里的反斜杠 “\\” 写法不对，请写成 “\\\\” 或改用单引号"),
    ("for merging", "“<<:” 后面只能是用 “&名字” 标记过的一组字段（写成 <<: *名字），或这样几组的列表（<<: [*甲, *乙]）；"
                    "文字里有 “<<” 时，请把整段文字用引号括起来"),
)
_JSON_CAUSES: tuple[tuple[str, str], ...] = (
    ("Unterminated string", "文字的引号没有结束（缺少右边的 \"）"),
    ("Expecting property name", "字段名要用英文双引号括起来，最后一个字段后面不能有逗号"),
    ("Expecting ',' delimiter", "两个字段之间缺少逗号"),
    ("Expecting ':' delimiter", "字段名后面缺少冒号"),
    ("Expecting value", "这里缺少内容，或多了一个逗号"),
    ("Invalid control character", "文字里不能直接换行或有控制字符，换行请写成 \\n"),
    ("escape", "反斜杠 “\\” 的写法不对，请写成 “\\\\”"),
    ("Extra data", "一行只能有一个 JSON 对象，后面多出了内容"),
)


def _explain(message: str, causes: tuple[tuple[str, str], ...]) -> str:
    return next((said for key, said in causes if key in message), "格式不对，请检查这一行的引号、逗号、冒号和缩进")


class _StringDateLoader(yaml.SafeLoader):
    """SafeLoader that keeps unquoted values as written: timestamps as strings, so a bad date is our error, not a
    PyYAML crash; numbers and yes/no too (id 0123 was read as the octal 83, 1.10 as 1.1, an answer "no" as
    False). Only null (~, empty) and the merge key `<<` keep their meaning; retired and dates are parsed by the
    loader itself."""


# `<<: *common` merges the anchored fields into the mapping, those written beside it winning (YAML's merge key):
# without it “<<” was a field of its own, refused as unknown (or, ignored, the shared 发布部门 left out).
MERGE_TAG = "tag:yaml.org,2002:merge"
_KEEP_RESOLVED = {"tag:yaml.org,2002:null", MERGE_TAG}
_StringDateLoader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag in _KEEP_RESOLVED]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


_FastLoader: type | None = None
if yaml.__with_libyaml__:

    class _FastLoader(yaml.CSafeLoader):  # type: ignore[no-redef]
        """_StringDateLoader on libyaml's parser (ten times faster: a 10 MB file in seconds, not a minute)."""

    _FastLoader.yaml_implicit_resolvers = _StringDateLoader.yaml_implicit_resolvers


def _parse_all(text: str, loader_class: type) -> list[tuple[Any, Any]]:
    loader = loader_class(text)
    try:
        docs = []
        while loader.check_node():
            node = loader.get_node()
            for item in _entry_nodes(node):
                _keep_own_pairs(item)
            docs.append((node, loader.construct_document(node)))
        return docs
    finally:
        loader.dispose()


def _parse_yaml(text: str) -> list[tuple[Any, Any]]:
    """Each document's node (for the entries' line numbers) and its values, from one parse: it was parsed twice,
    in pure Python. A text libyaml refuses is parsed again by PyYAML, whose error the Chinese causes are made for."""
    if _FastLoader is not None:
        try:
            return _parse_all(text, _FastLoader)
        except yaml.YAMLError:
            pass
    return _parse_all(text, _StringDateLoader)


def _entry_nodes(node: Any) -> list[Any]:
    """The entries' nodes of a document: its list, or the list under its `entries` key."""
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "entries"), None)
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _keep_own_pairs(node: Any) -> None:
    """Note the keys an entry (and its `policy`) writes itself, before a merge key adds the anchored ones: a field
    written beside `<<` overrides it and is no field written twice."""
    if isinstance(node, yaml.MappingNode):
        node.own_pairs = list(node.value)
        for key, value in node.value:
            if getattr(key, "value", None) == "policy" and isinstance(value, yaml.MappingNode):
                value.own_pairs = list(value.value)


def _read_yaml(path: Path, col: _Collector, strict: bool) -> list[tuple[int, Entry]]:
    """Parse a YAML file: a list of entries, or a mapping with an `entries` list."""
    text = _read_text(path, col)
    if text is None:
        return []
    try:
        docs = [(node, data) for node, data in _parse_yaml(text) if data is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if mark is not None:
            col.add(mark.line + 1, None, f"YAML 格式错误（第 {mark.column + 1} 列）：{_explain(problem, _YAML_CAUSES)}")
        else:
            col.add(None, None, f"YAML 格式错误：{_explain(problem, _YAML_CAUSES)}")
        return []
    items: list[Any] = []
    item_nodes: list[Any] = []
    # Several documents (“---” between them: files put together, or a file in sections) are one list when each is
    # a list of entries; the line of one that is not is said (a header of 作者/版本 is no entry to guess at).
    for n, (node, data) in enumerate(docs, start=1):
        if isinstance(data, dict) and isinstance(data.get("entries"), list):
            listed = data["entries"]
        elif isinstance(data, list):
            listed = data
        elif len(docs) == 1:
            col.add(None, None, "YAML 顶层必须是条目列表（每条以 “- id: ...” 开始）")
            return []
        else:
            col.add(node.start_mark.line + 1, None,
                    f"这个文件有多个 YAML 文档（用 “---” 分开），从这一行开始的第 {n} 个文档不是条目列表：多个文档时，"
                    "每个文档都要是条目列表（每条以 “- id: ...” 开始）；说明文字请写成以 “#” 开头的注释")
            continue
        nodes = _entry_nodes(node)
        # The nodes stay aligned with the items (an entry's line), also where a document's count differs.
        items += listed
        item_nodes += nodes[:len(listed)] + [None] * (len(listed) - len(nodes))
    out: list[tuple[int, Entry]] = []
    labels: dict[int, str] = {}
    for i, item in enumerate(items, start=1):
        line = item_nodes[i - 1].start_mark.line + 1 if item_nodes[i - 1] is not None else None
        # YAML issues are numbered by entry, with the source line to jump to.
        label = labels[i] = f"条（第 {line} 行）" if line else "条"
        if not isinstance(item, dict):
            col.add(i, None, "必须是键值对（id、question、answer ...）", label)
            continue
        twice = _yaml_keys_twice(item_nodes[i - 1])
        for name in twice:
            col.add(i, name, TWICE, label)
        if twice:
            continue
        e = _build_entry({str(k): v for k, v in item.items()}, i, col, strict, label)
        if e is not None:
            out.append((i, e))
    _check_duplicates(out, col, "条", labels)
    return out


# YAML and JSON take the last of a key written twice: the first (often the real answer) was dropped silently.
TWICE = "在同一条里写了两次，请只保留一个"


def _yaml_keys_twice(node: Any) -> list[str]:
    """Keys written more than once in an entry's mapping node, or in its `policy` mapping."""
    if not isinstance(node, yaml.MappingNode):
        return []
    seen: set[str] = set()
    twice: list[str] = []
    for key, value in getattr(node, "own_pairs", node.value):
        if getattr(key, "tag", None) == MERGE_TAG:
            continue
        name = str(getattr(key, "value", ""))
        if name in seen:
            twice.append(name)
        seen.add(name)
        if name == "policy":
            twice += [f"policy.{k}" for k in _yaml_keys_twice(value)]
    return twice


def _read_jsonl(path: Path, col: _Collector, strict: bool) -> list[tuple[int, Entry]]:
    """Parse JSON Lines: one entry object per line; blank lines are skipped."""
    text = _read_text(path, col)
    if text is None:
        return []
    out: list[tuple[int, Entry]] = []
    # Split on "\n" only: str.splitlines also breaks at U+2028/U+2029 and \x85, which JSON keeps unescaped inside
    # a string (text pasted from a web page), so such an entry's line was cut in two.
    for lineno, line in enumerate(text.split("\n"), start=1):
        # Files put together (cat, copy /b) keep the byte-order mark each began with: it starts a later line.
        line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        twice: list[str] = []

        def pairs(items: list[tuple[str, Any]], twice: list[str] = twice) -> dict[str, Any]:
            keys = [k for k, _ in items]
            twice.extend(k for i, k in enumerate(keys) if k in keys[:i])
            return dict(items)

        try:
            item = json.loads(line, object_pairs_hook=pairs, parse_constant=_json_constant, parse_float=_json_float)
        except json.JSONDecodeError as exc:
            col.add(lineno, None, f"JSON 格式错误（第 {exc.colno} 列）：{_explain(exc.msg, _JSON_CAUSES)}")
            continue
        if not isinstance(item, dict):
            col.add(lineno, None, "每行必须是一个 JSON 对象 {...}")
            continue
        for name in twice:
            col.add(lineno, name, TWICE)
        infinite = _infinite_fields(item)
        for name in infinite:
            col.add(lineno, name, "是无穷大（Infinity），不是可以导入的内容，请填写文字或留空（null）")
        if twice or infinite:
            continue
        e = _build_entry({str(k): v for k, v in item.items()}, lineno, col, strict)
        if e is not None:
            out.append((lineno, e))
    _check_duplicates(out, col)
    return out


class _Infinite:
    """Infinity (or 1e999) in a JSON line: no content to import; named with its field."""


_INFINITE = _Infinite()


def _json_constant(name: str) -> Any:
    # NaN is no JSON, but pandas (a sheet read with it, written with json.dumps) writes it for every empty cell:
    # it was imported as the text “nan” (分类 nan, 【适用对象】nan in the bot's replies). It is the empty cell.
    return None if name == "NaN" else _INFINITE


def _json_float(text: str) -> Any:
    value = float(text)
    return _INFINITE if value in (float("inf"), float("-inf")) else value


def _infinite_fields(item: dict[str, Any]) -> list[str]:
    """The fields of a JSON line holding Infinity (in a list too; under `policy` as policy.NAME)."""
    out: list[str] = []
    for key, value in item.items():
        if isinstance(value, dict) and key == "policy":
            out += [f"policy.{k}" for k in _infinite_fields(value)]
        elif value is _INFINITE or (isinstance(value, list) and any(v is _INFINITE for v in value)):
            out.append(str(key))
    return out


# Control characters that do not occur in a text file (Word's \v and \f, and NEL, do); a "UTF-16" reading that
# yields them, or the non-characters U+FFFE/U+FFFF, was binary after all.
_NOT_TEXT_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")


def decode_utf16_without_bom(raw: bytes) -> str | None:
    """The text of UTF-16 without a BOM (some exporters and scripts write it so), or None when `raw` is not that.

    Such a file is mostly NUL bytes in every other position: every ASCII character (digits, commas, tabs, line
    breaks, the JSON keys) is a NUL and its byte, and UTF-8, GB18030 or any other text encoding never holds a NUL.
    The NULs' side says the byte order; a reading that is not strict UTF-16 or yields control characters is not
    text, and is left to the caller's usual refusal."""
    if len(raw) < 2 or len(raw) % 2 or b"\0" not in raw:
        return None
    units = len(raw) // 2
    even, odd = raw[0::2].count(0), raw[1::2].count(0)
    # Even Chinese-only text has a line break or a comma now and then (an ASCII character: a NUL); the few NULs on
    # the other side are characters such as 一 (U+4E00) or 最 (U+6700).
    for nuls, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if nuls >= max(2, units // 50) and other * 2 <= nuls:
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                return None
            return None if _NOT_TEXT_RE.search(text) else text
    return None


def _read_text(path: Path, col: _Collector) -> str | None:
    """Decode a text file: UTF-8 (with or without BOM) first, then GB18030 for Excel-on-Windows CSVs; a UTF-16 BOM
    (Excel's 另存为 “Unicode 文本”, tab-separated) is read as UTF-16, and so is UTF-16 without one."""
    raw = path.read_bytes()
    utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not utf16 and (text := decode_utf16_without_bom(raw)) is not None:
        return text
    for enc in ("utf-16",) if utf16 else ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    col.add(None, None, "文件编码无法识别，请另存为 UTF-8 编码后重试")
    return None


# A template's note after the name: “编号（必填）”, “标签(用|分隔)”, “答案【必填】”, and the required mark “*编号”.
_HEADER_NOTE_RE = re.compile(r"\s*[(\[【][^()\[\]【】]*[)\]】]\s*$|^\s*\*|\*\s*$")


def _normalise_header(h: Any) -> str:
    """Map a header cell to a field name (case-insensitive, full-width letters as half-width, Chinese aliases and
    a note in brackets accepted)."""
    t = _text(h)
    wide = unicodedata.normalize("NFKC", t)
    for name in (t, wide, _HEADER_NOTE_RE.sub("", wide).strip()):
        if name in HEADER_ALIASES or name.lower() in KNOWN_KEYS:
            return HEADER_ALIASES.get(name, name.lower())
    return t.lower()  # another column keeps its name as written, for the note on the columns left out


def _rows_to_entries(
    header: list[Any], rows: Iterable[tuple[int, list[Any]]], col: _Collector, strict: bool
) -> list[tuple[int, Entry]]:
    """Shared CSV/XLSX path: check the header, then build one entry per non-blank row."""
    names = [_normalise_header(h) for h in header]
    col.columns = frozenset(n for n in names if n in FLAT_COLUMNS)
    missing = [n for n in REQUIRED_FIELDS if n not in names]
    if missing:
        col.add(1, None, "缺少必需的列：" + "、".join(f"“{m}”" for m in missing) + "（表头在第 1 行）")
        return []
    seen: set[str] = set()
    for n in names:
        if n and n in seen:
            col.add(1, n, "列重复出现")
        seen.add(n)
    if strict:
        # Said once for the column: on every row, one real mistake in a long sheet with a 备注 column was buried.
        for n in dict.fromkeys(n for n in names if n and n not in KNOWN_KEYS):
            col.add(1, n, UNKNOWN_FIELD)
    out: list[tuple[int, Entry]] = []
    for rowno, cells in rows:
        if all(_text(c) == "" for c in cells):
            continue
        raw: dict[str, Any] = {}
        for name, cell in zip(names, cells, strict=False):
            if not name:
                continue
            raw[name] = cell
        if len(cells) > len(names) and any(_text(c) for c in cells[len(names) :]):
            col.add(rowno, None, "数据列数多于表头列数")
        e = _build_entry(raw, rowno, col, strict)
        if e is not None:
            out.append((rowno, e))
    _check_duplicates(out, col)
    return out


def _guard(cell: str) -> str:
    # A text that itself starts with ' before such a character gets one more, so the reader gives it back whole.
    return "'" + cell if cell.lstrip("'").startswith(FORMULA_CHARS) else cell


def _unguard(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_CHARS) else cell


def _read_csv(path: Path, col: _Collector, strict: bool) -> list[tuple[int, Entry]]:
    """Parse a CSV with a header row; the header is row 1, as a spreadsheet shows it."""
    text = _read_text(path, col)
    if text is None:
        return []
    # The delimiter is the one the header row uses most; quoting is the standard '"'. csv.Sniffer also guessed the
    # quote character from the data, and took ' when answers held text in single quotes: the file came back
    # changed (quotes dropped, an answer split into the next columns) without a word.
    header = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=header.count) if any(d in header for d in ",\t;") else ","
    # strict: a quote never closed took every row after it into one answer, and the import "succeeded".
    reader = csv.reader(io.StringIO(text, newline=""), csv.excel, delimiter=delimiter, strict=True)
    try:
        rows = [[_unguard(c) for c in r] for r in reader]
    except csv.Error as exc:
        # The csv module's messages are English; staff get the likely cause in Chinese instead.
        if "field limit" in str(exc):
            cause = f"有一格内容超过 {csv.field_size_limit()} 个字，太长了"
        elif "end of data" in str(exc):
            cause = "有一个引号到文件末尾都没有结束，请检查引号是否成对"
        else:
            cause = "引号后面紧跟了其他文字，请检查引号是否成对"
        col.add(reader.line_num, None, f"CSV 格式错误：{cause}（问题在这一行或它前面几行）")
        return []
    if not rows:
        col.add(1, None, "文件为空，缺少表头")
        return []
    return _rows_to_entries(rows[0], ((i, r) for i, r in enumerate(rows[1:], start=2)), col, strict)


def _read_xlsx(path: Path, col: _Collector, strict: bool) -> list[tuple[int, Entry]]:
    """Parse the first worksheet of an .xlsx; merged cells are refused, because guessing their value is unsafe."""
    import openpyxl  # only needed for spreadsheets
    from openpyxl.utils.cell import coordinate_to_tuple
    from openpyxl.utils.datetime import from_excel

    try:
        # Not read_only: merged-cell ranges are only available on normal worksheets.
        wb = openpyxl.load_workbook(path, data_only=True)
    except Exception:  # openpyxl raises many types (in English) for corrupt files; all mean the same to staff
        col.add(None, None, "无法读取这个 Excel 文件（可能是改了扩展名的 .xls 或 .csv，或文件已损坏），"
                            "请用 Excel 或 WPS 打开后另存为 .xlsx 再导入")
        return []
    # The first sheet staff see with something on it: a hidden one (a 填写说明, an old copy kept out of sight) was
    # read instead of the one on screen, and so was WPS's empty Sheet1 in front of the data sheet.
    visible = [w for w in wb.worksheets if w.sheet_state == "visible"] or wb.worksheets[:1]
    ws = next((w for w in visible if any(_text(c) for r in w.iter_rows(values_only=True) for c in r)), visible[0])
    # data_only reads a formula saved without its result as empty: the field would be imported as nothing, without a
    # word. Each is named, with its row and field, and the sheet is checked on (the file is refused all the same):
    # stopping here left the merged cells and empty answers further down for the next attempt.
    uncalculated = _uncalculated_formulas(path, wb.worksheets.index(ws))
    for other in visible:
        if other is ws:
            continue
        # Only the first sheet is read: entries on another one (政策 on one sheet, 常见问题 on the next) were left
        # out while the import said 导入完成. A sheet of notes, without the entry columns, is no such sheet.
        rows = other.iter_rows(values_only=True)
        header = {_normalise_header(h) for h in next(rows, ())}
        if header & set(REQUIRED_FIELDS) and any(any(_text(c) for c in r) for r in rows):
            col.add(None, None, f"工作表 “{other.title}” 也有知识条目，但只会导入第一个工作表 “{ws.title}”："
                                "请把条目合并到第一个工作表，或把各工作表分别另存为文件后逐个导入")
    merged = list(ws.merged_cells.ranges)
    bad_rows: set[int] = set()
    for rng in merged:
        col.add(
            rng.min_row,
            None,
            f"工作表 “{ws.title}” 中 {rng.coord} 是合并单元格，请取消合并并在每一行填写完整内容后重新导入",
        )
        bad_rows.update(range(rng.min_row, rng.max_row + 1))
    all_rows = [list(r) for r in ws.iter_rows(values_only=True)]
    names = [_normalise_header(h) for h in all_rows[0]] if all_rows else []
    for coordinate in uncalculated:
        column, row = coordinate_to_tuple(coordinate)[::-1]
        name = names[column - 1] if row > 1 and column <= len(names) else None
        col.add(row, name or None, f"单元格 {coordinate} 是公式，但文件里没有保存计算结果，"
                                   "请用 Excel 或 WPS 打开并保存一次后再导入（或把公式改成数值）")
        if row > 1 and row <= len(all_rows) and column <= len(all_rows[row - 1]):
            all_rows[row - 1][column - 1] = _UNCALCULATED  # said once: not also “不能为空”
    for cells in ws.iter_rows():
        for cell in cells:
            # A formula that failed (#N/A from a lookup, #REF!) is saved as its error text: not an answer to give.
            if cell.data_type == "e" and cell.value:
                name = names[cell.column - 1] if cell.row > 1 and cell.column <= len(names) else None
                col.add(cell.row, name or None, f"单元格 {cell.coordinate} 是公式算出的错误值 {cell.value}，"
                                                "请在 Excel 或 WPS 中修正公式（或直接填写内容）后重新导入")
            elif cell.data_type == "n" and "%" in (cell.number_format or ""):
                # A cell formatted 百分比 holds 0.3 and shows 30%: the staff member typed 30%, so that is the text.
                shown = _percent_text(cell.value, cell.number_format)
                if shown is not None:
                    all_rows[cell.row - 1][cell.column - 1] = shown
    epoch = wb.epoch
    wb.close()
    if not all_rows:
        col.add(1, None, f"工作表 “{ws.title}” 为空，缺少表头")
        return []
    if 1 in bad_rows:
        return []
    # A date typed into a cell formatted 常规 (or pasted as values) is saved as its serial number (2025-12-31 is
    # 46022): the staff member sees a date, so it is read as one (8-digit numbers are 20251231, see _as_date).
    for cells in all_rows[1:]:
        for i, cell in enumerate(cells):
            if (i < len(names) and names[i] in DATE_FIELDS and isinstance(cell, (int, float))
                    and not isinstance(cell, bool) and 1 <= cell < _EXCEL_SERIAL_END):
                cells[i] = from_excel(cell, epoch)
    body = ((i, r) for i, r in enumerate(all_rows[1:], start=2) if i not in bad_rows)
    return _rows_to_entries(all_rows[0], body, col, strict)


_PERCENT_DECIMALS_RE = re.compile(r"\.([0#]+)%")


def _percent_text(value: Any, number_format: str) -> str | None:
    """A percentage-formatted number as the sheet shows it (0.3 with 0% is "30%", 0.125 with 0.0% "12.5%")."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    m = _PERCENT_DECIMALS_RE.search(number_format.split(";")[0])
    return f"{value * 100:.{len(m.group(1)) if m else 0}f}%"


_EXCEL_SERIAL_END = 2958466  # 9999-12-31 is serial 2958465

# A cell with a formula and no (or an empty) cached value, unless typed as a text result (t="str"), which is how
# Excel saves a formula whose result is the empty text. Files written by programs keep no result.
_UNCALCULATED_RE = re.compile(
    rb"<(?:\w+:)?c\s+r=\"([A-Z]+\d+)\"(?![^>]*\bt=\"str\")[^>]*>\s*"
    rb"<(?:\w+:)?f\b[^>]*(?:/>|>[^<]*</(?:\w+:)?f>)\s*(?:<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*"
    rb"</(?:\w+:)?c>")


UNCALCULATED_SHOWN = 50  # a generated sheet of formulas is said by its first cells, not a line for each of 10,000


def _uncalculated_formulas(path: Path, index: int) -> list[str]:
    """The cells of worksheet `index` holding a formula saved without its result (openpyxl cannot tell), in order;
    the first UNCALCULATED_SHOWN of them."""
    import zipfile

    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True)  # only to find the sheet's part in the archive
    try:
        part = getattr(wb.worksheets[index], "_worksheet_path", "")
    finally:
        wb.close()
    found: dict[str, None] = {}
    if not part:
        return []
    with zipfile.ZipFile(path) as archive, archive.open(part.lstrip("/")) as fh:
        tail = b""
        while len(found) < UNCALCULATED_SHOWN and (chunk := fh.read(1 << 20)):
            for m in _UNCALCULATED_RE.finditer(tail + chunk):  # the tail's cells, seen again, are kept once
                found.setdefault(m.group(1).decode("ascii"), None)
            tail = chunk[-20000:]
    return list(found)[:UNCALCULATED_SHOWN]


_READERS = {
    ".yaml": _read_yaml,
    ".yml": _read_yaml,
    ".jsonl": _read_jsonl,
    ".csv": _read_csv,
    ".xlsx": _read_xlsx,
}


def load_file(path: str | Path, *, strict: bool = False) -> list[Entry]:
    """Load entries from one file; raise KBLoadError listing every problem. `strict` also rejects unknown fields."""
    return load_table(path, strict=strict)[0]


def load_table(path: str | Path, *, strict: bool = False) -> tuple[list[Entry], frozenset[str] | None]:
    """load_file, and the fields a .csv/.xlsx has columns for (None for .yaml/.jsonl): a column the file does not
    have says nothing about that field, which an import should then leave as it is."""
    p = Path(path)
    ext = p.suffix.lower()
    col = _Collector(p)
    reader = _READERS.get(ext)
    if reader is None:
        col.add(
            None, None, f"不支持的文件类型 “{ext or '无扩展名'}”，请使用 " + "、".join(SUPPORTED_EXTENSIONS)
        )
        raise KBLoadError(col.issues)
    if not p.is_file():
        col.add(None, None, "文件不存在")
        raise KBLoadError(col.issues)
    items = reader(p, col, strict)
    if col.issues:
        raise KBLoadError(col.issues)
    return [e for _, e in items], col.columns


def load_files(paths: Iterable[str | Path], *, strict: bool = False) -> list[Entry]:
    """Load several files, collecting every file's problems and ids duplicated across files."""
    issues: list[LoadIssue] = []
    entries: list[Entry] = []
    origin: dict[str, str] = {}
    for path in paths:
        p = Path(path)
        try:
            loaded = load_file(p, strict=strict)
        except KBLoadError as exc:
            issues.extend(exc.issues)
            continue
        for e in loaded:
            if e.id in origin:
                issues.append(LoadIssue(p.name, None, "id", f"编号 “{e.id}” 已在 {origin[e.id]} 中出现"))
            else:
                origin[e.id] = p.name
                entries.append(e)
    if issues:
        raise KBLoadError(issues)
    return entries


def load_dir(directory: str | Path, *, strict: bool = False) -> list[Entry]:
    """Load every supported file in a directory (sorted by name, not recursive)."""
    d = Path(directory)
    paths = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
    return load_files(paths, strict=strict)


# ---------------------------------------------------------------- writers


def _nested(e: Entry) -> dict[str, Any]:
    """YAML/JSONL shape: core fields flat, policy fields under `policy`, empty values left out."""
    out: dict[str, Any] = {"id": e.id, "question": e.question}
    similar, tags = read_list("similar", e.similar), read_list("tags", e.tags)  # as the import will read them
    if similar:
        out["similar"] = list(similar)
    out["answer"] = e.answer
    if e.category:
        out["category"] = e.category
    if tags:
        out["tags"] = list(tags)
    policy: dict[str, Any] = {}
    for name in POLICY_FIELDS:
        v = getattr(e, name)
        if v not in (None, ""):
            policy[name] = v.isoformat() if isinstance(v, date) else v
    if policy:
        out["policy"] = policy
    if e.retired:
        out["retired"] = True
    return out


def _flat_row(e: Entry) -> list[str]:
    """CSV/XLSX shape: one column per field, lists joined with '|' (a bar in an item written “\\|”)."""
    row: list[str] = []
    for name in FLAT_COLUMNS:
        v = getattr(e, name)
        if isinstance(v, tuple):
            row.append(_join_cell(read_list(name, v)))  # as the import will read them
        elif isinstance(v, bool):
            row.append("true" if v else "")
        elif isinstance(v, date):
            row.append(v.isoformat())
        else:
            row.append(v or "")
    return row


class _LiteralDumper(yaml.SafeDumper):
    """Dumper that writes multi-line answers as readable `|` blocks."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # NEL (U+0085) is written raw in a plain, quoted or block scalar and read back as a line break or a space:
    # double quotes escape it (\N).
    style = '"' if "\x85" in data else "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def dump_file(entries: Iterable[Entry], path: str | Path) -> None:
    """Write entries to .yaml/.yml, .jsonl, .csv (UTF-8 with BOM, for Excel) or .xlsx; load_file reads it back.

    The file is written beside the target under a temporary name and moved over it at the end: an export that
    stops half-way (a full disk, an error, Ctrl-C) leaves the previous file as it was, not a torn backup."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"不支持的导出文件类型 “{ext or '无扩展名'}”，请使用 " + "、".join(SUPPORTED_EXTENSIONS)
        )
    items = list(entries)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        _write_entries(items, tmp, ext)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def _write_entries(items: list[Entry], p: Path, ext: str) -> None:
    if ext in (".yaml", ".yml"):
        text = yaml.dump(
            [_nested(e) for e in items],
            Dumper=_LiteralDumper,
            allow_unicode=True,
            sort_keys=False,
            width=1000,
        )
        p.write_text(text, encoding="utf-8")
    elif ext == ".jsonl":
        with p.open("w", encoding="utf-8") as f:
            for e in items:
                f.write(json.dumps(_nested(e), ensure_ascii=False) + "\n")
    elif ext == ".csv":
        rows = [[_guard(c) for c in _flat_row(e)] for e in items]
        with p.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(FLAT_COLUMNS)
            w.writerows(rows)
    else:  # .xlsx
        import openpyxl

        rows = [_flat_row(e) for e in items]
        wb = openpyxl.Workbook()
        ws = wb.active
        ws.title = "knowledge"
        ws.append(list(FLAT_COLUMNS))
        for r in rows:
            ws.append(r)
        # One pass over the rows written (ws[ws.max_row] after each append scanned every cell: 20,000 entries took
        # over twenty minutes).
        for cells in ws.iter_rows(min_row=2, max_row=len(rows) + 1, max_col=len(FLAT_COLUMNS)):
            for cell in cells:
                if cell.data_type == "f":  # openpyxl takes text starting with "=" for a formula
                    cell.data_type = "s"
        wb.save(p)


def iter_labelled(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """Yield (query, expected ids) from a labelled JSONL file; `ids: []` marks an out-of-scope query."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                yield str(obj["q"]), [str(i) for i in obj.get("ids", [])]


__all__ = [
    "KBLoadError",
    "LoadIssue",
    "SUPPORTED_EXTENSIONS",
    "dump_file",
    "iter_labelled",
    "load_dir",
    "load_file",
    "load_files",
    "load_table",
    "read_list",
]
