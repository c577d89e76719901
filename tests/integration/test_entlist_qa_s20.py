"""企业问题清单 QA: paged by enterprise (JSON and console), a page reads only its enterprises' appeals, the workbook
still holds every enterprise."""

from __future__ import annotations

import io
import math
import re
from contextlib import contextmanager
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import event, insert
from sqlalchemy.orm import Session

from wxapp_backend.appeals import reports
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.enterprises.models import Enterprise

CHINESE = re.compile(r"[\u4e00-\u9fff]")
OPEN_STATUSES = {"submitted", "accepted", "assigned", "in_progress", "pending_enterprise", "coordinating"}
ISSUES = "/api/v1/staff/reports/enterprise-issues"


@contextmanager
def rows_read():
    """The rows each SELECT run through an ORM session returned inside the block, one count per statement."""
    counts: list[int] = []

    def on_execute(state):
        if not state.is_select:
            return None
        frozen = state.invoke_statement().freeze()
        counts.append(len(frozen().all()))
        return frozen()

    event.listen(Session, "do_orm_execute", on_execute)
    try:
        yield counts
    finally:
        event.remove(Session, "do_orm_execute", on_execute)


@pytest.fixture
def street(db, make_user):
    """23 enterprises (two of them namesakes) with 1..6 appeals each, appeals with a typed company name and none,
    merged appeals (into their own enterprise's master: not listed; into another's: listed, open while it is),
    some given to 税务所. Returns what each group must hold, by hand from the rows inserted."""
    user = make_user()
    now = utcnow()
    names = [f"{'甲乙丙丁戊己庚辛壬癸'[i % 10]}{i:02d}科技有限公司" for i in range(22)] + ["甲00科技有限公司"]
    db.execute(insert(Enterprise), [{"id": i + 1, "name": n, "credit_code": f"91310105MA{i + 1:08d}"}
                                    for i, n in enumerate(names)])
    rows, expect = [], {}
    counter = iter(range(1, 10**6))

    def add(enterprise_id, typed="", status="in_progress", dept="", master_id=None, listed=True):
        i = next(counter)
        rows.append({"id": i, "number": f"SQ20251020-{i:05d}", "user_id": user.id, "content": f"第{i}件诉求",
                     "contact_name": "张三", "contact_phone": "13800138000", "status": status,
                     "enterprise_id": enterprise_id, "enterprise_name": typed, "department": dept, "given_to": dept,
                     "master_id": master_id, "submitted_at": now - timedelta(hours=i)})
        if listed:
            key = (names[enterprise_id - 1] if enterprise_id else (f"{typed}（未核实）" if typed else "未关联企业"),
                   enterprise_id)
            g = expect.setdefault(key, {"numbers": set(), "open": 0, "tax": set(), "tax_open": 0})
            master_status = next((r["status"] for r in rows if r["id"] == master_id), None)
            is_open = (master_status if status == "duplicate" else status) in OPEN_STATUSES
            g["numbers"].add(rows[-1]["number"])
            g["open"] += is_open
            if dept == "税务所":
                g["tax"].add(rows[-1]["number"])
                g["tax_open"] += is_open
        return i

    for e in range(1, len(names) + 1):
        for k in range(e % 6 + 1):
            add(e, status="closed" if k % 3 == 2 else "in_progress", dept="税务所" if k % 2 == 0 else "营商办")
    master = add(1, dept="税务所")
    add(1, status="duplicate", master_id=master, listed=False)  # merged into its own enterprise's master
    add(2, status="duplicate", master_id=master, dept="税务所")  # into another enterprise's: its own row, open
    for typed in ("乙01科技有限公司", "野鸭湖贸易", "野鸭湖贸易", ""):  # anyone may type any name, or none
        add(None, typed=typed, dept="税务所")
    add(None, status="closed")
    db.execute(insert(Appeal), rows)
    return expect


def _api_pages(client, headers, per_page, **extra):
    first = client.get(ISSUES, query_string={"per_page": per_page, **extra}, headers=headers)
    assert first.status_code == 200, first.get_json()
    bodies = [first.get_json()]
    for page in range(2, bodies[0]["pages"] + 1):
        bodies.append(client.get(ISSUES, query_string={"page": page, "per_page": per_page, **extra},
                                 headers=headers).get_json())
    return bodies


