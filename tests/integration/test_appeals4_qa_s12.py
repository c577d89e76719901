"""Appeals QA (pass 12, fourth wave): the staff side — who hears of an appeal, who may decide what, and when.

- 交办 and 改派承办人 reach the newly responsible department's WeChat-linked staff / the new handler, once each,
  never the one acting;
- an appeal still 已提交 alerts the centre (who must accept it), not the department guessed at submission;
- the one who asked for a 延期 does not approve it;
- an ended appeal's handler and category stay as they ended;
- the console's 会办 form refuses 0 days instead of turning them into 3;
- a 退单 or 延期 still waiting when the appeal is 办结 ends with it.
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
from wxapp_backend.appeals.models import AppealExtension, AppealReturn
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.errors import Conflict, Forbidden

MONDAY = at(2025, 11, 3, 10, 0)


def _actor(staff, name):
    return Actor("staff", staff.id, role=staff.role, name=name, department=staff.department)


def _refused(fn, exc_type):
    try:
        fn()
    except exc_type as exc:
        return exc
    raise AssertionError(f"not refused with {exc_type.__name__}")


# --- 1. 交办 and 改派承办人 reach those who now answer for the appeal -------------------------------------------

def test_assigning_alerts_the_new_departments_linked_staff_once_not_the_one_assigning(w, db, make_user, make_staff):  # noqa: F811
    tax_phone, city_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "城运小李", "管理员手机"))
    city = make_staff(role="dept", department="城运中心")
    _link(w.tax, tax_phone.id)
    _link(city, city_phone.id)
    _link(w.admin, admin_phone.id)  # the one accepting and assigning: never told of its own act
    appeal_id = w.submit(MONDAY)
    number = w.appeal(appeal_id).number
    w.act(appeal_id, "accept", now=MONDAY)
    assert _alerts(db, tax_phone.id) == []  # accepted, not yet 交办: the department has nothing to do yet
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    (alert,) = _alerts(db, tax_phone.id)
    assert number in alert.title and "交办" in alert.title and "税务所" in alert.body
    assert _alerts(db, city_phone.id) == [] and _alerts(db, admin_phone.id) == []
    (told,) = w.events(appeal_id, "staff_notified")
    assert told[1]["alert"] == "assigned"
    # Re-routed to 城运中心 (another 交办): 城运中心 hears of it, 税务所 is not told again.
    w.act(appeal_id, "assign", now=MONDAY + timedelta(hours=1), department="城运中心")
    assert len(_alerts(db, city_phone.id)) == 1 and len(_alerts(db, tax_phone.id)) == 1
    assert _alerts(db, admin_phone.id) == []


def test_a_new_handler_is_alerted_of_the_reassignment_and_no_one_else(w, db, make_user, make_staff):  # noqa: F811
    tax_phone, colleague_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "税务所小赵", "管理员"))
    colleague = make_staff(role="dept", department="税务所")
    _link(w.tax, tax_phone.id)
    _link(colleague, colleague_phone.id)
    _link(w.admin, admin_phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所", handler_id=w.tax.id)
    assert len(_alerts(db, tax_phone.id)) == 1 and len(_alerts(db, colleague_phone.id)) == 1
    w.act(appeal_id, "reassign", now=MONDAY + timedelta(hours=1), handler_id=colleague.id)
    alerts = _alerts(db, colleague_phone.id)
    assert len(alerts) == 2 and "承办" in alerts[1].body and w.appeal(appeal_id).number in alerts[1].title
    assert len(_alerts(db, tax_phone.id)) == 1 and _alerts(db, admin_phone.id) == []
    assert [d["alert"] for _, d in w.events(appeal_id, "staff_notified")] == ["assigned", "handler_changed"]
    # Naming oneself as handler alerts nobody.
    w.act(appeal_id, "reassign", now=MONDAY + timedelta(hours=2), handler_id=w.admin.id)
    assert _alerts(db, admin_phone.id) == [] and len(_alerts(db, colleague_phone.id)) == 2


def test_naming_the_current_handler_again_changes_and_records_nothing(w, db, make_staff):  # noqa: F811
    """A second click on 改派 (or the form sent again) wrote another “承办人改为 …” on the timeline and raised the
    version, so a colleague's open page was refused as stale for nothing."""
    colleague = make_staff(role="dept", department="税务所")
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    w.act(appeal_id, "reassign", now=MONDAY + timedelta(hours=1), handler_id=colleague.id)
    version = w.appeal(appeal_id).version
    w.act(appeal_id, "reassign", now=MONDAY + timedelta(hours=2), handler_id=colleague.id)
    assert len(w.events(appeal_id, "handler_changed")) == 1
    assert w.appeal(appeal_id).version == version and w.appeal(appeal_id).handler_id == colleague.id


