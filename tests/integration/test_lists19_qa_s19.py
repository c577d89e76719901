"""Lists QA (session 19, at scale): the stored weekly reports list reads each report's headline figures, not its
every row; the buildings list pages as the other lists do; the weekly report's 超期在办 shows the most overdue
first and says how many more there are. Bounds on statements and rows, not timings."""

from __future__ import annotations

import io
import re
from datetime import timedelta

from openpyxl import load_workbook
from sqlalchemy import insert, update

from tests.integration.test_appeals_qa_s8 import sh, w  # noqa: F401 (w is a fixture)
from tests.integration.test_reports_qa_s17 import AFTER
from tests.integration.test_scale19_qa_s19 import statements
from tests.integration.test_scale_qa_s9 import loaded
from tests.integration.test_weekly_qa_s18 import stored  # noqa: F401 (a fixture)
from wxapp_backend.appeals import metrics, reports
from wxapp_backend.appeals.models import Appeal, AppealReport
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises.models import Building


def _text(resp) -> str:
    return re.sub(r"\s+", " ", resp.get_data(as_text=True))


# --- 1. the stored weekly reports list ------------------------------------------------------------------

def _list_matches_each_report(client, headers) -> list[dict]:
    """The list's figures for each week, checked against that week's stored report as the same account sees it."""
    items = client.get("/api/v1/staff/reports/weekly/stored", headers=headers).get_json()["items"]
    for item in items:
        full = client.get(f"/api/v1/staff/reports/weekly/stored/{item['week']}", headers=headers).get_json()
        res = (full["metrics"] or {}).get("resolution")
        assert {k: item[k] for k in ("submitted", "escalated", "open_now", "overdue_now")} == full["totals"], item
        assert item["resolution"] == (metrics.percent_text(res["numerator"], res["denominator"]) if res else None)
    return items


def test_stored_reports_list_reads_no_report_data(stored, app, client, console_login, staff_headers, db):  # noqa: F811
    # Each stored report holds every appeal of its week and every overdue one (about 1.25 MB a week on a busy
    # street): the list of 20 loaded all of it to show seven numbers a row (~300 ms).
    staff, dept = stored.make_staff(role="staff"), stored.make_staff(role="dept", department="交警中队")
    for account in (staff, dept):
        headers = staff_headers(account)
        with statements(app) as api:
            items = client.get("/api/v1/staff/reports/weekly/stored", headers=headers).get_json()["items"]
        assert [i["week"] for i in items] == ["2025-W43", "2025-W42"]
        console_login(account)
        with statements(app) as page:
            assert client.get("/console/appeals/reports").status_code == 200
        for seen in (api, page):
            read = [s for s in seen if "appeal_reports" in s]
            assert read and not [s for s in read if "appeal_reports.data" in s], read
    # A department's row is its own count, as its stored report counts it (1 appeal of the centre's 7).
    by_dept = _list_matches_each_report(client, staff_headers(dept))
    assert by_dept[0]["submitted"] == 1 and by_dept[0]["open_now"] is None and by_dept[0]["resolution"] is None
    centre = _list_matches_each_report(client, staff_headers(staff))
    assert centre[0]["submitted"] == 7 and centre[0]["resolution"] == "25%"


def test_a_report_stored_before_its_summary_is_listed_from_its_data(stored, client, staff_headers, db):  # noqa: F811
    # Reports stored before the summary column (or written some other way) still list with the right figures.
    db.execute(update(AppealReport).values(summary=None))
    db.commit()
    for account in (stored.make_staff(role="staff"), stored.make_staff(role="dept", department="税务所")):
        items = _list_matches_each_report(client, staff_headers(account))
        assert [i["week"] for i in items] == ["2025-W43", "2025-W42"]