def test_pages_hold_every_enterprise_once_with_its_counts(client, street, make_staff, staff_headers):
    h = staff_headers(make_staff(role="admin"))
    bodies = _api_pages(client, h, per_page=4)
    groups = [g for b in bodies for g in b["enterprises"]]
    # By hand: 23 enterprises (a namesake pair apart), "乙01…（未核实）", "野鸭湖贸易（未核实）", 未关联企业.
    assert len(street) == 26
    assert [(b["total"], b["page"], b["per_page"], b["pages"]) for b in bodies] == [
        (26, n, 4, 7) for n in range(1, 8)]
    assert [len(b["enterprises"]) for b in bodies] == [4] * 6 + [2]
    keys = [(g["enterprise"], g["enterprise_id"]) for g in groups]
    assert len(set(keys)) == len(keys) == 26 and set(keys) == set(street)
    assert keys == sorted(keys, key=lambda k: (k[0], k[1] or 0))  # by name across the pages, as the whole list
    for g in groups:
        want = street[(g["enterprise"], g["enterprise_id"])]
        assert {a["number"] for a in g["appeals"]} == want["numbers"]
        assert (g["total"], g["open"]) == (len(want["numbers"]), want["open"])
        assert [a["open"] for a in g["appeals"]] == sorted((a["open"] for a in g["appeals"]), reverse=True)
    # the merged one of enterprise 2 is listed (已合并) and open while its master is; enterprise 1's own is not
    two = next(g for g in groups if g["enterprise_id"] == 2)
    assert "已合并" in [a["status"] for a in two["appeals"]]
    # the pages together are the whole list the workbook holds
    with session_scope() as s:
        assert reports.enterprise_issues(s)["enterprises"] == groups


def test_a_department_pages_through_only_what_it_handles(client, street, make_staff, staff_headers):
    h = staff_headers(make_staff(role="dept", department="税务所"))
    bodies = _api_pages(client, h, per_page=5)
    groups = [g for b in bodies for g in b["enterprises"]]
    mine = {k: v for k, v in street.items() if v["tax"]}
    assert bodies[0]["total"] == len(mine) == len(groups)
    assert bodies[0]["pages"] == math.ceil(len(mine) / 5)
    assert {(g["enterprise"], g["enterprise_id"]) for g in groups} == set(mine)
    for g in groups:
        want = mine[(g["enterprise"], g["enterprise_id"])]
        assert {a["number"] for a in g["appeals"]} == want["tax"]
        assert (g["total"], g["open"]) == (len(want["tax"]), want["tax_open"])
        assert {a["department"] for a in g["appeals"]} == {"税务所"}


def test_one_enterprise_gets_its_whole_list_whatever_the_page_size(client, street, make_staff, staff_headers):
    h = staff_headers(make_staff(role="admin"))
    body = client.get(ISSUES, query_string={"enterprise_id": 5, "per_page": 1}, headers=h).get_json()
    assert (body["total"], body["page"], body["pages"]) == (1, 1, 1)
    [g] = body["enterprises"]
    assert {a["number"] for a in g["appeals"]} == street[(g["enterprise"], 5)]["numbers"]
    assert len(g["appeals"]) == 6  # more appeals than the page size: the page counts enterprises


@pytest.mark.parametrize("qs", ["page=0", "page=abc", "page=-1", "per_page=0", "per_page=101", "per_page=x",
                                "page=1.5", "per_page=100000000000000000000"])
def test_a_bad_page_or_page_size_is_told_in_chinese(client, make_staff, staff_headers, qs):
    h = staff_headers(make_staff(role="admin"))
    resp = client.get(f"{ISSUES}?{qs}", headers=h)
    assert resp.status_code in (400, 422)
    body = resp.get_json()
    assert body["error"] and CHINESE.search(body["message"]) and set(body["fields"]) == {qs.split("=")[0]}


def test_a_page_past_the_end_is_empty_not_an_error(client, street, make_staff, staff_headers):
    h = staff_headers(make_staff(role="admin"))
    body = client.get(ISSUES, query_string={"page": 99}, headers=h).get_json()
    assert body["enterprises"] == [] and (body["total"], body["pages"]) == (26, 2)


