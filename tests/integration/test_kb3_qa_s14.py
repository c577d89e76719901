"""Knowledge-base import/export (session 14, kb3): files that went through Excel, phrasings holding the table's
separator, backups that leave out retired entries, and Excel's “Unicode 文本”."""

from __future__ import annotations

import pytest

from knowledge.loaders import KBLoadError, dump_file, load_file
from knowledge.schema import Entry
from wxapp_backend.knowledge_store.models import KBEntry


def _kb(app, *args: str):
    return app.test_cli_runner().invoke(args=["kb", *args])


def test_an_id_excel_turned_into_scientific_notation_is_refused_naming_row_field_and_excel(app, app_ctx, tmp_path, db):
    """An exported .csv opened in Excel and saved turns the id 123456789012 into “1.23457E+11”: the import took it
    as a new id (and with --replace retired the real entry). Now it is refused, naming row and field, saying Excel
    changed it, and nothing changes."""
    src = tmp_path / "kb.csv"
    src.write_text("id,question,answer\n123456789012,长编号的问题,答案\n", encoding="utf-8")
    assert _kb(app, "import", str(src)).exit_code == 0
    saved = tmp_path / "saved.csv"
    saved.write_text("id,question,answer\n1.23457E+11,长编号的问题,答案\n", encoding="utf-8")
    with pytest.raises(KBLoadError) as exc:
        load_file(saved)
    [line] = exc.value.errors
    assert "第 2 行" in line and "“id”" in line and "Excel" in line and "1.23457E+11" in line, line
    result = _kb(app, "import", str(saved), "--replace")
    assert result.exit_code != 0 and "Excel" in result.output and "未改动" in result.output, result.output
    db.expire_all()
    assert db.get(KBEntry, "123456789012").retired is False
    assert db.query(KBEntry).count() == 1


def test_a_replace_import_whose_ids_lost_their_leading_zeros_is_refused_and_changes_nothing(app, app_ctx, tmp_path, db):
    """Excel reads the id 0012 of a .csv as the number 12: re-importing the saved file with --replace created 12,
    13, ... as new entries and retired 0012, 0013, ... (their votes and history now on retired rows). An import
    that would create entries whose ids are existing ones with the leading zeros dropped is refused, naming
    both."""
    src = tmp_path / "kb.csv"
    src.write_text("id,question,answer\n0012,问题十二,答案\n0013,问题十三,答案\nabc,问题,答案\n", encoding="utf-8")
    assert _kb(app, "import", str(src)).exit_code == 0
    saved = tmp_path / "saved.csv"
    saved.write_text("id,question,answer\n12,问题十二,答案\n13,问题十三,答案\nabc,问题,答案\n", encoding="utf-8")
    for args in (["--replace"], []):
        result = _kb(app, "import", str(saved), *args)
        assert result.exit_code != 0, result.output
        assert "“12”" in result.output and "“0012”" in result.output and "Excel" in result.output, result.output
        assert "未改动" in result.output
    db.expire_all()
    assert db.get(KBEntry, "12") is None and db.get(KBEntry, "0012").retired is False
    assert db.query(KBEntry).count() == 3
    # An id that merely is a number, with no such twin, is imported as before.
    other = tmp_path / "other.csv"
    other.write_text("id,question,answer\n0012,问题十二,答案\n0013,问题十三,答案\nabc,问题,答案\n"
                     "14,问题十四,答案\n", encoding="utf-8")
    result = _kb(app, "import", str(other), "--replace")
    assert result.exit_code == 0 and "新增 1 条" in result.output, result.output


SIMILAR = ("甲|乙", "丙｜丁", "结尾是反斜杠\\", "含 \\| 的问法", "普通问法")


@pytest.mark.parametrize("ext", [".csv", ".xlsx"])
def test_a_phrasing_holding_the_separator_stored_before_is_exported_and_round_trips(app, app_ctx, tmp_path, db,
                                                                                     ext):
    """A phrasing with “|” from a YAML list (stored before the console refused it) stopped every .csv/.xlsx export
    of the whole knowledge base. The bar is written escaped (“\\|”) and read back as itself."""
    e = Entry(id="bar", question="问题", answer="答案", similar=SIMILAR)
    dump_file([e], tmp_path / f"one{ext}")
    assert load_file(tmp_path / f"one{ext}") == [e]
    yaml_file = tmp_path / "kb.yaml"
    dump_file([e, Entry(id="plain", question="别的问题", answer="别的答案", similar=("一|二",))], yaml_file)
    assert _kb(app, "import", str(yaml_file)).exit_code == 0
    out = tmp_path / f"kb{ext}"
    result = _kb(app, "export", str(out))
    assert result.exit_code == 0, result.output
    result = _kb(app, "import", str(out))
    assert result.exit_code == 0 and "新增 0 条，更新 0 条，未变 2 条" in result.output, result.output
    db.expire_all()
    assert tuple(db.get(KBEntry, "bar").similar) == SIMILAR


def test_export_says_how_many_retired_entries_it_left_out_and_how_to_include_them(app, app_ctx, tmp_path, db):
    """`kb export FILE` left retired entries out without a word: a backup restored into an empty database lost
    them. The command now says how many were left out and names --include-retired."""
    src = tmp_path / "kb.csv"
    src.write_text("id,question,answer,retired\na,问题一,答案,\nb,问题二,答案,是\nc,问题三,答案,是\n",
                   encoding="utf-8")
    assert _kb(app, "import", str(src)).exit_code == 0
    result = _kb(app, "export", str(tmp_path / "out.yaml"))
    assert result.exit_code == 0 and "已导出 1 条" in result.output, result.output
    assert "2 条已下线" in result.output and "--include-retired" in result.output, result.output
    result = _kb(app, "export", str(tmp_path / "all.yaml"), "--include-retired")
    assert result.exit_code == 0 and "已导出 3 条" in result.output and "下线" not in result.output, result.output


def test_an_excel_unicode_text_file_renamed_to_csv_is_imported(app, app_ctx, tmp_path, db):
    """Excel's 另存为 “Unicode 文本” writes tab-separated UTF-16 with a BOM; renamed to .csv it was refused
    (文件编码无法识别) or read as mojibake. It is now read like any other table."""
    text = "id\tquestion\tanswer\tsimilar\r\nu1\t营业执照怎么办\t\"一网通办，\t带 Tab 的答案\"\t执照|办照\r\n"
    for bom, enc in (("\ufeff", "utf-16-le"), ("\ufeff", "utf-16-be")):
        p = tmp_path / f"unicode-{enc}.csv"
        p.write_bytes((bom + text).encode(enc))
        assert load_file(p, strict=True) == [Entry(id="u1", question="营业执照怎么办", answer="一网通办，\t带 Tab 的答案",
                                                   similar=("执照", "办照"))]
    result = _kb(app, "import", str(tmp_path / "unicode-utf-16-le.csv"))
    assert result.exit_code == 0 and "新增 1 条" in result.output, result.output
