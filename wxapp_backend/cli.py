"""Flask commands: init-db, create-staff, seed-demo, worker, serve."""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import click
from flask import Flask, current_app

from .config import ROOT
from .kv import is_embedded, stop_embedded_redis


def _state():
    return current_app.extensions["wxapp"]


def alembic_config(connection=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", _state().db.url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_REVISIONS: tuple[str, frozenset[str]] | None = None  # this release's head and every revision it knows


def schema_behind(conn) -> str | None:
    """What to do when the database is at an older migration of ours (the code upgraded, init-db not run since:
    pages and jobs fail on a missing column); None when it is up to date (or newer, or unknown: init-db says)."""
    global _REVISIONS
    from sqlalchemy import text

    if _REVISIONS is None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config())
        _REVISIONS = (script.get_current_head() or "", frozenset(r.revision for r in script.walk_revisions()))
    head, known = _REVISIONS
    current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if current in known and current != head:
        return f"数据库还停在迁移版本 {current}（本程序需要 {head}），请先运行 flask --app wsgi init-db 升级数据库。"
    return None


def upgrade_database() -> str:
    """Apply every migration (idempotent); returns the head revision."""
    from alembic import command
    from alembic.script import ScriptDirectory

    db = _state().db
    with db.engine.connect() as conn:
        sqlite = db.dialect == "sqlite"
        if sqlite:
            # A batch migration rebuilds a table (copy, DROP, rename): with foreign keys on, the DROP deleted every
            # row that points at it through ON DELETE CASCADE. SQLite takes the pragma outside a transaction only.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if db.dialect == "postgresql":
                    # Two processes running init-db at once must not both create the tables.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727001)")
                cfg = alembic_config(conn)
                _refuse_unknown_revision(conn, ScriptDirectory.from_config(cfg))
                command.upgrade(cfg, "head")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def _refuse_unknown_revision(conn, script) -> None:
    """A database a newer release has migrated (then rolled back to this one) stopped init-db and serve with
    alembic's traceback "Can't locate revision"; it is one line now, and the database is left as it is."""
    from alembic.migration import MigrationContext

    known = {rev.revision for rev in script.walk_revisions()}
    unknown = [rev for rev in MigrationContext.configure(conn).get_current_heads() if rev not in known]
    if unknown:
        raise click.ClickException(
            f"数据库的迁移版本是 {'、'.join(unknown)}，本程序不认识（本程序最新为 {script.get_current_head()}）："
            "它多半已由更新版本的程序升级过。请改用那个版本的程序，或从备份恢复与本版本相符的数据库；数据库未改动。")


@contextmanager
def _one_init_at_a_time() -> Iterator[None]:
    """PostgreSQL: init-db and serve on several machines at once take turns through the migrations and the
    after-init hooks (each hook sees what the one before loaded: runs that each saw an empty knowledge base all
    loaded it, and all but one died of a duplicate key). SQLite's write lock already serialises them."""
    db = _state().db
    if db.dialect != "postgresql":
        yield
        return
    with db.engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_lock(727002)")  # a session lock: it outlives the commit
        conn.commit()
        try:
            yield
        finally:
            conn.exec_driver_sql("SELECT pg_advisory_unlock(727002)")
            conn.commit()


def prepare_database() -> tuple[str, list[str]]:
    """Migrations, then the after-init hooks (default knowledge base, appeal catalogue); returns the head
    revision and what the hooks loaded."""
    with _one_init_at_a_time():
        head = upgrade_database()
        return head, _after_init_db()


