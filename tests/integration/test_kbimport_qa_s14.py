"""Knowledge-base files in and out (session 14): spreadsheets as staff really save them (a header with a note in
full-width brackets, a hidden or empty first sheet), a file with a broken emoji, and an .xlsx export of a large
knowledge base."""

from __future__ import annotations

import time

import openpyxl

from knowledge.loaders import dump_file, load_file
from knowledge.schema import Entry
from wxapp_backend.audit import SYSTEM
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.models import KBEntry
from wxapp_backend.knowledge_store.services import VERSION_KEY, import_entries


def _seed(app) -> None:
    with session_scope() as s:
        import_entries(s, app.extensions["wxapp"].redis, SYSTEM,
                       [Entry(id="keep-1", question="营业执照丢了怎么办", answer="在一网通办申请补领。")])


def test_an_xlsx_export_of_thousands_of_entries_takes_seconds_not_minutes(tmp_path):
    """Each row written looked up ws[ws.max_row], which scans every cell written so far: 2,000 entries took 15 s,
    4,000 took 55 s, and a 20,000-entry knowledge base over twenty minutes (kb export kb.xlsx seemed to hang)."""
    entries = [Entry(id=f"e{i}", question=f"第{i}个问题：企业如何申请补贴？", answer=f"=答案{i}，请到窗口办理。\n第二行",
                     similar=(f"问法{i}",), tags=("补贴",), category="政策") for i in range(5000)]
    out = tmp_path / "kb.xlsx"
    started = time.perf_counter()
    dump_file(entries, out)
    assert time.perf_counter() - started < 20
    back = load_file(out, strict=True)
    assert back == entries  # an answer starting with "=" is still text, not a formula


def test_a_file_with_a_broken_emoji_is_refused_naming_file_row_and_field_and_changes_nothing(app, app_ctx, tmp_path, db):
    """A JSON export cut mid-emoji holds a lone surrogate ("\\ud83d"): the file loaded, and the import died in the
    database with a Python traceback (UnicodeEncodeError) instead of saying where the problem was."""
    _seed(app)
    redis = app.extensions["wxapp"].redis
    version = redis.get(VERSION_KEY)
    bad = tmp_path / "导出.jsonl"
    bad.write_text('{"id":"ok-1","question":"开办企业要多久","answer":"一般 1 个工作日。"}\n'
                   '{"id":"bad-1","question":"人才公寓怎么申请","answer":"请看通知 \\ud83d 谢谢"}\n', encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(bad)])
    assert result.exit_code != 0
    assert "导出.jsonl" in result.output and "第 2 行" in result.output and "answer" in result.output
    assert "未改动" in result.output and "Traceback" not in result.output
    db.expire_all()
    assert [r.id for r in db.query(KBEntry)] == ["keep-1"]
    assert redis.get(VERSION_KEY) == version
    yaml_file = tmp_path / "kb.yaml"
    yaml_file.write_text('- id: y1\n  question: 问题\n  answer: "表情 \\ud83d"\n', encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(yaml_file)])
    assert result.exit_code != 0 and "answer" in result.output and "Traceback" not in result.output


def test_a_header_with_a_note_in_full_width_brackets_is_read_as_its_column(app, app_ctx, tmp_path, db):
    """A template's headers say what to fill in: “编号（必填）”, “标签（用|分隔）”, “截止日期(YYYY-MM-DD)”, a
    full-width “ＩＤ” typed with the Chinese input method. The import said the columns were missing."""
    f = tmp_path / "模板.csv"
    f.write_bytes("编号（必填）,标准问题(必填) ,答案【必填】,标签（用|分隔）,截止日期(YYYY-MM-DD)\r\n"
                  "tpl-1,小微企业有什么补贴？,见区政策清单。,补贴|小微,2030/12/31\r\n,,,,\r\n".encode("gb18030"))
    result = app.test_cli_runner().invoke(args=["kb", "import", str(f)])
    assert result.exit_code == 0, result.output
    db.expire_all()
    row = db.get(KBEntry, "tpl-1")
    assert row.answer == "见区政策清单。" and row.tags == ["补贴", "小微"] and str(row.valid_until) == "2030-12-31"
    wide = tmp_path / "wide.csv"
    wide.write_text("ＩＤ,ＱＵＥＳＴＩＯＮ,答案\ntpl-2,问,答\n", encoding="utf-8-sig")
    assert [e.id for e in load_file(wide, strict=True)] == ["tpl-2"]


def test_an_xlsx_whose_first_sheet_is_hidden_or_empty_imports_the_sheet_staff_see(app, app_ctx, tmp_path, db):
    """openpyxl lists hidden sheets too: a workbook with a hidden 填写说明 (or an old copy) first, or WPS's empty
    Sheet1 before the data sheet, was read from that sheet, and the import was refused for the one staff see."""
    hidden = tmp_path / "hidden.xlsx"
    wb = openpyxl.Workbook()
    old = wb.active
    old.title = "旧版"
    old.append(["id", "question", "answer"])
    old.append(["old-1", "旧问题", "旧答案"])
    old.sheet_state = "hidden"
    notes = wb.create_sheet("说明")
    notes.append(["填写说明：每行一条"])
    notes.sheet_state = "veryHidden"
    ws = wb.create_sheet("知识库")
    ws.append(["id", "question", "answer"])
    ws.append(["new-1", "新问题", "新答案"])
    wb.active = 2
    wb.save(hidden)
    result = app.test_cli_runner().invoke(args=["kb", "import", str(hidden)])
    assert result.exit_code == 0, result.output
    db.expire_all()
    assert [r.id for r in db.query(KBEntry)] == ["new-1"]

    empty_first = tmp_path / "wps.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.create_sheet("政策")
    ws.append(["编号", "问题", "答案"])
    ws.append(["new-2", "问题二", "答案二"])
    wb.save(empty_first)
    assert [e.id for e in load_file(empty_first, strict=True)] == ["new-2"]


