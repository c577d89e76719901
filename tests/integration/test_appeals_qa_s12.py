"""Appeals QA (pass 12): the staff side — alerts to the people handling an appeal, deadlines, the console's queue.

- 临期 (less than one working day left) reaches the handling department's WeChat-linked staff and the appeal's
  handler, once per deadline: a second tick, a tick that dies half-way and is run again, a 延期 (a new deadline);
- an alert with nobody linked to receive it is said on the timeline (the console shows it), not silently dropped;
- the console's 超期 / 临期 filters.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_appeals2_qa_s11 import (  # noqa: F401  (the last pass's fixture)
    _alerts,
    _link,
    at,
    w,
)
from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import AppealExtension
from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope, utcnow

MONDAY = at(2025, 11, 3, 10, 0)


def _assigned(world, department="税务所", now=MONDAY):
    appeal_id = world.submit(now)
    world.act(appeal_id, "accept", now=now)
    world.act(appeal_id, "assign", now=now, department=department)
    return appeal_id


# --- 1. 临期 reaches the handling staff, once per deadline ----------------------------------------------

def test_due_soon_alerts_the_departments_linked_staff_and_the_handler_once(w, db, make_user, make_staff):  # noqa: F811
    tax_phone, admin_phone, other_phone = (make_user(nickname=n) for n in ("税务所小王", "管理员手机", "城运小李"))
    env = make_staff(role="dept", department="城运中心")
    _link(w.tax, tax_phone.id)
    _link(w.admin, admin_phone.id)  # the admin accepted it: its handler (承办人)
    _link(env, other_phone.id)  # another department's: not told
    appeal_id = _assigned(w)
    a = w.appeal(appeal_id)
    assert a.handler_id == w.admin.id
    done = jobs.tick(now=a.due_at - timedelta(minutes=30))
    assert done["warned"] == 1
    (assigned, alert) = _alerts(db, tax_phone.id)  # the 交办 told 税务所 first (pass 12, test_appeals4_qa_s12)
    assert "交办" in assigned.title
    local = a.due_at.astimezone(TZ)
    assert a.number in alert.title and "临期" in alert.title
    assert "不足 1 个工作日" in alert.body and f"{local.month}月{local.day}日 {local:%H:%M}" in alert.body
    assert len(_alerts(db, admin_phone.id)) == 1
    assert _alerts(db, other_phone.id) == []
    # The tick runs every 5 minutes: nothing more for the same deadline.
    jobs.tick(now=a.due_at - timedelta(minutes=25))
    jobs.tick(now=a.due_at - timedelta(minutes=20))
    assert len(_alerts(db, tax_phone.id)) == 2 and len(_alerts(db, admin_phone.id)) == 1
    (_, told) = w.events(appeal_id, "staff_notified")
    assert told[1]["alert"] == "due_soon" and "2 人" in told[0]
    assert db.scalar(select(AuditLog.id).where(AuditLog.action == "appeal.staff_notified")) is not None


def test_a_tick_that_dies_after_the_alert_leaves_nothing_and_the_next_one_alerts_once(w, db, make_user,  # noqa: F811
                                                                                        monkeypatch):
    phone = make_user(nickname="税务所小王")
    _link(w.tax, phone.id)
    appeal_id = _assigned(w)
    due = w.appeal(appeal_id).due_at
    real = services.notify_department

    def dies_after(*a, **kw):
        real(*a, **kw)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(services, "notify_department", dies_after)
    jobs.tick(now=due - timedelta(minutes=30))
    assert len(_alerts(db, phone.id)) == 1 and w.events(appeal_id, "due_soon") == []  # the 交办's only
    assert w.appeal(appeal_id).warned_due_at is None
    monkeypatch.setattr(services, "notify_department", real)
    assert jobs.tick(now=due - timedelta(minutes=25))["warned"] == 1
    jobs.tick(now=due - timedelta(minutes=20))
    assert len(_alerts(db, phone.id)) == 2 and len(w.events(appeal_id, "due_soon")) == 1


def test_an_extension_makes_a_new_deadline_and_its_own_alert(w, db, make_user):  # noqa: F811
    phone = make_user(nickname="税务所小王")
    _link(w.tax, phone.id)
    appeal_id = _assigned(w)
    due = w.appeal(appeal_id).due_at
    jobs.tick(now=due - timedelta(minutes=30))
    assert len(_alerts(db, phone.id)) == 2  # the 交办 (pass 12) and the 临期
    w.act(appeal_id, "request_extension", now=due - timedelta(minutes=20), working_days=2, reason="需现场核查")
    ext_id = db.scalar(select(AppealExtension.id).where(AppealExtension.appeal_id == appeal_id))
    w.act(appeal_id, "decide_extension", now=due - timedelta(minutes=10), extension_id=ext_id, accept=True)
    new_due = w.appeal(appeal_id).due_at
    assert new_due > due
    assert "延期已同意" in _alerts(db, phone.id)[2].title  # the decision is told too (pass 12)
    jobs.tick(now=due + timedelta(minutes=5))  # the old deadline passes: not overdue, and nothing said
    assert len(_alerts(db, phone.id)) == 3 and w.appeal(appeal_id).overdue is False
    jobs.tick(now=new_due - timedelta(minutes=30))
    jobs.tick(now=new_due - timedelta(minutes=25))
    alerts = _alerts(db, phone.id)
    assert len(alerts) == 4
    local = new_due.astimezone(TZ)
    assert f"{local.month}月{local.day}日 {local:%H:%M}" in alerts[3].body


# --- 2. nobody linked: said on the timeline, not dropped -----------------------------------------------

def test_an_alert_nobody_could_receive_is_on_the_timeline_and_the_console_page(w, db, client, console_login):  # noqa: F811
    appeal_id = _assigned(w)  # 税务所 has an account, not linked to any WeChat user; nor is the admin
    due = w.appeal(appeal_id).due_at
    jobs.tick(now=due - timedelta(minutes=30))
    jobs.tick(now=due - timedelta(minutes=25))
    (unreached,) = w.events(appeal_id, "staff_unreachable")
    assert unreached[1]["alert"] == "due_soon" and "未绑定微信" in unreached[0]
    jobs.tick(now=due + timedelta(minutes=5))
    assert [d["alert"] for _, d in w.events(appeal_id, "staff_unreachable")] == ["due_soon", "overdue"]
    console_login(w.admin)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert "未能提醒" in page and "未绑定微信" in page


# --- 3. the queue's 临期 filter ------------------------------------------------------------------------

def test_the_queue_filters_appeals_due_within_a_working_day(w, db, client, console_login, staff_headers):  # noqa: F811
    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.db import session_scope, utcnow

    now = utcnow()
    ids = {name: w.submit(now) for name in ("soon", "later", "paused", "late", "resolved")}
    for appeal_id in ids.values():
        w.act(appeal_id, "accept", now=now)
        w.act(appeal_id, "assign", now=now, department="税务所")
    w.act(ids["paused"], "request_info", now=now, note="请提供营业执照")
    w.act(ids["resolved"], "resolve", now=now, resolution="已更换税控盘")
    with session_scope() as s:
        cal = services.work_calendar(s)
        for name, minutes in (("soon", 60), ("later", 3 * 510), ("paused", 60), ("resolved", 60)):
            s.get(Appeal, ids[name]).due_at = cal.add_working_minutes(now, minutes)
        late = s.get(Appeal, ids["late"])
        late.due_at, late.overdue = now - timedelta(hours=1), True
    numbers = {name: w.appeal(i).number for name, i in ids.items()}
    console_login(w.admin)
    page = client.get("/console/appeals?due_soon=true").get_data(as_text=True)
    assert numbers["soon"] in page and "临期" in page
    assert not any(numbers[n] in page for n in ("later", "paused", "late", "resolved"))
    everything = client.get("/console/appeals").get_data(as_text=True)
    assert everything.count('class="badge warn">临期') == 1
    resp = client.get("/api/v1/staff/appeals?due_soon=true", headers=staff_headers(w.admin))
    assert resp.status_code == 200 and [a["number"] for a in resp.get_json()["items"]] == [numbers["soon"]]
    tax = client.get("/api/v1/staff/appeals?due_soon=true", headers=staff_headers(w.tax)).get_json()
    assert [a["number"] for a in tax["items"]] == [numbers["soon"]]


# --- 4. the centre's 催办 reaches the department too ----------------------------------------------------

def test_the_centres_urge_reaches_the_departments_linked_staff_not_the_one_urging(w, db, make_user, make_staff):  # noqa: F811
    tax_phone, city_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "城运小李", "管理员手机"))
    city = make_staff(role="dept", department="城运中心")
    _link(w.tax, tax_phone.id)
    _link(city, city_phone.id)
    _link(w.admin, admin_phone.id)  # the handler, and the one urging: not told of its own 催办
    appeal_id = _assigned(w)
    number = w.appeal(appeal_id).number
    w.act(appeal_id, "urge", now=MONDAY + timedelta(hours=1), note="企业很着急")
    (_, alert) = _alerts(db, tax_phone.id)  # after the 交办's (pass 12)
    assert "催办" in alert.title and number in alert.title and "企业很着急" in alert.body
    assert _alerts(db, city_phone.id) == [] and _alerts(db, admin_phone.id) == []
    # Each 催办 from a fresh page (its version) is someone asking again; without one it is once a day (left10, s16).
    w.act(appeal_id, "urge", now=MONDAY + timedelta(hours=2), version=w.appeal(appeal_id).version)
    assert len(_alerts(db, tax_phone.id)) == 3
    assert [d["alert"] for _, d in w.events(appeal_id, "staff_notified")] == ["assigned", "urged", "urged"]


# --- 5. who may cancel a 会办 task -------------------------------------------------------------------------

def test_a_coordinating_department_cannot_cancel_its_own_task_the_handling_one_can(w, db, make_staff):  # noqa: F811
    from wxapp_backend.appeals.models import AppealTask
    from wxapp_backend.audit import Actor
    from wxapp_backend.errors import Forbidden

    city = make_staff(role="dept", department="城运中心")
    city_actor = Actor("staff", city.id, role="dept", name="城运", department="城运中心")
    tax_actor = Actor("staff", w.tax.id, role="dept", name="税务", department="税务所")
    appeal_id = _assigned(w)
    w.act(appeal_id, "coordinate", now=MONDAY, actor=tax_actor,
          tasks=[{"department": "城运中心", "description": "核实现场", "working_days": 3}])
    task_id = db.scalar(select(AppealTask.id).where(AppealTask.appeal_id == appeal_id))
    # Asked to 会办, the department answers it; dropping the request is not its call (it ended the 会办 unanswered).
    try:
        w.act(appeal_id, "complete_task", now=MONDAY, actor=city_actor, task_id=task_id, cancel=True)
    except Forbidden as exc:
        assert "取消" in exc.message
    else:
        raise AssertionError("the 会办 department cancelled its own task")
    assert w.appeal(appeal_id).status == "coordinating"
    # The department that asked for it may withdraw the request.
    assert w.act(appeal_id, "complete_task", now=MONDAY, actor=tax_actor, task_id=task_id, cancel=True,
                 note="已自行核实") == "in_progress"
    db.expire_all()
    assert db.get(AppealTask, task_id).status == "cancelled"


# --- 6. 退单 and 延期 waiting for the centre can be found ---------------------------------------------------

def test_returns_and_extensions_awaiting_the_centre_are_a_queue_filter_and_a_dashboard_card(
        w, db, client, console_login, staff_headers):  # noqa: F811
    from wxapp_backend.appeals.models import AppealReturn
    from wxapp_backend.audit import Actor
    from wxapp_backend.db import utcnow

    now = utcnow()
    tax_actor = Actor("staff", w.tax.id, role="dept", name="税务", department="税务所")
    ids = []
    for _ in range(3):
        appeal_id = w.submit(now)
        w.act(appeal_id, "accept", now=now)
        w.act(appeal_id, "assign", now=now, department="税务所")
        ids.append(appeal_id)
    returned, extended, plain = ids
    w.act(returned, "return", now=now, actor=tax_actor, reason="不属于本所职责")
    w.act(extended, "request_extension", now=now, actor=tax_actor, working_days=2, reason="需现场核查")
    numbers = [w.appeal(i).number for i in ids]
    console_login(w.admin)
    page = client.get("/console/appeals?pending_requests=true").get_data(as_text=True)
    assert numbers[0] in page and numbers[1] in page and numbers[2] not in page
    assert "待审核" in page
    dash = client.get("/console/").get_data(as_text=True)
    assert "待审核的退单、延期申请" in dash and "pending_requests=true" in dash
    api = client.get("/api/v1/staff/appeals?pending_requests=true", headers=staff_headers(w.admin)).get_json()
    assert sorted(a["number"] for a in api["items"]) == sorted(numbers[:2])
    ret_id = db.scalar(select(AppealReturn.id).where(AppealReturn.appeal_id == returned))
    w.act(returned, "decide_return", now=now, return_id=ret_id, accept=False, note="请继续办理")
    api = client.get("/api/v1/staff/appeals?pending_requests=true", headers=staff_headers(w.admin)).get_json()
    assert [a["number"] for a in api["items"]] == [numbers[1]]


# --- 6. a 会办 task or a 办不成事 past its deadline reaches those who owe it --------------------------------------

def test_an_overdue_coordination_task_alerts_its_department_once(w, db, make_user, make_staff):  # noqa: F811
    from wxapp_backend.audit import Actor

    city = make_staff(role="dept", department="城运中心")
    city_phone, tax_phone = make_user(nickname="城运小李"), make_user(nickname="税务所小王")
    _link(city, city_phone.id)
    _link(w.tax, tax_phone.id)
    tax_actor = Actor("staff", w.tax.id, role="dept", name="税务", department="税务所")
    appeal_id = _assigned(w)
    w.act(appeal_id, "coordinate", now=MONDAY, actor=tax_actor,
          tasks=[{"department": "城运中心", "description": "核实现场", "working_days": 1}])
    number = w.appeal(appeal_id).number
    assert jobs.tick(now=at(2025, 11, 4, 11, 0))["tasks_overdue"] == 1
    jobs.tick(now=at(2025, 11, 4, 11, 5))
    (given, alert) = _alerts(db, city_phone.id)  # the task itself was told first (pass 12, test_appeals4_qa_s12)
    assert "会办任务" in given.title
    assert number in alert.title and "会办" in alert.body and "超过期限" in alert.body
    assert [d["alert"] for _, d in w.events(appeal_id, "staff_notified")] == ["assigned", "task_assigned",
                                                                              "task_overdue"]


def test_an_overdue_escalation_alerts_the_windows_linked_admins_once(w, db, make_user):  # noqa: F811
    admin_phone = make_user(nickname="管理员手机")
    _link(w.admin, admin_phone.id)
    appeal_id = _assigned(w)
    w.act(appeal_id, "escalate", now=MONDAY, reason="多次反映无果")
    before = len(_alerts(db, admin_phone.id))  # the escalation itself goes to appeal_escalated, not here
    due = w.appeal(appeal_id).escalation_due_at
    assert jobs.tick(now=due + timedelta(minutes=5))["escalation_overdue"] == 1
    jobs.tick(now=due + timedelta(minutes=10))
    alerts = _alerts(db, admin_phone.id)
    assert len(alerts) == before + 1 and "办不成事" in alerts[-1].body and "3 个工作日" in alerts[-1].body


# --- 7. two presses at the same moment -----------------------------------------------------------------------

@pytest.mark.postgres
def test_two_presses_at_once_make_one_press_and_one_alert(app, w, db, make_user, monkeypatch):  # noqa: F811
    import threading
    import time

    phone = make_user(nickname="税务所小王")
    _link(w.tax, phone.id)
    appeal_id = _assigned(w, now=utcnow())
    real = services._event

    def slow(session, appeal, actor, action, **kw):
        if action == "pressed":
            time.sleep(0.5)  # both presses have looked for today's press before either writes it
        return real(session, appeal, actor, action, **kw)

    monkeypatch.setattr(services, "_event", slow)
    results, barrier = [], threading.Barrier(2)

    def press():
        with app.app_context():
            barrier.wait()
            with session_scope() as s:
                results.append(services.press_own(s, w.user.id, appeal_id))

    threads = [threading.Thread(target=press) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, True]
    # One press alert, after the 交办's (pass 12).
    assert len(w.events(appeal_id, "pressed")) == 1 and len(_alerts(db, phone.id)) == 2


# --- 8. a category is not corrected after the fact: the deadline kept or missed stays -------------------------------

def test_recategorising_a_resolved_late_appeal_is_refused_and_keeps_its_deadline_and_its_lateness(w, db):  # noqa: F811
    # Pass 12 (later): 改分类 on an ended appeal is refused outright (test_appeals4_qa_s12); before, it was taken
    # and only the deadline kept. The record stays as it was.
    from wxapp_backend.errors import Conflict

    appeal_id = _assigned(w)  # 税务 (5 working days)
    due = w.appeal(appeal_id).due_at
    jobs.tick(now=due + timedelta(minutes=5))
    assert w.appeal(appeal_id).overdue is True
    w.act(appeal_id, "resolve", now=due + timedelta(hours=1), resolution="已更换税控盘")
    category = w.appeal(appeal_id).category_id
    with pytest.raises(Conflict, match="已办结"):
        w.act(appeal_id, "set_category", now=due + timedelta(hours=2), category="talent")
    a = w.appeal(appeal_id)
    assert (a.category_id, a.due_at, a.overdue, a.resolved_on_time) == (category, due, True, False)
    assert w.events(appeal_id, "categorised") == []
