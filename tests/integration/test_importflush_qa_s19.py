"""Nineteenth QA pass (一企一档 / 一楼一档 import): the reason given when the database refuses an import's write.

The import checks every row first, then writes them all; a colleague's write can still come in between. The
importer's own _flush called every refusal “导入时有其他人同时修改了相同的档案”: a building merged away or a grid
deleted meanwhile, an empty required column, a clash on another column all showed that reason, and a refusal met
while the rows were still being written (a building moved to another grid reads its appeals, which flushes) or a
file deleted meanwhile was a 500. Each is now said for what it is, a 4xx, and nothing is written.

The colleague's write is made here in the import's own transaction just before the rows are written (wrapping
importer._write), or the form checks are bypassed, to reach the database's own refusal. These run on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.integration.test_enterprises_import import ACTOR, code
from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises import importer, services
from wxapp_backend.enterprises.models import Building, Enterprise
from wxapp_backend.errors import AppError

MEANWHILE = "导入时有其他人同时修改了相同的档案，本次没有导入任何数据，请稍后重新导入。"


def _refused(kind: str, csv: str) -> AppError:
    """The import of `csv`, which must be refused with an AppError (a raw database error is a 500)."""
    with pytest.raises(AppError) as caught, session_scope() as s:
        importer.import_file(s, ACTOR, kind, "导入.csv", csv.encode("utf-8"))
    return caught.value


def _meanwhile(monkeypatch, sql: str, **params: Any) -> None:
    """A colleague's write between the import's checks and its write (in the import's transaction: the same
    database state its write then meets)."""
    write = importer._write

    def wrapped(session, *args, **kwargs):
        session.execute(text(sql), params)
        return write(session, *args, **kwargs)

    monkeypatch.setattr(importer, "_write", wrapped)


def _nothing_imported(db, kind: str) -> None:
    db.expire_all()
    assert db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == f"{kind}.imported")) == 0


def test_a_building_merged_away_during_an_enterprise_import_is_named_with_its_row(
    app_ctx, make_building, make_enterprise, db, monkeypatch
):
    """Before: 409 “其他人同时修改了相同的档案” (nobody had touched those files). Now: 422 naming the rows and the
    building gone, nothing written."""
    keep = make_building(name="新华大厦")
    gone = make_building(name="环球港A座")
    old = make_enterprise(name="甲科技有限公司", credit_code=code(1), building_id=keep.id)
    _meanwhile(monkeypatch, "DELETE FROM buildings WHERE id = :id", id=gone.id)
    err = _refused("enterprises", "企业名称,统一社会信用代码,楼宇\n"
                                  f"甲科技有限公司,{code(1)},环球港A座\n"
                                  f"乙科技有限公司,{code(2)},新华大厦\n"
                                  f"丙科技有限公司,{code(3)},环球港A座\n")
    assert err.status == 422, (err.status, err.message)
    assert "第 2、4 行" in err.message and "「环球港A座」" in err.message, err.message
    assert "被合并或删除" in err.message and "没有导入任何数据" in err.message, err.message
    assert "其他人同时修改" not in err.message
    assert db.scalar(select(func.count(Enterprise.id))) == 1
    assert db.scalar(select(Enterprise.building_id).where(Enterprise.id == old.id)) == keep.id
    _nothing_imported(db, "enterprises")


def test_a_grid_deleted_during_a_building_import_is_named_and_is_not_a_500(app_ctx, make_grid, make_building, db,
                                                                           monkeypatch):
    """A building moved to the deleted grid reads its open appeals to move them along, and that read flushed the
    move: the database's refusal came out there, past the importer's _flush, as a 500. Now 422 naming the row."""
    first = make_grid(name="第一网格")
    gone = make_grid(name="第二网格")
    b = make_building(name="新华大厦", grid_id=first.id)
    _meanwhile(monkeypatch, "DELETE FROM grids WHERE id = :id", id=gone.id)
    err = _refused("buildings", "楼宇名称,网格\n新华大厦,第二网格\n环球港A座,第一网格\n")
    assert err.status == 422, (err.status, err.message)
    assert "第 2 行" in err.message and "网格「第二网格」" in err.message and "被删除" in err.message, err.message
    assert db.scalar(select(Building.grid_id).where(Building.id == b.id)) == first.id
    assert db.scalar(select(func.count(Building.id))) == 1  # 环球港A座 not made
    _nothing_imported(db, "buildings")


def test_a_new_building_pointing_at_a_grid_deleted_meanwhile(app_ctx, make_grid, db, monkeypatch):
    gone = make_grid(name="第二网格")
    _meanwhile(monkeypatch, "DELETE FROM grids WHERE id = :id", id=gone.id)
    err = _refused("buildings", "楼宇名称,网格\n新华大厦,\n环球港A座,第二网格\n")
    assert err.status == 422 and "第 3 行" in err.message and "第二网格" in err.message, err.message
    assert db.scalar(select(func.count(Building.id))) == 0


def test_a_credit_code_written_by_a_colleague_meanwhile_keeps_its_words(app_ctx, db, monkeypatch):
    """The one refusal the old words were right for: a colleague filed the same code between the checks and the
    write."""
    _meanwhile(monkeypatch, "INSERT INTO enterprises (name, credit_code, industry, floor_room, tax_bracket, tags, "
                            "contact_name, contact_phone, note, created_at, updated_at) VALUES ('乙公司', :c, '', '', "
                            "'', '[]', '', '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)", c=code(2))
    err = _refused("enterprises", f"企业名称,统一社会信用代码\n甲公司,{code(1)}\n乙公司,{code(2)}\n")
    assert (err.status, err.message) == (409, MEANWHILE)
    assert db.scalar(select(func.count(Enterprise.id))) == 0


def test_a_building_name_written_by_a_colleague_meanwhile_keeps_its_words(app_ctx, db, monkeypatch):
    _meanwhile(monkeypatch, "INSERT INTO buildings (name, address, note, created_at, updated_at) "
                            "VALUES ('新华大厦', '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    err = _refused("buildings", "楼宇名称\n新华大厦\n")
    assert (err.status, err.message) == (409, MEANWHILE)
    assert db.scalar(select(func.count(Building.id))) == 0


def test_a_file_deleted_meanwhile_is_not_a_500(app_ctx, make_enterprise, db, monkeypatch):
    """The file a row updates was deleted between the match and the write: the update met no row (SQLAlchemy's
    StaleDataError, a 500). Now the words for a colleague's change meanwhile."""
    e = make_enterprise(name="甲公司", credit_code=code(1))
    _meanwhile(monkeypatch, "DELETE FROM enterprises WHERE id = :id", id=e.id)
    err = _refused("enterprises", f"企业名称,统一社会信用代码,行业\n甲公司,{code(1)},软件\n乙公司,{code(2)},餐饮\n")
    assert (err.status, err.message) == (409, MEANWHILE)
    # (the colleague's delete was made in the import's transaction here, and went back with it)
    assert db.scalars(select(Enterprise.credit_code)).all() == [code(1)]


