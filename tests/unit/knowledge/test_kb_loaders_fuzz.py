"""Property-based imports: any file content either loads or is refused with KBLoadError (file, row, field and
a Chinese message for each problem); never another exception, and what loads passes Entry's own checks."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from knowledge.loaders import KBLoadError, load_file

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
_scalar = st.one_of(_text, st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
                    st.booleans(), st.none(), st.sampled_from(["2026-01-01", "0001-01-01", "9999-99-99", "过期", ""]))
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                      max_leaves=6)
FIELDS = ["id", "question", "similar", "answer", "category", "tags", "issuer", "eligibility", "conditions",
          "window", "benefit", "where_to_apply", "link", "valid_from", "valid_until", "retired"]
_record = st.dictionaries(st.one_of(st.sampled_from(FIELDS), _text), _value, max_size=10)
_settings = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None, database=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))


def _load(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        entries = load_file(path)
    except KBLoadError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.file and issue.message
        return
    for e in entries:
        assert e.id and e.question and e.answer


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kb-fuzz")


@_settings
@given(records=st.lists(_record, max_size=4), raw=st.binary(max_size=300))
def test_any_yaml_or_jsonl_loads_or_is_refused(tmp_dir: Path, records, raw) -> None:
    import yaml

    _load(tmp_dir, "a.yaml", yaml.safe_dump(records, allow_unicode=True).encode("utf-8"))
    _load(tmp_dir, "b.yml", raw)
    lines = "\n".join(json.dumps(r, ensure_ascii=False, default=str) for r in records)
    _load(tmp_dir, "c.jsonl", lines.encode("utf-8") + b"\n" + raw)


@_settings
@given(header=st.lists(st.one_of(st.sampled_from(FIELDS), _text), max_size=8),
       rows=st.lists(st.lists(_scalar, max_size=8), max_size=4), raw=st.binary(max_size=300))
def test_any_csv_or_xlsx_loads_or_is_refused(tmp_dir: Path, header, rows, raw) -> None:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    _load(tmp_dir, "d.csv", buf.getvalue().encode("utf-8"))
    _load(tmp_dir, "e.csv", raw)
    book = openpyxl.Workbook()
    sheet = book.active
    def cell(v):  # what a spreadsheet can hold (XML forbids most control characters)
        if v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 2**53:
            return v
        return ILLEGAL_CHARACTERS_RE.sub("", str(v))

    sheet.append([cell(h) for h in header])
    for row in rows:
        sheet.append([cell(v) for v in row])
    if rows and header:
        sheet.merge_cells(start_row=1, start_column=1, end_row=2, end_column=1)
    out = io.BytesIO()
    book.save(out)
    _load(tmp_dir, "f.xlsx", out.getvalue())
    _load(tmp_dir, "g.xlsx", raw)
