"""Reports QA (session 21, at scale): the live weekly JSON lists the week's appeals a page at a time (appeals_total,
page, per_page, pages) and its workbook reads them a chunk at a time; the 企业问题清单 lists at most 50 appeals of an
enterprise on a page (the open ones most overdue first, then the latest ended), with its count and the filtered
appeals list for the rest (no_enterprise / typed_enterprise / enterprise_id). Bounds on rows read, not timings."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import insert

from tests.integration.test_appeals_qa_s8 import sh
from tests.integration.test_entlist_qa_s20 import rows_read
from wxapp_backend.appeals import reports
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises.models import Enterprise

WEEKLY = "/api/v1/staff/reports/weekly"
ISSUES = "/api/v1/staff/reports/enterprise-issues"
CHINESE = re.compile(r"[\u4e00-\u9fff]")
W43 = sh(2025, 10, 21, 9, 0)  # Tuesday of 2025-W43


def _appeals(db, user_id: int, n: int, *, start: int = 1, at=W43, enterprise_id=None, typed: str = "",
             status=lambda i: "in_progress", due=lambda i: None) -> list[dict]:
    rows = [{"id": i, "number": f"SQ20251021-{i:05d}", "user_id": user_id, "content": f"第{i}件诉求：停车难",
             "contact_name": "张三", "contact_phone": "13800138000", "status": status(i), "department": "营商办",
             "given_to": "营商办", "enterprise_id": enterprise_id, "enterprise_name": typed,
             "submitted_at": at + timedelta(minutes=i % 5000), "due_at": due(i), "overdue": due(i) is not None}
            for i in range(start, start + n)]
    db.execute(insert(Appeal), rows)
    db.commit()
    return rows


# --- 1. the live weekly JSON pages the week's appeals ---------------------------------------------------------

def test_live_weekly_json_lists_a_page_of_the_weeks_appeals(client, db, make_user, make_staff, staff_headers):
    # A busy week holds thousands of appeals, every one of them was in the answer.
    rows = _appeals(db, make_user().id, 45)
    h = staff_headers(make_staff(role="staff"))
    first = client.get(WEEKLY, query_string={"week": "2025-W43"}, headers=h).get_json()
    assert [a["number"] for a in first["appeals"]] == [r["number"] for r in rows[:20]]
    assert (first["appeals_total"], first["page"], first["per_page"], first["pages"]) == (45, 1, 20, 3)
    assert first["totals"]["submitted"] == 45 and first["by_status"] == {"办理中": 45}  # the tallies count all
    last = client.get(WEEKLY, query_string={"week": "2025-W43", "page": 3}, headers=h).get_json()
    assert [a["number"] for a in last["appeals"]] == [r["number"] for r in rows[40:]]
    whole = client.get(WEEKLY, query_string={"week": "2025-W43", "per_page": 100}, headers=h).get_json()
    with session_scope() as s:
        assert whole["appeals"] == reports.weekly(s, "2025-W43")["appeals"]  # what the Monday job stores
    past = client.get(WEEKLY, query_string={"week": "2025-W43", "page": 9}, headers=h).get_json()
    assert past["appeals"] == [] and past["appeals_total"] == 45 and past["pages"] == 3
    # A department's report pages its own appeals.
    dept = staff_headers(make_staff(role="dept", department="营商办"))
    mine = client.get(WEEKLY, query_string={"week": "2025-W43", "per_page": 7}, headers=dept).get_json()
    assert (len(mine["appeals"]), mine["appeals_total"], mine["pages"], mine["scope"]) == (7, 45, 7, "营商办")
    other = staff_headers(make_staff(role="dept", department="税务所"))
    none = client.get(WEEKLY, query_string={"week": "2025-W43"}, headers=other).get_json()
    assert (none["appeals"], none["appeals_total"], none["pages"]) == ([], 0, 1)


@pytest.mark.parametrize("qs", ["page=0", "page=abc", "per_page=0", "per_page=101", "per_page=x", "page=1.5"])
def test_a_bad_weekly_page_is_told_in_chinese(client, make_staff, staff_headers, qs):
    resp = client.get(f"{WEEKLY}?week=2025-W43&{qs}", headers=staff_headers(make_staff(role="staff")))
    assert resp.status_code == 422
    body = resp.get_json()
    assert CHINESE.search(body["message"]) and set(body["fields"]) == {qs.split("=")[0]}


def test_live_weekly_json_reads_one_page_of_appeal_rows(app, client, db, make_user, make_staff, staff_headers,
                                                        console_login):
    _appeals(db, make_user().id, 1200)
    staff = make_staff(role="staff")
    with rows_read() as counts:
        body = client.get(WEEKLY, query_string={"week": "2025-W43"}, headers=staff_headers(staff)).get_json()
    assert body["appeals_total"] == 1200 and len(body["appeals"]) == 20
    assert sum(counts) < 200, counts  # tallies and a page, not a row an appeal
    console_login(staff)
    with rows_read() as counts:  # the page shows the tallies, never the rows: it read them all
        assert client.get("/console/appeals/report?week=2025-W43").status_code == 200
    assert sum(counts) < 200, counts
    # Negative control: the meter sees the rows of the whole week (what the JSON read before).
    with session_scope() as s, rows_read() as counts:
        reports.weekly(s, "2025-W43")
    assert sum(counts) >= 1200


def test_weekly_workbooks_hold_every_appeal_read_a_chunk_at_a_time(client, db, make_user, make_staff,
                                                                   staff_headers, console_login, monkeypatch):
    rows = _appeals(db, make_user().id, 450)
    monkeypatch.setattr(reports, "WEEKLY_CHUNK", 100, raising=False)
    staff = make_staff(role="staff")
    with rows_read() as counts:
        api = client.get(WEEKLY, query_string={"week": "2025-W43", "format": "xlsx", "per_page": 5},
                         headers=staff_headers(staff))
    assert api.status_code == 200 and max(counts) <= 100, counts
    console_login(staff)
    with rows_read() as counts:
        page = client.get("/console/appeals/report.xlsx?week=2025-W43")
    assert page.status_code == 200 and max(counts) <= 100, counts
    for data in (api.data, page.data):
        sheet = load_workbook(io.BytesIO(data))["本周诉求"]
        assert [r[0] for r in sheet.iter_rows(min_row=2, values_only=True)] == [r["number"] for r in rows]


# --- 2. the 企业问题清单 caps each enterprise's appeals on a page --------------------------------------------------

@pytest.fixture
def big(db, make_user):
    """未关联企业 with 120 appeals (30 open, 20 of them overdue, deadlines shuffled), an enterprise with 80, a typed
    name with 60, a small enterprise with 3."""
    user = make_user()
    db.execute(insert(Enterprise), [{"id": 1, "name": "甲大公司", "credit_code": "91310105MA00000001"},
                                    {"id": 2, "name": "乙小公司", "credit_code": "91310105MA00000002"}])
    db.commit()
    ended = {"closed", "resolved", "withdrawn"}
    lonely = _appeals(db, user.id, 120, start=1, status=lambda i: "in_progress" if i % 4 == 0 else "closed",
                      due=lambda i: W43 + timedelta(hours=(i * 37) % 120) if i % 4 == 0 and i % 3 else None)
    ent = _appeals(db, user.id, 80, start=1001, enterprise_id=1, status=lambda i: "accepted" if i % 2 else "closed")
    typed = _appeals(db, user.id, 60, start=2001, typed="野鸭湖贸易")
    small = _appeals(db, user.id, 3, start=3001, enterprise_id=2)

    def order(rows):  # open first, most overdue first (none without a deadline), then ended ones latest first
        open_ = [r for r in rows if r["status"] not in ended]
        return ([r["number"] for r in sorted(open_, key=lambda r: (r["due_at"] is None, r["due_at"] or 0, r["id"]))]
                + [r["number"] for r in sorted((r for r in rows if r["status"] in ended), key=lambda r: -r["id"])])

    return {"未关联企业": order(lonely), "甲大公司": order(ent), "野鸭湖贸易（未核实）": order(typed),
            "乙小公司": order(small)}


def test_a_page_lists_at_most_50_appeals_of_an_enterprise_with_its_count_and_the_way_to_the_rest(
        client, big, make_staff, staff_headers):
    h = staff_headers(make_staff(role="staff"))
    body = client.get(ISSUES, headers=h).get_json()
    groups = {g["enterprise"]: g for g in body["enterprises"]}
    assert set(groups) == set(big) and body["total"] == 4
    for name, want in big.items():
        g = groups[name]
        assert [a["number"] for a in g["appeals"]] == want[:reports.ISSUES_SHOWN], name
        assert g["total"] == len(want)
    assert groups["未关联企业"]["open"] == 30 and groups["甲大公司"]["open"] == 40
    assert groups["未关联企业"]["appeals"][0]["overdue"] and groups["未关联企业"]["appeals"][0]["open"]
    queries = {name: g["appeals_query"] for name, g in groups.items()}
    assert queries == {"未关联企业": {"no_enterprise": "true"}, "甲大公司": {"enterprise_id": 1},
                       "野鸭湖贸易（未核实）": {"typed_enterprise": "野鸭湖贸易"}, "乙小公司": {"enterprise_id": 2}}
    # The appeals list with that filter lists the whole group.
    for name, query in queries.items():
        listed = client.get("/api/v1/staff/appeals", query_string={**query, "per_page": 100}, headers=h).get_json()
        assert listed["total"] == len(big[name]), name
        assert {a["number"] for a in listed["items"]} <= set(big[name])
    # One enterprise asked for: the same cap.
    one = client.get(ISSUES, query_string={"enterprise_id": 1}, headers=h).get_json()
    assert [a["number"] for a in one["enterprises"][0]["appeals"]] == big["甲大公司"][:50]


def test_a_page_of_the_list_reads_at_most_50_appeal_rows_an_enterprise(app_ctx, big):
    with session_scope() as s, rows_read() as counts:
        page = reports.enterprise_issues(s, page=1, per_page=20)
    assert len(page["enterprises"]) == 4
    assert sum(counts) <= 4 + 3 * 50 + 3, counts  # one row a group, then at most 50 a group
    # Negative control: the meter sees the rows of a group read whole (what a page read before).
    with session_scope() as s, rows_read() as counts:
        reports.enterprise_issues(s)
    assert sum(counts) >= 120 + 80 + 60


def test_the_issue_workbook_keeps_every_appeal_a_large_group_read_a_chunk_at_a_time(
        client, big, make_staff, staff_headers, console_login, monkeypatch):
    monkeypatch.setattr(reports, "ISSUES_CHUNK_APPEALS", 30, raising=False)
    staff = make_staff(role="staff")
    with rows_read() as counts:
        api = client.get(ISSUES, query_string={"format": "xlsx"}, headers=staff_headers(staff))
    assert api.status_code == 200 and max(counts) <= 30, counts
    console_login(staff)
    page = client.get("/console/appeals/issues.xlsx")
    every = [n for name in sorted(big) for n in big[name]]  # the groups by name, each in its order
    for data in (api.data, page.data):
        sheet = load_workbook(io.BytesIO(data))["企业问题清单"]
        assert [r[0] for r in sheet.iter_rows(min_row=2, values_only=True)] == every


def _text(resp) -> str:
    return re.sub(r"\s+", " ", resp.get_data(as_text=True))


def test_the_console_page_links_a_large_group_to_its_filtered_appeals_list(client, big, make_staff, console_login):
    console_login(make_staff(role="staff"))
    html = _text(client.get("/console/appeals/issues"))
    assert html.count(">SQ20251021-") == 50 + 50 + 50 + 3
    assert 'href="/console/appeals?no_enterprise=true"' in html and "查看全部 120 件" in html
    assert 'href="/console/appeals?enterprise_id=1"' in html and "查看全部 80 件" in html
    assert "查看全部 60 件" in html and "typed_enterprise=%E9%87%8E%E9%B8%AD%E6%B9%96%E8%B4%B8%E6%98%93" in html
    assert "enterprise_id=2" not in html.replace('href="/console/enterprises/2"', "")  # 3 shown: no link
    # The list those links open holds the whole group, its filter shown (and kept when it is searched again).
    lonely = _text(client.get("/console/appeals?no_enterprise=true"))
    assert "共 120 条" in lonely and re.search(r'name="no_enterprise" value="true" checked', lonely)
    ent = _text(client.get("/console/appeals?enterprise_id=1"))
    assert "共 80 条" in ent and "企业：甲大公司" in ent
    typed = _text(client.get("/console/appeals?typed_enterprise=野鸭湖贸易"))
    assert "共 60 条" in typed and "填写的企业：野鸭湖贸易（未核实）" in typed
    nxt = re.search(r'href="([^"]*)" rel="next"', lonely).group(1).replace("&amp;", "&")
    assert "no_enterprise" in nxt and "共 120 条" in _text(client.get(nxt))  # the next page keeps the filter
