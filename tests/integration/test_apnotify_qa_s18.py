"""Eighteenth QA pass (appeals that follow their building): the specialist (服务专员) of the grid an open appeal lands
on hears of it, once per move, as a department hears of a 交办; correcting a main appeal's building takes the
appeals merged into it along; the console says how many open appeals moved and to which grid."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.integration.test_appeals2_qa_s11 import _alerts, _link
from tests.integration.test_buildings_qa_s18 import _appeal, _close, _merge_form
from wxapp_backend.appeals import services as appeals
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.enterprises import services
from wxapp_backend.notices.models import InboxItem, Notification

TALENT = "想咨询一下人才公寓的申请条件和办理流程"


class World:
    """Two grids, each with a specialist whose account is linked to a WeChat user (their phone), two buildings."""

    def __init__(self, make_grid, make_building, make_user, make_staff):
        admin = make_staff(role="admin")  # the one acting (not a specialist: one acting is not told)
        self.admin = Actor("staff", admin.id, role="admin", name="管理员")
        self.one, self.two = make_staff(role="staff"), make_staff(role="staff")
        self.one_phone, self.two_phone = make_user(nickname="张专员手机"), make_user(nickname="李专员手机")
        _link(self.one, self.one_phone.id)
        _link(self.two, self.two_phone.id)
        self.first = make_grid(name="第一网格", specialist_name="张专员", specialist_staff_id=self.one.id)
        self.second = make_grid(name="第二网格", specialist_name="李专员", specialist_staff_id=self.two.id)
        self.old = make_building(name="新华大厦", grid_id=self.first.id)
        self.new = make_building(name="幸福大楼", grid_id=self.second.id)


@pytest.fixture
def w(make_grid, make_building, make_user, make_staff):
    return World(make_grid, make_building, make_user, make_staff)


def _moved_alerts(db, user_id):
    return [a for a in _alerts(db, user_id) if "网格" in a.title]


def _told(db, appeal_id):
    db.expire_all()
    return [e.data for e in db.scalars(select(AppealEvent).where(
        AppealEvent.appeal_id == appeal_id, AppealEvent.action == "staff_notified").order_by(AppealEvent.id))
        if e.data.get("alert") == "grid_changed"]


def _user_notifications(db, user_id) -> int:
    db.expire_all()
    return db.scalar(select(func.count(Notification.id)).where(Notification.user_id == user_id))


# --- 1. the new grid's specialist hears of the appeal -------------------------------------------------------


def test_a_building_moved_to_another_grid_tells_the_new_specialist_once_per_move(w, db, make_user):
    """A building moved to another grid took its open appeals to the new grid team's specialist, who was told
    nothing (a 交办 tells the department; this told nobody): the appeal sat in a list nobody was watching."""
    u = make_user(building_id=w.old.id)
    open_id, closed_id = _appeal(u.id), _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢")
    _close(db, closed_id)
    number = db.get(Appeal, open_id).number
    before = _user_notifications(db, u.id)

    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": w.second.id})
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert number in alert.title and "第二网格" in alert.body and "新华大厦" not in alert.title, alert.body
    assert _alerts(db, w.one_phone.id) == []  # the old specialist no longer serves it
    assert _user_notifications(db, u.id) == before  # never the enterprise: it is staff's routing
    [data] = _told(db, open_id)
    assert _told(db, closed_id) == []  # not being handled: nobody has work to do

    # saving the building again changes nothing and tells nobody again; moving it back tells the first
    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": w.second.id, "name": "新华大厦"})
    assert len(_moved_alerts(db, w.two_phone.id)) == 1
    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": w.first.id})
    assert len(_moved_alerts(db, w.one_phone.id)) == 1 and len(_moved_alerts(db, w.two_phone.id)) == 1
    assert len(_told(db, open_id)) == 2


def test_an_enterprise_moved_or_merged_tells_the_new_specialist(w, db, make_enterprise, make_user):
    from wxapp_backend.demo import demo_credit_code

    ent = make_enterprise(name="上海星河科技有限公司", credit_code=demo_credit_code("91310112", 7),
                          building_id=w.old.id)
    u = make_user(enterprise_id=ent.id, binding_state="verified")
    moved_id = _appeal(u.id)
    with session_scope() as s:
        services.update_enterprise(s, w.admin, ent.id, {"building_id": w.new.id})
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert db.get(Appeal, moved_id).number in alert.title

    dup = make_enterprise(name="星河科技", credit_code="91310106MA0000002X", building_id=w.old.id)
    merged_id = _appeal(make_user(enterprise_id=dup.id, binding_state="verified").id, TALENT)
    with session_scope() as s:
        services.merge_enterprises(s, w.admin, ent.id, dup.id)
    alerts = _moved_alerts(db, w.two_phone.id)
    assert len(alerts) == 2 and db.get(Appeal, merged_id).number in alerts[1].title
    assert _alerts(db, w.one_phone.id) == []


def test_a_building_merge_across_grids_tells_the_kept_buildings_specialist(w, db, make_user):
    u = make_user(building_id=w.old.id)
    open_id = _appeal(u.id)
    with session_scope() as s:
        services.merge_buildings(s, w.admin, w.new.id, w.old.id, confirm_grid=True)
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert db.get(Appeal, open_id).number in alert.title
    assert _alerts(db, w.one_phone.id) == []


def test_correcting_an_appeals_building_tells_the_new_specialist_but_not_the_one_correcting(w, db, make_user):
    a = _appeal(make_user().id, TALENT, building_id=w.old.id)
    b = _appeal(make_user().id, "人才公寓的申请条件是什么，需要哪些材料", building_id=w.old.id)
    with session_scope() as s:
        appeals.perform(s, w.admin, a, "set_building", {"building_id": w.new.id})
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert db.get(Appeal, a).number in alert.title
    # the specialist correcting it to their own grid knows it already
    me = Actor("staff", w.two.id, role="staff", name="李专员")
    with session_scope() as s:
        appeals.perform(s, me, b, "set_building", {"building_id": w.new.id})
        appeals.perform(s, me, b, "set_building", {"building_id": w.new.id})  # a second click: nothing
    assert len(_moved_alerts(db, w.two_phone.id)) == 1 and _told(db, b) == []


def test_an_appeal_back_in_handling_on_another_grid_tells_its_specialist(w, db, make_user):
    u = make_user()
    aid = _appeal(u.id, TALENT, building_id=w.old.id, category="talent")
    with session_scope() as s:
        appeals.perform(s, w.admin, aid, "accept", {})
        appeals.perform(s, w.admin, aid, "resolve", {"resolution": "已电话告知申请条件"})
    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": w.second.id})
    assert _alerts(db, w.two_phone.id) == []  # 已办结: nothing to do yet
    with session_scope() as s:
        appeals.rate(s, u.id, aid, resolved=False, satisfaction=2, comment="还是不清楚")
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert db.get(Appeal, aid).number in alert.title


def test_a_specialist_serving_both_grids_is_not_told_again(w, db, make_grid, make_user):
    third = make_grid(name="第三网格", specialist_name="张专员", specialist_staff_id=w.one.id)
    u = make_user(building_id=w.old.id)
    aid = _appeal(u.id)
    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": third.id})
    db.expire_all()
    assert db.get(Appeal, aid).grid_id == third.id
    assert _alerts(db, w.one_phone.id) == [] and _told(db, aid) == []


def test_the_alert_survives_a_worker_lost_before_it_was_sent(w, db, app_ctx, make_user, run_jobs):
    """It is written with the move (inbox and notification rows in the same transaction) and delivered by the
    notification job: a job lost with a dead worker is queued again by the sweep, and sent once."""
    from wxapp_backend.notices.jobs import sweep_pending_notifications

    aid = _appeal(make_user(building_id=w.old.id).id)
    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": w.second.id})
    app_ctx.extensions["wxapp"].queue.empty()  # the worker died with the job
    db.expire_all()
    [note] = db.scalars(select(Notification).where(Notification.user_id == w.two_phone.id)).all()
    assert note.status == "pending" and note.ref == f"appeal:{aid}"
    with session_scope() as s:
        s.get(Notification, note.id).created_at = utcnow() - timedelta(hours=1)
    assert sweep_pending_notifications() >= 1
    run_jobs()
    db.expire_all()
    assert db.get(Notification, note.id).status != "pending"
    assert db.scalar(select(func.count(InboxItem.id)).where(InboxItem.user_id == w.two_phone.id)) == 1


# --- 2. correcting a main appeal's building takes the appeals merged into it along ---------------------------


def _family(w, make_user):
    master = _appeal(make_user().id, TALENT, building_id=w.old.id, category="talent")
    child = _appeal(make_user().id, "人才公寓的申请条件是什么，需要哪些材料", building_id=w.old.id, category="talent")
    with session_scope() as s:
        appeals.perform(s, w.admin, master, "accept", {})
        appeals.perform(s, w.admin, child, "merge", {"master_id": master})
    return master, child


def test_correcting_a_main_appeals_building_takes_its_merged_appeals_along(w, db, make_user):
    """The appeals merged into one are the same problem: corrected on the main appeal, they stayed at the wrong
    building and grid, and when split off (9e03ebe) went to the grid serving the wrong building."""
    master, child = _family(w, make_user)
    db.expire_all()
    version = db.get(Appeal, child).version
    with session_scope() as s:
        appeals.perform(s, w.admin, master, "set_building", {"building_id": w.new.id})
    db.expire_all()
    c = db.get(Appeal, child)
    assert (c.building_id, c.grid_id, c.specialist_staff_id, c.status) == (
        w.new.id, w.second.id, w.two.id, "duplicate")
    assert c.version == version + 1
    [ev] = db.scalars(select(AppealEvent).where(AppealEvent.appeal_id == child,
                                                AppealEvent.action == "building_changed")).all()
    assert not ev.public and db.get(Appeal, master).number in ev.note and "幸福大楼" in ev.note, ev.note
    # one alert: the main appeal is the work; the merged one is handled with it
    assert len(_moved_alerts(db, w.two_phone.id)) == 1 and _told(db, child) == []
    # split off later, it is handled where the problem is
    with session_scope() as s:
        appeals.perform(s, w.admin, child, "split", {})
    db.expire_all()
    assert (db.get(Appeal, child).building_id, db.get(Appeal, child).grid_id) == (w.new.id, w.second.id)


def test_the_main_appeal_and_its_merged_ones_move_together_or_not_at_all(w, db, make_user, monkeypatch):
    master, child = _family(w, make_user)
    real = appeals._event

    def failing(session, appeal, *a, **kw):
        if appeal.id == child and a and a[1] == "building_changed":
            raise RuntimeError("boom")
        return real(session, appeal, *a, **kw)

    monkeypatch.setattr(appeals, "_event", failing)
    with pytest.raises(RuntimeError), session_scope() as s:
        appeals.perform(s, w.admin, master, "set_building", {"building_id": w.new.id})
    db.expire_all()
    assert db.get(Appeal, master).building_id == w.old.id and db.get(Appeal, child).building_id == w.old.id


def test_a_merged_appeals_own_building_correction_points_to_its_main_appeal(w, db, make_user, client, staff_headers,
                                                                           make_staff):
    master, child = _family(w, make_user)
    r = client.post(f"/api/v1/staff/appeals/{child}/actions", headers=staff_headers(make_staff(role="staff")),
                    json={"action": "set_building", "building_id": w.new.id})
    assert r.status_code == 409
    assert db.get(Appeal, master).number in r.get_json()["message"], r.get_json()


# --- 3. the console says how many open appeals moved and to which grid ----------------------------------------


def _flash(client, r) -> list[str]:
    assert r.status_code == 302, re.findall(r'role="alert"[^>]*>([^<]*)', r.get_data(as_text=True))
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    return re.findall(r'role="status">([^<]*)', page)


def test_the_console_says_which_appeals_an_enterprise_merge_moved(w, db, client, console_login, make_staff,
                                                                   make_enterprise, make_user):
    from wxapp_backend.demo import demo_credit_code

    keep = make_enterprise(name="上海星河科技有限公司", credit_code=demo_credit_code("91310112", 7),
                           building_id=w.new.id)
    dup = make_enterprise(name="星河科技", credit_code="91310106MA0000002X", building_id=w.old.id)
    u = make_user(enterprise_id=dup.id, binding_state="verified")
    _appeal(u.id), _appeal(u.id, TALENT)
    csrf = console_login(make_staff(role="admin"))
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"csrf_token": csrf, "duplicate": str(dup.id)})
    [msg] = _flash(client, r)
    assert "2 件未办结的诉求" in msg and "幸福大楼" in msg and "第二网格" in msg, msg


def test_the_console_says_how_many_open_appeals_a_building_merge_moved_and_where(w, db, client, console_login,
                                                                                  make_staff, make_user):
    u = make_user(building_id=w.old.id)
    _appeal(u.id)
    _close(db, _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢"))
    csrf = console_login(make_staff(role="admin"))
    [msg] = _flash(client, _merge_form(client, w.new.id, w.old.id, csrf, confirm_grid="1"))
    assert "2 件诉求" in msg and "1 件未办结的诉求" in msg and "第二网格" in msg, msg


def test_the_console_says_what_moving_an_enterprise_or_a_building_took_along(w, db, client, console_login,
                                                                             make_staff, make_enterprise, make_user):
    ent = make_enterprise(building_id=w.old.id)
    _appeal(make_user(enterprise_id=ent.id, binding_state="verified").id)
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/enterprises/{ent.id}/edit").get_data(as_text=True)
    form = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    [msg] = _flash(client, client.post(f"/console/enterprises/{ent.id}/edit", data={**form, "building_id": str(w.new.id)}))
    assert "已保存" in msg and "1 件未办结的诉求" in msg and "幸福大楼" in msg and "第二网格" in msg, msg

    page = client.get(f"/console/buildings/{w.new.id}/edit").get_data(as_text=True)
    form = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    [msg] = _flash(client, client.post(f"/console/buildings/{w.new.id}/edit", data={**form, "grid_id": str(w.first.id)}))
    assert "已保存" in msg and "1 件未办结的诉求" in msg and "第一网格" in msg, msg
    # an edit that moves nothing says only that it was saved
    [msg] = _flash(client, client.post(f"/console/buildings/{w.new.id}/edit", data={**form, "grid_id": str(w.first.id)}))
    assert msg == "楼宇档案已保存。", msg


# --- 4. QA: the appeal console's actions (交办 / 改派 / 退单 / 延期 / 办结) ------------------------------------------


@pytest.fixture
def handled(make_user, make_staff, make_grid, make_building):
    """An appeal accepted by the centre and given (交办) to 税务所, with the centre's and the department's accounts."""
    from tests.integration.test_appeals4_qa_s12 import MONDAY

    admin, tax = make_staff(role="admin"), make_staff(role="dept", department="税务所")
    with session_scope() as s:
        appeal, _ = appeals.submit_appeal(s, make_user().id, appeals.Intake(
            content="我们公司的增值税发票开不出来，税控盘坏了", contact_name="张三", contact_phone="13800138000"),
            now=MONDAY)
        actor = Actor("staff", admin.id, role="admin", name="管理员")
        appeals.perform(s, actor, appeal.id, "accept", {}, now=MONDAY)
        appeals.perform(s, actor, appeal.id, "assign", {"department": "税务所"}, now=MONDAY)
        return appeal.id, admin, tax


@pytest.mark.parametrize(("action", "form", "words"), [
    ("reassign", {"handler_id": "1"}, "退单"),
    ("assign", {"department": "城运中心"}, "退单"),
    ("decide_extension", {"accept": "1"}, "审批"),
    ("decide_return", {"accept": "1"}, "审核"),
])
def test_a_department_refused_a_centre_action_is_told_which_and_what_it_can_do(
        handled, client, console_login, action, form, words):
    """A department's 改派 (or a stale page's 交办, 审批) was refused with “您的账号不能进行这个操作。”: not which step,
    whose it is, nor what the department can do instead."""
    appeal_id, admin, tax = handled
    csrf = console_login(tax)
    r = client.post(f"/console/appeals/{appeal_id}/action", data={"csrf_token": csrf, "action": action, **form})
    assert r.status_code == 403
    [msg] = [m for m in re.findall(r'role="alert"[^>]*>([^<]*)', r.get_data(as_text=True)) if "操作未完成" in m]
    label = appeals.ACTIONS[action][2]
    assert label in msg and "营商服务中心" in msg and words in msg, msg


@pytest.mark.parametrize("field", ["version", "handler_id"])
def test_a_number_field_that_is_not_a_number_is_refused_not_skipped(handled, client, console_login, db, field):
    """`version=abc` skipped the stale-page check and `handler_id=abc` made a 交办 without the handler chosen: a box
    that is not a number was taken as empty."""
    appeal_id, admin, tax = handled
    csrf = console_login(admin)
    before = (db.get(Appeal, appeal_id).version, db.get(Appeal, appeal_id).handler_id)
    form = ({"action": "reassign", "handler_id": str(tax.id), "version": "abc"} if field == "version"
            else {"action": "assign", "department": "税务所", "handler_id": "abc"})
    r = client.post(f"/console/appeals/{appeal_id}/action", data={"csrf_token": csrf, **form})
    assert r.status_code == 422, r.status_code
    page = r.get_data(as_text=True)
    [msg] = [m for m in re.findall(r'role="alert"[^>]*>([^<]*)', page) if "操作未完成" in m]
    assert "数字" in msg, msg
    db.expire_all()
    assert (db.get(Appeal, appeal_id).version, db.get(Appeal, appeal_id).handler_id) == before


def test_a_department_acting_on_an_appeal_it_cannot_see_gets_the_not_found_page_only(
        handled, client, console_login, make_staff, staff_headers):
    """A department that cannot see the appeal (given to another) was refused for its role first: the 404 page
    carried “操作未完成：…部门账号不能操作”, telling it of an appeal it may not know of."""
    appeal_id, admin, tax = handled
    city = make_staff(role="dept", department="城运中心")
    csrf = console_login(city)
    r = client.post(f"/console/appeals/{appeal_id}/action", data={"csrf_token": csrf, "action": "assign",
                                                                 "department": "城运中心"})
    assert r.status_code == 404
    assert "操作未完成" not in r.get_data(as_text=True)
    r = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=staff_headers(city),
                    json={"action": "assign", "department": "城运中心"})
    assert r.status_code == 404, r.get_json()
