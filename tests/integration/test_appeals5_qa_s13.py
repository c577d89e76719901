"""Appeals QA (pass 13, appeals5): the closed loop's ends — who hears of an appeal nobody has given out yet, what
happens to 会办 tasks at the 办结, and when staff may close an appeal the enterprise has not rated.

- an accepted appeal not yet 交办 alerts the centre (who dispatches) and its handler, not the department the rules
  guessed at submission; that department hears of it at the 交办;
- the 办结 closes the optional 会办 tasks still open (timeline + audit), and acting on one afterwards is a Chinese 409;
- staff cannot close a resolved appeal while the enterprise's 7-day rating window runs; closed after it, the
  record says no rating came.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_appeals2_qa_s11 import (  # noqa: F401  (pass 11's fixture)
    _alerts,
    _link,
    at,
    w,
)
from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.models import AppealTask
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.errors import Conflict

MONDAY = at(2025, 11, 3, 10, 0)


def _refused(fn, exc_type=Conflict):
    try:
        fn()
    except exc_type as exc:
        return exc
    raise AssertionError(f"not refused with {exc_type.__name__}")


def _dept(staff, name="部门"):
    return Actor("staff", staff.id, role=staff.role, name=name, department=staff.department)


# --- 1. an accepted appeal nobody has given out alerts those who dispatch ------------------------------------

def test_alerts_on_an_accepted_appeal_not_yet_assigned_go_to_the_centre_not_the_guessed_department(
        w, db, make_user, make_staff):  # noqa: F811
    tax_phone, centre_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "中心小陈", "管理员手机"))
    centre = make_staff(role="staff")
    _link(w.tax, tax_phone.id)
    _link(centre, centre_phone.id)
    _link(w.admin, admin_phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)  # the admin accepts it (its handler); nobody is given it yet
    a = w.appeal(appeal_id)
    assert a.status == "accepted" and a.department == "税务所"  # the rules' guess, not a 交办
    jobs.tick(now=a.due_at - timedelta(minutes=30))  # 临期
    assert _alerts(db, tax_phone.id) == []  # 税务所 has not been given it
    (alert,) = _alerts(db, centre_phone.id)
    assert "临期" in alert.title and a.number in alert.title
    assert len(_alerts(db, admin_phone.id)) == 1  # the handler, who accepted it
    with session_scope() as s:  # the enterprise presses: the centre owes the 交办
        assert services.press_own(s, w.user.id, appeal_id, now=a.due_at - timedelta(minutes=20)) is True
    assert _alerts(db, tax_phone.id) == [] and len(_alerts(db, centre_phone.id)) == 2
    (told, _) = w.events(appeal_id, "staff_notified")
    assert "营商服务中心" in told[0] and "税务所" not in told[0]
    # Given to 税务所 (交办): from then on 税务所 hears of it, the 交办 first.
    w.act(appeal_id, "assign", now=a.due_at - timedelta(minutes=10), department="税务所")
    jobs.tick(now=a.due_at + timedelta(minutes=5))
    assert [x.title.split("：")[0] for x in _alerts(db, tax_phone.id)] == ["新交办诉求", "已超期"]
    assert len(_alerts(db, centre_phone.id)) == 2


def test_an_accepted_appeal_the_centre_handles_itself_keeps_the_guessed_department_out_of_its_alerts(
        w, db, make_user):  # noqa: F811
    """Started by the centre without a 交办, it is still nobody else's: the guessed department is not alerted."""
    tax_phone, admin_phone = make_user(nickname="税务所小王"), make_user(nickname="管理员手机")
    _link(w.tax, tax_phone.id)
    _link(w.admin, admin_phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "start", now=MONDAY)
    jobs.tick(now=w.appeal(appeal_id).due_at + timedelta(minutes=5))
    assert _alerts(db, tax_phone.id) == []
    assert [x.title.split("：")[0] for x in _alerts(db, admin_phone.id)] == ["已超期"]