def test_summary_counts_a_department_as_its_stored_view_does():
    data = {"week": "2025-W43", "metrics": {"resolution": {"numerator": 9, "denominator": 10, "rate": 0.9}},
            "totals": {"submitted": 3, "open_now": 5, "overdue_now": 2, "escalated": 1},
            "appeals": [{"department": "税务所", "escalated": True}, {"department": "税务所", "escalated": False},
                        {"department": "", "escalated": True}],
            "overdue": [{"department": "税务所"}, {"department": "交警中队"}]}
    s = reports.summary(data)
    assert s["totals"] == data["totals"] and s["resolution"] == [9, 10]
    assert s["departments"] == {"税务所": {"submitted": 2, "escalated": 1, "overdue_now": 1},
                                "": {"submitted": 1, "escalated": 1, "overdue_now": 0},
                                "交警中队": {"submitted": 0, "escalated": 0, "overdue_now": 1}}


def test_migration_0010_fills_in_the_summary_of_the_reports_already_stored(app_ctx, tmp_path):
    import json

    from alembic import command
    from sqlalchemy import create_engine, text

    from wxapp_backend.cli import alembic_config

    data = {"week": "2025-W43", "metrics": {"resolution": {"numerator": 1, "denominator": 4, "rate": 0.25}},
            "totals": {"submitted": 2, "open_now": 3, "overdue_now": 1, "escalated": 1},
            "appeals": [{"department": "税务所", "escalated": True}, {"department": "", "escalated": False}],
            "overdue": [{"department": "税务所"}]}
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0009")
            for week, stored in (("2025-W43", data), ("2025-W01", {})):  # {}: a report of an early version
                conn.execute(text("INSERT INTO appeal_reports (week, data, generated_at) VALUES (:w, :d, :g)"),
                             {"w": week, "d": json.dumps(stored), "g": "2025-10-27 01:00:00"})
            command.upgrade(alembic_config(conn), "head")
            got = {w: json.loads(v) for w, v in conn.execute(text("SELECT week, summary FROM appeal_reports"))}
    finally:
        engine.dispose()
    assert got == {"2025-W43": reports.summary(data), "2025-W01": reports.summary({})}
    assert got["2025-W43"]["departments"]["税务所"] == {"submitted": 1, "escalated": 1, "overdue_now": 1}


# --- 2. the buildings list ------------------------------------------------------------------------------

def _buildings(db, n: int) -> None:
    db.execute(insert(Building), [{"name": f"测试楼{i:03d}", "address": "新华路"} for i in range(n)])
    db.commit()


def test_buildings_page_is_paged_as_the_enterprises_page(client, console_login, make_staff, db):
    # 500 buildings: the page listed every one and ignored ?page.
    _buildings(db, 45)
    console_login(make_staff(role="staff"))
    first, third = _text(client.get("/console/buildings")), _text(client.get("/console/buildings?page=3"))
    assert len(re.findall(r"测试楼\d{3}", first)) == 20 and "第 1 / 3 页，共 45 条" in first
    assert "测试楼000" in first and "测试楼020" not in first
    assert re.findall(r"测试楼\d{3}", third) == [f"测试楼{i:03d}" for i in range(40, 45)]
    assert 'href="/console/buildings?page=2' in first
    assert "已经没有内容了" in _text(client.get("/console/buildings?page=9"))
    filtered = _text(client.get("/console/buildings?q=测试楼04&page=1"))
    assert len(re.findall(r"测试楼\d{3}", filtered)) == 5 and "共 5 条" in filtered
    assert client.get("/console/buildings?page=abc").status_code == 422  # said, and the first page shown


