"""CLI QA (session 19): what an operator reads from `flask --app wsgi ...` is Chinese down to click's own words.

Session 18 gave every command Chinese help inside click's English frame; left were the metavars (`[OPTIONS]`,
`COMMAND [ARGS]...`, `TEXT`, `INTEGER RANGE`, an argument's name in capitals: `USERNAME`, `FILE`, `QUERY`, also
in "缺少参数 USERNAME"), Flask's own commands in the listing ("Run a development server."), a Chinese word typed
by the operator that made click's English refusal pass for ours ("Got unexpected extra argument (执照)"), a flag
given a value told it needed one, and help columns measured in characters (a Chinese metavar pushed its
description two columns right; a Chinese description was cut at twice the width of the line)."""

from __future__ import annotations

import re
import unicodedata

import click
import pytest
from flask.cli import FlaskGroup


def _command_paths(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _command_paths(cmd, (*prefix, name))


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _own_words(cmd: click.Command) -> str:
    """The texts we wrote for `cmd` (its help, its options' help and names, its sub-commands' help)."""
    texts = [cmd.help or ""]
    texts += [getattr(p, "help", None) or "" for p in cmd.params]
    texts += [" ".join(getattr(p, "opts", [])) for p in cmd.params]
    texts += [str(c) for p in cmd.params if isinstance(p.type, click.Choice) for c in p.type.choices]
    texts += [sub.help or "" for sub in getattr(cmd, "commands", {}).values()]
    return "\n".join(texts)


CLICK_WORDS = ("Usage", "Options", "Commands", "Show this message", "OPTIONS", "COMMAND", "ARGS", "TEXT",
               "INTEGER", "RANGE", "PATH", "FILENAME", "BOOLEAN", "FLOAT", "required]", "default:")


def test_every_command_s_help_has_no_english_word_of_click(app, app_ctx):
    runner = app.test_cli_runner()
    paths = list(_command_paths(app.cli))
    assert len(paths) >= 15  # init-db … worker, kb (3), appeals (2)
    for path, cmd in paths:
        result = runner.invoke(args=[*path, "--help"])
        out = result.output
        assert result.exit_code == 0, (path, out)
        usage = out.splitlines()[0]
        assert re.match(rf"用法：\S+ {' '.join(path)} \[选项\]", usage), (path, out)  # prog: flask
        if isinstance(cmd, click.Group):
            assert usage.endswith("命令 [参数]..."), (path, out)
        for word in CLICK_WORDS:
            assert word not in out, (path, word, out)
        # Any capitalised word not of our own texts (BIND, REDIS_URL, CPU are ours) is click's.
        theirs = set(re.findall(r"[A-Z][A-Z_]{2,}", out)) - set(re.findall(r"[A-Z][A-Z_]{2,}", _own_words(cmd)))
        assert not theirs, (path, theirs, out)
        for p in cmd.params:
            if isinstance(p, click.Argument):
                assert any("\u4e00" <= ch <= "\u9fff" for ch in p.make_metavar(click.Context(cmd))), (path, p.name)
        # The descriptions start in one column, counted as the terminal shows it (a Chinese character: two).
        section = out.split("选项：\n", 1)[1].split("\n\n", 1)[0]
        starts = set()
        for row in section.splitlines():
            found = re.match(r"^  (\S.*?)  +(\S.*)$", row)
            if found and found.group(1).startswith("-"):
                starts.add(_columns(row[: found.start(2)]))
        assert len(starts) == 1, (path, out)
        for line in out.splitlines():
            assert _columns(line) <= 80, (path, line)


def test_the_option_column_lines_up_under_chinese_metavars(app, app_ctx):
    out = app.test_cli_runner().invoke(args=["create-staff", "--help"]).output
    assert "--password 文字" in out and "--role [admin|staff|dept]" in out and " create-staff [选项] 用户名\n" in out
    password = next(line for line in out.splitlines() if "--password" in line)
    role = next(line for line in out.splitlines() if "--role" in line)
    assert _columns(password[: password.index("至少")]) == _columns(role[: role.index("角色")]), out


@pytest.mark.parametrize(("args", "said"), [
    # a missing argument, named in Chinese (it was "缺少参数 USERNAME")
    (["create-staff"], "缺少参数 用户名"),
    (["kb", "import"], "缺少参数 文件"),
    (["kb", "export"], "缺少参数 文件"),
    (["kb", "search"], "缺少参数 问题"),
    (["kb", "import", "/nonexistent/kb.csv"], "参数 文件：找不到这个文件：/nonexistent/kb.csv"),
    # a bad integer
    (["kb", "search", "开公司", "--limit", "x"], "选项 --limit：应为 1 到 20 之间的整数"),
    (["serve", "--workers", "很多"], "选项 --workers：应为 1 到 64 之间的整数"),
    # an unknown option, and the start of one
    (["kb", "search", "开公司", "--bogus"], "没有 --bogus 这个选项"),
    (["seed-demo", "--reset"], "没有 --reset 这个选项，您是不是想用 --reset-admin-password？"),
    # a flag given a value was told it needed one
    (["kb", "import", "/nonexistent/kb.csv", "--replace=yes"], "选项 --replace 是开关，不用跟值"),
    (["worker", "--burst=1"], "选项 --burst 是开关，不用跟值"),
    # the operator's own Chinese words made click's English refusal pass for a command's own
    (["kb", "search", "营业", "执照"], "多余的参数：执照（一段含空格的话请用引号括起来"),
    (["create-staff", "张三", "李四", "--password", "abcdefgh1", "--role", "staff"], "多余的参数：李四"),
    (["appeals", "tick", "x"], "多余的参数：x"),
])
def test_a_usage_mistake_is_one_chinese_line_with_exit_status_2(app, app_ctx, args, said):
    result = app.test_cli_runner().invoke(args=args)
    out = result.output
    assert result.exit_code == 2, (args, out)
    assert out.startswith("错误：") and said in out, (args, out)
    assert f"用法请看：flask --app wsgi {args[0]}" in out and "--help" in out, (args, out)
    for english in ("Error", "Usage", "Missing", "Invalid value", "No such", "unexpected", "does not take",
                    "requires", "USERNAME", "FILE", "QUERY", "Traceback"):
        assert english not in out, (args, english, out)


def test_the_top_level_listing_describes_flask_s_own_commands_in_chinese(app, app_ctx, monkeypatch):
    """`flask --app wsgi --help` listed "run  Run a development server.", "shell  Run a shell in the app
    context.", "routes  Show the routes for the app." among ours, and cut ours at 58 characters, which is twice
    that many columns ("chat  与数字店小二对话：…，与线上一致。" ran past the 80th)."""
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)  # FlaskGroup sets it; restored after the test
    result = app.test_cli_runner().invoke(cli=FlaskGroup(load_dotenv=False), args=["--help"])
    assert result.exit_code == 0, result.output
    rows = dict(re.findall(r"^  ([a-z][a-z-]+)  +(\S.*)$", result.output.split("Commands:", 1)[1], re.M))
    assert {"run", "shell", "routes", "kb", "chat", "init-db", "worker"} <= set(rows), result.output
    for name, text in rows.items():
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text), (name, text)
    for line in result.output.split("Commands:", 1)[1].splitlines():
        assert _columns(line) <= 80, line
    # The command itself is Flask's as before: only the listing's words changed.
    assert FlaskGroup(load_dotenv=False).commands["run"].params