def test_the_centres_decision_on_an_extension_for_an_appeal_not_given_out_skips_the_guessed_department(
        w, db, make_user, make_staff):  # noqa: F811
    tax_phone, centre_phone = make_user(nickname="税务所小王"), make_user(nickname="中心小陈")
    centre = make_staff(role="staff")
    _link(w.tax, tax_phone.id)
    _link(centre, centre_phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY, actor=_dept(centre, "小陈"))  # 小陈 handles it; nobody is given it
    w.act(appeal_id, "request_extension", now=MONDAY, actor=_dept(centre, "小陈"), working_days=3, reason="需现场核查")
    with session_scope() as s:
        ext_id = s.scalar(select(services.AppealExtension.id).where(services.AppealExtension.appeal_id == appeal_id))
    w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=ext_id, accept=True)
    assert _alerts(db, tax_phone.id) == []
    assert [x.title.split("：")[0] for x in _alerts(db, centre_phone.id)] == ["延期已同意"]


def test_the_guessed_department_cannot_handle_an_appeal_before_it_is_given_it(w, db, client, console_login):  # noqa: F811
    """Accepted by the centre and not given out, it was the rules' guess's to start, 办结 or 退单 as if its own:
    the 交办 (分类交办) was skipped, and a 退单 sent back an appeal the department had never been given.
    (Pass 13, appeals6: not given out, it is not in the department's view at all: 404 rather than 409.)"""
    from wxapp_backend.errors import NotFound

    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    tax = _dept(w.tax, "税务")
    for action, data in (("start", {}), ("resolve", {"resolution": "已办"}), ("return", {"reason": "不归我们"}),
                         ("request_extension", {"working_days": 2, "reason": "需要时间"}), ("note", {"note": "可办"})):
        _refused(lambda action=action, data=data: w.act(appeal_id, action, now=MONDAY, actor=tax, **data), NotFound)
    assert w.appeal(appeal_id).status == "accepted"
    console_login(w.tax)
    assert client.get(f"/console/appeals/{appeal_id}").status_code == 404
    # Holding a 会办 task on it, the guessed department sees it and does its task, not the handling (409).
    w.act(appeal_id, "coordinate", now=MONDAY, tasks=[{"department": "税务所", "description": "核实开票"}])
    exc = _refused(lambda: w.act(appeal_id, "resolve", now=MONDAY, actor=tax, resolution="已办"))
    assert exc.code == "not_assigned" and "交办" in exc.message
    assert w.act(appeal_id, "note", now=MONDAY, actor=tax, note="我们可以办") == "coordinating"  # a note is welcome
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert 'value="resolve"' not in page and 'value="note"' in page and "尚未交办给本部门" in page
    task_id = db.scalar(select(AppealTask.id).where(AppealTask.appeal_id == appeal_id))
    w.act(appeal_id, "complete_task", now=MONDAY, actor=tax, task_id=task_id, result="已核实")
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")  # given to it: its own to handle
    assert w.act(appeal_id, "start", now=MONDAY, actor=tax) == "in_progress"
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert 'value="resolve"' in page and "尚未交办给本部门" not in page


def test_the_guessed_department_cannot_cancel_the_centres_coordination_task(w, db, make_staff):  # noqa: F811
    from wxapp_backend.errors import NotFound

    make_staff(role="dept", department="城运中心")
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "coordinate", now=MONDAY, tasks=[{"department": "城运中心", "description": "核实现场"}])
    task_id = db.scalar(select(AppealTask.id).where(AppealTask.appeal_id == appeal_id))
    exc = _refused(lambda: w.act(appeal_id, "complete_task", now=MONDAY, actor=_dept(w.tax, "税务"), task_id=task_id,
                                 cancel=True), NotFound)
    assert "没有找到" in exc.message  # (pass 13, appeals6: not given out, it is not in 税务所's view: 404, was 403)
    db.expire_all()
    assert db.get(AppealTask, task_id).status == "open" and w.appeal(appeal_id).status == "coordinating"


# --- 2. the 办结 closes the optional 会办 tasks still open ------------------------------------------------------