def _with_values(monkeypatch, **extra: Any) -> None:
    clean = services.clean_values
    monkeypatch.setattr(services, "clean_values", lambda *a, **k: {**clean(*a, **k), **extra})


def test_an_empty_required_column_is_named_not_called_a_colleagues_change(app_ctx, make_enterprise, db,
                                                                         monkeypatch):
    """A NOT NULL refusal (a value the row checks let through empty). Before: 409 “其他人同时修改了相同的档案”."""
    e = make_enterprise(name="甲公司", credit_code=code(1), industry="软件")
    _with_values(monkeypatch, industry=None)
    err = _refused("enterprises", f"企业名称,统一社会信用代码\n甲公司,{code(1)}\n乙公司,{code(2)}\n")
    assert err.status == 422 and "行业" in err.message and "不能为空" in err.message, (err.status, err.message)
    assert "其他人同时修改" not in err.message and "没有导入任何数据" in err.message
    assert db.scalar(select(Enterprise.industry).where(Enterprise.id == e.id)) == "软件"
    assert db.scalar(select(func.count(Enterprise.id))) == 1


def test_a_clash_on_another_column_is_named_not_called_a_colleagues_change(app_ctx, make_enterprise, db,
                                                                           monkeypatch):
    """A unique clash on the file number (a PostgreSQL sequence behind the rows after a restore does this)."""
    other = make_enterprise(name="已有的企业", credit_code=code(4))
    _with_values(monkeypatch, id=other.id)
    err = _refused("enterprises", f"企业名称,统一社会信用代码\n甲公司,{code(5)}\n")
    assert err.status == 409 and "档案编号" in err.message and "其他人同时修改" not in err.message, err.message
    assert db.scalar(select(Enterprise.credit_code).where(Enterprise.id == other.id)) == code(4)
    assert db.scalar(select(func.count(Enterprise.id))) == 1
