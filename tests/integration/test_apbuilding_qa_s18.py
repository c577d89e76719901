"""Eighteenth QA pass (appeals and buildings): a merged enterprise file's open appeals follow the kept file's
building; staff correct the building of a single appeal (grid and specialist follow); 派单 / 改派 / 退单 with
buildings and grids."""

from __future__ import annotations

import re

from sqlalchemy import select

from tests.integration.test_buildings_qa_s18 import _alerts, _appeal, _close, _rows, _two_grids
from wxapp_backend.appeals import services as appeals
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services

ADMIN = Actor("staff", 1, role="admin")
INVALID = "91310106MA0000002X"  # an old file's code (no valid check digit): it may be merged into a valid one


def _events(db, action: str = "building_changed") -> list[AppealEvent]:
    db.expire_all()
    return list(db.scalars(select(AppealEvent).where(AppealEvent.action == action).order_by(AppealEvent.id)))


# --- 1. a merged enterprise file's open appeals follow the kept file's building ---------------------------


def _merging(make_grid, make_building, make_enterprise, make_user, make_staff, db, *, kept_building=True):
    first, second = _two_grids(make_grid, make_staff)
    old, new = make_building(name="新华大厦", grid_id=first.id), make_building(name="幸福大楼", grid_id=second.id)
    other = make_building(name="番禺大楼", grid_id=first.id)
    keep = make_enterprise(name="上海星河科技有限公司", credit_code=demo_credit_code("91310112", 7),
                           building_id=new.id if kept_building else None)
    dup = make_enterprise(name="星河科技", credit_code=INVALID, building_id=old.id)
    u = make_user(enterprise_id=dup.id, binding_state="verified")
    open_id = _appeal(u.id)
    closed_id = _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢")
    elsewhere = _appeal(u.id, "番禺大楼门口的共享单车堆满了人行道", building_id=other.id)
    _close(db, closed_id)
    # the kept file's own contact reported a problem at the duplicate's building: about that building, it stays
    mine = _appeal(make_user(enterprise_id=keep.id, binding_state="verified").id,
                   "新华大厦停车场的道闸坏了，进出要排队很久", building_id=old.id)
    assert db.get(Appeal, open_id).building_id == old.id and db.get(Appeal, open_id).enterprise_id == dup.id
    return first, second, old, new, other, keep, dup, open_id, closed_id, elsewhere, mine


def test_a_merged_files_open_appeals_follow_the_kept_files_building(
    client, make_grid, make_building, make_enterprise, make_user, make_staff, console_login, db
):
    """Merging 一企一档 files moved the duplicate's appeals to the kept file but left them at the duplicate's
    building (and with its grid team and specialist), a building the enterprise, now the kept file, is not in."""
    first, second, old, new, other, keep, dup, open_id, closed_id, elsewhere, mine = _merging(
        make_grid, make_building, make_enterprise, make_user, make_staff, db)
    csrf = console_login(make_staff(role="admin"))
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"csrf_token": csrf, "duplicate": str(dup.id)})
    assert r.status_code == 302, _alerts(r.get_data(as_text=True))

    db.expire_all()
    moved, closed, there = db.get(Appeal, open_id), db.get(Appeal, closed_id), db.get(Appeal, elsewhere)
    assert moved.enterprise_id == keep.id
    assert (moved.building_id, moved.grid_id, moved.specialist_staff_id) == (
        new.id, second.id, second.specialist_staff_id)
    assert (closed.building_id, closed.grid_id) == (old.id, first.id)  # closed: on record where it was handled
    assert (there.building_id, there.grid_id) == (other.id, first.id)  # filed about another building
    assert db.get(Appeal, mine).building_id == old.id  # the kept file's own, about the duplicate's building
    [ev] = _events(db)
    assert ev.appeal_id == open_id and not ev.public
    assert "星河科技" in ev.note and "幸福大楼" in ev.note and "第二网格" in ev.note, ev.note
    assert (ev.data["previous_building_id"], ev.data["building_id"]) == (old.id, new.id)
    [row] = _rows(db, "enterprise.merged")
    assert row.data["moved_appeals"] == [open_id]


