"""Reports QA 2 (session 21, at scale): the STORED weekly JSON lists a page of its week's appeals as the live one does
(page, per_page, appeals_total, pages) and its most overdue few, sliced before it is serialised (the stored document
is one JSON value, still read whole); the weekly workbook reads its overdue sheet a chunk at a time; the 清单 workbook
reads a large group by keyset, so an appeal filed during the export neither repeats a row nor drops one. Bounds on
rows read and rows served, not timings."""

from __future__ import annotations

import io
import random
import re
from datetime import timedelta
from itertools import islice

import pytest
from openpyxl import load_workbook
from sqlalchemy import insert

from tests.integration.test_appeals_qa_s8 import sh
from tests.integration.test_entlist_qa_s20 import rows_read
from tests.integration.test_reports_qa_s21 import W43, _appeals, big  # noqa: F401 (big is a fixture)
from wxapp_backend.appeals import reports
from wxapp_backend.appeals.models import Appeal, AppealReport
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope

WEEKLY = "/api/v1/staff/reports/weekly"
STORED = "/api/v1/staff/reports/weekly/stored/2025-W43"
CHINESE = re.compile(r"[\u4e00-\u9fff]")
AFTER = sh(2025, 10, 27, 9, 0)  # the Monday after 2025-W43


def _dept(name: str) -> Actor:
    return Actor("staff", 999, role="dept", name="部门账号", department=name)


def _row(i: int, rnd: random.Random, *, due: str | None = None) -> dict:
    """A report row as stored (reports._format), fields varied to be tallied and sorted."""
    return {"number": f"SQ20251021-{i:05d}", "status": rnd.choice(["已提交", "办理中", "已办结", "已撤回"]),
            "category": rnd.choice(["税务", "交通停车", "", None]), "department": rnd.choice(["营商办", "税务所", ""]),
            "enterprise": "甲公司", "building": rnd.choice(["一号楼", "", "二号楼"]), "content": "停车难" * 60,
            "submitted_at": "2025-10-21 09:00", "due_at": due if due is not None else "", "overdue": due is not None,
            "escalated": rnd.random() < 0.3, "reopen_count": 0}


@pytest.fixture
def stored(db):
    """A stored 2025-W43 report of 1,200 appeals and 300 overdue ones (deadlines tied, some missing, out of order),
    the figures as a centre-wide report stores them. Returns its data."""
    rnd = random.Random(21)
    appeals = [_row(i, rnd) for i in range(1, 1201)]
    dues = [f"2025-10-{rnd.randint(10, 20):02d} {rnd.choice(['09:00', '17:30'])}" for _ in range(290)] + [""] * 10
    rnd.shuffle(dues)
    overdue = [_row(5000 + i, rnd, due=d) for i, d in enumerate(dues)]
    rnd.shuffle(overdue)
    data = {"week": "2025-W43", "start": "2025-10-19T16:00:00+00:00", "end": "2025-10-26T16:00:00+00:00",
            "scope": "", "metrics": None, "totals": {"submitted": 1200, "open_now": 800, "overdue_now": 300,
                                                     "escalated": sum(a["escalated"] for a in appeals)},
            "by_category": {"税务": 1}, "by_department": {"营商办": 1}, "by_status": {"办理中": 1},
            "by_building": {"一号楼": 1}, "appeals": appeals, "overdue": overdue, "overdue_total": 300}
    db.execute(insert(AppealReport), [{"week": "2025-W43", "data": data, "summary": None, "generated_at": AFTER}])
    db.commit()
    return data


def _reference(actor=None) -> dict:
    """The stored report as stored_view shows it (every row, counted in Python): what a page is checked against."""
    with session_scope() as s:
        return reports.stored_weekly(s, "2025-W43", actor)


# --- 1. the stored weekly JSON pages its appeals ------------------------------------------------------------

def test_stored_weekly_json_lists_a_page_of_its_appeals(client, stored, make_staff, staff_headers):
    h = staff_headers(make_staff(role="staff"))
    first = client.get(STORED, headers=h).get_json()
    assert first["appeals"] == stored["appeals"][:20]
    assert (first["appeals_total"], first["page"], first["per_page"], first["pages"]) == (1200, 1, 20, 60)
    assert first["totals"] == stored["totals"] and first["by_category"] == stored["by_category"]  # as stored
    assert first["overdue"] == reports.most_overdue(stored["overdue"]) and first["overdue_total"] == 300
    assert first["generated_text"].startswith("生成于 ")
    last = client.get(STORED, query_string={"page": 12, "per_page": 100}, headers=h).get_json()
    assert last["appeals"] == stored["appeals"][1100:] and last["pages"] == 12
    past = client.get(STORED, query_string={"page": 61}, headers=h).get_json()
    assert (past["appeals"], past["appeals_total"], past["pages"]) == ([], 1200, 60)
    # The workbook still lists every one.
    book = client.get(STORED, query_string={"format": "xlsx", "per_page": 5}, headers=h)
    rows = list(load_workbook(io.BytesIO(book.data))["本周诉求"].iter_rows(min_row=2, values_only=True))
    assert [r[0] for r in rows] == [a["number"] for a in stored["appeals"]]


