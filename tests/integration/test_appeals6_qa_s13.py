"""Appeals QA (pass 13, appeals6): a department's view is what was given out to it.

- a department account sees, counts and reports the appeals given to it (交办 / 改派 naming it) or holding a 会办
  task for it — not those its department was only guessed for at submission (still 已提交 or 已受理);
- a 退单 the centre makes on an appeal nobody was given is answered “仍由营商服务中心办理”, not with the guess;
- the chat's 撤回 offers what the service lets the enterprise withdraw, merged (已合并) appeals too.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_appeals2_qa_s11 import (  # noqa: F401  (pass 11's fixture)
    _alerts,
    _link,
    at,
    w,
)
from wxapp_backend.appeals import metrics, reports, services
from wxapp_backend.appeals.models import AppealRating, AppealReturn, AppealTask
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope

MONDAY = at(2025, 11, 3, 10, 0)


def _dept(staff, name="部门"):
    return Actor("staff", staff.id, role=staff.role, name=name, department=staff.department)


def _four(w, make_staff):  # noqa: F811
    """Four appeals the rules route to 税务所: submitted, accepted, 交办 to it, and accepted with a 会办 task for it."""
    submitted = w.submit(MONDAY)
    accepted = w.submit(MONDAY, content="增值税发票开不出来了，税控盘又坏了，急")
    w.act(accepted, "accept", now=MONDAY)
    given = w.submit(MONDAY, content="发票领用遇到问题，税控设备报错")
    w.act(given, "accept", now=MONDAY)
    w.act(given, "assign", now=MONDAY, department="税务所")
    make_staff(role="dept", department="城运中心")
    helped = w.submit(MONDAY, content="增值税专票开具出错，需要税务所协助核实")
    w.act(helped, "accept", now=MONDAY)
    w.act(helped, "assign", now=MONDAY, department="城运中心")
    w.act(helped, "coordinate", now=MONDAY, tasks=[{"department": "税务所", "description": "核实开票"}])
    for appeal_id in (submitted, accepted, given):
        assert w.appeal(appeal_id).department == "税务所"
    return submitted, accepted, given, helped


# --- 1. the department's queue, detail, counts and figures ------------------------------------------------------

def test_a_department_sees_only_the_appeals_given_out_to_it(w, db, make_staff, client, staff_headers):  # noqa: F811
    submitted, accepted, given, helped = _four(w, make_staff)
    tax = _dept(w.tax, "税务")
    with session_scope() as s:
        assert {a.id for a in services.list_for_staff(s, tax).items} == {given, helped}
        # the centre (negative control) sees all four
        assert {a.id for a in services.list_for_staff(s, w.actor).items} >= {submitted, accepted, given, helped}
    resp = client.get("/api/v1/staff/appeals", headers=staff_headers(w.tax))
    assert resp.status_code == 200
    assert {a["id"] for a in resp.get_json()["items"]} == {given, helped}
    for hidden in (submitted, accepted):
        assert client.get(f"/api/v1/staff/appeals/{hidden}", headers=staff_headers(w.tax)).status_code == 404
    assert client.get(f"/api/v1/staff/appeals/{given}", headers=staff_headers(w.tax)).status_code == 200
    # Given out later, it joins the queue.
    w.act(accepted, "assign", now=MONDAY, department="税务所")
    with session_scope() as s:
        assert {a.id for a in services.list_for_staff(s, tax).items} == {given, helped, accepted}


def test_the_due_soon_filter_and_the_dashboard_count_only_what_was_given_out(w, db, make_staff, client,  # noqa: F811
                                                                            console_login):
    submitted, accepted, given, helped = _four(w, make_staff)
    due = w.appeal(given).due_at
    assert w.appeal(accepted).due_at == due  # both are near their deadline at `soon`
    soon = due - timedelta(minutes=30)
    tax = _dept(w.tax, "税务")
    with session_scope() as s:
        # (the 会办 task for it counts: the appeal is due soon for the task as well)
        assert {a.id for a in services.list_for_staff(s, tax, due_soon=True, now=soon).items} == {given, helped}
        assert {a.id for a in services.list_for_staff(s, w.actor, due_soon=True, now=soon).items} >= {given, accepted}
    console_login(w.tax)
    page = client.get("/console/appeals?open_only=true").get_data(as_text=True)
    numbers = {w.appeal(i).number: i for i in (submitted, accepted, given, helped)}
    assert {n for n in numbers if n in page} == {w.appeal(given).number, w.appeal(helped).number}
    assert client.get(f"/console/appeals/{accepted}").status_code == 404
    dash = client.get("/console/").get_data(as_text=True)
    card = re.search(r'在办诉求</span><span class="value">(\d+)<', dash)
    assert card and card.group(1) == "2", dash


def test_a_departments_figures_and_reports_count_only_what_was_given_out(w, db, make_staff):  # noqa: F811
    submitted, accepted, given, helped = _four(w, make_staff)
    tax = _dept(w.tax, "税务")
    start, end = MONDAY - timedelta(days=1), MONDAY + timedelta(days=1)
    with session_scope() as s:
        assert metrics.compute(s, start, end, tax, now=MONDAY).submitted == 1  # the one given to it
        assert metrics.compute(s, start, end, w.actor, now=MONDAY).submitted == 4  # the centre: all
        week = reports.weekly(s, "2025-W45", tax)
        issues = reports.enterprise_issues(s, None, tax)
        centre_week = reports.weekly(s, "2025-W45", w.actor)
    given_number = w.appeal(given).number
    assert {r["number"] for r in week["appeals"]} == {given_number}
    assert week["totals"]["open_now"] == 1 and week["by_department"] == {"税务所": 1}
    assert len(centre_week["appeals"]) == 4
    listed = re.findall(r"SQ\d{8}-\d{4}", repr(issues))
    assert set(listed) == {given_number}, issues


# --- 2. a 退单 on an appeal nobody was given -----------------------------------------------------------------------

def test_a_rejected_return_on_an_appeal_not_given_out_does_not_name_the_guessed_department(
        w, db, make_user, make_staff):  # noqa: F811
    admin_phone = make_user(nickname="管理员手机")
    _link(w.admin, admin_phone.id)
    second = make_staff(role="admin")
    other = Actor("staff", second.id, role="admin", name="另一位管理员")  # not the admin who asked
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)  # the admin accepts it and handles it; 税务所 is only the guess
    w.act(appeal_id, "return", now=MONDAY, reason="不属于本中心职责")
    ret_id = db.scalar(select(AppealReturn.id).where(AppealReturn.appeal_id == appeal_id))
    (asked,) = w.events(appeal_id, "return_requested")
    assert "税务所" not in asked[0], asked
    w.act(appeal_id, "decide_return", now=MONDAY, actor=other, return_id=ret_id, accept=False)
    (rejected,) = w.events(appeal_id, "return_rejected")
    assert "税务所" not in rejected[0] and "营商服务中心" in rejected[0], rejected
    (alert,) = _alerts(db, admin_phone.id)
    assert "税务所" not in alert.body and "营商服务中心" in alert.body, alert.body
    # Negative control: given to 税务所, its own 退单 turned down stays with 税务所.
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    w.act(appeal_id, "return", now=MONDAY, actor=_dept(w.tax, "税务"), reason="不归我们")
    ret_id = db.scalar(select(AppealReturn.id).where(AppealReturn.appeal_id == appeal_id,
                                                     AppealReturn.status == "pending"))
    w.act(appeal_id, "decide_return", now=MONDAY, return_id=ret_id, accept=False)
    assert "仍由税务所办理" in w.events(appeal_id, "return_rejected")[-1][0]


# --- 3. the chat's 撤回 list -----------------------------------------------------------------------------------------

def test_the_chats_withdraw_offers_a_merged_appeal(w, db):  # noqa: F811
    from handlers import appeal_followup

    master = w.submit(MONDAY)
    child = w.submit(MONDAY, content="税控盘坏了，发票开不出来，和上次一样")
    w.act(master, "accept", now=MONDAY)
    w.act(child, "merge", now=MONDAY, master_id=master)
    assert w.appeal(child).status == "duplicate"
    text = _withdraw_reply(appeal_followup, w.user.id)
    assert w.appeal(master).number in text and w.appeal(child).number in text, text
    # and withdrawn by the number the list gave, as the service allows
    ctx = _ctx(w.user.id, f"撤回 {w.appeal(child).number}")
    assert "已撤回" in appeal_followup.withdraw(ctx).text
    assert w.appeal(child).status == "withdrawn"


def _ctx(user_id, said):
    from types import SimpleNamespace

    from flask import current_app

    from handlers import appeal_followup

    # The list it shows is remembered for the next number (handlers/kb.offer_list): the Redis and the openid it needs.
    return SimpleNamespace(user_id=user_id, account="test", openid=f"o-{user_id}",
                           redis=current_app.extensions["wxapp"].redis, match=appeal_followup._WITHDRAW.match(said))


def _withdraw_reply(appeal_followup, user_id):
    return appeal_followup.withdraw(_ctx(user_id, "撤回诉求")).text


# --- 4. the rating of an appeal nobody was given ------------------------------------------------------------------

@pytest.mark.parametrize("given", [False, True])
def test_a_rating_is_credited_to_the_department_given_the_appeal_not_the_guess(w, db, given):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    if given:  # negative control: given to 税务所, its rating and its 整改 are 税务所's
        w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=1), resolution="已更换税控盘")
    with session_scope() as s:
        services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=1, comment="太慢了",
                      now=MONDAY + timedelta(hours=2))
    owner = "税务所" if given else "营商服务中心"
    assert db.scalar(select(AppealRating.department).where(AppealRating.appeal_id == appeal_id)) == owner
    assert db.scalar(select(AppealTask.department).where(AppealTask.appeal_id == appeal_id,
                                                         AppealTask.kind == "rectification")) == owner
    tax = _dept(w.tax, "税务")
    with session_scope() as s:
        m = metrics.compute(s, MONDAY - timedelta(days=1), MONDAY + timedelta(days=1), tax, now=MONDAY)
        assert m.satisfaction.denominator == (1 if given else 0)
        assert [a.id for a in services.list_for_staff(s, tax).items] == ([appeal_id] if given else [])
