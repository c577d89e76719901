"""Knowledge-base console and unanswered queue (session 11, second pass): conflicts, paging, the queue after a
save, percentages in spreadsheets."""

from __future__ import annotations

import openpyxl
import pytest

from knowledge.loaders import load_file
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import KBEntry, UnansweredQuestion


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


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


def test_the_unanswered_queue_pages_through_every_question_with_suggestions(client, kb, make_staff, console_login,
                                                                          db):
    """The queue showed the 200 most asked questions and no more (nothing said there were others), and suggested
    entries for the first 50 only. It now pages (with the counts of each tab and of pages), and every question on
    the page shown has its suggestions."""
    console_login(make_staff(role="staff"))
    db.add_all([UnansweredQuestion(norm=f"噪声{i}", text=f"噪声问题{i}号", count=5) for i in range(259)])
    entry = db.get(KBEntry, "building-venue")
    db.add(UnansweredQuestion(norm="real", text=entry.question, count=1))
    db.add(UnansweredQuestion(norm="done", text="已处理的问题", count=1, status="resolved"))
    db.commit()
    page = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert "共 260 个问题" in page and "第 1 / 6 页" in page and "已处理（1）" in page
    assert "?status=open&amp;page=2" in page or "page=2" in page
    last = client.get("/console/kb/unanswered", query_string={"page": 6}).get_data(as_text=True)
    assert entry.question in last
    assert f'name="entry_id" value="{entry.id}"' in last  # its suggestion, on page 6
    assert last.count("<tr>") - 1 == 10
    # A page past the end (questions handled meanwhile) shows the last page, not an empty one.
    assert entry.question in client.get("/console/kb/unanswered", query_string={"page": 99}).get_data(as_text=True)