def _coordinated(w, make_staff, *, required=False):  # noqa: F811
    city = make_staff(role="dept", department="城运中心")
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    w.act(appeal_id, "coordinate", now=MONDAY, actor=_dept(w.tax, "税务"),
          tasks=[{"department": "城运中心", "description": "核实现场", "working_days": 3, "required": required}])
    with session_scope() as s:
        task_id = s.scalar(select(AppealTask.id).where(AppealTask.appeal_id == appeal_id))
    return appeal_id, task_id, city


def test_resolving_closes_the_optional_coordination_tasks_still_open(w, db, make_staff, client,  # noqa: F811
                                                                     staff_headers, console_login):
    appeal_id, task_id, city = _coordinated(w, make_staff)
    assert w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=2), actor=_dept(w.tax, "税务"),
                 resolution="已更换税控盘") == "resolved"
    db.expire_all()
    task = db.get(AppealTask, task_id)
    assert task.status == "cancelled" and task.closed_at is not None and "办结" in task.result
    ((note, data),) = w.events(appeal_id, "task_cancelled")
    assert "城运中心" in note and "办结" in note and data["task_id"] == task_id
    assert db.scalar(select(AuditLog.id).where(AuditLog.action == "appeal.task_cancelled")) is not None
    # The 会办 department can no longer act on it: a clear Chinese 409, nothing changed.
    version = w.appeal(appeal_id).version
    resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=staff_headers(city),
                       json={"action": "complete_task", "task_id": task_id, "result": "现场已核实"})
    assert resp.status_code == 409, resp.get_json()
    body = resp.get_json()
    assert "诉求已办结" in body["message"] and "随之关闭" in body["message"] and body["error"] == "task_closed"
    assert w.appeal(appeal_id).version == version
    detail = client.get(f"/api/v1/staff/appeals/{appeal_id}", headers=staff_headers(city)).get_json()
    assert [t["status"] for t in detail["tasks"]] == ["cancelled"]
    # ... and its page offers nothing more to do on it.
    console_login(city)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert 'value="complete_task"' not in page and "已取消" in page


def test_a_coordination_task_left_open_on_a_resolved_appeal_cannot_be_acted_on(w, db, make_staff):  # noqa: F811
    """One left open by an 办结 before this pass (or in any way) is not done after the appeal's handling ended."""
    appeal_id, task_id, city = _coordinated(w, make_staff)
    w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=2), actor=_dept(w.tax, "税务"), resolution="已办")
    db.execute(AppealTask.__table__.update().where(AppealTask.id == task_id).values(status="open", closed_at=None))
    exc = _refused(lambda: w.act(appeal_id, "complete_task", now=MONDAY + timedelta(hours=3), actor=_dept(city, "城运"),
                                 task_id=task_id, result="晚了"))
    assert "已办结" in exc.message and exc.code == "task_closed"
    db.expire_all()
    assert db.get(AppealTask, task_id).status == "open"


def test_resolving_with_a_required_task_open_is_still_refused(w, db, make_staff):  # noqa: F811
    appeal_id, task_id, _ = _coordinated(w, make_staff, required=True)
    exc = _refused(lambda: w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=2), actor=_dept(w.tax, "税务"),
                                 resolution="已办"))
    assert exc.code == "open_subtasks"
    db.expire_all()
    assert db.get(AppealTask, task_id).status == "open"


# --- 3. the enterprise's rating window comes before staff close the appeal ------------------------------------

def _resolved(w):  # noqa: F811
    """Resolved an hour ago, by the clock the API and the console read."""
    now = utcnow() - timedelta(hours=2)
    appeal_id = w.submit(now)
    w.act(appeal_id, "accept", now=now)
    w.act(appeal_id, "resolve", now=now + timedelta(hours=1), resolution="已更换税控盘")
    return appeal_id