def test_staff_buildings_api_is_paged_in_the_enterprises_shape(client, make_staff, staff_headers, db):
    _buildings(db, 45)
    h = staff_headers(make_staff(role="dept", department="税务所"))
    body = client.get("/api/v1/staff/buildings", headers=h).get_json()
    shape = client.get("/api/v1/staff/enterprises", headers=h).get_json()
    assert set(body) == set(shape) == {"items", "total", "page", "per_page", "pages"}
    assert (len(body["items"]), body["total"], body["page"], body["per_page"], body["pages"]) == (20, 45, 1, 20, 3)
    assert {"id", "name", "enterprise_count"} <= set(body["items"][0])
    last = client.get("/api/v1/staff/buildings?page=3", headers=h).get_json()
    assert [b["name"] for b in last["items"]] == [f"测试楼{i:03d}" for i in range(40, 45)]
    assert len(client.get("/api/v1/staff/buildings?per_page=100", headers=h).get_json()["items"]) == 45
    assert client.get("/api/v1/staff/buildings?per_page=101", headers=h).status_code == 422
    # The mini-program's own list (to pick a building) is unchanged: all of them.
    assert len(client.get("/api/v1/buildings").get_json()["items"]) == 45


# --- 3. the weekly report's 超期在办 --------------------------------------------------------------------

SHOWN = 50  # the page lists this many (reports.OVERDUE_SHOWN)


def _overdue_appeals(db, make_user, n: int) -> list[str]:
    """n open appeals past their deadline at the end of 2025-W43 (filed in W41, so not among W43's own), deadlines
    in a shuffled order; their numbers, most overdue first."""
    user = make_user()
    start = sh(2025, 10, 7, 9, 0)
    rows = []
    for i in range(n):
        k = (i * 37) % n  # deadline rank, not the id order
        rows.append({"id": 5000 + i, "number": f"SQ20251007-{i:05d}", "user_id": user.id, "content": "停车难，请帮忙",
                     "contact_name": "张三", "contact_phone": "13800138000", "department": "营商办",
                     "given_to": "营商办", "status": "in_progress", "submitted_at": start,
                     "due_at": start + timedelta(hours=1 + k), "overdue": True})
    db.execute(insert(Appeal), rows)
    db.commit()
    return [r["number"] for r in sorted(rows, key=lambda r: r["due_at"])]


def test_live_report_shows_the_most_overdue_and_the_count(app, client, console_login, make_staff, make_user, db):
    # ~3,300 overdue open appeals: the page listed (and loaded) every one of them.
    order = _overdue_appeals(db, make_user, 60)
    console_login(make_staff(role="staff"))
    with loaded(Appeal) as rows:
        body = _text(client.get("/console/appeals/report?week=2025-W43"))
    assert len(rows) <= SHOWN
    shown = re.findall(r"SQ20251007-\d{5}", body)
    assert shown == order[:SHOWN]
    assert "共 60 件" in body and 'id="overdue-more"' in body
    assert "/console/appeals?" in body and "overdue=true" in body and "open_only=true" in body
    # The workbook keeps them all, most overdue first.
    sheet = load_workbook(io.BytesIO(client.get("/console/appeals/report.xlsx?week=2025-W43").data))["当前超期在办"]
    assert [r[0] for r in sheet.iter_rows(min_row=2, values_only=True)] == order


def test_stored_report_shows_the_most_overdue_and_the_count(client, console_login, make_staff, make_user, db):
    order = _overdue_appeals(db, make_user, 60)
    with session_scope() as s:
        reports.prepare_weekly(s, "2025-W43", now=AFTER, via="tick")
    console_login(make_staff(role="staff"))
    body = _text(client.get("/console/appeals/reports/2025-W43"))
    assert re.findall(r"SQ20251007-\d{5}", body) == order[:SHOWN]
    assert "共 60 件" in body and 'id="overdue-more"' in body
    assert 'href="/console/appeals/reports/2025-W43.xlsx"' in body
    sheet = load_workbook(io.BytesIO(client.get("/console/appeals/reports/2025-W43.xlsx").data))["当前超期在办"]
    assert len(list(sheet.iter_rows(min_row=2, values_only=True))) == 60


def test_a_short_overdue_list_is_shown_whole_without_a_pointer(client, console_login, make_staff, make_user, db):
    order = _overdue_appeals(db, make_user, 3)
    console_login(make_staff(role="staff"))
    body = _text(client.get("/console/appeals/report?week=2025-W43"))
    assert re.findall(r"SQ20251007-\d{5}", body) == order and 'id="overdue-more"' not in body