# --- 2. an appeal nobody has accepted yet alerts the centre, who must accept it ----------------------------------

def test_alerts_on_an_appeal_not_yet_accepted_go_to_the_centre_not_the_guessed_department(w, db, make_user,  # noqa: F811
                                                                                          make_staff):
    tax_phone, centre_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "中心小陈", "管理员手机"))
    centre = make_staff(role="staff")
    _link(w.tax, tax_phone.id)
    _link(centre, centre_phone.id)
    _link(w.admin, admin_phone.id)
    appeal_id = w.submit(MONDAY)
    a = w.appeal(appeal_id)
    assert a.status == "submitted" and a.department == "税务所"  # chosen by the rules at submission
    jobs.tick(now=a.due_at - timedelta(minutes=30))
    assert _alerts(db, tax_phone.id) == []  # 税务所 has not been given it: nothing it can do yet
    (alert,) = _alerts(db, centre_phone.id)
    assert "临期" in alert.title and a.number in alert.title
    assert len(_alerts(db, admin_phone.id)) == 1
    (note, data), = w.events(appeal_id, "staff_notified")
    assert data["alert"] == "due_soon" and "营商服务中心" in note and "税务所" not in note
    with session_scope() as s:
        assert services.press_own(s, w.user.id, appeal_id, now=a.due_at - timedelta(minutes=10)) is True
    assert len(_alerts(db, centre_phone.id)) == 2 and _alerts(db, tax_phone.id) == []
    # The centre's 催办 of an appeal still waiting to be accepted: the centre's others, not the one urging.
    w.act(appeal_id, "urge", now=a.due_at - timedelta(minutes=5), note="请尽快受理")
    assert len(_alerts(db, centre_phone.id)) == 3 and len(_alerts(db, admin_phone.id)) == 2
    assert _alerts(db, tax_phone.id) == []
    # Accepted and given to 税务所: from then on it is 税务所's.
    w.act(appeal_id, "accept", now=a.due_at - timedelta(minutes=4))
    w.act(appeal_id, "assign", now=a.due_at - timedelta(minutes=3), department="税务所")
    jobs.tick(now=a.due_at + timedelta(minutes=5))
    assert [x.title.split("：")[0] for x in _alerts(db, tax_phone.id)] == ["新交办诉求", "已超期"]


def test_an_unaccepted_appeal_nobody_at_the_centre_could_hear_of_says_so(w, db):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    jobs.tick(now=w.appeal(appeal_id).due_at + timedelta(minutes=5))
    (note, data), = w.events(appeal_id, "staff_unreachable")
    assert data["alert"] == "overdue" and "营商服务中心" in note


# --- 3. separation of duties: the one who asked for a 延期 does not grant it ------------------------------------------

def _ext_id(db, appeal_id):
    db.expire_all()
    return db.scalars(select(AppealExtension.id).where(AppealExtension.appeal_id == appeal_id)
                      .order_by(AppealExtension.id.desc())).first()


