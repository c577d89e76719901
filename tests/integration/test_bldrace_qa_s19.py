"""Nineteenth QA pass (building merge races, PostgreSQL): a staff member pointing an appeal or an enterprise at a
duplicate building while an admin merges that building away, and the merge moving rows a colleague is moving.

Each test holds one transaction at a chosen statement (an engine hook keyed by thread name) while the other runs,
so the interleaving is the same on every run; on the code before the fix each of them fails (negative control)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from tests.integration.test_buildings_qa_s18 import _appeal, _rows, _two_grids
from wxapp_backend.appeals import services as appeals
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.audit import Actor
from wxapp_backend.db import get_db, session_scope
from wxapp_backend.enterprises import services
from wxapp_backend.enterprises.models import Enterprise
from wxapp_backend.errors import AppError

pytestmark = pytest.mark.postgres

ADMIN = Actor("staff", 1, role="admin")
WAIT = 10  # seconds: far past any real step, short enough that a hang fails the test instead of the run


class Gate:
    """Holds the thread named `who` just before it sends a statement `when(sql)` accepts (with `after`: the statement
    or the commit after that one, so that the one accepted has run and holds its locks), until `go` is set."""

    def __init__(self, who: str, when: Callable[[str], bool], after: bool = False) -> None:
        self.who, self.when, self.after, self.seen = who, when, after, False
        self.reached, self.go = threading.Event(), threading.Event()

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.current_thread().name != self.who or self.reached.is_set():
            return
        if self.after and not self.seen:
            self.seen = self.when(statement)
            return
        if self.after or self.when(statement):
            self.hold()

    def on_commit(self, conn) -> None:
        if threading.current_thread().name == self.who and self.after and self.seen and not self.reached.is_set():
            self.hold()

    def hold(self) -> None:
        self.reached.set()
        assert self.go.wait(WAIT), "the held transaction was never let go"


@pytest.fixture
def gates(app_ctx) -> Iterator[Callable[..., Gate]]:
    engine = get_db().engine
    made: list[Gate] = []

    def gate(who: str, when: Callable[[str], bool], after: bool = False) -> Gate:
        g = Gate(who, when, after)
        event.listen(engine, "before_cursor_execute", g)
        event.listen(engine, "commit", g.on_commit)
        made.append(g)
        return g

    yield gate
    for g in made:
        g.go.set()
        event.remove(engine, "before_cursor_execute", g)
        event.remove(engine, "commit", g.on_commit)


def _run(app, name: str, fn: Callable[[Any], Any], out: dict[str, Any]) -> threading.Thread:
    """`fn(session)` in its own transaction on a thread called `name`; its result or error lands in out[name]."""

    def body() -> None:
        with app.app_context():
            try:
                with session_scope() as s:
                    out[name] = fn(s)
            except Exception as exc:  # noqa: BLE001 - the test looks at what it was
                out[name] = exc

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    return t


def _writes_building(table: str) -> Callable[[str], bool]:
    """The statement pointing a row of `table` at another building (not an earlier one bumping its version)."""
    return lambda sql: sql.lstrip().startswith(f"UPDATE {table} SET") and "building_id=" in sql.split("WHERE")[0]


def _merge(keep_id: int, dup_id: int) -> Callable[[Any], Any]:
    return lambda s: services.merge_buildings(s, ADMIN, keep_id, dup_id, confirm_grid=True)


def _set_building(appeal_id: int, building_id: int) -> Callable[[Any], Any]:
    return lambda s: appeals.perform(s, ADMIN, appeal_id, "set_building", {"building_id": building_id}).id


def _move_enterprise(enterprise_id: int, building_id: int) -> Callable[[Any], Any]:
    return lambda s: services.update_enterprise(s, ADMIN, enterprise_id, {"building_id": building_id}).id


def _blocked(t: threading.Thread) -> bool:
    t.join(0.5)
    return t.is_alive()


def _setup(make_grid, make_building, make_user, make_staff):
    first, second = _two_grids(make_grid, make_staff)
    keep = make_building(name="环球港A座", grid_id=second.id)
    dup = make_building(name="环球港 A座", grid_id=first.id)
    other = make_building(name="新华大厦", grid_id=first.id)
    appeal_id = _appeal(make_user(building_id=other.id).id, building_id=other.id)
    return first, second, keep, dup, other, appeal_id


# --- 1. set_building on an appeal against a merge of the building it names ------------------------------------


def test_set_building_after_the_merge_locked_the_building_waits_and_is_told_it_was_merged(
    app, gates, make_grid, make_building, make_user, make_staff, db
):
    """The merge holds the duplicate; a staff member points an appeal at it meanwhile. Before: the staff
    transaction failed on the foreign key once the merge committed (a 500 “服务器开小差”); now it waits, finds the
    building gone and says so, as for a building deleted before the page was opened. The appeal stays put."""
    first, second, keep, dup, other, appeal_id = _setup(make_grid, make_building, make_user, make_staff)
    held = gates("merge", lambda sql: "SELECT enterprises.id" in sql)  # the merge holds both buildings now
    out: dict[str, Any] = {}
    merge = _run(app, "merge", _merge(keep.id, dup.id), out)
    assert held.reached.wait(WAIT)
    staff = _run(app, "staff", _set_building(appeal_id, dup.id), out)
    assert _blocked(staff), out.get("staff")  # it waits for the merge to commit or roll back
    held.go.set()
    merge.join(WAIT)
    staff.join(WAIT)
    assert isinstance(out["merge"], dict), out["merge"]
    assert isinstance(out["staff"], AppError), repr(out["staff"])
    assert out["staff"].status == 422 and "可能已被合并或删除" in out["staff"].message, out["staff"].message
    db.expire_all()
    a = db.get(Appeal, appeal_id)
    assert (a.building_id, a.grid_id) == (other.id, first.id)


def test_set_building_committed_first_is_moved_along_by_the_merge(
    app, gates, make_grid, make_building, make_user, make_staff, db
):
    """The staff member has checked the building and is about to write; the merge starts. Before: the merge did not
    wait (nothing held the building yet), deleted it, and the staff member's save failed on the foreign key. Now
    the merge waits for that save, then moves the appeal along to the kept building and its grid with the others."""
    first, second, keep, dup, other, appeal_id = _setup(make_grid, make_building, make_user, make_staff)
    held = gates("staff", _writes_building("appeals"))
    out: dict[str, Any] = {}
    staff = _run(app, "staff", _set_building(appeal_id, dup.id), out)
    assert held.reached.wait(WAIT)
    merge = _run(app, "merge", _merge(keep.id, dup.id), out)
    _blocked(merge)  # (the fixed merge waits here; the old one ran through)
    held.go.set()
    staff.join(WAIT)
    merge.join(WAIT)
    assert out["staff"] == appeal_id, repr(out["staff"])
    assert isinstance(out["merge"], dict), repr(out["merge"])
    assert appeal_id in out["merge"]["moved"]["appeals"]
    db.expire_all()
    a = db.get(Appeal, appeal_id)
    assert (a.building_id, a.grid_id, a.specialist_staff_id) == (keep.id, second.id, second.specialist_staff_id)
    [row] = _rows(db, "building.merged")
    assert appeal_id in row.data["rerouted_appeals"]


# --- 2. an enterprise moved to the building being merged ------------------------------------------------------


def test_enterprise_moved_to_the_building_being_merged_waits_and_is_told(
    app, gates, make_grid, make_building, make_enterprise, make_user, make_staff, db
):
    first, second, keep, dup, other, _ = _setup(make_grid, make_building, make_user, make_staff)
    ent = make_enterprise(building_id=other.id)
    held = gates("merge", lambda sql: "SELECT enterprises.id" in sql)
    out: dict[str, Any] = {}
    merge = _run(app, "merge", _merge(keep.id, dup.id), out)
    assert held.reached.wait(WAIT)
    staff = _run(app, "staff", _move_enterprise(ent.id, dup.id), out)
    assert _blocked(staff), out.get("staff")
    held.go.set()
    merge.join(WAIT)
    staff.join(WAIT)
    assert isinstance(out["merge"], dict), out["merge"]
    assert isinstance(out["staff"], AppError), repr(out["staff"])
    assert "可能已被合并或删除" in out["staff"].message, out["staff"].message
    db.expire_all()
    assert db.get(Enterprise, ent.id).building_id == other.id


def test_enterprise_moved_first_is_moved_along_by_the_merge(
    app, gates, make_grid, make_building, make_enterprise, make_user, make_staff, db
):
    first, second, keep, dup, other, _ = _setup(make_grid, make_building, make_user, make_staff)
    ent = make_enterprise(building_id=other.id)
    held = gates("staff", _writes_building("enterprises"))
    out: dict[str, Any] = {}
    staff = _run(app, "staff", _move_enterprise(ent.id, dup.id), out)
    assert held.reached.wait(WAIT)
    merge = _run(app, "merge", _merge(keep.id, dup.id), out)
    _blocked(merge)
    held.go.set()
    staff.join(WAIT)
    merge.join(WAIT)
    assert out["staff"] == ent.id, repr(out["staff"])
    assert isinstance(out["merge"], dict), repr(out["merge"])
    assert ent.id in out["merge"]["moved"]["enterprises"]
    db.expire_all()
    assert db.get(Enterprise, ent.id).building_id == keep.id
    assert db.scalar(select(Enterprise.id).where(Enterprise.building_id.is_(None))) is None


# --- 3. a deletion of the building an appeal is being pointed at ---------------------------------------------


def test_a_building_deleted_while_an_appeal_is_pointed_at_it_is_refused_not_cleared_from_the_appeal(
    app, gates, make_grid, make_building, make_user, make_staff, db
):
    """The staff member's save has written the appeal (uncommitted) when an admin deletes the building. Before: the
    deletion's checks did not see the appeal, its DELETE waited for the save, and ON DELETE SET NULL then cleared the
    building the staff member had just been told was set (the deletion's audit row did not list it either). Now the
    deletion locks the building first, waits for the save, sees the open appeal and refuses."""
    first, second, keep, dup, other, appeal_id = _setup(make_grid, make_building, make_user, make_staff)
    held = gates("staff", _writes_building("appeals"), after=True)
    out: dict[str, Any] = {}
    staff = _run(app, "staff", _set_building(appeal_id, dup.id), out)
    assert held.reached.wait(WAIT)
    delete = _run(app, "delete", lambda s: services.delete_building(s, ADMIN, dup.id), out)
    assert _blocked(delete), out.get("delete")
    held.go.set()
    staff.join(WAIT)
    delete.join(WAIT)
    assert out["staff"] == appeal_id, repr(out["staff"])
    db.expire_all()
    a = db.get(Appeal, appeal_id)
    assert (a.building_id, a.grid_id) == (dup.id, first.id)
    assert isinstance(out["delete"], AppError) and out["delete"].status == 409, repr(out["delete"])
    assert a.number in out["delete"].message, out["delete"].message


# --- 4. the merge and a colleague moving one of the duplicate's appeals ------------------------------------------


def _at_duplicate(make_grid, make_building, make_user, make_staff):
    first, second, keep, dup, other, _ = _setup(make_grid, make_building, make_user, make_staff)
    appeal_id = _appeal(make_user(building_id=dup.id).id, building_id=dup.id)
    return first, second, keep, dup, other, appeal_id


def test_an_appeal_moved_off_the_duplicate_meanwhile_is_not_moved_back_by_the_merge(
    app, gates, make_grid, make_building, make_user, make_staff, db
):
    """A staff member moves one of the duplicate's appeals to another building while the merge runs. Before: the
    merge had read it as the duplicate's, waited for the save and then wrote it over with the kept building (and
    that grid): the staff member's correction was silently undone. Now the merge locks and re-reads the rows it
    moves, and leaves it where the staff member put it."""
    first, second, keep, dup, other, appeal_id = _at_duplicate(make_grid, make_building, make_user, make_staff)
    held = gates("staff", _writes_building("appeals"), after=True)
    out: dict[str, Any] = {}
    staff = _run(app, "staff", _set_building(appeal_id, other.id), out)
    assert held.reached.wait(WAIT)
    merge = _run(app, "merge", _merge(keep.id, dup.id), out)
    assert _blocked(merge), out.get("merge")
    held.go.set()
    staff.join(WAIT)
    merge.join(WAIT)
    assert out["staff"] == appeal_id, repr(out["staff"])
    assert isinstance(out["merge"], dict), repr(out["merge"])
    assert appeal_id not in out["merge"]["moved"].get("appeals", [])
    db.expire_all()
    a = db.get(Appeal, appeal_id)
    assert (a.building_id, a.grid_id) == (other.id, first.id)


def test_an_appeal_moved_from_the_duplicate_to_the_kept_building_by_hand_does_not_deadlock_the_merge(
    app, gates, make_grid, make_building, make_user, make_staff, db
):
    """The merge holds both buildings; a staff member moves one of the duplicate's appeals to the kept building
    meanwhile. Before: the staff member held the appeal and waited for the kept building, the merge waited for the
    appeal: PostgreSQL broke the deadlock by failing one of them (a 500). Now the kept building is locked only
    against deletion and merging, the staff member's move goes through and the merge finds nothing left to move."""
    first, second, keep, dup, other, appeal_id = _at_duplicate(make_grid, make_building, make_user, make_staff)
    held = gates("merge", lambda sql: "SELECT enterprises.id" in sql)
    out: dict[str, Any] = {}
    merge = _run(app, "merge", _merge(keep.id, dup.id), out)
    assert held.reached.wait(WAIT)
    staff = _run(app, "staff", _set_building(appeal_id, keep.id), out)
    staff.join(1)
    held.go.set()
    staff.join(WAIT)
    merge.join(WAIT)
    assert out["staff"] == appeal_id, repr(out["staff"])
    assert isinstance(out["merge"], dict), repr(out["merge"])
    assert appeal_id not in out["merge"]["moved"].get("appeals", [])
    db.expire_all()
    a = db.get(Appeal, appeal_id)
    assert (a.building_id, a.grid_id, a.specialist_staff_id) == (keep.id, second.id, second.specialist_staff_id)
