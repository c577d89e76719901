"""Knowledge base storage and editing as a demanding staff member uses it (session 18, kbqa): the files staff
really bring to `flask kb import` (a spreadsheet whose phrasings are typed one per line in a cell, ids pasted from
a web page, JSON Lines written by a pandas script, two Notepad files put together, a 10 MB YAML) and what the
console can then do with the entries made from them."""

from __future__ import annotations

from pathlib import Path

import openpyxl

from wxapp_backend.knowledge_store.models import KBEntry


def _import(app, path: Path, *args: str):
    return app.test_cli_runner().invoke(args=["kb", "import", str(path), *args])


def _xlsx(path: Path, rows: list[list]) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    wb.save(path)
    return path


def test_phrasings_typed_one_per_line_in_a_spreadsheet_cell_are_separate_phrasings(app, app_ctx, db, tmp_path):
    """Staff type the 相似问法 of an entry one per line in its cell (Alt+Enter), as the console's box takes them: the
    whole cell became one phrasing with line breaks in it (the bot matched none of them as asked), and the next save
    of the entry in the console split it behind the editor's back. Tags the same."""
    path = _xlsx(tmp_path / "kb.xlsx", [["编号", "标准问题", "答案", "相似问法", "标签"],
                                        ["biz-license", "营业执照怎么办", "在一网通办申请。",
                                         "执照去哪里办\n怎么申请营业执照\r\n营业执照|办执照要多久", "开办\n执照"]])
    result = _import(app, path)
    assert result.exit_code == 0, result.output
    row = db.get(KBEntry, "biz-license")
    assert row.similar == ["执照去哪里办", "怎么申请营业执照", "营业执照", "办执照要多久"]
    assert row.tags == ["开办", "执照"]
    # the export and re-import of it is no change
    out = tmp_path / "out.xlsx"
    assert app.test_cli_runner().invoke(args=["kb", "export", str(out)]).exit_code == 0
    again = _import(app, out)
    assert "新增 0 条，更新 0 条，未变 1 条" in again.output, again.output


def test_an_id_pasted_with_an_invisible_character_is_the_entry_it_shows_not_a_second_one(
    app, app_ctx, db, tmp_path, client, make_staff, console_login
):
    """An id copied from a web page or a chat carries a zero-width space (or a BOM) nobody sees: the import made a
    second “g2” beside the real one (with --replace retiring the real one), and the console could not edit the new
    one: its form drops such characters, so saving it said 没有找到 (or edited the look-alike). Imported text is
    cleaned as the console's form cleans it; an emoji's joiner stays."""
    db.add(KBEntry(id="g2", question="社保怎么开户", answer="一网通办。", similar=[], tags=[], category=""))
    db.commit()
    path = _xlsx(tmp_path / "kb.xlsx", [["id", "question", "answer", "similar"],
                                        ["g2\u200b", "社保\u200b怎么开户", "在一网通办办理社保开户👨\u200d💻。", "\ufeff社保开户"],
                                        ["\ufeffg3", "公积金\u2060怎么开户", "同上。", None]])
    result = _import(app, path, "--replace")
    assert result.exit_code == 0, result.output
    db.expire_all()
    assert sorted(r.id for r in db.query(KBEntry)) == ["g2", "g3"]
    g2 = db.get(KBEntry, "g2")
    assert not g2.retired and g2.question == "社保怎么开户" and g2.similar == ["社保开户"]
    assert g2.answer == "在一网通办办理社保开户👨\u200d💻。"
    assert db.get(KBEntry, "g3").question == "公积金怎么开户"
    # and the console edits what was imported
    token = console_login(make_staff(role="staff"))
    r = client.post("/console/kb/g3/edit", data={"csrf_token": token, "question": "公积金怎么开户",
                                                 "answer": "到公积金中心办理。", "revision": "1"})
    assert r.status_code == 302, r.get_data(as_text=True)
    db.expire_all()
    assert db.get(KBEntry, "g3").answer == "到公积金中心办理。"