def test_a_centre_account_cannot_approve_its_own_extension_request(w, db, make_staff, client, console_login,  # noqa: F811
                                                                    staff_headers):
    centre = make_staff(role="staff")
    me = _actor(centre, "中心小陈")
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY, actor=me)
    due = w.appeal(appeal_id).due_at
    w.act(appeal_id, "request_extension", now=MONDAY, actor=me, working_days=3, reason="需现场核查")
    ext = _ext_id(db, appeal_id)
    exc = _refused(lambda: w.act(appeal_id, "decide_extension", now=MONDAY, actor=me, extension_id=ext, accept=True),
                   Forbidden)
    assert "本人" in exc.message and "其他" in exc.message
    assert w.appeal(appeal_id).due_at == due and db.get(AppealExtension, ext).status == "pending"
    # The API says the same, in Chinese, as a 403.
    resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=staff_headers(centre),
                       json={"action": "decide_extension", "extension_id": ext, "accept": True})
    assert resp.status_code == 403 and "本人" in resp.get_json()["message"]
    # Its page does not offer it 同意 for its own request (only 不同意, which withdraws it), and says why.
    console_login(centre)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    table = page.split('id="extension-table"')[1].split("</table>")[0]
    assert ">同意</button>" not in table and ">不同意</button>" in table and "本人申请" in table
    # Another colleague (here the admin) grants it.
    w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=ext, accept=True)
    assert w.appeal(appeal_id).due_at > due


def test_an_admin_approves_its_own_request_only_when_nobody_else_could(w, db, make_staff):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "request_extension", now=MONDAY, working_days=2, reason="需等待区局答复")
    ext = _ext_id(db, appeal_id)
    other = make_staff(role="admin")
    _refused(lambda: w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=ext, accept=True), Forbidden)
    # Turning one's own request down is withdrawing it: allowed.
    w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=ext, accept=False, note="不需要了")
    w.act(appeal_id, "request_extension", now=MONDAY, working_days=2, reason="需等待区局答复")
    ext = _ext_id(db, appeal_id)
    w.act(appeal_id, "decide_extension", now=MONDAY, actor=_actor(other, "另一位管理员"), extension_id=ext, accept=True)
    # The only account at the centre that can decide: it may, and the timeline says it was its own request.
    from wxapp_backend.auth.models import StaffUser

    db.get(StaffUser, other.id).active = False
    db.commit()
    w.act(appeal_id, "request_extension", now=MONDAY, working_days=1, reason="再核实一次")
    w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=_ext_id(db, appeal_id), accept=True)
    (note, _) = w.events(appeal_id, "extension_approved")[-1]
    assert "本人申请" in note


# --- 4. an ended appeal keeps the handler and category it ended with ----------------------------------------------

def _ended(w, how):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    if how == "rejected":
        w.act(appeal_id, "reject", now=MONDAY, reason="不属于受理范围")
        return appeal_id
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所", handler_id=w.tax.id)
    if how == "withdrawn":
        with session_scope() as s:
            services.withdraw(s, w.user.id, appeal_id, "已自行解决")
        return appeal_id
    w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=1), resolution="已更换税控盘")
    if how == "closed":
        with session_scope() as s:
            services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=5, now=MONDAY + timedelta(hours=2))
    return appeal_id


def test_an_ended_appeal_cannot_be_given_another_handler_or_category(w, db, make_staff, client, staff_headers):  # noqa: F811
    colleague = make_staff(role="dept", department="税务所")
    for how, label in (("resolved", "已办结"), ("closed", "已关闭"), ("withdrawn", "已撤回"), ("rejected", "不予受理")):
        appeal_id = _ended(w, how)
        before = w.appeal(appeal_id)
        assert before.status == how
        with pytest.raises(Conflict) as exc:
            w.act(appeal_id, "reassign", now=MONDAY + timedelta(hours=3), handler_id=colleague.id)
        assert label in exc.value.message and "改派承办人" in exc.value.message
        with pytest.raises(Conflict) as exc:
            w.act(appeal_id, "set_category", now=MONDAY + timedelta(hours=3), category="talent")
        assert label in exc.value.message and "分类" in exc.value.message
        after = w.appeal(appeal_id)
        assert (after.handler_id, after.category_id, after.due_at, after.version) == (
            before.handler_id, before.category_id, before.due_at, before.version)
        assert w.events(appeal_id, "handler_changed") == [] and w.events(appeal_id, "categorised") == []
    resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=staff_headers(w.admin),
                       json={"action": "set_category", "category": "talent"})
    assert resp.status_code == 409 and "不予受理" in resp.get_json()["message"]


# --- 5. the console's 会办 form: 0 days is refused, not turned into 3 -------------------------------------------------

