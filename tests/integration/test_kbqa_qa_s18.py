"""Knowledge base storage and editing as a demanding staff member uses it (session 18, kbqa): the files staff
really bring to `flask kb import` (a spreadsheet whose phrasings are typed one per line in a cell, ids pasted from
a web page, JSON Lines written by a pandas script, two Notepad files put together, a 10 MB YAML) and what the
console can then do with the entries made from them."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import yaml

from knowledge import loaders
from knowledge.schema import Entry
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


def test_json_lines_written_by_a_pandas_script_import_its_empty_cells_as_empty_not_as_nan(app, app_ctx, db, tmp_path):
    """A sheet read with pandas and written with json.dumps has NaN for every empty cell: each entry was imported with
    分类 “nan”, 发布部门 “nan” and a phrasing “nan” (the bot's replies said 【适用对象】nan), and an empty 答案 was
    the answer “nan”. NaN is read as the empty cell it stands for; Infinity is no content and is refused, named."""
    path = tmp_path / "kb.jsonl"
    path.write_text(
        '{"id": "rent", "question": "房租补贴怎么申请", "answer": "在一网通办申请。", "category": NaN, "similar": NaN,'
        ' "issuer": NaN, "eligibility": NaN, "tags": NaN, "valid_until": NaN, "retired": NaN}\n'
        '{"id": "loan", "question": "贷款贴息", "answer": NaN}\n'
        '{"id": "tax", "question": "税收优惠", "answer": "见政策。", "benefit": Infinity, "policy": {"window": -Infinity}}\n',
        encoding="utf-8")
    result = _import(app, path)
    assert result.exit_code != 0 and "未改动" in result.output
    assert "kb.jsonl：第 2 行 “answer” 不能为空" in result.output, result.output
    assert "kb.jsonl：第 3 行 “benefit”" in result.output and "第 3 行 “policy.window”" in result.output
    assert "nan" not in result.output.lower().replace("nan）", "")
    assert db.query(KBEntry).count() == 0
    path.write_text(path.read_text(encoding="utf-8").split("\n", 1)[0] + "\n", encoding="utf-8")
    result = _import(app, path)
    assert result.exit_code == 0, result.output
    row = db.get(KBEntry, "rent")
    assert (row.category, row.similar, row.issuer, row.eligibility, row.tags, row.valid_until, row.retired) == (
        "", [], None, None, [], None, False)


def test_json_lines_files_put_together_with_a_byte_order_mark_on_a_later_line_import(app, app_ctx, db, tmp_path):
    """Two files saved by Notepad (each starting with a byte-order mark) put together: the second file's first line
    was “JSON 格式错误（第 1 列）：格式不对” though nothing on it was wrong to the eye."""
    one = json.dumps({"id": "a", "question": "公司注册要多久", "answer": "一般 1 个工作日。"}, ensure_ascii=False)
    two = json.dumps({"id": "b", "question": "社保怎么开户", "answer": "一网通办。"}, ensure_ascii=False)
    path = tmp_path / "kb.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + one.encode() + b"\r\n" + b"\xef\xbb\xbf" + two.encode() + b"\r\n")
    result = _import(app, path)
    assert result.exit_code == 0, result.output
    assert sorted(r.id for r in db.query(KBEntry)) == ["a", "b"]


def test_a_yaml_file_is_parsed_once_and_by_libyaml_when_it_is_installed(tmp_path, monkeypatch):
    """A 10 MB YAML (10,000 policies) took about a minute to import, and nothing said it was working: it was read
    twice (once for the line numbers, once for the values), both times by PyYAML's pure-Python parser. It is parsed
    once, by libyaml when PyYAML has it; a file libyaml refuses is read again by the Python parser for its error
    message (the same Chinese explanation as before)."""
    parsed: list[str] = []
    for cls in {loaders._StringDateLoader, getattr(loaders, "_FastLoader", None)} - {None}:
        original = cls.__init__

        def counting(self, stream, _original=original, _name=cls.__name__):
            parsed.append(_name)
            _original(self, stream)

        monkeypatch.setattr(cls, "__init__", counting)
    entries = [Entry(id=f"p{i}", question=f"第{i}项政策怎么申请", answer="在一网通办申请。\n第二行", similar=("yes", "0123"),
                     category="政策") for i in range(3)]
    path = tmp_path / "kb.yaml"
    loaders.dump_file(entries, path)
    assert loaders.load_file(path, strict=True) == entries
    assert len(parsed) == 1
    if yaml.__with_libyaml__:
        assert parsed == ["_FastLoader"]
    parsed.clear()
    path.write_text("- id: a\n  question: 问题: 冒号\n  answer: 答\n", encoding="utf-8")
    try:
        loaders.load_file(path)
    except loaders.KBLoadError as exc:
        assert "这里不能有冒号" in str(exc) and "第 2 行" in str(exc)
    else:
        raise AssertionError("a broken YAML file loaded")


def test_an_id_twice_in_a_yaml_file_is_named_with_the_lines_of_both(app, app_ctx, db, tmp_path):
    """Every other problem in a YAML file says the line to jump to (第 2 条（第 7 行）); an id written twice said only
    “第 5 条 ... 与第 2 条重复”, and in a file of 300 entries staff counted entries by hand to find them."""
    path = tmp_path / "kb.yaml"
    path.write_text("- id: a\n  question: 问一\n  answer: 答一\n- id: b\n  question: 问二\n  answer: 答二\n"
                    "- id: a\n  question: 问三\n  answer: 答三\n", encoding="utf-8")
    result = _import(app, path)
    assert result.exit_code != 0 and "未改动" in result.output
    assert "kb.yaml：第 3 条（第 7 行） “id” 编号 “a” 与第 1 条（第 1 行）重复" in result.output, result.output
