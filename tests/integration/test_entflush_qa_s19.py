"""Nineteenth QA pass (saving and merging 一企一档 files): the reason given when the database refuses a save, and a
file merge against a merge of the building it takes over.

1. A grid, building or enterprise save the database refused for any reason (a building or grid deleted or merged away
   after the form was checked, an empty required column, a clash on another column) was reported as a clash on its
   name or credit code (“统一社会信用代码 … 已登记，请勿重复建档”). Each refusal is now said for what it is. These run
   on SQLite and PostgreSQL; the checks before the write are bypassed to reach the database's own refusal, as a
   colleague's write between the check and the save would.
2. (PostgreSQL) Merging two enterprise files copies the duplicate's building to a kept file that has none, without
   locking it: against a merge of that building the two waited for each other (a deadlock: one of them a 500). Each
   test holds one transaction at a chosen statement (the gates of test_bldrace_qa_s19) while the other runs; the
   last one runs the same interleaving with the lock skipped and shows the deadlock (negative control)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tests.integration.test_bldrace_qa_s19 import (  # noqa: F401 - gates is a fixture
    WAIT,
    _blocked,
    _run,
    gates,
)
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import refusal, session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services
from wxapp_backend.enterprises.models import Building, Enterprise, Grid
from wxapp_backend.errors import AppError

ADMIN = Actor("staff", 1, role="admin")


def code(n: int) -> str:
    return demo_credit_code("91310119", n)


def _refused(fn) -> AppError:
    with pytest.raises(AppError) as caught, session_scope() as s:
        fn(s)
    return caught.value


def _gone_building(make_building, db) -> int:
    b = make_building(name="将被删除的楼宇")
    db.execute(text("DELETE FROM buildings WHERE id = :id"), {"id": b.id})
    return b.id


# --- 1. what the database refused, said for what it is -------------------------------------------------------


@pytest.mark.parametrize("how", ["create", "update"])
def test_an_enterprise_saved_to_a_building_gone_meanwhile_is_told_so_not_a_credit_code_clash(
    app_ctx, make_building, make_enterprise, db, monkeypatch, how
):
    """The building was there when the form was checked and was merged away before the write (the check is skipped
    here, as a colleague's commit in between would make it pass). Before: 409 “统一社会信用代码 … 已登记，请勿重复
    建档” for a code nobody else holds. Now: 422, the building is gone, choose again."""
    gone = _gone_building(make_building, db)
    monkeypatch.setattr(services, "building_to_point_at", lambda s, building_id, **kw: object())
    if how == "create":
        err = _refused(lambda s: services.create_enterprise(s, ADMIN, {"name": "上海启明科技有限公司",
                                                                       "credit_code": code(1),
                                                                       "building_id": gone}))
    else:
        ent = make_enterprise(name="上海启明科技有限公司", credit_code=code(1))
        err = _refused(lambda s: services.update_enterprise(s, ADMIN, ent.id, {"building_id": gone}))
    assert (err.status, err.fields) == (422, {"building_id": "楼宇不存在"}), (err.status, err.message)
    assert "可能已被合并或删除" in err.message and "信用代码" not in err.message, err.message
    assert db.scalar(select(Enterprise.building_id).where(Enterprise.credit_code == code(1))) is None


def test_a_building_saved_to_a_grid_gone_meanwhile_is_told_so_not_a_name_clash(
    app_ctx, make_grid, make_building, db, monkeypatch
):
    grid = make_grid(name="将被删除的网格")
    db.execute(text("DELETE FROM grids WHERE id = :id"), {"id": grid.id})
    monkeypatch.setattr(services, "_check_building", lambda *a, **k: None)
    err = _refused(lambda s: services.create_building(s, ADMIN, {"name": "新建楼宇", "grid_id": grid.id}))
    assert (err.status, err.fields) == (422, {"grid_id": "网格不存在"}), (err.status, err.message)
    assert "可能已被删除" in err.message and "已有名为" not in err.message, err.message
    b = make_building(name="已有楼宇")
    err = _refused(lambda s: services.update_building(s, ADMIN, b.id, {"grid_id": grid.id}))
    assert err.status == 422 and "网格" in err.message and "已有名为" not in err.message, err.message
    assert db.scalar(select(Building.grid_id).where(Building.id == b.id)) is None


def test_a_grid_saved_with_a_staff_account_gone_meanwhile_is_told_so(app_ctx, make_staff, db, monkeypatch):
    staff = make_staff(role="staff")
    db.execute(text("DELETE FROM staff_users WHERE id = :id"), {"id": staff.id})
    monkeypatch.setattr(services, "_check_grid", lambda *a, **k: None)
    err = _refused(lambda s: services.create_grid(s, ADMIN, {"name": "第九网格", "specialist_staff_id": staff.id}))
    assert (err.status, err.fields) == (422, {"specialist_staff_id": "账号不存在"}), (err.status, err.message)
    assert "已有名为" not in err.message
    assert db.scalar(select(Grid.id)) is None


def test_a_credit_code_taken_at_the_same_moment_is_still_a_clash(app_ctx, make_enterprise, monkeypatch):
    """The one refusal that is a clash keeps its words (the check before the write skipped: a colleague's file with
    the same code committed in between)."""
    make_enterprise(name="先建档的企业", credit_code=code(2))
    monkeypatch.setattr(services, "credit_code_conflict", lambda *a, **k: None)
    err = _refused(lambda s: services.create_enterprise(s, ADMIN, {"name": "后建档的企业", "credit_code": code(2)}))
    assert (err.status, err.fields) == (409, {"credit_code": "已存在"})
    assert err.message == f"统一社会信用代码 {code(2)} 已登记，请勿重复建档。"


def _with_values(monkeypatch, **extra: Any) -> None:
    clean = services.clean_values
    monkeypatch.setattr(services, "clean_values", lambda *a, **k: {**clean(*a, **k), **extra})


def test_an_empty_required_column_is_not_called_a_credit_code_clash(app_ctx, monkeypatch, db):
    """A NOT NULL refusal (a value the form's checks let through empty): before, 409 “信用代码已登记”."""
    _with_values(monkeypatch, name=None)
    err = _refused(lambda s: services.create_enterprise(s, ADMIN, {"name": "上海启明科技有限公司",
                                                                   "credit_code": code(3)}))
    assert (err.status, err.fields) == (422, {"name": "必填"}), (err.status, err.message)
    assert "企业名称" in err.message and "信用代码" not in err.message, err.message
    assert db.scalar(select(Enterprise.id)) is None


def test_a_clash_on_another_column_is_not_called_a_credit_code_clash(app_ctx, make_enterprise, monkeypatch, db):
    """A unique clash on a column other than the credit code (here the file number: a PostgreSQL sequence behind the
    rows after a restore does this): before, 409 naming a credit code nobody holds."""
    other = make_enterprise(name="已有的企业", credit_code=code(4))
    _with_values(monkeypatch, id=other.id)
    err = _refused(lambda s: services.create_enterprise(s, ADMIN, {"name": "上海启明科技有限公司",
                                                                   "credit_code": code(5)}))
    assert err.status == 409 and "档案编号" in err.message and "信用代码" not in err.message, err.message
    assert db.scalar(select(Enterprise.credit_code).where(Enterprise.id == other.id)) == code(4)


def test_a_check_constraint_refusal_is_said_as_such(app_ctx):
    """No check constraint guards these tables today; one refused (a table made here) is read as a check on either
    database, and said as a 422 about the values, not as the row's name or code clash."""
    with session_scope() as s:
        s.execute(text("CREATE TEMPORARY TABLE qa19_checked (n INTEGER CONSTRAINT ck_qa19_positive CHECK (n > 0))"))
        with pytest.raises(IntegrityError) as caught:
            s.execute(text("INSERT INTO qa19_checked (n) VALUES (-1)"))
        s.rollback()
    said = refusal(caught.value)
    assert (said.kind, said.constraint) == ("check", "ck_qa19_positive"), said
    err = services._refused(caught.value, "enterprises", "统一社会信用代码 X 已登记，请勿重复建档。", "credit_code")
    assert err.status == 422 and "信用代码" not in err.message, err.message


def test_the_refusal_names_the_constraint_and_its_columns(app_ctx, make_enterprise, make_building):
    """The classification the messages rest on: the constraint's columns from PostgreSQL's error fields or SQLite's
    message, and the foreign key (which SQLite does not name) told apart from a clash."""
    make_enterprise(name="已有的企业", credit_code=code(6))
    said = []
    for row in (Enterprise(name="甲", credit_code=code(6)), Enterprise(name="乙", credit_code=code(7), building_id=10**6),
                Enterprise(name=None, credit_code=code(8))):
        with pytest.raises(IntegrityError) as caught, session_scope() as s:
            s.add(row)
            s.flush()
        said.append(refusal(caught.value))
    assert [(r.kind, r.columns) for r in said[::2]] == [("unique", ("credit_code",)), ("not_null", ("name",))], said
    assert said[1].kind == "foreign_key", said[1]
    assert said[1].columns in ((), ("building_id",)), said[1]  # SQLite does not say which


# --- 2. a file merge against a merge of the building it takes over (PostgreSQL) ------------------------------


def _files(make_building, make_enterprise):
    """The kept file (no building), a duplicate of it (an old file, its code's check digit typed wrong) at the
    duplicate building `dup_b`, which is being merged into `keep_b`."""
    keep_b = make_building(name="环球港A座")
    dup_b = make_building(name="环球港 A座")
    keep = make_enterprise(name="上海云帆科技有限公司", credit_code=code(10))
    typo = code(10)[:17] + ("A" if code(10)[17] != "A" else "B")
    dup = make_enterprise(name="上海云帆科技", credit_code=typo, building_id=dup_b.id, industry="信息技术")
    return keep_b, dup_b, keep, dup


def _merge_files(keep_id: int, dup_id: int):
    return lambda s: services.merge_enterprises(s, ADMIN, keep_id, dup_id).id


def _merge_buildings(keep_id: int, dup_id: int):
    return lambda s: services.merge_buildings(s, ADMIN, keep_id, dup_id, confirm_grid=True)


def _files_locked(sql: str) -> bool:
    """The file merge's lock on the two files (the statement after it is held: the files are held then)."""
    return "FROM enterprises" in sql and "FOR UPDATE OF enterprises" in sql


def _both_went_through(out: dict[str, Any], keep, dup, keep_b, dup_b, db) -> None:
    assert out["files"] == keep.id, repr(out["files"])
    assert isinstance(out["buildings"], dict), repr(out["buildings"])
    db.expire_all()
    kept, retired = db.get(Enterprise, keep.id), db.get(Enterprise, dup.id)
    assert kept.building_id == keep_b.id and kept.industry == "信息技术"
    assert (retired.merged_into_id, retired.building_id) == (keep.id, keep_b.id)
    assert db.get(Building, dup_b.id) is None
    assert db.scalar(select(AuditLog.id).where(AuditLog.action == "enterprise.merged")) is not None


@pytest.mark.postgres
def test_a_building_merge_started_during_a_file_merge_waits_for_it_and_moves_the_kept_file_too(
    app, gates, make_building, make_enterprise, db
):
    """The file merge holds the two files; an admin merges the duplicate's building away meanwhile. Before: the
    building merge waited for the duplicate file, the file merge then waited for the building (the kept file taking
    it): a deadlock, one of the two failed (a 500). Now the file merge has share-locked the building before the files:
    the building merge waits, then moves both files (the kept one has just taken the building) to the kept building."""
    keep_b, dup_b, keep, dup = _files(make_building, make_enterprise)
    held = gates("files", _files_locked, after=True)
    out: dict[str, Any] = {}
    files = _run(app, "files", _merge_files(keep.id, dup.id), out)
    assert held.reached.wait(WAIT)
    buildings = _run(app, "buildings", _merge_buildings(keep_b.id, dup_b.id), out)
    assert _blocked(buildings), out.get("buildings")
    held.go.set()
    files.join(WAIT)
    buildings.join(WAIT)
    _both_went_through(out, keep, dup, keep_b, dup_b, db)
    assert sorted(out["buildings"]["moved"]["enterprises"]) == sorted([keep.id, dup.id])


@pytest.mark.postgres
def test_a_file_merge_started_during_a_building_merge_waits_and_takes_the_building_that_carries_on(
    app, gates, make_building, make_enterprise, db
):
    """The building merge holds the duplicate's building and is about to move its files; a staff member merges the
    two files meanwhile. Before: the file merge took both files at once and waited for the building at its write,
    the building merge waited for the duplicate file: a deadlock. Now the file merge waits for the building first;
    the building merge moves the duplicate file and commits; the kept file then takes the kept building."""
    keep_b, dup_b, keep, dup = _files(make_building, make_enterprise)
    held = gates("buildings", lambda sql: "SELECT enterprises.id" in sql)  # both buildings held, no file yet
    out: dict[str, Any] = {}
    buildings = _run(app, "buildings", _merge_buildings(keep_b.id, dup_b.id), out)
    assert held.reached.wait(WAIT)
    files = _run(app, "files", _merge_files(keep.id, dup.id), out)
    assert _blocked(files), out.get("files")
    held.go.set()
    buildings.join(WAIT)
    files.join(WAIT)
    _both_went_through(out, keep, dup, keep_b, dup_b, db)
    assert out["buildings"]["moved"]["enterprises"] == [dup.id]
    merged = db.scalar(select(AuditLog).where(AuditLog.action == "enterprise.merged"))
    assert merged.data["filled"]["building_id"] == keep_b.id


@pytest.mark.postgres
def test_negative_control_without_the_building_lock_the_same_interleaving_deadlocks(
    app, gates, make_building, make_enterprise, db, monkeypatch
):
    """The first interleaving with the file merge's building lock made a plain read (the code before the fix): the
    two merges wait for each other and PostgreSQL fails one of them, which the tests above would have caught."""
    monkeypatch.setattr(services, "building_to_point_at", lambda s, building_id: s.get(Building, building_id))
    keep_b, dup_b, keep, dup = _files(make_building, make_enterprise)
    held = gates("files", _files_locked, after=True)
    out: dict[str, Any] = {}
    files = _run(app, "files", _merge_files(keep.id, dup.id), out)
    assert held.reached.wait(WAIT)
    buildings = _run(app, "buildings", _merge_buildings(keep_b.id, dup_b.id), out)
    assert _blocked(buildings), out.get("buildings")
    held.go.set()
    files.join(WAIT)
    buildings.join(WAIT)
    failed = [r for r in (out["files"], out["buildings"]) if isinstance(r, Exception)]
    assert len(failed) == 1 and isinstance(failed[0], DBAPIError), out
    assert getattr(failed[0].orig, "sqlstate", None) == "40P01", repr(failed[0])  # deadlock_detected
    assert not any(t.is_alive() for t in threading.enumerate() if t.name in ("files", "buildings"))