@pytest.mark.parametrize("typed", ["0", "31", "三天", "-2"])
def test_the_console_coordination_form_refuses_days_out_of_range_and_keeps_what_was_typed(
        w, db, client, console_login, typed):  # noqa: F811
    from wxapp_backend.appeals.models import AppealTask

    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    csrf = console_login(w.admin)
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "coordinate", "task_department": "营商服务中心（办不成事窗口）",
        "task_description": "请核实现场情况", "task_days": typed, "task_required": "0"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "会办期限应为 1-30 个工作日" in page
    assert f'value="{typed}"' in page and 'value="请核实现场情况"' in page and '<option value="0" selected>否' in page
    assert db.scalars(select(AppealTask).where(AppealTask.appeal_id == appeal_id)).all() == []
    assert w.appeal(appeal_id).status == "assigned"


def test_the_console_coordination_form_takes_three_days_when_left_empty(w, db, client, console_login):  # noqa: F811
    from wxapp_backend.appeals.models import AppealTask

    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    csrf = console_login(w.admin)
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "coordinate", "task_department": "营商服务中心（办不成事窗口）",
        "task_days": " ", "task_required": "1"})
    assert resp.status_code == 302
    (task,) = db.scalars(select(AppealTask).where(AppealTask.appeal_id == appeal_id)).all()
    assert services.work_calendar(db).working_minutes_between(task.created_at, task.due_at) == 3 * 510


# --- 6. a 退单 or 延期 still waiting when the appeal is 办结 ends with it -------------------------------------------

def test_pending_return_and_extension_end_with_the_resolution(w, db, client, console_login, staff_headers):  # noqa: F811
    tax = _actor(w.tax, "税务所")
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    w.act(appeal_id, "request_extension", now=MONDAY, actor=tax, working_days=3, reason="需现场核查")
    w.act(appeal_id, "return", now=MONDAY, actor=tax, reason="部分事项不属于本所职责")
    due = w.appeal(appeal_id).due_at
    w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=2), actor=tax, resolution="已更换税控盘")
    db.expire_all()
    (ret,) = db.scalars(select(AppealReturn).where(AppealReturn.appeal_id == appeal_id)).all()
    (ext,) = db.scalars(select(AppealExtension).where(AppealExtension.appeal_id == appeal_id)).all()
    assert (ret.status, ret.decided_by, ret.decision_note) == ("rejected", "system", "诉求已办结，退单不再需要审核")
    assert (ext.status, ext.decided_by) == ("rejected", "system")
    notes = [n for n, _ in w.events(appeal_id, "noted")]
    assert "税务所的退单申请随之结束（诉求已办结）" in notes and "延期 3 个工作日的申请随之结束（诉求已办结）" in notes
    a = w.appeal(appeal_id)
    assert a.due_at == due and a.resolved_on_time is True
    # Nothing left for the centre to decide: not in the 待审核 queue, no dashboard card, no buttons.
    api = client.get("/api/v1/staff/appeals?pending_requests=true", headers=staff_headers(w.admin)).get_json()
    assert api["items"] == []
    console_login(w.admin)
    assert "待审核的退单、延期申请" not in client.get("/console/").get_data(as_text=True)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    for table in ("extension-table", "return-table"):
        rows = page.split(f'id="{table}"')[1].split("</table>")[0]
        assert "结束" in rows and "不再需要" in rows and "不同意" not in rows and "<button" not in rows
    with pytest.raises(Conflict):
        w.act(appeal_id, "decide_extension", now=MONDAY + timedelta(hours=3), extension_id=ext.id, accept=False)
    # The enterprise's timeline says nothing of the departments' requests.
    with session_scope() as s:
        appeal = services.get_appeal(s, appeal_id, w.actor)
        public = [e["note"] for e in services.detail_for_user(s, appeal)["timeline"]]
    assert not [n for n in public if "申请" in n]


# --- 7. further: a new 办不成事 reaches the window's own accounts; a new 会办 task its department -----------------------

