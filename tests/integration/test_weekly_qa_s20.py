"""Weekly QA (session 20, at scale): the live weekly report counts its week in the database (column selects and
COUNT ... GROUP BY) instead of loading the week's appeals as objects, with the same figures as before; the staff
JSON lists the 50 most overdue open appeals and says how many there are (overdue_total), as the page does."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, insert, select, update

from tests.integration.test_appeals_qa_s8 import sh, w  # noqa: F401 (w is a fixture)
from tests.integration.test_lists19_qa_s19 import SHOWN, _overdue_appeals
from tests.integration.test_reports_qa_s17 import AFTER, _dept, _week_of_mixed_appeals
from tests.integration.test_scale_qa_s9 import loaded
from wxapp_backend.appeals import metrics, reports
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import Appeal, AppealCategory, handled_by
from wxapp_backend.appeals.states import LABELS, OPEN, AppealStatus
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises.models import Building, Enterprise

WEEK = "2025-W43"


def _object_counting_weekly(session, week, actor=None, *, now=None, overdue_limit=None) -> dict:
    """The live report as session 19 computed it (reports.weekly before this session): every appeal of the week
    loaded as an object, with its category, enterprise and building, and counted in Python. The reference the
    figures are compared with, and the negative control of the "no Appeal objects" check."""
    label, start, end = reports.parse_week(week)
    m = metrics.compute(session, start, end, actor, now=now)
    dept = actor is not None and actor.type == "staff" and actor.role == "dept"
    q = select(Appeal).where(Appeal.submitted_at >= start, Appeal.submitted_at < end)
    if dept:
        q = q.where(handled_by(actor.department))
    new = list(session.scalars(q.order_by(Appeal.id)).unique())
    open_cond = [Appeal.status.in_([s.value for s in OPEN]), Appeal.submitted_at < end]
    if dept:
        open_cond.append(handled_by(actor.department))
    open_now = session.scalar(select(func.count(Appeal.id)).where(*open_cond)) or 0
    late = select(Appeal).where(*open_cond, Appeal.overdue.is_(True)).order_by(*reports.MOST_OVERDUE_FIRST)
    overdue = list(session.scalars(late if overdue_limit is None else late.limit(overdue_limit)).unique())
    overdue_now = len(overdue) if overdue_limit is None or len(overdue) < overdue_limit else (
        session.scalar(select(func.count(Appeal.id)).where(*open_cond, Appeal.overdue.is_(True))) or 0)

    def handling(a):
        return a.department if a.department and a.given_to == a.department else ""

    def row(a):
        return reports._format(a.number, a.status, a.category.name if a.category else "", handling(a),
                               a.enterprise.name if a.enterprise else a.enterprise_name,
                               a.building.name if a.building else "", a.content, a.submitted_at, a.due_at,
                               a.overdue, a.escalated, a.reopen_count)

    return {
        "week": label, "start": start.isoformat(), "end": end.isoformat(),
        "scope": actor.department if dept else "",
        "metrics": m.as_dict(),
        "totals": {"submitted": len(new), "open_now": open_now, "overdue_now": overdue_now,
                   "escalated": sum(1 for a in new if a.escalated)},
        "by_category": dict(Counter(a.category.name if a.category else "未分类" for a in new)),
        "by_department": dict(Counter(handling(a) or "未交办" for a in new)),
        "by_status": {LABELS[st]: n for st in AppealStatus if (n := sum(1 for a in new if a.status == st.value))},
        "by_building": dict(Counter(a.building.name if a.building else "未填写" for a in new)),
        "appeals": [row(a) for a in new],
        "overdue": [row(a) for a in overdue],
    }


def _as_before(report: dict) -> str:
    """The report as JSON in its own key order (the page and the workbook list the tallies in that order), without
    the key this session added."""
    return json.dumps({k: v for k, v in report.items() if k != "overdue_total"}, ensure_ascii=False)


DEPARTMENTS = ("税务所", "交警中队", "劳动监察队", "营商办", "市场监管所")


def _varied_week(w, db) -> None:
    """The mixed week of session 17 through the real workflow (resolved, rated not resolved and so reopened,
    withdrawn, merged, escalated, rejected, the edges of the week), plus 300 appeals written straight to the table
    with every status, several categories (and none), departments guessed and given (and given elsewhere),
    buildings (and none), enterprises (and a name typed), overdue, escalated, reopened, merged into a master,
    contents longer than the 200 characters a row shows, some of them in the weeks around."""
    _week_of_mixed_appeals(w)
    rnd = random.Random(20)
    db.execute(insert(Building), [{"id": 900 + i, "name": f"测试楼宇{i}号", "address": "新华路 1 号"} for i in range(4)])
    db.execute(insert(Enterprise), [{"id": 900 + i, "name": f"变化企业{i}有限公司", "building_id": 900 + i % 4,
                                     "credit_code": demo_credit_code("91310105", 900900 + i)} for i in range(5)])
    db.execute(insert(AppealCategory), [{"id": 900, "code": "s20_blank", "name": "", "department": "营商办"},
                                        {"id": 901, "code": "s20_named", "name": "未分类", "department": "营商办"}])
    categories = [*db.scalars(select(AppealCategory.id)).all(), None, None]
    statuses = [s.value for s in AppealStatus]
    start = sh(2025, 10, 20, 0, 0)
    rows = []
    for i in range(300):
        at = start + timedelta(minutes=rnd.randrange(-3 * 24 * 60, 10 * 24 * 60))  # W42 .. W44
        guessed = rnd.choice(("", *DEPARTMENTS))
        given = rnd.choice((guessed, guessed, "", rnd.choice(DEPARTMENTS)))
        status = rnd.choice(statuses)
        rows.append({
            "id": 7000 + i, "number": f"SQ20251020-{i:05d}", "user_id": w.user.id, "status": status,
            "content": rnd.choice(("停车难，请帮忙", "发票开不出来" * 40, "😀税务" * 120, "=SUM(A1)")),
            "contact_name": "张三", "contact_phone": "13800138000",
            "category_id": rnd.choice(categories), "department": guessed, "given_to": given,
            "building_id": rnd.choice((None, 900, 901, 902, 903)),
            "enterprise_id": rnd.choice((None, None, 900, 901, 902, 903, 904)),
            "enterprise_name": rnd.choice(("", "手填的企业名称", "变化企业0有限公司")),
            "submitted_at": at, "due_at": rnd.choice((None, at + timedelta(days=rnd.randrange(1, 9)))),
            "overdue": rnd.random() < 0.3, "escalated": rnd.random() < 0.15,
            "reopen_count": rnd.choice((0, 0, 0, 1, 2)),
            "master_id": 7000 + rnd.randrange(i) if status == AppealStatus.DUPLICATE.value and i else None,
        })
    db.execute(insert(Appeal), rows)
    db.commit()


ACTORS = [None, Actor("staff", 1, role="admin", name="管理员"), *[_dept(d) for d in DEPARTMENTS]]


@pytest.mark.parametrize("limit", [None, reports.OVERDUE_SHOWN, 7])
def test_live_report_gives_the_figures_it_gave_counting_objects(w, db, limit):
    _varied_week(w, db)
    for week in ("2025-W42", WEEK, "2025-W44"):
        for actor in ACTORS:
            with session_scope() as s:
                before = _object_counting_weekly(s, week, actor, now=AFTER, overdue_limit=limit)
            with session_scope() as s:
                now = reports.weekly(s, week, actor, now=AFTER, overdue_limit=limit)
            assert _as_before(now) == _as_before(before), (week, actor)
            assert now["overdue_total"] == now["totals"]["overdue_now"]
    # The data set is varied enough to mean something.
    with session_scope() as s:
        r = reports.weekly(s, WEEK, now=AFTER)
    assert len(r["by_status"]) == len(AppealStatus) and {"未分类", ""} <= set(r["by_category"])
    assert {"未交办", *DEPARTMENTS} <= set(r["by_department"]) and "未填写" in r["by_building"]
    assert r["totals"]["escalated"] and r["totals"]["overdue_now"] > 7 and any(a["reopen_count"] for a in r["appeals"])
    assert any(len(a["content"]) == 200 for a in r["appeals"])


def test_live_report_builds_no_appeal_objects(w, db):
    _varied_week(w, db)
    with session_scope() as s, loaded(Appeal) as rows:
        full = reports.weekly(s, WEEK, now=AFTER)
        capped = reports.weekly(s, WEEK, _dept("税务所"), now=AFTER, overdue_limit=reports.OVERDUE_SHOWN)
    assert rows == []
    assert full["totals"]["submitted"] > 100 and full["overdue"] and capped["appeals"]
    # Negative control: the counter sees the objects the report of session 19 built, one per appeal listed.
    with session_scope() as s, loaded(Appeal) as rows:
        before = _object_counting_weekly(s, WEEK, now=AFTER)
    assert len(rows) >= before["totals"]["submitted"] > 100


# --- the staff JSON: the most overdue 50 and the count of all ---------------------------------------------

KEYS_BEFORE = {"week", "start", "end", "scope", "metrics", "totals", "by_category", "by_department", "by_status",
               "by_building", "appeals", "overdue"}


def test_weekly_json_lists_the_most_overdue_fifty_and_counts_all(client, make_staff, make_user, staff_headers, db):
    order = _overdue_appeals(db, make_user, 60)
    h = staff_headers(make_staff(role="staff"))
    with loaded(Appeal) as rows:
        r = client.get(f"/api/v1/staff/reports/weekly?week={WEEK}", headers=h).get_json()
    assert rows == []
    assert KEYS_BEFORE <= set(r)  # additions only
    assert [a["number"] for a in r["overdue"]] == order[:SHOWN]
    assert r["overdue_total"] == 60 == r["totals"]["overdue_now"]
    # The workbook keeps every one, most overdue first.
    x = client.get(f"/api/v1/staff/reports/weekly?week={WEEK}&format=xlsx", headers=h)
    sheet = load_workbook(io.BytesIO(x.data))["当前超期在办"]
    assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == order
    # A department counts its own.
    other = staff_headers(make_staff(role="dept", department="税务所"))
    mine = client.get(f"/api/v1/staff/reports/weekly?week={WEEK}", headers=other).get_json()
    assert mine["overdue"] == [] and mine["overdue_total"] == 0


def test_a_short_overdue_list_is_given_whole(client, make_staff, make_user, staff_headers, db):
    order = _overdue_appeals(db, make_user, 3)
    r = client.get(f"/api/v1/staff/reports/weekly?week={WEEK}",
                   headers=staff_headers(make_staff(role="staff"))).get_json()
    assert [a["number"] for a in r["overdue"]] == order and r["overdue_total"] == 3


def test_stored_weekly_json_lists_the_most_overdue_fifty_and_counts_all(client, make_staff, make_user,
                                                                        staff_headers, db):
    # The stored report's JSON promises the live report's fields: the same cap and count, from what was stored.
    order = _overdue_appeals(db, make_user, 60)
    db.execute(update(Appeal).where(Appeal.number.in_(order[-5:])).values(department="税务所", given_to="税务所"))
    db.commit()
    with session_scope() as s:
        reports.prepare_weekly(s, WEEK, now=AFTER, via="tick")
    h = staff_headers(make_staff(role="staff"))
    r = client.get(f"/api/v1/staff/reports/weekly/stored/{WEEK}", headers=h).get_json()
    assert KEYS_BEFORE <= set(r)
    assert [a["number"] for a in r["overdue"]] == order[:SHOWN] and r["overdue_total"] == 60
    x = client.get(f"/api/v1/staff/reports/weekly/stored/{WEEK}?format=xlsx", headers=h)
    assert len(list(load_workbook(io.BytesIO(x.data))["当前超期在办"].iter_rows(min_row=2))) == 60
    dept = staff_headers(make_staff(role="dept", department="税务所"))
    mine = client.get(f"/api/v1/staff/reports/weekly/stored/{WEEK}", headers=dept).get_json()
    assert [a["number"] for a in mine["overdue"]] == order[-5:] and mine["overdue_total"] == 5


def test_the_cap_and_the_count_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "overdue_total" in json.dumps(paths["/api/v1/staff/reports/weekly"]["get"]["responses"])


def test_rows_dates_are_shanghai_time(w):
    # The rows read as columns still show Beijing time, as the objects' did.
    a = w.submit(now=sh(2025, 10, 26, 23, 30), content="周日深夜提交的诉求")
    with session_scope() as s:
        r = reports.weekly(s, WEEK, now=AFTER)
    row = next(x for x in r["appeals"] if x["content"] == "周日深夜提交的诉求")
    assert row["submitted_at"] == "2025-10-26 23:30"
    assert row["due_at"] == w.get(a).due_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M")
