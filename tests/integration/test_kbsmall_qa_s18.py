"""Knowledge base import as a staff member meets it (session 18, kbsmall): a spreadsheet with several problems at
once, a date that Excel turned into its serial number, YAML written by someone who knows YAML (several `---`
documents, `<<` merge keys), and phrasings that must come back from the console and from an export as they went in."""

from __future__ import annotations

import html
import re
from pathlib import Path

import openpyxl
import yaml

from knowledge import loaders
from knowledge.schema import Entry
from wxapp_backend.knowledge_store.models import KBEntry


def _kb(app, *args: str):
    return app.test_cli_runner().invoke(args=["kb", *args])


def _xlsx(path: Path, rows: list[list]) -> openpyxl.Workbook:
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    return wb


def test_a_spreadsheet_with_an_uncalculated_formula_says_every_other_problem_in_the_same_attempt(
        app, app_ctx, db, tmp_path):
    """A sheet made by a script (or a formula never recalculated) stopped checking at the formula: staff fixed it,
    imported again, and only then heard of the merged cells and the row without an answer. Every problem is said
    at once, each with its row and field; nothing is imported."""
    path = tmp_path / "kb.xlsx"
    wb = _xlsx(path, [["编号", "标准问题", "答案", "相似问法"],
                      ["a", "营业执照怎么办", '="在"&"一网通办"', ""],
                      ["b", "社保怎么开户", None, ""],
                      ["c", "公积金怎么开户", "到公积金中心办理。", "公积金开户"],
                      ["d", "税务登记", "在电子税务局办理。", ""]])
    wb.active.merge_cells("D4:D5")
    wb.save(path)
    result = _kb(app, "import", str(path))
    assert result.exit_code != 0 and "未改动" in result.output, result.output
    out = result.output
    assert "第 2 行 “answer” 单元格 C2 是公式，但文件里没有保存计算结果" in out, out
    assert "第 3 行 “answer” 不能为空" in out, out
    assert "D4:D5 是合并单元格" in out, out
    # the formula's cell, read as empty, is not also called empty
    assert "第 2 行 “answer” 不能为空" not in out, out
    assert db.query(KBEntry).count() == 0


def test_a_date_stored_as_its_excel_serial_number_says_which_date_it_is(app, app_ctx, db, tmp_path):
    """A 截止日期 pasted as text from another sheet is 46022: it was refused as “不是有效日期：46022（应为
    YYYY-MM-DD）”, and nobody knew what 46022 was. The message says it looks like Excel's serial and gives the
    date it stands for."""
    path = tmp_path / "kb.xlsx"
    _xlsx(path, [["id", "question", "answer", "valid_until", "valid_from"],
                 ["p1", "房租补贴", "一网通办。", "46022", "45658.0"]]).save(path)
    result = _kb(app, "import", str(path))
    assert result.exit_code != 0, result.output
    assert ("第 2 行 “valid_until” 不是有效日期：46022——看起来是 Excel 日期序号，对应 2025-12-31；"
            "请把单元格设成日期格式或写成 2025-12-31") in result.output, result.output
    assert "第 2 行 “valid_from”" in result.output and "对应 2025-01-01" in result.output, result.output
    csv_path = tmp_path / "kb.csv"
    csv_path.write_text("id,question,answer,valid_until\np1,房租补贴,一网通办。,46022\n", encoding="utf-8")
    result = _kb(app, "import", str(csv_path))
    assert "看起来是 Excel 日期序号，对应 2025-12-31" in result.output, result.output
    # a YAML file has no cell to format
    yaml_path = tmp_path / "kb.yaml"
    yaml_path.write_text("- id: p1\n  question: 房租补贴\n  answer: 一网通办。\n  policy:\n    valid_until: 46022\n",
                         encoding="utf-8")
    result = _kb(app, "import", str(yaml_path))
    assert "看起来是 Excel 日期序号，对应 2025-12-31；请写成 2025-12-31" in result.output, result.output
    # something that is no date at all keeps the plain message
    csv_path.write_text("id,question,answer,valid_until\np1,房租补贴,一网通办。,下个月\n", encoding="utf-8")
    result = _kb(app, "import", str(csv_path))
    assert "不是有效日期：下个月（应为 YYYY-MM-DD）" in result.output and "序号" not in result.output
    assert db.query(KBEntry).count() == 0


def test_a_yaml_file_of_several_documents_of_entries_is_one_list(app, app_ctx, db, tmp_path):
    """Two YAML files put together, or one split into sections with `---`: the import said “YAML 格式错误（第 1
    列）：格式不对” at the second `---`. When every document is a list of entries they are read as one list (ids
    checked across them, entries numbered on); a document that is not is refused with the line it starts on."""
    path = tmp_path / "kb.yaml"
    path.write_text("# 开办\n- id: a\n  question: 营业执照怎么办\n  answer: 一网通办。\n"
                    "---\n# 社保\n- id: b\n  question: 社保怎么开户\n  answer: 一网通办。\n---\n", encoding="utf-8")
    result = _kb(app, "import", str(path))
    assert result.exit_code == 0 and "新增 2 条" in result.output, result.output
    path.write_text("- id: a\n  question: 营业执照怎么办\n  answer: 一网通办。\n"
                    "---\n- id: a\n  question: 社保怎么开户\n  answer: 一网通办。\n", encoding="utf-8")
    result = _kb(app, "import", str(path))
    assert "第 2 条（第 5 行） “id” 编号 “a” 与第 1 条（第 1 行）重复" in result.output, result.output
    path.write_text("- id: a\n  question: 营业执照怎么办\n  answer: 一网通办。\n"
                    "---\nauthor: 张三\nversion: 2\n", encoding="utf-8")
    result = _kb(app, "import", str(path))
    assert result.exit_code != 0 and "未改动" in result.output
    assert "kb.yaml：第 5 行 这个文件有多个 YAML 文档（用 “---” 分开），从这一行开始的第 2 个文档不是条目列表" \
        in result.output, result.output