def test_staff_cannot_close_a_resolved_appeal_while_the_enterprise_may_still_rate_it(w, db, client,  # noqa: F811
                                                                                    staff_headers):
    appeal_id = _resolved(w)
    resolved_at = w.appeal(appeal_id).resolved_at
    exc = _refused(lambda: w.act(appeal_id, "close", now=resolved_at + timedelta(days=1), note="电话确认已解决"))
    assert exc.code == "rating_window_open" and "评价" in exc.message and "7 个工作日" in exc.message
    assert w.appeal(appeal_id).status == "resolved"
    resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=staff_headers(w.admin),
                       json={"action": "close", "note": "电话确认已解决"})
    assert resp.status_code == 409 and resp.get_json()["error"] == "rating_window_open"
    assert "评价" in resp.get_json()["message"]
    # The enterprise can still rate it: the loop ends with its word.
    with session_scope() as s:
        services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=5)
    assert w.appeal(appeal_id).status == "closed"


def test_closing_after_the_window_records_that_no_rating_came(w, db):  # noqa: F811
    appeal_id = _resolved(w)
    with session_scope() as s:
        ends = services.rating_window_ends(services.get_appeal(s, appeal_id, w.actor))
    assert w.act(appeal_id, "close", now=ends + timedelta(minutes=1),
                 note="归档") == "closed"
    ((note, data),) = w.events(appeal_id, "closed")
    assert "未评价" in note and data.get("rated") is False
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "appeal.closed"))
    assert entry is not None and entry.data.get("rated") is False


def test_the_console_offers_no_close_while_the_rating_window_runs(w, db, client, console_login):  # noqa: F811
    appeal_id = _resolved(w)
    console_login(w.admin)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert 'value="close"' not in page and "评价" in page


# --- 4. the 办结 and the 会办 department's 完成 at the same moment -------------------------------------------------

def _resolve_and_complete_at_once(app, w, make_staff, monkeypatch, *, lock):  # noqa: F811
    import threading
    import time

    appeal_id, task_id, city = _coordinated(w, make_staff)
    monkeypatch.setattr(services, "LOCK_ROWS", lock)
    monkeypatch.setattr(services, "_after_load", lambda appeal: time.sleep(0.5))  # both read before either writes
    event = services._event

    def slow_done(session, appeal, actor, action, **kw):  # the 完成 is not committed before the 办结 reads the task
        if action == "task_done":
            time.sleep(1)
        return event(session, appeal, actor, action, **kw)

    monkeypatch.setattr(services, "_event", slow_done)
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def run(name, actor, action, data):
        with app.app_context():
            barrier.wait()
            try:
                with session_scope() as s:
                    services.perform(s, actor, appeal_id, action, data, now=MONDAY + timedelta(hours=2))
                results[name] = "ok"
            except Conflict:
                results[name] = "409"

    threads = [threading.Thread(target=run, args=("resolve", _dept(w.tax, "税务"), "resolve", {"resolution": "已办"})),
               threading.Thread(target=run, args=("complete", _dept(city, "城运"), "complete_task",
                                                  {"task_id": task_id, "result": "现场已核实"}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ended = [a for a in ("task_done", "task_cancelled") for _ in w.events(appeal_id, a)]
    return results, ended


@pytest.mark.postgres
def test_a_resolution_and_the_tasks_completion_at_once_end_the_task_once(app, w, make_staff, monkeypatch):  # noqa: F811
    results, ended = _resolve_and_complete_at_once(app, w, make_staff, monkeypatch, lock=True)
    assert results["resolve"] == "ok"
    # Either the 会办 answered first (done, then the 办结 found nothing open) or the 办结 closed it first (409).
    assert (results["complete"], ended) in (("ok", ["task_done"]), ("409", ["task_cancelled"]))


@pytest.mark.postgres
def test_negative_control_without_the_lock_the_task_ends_twice(app, w, make_staff, monkeypatch):  # noqa: F811
    results, ended = _resolve_and_complete_at_once(app, w, make_staff, monkeypatch, lock=False)
    assert results == {"resolve": "ok", "complete": "ok"} and sorted(ended) == ["task_cancelled", "task_done"]
