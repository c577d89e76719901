"""Weekly QA (s18): the weekly reports the Monday job stores, shown as stored (console list, page, workbook; the
staff API), narrowed for department accounts as the live report is; and the reports area's bad input."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from tests.integration.test_appeals_qa_s8 import MONDAY, sh, w  # noqa: F401 (w is a fixture)
from tests.integration.test_reports_qa_s17 import AFTER, _week_of_mixed_appeals
from wxapp_backend.appeals import reports
from wxapp_backend.appeals.models import AppealReport
from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope


@pytest.fixture
def stored(w):
    """2025-W43 of mixed appeals stored as the Monday job stores it; then another appeal is backdated into the
    week and one is resolved, so a recompute differs from what was stored."""
    _week_of_mixed_appeals(w)
    with session_scope() as s:
        reports.prepare_weekly(s, "2025-W42", now=AFTER, via="tick")
        reports.prepare_weekly(s, "2025-W43", now=AFTER, via="tick")
    w.submit(now=MONDAY + timedelta(hours=4), content="存档之后补录进这一周的诉求")
    return w


def _xlsx_rows(data: bytes, sheet: str) -> list[tuple]:
    return list(load_workbook(io.BytesIO(data))[sheet].iter_rows(values_only=True))


def _text(resp) -> str:
    return re.sub(r"\s+", " ", resp.get_data(as_text=True))


# --- the console: list, one report as stored, its workbook ----------------------------------------------

def test_the_stored_reports_are_listed_newest_first_and_linked_from_the_report_page(stored, client, console_login):
    console_login(stored.make_staff(role="staff"))
    assert 'href="/console/appeals/reports"' in _text(client.get("/console/appeals/report?week=2025-W43"))
    page = client.get("/console/appeals/reports")
    body = _text(page)
    assert page.status_code == 200 and "历史周报存档" in body
    assert body.index('id="stored-2025-W43"') < body.index('id="stored-2025-W42"')
    row = body[body.index('id="stored-2025-W43"'):body.index('id="stored-2025-W42"')]
    assert "<td>7</td>" in row and "25%" in row  # 7 submitted when stored (8 now); 诉求解决率 1 / 4


def test_the_stored_reports_list_is_paginated(stored, client, console_login, db):
    data = db.scalar(select(AppealReport).where(AppealReport.week == "2025-W43")).data
    for wk in range(1, 24):  # 2024-W01 .. W23: 25 stored reports in all
        db.add(AppealReport(week=f"2024-W{wk:02d}", data={**data, "week": f"2024-W{wk:02d}"}))
    db.commit()
    console_login(stored.make_staff(role="staff"))
    first, second = _text(client.get("/console/appeals/reports")), _text(client.get("/console/appeals/reports?page=2"))
    assert first.count('id="stored-20') == 20 and "第 1 / 2 页，共 25 条" in first
    assert second.count('id="stored-20') == 5 and 'id="stored-2024-W01"' in second
    assert "已经没有内容了" in _text(client.get("/console/appeals/reports?page=9"))
    assert client.get("/console/appeals/reports?page=abc").status_code == 200  # a mistyped page: the first


def test_one_stored_report_shows_what_was_stored_and_says_when(stored, client, console_login):
    console_login(stored.make_staff(role="staff"))
    live = _text(client.get("/console/appeals/report?week=2025-W43"))
    page = client.get("/console/appeals/reports/2025-W43")
    body = _text(page)
    assert page.status_code == 200
    assert re.search(r"生成于 2025-10-27 \d\d:\d\d，为当时的数据", body), body
    assert "本周新增</span><span class=\"value\">7<" in body and "本周新增</span><span class=\"value\">8<" in live
    assert 'href="/console/appeals/reports/2025-W43.xlsx"' in body
    assert "各项比率怎么算" in body  # the 口径 stay with the stored figures


def test_the_stored_report_downloads_as_the_live_reports_workbook(stored, client, console_login, db):
    staff = stored.make_staff(role="staff")
    console_login(staff)
    resp = client.get("/console/appeals/reports/2025-W43.xlsx")
    assert resp.status_code == 200 and "spreadsheetml" in resp.mimetype
    overview = _xlsx_rows(resp.data, "概览")
    assert overview[0][:2] == ("周次", "2025-W43")
    assert overview[1][0] == "存档" and "为当时的数据" in overview[1][1]
    assert ("本周新增", 7) in [r[:2] for r in overview]
    assert len(_xlsx_rows(resp.data, "本周诉求")) == 1 + 7
    assert any(r[0] == "诉求解决率" and r[5] for r in overview)  # with its 口径
    audit = db.scalars(select(AuditLog).where(AuditLog.action == "appeal.weekly_exported")).all()
    assert [(a.actor_id, a.data.get("week"), a.data.get("stored")) for a in audit] == [(str(staff.id), "2025-W43", True)]


def test_a_department_sees_only_its_own_appeals_of_a_stored_report(stored, client, console_login):
    dept = stored.make_staff(role="dept", department="交警中队")
    console_login(dept)
    body = _text(client.get("/console/appeals/reports/2025-W43"))
    assert "本周新增</span><span class=\"value\">1<" in body  # its one appeal, of 7 in the centre
    assert "停车" in body or "交警中队：1" in body
    assert "税务所" not in body and 'id="report-definitions"' not in body  # the centre's rates are not its own
    assert "实时统计" in body
    listing = _text(client.get("/console/appeals/reports"))
    row = listing[listing.index('id="stored-2025-W43"'):]
    assert "<td>1</td>" in row and "25%" not in row
    x = client.get("/console/appeals/reports/2025-W43.xlsx")
    assert len(_xlsx_rows(x.data, "本周诉求")) == 2 and "响应率" not in [r[0] for r in _xlsx_rows(x.data, "概览")]
    assert ("范围", "交警中队承办的诉求") in [r[:2] for r in _xlsx_rows(x.data, "概览")]


def test_a_report_stored_by_an_earlier_version_without_some_parts_still_shows(stored, client, console_login, db):
    db.add(AppealReport(week="2024-W02", data={"week": "2024-W02", "start": "2024-01-08T00:00:00+08:00",
                                               "end": "2024-01-15T00:00:00+08:00", "metrics": None,
                                               "totals": {"submitted": 0, "open_now": 0, "overdue_now": 0,
                                                          "escalated": 0}}))
    db.commit()
    console_login(stored.make_staff(role="staff"))
    assert client.get("/console/appeals/reports/2024-W02").status_code == 200
    assert client.get("/console/appeals/reports/2024-W02.xlsx").status_code == 200
    assert client.get("/console/appeals/reports").status_code == 200


# --- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "status", "words"), [
    ("/console/appeals/reports/2025-W44", 404, "没有存档的周报"),
    ("/console/appeals/reports/2025-W44.xlsx", 404, "没有存档的周报"),
    ("/console/appeals/reports/2025-W99", 422, "没有这一周"),
    ("/console/appeals/reports/abc.xlsx", 422, "周次格式不对"),
    ("/console/appeals/reports/0001-W01", 422, "年份"),
    ("/console/appeals/reports/%20", 422, "周次"),
])
def test_an_unknown_or_mistyped_week_is_a_chinese_4xx(stored, client, console_login, path, status, words):
    console_login(stored.make_staff(role="dept", department="税务所"))
    resp = client.get(path)
    assert resp.status_code == status and words in resp.get_data(as_text=True)


# --- the staff API and its document ---------------------------------------------------------------------

def test_the_staff_api_lists_and_serves_stored_reports(stored, client, staff_headers):
    h = staff_headers(stored.make_staff(role="staff"))
    listing = client.get("/api/v1/staff/reports/weekly/stored?per_page=1", headers=h).get_json()
    assert listing["total"] == 2 and listing["pages"] == 2
    assert [(i["week"], i["submitted"], i["resolution"]) for i in listing["items"]] == [("2025-W43", 7, "25%")]
    one = client.get("/api/v1/staff/reports/weekly/stored/2025-W43", headers=h).get_json()
    assert one["totals"]["submitted"] == 7 and "为当时的数据" in one["generated_text"]
    x = client.get("/api/v1/staff/reports/weekly/stored/2025-W43?format=xlsx", headers=h)
    assert x.status_code == 200 and len(_xlsx_rows(x.data, "本周诉求")) == 8
    d = staff_headers(stored.make_staff(role="dept", department="交警中队"))
    mine = client.get("/api/v1/staff/reports/weekly/stored/2025-W43", headers=d).get_json()
    assert mine["metrics"] is None and mine["totals"]["submitted"] == 1
    assert {a["department"] for a in mine["appeals"]} == {"交警中队"}


@pytest.mark.parametrize(("query", "status"), [
    ("/stored/2025-W44", 404), ("/stored/2025-W99", 422), ("/stored/x", 422), ("/stored/2025-W43?format=pdf", 422),
    ("/stored?page=0", 422), ("/stored?per_page=abc", 422), ("/stored?page=999999999", 422),
])
def test_the_staff_api_answers_bad_input_with_a_chinese_4xx(stored, client, staff_headers, query, status):
    resp = client.get("/api/v1/staff/reports/weekly" + query, headers=staff_headers(stored.make_staff(role="staff")))
    assert resp.status_code == status and re.search(r"[\u4e00-\u9fff]", resp.get_json()["message"])


def test_the_stored_reports_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "/api/v1/staff/reports/weekly/stored" in paths
    op = paths["/api/v1/staff/reports/weekly/stored/{week}"]["get"]
    assert "存档" in op["summary"] and "404" in op["responses"]


# --- defects --------------------------------------------------------------------------------------------

def test_a_stored_reports_generated_at_is_the_moment_its_figures_were_taken(app_ctx, db):
    """The figures are counted as of the tick's `now`; generated_at was the wall clock of the write instead, so
    "生成于 …" named a moment the figures did not belong to (a tick run late with its slot's `now`, or the CLI)."""
    with session_scope() as s:
        row, _ = reports.prepare_weekly(s, "2025-W43", now=AFTER)
    stored_row = db.scalar(select(AppealReport).where(AppealReport.week == "2025-W43"))
    assert stored_row.generated_at == AFTER
    assert row.generated_at == AFTER


@pytest.mark.parametrize("to", ["20251026", "2025-W43-7", " 2025-10-26 "])
def test_metrics_to_as_any_date_alone_takes_in_that_day(w, client, staff_headers, to):
    """`to` as a date alone takes in that day (docs/appeals.md); only the 2025-10-31 spelling was recognised: the
    ISO forms the parser also takes (20251031, 2025-W44-5) ended the period at that day's first moment."""
    w.submit(now=sh(2025, 10, 26, 23, 30), content="周日深夜提交的诉求")
    resp = client.get(f"/api/v1/staff/appeals/metrics?from=2025-10-20&to={to}",
                      headers=staff_headers(w.make_staff(role="staff")))
    assert resp.status_code == 200
    assert resp.get_json()["end"] == "2025-10-27T00:00:00+08:00" and resp.get_json()["submitted"] == 1


def test_a_departments_live_weekly_workbook_and_page_say_whose_appeals_they_count(w, client, console_login):
    """A department's weekly report counts only what it handles; its workbook (sent upwards) and page did not say
    so, and read as the centre's figures."""
    _week_of_mixed_appeals(w)
    console_login(w.make_staff(role="dept", department="税务所"))
    x = client.get("/console/appeals/report.xlsx?week=2025-W43")
    assert ("范围", "税务所承办的诉求") in [r[:2] for r in _xlsx_rows(x.data, "概览")]
    assert "只含税务所承办的诉求" in _text(client.get("/console/appeals/report?week=2025-W43"))
