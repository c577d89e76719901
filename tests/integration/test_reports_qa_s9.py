"""Reports QA: appeal metrics and the weekly report checked by hand against small scenarios."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from tests.integration.test_appeals_qa_s8 import MONDAY, sh, w  # noqa: F401 (w is a fixture)
from wxapp_backend.appeals import reports, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import Appeal, AppealReport, AppealReturn, AppealTask
from wxapp_backend.db import session_scope, utcnow

# MONDAY is 2025-W43; `w` is the appeals pass's world (a user of a verified enterprise, an admin, helpers).


def _weekly(week="2025-W43", actor=None):
    with session_scope() as s:
        return reports.weekly(s, week, actor)


def _rate(report, key):
    m = report["metrics"][key]
    return m["numerator"], m["denominator"]


# --- merged children follow their master: not counted a second time in the resolution rate ---------------

def test_resolution_rate_does_not_count_a_merged_child_resolved_with_its_master(w):
    master = w.submit()
    child = w.submit(user_id=w.other.id, content="税控盘坏了，开不了增值税发票")
    w.submit(content="园区停车位太少，员工停车难")  # still open
    w.act(master, "accept")
    w.act(child, "merge", master_id=master)
    assert _rate(_weekly(), "resolution") == (0, 2)  # the merged child is out of the denominator
    w.act(master, "resolve", now=sh(2025, 10, 21, 10, 0), resolution="已修好")
    assert w.get(child).status == "resolved" and w.get(child).master_id == master
    # By hand: one problem resolved (the master, for both enterprises) of two taken on; the child that
    # followed its master stays out, as it was while merged and as it is in the on-time rate.
    assert _rate(_weekly(), "resolution") == (1, 2)
    assert _rate(_weekly(), "on_time") == (1, 1)


# --- 企业问题清单: one group per enterprise, never joined with text anyone typed ------------------------

def test_issue_list_keeps_a_typed_company_name_apart_from_the_verified_enterprise(w, make_enterprise):
    w.submit()  # a verified contact of w.enterprise: linked to it
    w.submit(user_id=w.other.id, content="园区停车位太少，员工停车难", enterprise_name=w.enterprise.name)
    namesake = make_enterprise(name=w.enterprise.name)  # another company of the same name (names are not unique)
    namesake_user = w.make_user(enterprise_id=namesake.id, binding_state="verified")
    w.submit(user_id=namesake_user.id, content="员工社保断缴，需要补缴")
    with session_scope() as s:
        groups = reports.enterprise_issues(s)["enterprises"]
        only_ours = reports.enterprise_issues(s, w.enterprise.id)["enterprises"]
    # By hand: the enterprise's own list (what ?enterprise_id= gives) holds only its verified contact's appeal,
    # and the full list shows that same group, not one that also holds a stranger's text or a namesake's appeal.
    assert [g["total"] for g in only_ours] == [1]
    assert sorted(g["total"] for g in groups) == [1, 1, 1]
    ours = [g for g in groups if g["enterprise_id"] == w.enterprise.id]
    assert len(ours) == 1 and ours[0]["total"] == 1 and ours[0]["appeals"] == only_ours[0]["appeals"]
    typed = [g for g in groups if g["enterprise_id"] is None]
    assert len(typed) == 1 and typed[0]["enterprise"] != w.enterprise.name  # marked as typed, not verified


# --- XLSX exports: text from the chat may hold control characters Excel cannot store ----------------------

def test_report_exports_survive_control_characters_from_the_chat(w, client, make_staff, staff_headers):
    # A mini-program JSON message keeps a backspace or an escape that a phone keyboard sent; the chat intake
    # files it as it came (the API's own fields strip them, the chat does not).
    w.submit(content="发票\x08开不出来\x1b[0m，税控盘坏了", channel="chat", enterprise_name="测试\x0b公司")
    h = staff_headers(make_staff(role="admin"))
    x = client.get("/api/v1/staff/reports/weekly?week=2025-W43&format=xlsx", headers=h)
    assert x.status_code == 200
    row = [c.value for c in load_workbook(io.BytesIO(x.data))["本周诉求"][2]]
    assert "发票开不出来[0m，税控盘坏了" in row
    x = client.get("/api/v1/staff/reports/enterprise-issues?format=xlsx", headers=h)
    assert x.status_code == 200
    assert "测试公司（未核实）" in [c.value for c in load_workbook(io.BytesIO(x.data))["企业问题清单"][2]]


# --- flask appeals weekly: a mistyped week is told in Chinese, not a traceback ---------------------------

@pytest.mark.parametrize("week", ["2025-40", "2025-W54", "0001-W01"])
def test_weekly_command_refuses_a_bad_week_cleanly(app, db, week):
    result = app.test_cli_runner().invoke(args=["appeals", "weekly", "--week", week])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "周" in result.output and "Traceback" not in result.output
    with session_scope() as s:
        assert s.scalar(select(func.count(AppealReport.id))) == 0


def test_weekly_command_stores_a_good_week_once(app, db):
    runner = app.test_cli_runner()
    assert "2025-W43 周报已生成" in runner.invoke(args=["appeals", "weekly", "--week", "2025-W43"]).output
    assert "2025-W43 周报已存在" in runner.invoke(args=["appeals", "weekly", "--week", "2025-W43"]).output


# --- 满意率 by department: a merged child's rating belongs to the department that resolved its master -------

def test_a_merged_childs_rating_counts_for_the_department_that_resolved_the_master(w, make_staff, staff_headers,
                                                                                   client):
    master = w.submit()
    child = w.submit(user_id=w.other.id, content="税控盘坏了，开不了增值税发票")
    assert w.get(master).department == w.get(child).department == "税务所"
    w.act(master, "accept")
    w.act(child, "merge", master_id=master)
    w.act(master, "return", reason="不是税务问题")
    with session_scope() as s:
        return_id = s.scalar(select(AppealReturn.id))
    w.act(master, "decide_return", return_id=return_id, accept=True, department="城运中心")
    w.act(master, "resolve", now=sh(2025, 10, 21, 10, 0), resolution="已协调处理")
    with session_scope() as s:
        services.rate(s, w.other.id, child, resolved=True, satisfaction=1, comment="太慢",
                      now=sh(2025, 10, 21, 11, 0))
    # By hand: 城运中心 did the work the child's enterprise rated; 税务所 had handed it back.
    tax = client.get("/api/v1/staff/reports/weekly?week=2025-W43",
                     headers=staff_headers(make_staff(role="dept", department="税务所"))).get_json()
    city = client.get("/api/v1/staff/reports/weekly?week=2025-W43",
                      headers=staff_headers(make_staff(role="dept", department="城运中心"))).get_json()
    assert _rate(tax, "satisfaction") == (0, 0)
    assert _rate(city, "satisfaction") == (0, 1)
    with session_scope() as s:
        task = s.scalar(select(AppealTask).where(AppealTask.appeal_id == child, AppealTask.kind == "rectification"))
        assert task.department == "城运中心"  # the 整改 goes to who handled it, as for any other appeal


# --- a rate just under the 90 % target is not shown as 90 % -------------------------------------------------

def test_a_resolution_rate_under_target_is_not_shown_as_meeting_it(w, client, make_staff, console_login):
    # 26 of 29 resolved = 89.66 %: under the ≥ 90 % target (the JSON says meets_target false); the console
    # rounded it to "90%" next to "目标 ≥ 90%".
    submitted = utcnow() - timedelta(days=2)
    with session_scope() as s:
        for i in range(29):
            s.add(Appeal(number=f"SQ-T-{i:04d}", user_id=w.user.id, content="测试诉求内容", contact_name="张三",
                         contact_phone="13800138000", status="closed" if i < 26 else "in_progress",
                         submitted_at=submitted, response_due_at=submitted + timedelta(days=1),
                         first_response_at=submitted + timedelta(hours=1), due_at=submitted + timedelta(days=7)))
    week = submitted.astimezone(TZ).isocalendar()
    label = f"{week[0]}-W{week[1]:02d}"
    assert _weekly(label)["metrics"]["resolution"]["meets_target"] is False
    console_login(make_staff(role="admin"))
    card = client.get("/console/").get_data(as_text=True).split("诉求解决率（近 30 天）")[1][:200]
    assert "89%" in card and "90%</" not in card
    page = client.get(f"/console/appeals/report?week={label}").get_data(as_text=True)
    rates = page.split('id="report-rates"')[1]
    resolution = rates.split("诉求解决率")[1][:120]
    assert "89%" in resolution and ">90%<" not in resolution


# --- metrics?from=&to=: a period that ends before it starts is refused, not answered with empty rates ---------

def test_metrics_refuse_a_period_that_ends_before_it_starts(w, client, make_staff, staff_headers):
    w.submit()
    h = staff_headers(make_staff(role="admin"))
    resp = client.get("/api/v1/staff/appeals/metrics?from=2025-10-27T00:00:00&to=2025-10-20T00:00:00", headers=h)
    assert resp.status_code == 422
    body = resp.get_json()
    assert "to" in body["fields"] and "开始时间" in body["message"]
    ok = client.get("/api/v1/staff/appeals/metrics?from=2025-10-20T00:00:00&to=2025-10-27T00:00:00", headers=h)
    assert ok.status_code == 200 and ok.get_json()["submitted"] == 1