def test_a_departments_stored_page_counts_its_own_rows_as_before(client, stored, make_staff, staff_headers):
    # A department's view pages its own rows; its tallies count them all, as stored_view counts them.
    for dept in ("营商办", "税务所", "街道办"):
        want = _reference(_dept(dept))
        h = staff_headers(make_staff(role="dept", department=dept))
        got = client.get(STORED, query_string={"per_page": 100}, headers=h).get_json()
        for key in ("totals", "by_category", "by_department", "by_status", "by_building", "metrics", "scope",
                    "returns_by_department", "overdue_total"):
            assert got[key] == want[key], (dept, key)
        assert got["appeals"] == want["appeals"][:100] and got["appeals_total"] == len(want["appeals"])
        assert got["overdue"] == reports.most_overdue(want["overdue"])
    assert got["appeals_total"] == 0 and got["pages"] == 1


def test_stored_page_tallies_keep_their_order(app_ctx, stored):
    with session_scope() as s:
        page = reports.stored_weekly(s, "2025-W43", _dept("营商办"), page=1)
    want = _reference(_dept("营商办"))
    for key in ("by_category", "by_status", "by_building"):
        assert list(page[key].items()) == list(want[key].items()), key  # the console page lists them in this order


@pytest.mark.parametrize("qs", ["page=0", "page=abc", "per_page=0", "per_page=101", "per_page=x", "page=1.5"])
def test_a_bad_stored_page_is_told_in_chinese(client, stored, make_staff, staff_headers, qs):
    resp = client.get(f"{STORED}?{qs}", headers=staff_headers(make_staff(role="staff")))
    assert resp.status_code == 422
    body = resp.get_json()
    assert CHINESE.search(body["message"]) and set(body["fields"]) == {qs.split("=")[0]}


def test_the_stored_json_serialises_a_page_not_the_whole_week(client, stored, make_staff, staff_headers,
                                                            console_login):
    # The report is one stored JSON document (about 650 KB here): it is still read whole, but only a page of its
    # appeals and its 50 most overdue are served, not its 1,500 rows.
    staff = make_staff(role="staff")
    for who in (staff, make_staff(role="dept", department="营商办")):
        resp = client.get(STORED, headers=staff_headers(who))
        assert resp.status_code == 200
        assert len(re.findall(rb"SQ20251021-\d{5}", resp.data)) == 20 + 50  # was 1,200 + 50 (961 KB)
        assert len(resp.data) < 100_000, len(resp.data)
    console_login(staff)
    page = client.get("/console/appeals/reports/2025-W43")
    assert page.status_code == 200 and len(re.findall(r"SQ20251021-\d{5}", page.get_data(as_text=True))) == 50
    # Negative control: the workbook serialises every row.
    book = load_workbook(io.BytesIO(client.get(STORED, query_string={"format": "xlsx"},
                                               headers=staff_headers(staff)).data))
    assert book["本周诉求"].max_row - 1 == 1200 and book["当前超期在办"].max_row - 1 == 300


def test_a_prepared_report_pages_as_the_live_one(client, db, make_user, make_staff, staff_headers):
    rows = _appeals(db, make_user().id, 45)
    with session_scope() as s:
        reports.prepare_weekly(s, "2025-W43", now=AFTER, via="tick")
    h = staff_headers(make_staff(role="staff"))
    live = client.get(WEEKLY, query_string={"week": "2025-W43", "page": 2}, headers=h).get_json()
    kept = client.get(STORED, query_string={"page": 2}, headers=h).get_json()
    assert [a["number"] for a in kept["appeals"]] == [r["number"] for r in rows[20:40]]
    for key in ("appeals", "appeals_total", "page", "per_page", "pages"):
        assert kept[key] == live[key], key


def test_a_report_stored_without_its_lists_shows_empty_pages(client, db, make_staff, staff_headers):
    db.execute(insert(AppealReport), [{"week": "2025-W43", "data": {"week": "2025-W43", "start": W43.isoformat()},
                                       "summary": None, "generated_at": AFTER}])
    db.commit()
    for role, dept in (("staff", ""), ("dept", "营商办")):
        body = client.get(STORED, headers=staff_headers(make_staff(role=role, department=dept))).get_json()
        assert (body["appeals"], body["appeals_total"], body["pages"], body["overdue"], body["overdue_total"]) == (
            [], 0, 1, [], 0)


