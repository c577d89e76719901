"""Appeals QA (pass 11, second wave): what the enterprise and staff are told, and clocks that never stopped.

- the 办不成事 window's answer (its task done) reaches the enterprise;
- a merged appeal's time as 已合并 does not count against its own deadline once it is split off or released;
- 待补充材料 does not wait forever: a reminder to the enterprise, then the tick ends the wait;
- 超期 and 企业催办 reach the handling department's WeChat-linked accounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import Appeal, AppealEvent, AppealTask
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import InboxItem, Notification


def at(*a) -> datetime:
    return datetime(*a, tzinfo=TZ)


@pytest.fixture
def w(make_user, make_staff, make_building, make_grid, make_enterprise):
    grid = make_grid()
    building = make_building(grid_id=grid.id)
    enterprise = make_enterprise(building_id=building.id)
    user = make_user(enterprise_id=enterprise.id, binding_state="verified")
    other = make_user(nickname="李四")
    admin = make_staff(role="admin")
    window = make_staff(role="dept", department=services.ESCALATION_OWNER)
    tax = make_staff(role="dept", department="税务所")
    ns = SimpleNamespace(user=user, other=other, admin=admin, window=window, tax=tax,
                         actor=Actor("staff", admin.id, role="admin", name="管理员"),
                         window_actor=Actor("staff", window.id, role="dept", name="窗口", department=window.department))

    def submit(now, user_id=None, content="我们公司的增值税发票开不出来，税控盘坏了"):
        with session_scope() as s:
            appeal, _ = services.submit_appeal(s, user_id or user.id, services.Intake(
                content=content, contact_name="张三", contact_phone="13800138000"), now=now)
            return appeal.id

    def act(appeal_id, action, now=None, actor=None, **data):
        with session_scope() as s:
            return services.perform(s, actor or ns.actor, appeal_id, action, data, now=now).status

    def appeal(appeal_id) -> Appeal:
        with session_scope() as s:
            a = s.get(Appeal, appeal_id)
            s.expunge(a)
            return a

    def events(appeal_id, action):
        with session_scope() as s:
            return [(e.note, e.data) for e in s.scalars(select(AppealEvent).where(
                AppealEvent.appeal_id == appeal_id, AppealEvent.action == action).order_by(AppealEvent.id))]

    ns.submit, ns.act, ns.appeal, ns.events = submit, act, appeal, events
    return ns


# --- 1. the 办不成事 window's answer reaches the enterprise ---------------------------------------------

def test_the_enterprise_hears_the_escalation_windows_answer(w, db):
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    with session_scope() as s:
        services.escalate(s, w.actor, services.get_appeal(s, appeal_id, w.actor, lock=True), reason="跑了三次没办成",
                          now=monday)
        task_id = s.scalars(select(AppealTask.id).where(AppealTask.appeal_id == appeal_id,
                                                        AppealTask.kind == "escalation")).one()
    w.act(appeal_id, "complete_task", now=at(2025, 11, 4, 10, 0), actor=w.window_actor, task_id=task_id,
          result="已协调税务所上门更换税控盘。")
    number = w.appeal(appeal_id).number
    inbox = db.scalars(select(InboxItem).where(InboxItem.user_id == w.user.id)).all()
    answer = [i for i in inbox if "处理结果" in i.body]
    assert len(answer) == 1
    assert number in answer[0].body and "已协调税务所上门更换税控盘" in answer[0].body and "。。" not in answer[0].body
    assert "办不成事" in answer[0].title
    assert db.scalar(select(Notification).where(Notification.dedup_key == f"appeal:{appeal_id}:escalation_done:{task_id}"))
    assert any("办不成事" in (note or "") for note, _ in w.events(appeal_id, "notified")[-1:])


# --- 2. time spent 已合并 does not count against the appeal's own deadline ---------------------------------

def _merged_then_split(w, split_at, how="split"):
    monday = at(2025, 11, 3, 10, 0)
    master = w.submit(monday, content="新华大厦电梯坏了三天了一直没人修")
    child = w.submit(monday, user_id=w.other.id, content="新华大厦的电梯坏了好几天没人修理")
    w.act(master, "accept", now=monday)
    w.act(child, "accept", now=monday)
    due = w.appeal(child).due_at
    assert due.astimezone(TZ) == at(2025, 11, 6, 10, 0)  # 楼宇物业: 3 working days
    w.act(child, "merge", now=at(2025, 11, 4, 10, 0), master_id=master)  # 2 working days left
    if how == "split":
        w.act(child, "split", now=split_at)
    else:  # the master is rejected: its children are released
        w.act(master, "reject", now=split_at, reason="不属于本中心受理范围")
    return child


@pytest.mark.parametrize("how", ["split", "released"])
def test_a_deadline_that_passed_while_merged_is_not_overdue_at_the_split(w, how):
    split_at = at(2025, 11, 24, 10, 0)  # three weeks merged
    child = _merged_then_split(w, split_at, how)
    a = w.appeal(child)
    assert a.status == "accepted"
    assert a.due_at.astimezone(TZ) == at(2025, 11, 26, 10, 0)  # the 2 working days it had left, from the split
    jobs.tick(now=at(2025, 11, 24, 10, 5))  # (the master, overdue for weeks, is escalated: not the child)
    assert w.appeal(child).overdue is False
    assert not w.events(child, "overdue") and not w.events(child, "escalated")
    (note, data), = w.events(child, "deadline_recounted")
    assert "合并期间" in note and data["merged_minutes"] == 14 * 510
    jobs.tick(now=at(2025, 11, 26, 11, 0))
    assert w.appeal(child).overdue is True  # its own time still runs out


def test_an_appeal_overdue_when_merged_keeps_only_its_own_lateness(w):
    monday = at(2025, 11, 3, 10, 0)
    master = w.submit(monday, content="新华大厦电梯坏了三天了一直没人修")
    child = w.submit(monday, user_id=w.other.id, content="新华大厦的电梯坏了好几天没人修理")
    w.act(master, "accept", now=monday)
    w.act(child, "accept", now=monday)
    jobs.tick(now=at(2025, 11, 11, 10, 0))  # 3 working days late (due 11-06 10:00)
    assert w.appeal(child).overdue is True
    w.act(child, "merge", now=at(2025, 11, 11, 10, 0), master_id=master)
    w.act(child, "split", now=at(2025, 12, 1, 10, 0))
    # Still late by the 3 days it was late when merged: not 17 (auto-escalated at 5), not cleared either.
    assert w.appeal(child).due_at.astimezone(TZ) == at(2025, 11, 26, 10, 0)
    jobs.tick(now=at(2025, 12, 1, 10, 5))
    assert w.appeal(child).overdue is True and not w.appeal(child).escalated


# --- 3. 待补充材料 does not wait for ever -------------------------------------------------------------------

def test_an_unanswered_request_for_material_is_reminded_once_then_handled_on_what_there_is(w, db):
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    w.act(appeal_id, "start", now=monday)
    w.act(appeal_id, "request_info", now=at(2025, 11, 4, 10, 0), note="请提供税控盘的购买发票")
    number = w.appeal(appeal_id).number
    assert jobs.tick(now=at(2025, 11, 7, 9, 30))["info_reminded"] == 0  # 2.x working days
    assert jobs.tick(now=at(2025, 11, 7, 10, 0))["info_reminded"] == 1  # 3 working days
    assert jobs.tick(now=at(2025, 11, 10, 10, 0))["info_reminded"] == 0  # once
    reminders = db.scalars(select(InboxItem).where(InboxItem.user_id == w.user.id,
                                                   InboxItem.title.contains("还需补充材料"))).all()
    assert len(reminders) == 1
    assert number in reminders[0].body and "税控盘的购买发票" in reminders[0].body
    assert w.appeal(appeal_id).status == "pending_enterprise"
    assert jobs.tick(now=at(2025, 11, 18, 9, 59))["info_resumed"] == 0
    done = jobs.tick(now=at(2025, 11, 18, 10, 0))  # 10 working days
    assert done["info_resumed"] == 1
    a = w.appeal(appeal_id)
    assert a.status == "in_progress" and a.info_request == "" and a.paused_at is None
    (note, data), = w.events(appeal_id, "info_timeout")
    assert "未补充材料" in note
    told = db.scalars(select(InboxItem).where(InboxItem.user_id == w.user.id,
                                              InboxItem.title.contains("按现有材料"))).all()
    assert len(told) == 1 and number in told[0].body and "继续办理" in told[0].body
    assert jobs.tick(now=at(2025, 11, 19, 10, 0))["info_resumed"] == 0
    # A new request starts a new wait with its own reminder.
    w.act(appeal_id, "request_info", now=at(2025, 11, 19, 10, 0), note="请提供营业执照")
    assert jobs.tick(now=at(2025, 11, 24, 10, 0))["info_reminded"] == 1


# --- 4. 超期 and 企业催办 reach the handling department's WeChat-linked staff --------------------------------

def _link(staff, user_id):
    from wxapp_backend.notices.broadcast import set_test_recipient

    with session_scope() as s:
        set_test_recipient(s, Actor("staff", staff.id, staff.role, staff.department, staff.username), user_id)


def _alerts(db, user_id):
    db.expire_all()
    return db.scalars(select(InboxItem).where(InboxItem.user_id == user_id, InboxItem.kind == "appeal_staff_alert")
                      .order_by(InboxItem.id)).all()


def test_overdue_and_pressed_reach_the_departments_linked_staff_once(w, db, make_user, make_staff):
    tax_phone, other_phone = make_user(nickname="税务所小王"), make_user(nickname="城运小李")
    make_staff(role="dept", department="税务所")  # not linked: nobody to tell
    env = make_staff(role="dept", department="城运中心")
    _link(w.tax, tax_phone.id)
    _link(env, other_phone.id)  # another department's: not told
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    w.act(appeal_id, "assign", now=monday, department="税务所")
    number = w.appeal(appeal_id).number
    due = w.appeal(appeal_id).due_at
    (assigned,) = _alerts(db, tax_phone.id)  # the 交办 itself (pass 12): the department hears it is theirs
    assert "交办" in assigned.title
    jobs.tick(now=due + timedelta(minutes=1))
    assert w.appeal(appeal_id).overdue is True
    (_, alert) = _alerts(db, tax_phone.id)
    assert number in alert.title and "超过办结期限" in alert.body and alert.page == "pages/me/index"
    assert _alerts(db, other_phone.id) == []
    jobs.tick(now=due.astimezone(TZ).replace(hour=16))
    assert len(_alerts(db, tax_phone.id)) == 2  # once per event
    with session_scope() as s:
        assert services.press_own(s, w.user.id, appeal_id) is True
    with session_scope() as s:
        assert services.press_own(s, w.user.id, appeal_id) is False  # pressed again today: nothing new
    alerts = _alerts(db, tax_phone.id)
    assert len(alerts) == 3 and "企业催办" in alerts[2].body and number in alerts[2].body
    assert _alerts(db, other_phone.id) == []
    assert [d["alert"] for _, d in w.events(appeal_id, "staff_notified")] == ["assigned", "overdue", "pressed"]


def test_a_failing_staff_alert_never_fails_the_tick(w, db, make_user, monkeypatch):
    from wxapp_backend.notices import services as notice_services

    phone = make_user(nickname="税务所小王")
    _link(w.tax, phone.id)
    monday = at(2025, 11, 3, 10, 0)
    appeal_id = w.submit(monday)
    w.act(appeal_id, "accept", now=monday)
    w.act(appeal_id, "assign", now=monday, department="税务所")

    def broken(*a, **kw):
        raise RuntimeError("WeChat down")

    assert len(_alerts(db, phone.id)) == 1  # the 交办 (pass 12), before WeChat broke
    monkeypatch.setattr(notice_services, "notify", broken)
    assert jobs.tick(now=at(2025, 11, 20, 10, 0))["overdue"] == 1
    assert w.appeal(appeal_id).overdue is True and w.events(appeal_id, "overdue")
    assert len(_alerts(db, phone.id)) == 1
