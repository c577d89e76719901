"""Operating the service: the SQLite health check behind a long writer, UTF-16 files without a BOM and staff
usernames unique whatever their case in the database itself (QA pass 15, ops5)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy.engine import make_url


def test_healthz_answers_503_quickly_when_a_long_writer_holds_the_sqlite_database(app, settings):
    """On the embedded SQLite a writer holding the database (a long import, a stuck process with BEGIN EXCLUSIVE)
    kept /healthz waiting the shared engine's 30 s busy timeout: a probe saw a time-out instead of 503. The check
    now waits a short bound of its own and says the database could not be checked in time."""
    state = app.extensions["wxapp"]
    if state.db.dialect != "sqlite":
        pytest.skip("SQLite's file lock; PostgreSQL's check has its own statement timeout")
    path = make_url(state.db.url).database
    holder = sqlite3.connect(path, timeout=5, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    answers: list = []

    def ask() -> None:
        started = time.monotonic()
        resp = app.test_client().get("/healthz")
        answers.append((resp.status_code, resp.get_json(), time.monotonic() - started))

    try:
        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        thread.join(40)
    finally:
        holder.rollback()
        holder.close()
    assert answers, "still waiting after 40 s"
    status, body, took = answers[0]
    assert status == 503 and body["failing"] == ["db"] and "数据库忙" in body["message"] and took < 3, answers[0]
    # Ordinary requests keep waiting their 30 s: a writer finishing a long import is not an outage for them.
    with state.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


UTF16_TABLE = "id,question,answer,similar\r\nu16,营业执照怎么办,一网通办，最快一天,执照|办照\r\n"
UTF16_JSONL = '{"id": "j16", "question": "社保怎么交", "answer": "找人社窗口，一次办好"}\n'
# A NUL after every byte, like UTF-16's ASCII, but C1 control characters: not UTF-16, nor UTF-8, nor GB18030.
NOT_TEXT = b"\x81\x00\xfe\x00" * 50


def _kb(app, *args: str):
    return app.test_cli_runner().invoke(args=["kb", *args])


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_kb_import_reads_utf16_without_a_bom(app, app_ctx, tmp_path, db, encoding):
    """Some exporters and scripts (PowerShell's Out-File, a few OA systems) write UTF-16 without a BOM: `kb import`
    refused it (文件编码无法识别) or read GB18030 mojibake. The NULs in every other byte say it is UTF-16, and on
    which side the byte order; the file is now read like any other."""
    from knowledge.loaders import load_file
    from knowledge.schema import Entry
    from wxapp_backend.knowledge_store.models import KBEntry

    table, jsonl = tmp_path / "kb.csv", tmp_path / "kb.jsonl"
    table.write_bytes(UTF16_TABLE.encode(encoding))
    jsonl.write_bytes(UTF16_JSONL.encode(encoding))
    assert not table.read_bytes().startswith((b"\xff\xfe", b"\xfe\xff"))
    assert load_file(table, strict=True) == [Entry(id="u16", question="营业执照怎么办", answer="一网通办，最快一天",
                                                   similar=("执照", "办照"))]
    assert load_file(jsonl, strict=True) == [Entry(id="j16", question="社保怎么交", answer="找人社窗口，一次办好")]
    for path in (table, jsonl):
        result = _kb(app, "import", str(path))
        assert result.exit_code == 0 and "新增 1 条" in result.output, result.output
    assert {e.id: e.question for e in db.query(KBEntry)} == {"u16": "营业执照怎么办", "j16": "社保怎么交"}


def test_kb_import_still_refuses_a_file_that_is_not_text(app, app_ctx, tmp_path, db):
    from knowledge.loaders import KBLoadError, decode_utf16_without_bom, load_file

    path = tmp_path / "kb.csv"
    path.write_bytes(NOT_TEXT)
    with pytest.raises(KBLoadError) as err:
        load_file(path, strict=True)
    assert "文件编码无法识别" in "\n".join(err.value.errors)
    result = _kb(app, "import", str(path))
    assert result.exit_code != 0 and "文件编码无法识别" in result.output, result.output
    # Binary with NULs in every other byte (16-bit numbers) is no text; UTF-8 with an odd NUL is no UTF-16.
    assert decode_utf16_without_bom(b"\x01\x00\x02\x00\x03\x00") is None
    assert decode_utf16_without_bom(b"a,b\n\x00x,y\n") is None
    assert decode_utf16_without_bom("问题,答案\n".encode()) is None


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_enterprise_import_reads_utf16_without_a_bom_and_refuses_what_is_not_text(encoding):
    """The enterprise/building import decodes uploaded CSV the same way: UTF-16 without a BOM was refused (or, all
    ASCII, read as UTF-8 with a NUL after every character). Garbage keeps its clear refusal."""
    from wxapp_backend.enterprises.importer import _FileProblem, read_table

    text = "企业名称,行业\r\n最新一号公司,餐饮\r\n"
    assert read_table("a.csv", text.encode(encoding)) == [(1, ["企业名称", "行业"]), (2, ["最新一号公司", "餐饮"])]
    assert read_table("a.csv", "name,x\r\nA1,2\r\n".encode(encoding)) == [(1, ["name", "x"]), (2, ["A1", "2"])]
    with pytest.raises(_FileProblem) as err:
        read_table("a.csv", NOT_TEXT)
    assert "文件编码无法识别" in str(err.value)


def test_the_database_refuses_two_staff_usernames_differing_only_in_case(app, db):
    """Usernames were one name whatever their case only through create_staff's check and lock: a row written any
    other way (a script, a restore, another code path) could put `Bob` next to `bob`, two accounts sharing one
    login lock-out. A unique index on lower(username) now makes the database refuse it."""
    from sqlalchemy.exc import IntegrityError
    from werkzeug.security import generate_password_hash

    from wxapp_backend.auth.models import StaffUser

    state = app.extensions["wxapp"]
    with pytest.raises(IntegrityError):
        with state.db.session_scope() as s:
            for name in ("Bob", "bob"):
                s.add(StaffUser(username=name, password_hash=generate_password_hash("abcdefgh1"), role="staff",
                                department="", display_name=name))
                s.flush()
    with state.db.session_scope() as s:
        s.add(StaffUser(username="Bob", password_hash="x", role="staff", department="", display_name="Bob"))
    with pytest.raises(IntegrityError):
        with state.db.session_scope() as s:
            s.add(StaffUser(username="BOB", password_hash="x", role="staff", department="", display_name="BOB"))
    assert [u.username for u in db.query(StaffUser)] == ["Bob"]


def test_upgrading_renames_the_later_of_accounts_differing_only_in_case_and_says_so(settings, tmp_path, caplog):
    """Accounts made before usernames were one name whatever their case may clash: 0006 keeps the oldest name
    of each group, renames the later ones `<name>-<id>` (their password unchanged), warns in init-db's log and
    writes a `staff.renamed` audit row, instead of failing on the new index."""
    import logging

    from sqlalchemy import text

    from tests.integration.test_ops2_qa_s14 import sqlite_database_at
    from wxapp_backend.cli import upgrade_database

    with sqlite_database_at(settings, tmp_path, "0005") as engine:
        with engine.begin() as conn:
            for staff_id, name in ((1, "zhao"), (2, "Zhao"), (3, "wang"), (4, "ZHAO"), (5, "zhao-4")):
                conn.execute(text(
                    "INSERT INTO staff_users (id, username, password_hash, role, department, display_name, active,"
                    " created_at) VALUES (:id, :name, :hash, 'staff', '', :name, 1, '2026-01-01 00:00:00')"),
                    {"id": staff_id, "name": name, "hash": f"hash-{staff_id}"})
        with caplog.at_level(logging.WARNING, logger="wxapp_backend.migrations"):
            upgrade_database()
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, username, password_hash FROM staff_users ORDER BY id")).all()
            renamed = conn.execute(text("SELECT target_id, data FROM audit_logs WHERE action = 'staff.renamed'"
                                        " ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "zhao", "hash-1"), (2, "Zhao-2", "hash-2"), (3, "wang", "hash-3"),
                                            (4, "ZHAO-4-1", "hash-4"), (5, "zhao-4", "hash-5")]
        assert [r[0] for r in renamed] == ["2", "4"] and '"to": "ZHAO-4-1"' in renamed[1][1], renamed
        said = caplog.text
        assert "Zhao-2" in said and "ZHAO-4-1" in said and "新用户名登录" in said, said
        with engine.begin() as conn, pytest.raises(Exception, match="UNIQUE"):
            conn.execute(text("INSERT INTO staff_users (username, password_hash, role, department, display_name,"
                              " active, created_at) VALUES ('WANG', 'x', 'staff', '', '', 1, '2026-01-01')"))
        upgrade_database()  # idempotent