# --- 2. the weekly workbook reads its overdue sheet a chunk at a time ----------------------------------------

def test_the_overdue_sheet_is_read_a_chunk_at_a_time(client, db, make_user, make_staff, staff_headers,
                                                     console_login, monkeypatch):
    # 450 overdue open appeals, deadlines tied across the chunks' edges, 5 flagged overdue without a deadline.
    due = {i: (None if i > 445 else W43 - timedelta(hours=(i * 7) % 40)) for i in range(1, 451)}
    rows = _appeals(db, make_user().id, 450, due=lambda i: due[i])
    db.execute(Appeal.__table__.update().where(Appeal.id > 445).values(overdue=True))
    db.commit()
    want = [r["number"] for r in sorted(rows, key=lambda r: (r["due_at"] is None, r["due_at"] or W43, r["id"]))]
    monkeypatch.setattr(reports, "WEEKLY_CHUNK", 100)
    staff = make_staff(role="staff")
    with rows_read() as counts:
        api = client.get(WEEKLY, query_string={"week": "2025-W43", "format": "xlsx"}, headers=staff_headers(staff))
    assert api.status_code == 200 and max(counts) <= 100, counts
    console_login(staff)
    with rows_read() as counts:
        page = client.get("/console/appeals/report.xlsx?week=2025-W43")
    assert page.status_code == 200 and max(counts) <= 100, counts
    for data in (api.data, page.data):
        book = load_workbook(io.BytesIO(data))
        assert [r[0] for r in book["当前超期在办"].iter_rows(min_row=2, values_only=True)] == want
        overview = {r[0]: r[1] for r in book["概览"].iter_rows(values_only=True) if r and r[0]}
        assert overview["当前超期在办（生成报表时）"] == 450
    # The JSON's list (the 50 most overdue, read at once) is the head of the same order.
    body = client.get(WEEKLY, query_string={"week": "2025-W43"}, headers=staff_headers(staff)).get_json()
    assert [a["number"] for a in body["overdue"]] == want[:50] and body["overdue_total"] == 450


# --- 3. the 清单 workbook reads a large group by keyset ----------------------------------------------------------

def _numbers(groups) -> dict[str, list[str]]:
    return {g["enterprise"]: [a["number"] for a in g["appeals"]] for g in groups}


def test_a_large_group_read_in_small_chunks_keeps_its_order(app_ctx, big, monkeypatch):
    # Chunk edges inside each class: open with a deadline, open without, ended.
    for size in (7, 30, 119, 120):
        monkeypatch.setattr(reports, "ISSUES_CHUNK_APPEALS", size)
        with session_scope() as s:
            assert _numbers(reports.iter_enterprise_issues(s)) == big, size


def test_an_appeal_filed_during_the_export_neither_repeats_nor_drops_a_row(app_ctx, big, make_user, monkeypatch):
    monkeypatch.setattr(reports, "ISSUES_CHUNK_APPEALS", 25)
    user = make_user()
    base = {"user_id": user.id, "contact_name": "李四", "contact_phone": "13900139000", "department": "营商办",
            "given_to": "营商办", "enterprise_id": None, "enterprise_name": "", "submitted_at": W43}
    with session_scope() as s:
        groups = {g["enterprise"]: g for g in reports.iter_enterprise_issues(s)}
        lonely = iter(groups["未关联企业"]["appeals"])
        first = list(islice(lonely, 25))  # the first chunk read
        # Filed now, between two chunks: one ahead of the place reached (open, the most overdue of all), one after
        # it (ended, the latest: the first of the ended ones).
        s.execute(insert(Appeal), [
            {**base, "id": 9001, "number": "SQ20251021-09001", "content": "新诉求", "status": "in_progress",
             "due_at": W43 - timedelta(days=30), "overdue": True},
            {**base, "id": 9002, "number": "SQ20251021-09002", "content": "新办结", "status": "closed",
             "due_at": None, "overdue": False}])
        rest = [a["number"] for a in lonely]
        others = _numbers(g for name, g in groups.items() if name != "未关联企业")
    listed = [a["number"] for a in first] + rest
    want = big["未关联企业"]
    assert len(listed) == len(set(listed)), [n for n in listed if listed.count(n) > 1]  # no row twice
    assert set(want) <= set(listed)  # none dropped
    # The one filed ahead of the place reached is in the next export; the one after it is in this one, in its place.
    assert listed == want[:30] + ["SQ20251021-09002"] + want[30:]
    assert others == {name: numbers for name, numbers in big.items() if name != "未关联企业"}