def test_a_phrasing_typed_with_the_tables_separator_does_not_stop_every_table_export(
        app, app_ctx, client, make_staff, console_login, tmp_path, db):
    """The 相似问法 box takes one phrasing a line; a colleague used to the spreadsheet wrote “营业执照丢了|执照补办”.
    It was kept as one phrasing holding “|”, and from then on kb export to .csv or .xlsx refused the whole
    knowledge base (“含有分隔符 “|”，无法导出为表格”). The box reads “|” as a table's cell does."""
    token = console_login(make_staff(role="staff"))
    resp = client.post("/console/kb/new", data={
        "csrf_token": token, "id": "license-lost", "question": "营业执照遗失怎么补办",
        "similar": "营业执照丢了|执照补办\r\n证照遗失｜补领执照", "answer": "在一网通办申请补领，无需登报。"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.expire_all()
    assert db.get(KBEntry, "license-lost").similar == ["营业执照丢了", "执照补办", "证照遗失", "补领执照"]
    for ext in ("csv", "xlsx"):
        out = tmp_path / f"out.{ext}"
        result = app.test_cli_runner().invoke(args=["kb", "export", str(out)])
        assert result.exit_code == 0, result.output
        result = app.test_cli_runner().invoke(args=["kb", "import", str(out)])
        assert result.exit_code == 0 and "新增 0 条，更新 0 条" in result.output, result.output


def test_an_entry_saved_with_a_tag_typed_twice_round_trips_through_export_and_import_unchanged(
        app, app_ctx, client, make_staff, console_login, tmp_path, db):
    """Tags typed “高新，高新、补贴” on the form were kept twice; every file import keeps a tag once, so the first
    export and re-import of the knowledge base reported the entry 更新 (an audit row, every process rebuilding its
    index) although nobody had changed anything."""
    token = console_login(make_staff(role="staff"))
    resp = client.post("/console/kb/new", data={
        "csrf_token": token, "id": "hitech", "question": "高新技术企业认定有什么好处",
        "tags": "高新，高新、补贴", "answer": "企业所得税减按 15% 征收。"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.expire_all()
    assert db.get(KBEntry, "hitech").tags == ["高新", "补贴"]
    out = tmp_path / "kb.csv"
    assert app.test_cli_runner().invoke(args=["kb", "export", str(out)]).exit_code == 0
    result = app.test_cli_runner().invoke(args=["kb", "import", str(out)])
    assert result.exit_code == 0 and "新增 0 条，更新 0 条，未变 1 条" in result.output, result.output


def test_a_date_column_saved_with_its_time_of_day_is_read_as_that_day(app, app_ctx, tmp_path, db):
    """A sheet whose 截止日期 column is formatted 日期时间 (or came out of the office system that way) is saved by
    Excel as “2025/12/31 0:00”, by others as “2025-06-30 17:30:00”: every row was refused as 不是有效日期."""
    f = tmp_path / "政策.csv"
    f.write_bytes("编号,问题,答案,生效日期,截止日期\r\n"
                  "p-1,稳岗补贴怎么申请,在一网通办申请。,2025/1/1 0:00,2030/12/31 0:00\r\n"
                  "p-2,人才安居补贴怎么申请,向街道人才服务站申请。,2025-06-01T09:00,2030-06-30 17:30:00\r\n"
                  .encode("gb18030"))
    result = app.test_cli_runner().invoke(args=["kb", "import", str(f)])
    assert result.exit_code == 0, result.output
    db.expire_all()
    assert [(str(r.valid_from), str(r.valid_until)) for r in db.query(KBEntry).order_by(KBEntry.id)] == [
        ("2025-01-01", "2030-12-31"), ("2025-06-01", "2030-06-30")]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,question,answer,valid_until\nb-1,问,答,2030/12/31 25:99\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(bad)])
    assert result.exit_code != 0 and "第 2 行" in result.output and "valid_until" in result.output


def test_a_real_mistake_in_a_sheet_with_a_notes_column_is_not_buried_under_a_line_per_row(app, app_ctx, tmp_path, db):
    """A sheet with a 备注 column imports (the column is left out, and said so). With one real mistake in it as
    well, the refusal listed “备注” 是未知字段 once for every row: 20,000 lines, the one that mattered at the end.
    The column is named once, at the header."""
    f = tmp_path / "清单.csv"
    rows = "".join(f"n{i},问题{i},答案{i},核对过\r\n" for i in range(300))
    f.write_bytes(("编号,问题,答案,备注\r\n" + rows + "bad-1,,答案,待补\r\n").encode("gb18030"))
    result = app.test_cli_runner().invoke(args=["kb", "import", str(f)])
    assert result.exit_code != 0 and "未改动" in result.output
    assert "清单.csv：第 302 行 “question”（标准问题）不能为空" in result.output or (
        "第 302 行" in result.output and "question" in result.output), result.output
    assert result.output.count("备注") == 1 and len(result.output.splitlines()) < 6, result.output
    db.expire_all()
    assert db.query(KBEntry).count() == 0