def register_cli(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """创建或升级数据库，并在知识库为空时载入默认知识库和诉求分类（可重复运行）。"""
        head, loaded = prepare_database()
        click.echo(f"数据库已就绪（迁移版本 {head}）：{_masked_url()}")
        for line in loaded:
            click.echo(line)

    @app.cli.command("create-staff")
    @click.argument("username", metavar="用户名")
    @click.option("--password", required=True, help="至少 8 位，需同时包含字母和数字")
    @click.option("--role", type=click.Choice(["admin", "staff", "dept"]), required=True,
                  help="角色：admin 管理员（可管理账号）、staff 工作人员、dept 部门账号（需 --department）")
    @click.option("--department", default="", help="部门账号所属部门")
    @click.option("--name", "display_name", default="", help="显示名称")
    def create_staff(username: str, password: str, role: str, department: str, display_name: str) -> None:
        """创建工作台账号。"""
        from .auth.services import create_staff as _create
        from .db import session_scope
        from .errors import AppError

        require_current_schema()
        try:
            with session_scope() as s:
                staff = _create(s, username=username, password=password, role=role, department=department,
                                display_name=display_name)
                staff_id = staff.id
        except AppError as exc:
            raise click.ClickException(exc.message) from None
        click.echo(f"已创建工作人员账号 {username}（{role}，编号 {staff_id}）。")

    @app.cli.command("seed-demo")
    @click.option("--reset-admin-password", is_flag=True, help="为已有的 admin 账号生成新密码")
    def seed_demo(reset_admin_password: bool) -> None:
        """载入演示用的楼宇、网格、企业和管理员账号（可重复运行）。"""
        from .demo import seed

        require_current_schema()
        password = secrets.token_urlsafe(9)
        report = seed(admin_password=password, reset_admin_password=reset_admin_password)
        for line in report.lines:
            click.echo(line)
        if report.admin_password:
            # Shown before Redis is used: the password is committed already, and a Redis that did not answer
            # below left the operator with an error and an admin password nobody knew.
            click.echo("")
            click.echo(f"  工作台管理员账号：admin   密码：{report.admin_password}")
            click.echo("  （请妥善保存；忘记时运行 flask --app wsgi seed-demo --reset-admin-password）")
            # Whoever resets a forgotten password has usually used up their tries: the new one must work at once.
            from .auth.services import LoginThrottle

            settings = _state().settings
            LoginThrottle(_state().redis, settings.login_max_failures, settings.login_lockout_seconds).forget("admin")

    @app.cli.command("link-followers")
    def link_followers() -> None:
        """为尚未与小程序账号合并的公众号用户排队查询 unionid。"""
        from .auth.linking import queue_all_unlinked
        from .db import session_scope

        settings = _state().settings
        if not (settings.wechat_appid and settings.wechat_secret):
            raise click.ClickException("公众号接口还没有配置（缺少 WECHAT_APPID / WECHAT_SECRET），无法查询用户的 unionid。")
        require_current_schema()  # jobs queued against an older schema would each fail in the worker
        with session_scope() as s:
            queued = queue_all_unlinked(s)
        click.echo(f"已排队 {queued} 位公众号用户的 unionid 查询；由 worker 逐个完成，"
                   "查到后与同一人的小程序账号合并。")

    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="处理完队列中的任务后退出")
    @click.option("--queue", "queues", multiple=True, help="要处理的队列（默认 default）")
    def worker(burst: bool, queues: tuple[str, ...]) -> None:
        """运行后台任务进程（含延时任务和定时任务）。"""
        from .jobs_runtime import run_worker

        if any(not q.strip() for q in queues):
            raise click.UsageError("队列名（--queue）不能为空")
        known = known_queues()
        if unknown := unknown_queues(queues, known=known):
            # A worker on a queue nothing is put on listened for ever while the jobs piled up elsewhere.
            raise click.UsageError(
                f"没有任务会排进队列 {'、'.join(unknown)}：本程序的后台任务都在 {'、'.join(sorted(known))} 队列，"
                "请去掉 --queue（默认即是）或改用这个队列名。")
        _check_dependencies()  # refused here in one line, rather than every job failing
        run_worker(list(queues) or [_state().settings.queue_name], burst=burst)

    @app.cli.command("beat")
    def beat() -> None:
        """把当前到期的定时任务放入队列（worker 会自动做；供 cron 使用）。"""
        from .periodic import PERIODIC, beat_once

        _check_dependencies()  # jobs enqueued on a database without tables (or down) would all fail in the worker
        started = beat_once(_state().redis, _state().queue)
        click.echo(f"已排队：{'、'.join(started) or '无（本时段已执行）'}；共 {len(PERIODIC)} 个定时任务。")

    @app.cli.command("serve")
    @click.option("--bind", default=None, help="监听地址，默认 127.0.0.1:8000（或环境变量 BIND）")
    @click.option("--workers", type=click.IntRange(1, 64), default=None, help="Web 进程数（默认 CPU 核数的 2 倍，至少 2 个）")
    @click.option("--no-worker", is_flag=True, help="不启动后台任务进程")
    def serve(bind: str | None, workers: int | None, no_worker: bool) -> None:
        """在本机启动网页服务和一个后台任务进程；按 Ctrl-C 全部停止。"""
        _state().redis.ping()  # before anything starts: a Redis that does not answer is one line, exit status 1
        address = bind or os.environ.get("BIND") or "127.0.0.1:8000"
        if said := _bind_problem(address):
            raise click.ClickException(said)
        from .config import ConfigError, web_count

        try:  # gunicorn reads WEB_CONCURRENCY when imported, before gunicorn.conf.py could say it in one line
            for name, least in (("WEB_CONCURRENCY", 1), ("WEB_THREADS", 1), ("WEB_TIMEOUT", 0)):
                if not (name == "WEB_CONCURRENCY" and workers):
                    web_count(os.environ, name, 1, least)
        except ConfigError as exc:
            raise click.ClickException(f"配置有误，未能启动：{exc}") from None
        prepare_database()
        env = dict(os.environ)
        # The children start in the checkout: a relative INSTANCE_PATH must still mean the same folder.
        env["INSTANCE_PATH"] = str(_state().settings.instance_path)
        # Children must reach the same embedded Redis this process started.
        env.setdefault("REDIS_URL", _state().redis_url)
        # One metrics directory for web and job processes, so /metrics shows both.
        metrics_dir = _state().settings.instance_path / "metrics"
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        env["WXAPP_METRICS_SHARED"] = "1"
        if bind:
            env["BIND"] = bind
        if workers:
            env["WEB_CONCURRENCY"] = str(workers)
        py = sys.executable
        global _SERVE_PRCTL
        from .jobs_runtime import load_prctl

        _SERVE_PRCTL = load_prctl()
        procs = [subprocess.Popen([py, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
                                  cwd=ROOT, env=env, preexec_fn=_child_setup)]
        if not no_worker:
            procs.append(subprocess.Popen([py, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=env,
                                          preexec_fn=_child_setup))
        click.echo(f"已启动：网页服务 http://{env.get('BIND', '127.0.0.1:8000')}/console/"
                   + ("" if no_worker else "，后台任务进程 1 个") + "。按 Ctrl-C 停止。")
        click.echo("登录：账号 admin，密码是 seed-demo 打印的那个（忘记时运行 flask --app wsgi seed-demo "
                   "--reset-admin-password）。")
        requested = _supervise(procs)
        if not no_worker:
            _reclaim_jobs_of_stopped_worker()
        settings = _state().settings
        if is_embedded(settings):  # started for us by init-db or this command: stop it too, unless in use
            _state().redis.connection_pool.disconnect()  # our own connections do not count as "in use"
            if stop_embedded_redis(settings.instance_path, unless_in_use=True):
                click.echo("已停止内置 Redis（排队中的任务保存在 instance/redis，下次启动时继续）。")
            else:
                click.echo("内置 Redis 仍有其他进程在用，保持运行；不用时运行 flask --app wsgi stop-redis 停止。")
        if not requested:  # a child quit on its own: not a stop anyone asked for (service managers restart on this)
            raise click.exceptions.Exit(1)

    @app.cli.command("stop-redis")
    def stop_redis() -> None:
        """停止内置 Redis（未设置 REDIS_URL 时由 init-db 或 serve 启动；排队中的任务会保存下来）。"""
        settings = _state().settings
        if not is_embedded(settings):
            raise click.ClickException("已设置 REDIS_URL，使用的是外部 Redis，本命令不会停止它。")
        stop_embedded_redis(settings.instance_path)
        click.echo("已停止内置 Redis。")

    for command in app.cli.commands.values():
        localise(command)
    _unknown_commands_in_chinese(app)
    _flask_commands_in_chinese(app)
    _app_group_in_chinese(app)


# What `flask --app wsgi --help` lists for Flask's own commands (they said "Run a development server." among ours).
FLASK_COMMAND_WORDS = {
    "run": "启动 Flask 开发服务器（仅供开发调试；正式运行请用 serve）。",
    "shell": "打开带应用上下文的 Python 交互环境（供开发调试）。",
    "routes": "列出应用的全部网址路由。",
}

# The end of `flask --app wsgi --help`: what the project's commands are for, in the order they are used, Flask's
# own options (the page's English top, printed before the app is loaded) in Chinese, and where to read more. Each "\b" paragraph
# is printed as written (lines of at most 80 columns). A test checks that it names every command.
CLI_HELP = "企业服务中心公众号与小程序后端的命令行。"
CLI_OVERVIEW = """\b
本项目的命令（用法：flask --app wsgi 命令 …）：
  部署与运行  init-db 创建或升级数据库（首次部署和每次升级后运行）；
              serve 启动网页服务和后台任务，按 Ctrl-C 全部停止；
              worker、beat 另行运行后台任务进程和定时任务；
              stop-redis 停止内置 Redis。
  账号与数据  create-staff 创建工作台账号；seed-demo 载入演示数据；
              link-followers 合并公众号与小程序的同一用户。
  日常业务    kb 知识库的导入、导出和检索；appeals 诉求的 SLA 检查和周报；
              chat 在终端里与数字店小二对话，与线上一致。
  Flask 自带  run、shell、routes，供开发调试。"""
CLI_USAGE_HINT = """\b
某个命令的详细用法：flask --app wsgi 命令 --help
（例如 flask --app wsgi kb --help）。"""
FLASK_OPTIONS_WORDS = """\b
上方英文是 Flask 的通用选项：-A/--app 要加载的应用（本项目为 wsgi），
-e/--env-file 从文件读入环境变量，--debug 调试模式，--version 显示版本。"""


def _flask_commands_in_chinese(app: Flask) -> None:
    """Flask's group asks our group for its commands with its own context, when it lists them all: Flask's own
    commands (still Flask's) are then described in Chinese through click's public `short_help`, and the page ends
    with CLI_OVERVIEW (click prints a group's epilog after its commands). Flask prints the top of that page
    (Usage:, its --app/--env-file options) before it imports the app: that stays English, explained at the end."""
    list_commands = app.cli.list_commands

    def list_commands_zh(ctx: click.Context) -> list[str]:
        root = ctx.command
        if root is not app.cli and isinstance(root, click.Group):
            for name, words in FLASK_COMMAND_WORDS.items():
                cmd = root.commands.get(name)
                if cmd is not None and getattr(cmd.callback, "__module__", "") == "flask.cli":
                    cmd.short_help = words
            if root.epilog is None:  # (one a caller set is kept)
                root.epilog = "\n\n".join((CLI_OVERVIEW, FLASK_OPTIONS_WORDS, CLI_USAGE_HINT))
        return list_commands(ctx)

    app.cli.list_commands = list_commands_zh  # type: ignore[method-assign]


def _unknown_commands_in_chinese(app: Flask) -> None:
    """`flask --app wsgi init_db` got flask's English "No such command" under an English usage block (flask asks
    the app's commands last): an unknown name now finds a command that says it in Chinese, with the close ones."""
    get_command = app.cli.get_command

    def get_command_zh(ctx: click.Context, name: str) -> click.Command | None:
        found = get_command(ctx, name)
        if found is not None or name.startswith("-"):
            return found
        return _UnknownCommand(name)

    app.cli.get_command = get_command_zh  # type: ignore[method-assign]


def _app_group_in_chinese(app: Flask) -> None:
    """The app's own group, when it is the one invoked (Flask's test runner, `app.cli.main()`), had an English
    frame round an empty description: it says what it is in Chinese, with the overview of Flask's page."""
    group = app.cli
    group.help = group.help or CLI_HELP
    group.epilog = group.epilog or f"{CLI_OVERVIEW}\n\n{CLI_USAGE_HINT}"
    group.context_class = _ChineseHelpContext
    group.options_metavar = OPTIONS_METAVAR
    group.subcommand_metavar = SUBCOMMAND_METAVAR
    _help_option_in_chinese(group)


class _UnknownCommand(click.Command):
    def __init__(self, name: str) -> None:
        super().__init__(name, context_settings={"ignore_unknown_options": True}, hidden=True)

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        import difflib

        if extra.get("resilient_parsing"):  # shell completion looking ahead: nothing to offer, nothing to say
            return super().make_context(info_name, [], parent=parent, **extra)

        names: list[str] = []
        if parent is not None and isinstance(parent.command, click.Group):
            try:
                names = list(parent.command.list_commands(parent))
            except Exception:  # the listing is a courtesy: the refusal must show whatever happens
                names = []
        close = difflib.get_close_matches(self.name or "", names, n=3, cutoff=0.6)
        close += [n for n in names if self.name and self.name.replace("_", "-") == n and n not in close]
        said = f"没有 {self.name} 这个命令" + (f"，您是不是想用 {'、'.join(close)}？" if close else "。")
        refusal = CommandError(said + "\n全部命令请看：flask --app wsgi --help")
        refusal.exit_code = 2  # a usage mistake, as click's own refusal was
        raise refusal

# --- every command's mistakes in Chinese -----------------------------------------------------------------
# click words its own refusals in English, each under a Python traceback when a command met a database or Redis
# that did not answer. `localise` wraps every command (create_app has registered them all by then) so that an
# operator reads one Chinese line, with click's exit codes: 2 for a usage mistake, 1 for anything else.


class CommandError(click.ClickException):
    """A command's refusal, shown as 错误：… (click shows Error: …)."""

    def show(self, file=None) -> None:  # type: ignore[override]
        click.echo(f"错误：{self.format_message()}", err=True)


class CommandUsageError(click.UsageError):
    """A usage mistake in Chinese, with where to read the usage."""

    def show(self, file=None) -> None:  # type: ignore[override]
        click.echo(f"错误：{self.format_message()}", err=True)
        if self.ctx is not None:
            path = self.ctx.command_path.split(" ", 1)
            click.echo(f"用法请看：flask --app wsgi {path[1] if len(path) > 1 else ''} --help".replace("  ", " "),
                       err=True)


def _has_han(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _param_label(param: click.Parameter | None) -> str:
    if param is None:
        return "参数"
    if isinstance(param, click.Argument):
        return f"参数 {param.human_readable_name}"
    return f"选项 {max(param.opts, key=len)}"


def _value_hint(param: click.Parameter | None) -> str:
    kind = param.type if param is not None else None
    if isinstance(kind, click.Choice):
        return "只能是 " + "、".join(str(c) for c in kind.choices) + " 之一"
    if isinstance(kind, click.IntRange):
        return f"应为 {kind.min} 到 {kind.max} 之间的整数"
    if isinstance(kind, click.FloatRange):
        return f"应为 {kind.min} 到 {kind.max} 之间的数字"
    if isinstance(kind, click.types.IntParamType):
        return "应为整数"
    if isinstance(kind, click.types.FloatParamType):
        return "应为数字"
    if isinstance(kind, click.Path):
        return "找不到这个文件（或它是文件夹、没有读取权限）"
    return "值不对"


def _path_hint(exc: click.BadParameter, param: click.Parameter | None) -> str | None:
    """What is wrong with a file path, said for the path given: one hint for all ("找不到这个文件（或它是文件夹、
    没有读取权限）") sent the operator who gave `kb export` a folder looking for a file that was never meant to be
    there."""
    kind = param.type if param is not None else None
    found = re.match(r"""\w+ (['"])(.*)\1 (does not exist|is a directory|is not readable|is not writable)""",
                     exc.message)
    if not isinstance(kind, click.Path) or found is None:
        return None
    path, problem = found.group(2), found.group(3)
    if problem == "does not exist":
        return f"找不到这个文件：{path}，请检查路径是否写对"
    if problem == "is a directory":
        if kind.exists:  # read from: only the operator knows which file in it
            return f"{path} 是文件夹，请给出文件夹里那个文件的路径"
        return f"{path} 是文件夹，请给出要写入的文件路径，例如 {Path(path) / 'kb.yaml'}（格式按扩展名）"
    return f"没有{'读取' if problem == 'is not readable' else '写入'} {path} 的权限"


def usage_message(exc: click.UsageError, command: click.Command | None = None) -> str:
    """click's English usage error said in Chinese (`command`: the one refusing, when exc.ctx does not say)."""
    # Recognised by its class, then by click's wording: a Chinese word in it no longer means it is ours (the
    # argument names are Chinese, and `kb search 营业 执照` put the operator's own words in click's English).
    message = exc.format_message()
    param = getattr(exc, "param", None)
    if isinstance(exc, click.MissingParameter):
        return f"缺少{_param_label(param)}"
    if isinstance(exc, click.BadParameter):
        # A check of ours says it in Chinese; click's says it in English round the value typed ('很多').
        if _has_han(re.sub(r"'[^']*'|\"[^\"]*\"", "", exc.message)):
            return f"{_param_label(param)}：{exc.message}"
        return f"{_param_label(param)}：{_path_hint(exc, param) or _value_hint(param)}"
    if isinstance(exc, click.NoSuchOption):
        said = f"没有 {exc.option_name} 这个选项"
        close = list(exc.possibilities or [])
        refusing = exc.ctx.command if exc.ctx is not None else command
        if refusing is not None and len(exc.option_name) > 3:  # `seed-demo --reset`: the start of one
            close += [opt for p in refusing.params if isinstance(p, click.Option) for opt in p.opts
                      if opt.startswith(exc.option_name) and opt not in close]
        return said + (f"，您是不是想用 {'、'.join(close)}？" if close else "")
    if isinstance(exc, click.BadOptionUsage):
        if "does not take a value" in message:  # `--replace=yes`: it was told it needed one
            return f"选项 {exc.option_name} 是开关，不用跟值：写 {exc.option_name} 即打开"
        return f"选项 {exc.option_name} 后面要跟一个值"
    if found := re.match(r"No such command '(.+)'", message):
        return f"没有 {found.group(1)} 这个命令"
    if found := re.match(r"Got unexpected extra arguments? \((.*)\)", message):
        return f"多余的参数：{found.group(1)}（一段含空格的话请用引号括起来，例如 \"营业 执照\"）"
    return message  # ours already (a command's own check), or a refusal click words in a way not known here


def _outage_message(exc: Exception) -> str | None:
    """One line for a database or Redis that does not answer; None for any other error."""
    import redis
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from .kv import EmbeddedRedisError

    if isinstance(exc, OperationalError | ProgrammingError) and (
            getattr(exc.orig, "sqlstate", None) == "42P01" or "no such table" in str(exc.orig)):
        return "数据库里还没有建表，请先运行 flask --app wsgi init-db。"
    if isinstance(exc, OperationalError | ProgrammingError) and (
            getattr(exc.orig, "sqlstate", None) == "42P07" or "already exists" in str(exc.orig)):
        # A database that another program's tables are in (DATABASE_URL pointing at the wrong one): PostgreSQL's
        # DuplicateTable was a traceback, SQLite's said the database was down.
        detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        return (f"数据库里已有同名的表，但不是本程序建的（{detail}）：请确认 DATABASE_URL 指向本程序专用的数据库，"
                "或换一个空数据库后再运行 flask --app wsgi init-db。")
    if isinstance(exc, OperationalError):
        part, detail = "数据库（DATABASE_URL）", str(exc.orig or exc)
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.ResponseError | EmbeddedRedisError):
        # ResponseError: a server that refuses the URL's settings (a database number beyond its `databases`)
        part, detail = " Redis（REDIS_URL）", str(exc)
    else:
        return None
    detail = detail.strip().splitlines()[0] if detail.strip() else type(exc).__name__
    from .logs import RedactFilter

    settings = _state().settings
    secrets = settings.secret_values()
    for url in (settings.database_url, settings.redis_url):
        password = urlsplit(url).password if url else None
        if password:
            secrets.append(password)
    return f"无法使用{part}，请确认它已启动、地址和账号正确：{RedactFilter(secrets).redact(detail)}"


def _subcommands_message(group: click.Group, ctx: click.Context) -> str:
    lines = [f"请在 {group.name} 后面写上要做的事，可用的有："]
    subs = [(name, sub) for name in group.list_commands(ctx)
            if (sub := group.get_command(ctx, name)) is not None and not sub.hidden]
    width = max((len(name) for name, _ in subs), default=0)
    for name, sub in subs:
        lines.append(f"  {name.ljust(width)}  {sub.get_short_help_str(limit=60)}")
    return "\n".join(lines)


# --help in the same voice: click's frame round our Chinese text (Usage:, Options:, Show this message and exit.,
# [required], [default: 5]) was English.
_HELP_SECTIONS = {"Options": "选项", "Commands": "命令", "Positional arguments": "参数"}
_HELP_OPTION_TEXT = "显示本帮助并退出。"


class _ChineseHelpFormatter(click.HelpFormatter):
    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, args, "用法：" if prefix is None else prefix)

    def write_heading(self, heading: str) -> None:
        self.write(f"{'':>{self.current_indent}}{_HELP_SECTIONS.get(heading, heading)}：\n")

    # click measures a line in characters: a Chinese character takes two columns of the terminal, so the
    # descriptions beside `--password 文字` stood two columns further right than the others, and a Chinese line
    # ran to twice the width it was wrapped at. These two measure in columns.
    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        for i, paragraph in enumerate(p for p in re.split(r"\n\s*\n", text) if p.strip()):
            if i:
                self.write("\n")
            if paragraph.lstrip(" ").startswith("\b\n"):  # click's mark of a paragraph printed as written
                for line in paragraph.lstrip(" ")[2:].splitlines():
                    self.write(f"{indent}{line}\n".rstrip(" "))
                continue
            for line in _wrap(paragraph, max(self.width - self.current_indent, 11)):
                self.write(f"{indent}{line}\n")

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:  # type: ignore[override]
        rows = [(term, _help_extras_in_chinese(text)) for term, text in rows]
        first_col = min(max((_columns(term) for term, _ in rows), default=0), col_max) + col_spacing
        for term, text in rows:
            self.write(f"{'':>{self.current_indent}}{term}")
            if not text:
                self.write("\n")
                continue
            if _columns(term) <= first_col - col_spacing:
                self.write(" " * (first_col - _columns(term)))
            else:
                self.write("\n" + " " * (first_col + self.current_indent))
            lines = _wrap(text, max(self.width - first_col - 2, 10)) or [""]
            self.write(f"{lines[0]}\n")
            for line in lines[1:]:
                self.write(f"{'':>{first_col + self.current_indent}}{line}\n")


def _short(text: str, limit: int) -> str:
    """`text` in at most `limit` columns: the whole, else its first sentence, else what comes before its first
    bracket, else cut (at a comma when one is in its second half) with …"""
    for candidate in (text, text.split("。", 1)[0] + "。", text.split("（", 1)[0]):
        if _columns(candidate) <= limit:
            return candidate
    while text and _columns(text) > limit - 1:
        text = text[:-1]
    comma = max(text.rfind(sign) for sign in "，；：、")
    return (text[:comma] if comma > len(text) // 2 else text).rstrip() + "…"


def _columns(text: str) -> int:
    """How many terminal columns `text` takes (a Chinese character or full-width sign: two)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


_NO_LINE_START = set("，。、；：？！）》」』”’…")


def _wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` columns: between any two Chinese characters, at the spaces of other
    words (a word longer than a line keeps its own), and never a line starting with a closing sign."""
    lines: list[str] = []
    line = ""
    for token in re.findall(r"[!-~]+|\s+|.", " ".join(text.split())):
        if token == " ":
            line += " " if line else ""
            continue
        if line.strip() and _columns(line.rstrip()) + (line != line.rstrip()) + _columns(token) > width \
                and token not in _NO_LINE_START:
            lines.append(line.rstrip())
            line = ""
        line += token
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _help_extras_in_chinese(text: str) -> str:
    def extras(found: re.Match) -> str:
        items = []
        for item in found.group(1).split("; "):
            if item == "required":
                items.append("必填")
            elif item.startswith("default: "):
                items.append(f"默认 {item[len('default: '):]}")
            elif item.startswith("env var: "):
                items.append(f"环境变量 {item[len('env var: '):]}")
            elif re.fullmatch(r"(-?\d+)<=x<=(-?\d+)", item):
                continue  # the option's own help gives the range in words
            else:
                items.append(item)
        return f"[{'；'.join(items)}]" if items else ""

    return re.sub(r"\[((?:required|default: [^\]]*|env var: [^\]]*|-?\d+<=x<=-?\d+)(?:; [^\]]*)*)\]$", extras,
                  text).rstrip()


class _ChineseHelpContext(click.Context):
    formatter_class = _ChineseHelpFormatter


# The words click puts in a usage line and beside an option, for every command of ours (click: [OPTIONS],
# COMMAND [ARGS]..., TEXT, INTEGER RANGE, PATH, and an argument's own name in capitals, USERNAME). An argument is
# named where it is declared (`metavar="文件"`); an option's value by its type, checked in order (an IntRange is an
# IntParamType). A Choice keeps click's [admin|staff|dept]: those are the words to type.
OPTIONS_METAVAR = "[选项]"
SUBCOMMAND_METAVAR = "命令 [参数]..."
_TYPE_WORDS: tuple[tuple[type[click.ParamType], str], ...] = (
    (click.types.IntParamType, "整数"),
    (click.types.FloatParamType, "数字"),
    (click.types.BoolParamType, "是或否"),
    (click.File, "文件"),
    (click.DateTime, "日期"),
    (click.types.StringParamType, "文字"),
)


def _metavar(param: click.Parameter) -> str | None:
    """The Chinese metavar of `param`, or None to leave click's (a flag, a Choice, one declared already)."""
    if param.metavar is not None or (isinstance(param, click.Option) and (param.is_flag or param.count)):
        return None
    kind = param.type
    if isinstance(kind, click.Path):
        word = "文件" if kind.file_okay and not kind.dir_okay else "文件夹" if not kind.file_okay else "路径"
    else:
        word = next((w for cls, w in _TYPE_WORDS if isinstance(kind, cls)), None)
    if word is None:
        return None
    if isinstance(param, click.Argument) and not param.required:
        word = f"[{word}]"
    return word + ("..." if param.nargs != 1 else "")


def localise(command: click.Command) -> None:
    """Wrap `command` (and a group's commands) so that its errors reach the operator as one Chinese line."""
    make_context, invoke = command.make_context, command.invoke

    def make_context_zh(*args, **kwargs):
        try:
            return make_context(*args, **kwargs)
        except click.UsageError as exc:
            if isinstance(exc, CommandUsageError):
                raise
            if isinstance(command, click.Group) and exc.ctx is not None and exc.ctx.command is command \
                    and type(exc).__name__ == "NoArgsIsHelpError":
                # `flask kb` with its sub-command forgotten: click's English help came under 错误：
                raise CommandUsageError(_subcommands_message(command, exc.ctx), exc.ctx) from None
            where = exc.ctx
            if where is None and args:  # a refusal of click's parser (`--queue` without its value) has none
                where = click.Context(command, info_name=args[0], parent=kwargs.get("parent"))
            raise CommandUsageError(usage_message(exc, command), where) from None

    def invoke_zh(ctx):
        try:
            return invoke(ctx)
        except (CommandUsageError, CommandError, click.exceptions.Exit, click.Abort):
            raise
        except click.UsageError as exc:
            raise CommandUsageError(usage_message(exc, command), exc.ctx or ctx) from None
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from None
        except KeyboardInterrupt:
            click.echo("\n已中断。", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            said = _outage_message(exc)
            if said is None:
                raise
            raise CommandError(said) from None

    command.make_context = make_context_zh  # type: ignore[method-assign]
    command.invoke = invoke_zh  # type: ignore[method-assign]
    command.context_class = _ChineseHelpContext
    command.options_metavar = OPTIONS_METAVAR
    if isinstance(command, click.Group):
        command.subcommand_metavar = SUBCOMMAND_METAVAR
    for param in command.params:
        if (word := _metavar(param)) is not None:
            param.metavar = word
    _help_option_in_chinese(command)
    get_short_help_str = command.get_short_help_str

    def get_short_help_str_zh(limit: int = 45) -> str:
        """A listing's line cut to `limit` columns (click cut it at `limit` characters: twice as wide)."""
        return _short(get_short_help_str(limit=10_000), limit)

    command.get_short_help_str = get_short_help_str_zh  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        localise(sub)


def _help_option_in_chinese(command: click.Command) -> None:
    get_help_option = command.get_help_option

    def get_help_option_zh(ctx: click.Context) -> click.Option | None:
        option = get_help_option(ctx)
        if option is not None:
            option.help = _HELP_OPTION_TEXT
        return option

    command.get_help_option = get_help_option_zh  # type: ignore[method-assign]


_SERVE_PRCTL = None  # set by serve before it starts its children (jobs_runtime.load_prctl)


def _child_setup() -> None:
    """A child of `serve` leads its own process group (what it forks stays in it: gunicorn's workers, RQ's
    scheduler and job processes), so that `serve` can stop all of it; and it dies with `serve`."""
    os.setpgid(0, 0)
    _die_with_parent()


def _signal_group(p: subprocess.Popen, sig: int) -> bool:
    """Send `sig` to `p`'s process group; False when nothing is left in it."""
    try:
        os.killpg(p.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when `serve` dies, even by SIGKILL, so nothing is left orphaned. Runs between
    fork and exec: prctl was looked up in `serve` (_SERVE_PRCTL), a library load there can hang (jobs_runtime._PRCTL)."""
    if _SERVE_PRCTL is not None:
        _SERVE_PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _bind_problem(address: str) -> str | None:
    """Why gunicorn could not listen on HOST:PORT (in use, no such address), or None; gunicorn itself retries for
    seconds and says it in its log lines only."""
    import socket

    if address.startswith(("unix:", "fd://")):
        return None
    if ":" not in address:
        address = f"{address}:8000"  # gunicorn's port for a bare host
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if port.strip().isdigit() and int(port) > 65535:  # the probe's port wrapped round; gunicorn died of it
        return f"监听地址 {address} 的端口应为 0 到 65535 之间的数字，请用 --bind HOST:PORT（或环境变量 BIND）指定。"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
            probe.bind(sockaddr)
    except ValueError:
        return f"监听地址 {address} 的端口不是数字，请用 --bind HOST:PORT（或环境变量 BIND）指定。"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (f"无法监听 {address}：端口已被占用（另一个 serve 或程序正在使用）；请先停止它，"
                    "或用 --bind HOST:PORT（或环境变量 BIND）换一个端口。")
        return (f"无法监听 {address}：{exc.strerror or exc}；请用 --bind HOST:PORT（或环境变量 BIND）"
                "指定本机的一个地址。")
    return None


def _reclaim_jobs_of_stopped_worker() -> None:
    """The job a killed worker had in hand (serve's own, just now) goes back on the queue at once: the next start
    runs it first thing."""
    import redis

    from .jobs_runtime import reclaim_after_stop

    try:
        reclaimed = reclaim_after_stop(_state().queue)
    except redis.RedisError:
        return  # Redis went away with the worker: the next worker's clean-up finds the job
    if reclaimed:
        click.echo(f"后台任务进程中断时正在执行的 {len(reclaimed)} 个任务已放回队列，下次启动时重新执行。", err=True)


def known_queues() -> set[str]:
    """The queues this program puts its jobs on (enqueue, the periodic beat, the delayed jobs' scheduler)."""
    return {_state().settings.queue_name}


def unknown_queues(queues, *, known: set[str]) -> list[str]:
    """The names in `queues` no job is ever put on, in the order given."""
    return [q for q in queues if q not in known]


def _check_dependencies() -> None:
    """Raise what the database (or its missing tables) and Redis raise when they cannot be used; `localise` says
    it in one line."""
    _state().redis.ping()
    require_current_schema()


def require_current_schema() -> None:
    """Commands that read or write the tables stop, before changing anything, on a database still at an older
    migration (init-db forgotten after an upgrade): they failed on a missing column with a traceback, or wrote
    into the old schema as if all were well."""
    with _state().db.engine.connect() as conn:
        behind = schema_behind(conn)
    if behind:
        raise click.ClickException(behind)


def _after_init_db() -> list[str]:
    """Hooks that run after migrations (e.g. loading the default knowledge base when it is empty); returns the
    lines they report (what they loaded)."""
    lines: list[str] = []
    for hook in AFTER_INIT_DB:
        said = hook()
        if isinstance(said, list):
            lines.extend(str(x) for x in said)
    return lines


AFTER_INIT_DB: list = []


def _masked_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(_state().db.url).render_as_string(hide_password=True)


def _supervise(procs: list[subprocess.Popen]) -> bool:
    """Run until SIGINT / SIGTERM or until a child quits, then stop them all; True when a stop was asked for."""
    from .jobs_runtime import STOP_GRACE

    stopping = False
    requested = False

    def stop(*_):
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.terminate()

    def asked(*_):
        nonlocal requested
        requested = True
        stop()

    # SIGHUP: the terminal closed, a stop like Ctrl-C (it killed serve outright, leaving the private Redis).
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = [signal.signal(sig, asked) for sig in stop_signals]
    try:
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    click.echo(f"子进程 {p.args[2] if len(p.args) > 2 else p.args} 已退出（{p.returncode}），正在停止其余进程。",
                               err=True)
                    stop()
                    break
            time.sleep(0.5)
    finally:
        # The job worker gives its job STOP_GRACE seconds, then hands it back to the queue and exits.
        deadline = time.monotonic() + STOP_GRACE + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(timeout=5)
        # What a child leaves behind when it is killed or quits early (RQ's scheduler process, a job's fork, a
        # gunicorn worker) is in its group: asked to stop, then killed. Left alone it ran on after serve exited.
        _stop_groups(procs)
        for sig, handler in zip(stop_signals, before, strict=True):
            signal.signal(sig, handler)
    return requested


def _stop_groups(procs: list[subprocess.Popen], grace: float = 3.0) -> None:
    live = [p for p in procs if _signal_group(p, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [p for p in live if _signal_group(p, 0) and _group_runs(p.pid)]
    for p in live:
        _signal_group(p, signal.SIGKILL)


def _group_runs(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies waiting to be reaped run nothing)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False