def test_yaml_merge_keys_are_resolved_as_yaml_means_them(app, app_ctx, db, tmp_path):
    """Policies sharing 发布部门 and 办理渠道 written once with an anchor and `<<: *common`: the import said
    ““<<” 是未知字段” (or, ignoring it, imported the policies without them). `<<` merges the anchored fields, a
    field written beside it wins, and that is no field written twice."""
    path = tmp_path / "kb.yaml"
    path.write_text(
        "- id: rent\n  question: 房租补贴怎么申请\n  answer: 在一网通办申请。\n"
        "  policy: &common\n    issuer: 区商务委\n    where_to_apply: 一网通办\n"
        "- id: loan\n  question: 贷款贴息怎么申请\n  answer: 在一网通办申请。\n"
        "  policy:\n    <<: *common\n    issuer: 区金融办\n    window: 每年 3 月\n", encoding="utf-8")
    result = _kb(app, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "<<" not in result.output and "两次" not in result.output, result.output
    loan = db.get(KBEntry, "loan")
    assert (loan.issuer, loan.where_to_apply, loan.window) == ("区金融办", "一网通办", "每年 3 月")
    # a merge of something that is no set of fields is explained
    path.write_text("- id: a\n  question: 问\n  answer: 答\n  <<: 区商务委\n", encoding="utf-8")
    result = _kb(app, "import", str(path))
    assert result.exit_code != 0 and "第 4 行" in result.output and "“<<:”" in result.output, result.output


def _form(page: str) -> dict[str, str]:
    """The edit form's fields as the browser would send them back unchanged."""
    data = {m.group(1): html.unescape(m.group(2))
            for m in re.finditer(r'<input[^>]*name="([^"]+)" value="([^"]*)"', page)}
    data.update({m.group(1): html.unescape(m.group(2))
                 for m in re.finditer(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', page, re.S)})
    return data


def test_a_phrasing_holding_a_bar_survives_a_console_save(app, app_ctx, db, tmp_path, client, make_staff,
                                                           console_login):
    """A phrasing “A|B 股怎么选” from a YAML list was split in two the next time anyone saved the entry in the
    console (the box reads “|” as a separator, as a table's cell does). The box shows such a bar as “\\|”, as the
    table files write it, and reads it back as itself: import, save unchanged, export gives the file back."""
    entries = [Entry(id="bar", question="股票账户怎么开", answer="到券商开户。",
                     similar=("A|B 股怎么选", "全角｜也一样", "普通问法", "结尾是反斜杠\\"))]
    src = tmp_path / "kb.yaml"
    loaders.dump_file(entries, src)
    assert _kb(app, "import", str(src)).exit_code == 0
    token = console_login(make_staff(role="staff"))
    page = client.get("/console/kb/bar/edit").get_data(as_text=True)
    form = _form(page)
    assert form["similar"].splitlines()[0] == "A\\|B 股怎么选", form["similar"]
    form["csrf_token"] = token
    r = client.post("/console/kb/bar/edit", data=form)
    assert r.status_code == 302, r.get_data(as_text=True)
    db.expire_all()
    row = db.get(KBEntry, "bar")
    assert tuple(row.similar) == entries[0].similar and row.revision == 1
    out = tmp_path / "out.yaml"
    assert _kb(app, "export", str(out)).exit_code == 0
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == yaml.safe_load(src.read_text(encoding="utf-8"))
    # typing a bar still separates two phrasings (test_kbimport_qa_s14), and an escaped one is kept
    form["similar"] = "营业执照丢了|执照补办\r\n含 \\| 的问法"
    form["csrf_token"] = token
    assert client.post("/console/kb/bar/edit", data=form).status_code == 302
    db.expire_all()
    assert db.get(KBEntry, "bar").similar == ["营业执照丢了", "执照补办", "含 | 的问法"]


def test_phrasings_stored_with_line_breaks_export_and_reimport_as_no_change(app, app_ctx, db, tmp_path):
    """A phrasing holding line breaks (imported from a spreadsheet cell before c507037) was written so by every
    export, and the re-import split it: the entry counted 更新 (an audit row, every process rebuilding its index)
    although nothing had changed. The export writes the phrasings as the import reads them, and an import that
    only reads them so is no change."""
    db.add(KBEntry(id="lic", question="营业执照怎么办", answer="一网通办。", category="",
                   similar=["执照去哪里办\n怎么申请营业执照", "办执照要多久"], tags=["开办\r\n执照"]))
    db.commit()
    for ext in ("xlsx", "csv", "yaml", "jsonl"):
        out = tmp_path / f"out.{ext}"
        assert _kb(app, "export", str(out)).exit_code == 0
        assert [e.similar for e in loaders.load_file(out)] == [("执照去哪里办", "怎么申请营业执照", "办执照要多久")]
        result = _kb(app, "import", str(out))
        assert result.exit_code == 0 and "新增 0 条，更新 0 条，未变 1 条" in result.output, (ext, result.output)
    db.expire_all()
    assert db.get(KBEntry, "lic").revision == 1
    # a real change writes the phrasings as read
    out = tmp_path / "out.yaml"
    out.write_text(out.read_text(encoding="utf-8").replace("一网通办。", "在一网通办申请。"), encoding="utf-8")
    result = _kb(app, "import", str(out))
    assert "更新 1 条" in result.output, result.output
    db.expire_all()
    row = db.get(KBEntry, "lic")
    assert row.similar == ["执照去哪里办", "怎么申请营业执照", "办执照要多久"] and row.tags == ["开办", "执照"]