def test_a_merge_by_the_api_moves_them_too(
    client, make_grid, make_building, make_enterprise, make_user, make_staff, staff_headers, db
):
    first, second, old, new, other, keep, dup, open_id, closed_id, elsewhere, mine = _merging(
        make_grid, make_building, make_enterprise, make_user, make_staff, db)
    r = client.post(f"/api/v1/staff/enterprises/{keep.id}/merge", json={"duplicate": str(dup.id)},
                    headers=staff_headers(make_staff(role="admin")))
    assert r.status_code == 200, r.get_json()
    db.expire_all()
    assert (db.get(Appeal, open_id).building_id, db.get(Appeal, open_id).grid_id) == (new.id, second.id)
    assert _rows(db, "enterprise.merged")[0].data["moved_appeals"] == [open_id]


def test_a_kept_file_without_a_building_leaves_the_appeals_where_they_are(
    make_grid, make_building, make_enterprise, make_user, make_staff, db
):
    first, second, old, new, other, keep, dup, open_id, closed_id, elsewhere, mine = _merging(
        make_grid, make_building, make_enterprise, make_user, make_staff, db, kept_building=False)
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    db.expire_all()
    assert (db.get(Appeal, open_id).building_id, db.get(Appeal, open_id).grid_id) == (old.id, first.id)
    assert db.get(type(keep), keep.id).building_id == old.id  # filled from the duplicate, as before
    assert not _events(db)
    assert "moved_appeals" not in _rows(db, "enterprise.merged")[0].data


# --- 2. staff correct a single appeal's building ---------------------------------------------------------

TALENT = "想咨询一下人才公寓的申请条件和办理流程"


def _routed(make_grid, make_building, make_user, make_staff, *, status: str = "assigned"):
    """An appeal filed at the wrong building (新华大厦, 第一网格), accepted and given to 人才服务中心 with a handler."""
    first, second = _two_grids(make_grid, make_staff)
    wrong, right = make_building(name="新华大厦", grid_id=first.id), make_building(name="幸福大楼", grid_id=second.id)
    handler = make_staff(role="dept", department="人才服务中心")
    appeal_id = _appeal(make_user().id, TALENT, building_id=wrong.id, category="talent")
    with session_scope() as s:
        if status != "submitted":
            appeals.perform(s, ADMIN, appeal_id, "accept", {})
            appeals.perform(s, ADMIN, appeal_id, "assign", {"department": "人才服务中心", "handler_id": handler.id})
    return first, second, wrong, right, handler, appeal_id


def _check_corrected(db, appeal_id, first, second, wrong, right, handler, version):
    db.expire_all()
    a = db.get(Appeal, appeal_id)
    assert (a.building_id, a.grid_id, a.specialist_staff_id) == (right.id, second.id, second.specialist_staff_id)
    # who handles it is the category's business, not the building's: the 交办 stands
    assert (a.department, a.handler_id, a.status) == ("人才服务中心", handler.id, "assigned")
    assert a.version == version + 1
    [ev] = _events(db)
    assert ev.appeal_id == appeal_id and not ev.public and ev.actor_type == "staff"
    assert "新华大厦" in ev.note and "幸福大楼" in ev.note and "第二网格" in ev.note, ev.note
    [row] = _rows(db, "appeal.building_changed")
    assert (row.data["previous_building_id"], row.data["building_id"]) == (wrong.id, right.id)
    assert (row.data["previous_grid_id"], row.data["grid_id"]) == (first.id, second.id)