def test_a_new_escalation_reaches_the_windows_linked_accounts_not_the_admin_escalating(w, db, make_user):  # noqa: F811
    from wxapp_backend.notices.models import InboxItem

    window_phone, admin_phone = make_user(nickname="窗口小刘"), make_user(nickname="管理员手机")
    _link(w.window, window_phone.id)
    _link(w.admin, admin_phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "escalate", now=MONDAY, reason="多次反映无果")
    db.expire_all()
    told = db.scalars(select(InboxItem).where(InboxItem.user_id == window_phone.id)).all()
    assert len(told) == 1 and "办不成事" in told[0].title and w.appeal(appeal_id).number in told[0].body
    # The admin escalated it: not told of its own act.
    assert db.scalars(select(InboxItem).where(InboxItem.user_id == admin_phone.id)).all() == []


def test_a_new_coordination_task_reaches_its_departments_linked_staff_once(w, db, make_user, make_staff):  # noqa: F811
    city, market = make_staff(role="dept", department="城运中心"), make_staff(role="dept", department="市场监管所")
    city_phone, market_phone, tax_phone = (make_user(nickname=n) for n in ("城运小李", "市场小周", "税务所小王"))
    _link(city, city_phone.id)
    _link(market, market_phone.id)
    _link(w.tax, tax_phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    tax = _actor(w.tax, "税务所")
    w.act(appeal_id, "coordinate", now=MONDAY, actor=tax,
          tasks=[{"department": "城运中心", "description": "核实现场", "working_days": 2}])
    (alert,) = _alerts(db, city_phone.id)
    assert "会办" in alert.title and w.appeal(appeal_id).number in alert.title and "核实现场" not in alert.body
    assert len(_alerts(db, tax_phone.id)) == 1  # its 交办 only: it asked for the 会办
    w.act(appeal_id, "coordinate", now=MONDAY + timedelta(hours=1), actor=tax,
          tasks=[{"department": "市场监管所", "description": "参考意见", "required": False}])
    assert len(_alerts(db, market_phone.id)) == 1 and len(_alerts(db, city_phone.id)) == 1
    assert [d["alert"] for _, d in w.events(appeal_id, "staff_notified")] == ["assigned", "task_assigned",
                                                                              "task_assigned"]


def test_no_extension_is_asked_for_an_appeal_nobody_has_accepted_yet(w, db, client, console_login):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    from wxapp_backend.errors import NotFound

    assert w.appeal(appeal_id).department == "税务所"  # the rules' guess: it was not given to 税务所
    # (pass 13, appeals6: not given out, it is not in 税务所's view at all: 404; the centre is told “尚未受理”)
    with pytest.raises(NotFound):
        w.act(appeal_id, "request_extension", now=MONDAY, actor=_actor(w.tax, "税务所"), working_days=5,
              reason="事情比较复杂")
    with pytest.raises(Conflict) as exc:
        w.act(appeal_id, "request_extension", now=MONDAY, working_days=5, reason="事情比较复杂")
    assert "尚未受理" in exc.value.message
    assert db.scalars(select(AppealExtension).where(AppealExtension.appeal_id == appeal_id)).all() == []
    console_login(w.tax)
    assert client.get(f"/console/appeals/{appeal_id}").status_code == 404


@pytest.mark.parametrize("then", ["assigned", "pending_enterprise"])
def test_an_appeal_is_accepted_once(w, db, then):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所", handler_id=w.tax.id)
    if then == "pending_enterprise":
        w.act(appeal_id, "request_info", now=MONDAY, note="请提供税控盘编号")
    before = w.appeal(appeal_id)
    # 受理 again moved an appeal already with 税务所 (or waiting for the enterprise, ending the wait) back to 已受理,
    # and the enterprise read “诉求已受理” a second time.
    with pytest.raises(Conflict) as exc:
        w.act(appeal_id, "accept", now=MONDAY + timedelta(hours=1))
    assert "已受理" in exc.value.message
    after = w.appeal(appeal_id)
    assert (after.status, after.version, after.info_request) == (then, before.version, before.info_request)
    assert len(w.events(appeal_id, "accepted")) == 1


def test_start_does_not_end_a_coordination_still_running(w, db, make_staff):  # noqa: F811
    make_staff(role="dept", department="城运中心")
    tax = _actor(w.tax, "税务所")
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    w.act(appeal_id, "coordinate", now=MONDAY, actor=tax, tasks=[{"department": "城运中心", "description": "核实现场"}])
    # “开始办理” took it out of 会办 with the required task still open: shown 办理中, yet it could not be 办结, and
    # the task's completion no longer brought it back (it was not 协调会办中 any more).
    with pytest.raises(Conflict) as exc:
        w.act(appeal_id, "start", now=MONDAY + timedelta(hours=1), actor=tax)
    assert "会办" in exc.value.message
    assert w.appeal(appeal_id).status == "coordinating"


def test_the_department_hears_the_centres_decision_on_its_return_and_extension(w, db, make_user):  # noqa: F811
    tax_phone, admin_phone = make_user(nickname="税务所小王"), make_user(nickname="管理员手机")
    _link(w.tax, tax_phone.id)
    _link(w.admin, admin_phone.id)
    tax = _actor(w.tax, "税务所")
    appeal_id = w.submit(MONDAY)
    number = w.appeal(appeal_id).number
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    w.act(appeal_id, "return", now=MONDAY, actor=tax, reason="不属于本所职责")
    ret = db.scalar(select(AppealReturn.id).where(AppealReturn.appeal_id == appeal_id))
    w.act(appeal_id, "decide_return", now=MONDAY, return_id=ret, accept=False, note="请继续办理")
    alerts = _alerts(db, tax_phone.id)
    assert len(alerts) == 2 and "退单" in alerts[1].title and number in alerts[1].title
    assert "仍由税务所办理" in alerts[1].body
    w.act(appeal_id, "request_extension", now=MONDAY, actor=tax, working_days=3, reason="需现场核查")
    w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=_ext_id(db, appeal_id), accept=True)
    alerts = _alerts(db, tax_phone.id)
    due = w.appeal(appeal_id).due_at.astimezone(at(2025, 1, 1).tzinfo)
    assert len(alerts) == 3 and "延期已同意" in alerts[2].title and f"{due.month}月{due.day}日" in alerts[2].body
    w.act(appeal_id, "request_extension", now=MONDAY, actor=tax, working_days=2, reason="还需核查")
    w.act(appeal_id, "decide_extension", now=MONDAY, extension_id=_ext_id(db, appeal_id), accept=False)
    alerts = _alerts(db, tax_phone.id)
    assert len(alerts) == 4 and "延期未同意" in alerts[3].title
    # The one deciding is told of the requests it had to decide, never of its own decisions.
    assert [a.title.split("：")[0] for a in _alerts(db, admin_phone.id)] == ["退单待审核", "延期待审批", "延期待审批"]


