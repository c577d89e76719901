"""Twenty-first QA pass (small gaps): what SQLite's foreign-key refusal is about, the CLI's top-level help in
Chinese, and the QR-code views of the console shared by activities and enterprises.

1. SQLite's error for a refused foreign key names neither the table nor the column (PostgreSQL's does): an
   enterprise file pointing at a building deleted meanwhile and also carrying another reference was told the
   catch-all “选择的楼宇、网格或工作人员账号可能已被合并或删除” on SQLite where PostgreSQL said which (楼宇不存在),
   and a refusal of another row written in the same flush was blamed on the saved row's own reference on SQLite.
   db.refusal, given the session, now runs the statement again with the foreign keys deferred in a savepoint and
   asks `PRAGMA foreign_key_check` which key it broke. These run on SQLite and PostgreSQL (where nothing changed)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from wxapp_backend.audit import Actor
from wxapp_backend.db import Refusal, refusal, session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services
from wxapp_backend.enterprises.models import Building, Enterprise
from wxapp_backend.errors import AppError

ADMIN = Actor("staff", 1, role="admin")
GONE = 10**6


def code(n: int) -> str:
    return demo_credit_code("91310121", n)


def _refused(fn) -> AppError:
    with pytest.raises(AppError) as caught, session_scope() as s:
        fn(s)
    return caught.value


def _said(*rows: Any, savepoint: bool = False) -> Refusal:
    """What refusal() makes of the database's refusal of writing `rows`, asked with the session the write failed
    in (its transaction rolled back by the failed flush, or still open when the flush was in a savepoint)."""
    with session_scope() as s:
        try:
            if savepoint:
                s.execute(text("SELECT 1"))
                with s.begin_nested():
                    s.add_all(rows)
                    s.flush()
            else:
                s.add_all(rows)
                s.flush()
        except IntegrityError as exc:
            said = refusal(exc, s)
        else:
            raise AssertionError("the write was not refused")
        s.rollback()
    return said


# --- 1. SQLite's foreign-key refusal traced to its column ----------------------------------------------------


@pytest.mark.parametrize("savepoint", [False, True], ids=["rolled-back", "savepoint"])
def test_a_foreign_key_refusal_names_its_table_column_and_constraint_on_either_database(
    app_ctx, make_building, make_enterprise, savepoint
):
    """Before, on SQLite: Refusal("foreign_key") with no table, column or constraint."""
    b = make_building(name="在的楼宇")
    other = make_enterprise(name="已有的企业", credit_code=code(1))
    said = _said(Enterprise(name="甲", credit_code=code(2), building_id=GONE, merged_into_id=other.id),
                 savepoint=savepoint)
    assert said == Refusal("foreign_key", "enterprises", ("building_id",), "fk_enterprises_building_id_buildings")
    said = _said(Enterprise(name="乙", credit_code=code(3), building_id=b.id, merged_into_id=GONE),
                 savepoint=savepoint)
    assert said == Refusal("foreign_key", "enterprises", ("merged_into_id",),
                           "fk_enterprises_merged_into_id_enterprises")


def test_an_update_refused_for_a_foreign_key_is_traced_too(app_ctx, make_enterprise, db):
    ent = make_enterprise(name="已有的企业", credit_code=code(4))
    with session_scope() as s:
        s.get(Enterprise, ent.id).building_id = GONE
        with pytest.raises(IntegrityError) as caught:
            s.flush()
        said = refusal(caught.value, s)
        s.rollback()
    assert (said.kind, said.table, said.columns) == ("foreign_key", "enterprises", ("building_id",)), said
    assert db.scalar(select(Enterprise.building_id).where(Enterprise.id == ent.id)) is None


def test_the_trace_leaves_the_foreign_keys_enforced_in_the_transaction_it_ran_in(app_ctx, make_building, db):
    """The trace defers the foreign keys for its statement only: the same transaction goes on refusing a dangling
    reference at once, and keeps what it wrote before."""
    with session_scope() as s:
        s.add(Building(name="先写的楼宇"))
        s.flush()
        with pytest.raises(IntegrityError) as caught, s.begin_nested():
            s.add(Enterprise(name="甲", credit_code=code(5), building_id=GONE))
            s.flush()
        assert refusal(caught.value, s).columns == ("building_id",)
        with pytest.raises(IntegrityError), s.begin_nested():
            s.add(Enterprise(name="乙", credit_code=code(6), building_id=GONE))
            s.flush()
    assert db.scalar(select(Building.name)) == "先写的楼宇"
    assert db.scalar(select(Enterprise.id)) is None


def test_without_the_session_the_refusal_is_read_from_the_error_alone(app_ctx):
    with session_scope() as s:
        s.add(Enterprise(name="甲", credit_code=code(7), building_id=GONE))
        with pytest.raises(IntegrityError) as caught:
            s.flush()
        s.rollback()
    said = refusal(caught.value)
    assert said.kind == "foreign_key"
    assert said.columns in ((), ("building_id",)), said  # SQLite's message alone does not say which


def _with_values(monkeypatch, **extra: Any) -> None:
    clean = services.clean_values
    monkeypatch.setattr(services, "clean_values", lambda *a, **k: {**clean(*a, **k), **extra})


def test_a_file_with_two_references_saved_to_a_building_gone_meanwhile_is_told_which_on_sqlite_too(
    app_ctx, make_building, make_enterprise, db, monkeypatch
):
    """The file points at a building (deleted meanwhile: the check before the write skipped, as a colleague's commit
    in between would make it pass) and at another file. PostgreSQL named the building's key: 422 楼宇不存在. SQLite
    named none, and with two references held the save could not tell which: the catch-all, no field marked."""
    other = make_enterprise(name="已有的企业", credit_code=code(8))
    gone = make_building(name="将被删除的楼宇")
    db.execute(text("DELETE FROM buildings WHERE id = :id"), {"id": gone.id})
    monkeypatch.setattr(services, "building_to_point_at", lambda s, building_id, **kw: object())
    _with_values(monkeypatch, merged_into_id=other.id)
    err = _refused(lambda s: services.create_enterprise(s, ADMIN, {"name": "上海启明科技有限公司",
                                                                   "credit_code": code(9), "building_id": gone.id}))
    assert (err.status, err.fields) == (422, {"building_id": "楼宇不存在"}), (err.status, err.message)
    assert "没有找到这栋楼宇" in err.message, err.message
    assert db.scalar(select(Enterprise.id).where(Enterprise.credit_code == code(9))) is None


def test_another_rows_refusal_in_the_same_flush_is_not_blamed_on_the_saved_rows_reference(
    app_ctx, make_grid, make_enterprise, db, monkeypatch
):
    """A building saved to a grid that is there, while the same flush writes a file pointing at a building that is
    not (here added to the session by hand): PostgreSQL names the enterprises' key, which is no reference of the
    building's, and the save says the catch-all. SQLite named nothing, and the building's own grid was blamed:
    “没有找到这个网格”, marked on a field that was fine."""
    grid = make_grid(name="第一网格")
    monkeypatch.setattr(services, "_check_building", lambda *a, **k: None)

    def save(s):
        s.add(Enterprise(name="甲", credit_code=code(10), building_id=GONE))
        return services.create_building(s, ADMIN, {"name": "新建楼宇", "grid_id": grid.id})

    err = _refused(save)
    assert err.status == 422 and not err.fields, (err.status, err.fields, err.message)
    assert "网格" in err.message and "没有找到这个网格" not in err.message, err.message
    assert db.scalar(select(Building.id)) is None
