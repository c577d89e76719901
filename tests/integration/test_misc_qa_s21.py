"""Twenty-first QA pass (small gaps): what SQLite's foreign-key refusal is about, the CLI's top-level help in
Chinese, and the QR-code views of the console shared by activities and enterprises.

1. SQLite's error for a refused foreign key names neither the table nor the column (PostgreSQL's does): an
   enterprise file pointing at a building deleted meanwhile and also carrying another reference was told the
   catch-all “选择的楼宇、网格或工作人员账号可能已被合并或删除” on SQLite where PostgreSQL said which (楼宇不存在),
   and a refusal of another row written in the same flush was blamed on the saved row's own reference on SQLite.
   db.refusal, given the session, now runs the statement again with the foreign keys deferred in a savepoint and
   asks `PRAGMA foreign_key_check` which key it broke. These run on SQLite and PostgreSQL (where nothing changed).
2. `flask --app wsgi --help` was Flask's English page round the Chinese list of commands: it now ends with a Chinese
   overview of the project's commands and of Flask's options; the app's own group has a Chinese frame too.
3. The console's QR-code views of an activity and of an enterprise were near copies: one shared helper now."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from flask.cli import FlaskGroup
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from tests.integration.test_entflush_qa_s19 import _refused, _with_values
from wxapp_backend.audit import Actor
from wxapp_backend.db import Refusal, refusal, session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services
from wxapp_backend.enterprises.models import Building, Enterprise

ADMIN = Actor("staff", 1, role="admin")
GONE = 10**6


def code(n: int) -> str:
    return demo_credit_code("91310121", n)


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


# --- 2. the CLI's top-level help in Chinese ----------------------------------------------------------------------


def _columns(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def test_the_top_level_help_ends_with_a_chinese_overview_of_every_project_command(app, app_ctx, monkeypatch):
    """`flask --app wsgi --help` was Flask's English page (“A general utility script for Flask applications.”, its
    options) round the list of commands. It now ends with what the project's commands are for, in Chinese, and
    what Flask's English options do; the options themselves are Flask's as before."""
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)  # FlaskGroup sets it; restored after the test
    runner = app.test_cli_runner()
    result = runner.invoke(cli=FlaskGroup(load_dotenv=False), args=["--help"])
    assert result.exit_code == 0, result.output
    top, listing = result.output.split("Commands:", 1)
    for option in ("--app", "--env-file", "--debug", "--version", "--help"):
        assert option in top, (option, top)
    overview = listing.split("本项目的命令", 1)[1]
    for name in (*app.cli.commands, "run", "shell", "routes"):
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", overview), (name, overview)
    assert "-A/--app" in overview and "--version 显示版本" in overview, overview
    assert "flask --app wsgi 命令 --help" in overview, overview
    for line in overview.splitlines():
        assert _columns(line) <= 80, line
    version = runner.invoke(cli=FlaskGroup(load_dotenv=False), args=["--version"])
    assert version.exit_code == 0 and "Flask" in version.output, version.output


def test_the_app_group_invoked_alone_speaks_chinese_with_the_same_overview(app, app_ctx):
    """Flask's test runner (and `app.cli.main()`) invoke the app's own group: its page was click's English frame
    (Usage:, Options:, Show this message and exit.) with no description at all."""
    out = app.test_cli_runner().invoke(args=["--help"]).output
    assert out.startswith("用法：") and out.splitlines()[0].endswith("[选项] 命令 [参数]..."), out
    assert "企业服务中心公众号与小程序后端的命令行" in out and "命令：" in out and "显示本帮助并退出" in out, out
    for english in ("Usage", "Options", "Commands", "Show this message"):
        assert english not in out, (english, out)
    assert "本项目的命令" in out and "上方英文" not in out, out  # no English above it here
    assert all(name in out.split("本项目的命令", 1)[1] for name in app.cli.commands), out
