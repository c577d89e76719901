"""Appeals QA (pass 16, appeals12): the closed loop as staff run it, across the working-day calendar.

- an appeal filed at 23:59:59 Shanghai time on the Friday before the 2026 Spring Festival is numbered on that day
  and its clocks start on the 调休 Saturday (a working day), skip the festival and end on the right day;
- a department account acting from a page opened before the appeal was given to another department is told the
  appeal went elsewhere (still a 404, nothing changed), not “没有找到这条诉求” as if it never existed.
"""

from __future__ import annotations

from datetime import timedelta

from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (pass 11's fixture)
from wxapp_backend.appeals import services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.errors import NotFound


def _dept(staff):
    return Actor("staff", staff.id, role=staff.role, name="部门", department=staff.department)


# --- 1. filed at the last second of the last working day before the Spring Festival ------------------------

def test_an_appeal_filed_at_midnight_before_the_spring_festival_counts_from_the_tiaoxiu_saturday(w, db):  # noqa: F811
    eve = at(2026, 2, 13, 23, 59, 59)  # Friday; 2026-02-14 (Saturday) is a 调休 working day, 02-15..23 off
    appeal_id = w.submit(eve)
    a = w.appeal(appeal_id)
    assert a.number.startswith("SQ20260213-")  # the Shanghai day, not UTC's
    assert a.response_due_at.astimezone(TZ) == at(2026, 2, 14, 17, 30)  # 受理 on the 调休 Saturday
    # 税务: 5 working days — the Saturday, then 24, 25, 26, 27 February after the festival.
    assert a.due_at.astimezone(TZ) == at(2026, 2, 27, 17, 30)
    # Accepted on the Saturday and asked for material at 17:00: 30 minutes of that day plus 4 days are left; the
    # supplement before 9:00 on the first day after the festival resumes the clock at 9:00, and the 30 minutes
    # fall on Saturday 28 February, the festival's second 调休 working day.
    w.act(appeal_id, "accept", now=at(2026, 2, 14, 10, 0))
    w.act(appeal_id, "request_info", now=at(2026, 2, 14, 17, 0), note="请提供税控盘编号")
    with session_scope() as s:
        services.supplement(s, w.user.id, appeal_id, "编号 661234567890", now=at(2026, 2, 24, 8, 0))
    a = w.appeal(appeal_id)
    assert a.due_at.astimezone(TZ) == at(2026, 2, 28, 9, 30)  # the wait (the festival with it) did not count
    with session_scope() as s:
        notes = [e.note for e in services.timeline(s, services.get_appeal(s, appeal_id, w.actor), public_only=False)]
    assert all(n for n in notes)


# --- 2. a department acting from a page opened before the appeal went to another department ----------------

def test_a_department_acting_on_an_appeal_given_to_another_is_told_it_went_elsewhere(w, db, make_staff, client,  # noqa: F811
                                                                                     console_login, staff_headers):
    make_staff(role="dept", department="市场监管所")
    stranger = make_staff(role="dept", department="人社所")
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    w.act(appeal_id, "assign", now=monday, department="税务所")
    stale = w.appeal(appeal_id).version  # 税务所 opens the page
    w.act(appeal_id, "assign", now=monday + timedelta(hours=1), department="市场监管所")  # the centre re-routes it
    after = w.appeal(appeal_id)
    token = console_login(w.tax)
    resp = client.post(f"/console/appeals/{appeal_id}/action",
                       data={"action": "resolve", "resolution": "已上门更换税控盘", "version": stale, "csrf_token": token})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 404
    assert "已交办至其他部门" in page and "没有找到这条诉求" not in page
    assert "市场监管所" not in page  # who has it now is the centre's business
    api = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=staff_headers(w.tax),
                      json={"action": "start", "version": stale})
    assert api.status_code == 404 and api.get_json()["error"] == "not_found"
    assert "已交办至其他部门" in api.get_json()["message"]
    # Nothing changed, and a department that never had it still learns nothing of it.
    a = w.appeal(appeal_id)
    assert (a.status, a.version, a.department) == (after.status, after.version, "市场监管所")
    with session_scope() as s:
        try:
            services.perform(s, _dept(stranger), appeal_id, "start", {})
        except NotFound as exc:
            assert exc.message == "没有找到这条诉求。"
        else:
            raise AssertionError("a stranger department acted")
