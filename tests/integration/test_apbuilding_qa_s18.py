"""Eighteenth QA pass (appeals and buildings): a merged enterprise file's open appeals follow the kept file's
building; staff correct the building of a single appeal (grid and specialist follow); 派单 / 改派 / 退单 with
buildings and grids."""

from __future__ import annotations

from sqlalchemy import select

from tests.integration.test_buildings_qa_s18 import _alerts, _appeal, _close, _rows, _two_grids
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