def test_a_departments_return_or_extension_request_reaches_the_centre_that_decides_it(w, db, make_user, make_staff):  # noqa: F811
    centre = make_staff(role="staff")
    centre_phone, admin_phone, tax_phone = (make_user(nickname=n) for n in ("中心小陈", "管理员手机", "税务所小王"))
    _link(centre, centre_phone.id)
    _link(w.admin, admin_phone.id)
    _link(w.tax, tax_phone.id)
    tax = _actor(w.tax, "税务所")
    appeal_id = w.submit(MONDAY)
    number = w.appeal(appeal_id).number
    w.act(appeal_id, "accept", now=MONDAY, actor=_actor(centre, "中心小陈"))
    w.act(appeal_id, "assign", now=MONDAY, actor=_actor(centre, "中心小陈"), department="税务所")
    w.act(appeal_id, "request_extension", now=MONDAY, actor=tax, working_days=3, reason="需现场核查")
    (alert,) = _alerts(db, admin_phone.id)
    assert "延期" in alert.title and number in alert.title and "审批" in alert.body
    assert len(_alerts(db, centre_phone.id)) == 1
    w.act(appeal_id, "return", now=MONDAY, actor=tax, reason="不属于本所职责")
    assert len(_alerts(db, admin_phone.id)) == 2 and "退单" in _alerts(db, admin_phone.id)[1].title
    assert len(_alerts(db, tax_phone.id)) == 1  # its 交办 only: not told of its own requests
