"""Knowledge-base console and unanswered queue (session 11, second pass): conflicts, paging, the queue after a
save, percentages in spreadsheets."""

from __future__ import annotations

import openpyxl

from knowledge.loaders import load_file


def test_a_percentage_cell_in_an_xlsx_is_imported_as_the_sheet_shows_it(tmp_path):
    """A 支持内容 cell typed as 30% (Excel stores 0.3 and formats it 百分比) was imported as “0.3”: the bot would
    answer 补贴比例 0.3. A percentage-formatted number is read as the text the sheet shows."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.append(["id", "question", "answer", "benefit", "window"])
    ws.append(["p1", "补贴比例是多少", "按投入给予补贴。", 0.3, 0.125])
    ws.append(["p2", "另一个问题", "另一个答案。", 0.5, 7])
    ws["D2"].number_format = "0%"
    ws["E2"].number_format = "0.0%"
    ws["D3"].number_format = "0.00%"
    path = tmp_path / "kb.xlsx"
    book.save(path)
    entries = {e.id: e for e in load_file(path)}
    assert entries["p1"].benefit == "30%"
    assert entries["p1"].window == "12.5%"
    assert entries["p2"].benefit == "50.00%"
    assert entries["p2"].window == "7"  # a plain number stays as it was
