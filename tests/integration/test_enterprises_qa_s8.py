"""Session 8 QA of enterprise, building and grid management: imports, deletions and their audit rows."""

from __future__ import annotations

import re

import pytest

from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import importer

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
