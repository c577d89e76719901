"""Appeals QA (pass 17, appealsdept): the closed loop as a department account sees it.

- a holiday staff enter moves the deadline of a 差评整改 task (and of a 办不成事 still owed) on an appeal that is no
  longer open: the department was flagged 整改超期 on the day the holiday took away.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (pass 11's fixture)
from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import AppealTask
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope


def _dept(staff):
    return Actor("staff", staff.id, role=staff.role, name="税务所张科", department=staff.department)


def _resolved_by_tax(w, monday):
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    w.act(appeal_id, "assign", now=monday, department="税务所")
    w.act(appeal_id, "resolve", now=monday, actor=_dept(w.tax), resolution="已上门更换税控盘")
    return appeal_id


# --- 1. a holiday entered moves the deadlines still owed on a closed appeal -------------------------------

def test_a_holiday_entered_moves_the_rectification_and_escalation_deadlines_of_a_closed_appeal(w):  # noqa: F811
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = _resolved_by_tax(w, monday)
    with session_scope() as s:  # the centre sends it to the 办不成事 window (3 working days: Friday 9:00)
        services.escalate(s, w.actor, services.get_appeal(s, appeal_id, w.actor, lock=True), reason="企业电话投诉",
                          now=at(2025, 11, 4, 9, 0))
    with session_scope() as s:
        # 已解决 but 1 star: the appeal closes, 税务所 owes a 整改 within 5 working days (Tuesday 11 November).
        services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=1, comment="态度很差",
                      now=at(2025, 11, 4, 10, 0))
    assert w.appeal(appeal_id).status == "closed"
    with session_scope() as s:  # staff enter Thursday 6 November as a day off (临时休息日)
        services.set_holiday(s, w.actor, date(2025, 11, 6), False, "临时休息日", now=at(2025, 11, 4, 11, 0))
    with session_scope() as s:
        dues = {t.kind: t.due_at.astimezone(TZ) for t in s.scalars(select(AppealTask).where(
            AppealTask.appeal_id == appeal_id))}
    assert dues["rectification"] == at(2025, 11, 12, 10, 0)
    assert dues["escalation"] == at(2025, 11, 7, 17, 30)  # was Friday 9:00: now its close (= Monday 9:00)
    assert w.appeal(appeal_id).escalation_due_at.astimezone(TZ) == at(2025, 11, 7, 17, 30)
    assert w.appeal(appeal_id).due_at.astimezone(TZ) == at(2025, 11, 10, 10, 0)  # the closed appeal's own: kept
    jobs.tick(now=at(2025, 11, 11, 10, 5))  # the day the 整改 was due before the holiday
    assert not w.events(appeal_id, "rectification_overdue")
    assert w.events(appeal_id, "escalation_overdue")  # (Monday's 办不成事 answer is late by now)
    (note, _), = w.events(appeal_id, "deadline_recounted")
    assert "2025-11-06" in note


# --- 2. a 延期 the old department asked for does not outlive the 改派 -------------------------------------

def test_a_pending_extension_of_the_returning_department_ends_with_the_reroute(w, make_staff):  # noqa: F811
    market = make_staff(role="dept", department="市场监管所")
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    w.act(appeal_id, "assign", now=monday, department="税务所")
    w.act(appeal_id, "request_extension", now=at(2025, 11, 4, 10, 0), actor=_dept(w.tax), working_days=3,
          reason="需等待上级税务局答复")
    w.act(appeal_id, "return", now=at(2025, 11, 4, 11, 0), actor=_dept(w.tax), reason="属于市场监管事项")
    with session_scope() as s:
        ret_id = s.scalar(select(services.AppealReturn.id).where(services.AppealReturn.appeal_id == appeal_id))
    w.act(appeal_id, "decide_return", now=at(2025, 11, 4, 14, 0), return_id=ret_id, accept=True,
          department="市场监管所")
    with session_scope() as s:
        ext = s.scalars(select(services.AppealExtension).where(services.AppealExtension.appeal_id == appeal_id)).one()
        assert ext.status == "rejected" and ext.decided_by == "system"
        pending = s.scalar(select(services.Appeal.id).where(services.Appeal.id == appeal_id,
                                                            services.requests_pending()))
    assert pending is None  # not left in the centre's 待审核 card for someone to grant to 市场监管所
    assert any("延期 3 个工作日的申请" in note and "市场监管所" in note for note, _ in w.events(appeal_id, "noted"))
    # 市场监管所, now handling it, asks for its own time (it was told “已有待审批的延期申请”).
    mkt = Actor("staff", market.id, role="dept", name="市场所李科", department="市场监管所")
    w.act(appeal_id, "request_extension", now=at(2025, 11, 4, 15, 0), actor=mkt, working_days=2, reason="需现场核查")
    with session_scope() as s:
        assert s.scalar(select(services.AppealExtension.status).where(
            services.AppealExtension.appeal_id == appeal_id).order_by(services.AppealExtension.id.desc()).limit(1)) \
            == "pending"


# --- 3. the 办不成事 window is told its task's result goes to the enterprise --------------------------------

def test_the_escalation_task_form_says_its_result_is_sent_to_the_enterprise(w, client, console_login):  # noqa: F811
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    w.act(appeal_id, "assign", now=monday, department="税务所")
    w.act(appeal_id, "coordinate", now=monday, actor=_dept(w.tax),
          tasks=[{"department": services.ESCALATION_OWNER, "description": "请协助协调", "working_days": 2}])
    with session_scope() as s:
        services.escalate(s, w.actor, services.get_appeal(s, appeal_id, w.actor, lock=True), reason="跑了三次没办成",
                          now=monday)
    console_login(w.window)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    rows = page.split('id="task-table"', 1)[1].split("</table>", 1)[0].split("<tr>")
    escalation = next(r for r in rows if "办不成事：跑了三次没办成" in r)
    coordination = next(r for r in rows if "请协助协调" in r)
    # The window's answer is sent to the enterprise word for word (“处理结果：…”): the form says so, and where
    # internal remarks go; a 会办 result stays with staff and its form does not say it is sent.
    assert "将发送给企业" in escalation and "备注" in escalation
    assert "将发送给企业" not in coordination and 'name="result"' in coordination
