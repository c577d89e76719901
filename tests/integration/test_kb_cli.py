"""`flask kb import|export|search`: a bad file changes nothing; export and import round-trip."""

from __future__ import annotations

from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import KBEntry


def test_import_bad_file_changes_nothing(app, app_ctx, tmp_path, db):
    load_default_if_empty()
    before = db.query(KBEntry).count()
    bad = tmp_path / "bad.csv"
    bad.write_text("id,question\nx1,问题\n", encoding="utf-8")  # no answer column
    result = app.test_cli_runner().invoke(args=["kb", "import", str(bad)])
    assert result.exit_code != 0 and "未改动" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("- id: a\n  question: [unclosed\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(broken)])
    assert result.exit_code != 0
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id":"a","question":"q","answer":"x"}\n{"id":"a","question":"q2","answer":"y"}\n',
                   encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(dup)])
    assert result.exit_code != 0
    db.expire_all()
    assert db.query(KBEntry).count() == before


def test_export_import_round_trip(app, app_ctx, tmp_path, db):
    load_default_if_empty()
    out = tmp_path / "kb.xlsx"
    result = app.test_cli_runner().invoke(args=["kb", "export", str(out)])
    assert result.exit_code == 0, result.output
    result = app.test_cli_runner().invoke(args=["kb", "import", str(out)])
    assert result.exit_code == 0, result.output
    assert "新增 0 条，更新 0 条" in result.output


def test_import_with_replace_retires_missing(app, app_ctx, tmp_path, db):
    load_default_if_empty()
    one = tmp_path / "one.csv"
    one.write_text("id,question,answer,similar\nnew-1,新问题,新答案,问法一|问法二\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(one), "--replace"])
    assert result.exit_code == 0, result.output
    db.expire_all()
    assert db.query(KBEntry).filter_by(retired=False).count() == 1
    assert db.get(KBEntry, "new-1").similar == ["问法一", "问法二"]


def test_search_command(app, app_ctx):
    load_default_if_empty()
    result = app.test_cli_runner().invoke(args=["kb", "search", "外籍人才工作许可怎么办"])
    assert result.exit_code == 0 and "talent-foreign-work-permit" in result.output


def test_import_takes_a_file_with_extra_columns_and_says_what_it_left_out(app, app_ctx, tmp_path, db):
    """The contract asks for "at least the columns id, question, answer": a file with a column of notes was refused
    whole ("note" 是未知字段). Extra columns are now left out with a note naming them; other errors still stop it."""
    extra = tmp_path / "extra.csv"
    extra.write_text("id,question,answer,note\nx-extra-1,营业执照丢了怎么补办,可以在一网通办申请补领。,核对过\n",
                     encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(extra)])
    assert result.exit_code == 0, result.output
    assert "已忽略不认识的列 note" in result.output
    assert db.get(KBEntry, "x-extra-1").answer == "可以在一网通办申请补领。"
    both = tmp_path / "both.csv"  # an unknown column and a missing answer: refused, nothing changed
    both.write_text("id,question,note\nx-extra-2,问题,备注\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(both)])
    assert result.exit_code != 0 and "未改动" in result.output
    assert db.get(KBEntry, "x-extra-2") is None