def test_staff_correct_an_appeals_building_through_the_api(
    client, make_grid, make_building, make_user, make_staff, staff_headers, db
):
    """The enterprise picked the wrong building (or a walk-in was filed at one): nothing let staff correct it, so
    the appeal stayed in the wrong building's record and with the wrong grid team and specialist."""
    first, second, wrong, right, handler, appeal_id = _routed(make_grid, make_building, make_user, make_staff)
    version = db.get(Appeal, appeal_id).version
    headers = staff_headers(make_staff(role="staff"))
    r = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=headers,
                    json={"action": "set_building", "building_id": right.id, "version": version,
                          "note": "企业来电说选错了楼宇"})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["building_id"] == right.id
    assert any(e["action"] == "building_changed" for e in body["timeline"])  # staff read it
    _check_corrected(db, appeal_id, first, second, wrong, right, handler, version)
    assert "选错了楼宇" in _events(db)[0].note

    # the same building again: nothing to do, nothing recorded
    r = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=headers,
                    json={"action": "set_building", "building_id": right.id})
    assert r.status_code == 200, r.get_json()
    assert len(_events(db)) == 1 and len(_rows(db, "appeal.building_changed")) == 1
    assert db.get(Appeal, appeal_id).version == version + 1


def test_a_building_correction_is_refused_for_an_unknown_building_a_closed_appeal_and_a_department(
    client, make_grid, make_building, make_user, make_staff, staff_headers, db
):
    first, second, wrong, right, handler, appeal_id = _routed(make_grid, make_building, make_user, make_staff)
    headers = staff_headers(make_staff(role="staff"))
    url = f"/api/v1/staff/appeals/{appeal_id}/actions"
    for body in ({"action": "set_building", "building_id": 99999}, {"action": "set_building"},
                 {"action": "set_building", "building_id": "幸福大楼"}):
        r = client.post(url, headers=headers, json=body)
        assert r.status_code in (404, 422), (body, r.status_code)
        assert re.search(r"[\u4e00-\u9fff]", r.get_json()["message"]), r.get_json()
    # a department handles it; where it is is the centre's to correct (as 交办 / 改派 are)
    r = client.post(url, headers=staff_headers(handler), json={"action": "set_building", "building_id": right.id})
    assert r.status_code == 403, r.get_json()
    _close(db, appeal_id)
    r = client.post(url, headers=headers, json={"action": "set_building", "building_id": right.id})
    assert r.status_code == 409 and "楼宇" in r.get_json()["message"], r.get_json()
    db.expire_all()
    assert db.get(Appeal, appeal_id).building_id == wrong.id
    assert not _events(db) and not _rows(db, "appeal.building_changed")


def test_staff_correct_an_appeals_building_on_its_console_page(
    client, make_grid, make_building, make_user, make_staff, console_login, db
):
    first, second, wrong, right, handler, appeal_id = _routed(make_grid, make_building, make_user, make_staff)
    version = db.get(Appeal, appeal_id).version
    csrf = console_login(make_staff(role="staff"))
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert 'id="action-set_building"' in page and "幸福大楼" in page
    form = {"action": "set_building", "building_id": str(right.id), "version": str(version)}
    r = client.post(f"/console/appeals/{appeal_id}/action", data=form)  # no CSRF token
    assert r.status_code == 400
    db.expire_all()
    assert db.get(Appeal, appeal_id).building_id == wrong.id
    r = client.post(f"/console/appeals/{appeal_id}/action", data={**form, "csrf_token": csrf})
    assert r.status_code == 302
    _check_corrected(db, appeal_id, first, second, wrong, right, handler, version)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert "调整楼宇" in page  # the timeline row, read by staff

    # an unknown building: the page again, saying so, nothing changed
    r = client.post(f"/console/appeals/{appeal_id}/action",
                    data={**form, "building_id": "99999", "version": str(version + 1), "csrf_token": csrf})
    assert r.status_code in (404, 422) and "楼宇" in r.get_data(as_text=True)
    # closed: 409 and no form
    _close(db, appeal_id)
    r = client.post(f"/console/appeals/{appeal_id}/action",
                    data={**form, "building_id": str(wrong.id), "version": str(version + 1), "csrf_token": csrf})
    assert r.status_code == 409
    assert 'id="action-set_building"' not in client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    db.expire_all()
    assert db.get(Appeal, appeal_id).building_id == right.id and len(_events(db)) == 1


