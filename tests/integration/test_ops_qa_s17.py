"""Operating the service: the operator CLI as a newcomer runs it (QA pass 17)."""

from __future__ import annotations

import re

import pytest

HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def no_real_worker(monkeypatch):
    """What `worker` would have started: recorded, never run (a real worker listens for ever)."""
    import wxapp_backend.jobs_runtime as jobs_runtime

    started: list[list[str]] = []
    monkeypatch.setattr(jobs_runtime, "run_worker", lambda names, burst=False: started.append(list(names)) or True)
    return started


def test_a_worker_on_a_queue_nothing_is_put_on_is_refused_naming_the_queue_the_jobs_use(app, no_real_worker):
    """`worker --queue nosuch` (a typo, or a name from another project's runbook) started silently and listened on
    a queue nobody ever enqueues to: the jobs piled up in `default` and nothing said why. It is refused now, in
    Chinese, naming the queue the jobs are put on; the queue the jobs use (named or not) still starts."""
    runner = app.test_cli_runner()
    known = app.extensions["wxapp"].settings.queue_name
    result = runner.invoke(args=["worker", "--burst", "--queue", "nosuch"])
    assert result.exit_code == 2, result.output
    assert "nosuch" in result.output and known in result.output and "错误：" in result.output, result.output
    assert "Traceback" not in result.output and "Error" not in result.output
    mixed = runner.invoke(args=["worker", "--burst", "--queue", known, "--queue", "nosuch"])
    assert mixed.exit_code == 2 and "nosuch" in mixed.output, mixed.output
    assert no_real_worker == []
    for args in (["worker", "--burst"], ["worker", "--burst", "--queue", known]):
        ok = runner.invoke(args=args)
        assert ok.exit_code == 0, ok.output
    assert no_real_worker == [[known], [known]]


def test_the_known_queue_check_is_a_function_of_its_own(app_ctx):
    from wxapp_backend.cli import unknown_queues

    assert unknown_queues(["default", "nosuch", " default "], known={"default"}) == ["nosuch", " default "]
    assert unknown_queues([], known={"default"}) == []


def test_kb_export_into_a_folder_says_a_file_path_is_needed_with_an_example(app, app_ctx, tmp_path):
    """`kb export <folder>` answered "找不到这个文件（或它是文件夹、没有读取权限）": the folder is there, export
    writes rather than reads, and nothing said what to give instead. Like `kb import` (which takes a file, not a
    folder) it is refused, saying the path is a folder and giving a file path in it to use."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["kb", "export", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "文件夹" in result.output and str(tmp_path / "kb.yaml") in result.output, result.output
    assert "找不到" not in result.output and "读取" not in result.output, result.output
    assert list(tmp_path.iterdir()) == []
    into = runner.invoke(args=["kb", "import", str(tmp_path)])
    assert into.exit_code == 2 and "文件夹" in into.output and "找不到" not in into.output, into.output
    missing = runner.invoke(args=["kb", "import", str(tmp_path / "nosuch.csv")])
    assert missing.exit_code == 2 and str(tmp_path / "nosuch.csv") in missing.output, missing.output
    assert "找不到" in missing.output and "文件夹" not in missing.output, missing.output


@pytest.mark.parametrize(("group", "subcommands"), [("kb", ("export", "import", "search")), ("appeals", ("tick", "weekly"))])
def test_a_command_group_given_without_its_subcommand_lists_them_in_chinese(app, group, subcommands):
    """`flask --app wsgi kb` (the sub-command forgotten) printed "错误：Usage: flask kb [OPTIONS] COMMAND [ARGS]..."
    and click's English help under the Chinese error prefix. It now says what is missing and lists the sub-commands
    with what each does, like the other usage mistakes (exit status 2, where to read the usage)."""
    result = app.test_cli_runner().invoke(args=[group])
    assert result.exit_code == 2, result.output
    assert "错误：" in result.output and "--help" in result.output, result.output
    assert "Usage" not in result.output and "Options" not in result.output, result.output
    for name in subcommands:
        assert name in result.output
    assert len(HAN.findall(result.output)) > 20  # each sub-command's one line of help


def test_an_unknown_command_is_said_in_chinese_with_the_likely_one(app):
    """`flask --app wsgi init_db` (underscore for dash) or `seed_demo` answered flask's English "Error: No such
    command 'init_db'." under an English usage block: the Chinese wording existed for sub-commands only (`kb nosuch`).
    It is one Chinese line now, with the command meant when the name is close, exit status 2 as before."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["init_db"])
    assert result.exit_code == 2, result.output
    assert "错误：没有 init_db 这个命令" in result.output and "init-db" in result.output, result.output
    assert "Error" not in result.output and "Usage" not in result.output, result.output
    far = runner.invoke(args=["zzzzqqq", "--whatever"])
    assert far.exit_code == 2 and "没有 zzzzqqq 这个命令" in far.output and "--help" in far.output, far.output
    assert "init-db" in runner.invoke(args=["--help"]).output  # the listing is unchanged


def test_an_option_given_without_its_value_says_where_to_read_the_usage(app):
    """`worker --queue` (the value forgotten) said "错误：选项 --queue 后面要跟一个值" and nothing more, where every
    other usage mistake also says which --help to read."""
    result = app.test_cli_runner().invoke(args=["worker", "--queue"])
    assert result.exit_code == 2, result.output
    assert "选项 --queue 后面要跟一个值" in result.output and "flask --app wsgi worker --help" in result.output, \
        result.output
    # Shell completion looks commands up without running them: an unknown one offers nothing and raises nothing.
    from click.shell_completion import ShellComplete

    assert ShellComplete(app.cli, {}, "flask", "_FLASK_COMPLETE").get_completions(["init_db"], "") == []


def test_kb_export_of_an_empty_database_does_not_overwrite_a_backup(settings, tmp_path):
    """`kb export` with a wrong DATABASE_URL (an empty database) replaced a good backup with an empty file, without a
    word. It refuses now, names the file and the way to do it anyway (--force); a new file is written as before."""
    import wxapp_backend
    from wxapp_backend.cli import upgrade_database

    app = wxapp_backend.create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}"))
    backup = tmp_path / "kb-backup.yaml"
    backup.write_text("- id: a\n  question: 营业执照怎么办\n  answer: 在一网通办申请。\n", encoding="utf-8")
    try:
        with app.app_context():
            upgrade_database()
            runner = app.test_cli_runner()
            result = runner.invoke(args=["kb", "export", str(backup)])
            assert result.exit_code == 1 and "--force" in result.output and str(backup) in result.output, result.output
            assert "营业执照" in backup.read_text(encoding="utf-8")
            fresh = tmp_path / "new.yaml"
            assert runner.invoke(args=["kb", "export", str(fresh)]).exit_code == 0 and fresh.is_file()
            assert runner.invoke(args=["kb", "export", str(backup), "--force"]).exit_code == 0
            assert "营业执照" not in backup.read_text(encoding="utf-8")
    finally:
        app.extensions["wxapp"].db.engine.dispose()
