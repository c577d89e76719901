"""Seventeenth QA pass (grids): a building moved to another grid takes its open appeals along; building and grid
names written with full-width digits or letters are the same name."""

from __future__ import annotations

import re

from sqlalchemy import select

from wxapp_backend.appeals import services as appeals
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises import importer, services
from wxapp_backend.enterprises.models import Building, Grid

ADMIN = Actor("staff", 1, role="admin")


def _appeal(user_id: int, content: str = "楼道里的灯坏了好几天了，麻烦安排物业修一下") -> int:
    with session_scope() as s:
        appeal, _ = appeals.submit_appeal(s, user_id, appeals.Intake(content=content, contact_name="王先生",
                                                                     contact_phone="13800138000"))
        return appeal.id


def _two_grids(make_grid, make_staff):
    one, two = make_staff(role="staff"), make_staff(role="staff")
    return (make_grid(name="第一网格", specialist_name="张专员", specialist_staff_id=one.id),
            make_grid(name="第二网格", specialist_name="李专员", specialist_staff_id=two.id))


def _form(page: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', body)
        fields[name] = chosen.group(1) if chosen else ""
    return fields


# --- 1. a building moved to another grid takes its open appeals along ----------------------------------


def test_a_building_moved_to_another_grid_takes_its_open_appeals_to_the_new_grid_team(
    client, make_grid, make_building, make_user, make_staff, console_login, db
):
    """Appeals are routed to the grid of the building when filed. Moving the building to another grid left its
    open appeals in the old team's list (and with its specialist): the team now serving the building never saw
    them. Open ones now move with the building, closed ones keep the grid that handled them."""
    first, second = _two_grids(make_grid, make_staff)
    b = make_building(name="新华大厦", grid_id=first.id)
    u = make_user(building_id=b.id)
    open_id, closed_id = _appeal(u.id), _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢")
    db.execute(Appeal.__table__.update().where(Appeal.id == closed_id).values(status="closed"))
    assert db.get(Appeal, open_id).grid_id == first.id  # routed by the building when filed

    console_login(make_staff(role="staff"))
    form = _form(client.get(f"/console/buildings/{b.id}/edit").get_data(as_text=True))
    r = client.post(f"/console/buildings/{b.id}/edit", data={**form, "grid_id": str(second.id)})
    assert r.status_code == 302, r.get_data(as_text=True)

    db.expire_all()
    moved, kept = db.get(Appeal, open_id), db.get(Appeal, closed_id)
    assert (moved.grid_id, moved.specialist_staff_id) == (second.id, second.specialist_staff_id)
    assert (kept.grid_id, kept.specialist_staff_id) == (first.id, first.specialist_staff_id)
    # the new team finds it in its list, the old one no longer does
    assert moved.number in client.get(f"/console/appeals?grid_id={second.id}").get_data(as_text=True)
    assert moved.number not in client.get(f"/console/appeals?grid_id={first.id}").get_data(as_text=True)
    # on the appeal's timeline (staff only) and in the building's audit row
    ev = db.scalars(select(AppealEvent).where(AppealEvent.appeal_id == open_id,
                                              AppealEvent.action == "grid_changed")).one()
    assert not ev.public and "第一网格" in ev.note and "第二网格" in ev.note, ev.note
    row = db.scalars(select(AuditLog).where(AuditLog.action == "building.updated")).one()
    assert row.data["rerouted_appeals"] == [open_id] and row.data["changes"]["grid_id"] == [first.id, second.id]
    page = client.get(f"/console/appeals/{open_id}").get_data(as_text=True)
    assert "楼宇调整网格" in page


def test_a_building_moved_by_an_import_takes_its_open_appeals_along_too(
    app_ctx, make_grid, make_building, make_user, make_staff, db
):
    first, second = _two_grids(make_grid, make_staff)
    b = make_building(name="新华大厦", grid_id=first.id)
    open_id = _appeal(make_user(building_id=b.id).id)
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv", "楼宇名称,网格\n新华大厦,第二网格\n".encode())
    assert report.ok and report.updated == 1, report.to_dict()
    db.expire_all()
    assert db.get(Appeal, open_id).grid_id == second.id
    row = db.scalars(select(AuditLog).where(AuditLog.action == "building.updated")).one()
    assert row.data["rerouted_appeals"] == [open_id]


def test_a_grid_given_another_specialist_hands_its_open_appeals_to_them(
    app_ctx, make_grid, make_building, make_user, make_staff, db
):
    first, _second = _two_grids(make_grid, make_staff)
    b = make_building(name="新华大厦", grid_id=first.id)
    open_id = _appeal(make_user(building_id=b.id).id)
    newcomer = make_staff(role="staff")
    with session_scope() as s:
        services.update_grid(s, ADMIN, first.id, {"specialist_staff_id": newcomer.id})
    db.expire_all()
    assert db.get(Appeal, open_id).specialist_staff_id == newcomer.id
    row = db.scalars(select(AuditLog).where(AuditLog.action == "grid.updated")).one()
    assert row.data["rerouted_appeals"] == [open_id]


# --- 2. full-width digits and letters are the same name -----------------------------------------------


def test_a_building_or_grid_name_with_full_width_digits_is_the_one_on_file(
    client, make_grid, make_building, make_staff, console_login, db
):
    """A Chinese input method writes “３号楼”: “创智天地３号楼” was filed as a second building beside “创智天地3号楼”
    (brackets, blanks and case were folded, width was not), with its enterprises and users split between them."""
    make_building(name="创智天地3号楼")
    make_grid(name="第1网格")
    token = console_login(make_staff(role="staff"))
    r = client.post("/console/buildings/new", data={"csrf_token": token, "name": "创智天地３号楼"})
    assert r.status_code == 409 and "已有名为「创智天地3号楼」的楼宇" in r.get_data(as_text=True)
    r = client.post("/console/grids/new", data={"csrf_token": token, "name": "第１网格"})
    assert r.status_code == 409 and "已有名为「第1网格」的网格" in r.get_data(as_text=True)
    assert db.scalar(select(Building.id).where(Building.name == "创智天地３号楼")) is None
    assert db.scalar(select(Grid.id).where(Grid.name == "第１网格")) is None
    # the search finds it written either way
    assert "创智天地3号楼" in client.get("/console/buildings?q=３号楼").get_data(as_text=True)


def test_an_import_reads_full_width_names_as_the_buildings_and_grids_on_file(
    app_ctx, make_grid, make_building, db
):
    g = make_grid(name="第1网格")
    b = make_building(name="创智天地3号楼")
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv",
                                      "楼宇名称,网格\n创智天地３号楼,第１网格\n".encode())
    assert report.ok and (report.created, report.updated) == (0, 1), report.to_dict()
    db.expire_all()
    assert db.get(Building, b.id).grid_id == g.id
    assert db.scalar(select(Building.id).where(Building.name == "创智天地３号楼")) is None
    # the same building twice in one file, once in full-width digits
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv",
                                      "楼宇名称\n漕河泾5号楼\n漕河泾５号楼\n".encode())
    assert not report.ok and "与第 2 行重复" in str(report.errors[0]), report.to_dict()
    # an enterprise's 楼宇 cell in full-width digits finds the building
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv",
                                      "企业名称,统一社会信用代码,楼宇\n上海甲科技有限公司,91310112MA1000077K,创智天地３号楼\n"
                                      .encode())
    assert report.ok, report.to_dict()


# --- 3. a building made by an import has its grid on record --------------------------------------------


def test_a_building_created_by_an_import_has_its_grid_in_the_audit_row(app_ctx, make_grid, db):
    """The console's building.created names the grid the building was put in; an import's did not, so who put a
    building in which grid was not on record for buildings that came from a register."""
    g = make_grid(name="第一网格")
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv", "楼宇名称,网格\n新华大厦,第一网格\n".encode())
    assert report.ok and report.created == 1, report.to_dict()
    row = db.scalars(select(AuditLog).where(AuditLog.action == "building.created")).one()
    assert (row.data["name"], row.data["grid_id"], row.data["via"]) == ("新华大厦", g.id, "import")
