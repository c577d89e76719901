"""Eighteenth QA pass (buildings): a building with open appeals is not deleted; duplicate buildings are merged (one
transaction, everything hanging off the duplicate moves); an enterprise moved to another building takes its open
appeals along; building names stay on one line and hold words."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from wxapp_backend.activities.models import Activity
from wxapp_backend.appeals import services as appeals
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises import importer, services
from wxapp_backend.enterprises.models import Building, Enterprise
from wxapp_backend.errors import Conflict, NotFound, ValidationError
from wxapp_backend.notices.broadcast_models import Notice

ADMIN = Actor("staff", 1, role="admin")


def _appeal(user_id: int, content: str = "楼道里的灯坏了好几天了，麻烦安排物业修一下", **kw) -> int:
    with session_scope() as s:
        appeal, _ = appeals.submit_appeal(s, user_id, appeals.Intake(content=content, contact_name="王先生",
                                                                     contact_phone="13800138000", **kw))
        return appeal.id


def _close(db, appeal_id: int) -> None:
    db.execute(Appeal.__table__.update().where(Appeal.id == appeal_id).values(status="closed"))


def _alerts(page: str) -> list[str]:
    return re.findall(r'role="alert"[^>]*>([^<]*)', page)


def _rows(db, action: str) -> list[AuditLog]:
    return list(db.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def _two_grids(make_grid, make_staff):
    one, two = make_staff(role="staff"), make_staff(role="staff")
    return (make_grid(name="第一网格", specialist_name="张专员", specialist_staff_id=one.id),
            make_grid(name="第二网格", specialist_name="李专员", specialist_staff_id=two.id))


# --- 1. a building with open appeals is not deleted ------------------------------------------------------


def test_a_building_with_open_appeals_is_not_deleted_and_the_page_says_what_to_do(
    client, make_building, make_user, make_staff, console_login, db
):
    """Deleting a building cleared the building (and with it the 一楼一档 record) of its open appeals silently:
    the appeal still being handled no longer said where the problem is. Refused now, naming the appeals and what
    to do; closed appeals do not hold a building (their record keeps the id in the deletion's audit row)."""
    b = make_building(name="环球港A座")
    u = make_user(building_id=b.id)
    open_id, closed_id = _appeal(u.id), _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢")
    _close(db, closed_id)
    number = db.get(Appeal, open_id).number

    with pytest.raises(Conflict) as info, session_scope() as s:
        services.delete_building(s, ADMIN, b.id)
    msg = info.value.message
    assert "1 件未关闭的诉求" in msg and number in msg and "合并" in msg, msg

    csrf = console_login(make_staff(role="admin"))
    r = client.post(f"/console/buildings/{b.id}/delete", data={"csrf_token": csrf})
    assert r.status_code == 409
    [alert] = [a for a in _alerts(r.get_data(as_text=True)) if "未关闭" in a]
    assert number in alert
    assert db.get(Building, b.id) is not None and db.get(Appeal, open_id).building_id == b.id
    assert not _rows(db, "building.deleted")

    # once it is closed the building may go; the appeals it clears are on record
    _close(db, open_id)
    r = client.post(f"/console/buildings/{b.id}/delete", data={"csrf_token": csrf})
    assert r.status_code == 302
    [row] = _rows(db, "building.deleted")
    assert row.data["cleared_appeals"] == [open_id, closed_id]


def test_the_refusal_names_everything_that_still_hangs_off_the_building(
    app_ctx, make_building, make_enterprise, make_user, make_activity
):
    """One refusal at a time sent staff back and forth (first the enterprises, then the activity, then ...)."""
    b = make_building(name="环球港A座")
    make_enterprise(building_id=b.id)
    _appeal(make_user(building_id=b.id).id)
    make_activity(title="午间瑜伽", building_id=b.id)
    with pytest.raises(Conflict) as info, session_scope() as s:
        services.delete_building(s, ADMIN, b.id)
    msg = info.value.message
    assert "1 家企业" in msg and "1 件未关闭的诉求" in msg and "活动「午间瑜伽」" in msg, msg


def test_the_staff_api_deletes_an_unused_building_and_refuses_one_in_use(
    client, make_building, make_user, make_staff, staff_headers, db
):
    used, unused = make_building(name="环球港A座"), make_building(name="空楼")
    _appeal(make_user(building_id=used.id).id)
    admin = staff_headers(make_staff(role="admin"))
    r = client.delete(f"/api/v1/staff/buildings/{used.id}", headers=admin)
    assert r.status_code == 409 and "未关闭的诉求" in r.get_json()["message"], r.get_json()
    r = client.delete(f"/api/v1/staff/buildings/{unused.id}", headers=staff_headers(make_staff(role="staff")))
    assert r.status_code == 403
    r = client.delete(f"/api/v1/staff/buildings/{unused.id}", headers=admin)
    assert r.status_code == 204
    r = client.delete(f"/api/v1/staff/buildings/{unused.id}", headers=admin)  # twice: gone
    assert r.status_code == 404 and "没有找到这栋楼宇" in r.get_json()["message"]
    assert db.get(Building, unused.id) is None and len(_rows(db, "building.deleted")) == 1


# --- 2. duplicate buildings are merged -----------------------------------------------------------------


def _merge_form(client, target_id: int, duplicate_id: int, csrf: str, **extra):
    return client.post(f"/console/buildings/{target_id}/merge",
                       data={"csrf_token": csrf, "duplicate": str(duplicate_id), **extra})


def test_merging_a_duplicate_building_moves_everything_hanging_off_it_and_removes_it(
    client, make_grid, make_building, make_enterprise, make_user, make_activity, make_staff, console_login, db
):
    """Staff typed “环球港 A座” and “环球港A座” (before names were folded): enterprises, users and appeals split
    between the two, and nothing could join them again."""
    grid = make_grid(name="第一网格")
    keep = make_building(name="环球港A座", grid_id=grid.id)
    dup = make_building(name="环球港 A座", grid_id=grid.id)
    ent = make_enterprise(building_id=dup.id)
    user = make_user(building_id=dup.id)
    open_id, closed_id = _appeal(user.id), _appeal(user.id, "去年的空调噪音问题，已经处理好了，谢谢")
    _close(db, closed_id)
    venue = make_activity(title="午间瑜伽", building_id=dup.id)
    for_both = make_activity(title="楼宇音乐会", audience_building_ids=[dup.id, keep.id])
    db.add(Notice(title="停水通知", summary="", audience={"all": False, "building_ids": [dup.id]}))
    db.commit()
    notice_id = db.scalar(select(Notice.id))

    csrf = console_login(make_staff(role="admin"))
    page = client.get(f"/console/buildings/{keep.id}/edit").get_data(as_text=True)
    assert 'id="merge"' in page and f'action="/console/buildings/{keep.id}/merge"' in page
    assert "data-confirm" in page and "环球港 A座" in page  # the duplicate is offered, with a confirmation
    r = _merge_form(client, keep.id, dup.id, csrf)
    assert r.status_code == 302, _alerts(r.get_data(as_text=True))
    assert "已把楼宇「环球港 A座」合并到「环球港A座」" in client.get(r.headers["Location"]).get_data(as_text=True)

    db.expire_all()
    assert db.get(Building, dup.id) is None
    assert db.get(Enterprise, ent.id).building_id == keep.id
    assert db.get(User, user.id).building_id == keep.id
    assert db.get(Appeal, open_id).building_id == keep.id and db.get(Appeal, closed_id).building_id == keep.id
    assert db.get(Activity, venue.id).building_id == keep.id
    assert db.get(Activity, for_both.id).audience_building_ids == [keep.id]
    assert db.get(Notice, notice_id).audience["building_ids"] == [keep.id]
    # the open appeal's timeline says so (staff only); the closed one's record is left as it was
    [ev] = db.scalars(select(AppealEvent).where(AppealEvent.action == "building_changed"))
    assert ev.appeal_id == open_id and not ev.public and "环球港 A座" in ev.note and "环球港A座" in ev.note
    assert "调整楼宇" in client.get(f"/console/appeals/{open_id}").get_data(as_text=True)
    [row] = _rows(db, "building.merged")
    assert row.data["duplicate_id"] == dup.id and row.data["duplicate_name"] == "环球港 A座"
    assert row.data["counts"] == {"enterprises": 1, "appeals": 2, "activities": 1, "activity_audiences": 1,
                                  "notice_audiences": 1, "users": 1}, row.data
    assert row.data["moved"]["appeals"] == [open_id, closed_id]
    assert not _rows(db, "building.deleted")  # the merge's own row says it all


def test_merging_across_grids_needs_a_confirmation_and_the_kept_buildings_grid_wins(
    client, make_grid, make_building, make_user, make_staff, console_login, db
):
    first, second = _two_grids(make_grid, make_staff)
    keep = make_building(name="环球港A座", grid_id=second.id)
    dup = make_building(name="环球港 A座", grid_id=first.id)
    u = make_user(building_id=dup.id)
    open_id, closed_id = _appeal(u.id), _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢")
    _close(db, closed_id)

    csrf = console_login(make_staff(role="admin"))
    r = _merge_form(client, keep.id, dup.id, csrf)
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    [alert] = [a for a in _alerts(page) if "网格" in a]
    assert "第一网格" in alert and "第二网格" in alert, alert
    assert 'name="confirm_grid"' in page
    db.expire_all()
    assert db.get(Building, dup.id) is not None and db.get(Appeal, open_id).building_id == dup.id

    r = _merge_form(client, keep.id, dup.id, csrf, confirm_grid="1")
    assert r.status_code == 302, _alerts(r.get_data(as_text=True))
    db.expire_all()
    moved, kept = db.get(Appeal, open_id), db.get(Appeal, closed_id)
    assert (moved.building_id, moved.grid_id, moved.specialist_staff_id) == (keep.id, second.id,
                                                                            second.specialist_staff_id)
    assert (kept.building_id, kept.grid_id, kept.specialist_staff_id) == (keep.id, first.id,
                                                                         first.specialist_staff_id)
    [ev] = db.scalars(select(AppealEvent).where(AppealEvent.action == "building_changed"))
    assert "第二网格" in ev.note and ev.data["previous_grid_id"] == first.id
    [row] = _rows(db, "building.merged")
    assert row.data["rerouted_appeals"] == [open_id] and row.data["grid_id"] == [first.id, second.id]


def test_a_merge_is_refused_into_itself_from_a_missing_building_and_to_non_admins(
    client, make_building, make_staff, console_login, staff_headers, db
):
    keep, dup = make_building(name="环球港A座"), make_building(name="环球港 A座")
    with pytest.raises(ValidationError, match="同一栋"), session_scope() as s:
        services.merge_buildings(s, ADMIN, keep.id, keep.id)
    with pytest.raises(NotFound), session_scope() as s:
        services.merge_buildings(s, ADMIN, keep.id, 99999)
    with pytest.raises(NotFound), session_scope() as s:
        services.merge_buildings(s, ADMIN, 99999, dup.id)

    staff = make_staff(role="staff")
    csrf = console_login(staff)
    assert 'id="merge"' not in client.get(f"/console/buildings/{keep.id}/edit").get_data(as_text=True)
    assert _merge_form(client, keep.id, dup.id, csrf).status_code == 403
    assert client.post(f"/api/v1/staff/buildings/{keep.id}/merge", json={"duplicate": str(dup.id)},
                       headers=staff_headers(staff)).status_code == 403
    client.get("/console/logout")

    csrf = console_login(make_staff(role="admin"))
    r = client.post(f"/console/buildings/{keep.id}/merge", data={"duplicate": str(dup.id)})  # no CSRF token
    assert r.status_code == 400
    r = _merge_form(client, keep.id, keep.id, csrf)
    assert r.status_code == 422 and any("同一栋" in a for a in _alerts(r.get_data(as_text=True)))
    r = _merge_form(client, keep.id, 99999, csrf)
    assert r.status_code == 404 and any("没有找到" in a for a in _alerts(r.get_data(as_text=True)))
    r = client.post(f"/console/buildings/{keep.id}/merge", data={"csrf_token": csrf, "duplicate": " "})
    assert r.status_code == 422 and _alerts(r.get_data(as_text=True))
    db.expire_all()
    assert db.get(Building, dup.id) is not None and not _rows(db, "building.merged")


def test_the_staff_api_merges_by_id_or_name(client, make_grid, make_building, make_enterprise, make_staff,
                                           staff_headers, db):
    first, second = make_grid(name="第一网格"), make_grid(name="第二网格")
    keep = make_building(name="环球港A座", grid_id=second.id)
    dup = make_building(name="环球港 A座", grid_id=first.id)
    ent = make_enterprise(building_id=dup.id)
    h = staff_headers(make_staff(role="admin"))
    r = client.post(f"/api/v1/staff/buildings/{keep.id}/merge", json={"duplicate": "环球港 A座"}, headers=h)
    assert r.status_code == 409 and r.get_json()["error"] == "grid_differs", r.get_json()
    r = client.post(f"/api/v1/staff/buildings/{keep.id}/merge", json={"duplicate": "环球港 A座",
                                                                     "confirm_grid": True}, headers=h)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["id"] == keep.id and body["merged"]["counts"]["enterprises"] == 1
    assert db.get(Enterprise, ent.id).building_id == keep.id and db.get(Building, dup.id) is None
    r = client.post(f"/api/v1/staff/buildings/{keep.id}/merge", json={"duplicate": str(dup.id)}, headers=h)
    assert r.status_code == 404
    r = client.post(f"/api/v1/staff/buildings/{keep.id}/merge", json={}, headers=h)
    assert r.status_code == 422
    r = client.post(f"/api/v1/staff/buildings/{keep.id}/merge", json={"duplicate": "9" * 25}, headers=h)
    assert r.status_code == 404, r.get_json()  # a number past any id is no building (was a 500)
    assert "/api/v1/staff/buildings/{building_id}/merge" in client.get("/api/v1/openapi.json").get_json()["paths"]


def test_a_merge_that_fails_halfway_leaves_nothing_moved(
    app_ctx, make_building, make_enterprise, make_user, make_activity, monkeypatch, db
):
    keep, dup = make_building(name="环球港A座"), make_building(name="环球港 A座")
    ent = make_enterprise(building_id=dup.id)
    open_id = _appeal(make_user(building_id=dup.id).id)
    venue = make_activity(building_id=dup.id)

    def boom(*a, **kw):
        raise RuntimeError("disk full")

    # after the enterprises and appeals have moved, before the activities do
    monkeypatch.setattr(services, "_move_audiences", boom)
    with pytest.raises(RuntimeError), session_scope() as s:
        services.merge_buildings(s, ADMIN, keep.id, dup.id)
    db.expire_all()
    assert db.get(Building, dup.id) is not None
    assert db.get(Enterprise, ent.id).building_id == dup.id and db.get(Appeal, open_id).building_id == dup.id
    assert db.get(Activity, venue.id).building_id == dup.id
    assert not db.scalars(select(AppealEvent).where(AppealEvent.action == "building_changed")).all()
    assert not _rows(db, "building.merged")


# --- 3. an enterprise moved to another building takes its open appeals along ---------------------------


def _moving(make_grid, make_building, make_enterprise, make_user, make_staff, db):
    first, second = _two_grids(make_grid, make_staff)
    old, new = make_building(name="新华大厦", grid_id=first.id), make_building(name="幸福大楼", grid_id=second.id)
    other = make_building(name="番禺大楼", grid_id=first.id)
    ent = make_enterprise(building_id=old.id)
    u = make_user(enterprise_id=ent.id, binding_state="verified")
    open_id = _appeal(u.id)
    closed_id = _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢")
    elsewhere = _appeal(u.id, "番禺大楼门口的共享单车堆满了人行道", building_id=other.id)
    _close(db, closed_id)
    assert db.get(Appeal, open_id).building_id == old.id
    return first, second, old, new, other, ent, open_id, closed_id, elsewhere


def _check_moved(db, first, second, old, new, other, open_id, closed_id, elsewhere):
    db.expire_all()
    moved, kept, there = db.get(Appeal, open_id), db.get(Appeal, closed_id), db.get(Appeal, elsewhere)
    assert (moved.building_id, moved.grid_id, moved.specialist_staff_id) == (new.id, second.id,
                                                                            second.specialist_staff_id)
    assert (kept.building_id, kept.grid_id) == (old.id, first.id)
    assert (there.building_id, there.grid_id) == (other.id, first.id)  # filed at another building: its own
    [ev] = db.scalars(select(AppealEvent).where(AppealEvent.action == "building_changed"))
    assert ev.appeal_id == open_id and not ev.public and "新华大厦" in ev.note and "幸福大楼" in ev.note
    [row] = _rows(db, "enterprise.updated")
    assert row.data["moved_appeals"] == [open_id]


def test_an_enterprise_moved_in_the_console_takes_its_open_appeals_to_the_new_building(
    client, make_grid, make_building, make_enterprise, make_user, make_staff, console_login, db
):
    """The open appeals an enterprise filed at its old building stayed there (and with the old grid team) after
    staff moved the enterprise: the building's record listed a problem of a company no longer in it."""
    first, second, old, new, other, ent, open_id, closed_id, elsewhere = _moving(
        make_grid, make_building, make_enterprise, make_user, make_staff, db)
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/enterprises/{ent.id}/edit").get_data(as_text=True)
    form = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    r = client.post(f"/console/enterprises/{ent.id}/edit", data={**form, "building_id": str(new.id)})
    assert r.status_code == 302, _alerts(r.get_data(as_text=True))
    _check_moved(db, first, second, old, new, other, open_id, closed_id, elsewhere)


def test_an_enterprise_moved_by_the_api_or_an_import_takes_its_open_appeals_along(
    client, make_grid, make_building, make_enterprise, make_user, make_staff, staff_headers, db
):
    first, second, old, new, other, ent, open_id, closed_id, elsewhere = _moving(
        make_grid, make_building, make_enterprise, make_user, make_staff, db)
    r = client.patch(f"/api/v1/staff/enterprises/{ent.id}", json={"building_id": new.id},
                     headers=staff_headers(make_staff(role="staff")))
    assert r.status_code == 200, r.get_json()
    _check_moved(db, first, second, old, new, other, open_id, closed_id, elsewhere)

    # and back again, by an import
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv",
                                      f"企业名称,统一社会信用代码,楼宇\n{ent.name},{ent.credit_code},新华大厦\n".encode())
    assert report.ok and report.updated == 1, report.to_dict()
    db.expire_all()
    assert (db.get(Appeal, open_id).building_id, db.get(Appeal, open_id).grid_id) == (old.id, first.id)
    row = _rows(db, "enterprise.updated")[-1]
    assert row.data["via"] == "import" and row.data["moved_appeals"] == [open_id]


# --- 4. building names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["环球港\nA座", "？？", "12"])
def test_a_building_name_stays_on_one_line_and_holds_words(client, make_staff, console_login, staff_headers,
                                                          make_building, db, name):
    """“环球港\\nA座” was filed (a line break in every list, export and reply naming it), and so were “？？” and
    “12”: names nobody can find the building by."""
    csrf = console_login(make_staff(role="staff"))
    r = client.post("/console/buildings/new", data={"csrf_token": csrf, "name": name})
    assert r.status_code == 422 and _alerts(r.get_data(as_text=True)), r.status_code
    r = client.post("/api/v1/staff/buildings", json={"name": name}, headers=staff_headers(make_staff(role="staff")))
    assert r.status_code == 422 and "楼宇名称" in r.get_json()["message"], r.get_json()
    assert db.scalar(select(Building.id)) is None
    # a real name with digits is fine
    r = client.post("/api/v1/staff/buildings", json={"name": "1号楼"}, headers=staff_headers(make_staff(role="staff")))
    assert r.status_code == 201