def test_a_department_sees_no_building_form(client, make_grid, make_building, make_user, make_staff, console_login):
    *_, handler, appeal_id = _routed(make_grid, make_building, make_user, make_staff)
    console_login(handler)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert 'id="action-set_building"' not in page


def test_the_enterprise_cannot_change_its_appeals_building(
    client, make_grid, make_building, make_user, make_staff, user_token, db
):
    """The building is staff's record once filed: the mini-program's own endpoints never take one."""
    first, second = _two_grids(make_grid, make_staff)
    wrong, right = make_building(name="新华大厦", grid_id=first.id), make_building(name="幸福大楼", grid_id=second.id)
    u = make_user()
    appeal_id = _appeal(u.id, TALENT, building_id=wrong.id)
    with session_scope() as s:
        appeals.perform(s, ADMIN, appeal_id, "accept", {})
        appeals.perform(s, ADMIN, appeal_id, "request_info", {"note": "请补充您的学历证明"})
    headers = user_token(u)
    r = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=headers,
                    json={"action": "set_building", "building_id": right.id})
    assert r.status_code in (401, 403)
    for method in ("patch", "put"):
        r = getattr(client, method)(f"/api/v1/appeals/{appeal_id}", headers=headers, json={"building_id": right.id})
        assert r.status_code in (404, 405)
    client.post(f"/api/v1/appeals/{appeal_id}/supplement", headers=headers,
                json={"content": "学历证明已经拍照上传了，请查收", "building_id": right.id})
    db.expire_all()
    assert db.get(Appeal, appeal_id).building_id == wrong.id and not _events(db)


# --- 3. QA: 派单 / 改派 / 退单 with buildings and grids ----------------------------------------------------


def test_an_appeal_back_in_handling_goes_to_the_grid_now_serving_its_building(
    make_grid, make_building, make_user, make_staff, db
):
    """A building moved to another grid takes only its open appeals along: one 已办结 (awaiting the rating) or
    已合并 stayed with the old grid, and when the enterprise said “未解决” (or staff split the merged one off) it was
    handled again by the old grid team and specialist, who no longer serve the building."""
    first, second = _two_grids(make_grid, make_staff)
    b = make_building(name="新华大厦", grid_id=first.id)
    u = make_user()
    resolved_id = _appeal(u.id, TALENT, building_id=b.id, category="talent")
    master_id = _appeal(make_user().id, "人才公寓的申请条件是什么，需要哪些材料", building_id=b.id, category="talent")
    child_id = _appeal(make_user().id, "请问人才公寓怎么申请，要准备什么", building_id=b.id, category="talent")
    with session_scope() as s:
        for aid in (resolved_id, master_id):
            appeals.perform(s, ADMIN, aid, "accept", {})
        appeals.perform(s, ADMIN, child_id, "merge", {"master_id": master_id})
        appeals.perform(s, ADMIN, resolved_id, "resolve", {"resolution": "已电话告知申请条件"})
    with session_scope() as s:
        services.update_building(s, ADMIN, b.id, {"grid_id": second.id})
    db.expire_all()
    assert db.get(Appeal, resolved_id).grid_id == first.id  # not being handled: on record where it was

    with session_scope() as s:
        appeals.rate(s, u.id, resolved_id, resolved=False, satisfaction=2, comment="还是不清楚")
        appeals.perform(s, ADMIN, child_id, "split", {})
    db.expire_all()
    for aid in (resolved_id, child_id):
        a = db.get(Appeal, aid)
        assert a.status in ("in_progress", "accepted")
        assert (a.grid_id, a.specialist_staff_id) == (second.id, second.specialist_staff_id), aid
    moved = {e.appeal_id for e in _events(db, "grid_changed") if e.data["previous_grid_id"] == first.id}
    assert {resolved_id, child_id} <= moved
