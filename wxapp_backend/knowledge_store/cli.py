"""`flask --app wsgi kb import|export|search`, and loading the default knowledge base on init-db."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, current_app
from sqlalchemy import func, select

from knowledge.loaders import KBLoadError, dump_file, load_dir, load_table, unknown_fields_only

from ..audit import SYSTEM
from ..config import ROOT
from ..db import session_scope
from ..errors import AppError
from .chat import bot_decision
from .models import KBEntry
from .services import clashes_among, entry_from_row, get_runtime, import_entries, today_shanghai

# What `kb search` prints for each of the bot's decisions (the code stays beside it, for scripts).
DECISION_WORDS = {"answer": "直接回答", "suggest": "给出选项（您是不是想问）", "fallback": "答不上来（请用户提交诉求或转人工）"}

DEFAULT_DATA = ROOT / "knowledge" / "data"


def load_default_if_empty() -> list[str]:
    """Load knowledge/data/*.yaml when the knowledge base is empty (init-db and seed-demo)."""
    state = current_app.extensions["wxapp"]
    with session_scope() as s:
        if s.scalar(select(func.count(KBEntry.id))):
            return []
        entries = load_dir(DEFAULT_DATA, strict=True)
        report = import_entries(s, state.redis, SYSTEM, entries, source=str(DEFAULT_DATA))
    return [f"知识库：载入默认条目，{report.summary()}。"]


CLASHES_SHOWN = 10

# From this many entries (or a file this large) a command says what it is doing: a 20,000-entry import ran 24 s
# without a word (reading, writing, the phrasing check: 6-8 s each), and the first search on it 20-30 s.
PROGRESS_FROM = 2000
PROGRESS_FROM_BYTES = 512 * 1024


def _progress(text: str) -> None:
    click.echo(text, err=True)


def _read_import(file: Path):
    """(entries, columns) of a file to import; a ClickException saying what is wrong, the knowledge base untouched."""
    try:
        if file.stat().st_size >= PROGRESS_FROM_BYTES:
            _progress(f"正在读取 {file}（{file.stat().st_size / 1024 / 1024:.1f} MB）……")
    except OSError:
        pass  # load_table says what is wrong with the file
    try:
        entries, columns = load_table(file, strict=True)
    except KBLoadError as exc:
        # Columns beyond the ones we know (a note, a reviewer's mark) are left out, and said so: a misspelt
        # field name shows here rather than vanishing.
        ignored = unknown_fields_only(exc)
        if ignored is None:
            raise click.ClickException(f"导入失败，知识库未改动：\n{exc}") from None
        entries, columns = load_table(file)
        click.echo(f"提示：已忽略不认识的列 {'、'.join(ignored)}（可用的列：id、question、answer、similar、"
                   "category、tags 及政策字段）。")
    if not entries:
        raise click.ClickException("文件里没有条目，知识库未改动。")
    return entries, columns


def _warn_clashes(ids: set[str]) -> None:
    """After an import: the imported phrasings another current entry already holds, as the console says on save
    (the bot answers those words with one of the two only). Read from the table, the import itself unchanged."""
    with session_scope() as s:
        rows = [entry_from_row(row) for row in s.scalars(select(KBEntry).where(KBEntry.retired.is_(False))
                                                         .order_by(KBEntry.id))]
    clashes = clashes_among(rows, ids, today_shanghai())
    for text, entry, other in clashes[:CLASHES_SHOWN]:
        click.echo(f"注意：条目 {entry.id}（{entry.question}）的问法“{text}”与条目 {other.id}（{other.question}）的问法"
                   "重复，机器人遇到这句话只会用其中一条回答。请删去不该回答它的那一处。")
    if len(clashes) > CLASHES_SHOWN:
        click.echo(f"……还有 {len(clashes) - CLASHES_SHOWN} 处重复的问法没有列出。")


def register(app: Flask) -> None:
    from ..cli import AFTER_INIT_DB
    from ..demo import SEED_HOOKS

    if load_default_if_empty not in AFTER_INIT_DB:
        AFTER_INIT_DB.append(load_default_if_empty)
        SEED_HOOKS.append(load_default_if_empty)

    kb = click.Group("kb", help="知识库：导入、导出、检索。")

    @kb.command("import")
    @click.argument("file", metavar="文件", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--replace", is_flag=True, help="文件中没有的条目将下线（不会删除）")
    def kb_import(file: Path, replace: bool) -> None:
        """导入知识库文件 .yaml/.jsonl/.csv/.xlsx（列 id, question, answer；可选 similar, category, tags）。"""
        from ..cli import require_current_schema

        require_current_schema()
        # One transaction: stopped anywhere before its commit (Ctrl-C, an error), nothing of the file is in.
        try:
            entries, columns = _read_import(file)
            if len(entries) >= PROGRESS_FROM:
                _progress(f"正在写入知识库（{len(entries)} 条），请稍候……")
            with session_scope() as s:
                report = import_entries(s, current_app.extensions["wxapp"].redis, SYSTEM, entries, replace=replace,
                                        source=str(file), columns=columns)
        except AppError as exc:
            raise click.ClickException(f"导入失败，知识库未改动：\n{exc.message}") from None
        except KeyboardInterrupt:
            click.echo("\n已中断，知识库未改动（导入要么全部完成，要么一条也不写入）。", err=True)
            raise click.exceptions.Exit(130) from None
        click.echo(f"导入完成：{report.summary()}。")
        if len(entries) >= PROGRESS_FROM:
            _progress("正在检查重复的问法（导入已完成，可随时按 Ctrl-C 跳过）……")
        try:
            _warn_clashes({e.id for e in entries})
        except KeyboardInterrupt:  # the import is committed: skipping the check is not a failure
            click.echo("\n已跳过重复问法的检查（导入已完成）；要查看，可再导入一次同一文件（条目不会重复写入）。", err=True)

    @kb.command("export")
    @click.argument("file", metavar="文件", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--include-retired", is_flag=True, help="同时导出已下线条目")
    @click.option("--force", is_flag=True, help="知识库为空时也覆盖已有的文件")
    def kb_export(file: Path, include_retired: bool, force: bool) -> None:
        """导出知识库，格式按文件扩展名（.yaml/.jsonl/.csv/.xlsx）。"""
        from ..cli import require_current_schema

        # A database at an older migration: a backup of the old schema, said to be complete (or a missing column's
        # traceback), while every other command said to run init-db first.
        require_current_schema()
        with session_scope() as s:
            stmt = select(KBEntry).order_by(KBEntry.category, KBEntry.id)
            if not include_retired:
                stmt = stmt.where(KBEntry.retired.is_(False))
            entries = [entry_from_row(r) for r in s.scalars(stmt)]
            # Said, not silent: a backup without them, restored into an empty database, lost them.
            left_out = 0 if include_retired else s.scalar(select(func.count(KBEntry.id)).where(KBEntry.retired))
        if not entries and not force and file.is_file() and file.stat().st_size > 0:
            # A wrong DATABASE_URL (an empty database) would have replaced a good backup with an empty file.
            raise click.ClickException(
                f"要导出的知识库里没有条目（数据库选对了吗？），不会覆盖已有的 {file}；确实要写入空文件，请加 --force。")
        try:
            dump_file(entries, file)
        except (KBLoadError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError:
            raise click.ClickException(f"无法写入 {file}，请确认文件夹存在、有写入权限，且文件没有在别的程序中打开。") from None
        click.echo(f"已导出 {len(entries)} 条到 {file}。"
                   + (f"另有 {left_out} 条已下线的条目没有导出；备份整个知识库请加 --include-retired。" if left_out else ""))

    @kb.command("search")
    @click.argument("query_text", metavar="问题")
    @click.option("--limit", type=click.IntRange(1, 20), default=5, show_default=True, help="显示的条目数（1-20）")
    def kb_search(query_text: str, limit: int) -> None:
        """显示机器人对一个问题的判断（回答、推荐或转人工）和最相近的条目。"""
        from ..cli import require_current_schema

        if not query_text.strip():  # it loaded the whole knowledge base to say the question was empty
            raise click.UsageError("请写出要检索的问题，例如：flask --app wsgi kb search 营业执照怎么办")
        require_current_schema()  # the bot is not answered from a database the code no longer matches
        runtime = get_runtime()
        if not runtime.loaded:
            with session_scope() as s:
                count = s.scalar(select(func.count(KBEntry.id)).where(KBEntry.retired.is_(False))) or 0
            if count >= PROGRESS_FROM:
                _progress(f"正在载入知识库（{count} 条），条目多时需要一些时间……")
        kb_index = runtime.get()
        decision, hits = bot_decision(kb_index, query_text, limit)
        click.echo(f"决定：{DECISION_WORDS.get(decision.kind, decision.kind)} [{decision.kind}]（{decision.reason}）")
        for i, h in enumerate(hits, 1):
            click.echo(f"{i}. [{h.confidence:.2f}] {h.entry.id}  {h.entry.question}")

    app.cli.add_command(kb)
