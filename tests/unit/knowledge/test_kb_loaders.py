"""Loader tests: every supported format, every error case, and export round-trips."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import openpyxl
import pytest

from knowledge.loaders import KBLoadError, dump_file, load_dir, load_file, load_files
from knowledge.schema import Entry

YAML_OK = """\
- id: talent-foreign-work-permit
  question: 外籍人才如何办理工作许可？
  similar: [外国人工作许可怎么办, 老外来上海工作要办什么证]
  answer: |
    登录一网通办，在线申请。
    需要材料见附件。
  category: 人才服务
  tags: [外籍人才, 工作许可]
  policy:
    issuer: 市科委
    eligibility: 外籍高端人才
    where_to_apply: 一网通办
    valid_until: 2026-12-31
- id: startup-license
  question: 怎么办营业执照？
  answer: 在一网通办“企业开办”办理。
"""


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding=encoding)
    return p


def _csv(tmp_path: Path, rows: list[list[str]], name: str = "kb.csv", encoding: str = "utf-8-sig") -> Path:
    p = tmp_path / name
    with p.open("w", encoding=encoding, newline="") as f:
        csv.writer(f).writerows(rows)
    return p


def _errors(path: Path) -> list[str]:
    with pytest.raises(KBLoadError) as exc:
        load_file(path)
    return exc.value.errors


# ---------------------------------------------------------------- happy paths


def test_yaml_with_nested_policy(tmp_path: Path) -> None:
    entries = load_file(_write(tmp_path, "kb.yaml", YAML_OK))
    assert [e.id for e in entries] == ["talent-foreign-work-permit", "startup-license"]
    e = entries[0]
    assert e.similar == ("外国人工作许可怎么办", "老外来上海工作要办什么证")
    assert e.tags == ("外籍人才", "工作许可")
    assert e.issuer == "市科委" and e.where_to_apply == "一网通办"
    assert e.valid_until == date(2026, 12, 31)
    assert "需要材料" in e.answer
    assert entries[1].valid_until is None and not entries[1].has_policy


def test_yaml_flat_policy_keys_and_entries_mapping(tmp_path: Path) -> None:
    text = "entries:\n  - id: a\n    question: 问\n    answer: 答\n    valid_from: 2024-01-01\n    issuer: 街道\n"
    (e,) = load_file(_write(tmp_path, "kb.yml", text))
    assert e.valid_from == date(2024, 1, 1) and e.issuer == "街道"


def test_jsonl(tmp_path: Path) -> None:
    lines = [
        {
            "id": "a",
            "question": "问一",
            "answer": "答一",
            "similar": ["问法"],
            "policy": {"valid_until": "2025-06-30"},
        },
        {"id": "b", "question": "问二", "answer": "答二", "tags": "x|y"},
    ]
    p = _write(tmp_path, "kb.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    a, b = load_file(p)
    assert a.similar == ("问法",) and a.valid_until == date(2025, 6, 30)
    assert b.tags == ("x", "y")


def test_csv_pipe_lists_and_flat_policy(tmp_path: Path) -> None:
    p = _csv(
        tmp_path,
        [
            ["id", "question", "answer", "similar", "tags", "valid_until", "where_to_apply"],
            ["a", "怎么落户", "见人社局", "户口怎么迁|落户条件", "人才|落户", "2026/1/31", "人社局"],
        ],
    )
    (e,) = load_file(p)
    assert e.similar == ("户口怎么迁", "落户条件")
    assert e.tags == ("人才", "落户")
    assert e.valid_until == date(2026, 1, 31)
    assert e.where_to_apply == "人社局"


def test_csv_gb18030_is_decoded(tmp_path: Path) -> None:
    p = _csv(
        tmp_path, [["id", "question", "answer"], ["a", "营业执照怎么办", "去一网通办"]], encoding="gb18030"
    )
    (e,) = load_file(p)
    assert e.question == "营业执照怎么办"


def test_csv_chinese_headers(tmp_path: Path) -> None:
    p = _csv(tmp_path, [["编号", "问题", "答案", "相似问法"], ["a", "问", "答", "一|二"]])
    (e,) = load_file(p)
    assert e.similar == ("一", "二")


def test_xlsx(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id", "question", "answer", "similar", "valid_until"])
    ws.append([101, "问", "答", "甲|乙", date(2026, 12, 31)])
    p = tmp_path / "kb.xlsx"
    wb.save(p)
    (e,) = load_file(p)
    assert e.id == "101"  # a numeric cell is not "101.0"
    assert e.similar == ("甲", "乙") and e.valid_until == date(2026, 12, 31)


def test_load_dir_and_cross_file_duplicates(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "- {id: x, question: 问, answer: 答}\n")
    _write(tmp_path, "b.jsonl", json.dumps({"id": "y", "question": "问", "answer": "答"}) + "\n")
    _write(tmp_path, "notes.txt", "ignored")
    assert {e.id for e in load_dir(tmp_path)} == {"x", "y"}
    _write(tmp_path, "c.jsonl", json.dumps({"id": "x", "question": "问", "answer": "答"}) + "\n")
    with pytest.raises(KBLoadError) as exc:
        load_files(sorted(tmp_path.glob("*.yaml")) + sorted(tmp_path.glob("*.jsonl")))
    assert any("c.jsonl" in m and "“x”" in m and "a.yaml" in m for m in exc.value.errors)


# ---------------------------------------------------------------- errors


def test_missing_required_columns(tmp_path: Path) -> None:
    errs = _errors(_csv(tmp_path, [["id", "question"], ["a", "问"]]))
    assert len(errs) == 1
    assert "kb.csv" in errs[0] and "第 1 行" in errs[0] and "“answer”" in errs[0] and "缺少" in errs[0]


def test_empty_required_values_report_row_and_field(tmp_path: Path) -> None:
    rows = [["id", "question", "answer"], ["a", "问", "答"]] + [["b", "问", "答"]] * 0
    rows += [[f"r{i}", "问", "答"] for i in range(9)]
    rows.append(["z", "", "答"])  # 12th row counting the header as row 1
    errs = _errors(_csv(tmp_path, rows))
    assert errs == ["kb.csv：第 12 行 “question” 不能为空"]


def test_all_errors_are_collected(tmp_path: Path) -> None:
    errs = _errors(
        _csv(tmp_path, [["id", "question", "answer"], ["", "问", "答"], ["b", "问", ""], ["c", "", ""]])
    )
    assert len(errs) == 4
    assert "第 2 行 “id”" in errs[0] and "第 3 行 “answer”" in errs[1]


def test_duplicate_ids_in_csv(tmp_path: Path) -> None:
    errs = _errors(_csv(tmp_path, [["id", "question", "answer"], ["a", "问", "答"], ["a", "问2", "答2"]]))
    assert len(errs) == 1 and "第 3 行" in errs[0] and "“a”" in errs[0] and "第 2 行" in errs[0]


def test_duplicate_ids_in_yaml(tmp_path: Path) -> None:
    text = "- {id: a, question: 问, answer: 答}\n- {id: a, question: 问, answer: 答}\n"
    errs = _errors(_write(tmp_path, "kb.yaml", text))
    assert len(errs) == 1 and "第 2 条" in errs[0] and "重复" in errs[0]


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    errs = _errors(_write(tmp_path, "kb.yaml", "- id: a\n  question: [未闭合\n  answer: 答\n"))
    assert len(errs) == 1 and "YAML 格式错误" in errs[0] and "第 " in errs[0]


def test_yaml_top_level_must_be_a_list(tmp_path: Path) -> None:
    errs = _errors(_write(tmp_path, "kb.yaml", "id: a\nquestion: 问\n"))
    assert "顶层" in errs[0]


def test_yaml_empty_field_names_entry_and_line(tmp_path: Path) -> None:
    text = "- id: a\n  question: 问\n  answer: 答\n- id: b\n  question: ''\n  answer: 答\n"
    errs = _errors(_write(tmp_path, "kb.yaml", text))
    assert errs == ["kb.yaml：第 2 条（第 4 行） “question” 不能为空"]


def test_broken_json_line(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "question": "问", "answer": "答"}, ensure_ascii=False)
    errs = _errors(
        _write(tmp_path, "kb.jsonl", good + "\n" + '{"id": "b", "question": \n' + good.replace('"a"', '"c"'))
    )
    assert len(errs) == 1 and "第 2 行" in errs[0] and "JSON 格式错误" in errs[0]


def test_bad_dates(tmp_path: Path) -> None:
    text = "- id: a\n  question: 问\n  answer: 答\n  policy:\n    valid_until: 2026-13-01\n"
    errs = _errors(_write(tmp_path, "kb.yaml", text))
    assert (
        len(errs) == 1 and "“valid_until”" in errs[0] and "2026-13-01" in errs[0] and "YYYY-MM-DD" in errs[0]
    )
    errs = _errors(_csv(tmp_path, [["id", "question", "answer", "valid_from"], ["a", "问", "答", "下个月"]]))
    assert "第 2 行 “valid_from”" in errs[0]


def test_valid_from_after_valid_until(tmp_path: Path) -> None:
    rows = [
        ["id", "question", "answer", "valid_from", "valid_until"],
        ["a", "问", "答", "2026-01-01", "2025-01-01"],
    ]
    errs = _errors(_csv(tmp_path, rows))
    assert "晚于" in errs[0]


def test_xlsx_merged_cells_are_reported_not_guessed(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "知识库"
    ws.append(["id", "question", "answer"])
    ws.append(["a", "问一", "同一个答案"])
    ws.append(["b", "问二", None])
    ws.append(["c", "问三", "答三"])
    ws.merge_cells("C2:C3")
    p = tmp_path / "kb.xlsx"
    wb.save(p)
    errs = _errors(p)
    assert len(errs) == 1
    assert "C2:C3" in errs[0] and "合并单元格" in errs[0] and "知识库" in errs[0] and "第 2 行" in errs[0]


def test_non_utf8_undecodable_csv(tmp_path: Path) -> None:
    p = tmp_path / "kb.csv"
    p.write_bytes(b"id,question,answer\n\xff\xfe\xff,\x81,\x80\xff\n")
    errs = _errors(p)
    assert "编码" in errs[0] and "UTF-8" in errs[0]


def test_unknown_extension(tmp_path: Path) -> None:
    errs = _errors(_write(tmp_path, "kb.txt", "x"))
    assert "不支持的文件类型" in errs[0] and ".txt" in errs[0]


def test_strict_rejects_unknown_fields(tmp_path: Path) -> None:
    p = _write(tmp_path, "kb.yaml", "- {id: a, question: 问, answer: 答, similiar: [x]}\n")
    assert load_file(p)[0].similar == ()
    with pytest.raises(KBLoadError) as exc:
        load_file(p, strict=True)
    assert "“similiar”" in exc.value.errors[0] and "未知字段" in exc.value.errors[0]


def test_error_message_summary_is_chinese(tmp_path: Path) -> None:
    with pytest.raises(KBLoadError) as exc:
        load_file(_csv(tmp_path, [["id", "question", "answer"], ["a", "", ""]]))
    assert str(exc.value).startswith("知识库文件导入失败，共 2 处错误")


# ---------------------------------------------------------------- export


ENTRIES = [
    Entry(
        id="a",
        question="外籍人才如何办理工作许可？",
        answer="第一步：登录。\n第二步：提交，材料包括“护照”, 逗号和引号。",
        similar=("外国人工作许可怎么办", "老外工作证"),
        category="人才服务",
        tags=("外籍人才", "工作许可"),
        issuer="市科委",
        url="https://example.gov.cn/x",
        valid_from=date(2024, 1, 1),
        valid_until=date(2026, 12, 31),
    ),
    Entry(id="b", question="怎么办营业执照", answer="一网通办", retired=True),
]


@pytest.mark.parametrize("ext", [".yaml", ".yml", ".jsonl", ".csv", ".xlsx"])
def test_dump_round_trip(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"out{ext}"
    dump_file(ENTRIES, p)
    assert load_file(p) == ENTRIES


def test_dump_escapes_pipe_in_list_for_tables(tmp_path: Path) -> None:
    e = Entry(id="a", question="问", answer="答", similar=("甲|乙",))
    dump_file([e], tmp_path / "x.csv")  # refusing stopped every table export of the whole knowledge base
    assert load_file(tmp_path / "x.csv")[0].similar == ("甲|乙",)
    dump_file([e], tmp_path / "x.yaml")  # lists are native there
    assert load_file(tmp_path / "x.yaml")[0].similar == ("甲|乙",)


def test_an_export_that_fails_half_way_leaves_the_previous_file(tmp_path, monkeypatch):
    """dump_file wrote straight into the target: an export that failed half-way (a full disk, an error) left a torn
    file where the previous backup was. It writes beside it and moves it over at the end."""
    import knowledge.loaders as loaders

    target = tmp_path / "kb.jsonl"
    target.write_text('{"id": "old"}\n', encoding="utf-8")

    def torn(items, p, ext):
        p.write_text('{"id": "new", "quest', encoding="utf-8")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loaders, "_write_entries", torn)
    with pytest.raises(OSError):
        loaders.dump_file([Entry(id="new", question="新问题", answer="新答案")], target)
    assert target.read_text(encoding="utf-8") == '{"id": "old"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["kb.jsonl"]  # no temporary file left behind
