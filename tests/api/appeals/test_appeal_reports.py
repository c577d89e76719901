"""Metrics, weekly report (JSON/XLSX, Asia/Shanghai ISO weeks) and the 企业问题清单."""

from __future__ import annotations

import io
from datetime import datetime

from openpyxl import load_workbook

from wxapp_backend.appeals import metrics, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.reports import parse_week
from wxapp_backend.db import session_scope


def sh(*a):
    return datetime(*a, tzinfo=TZ)


def _seed_week(world):
    """Four appeals filed in 2025-W40 (09-29 .. 10-05 Shanghai), moved through the workflow with fixed times."""
    actor = services.Actor("staff", world.admin.id, role="admin", name="admin")
    ids = []
    with session_scope() as s:
        for i, text in enumerate(["增值税发票开不出来", "税控盘坏了无法开票", "员工社保断缴", "园区停车位太少"]):
            a, _ = services.submit_appeal(s, world.user.id, services.Intake(
                content=text, contact_name="张三", contact_phone="13800138000"), now=sh(2025, 9, 29, 10 + i, 0))
            ids.append(a.id)
    t = sh(2025, 9, 29, 15, 0)
    with session_scope() as s:
        services.perform(s, actor, ids[0], "accept", {}, now=t)
        services.perform(s, actor, ids[0], "resolve", {"resolution": "已处理"}, now=sh(2025, 9, 30, 10, 0))
        services.perform(s, actor, ids[1], "accept", {}, now=t)
        services.perform(s, actor, ids[1], "assign", {"department": "税务所"}, now=t)
        services.perform(s, actor, ids[1], "return", {"reason": "非本所职责"}, now=t)
        services.perform(s, actor, ids[2], "accept", {}, now=sh(2025, 10, 10, 10, 0))  # late response
        services.perform(s, actor, ids[3], "reject", {"reason": "重复"}, now=t)
    with session_scope() as s:
        services.rate(s, world.user.id, ids[0], resolved=True, satisfaction=5, now=sh(2025, 10, 1, 9, 0))
    return ids


def test_metric_definitions(world, app_ctx):
    _seed_week(world)
    _, start, end = parse_week("2025-W40")
    assert start == sh(2025, 9, 29, 0, 0) and end == sh(2025, 10, 6, 0, 0)
    with session_scope() as s:
        m = metrics.compute(s, start, end)
    assert m.submitted == 4
    # response: 4 submitted (rejected counts: someone responded) -> 3 of 4 in time
    assert (m.response.numerator, m.response.denominator) == (3, 4)
    assert (m.on_time.numerator, m.on_time.denominator) == (1, 1)
    # resolution: rejected is out of the denominator; 1 of 3 resolved
    assert (m.resolution.numerator, m.resolution.denominator) == (1, 3)
    assert (m.satisfaction.numerator, m.satisfaction.denominator) == (1, 1)
    assert m.returns_by_department == {"税务所": 1}
    assert m.as_dict()["resolution"]["target"] == 0.9


def test_weekly_report_json_and_xlsx(client, world):
    _seed_week(world)
    resp = client.get("/api/v1/staff/reports/weekly?week=2025-W40", headers=world.ah)
    body = resp.get_json()
    assert resp.status_code == 200 and body["week"] == "2025-W40" and body["totals"]["submitted"] == 4
    assert body["metrics"]["resolution"]["denominator"] == 3
    assert client.get("/api/v1/staff/reports/weekly?week=2025-W41", headers=world.ah).get_json()["totals"][
        "submitted"] == 0
    x = client.get("/api/v1/staff/reports/weekly?week=2025-W40&format=xlsx", headers=world.ah)
    assert x.status_code == 200 and "spreadsheetml" in x.mimetype
    wb = load_workbook(io.BytesIO(x.data))
    assert wb.sheetnames[:2] == ["概览", "本周诉求"]
    assert wb["本周诉求"].max_row == 5
    assert client.get("/api/v1/staff/reports/weekly?week=2025-40", headers=world.ah).status_code == 422
    assert client.get("/api/v1/staff/reports/weekly?week=2025-W54", headers=world.ah).status_code == 422
    assert client.get("/api/v1/staff/reports/weekly", headers=world.uh).status_code == 401


def test_week_boundaries_are_shanghai_time(world, app_ctx):
    with session_scope() as s:
        # Sunday 2025-10-05 23:30 Shanghai is 15:30 UTC: still W40
        services.submit_appeal(s, world.user.id, services.Intake(content="增值税发票开不出来", contact_name="张三",
                                                                 contact_phone="13800138000"),
                               now=sh(2025, 10, 5, 23, 30))
        from wxapp_backend.appeals import reports

        assert reports.weekly(s, "2025-W40")["totals"]["submitted"] == 1
        assert reports.weekly(s, "2025-W41")["totals"]["submitted"] == 0


def test_enterprise_issue_list_and_dept_scope(client, world):
    _seed_week(world)
    body = client.get("/api/v1/staff/reports/enterprise-issues", headers=world.ah).get_json()
    assert body["enterprises"][0]["enterprise"] == world.enterprise.name
    assert body["enterprises"][0]["total"] == 4
    x = client.get(f"/api/v1/staff/reports/enterprise-issues?enterprise_id={world.enterprise.id}&format=xlsx",
                   headers=world.ah)
    assert x.data[:2] == b"PK"
    tax = client.get("/api/v1/staff/reports/weekly?week=2025-W40", headers=world.th).get_json()
    # only the appeal given to 税务所 (交办): the other one the rules routed there the centre handled itself
    assert tax["totals"]["submitted"] == 1


def test_metrics_endpoint(client, world):
    _seed_week(world)
    resp = client.get("/api/v1/staff/appeals/metrics?from=2025-09-29T00:00:00%2B08:00&to=2025-10-06T00:00:00%2B08:00",
                      headers=world.ah)
    assert resp.status_code == 200 and resp.get_json()["submitted"] == 4
    assert client.get("/api/v1/staff/appeals/metrics", headers=world.ah).status_code == 422