def test_a_page_reads_its_enterprises_appeals_not_every_appeal(app_ctx, db, make_user):
    user = make_user()
    now = utcnow()
    db.execute(insert(Enterprise), [{"id": e, "name": f"企业{e:03d}", "credit_code": f"91310105MB{e:08d}"}
                                    for e in range(1, 41)])
    db.execute(insert(Appeal), [{"id": i, "number": f"SQ20251020-{i:05d}", "user_id": user.id, "content": "停车难",
                                 "contact_name": "张三", "contact_phone": "13800138000", "status": "in_progress",
                                 "enterprise_id": (i - 1) % 40 + 1, "submitted_at": now - timedelta(hours=i)}
                                for i in range(1, 401)])  # 40 enterprises, 10 appeals each
    with session_scope() as s, rows_read() as counts:
        page = reports.enterprise_issues(s, page=2, per_page=5)
    assert [g["enterprise"] for g in page["enterprises"]] == [f"企业{e:03d}" for e in range(6, 11)]
    assert [g["total"] for g in page["enterprises"]] == [10] * 5 and page["total"] == 40
    # one row a group (40), then the page's 50 appeals: two statements, not one row an appeal filed
    assert len(counts) <= 3 and sum(counts) <= 40 + 50
    # Negative control: the meter sees appeal rows; the whole list (what every page read before) reads all 400.
    with session_scope() as s, rows_read() as counts:
        reports.enterprise_issues(s)
    assert sum(counts) >= 400


def test_the_workbooks_hold_every_enterprise_read_a_few_at_a_time(client, street, make_staff, staff_headers,
                                                                   console_login, monkeypatch):
    monkeypatch.setattr(reports, "ISSUES_CHUNK", 3)
    staff = make_staff(role="admin")
    with rows_read() as counts:
        api = client.get(ISSUES, query_string={"format": "xlsx", "per_page": 2}, headers=staff_headers(staff))
    assert api.status_code == 200 and api.data[:2] == b"PK"
    # read 3 enterprises at a time: no statement returned more than 3 enterprises' appeals (at most 7 each)
    assert max(counts) <= 26 and len(counts) >= math.ceil(26 / 3)
    console_login(staff)
    page = client.get("/console/appeals/issues.xlsx")
    assert page.status_code == 200
    every = {n for g in street.values() for n in g["numbers"]}
    for data in (api.data, page.data):
        sheet = load_workbook(io.BytesIO(data))["企业问题清单"]
        numbers = [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)]
        assert len(numbers) == len(every) and set(numbers) == every  # every enterprise, not a page of them


def _headings(html: str) -> list[str]:
    return [m.strip() for m in re.findall(r'<section class="issues-group"[^>]*>\s*<h2>(?:<a [^>]*>)?([^<]+)', html)]


def test_the_console_page_pages_by_enterprise(client, street, make_staff, console_login):
    console_login(make_staff(role="admin"))
    first = client.get("/console/appeals/issues?per_page=10")
    assert first.status_code == 200
    html = first.get_data(as_text=True)
    assert "第 1 页 / 共 3 页" in html and "共 26 家企业" in html and "上一页" not in html
    assert re.search(r'href="/console/appeals/issues\?page=2&amp;per_page=10" rel="next">下一页', html)
    with session_scope() as s:
        whole = reports.enterprise_issues(s)["enterprises"]
    assert _headings(html) == [g["enterprise"] for g in whole[:10]]
    last = client.get("/console/appeals/issues?page=3&per_page=10").get_data(as_text=True)
    assert "第 3 页 / 共 3 页" in last and "上一页" in last and "下一页" not in last
    assert _headings(last) == [g["enterprise"] for g in whole[20:]]
    one = client.get("/console/appeals/issues?enterprise_id=5").get_data(as_text=True)
    assert one.count(">SQ20251020-") == 6 and "第 1 页 / 共 1 页" in one
    bad = client.get("/console/appeals/issues?page=abc")
    assert bad.status_code == 422 and "页码" in bad.get_data(as_text=True)
    assert "第 1 页 / 共 2 页" in bad.get_data(as_text=True)  # the first page of 20, with the note


def test_a_department_sees_only_its_own_on_the_console_page(client, street, make_staff, console_login):
    console_login(make_staff(role="dept", department="税务所"))
    html = client.get("/console/appeals/issues?per_page=100").get_data(as_text=True)
    theirs = {n for g in street.values() for n in g["numbers"] - g["tax"]}
    ours = {n for g in street.values() for n in g["tax"]}
    assert all(n in html for n in ours) and not any(n in html for n in theirs)
