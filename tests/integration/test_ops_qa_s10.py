"""Operating the service: configuration errors, commands, health and metrics, the worker (QA pass 10)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wxapp_backend.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
HAN = re.compile(r"[\u4e00-\u9fff]")


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The process environment without the service's own settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WECHAT_", "WXA_", "WEBHOOK_", "FLASK_", "TEST_", "APP_ENV", "DATABASE_URL",
                                "REDIS_URL", "SECRET_KEY", "COOKIE_SECURE", "LOG_", "INSTANCE_PATH", "BIND",
                                "WEB_", "PROMETHEUS_MULTIPROC_DIR", "WXAPP_"))}
    env.update({"INSTANCE_PATH": str(tmp_path), **extra})
    return env


def test_a_mistyped_setting_is_refused_naming_the_variable_in_chinese_without_its_secret(tmp_path):
    """COOKIE_SECURE=ture (or WECHAT_REQUIRE_ENCRYPTION=ture, LOG_JSON=flase) was quietly read as "off": in
    production a typo sent the console cookie over plain HTTP. A DATABASE_URL or REDIS_URL that was not a URL
    stopped the start with a library's traceback naming no variable, and WECHAT_API_BASE=api.weixin.qq.com (no
    scheme) was taken and failed every WeChat call. Each is now a ConfigError naming the variable in Chinese,
    without the value when it may hold a password."""
    base = {"INSTANCE_PATH": str(tmp_path)}
    for name in ("COOKIE_SECURE", "WECHAT_REQUIRE_ENCRYPTION", "LOG_JSON"):
        with pytest.raises(ConfigError) as exc:
            Settings.from_env({**base, name: "ture"})
        assert name in str(exc.value) and HAN.search(str(exc.value))
    s = Settings.from_env({**base, "COOKIE_SECURE": " Off ", "WECHAT_REQUIRE_ENCRYPTION": "YES", "LOG_JSON": "0"})
    assert (s.cookie_secure, s.wechat_require_encryption, s.log_json) == (False, True, False)
    assert Settings.from_env({**base, "APP_ENV": "production", "SECRET_KEY": "k" * 20}).cookie_secure is True
    for name, bad in (("DATABASE_URL", "mysql://wxapp:Pw-Secret-9@db/wxapp"), ("DATABASE_URL", "Pw-Secret-9"),
                      ("DATABASE_URL", "postgresql://wxapp:Pw-Secret-9@db:port/wxapp"),
                      ("REDIS_URL", "Pw-Secret-9@redis:6379"), ("REDIS_URL", "http://:Pw-Secret-9@redis:6379/0"),
                      ("WECHAT_API_BASE", "api.weixin.qq.com"), ("WECHAT_API_BASE", "ftp://api.weixin.qq.com")):
        with pytest.raises(ConfigError) as exc:
            Settings.from_env({**base, name: bad})
        message = str(exc.value)
        assert name in message and HAN.search(message) and "Pw-Secret-9" not in message, (name, bad, message)
    ok = Settings.from_env({**base, "DATABASE_URL": "postgres://u:p@h/db", "REDIS_URL": "rediss://h:1/2",
                            "WECHAT_API_BASE": "http://127.0.0.1:9/"})
    assert (ok.database_url, ok.redis_url, ok.wechat_api_base) == ("postgres://u:p@h/db", "rediss://h:1/2",
                                                                   "http://127.0.0.1:9")
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({**base, "APP_ENV": "production"})
    assert "SECRET_KEY" in str(exc.value) and HAN.search(str(exc.value))


def test_a_wrong_setting_stops_flask_and_gunicorn_with_one_chinese_line(tmp_path):
    """A wrong setting printed a Python traceback from every `flask --app wsgi ...` command. Under gunicorn the
    worker died of it, and (once the import said it cleanly) gunicorn booted a new worker for ever. Now the
    command and gunicorn's master stop at once with exit status 1 and one line naming the variable."""
    from wxapp_backend.kv import stop_embedded_redis

    env = _clean_env(tmp_path, DATABASE_URL="nonsense://wxapp:Pw-Secret-9@db/wxapp")
    try:
        flask = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init-db"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
    finally:
        stop_embedded_redis(tmp_path)  # without the check, the start got as far as the private Redis
    assert flask.returncode == 1, flask.stderr
    assert "Traceback" not in flask.stderr and "DATABASE_URL" in flask.stderr and "配置有误" in flask.stderr
    assert "Pw-Secret-9" not in flask.stderr + flask.stdout
    env = _clean_env(tmp_path, COOKIE_SECURE="ture", BIND="127.0.0.1:0", WEB_CONCURRENCY="1")
    gunicorn = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
    assert gunicorn.returncode == 1, gunicorn.stderr
    assert "Traceback" not in gunicorn.stderr and "COOKIE_SECURE" in gunicorn.stderr
    assert "Booting worker" not in gunicorn.stderr


def _sample(text: str, name: str, label: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{name}{{{label}}} ")]
    return line.rsplit(" ", 1)[1]


def test_metrics_tell_when_redis_or_the_database_is_down(app, client, monkeypatch):
    """When Redis went down /metrics went on showing the queue depths last read (0 waiting, 0 failed: all well),
    and each gunicorn process kept its own last reading, summed up as the largest: a queue drained since stayed
    "full" on the chart. The depths are now read at scrape time (NaN when Redis does not answer), and
    `dependency_up{part}` says whether the database and Redis answer."""
    import redis

    from wxapp_backend.queue import enqueue

    state = app.extensions["wxapp"]
    with app.app_context():
        enqueue("time.sleep", 0)
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "job_queue_depth", 'state="queued"') == "1.0"
    assert _sample(text, "dependency_up", 'part="redis"') == "1.0"
    assert _sample(text, "dependency_up", 'part="db"') == "1.0"

    def refused(*a, **kw):
        raise redis.ConnectionError("Error 111 connecting. Connection refused.")

    monkeypatch.setattr(state.health_redis.connection_pool, "get_connection", refused)  # /metrics' own client
    resp = client.get("/metrics")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert _sample(text, "job_queue_depth", 'state="queued"') == "NaN"
    assert _sample(text, "dependency_up", 'part="redis"') == "0.0"
    assert _sample(text, "dependency_up", 'part="db"') == "1.0"
    monkeypatch.undo()

    def db_down(*a, **kw):
        raise RuntimeError("db down")

    monkeypatch.setattr(state.db, "health_connection", db_down)  # /metrics' own connection
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "dependency_up", 'part="db"') == "0.0"
    assert _sample(text, "dependency_up", 'part="redis"') == "1.0"


def test_the_worker_starts_its_scheduler_again_after_redis_comes_back(app, redis_client, monkeypatch):
    """RQ's scheduler process dies when Redis goes away (a restart is enough), and RQ starts it again only at its
    maintenance, every 10 minutes: seen live, a job delayed by 2 s after a Redis restart had not run 5 minutes
    later, and neither would a customer-service reply's retry. The worker's beat (every 15 s) now starts a dead
    scheduler again; one still alive, or one whose lock another worker holds, is left alone."""
    import threading

    from rq.scheduler import RQScheduler

    from wxapp_backend.jobs_runtime import AppWorker
    from wxapp_backend.periodic import start_beat

    queue = app.extensions["wxapp"].queue
    started: list[int] = []
    monkeypatch.setattr(RQScheduler, "start", lambda self: started.append(1))

    class Process:
        def __init__(self, exitcode: int | None) -> None:
            self.exitcode = exitcode

        def is_alive(self) -> bool:
            return self.exitcode is None

    worker = AppWorker([queue], connection=redis_client)
    worker.scheduler = RQScheduler([queue], connection=redis_client)
    worker.revive_scheduler()  # being started by work() right now
    worker.scheduler._process = Process(exitcode=None)  # running
    worker.revive_scheduler()
    assert started == []
    worker.scheduler._process = Process(exitcode=1)  # died with Redis
    redis_client.set(RQScheduler.get_locking_key(queue.name), "another worker", ex=60)
    worker.revive_scheduler()
    assert started == []  # the other worker's scheduler does the work
    redis_client.delete(RQScheduler.get_locking_key(queue.name))
    worker.revive_scheduler()
    assert started == [1]

    ticked = threading.Event()
    stop = start_beat(redis_client, queue, interval=0.05, also=ticked.set)
    try:
        assert ticked.wait(10)
    finally:
        stop.set()


def test_command_mistakes_are_said_in_chinese_with_click_exit_codes(app, db):
    """click's own refusals were English ("Error: Missing argument 'USERNAME'.", "Invalid value for '--role':
    'boss' is not one of ...", "No such option: --pasword") under an English usage block, and a command's own
    Chinese refusal came as "Error: 密码至少 8 位". `worker --queue ""` started a worker on a queue with no name.
    Each is now one Chinese line (错误：…) with where to read the usage; exit status 2 for a usage mistake, 1 for a
    refusal, as before."""
    from wxapp_backend.auth.models import StaffUser

    runner = app.test_cli_runner()
    cases = [
        (["create-staff"], "缺少参数 用户名"),  # s19: the argument is named in Chinese
        (["create-staff", "bob", "--password", "abcdefgh1", "--role", "boss"], "只能是 admin、staff、dept 之一"),
        (["create-staff", "bob", "--pasword", "abcdefgh1", "--role", "staff"], "没有 --pasword 这个选项"),
        (["create-staff", "bob", "--password", "abcdefgh1", "--role", "staff", "extra"], "多余的参数：extra"),
        (["kb", "search", "开公司", "--limit", "0"], "1 到 20 之间的整数"),
        (["kb", "import", "/nonexistent/kb.csv"], "找不到这个文件"),
        (["kb", "nosuch"], "没有 nosuch 这个命令"),
        (["chat", "--account", "xx"], "只能是 oa、wxa 之一"),
        (["worker", "--burst", "--queue", ""], "队列名"),
        (["chat", "--openid", " "], "openid"),
    ]
    for args, said in cases:
        result = runner.invoke(args=args)
        assert result.exit_code == 2, (args, result.output)
        assert said in result.output and "错误：" in result.output and "--help" in result.output, (args, result.output)
        assert "Error" not in result.output and "Usage" not in result.output, (args, result.output)
    usage = runner.invoke(args=["create-staff", "--help"]).output
    assert "--role" in usage and "admin 管理员" in usage  # the option had no word of help
    weak = runner.invoke(args=["create-staff", "bob", "--password", "x", "--role", "admin"])
    assert weak.exit_code == 1 and "错误：密码至少 8 位" in weak.output and "Error" not in weak.output
    assert db.query(StaffUser).count() == 0


def test_a_database_or_redis_that_does_not_answer_is_one_line_not_a_traceback(app, settings, monkeypatch):
    """`init-db`, `create-staff`, `kb ...` with PostgreSQL down, `worker` or `beat` with Redis down, printed a
    Python traceback of 40 lines. They now say which part does not answer (and the driver's reason, with any
    configured secret masked) and exit with 1."""
    import redis
    from sqlalchemy.exc import OperationalError

    state = app.extensions["wxapp"]
    runner = app.test_cli_runner()

    def db_down(*a, **kw):
        raise OperationalError("SELECT 1", {}, Exception(
            f'connection to server at "db" failed: FATAL: password authentication failed ({settings.secret_key})'))

    monkeypatch.setattr(state.db.engine, "connect", db_down)
    result = runner.invoke(args=["create-staff", "bob", "--password", "abcdefgh1", "--role", "staff"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "无法使用数据库（DATABASE_URL）" in result.output and "password authentication failed" in result.output
    assert settings.secret_key not in result.output
    monkeypatch.undo()

    def refused(*a, **kw):
        raise redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(state.redis.connection_pool, "get_connection", refused)
    result = runner.invoke(args=["beat"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "无法使用 Redis（REDIS_URL）" in result.output and "Connection refused" in result.output


def test_resetting_the_admin_password_lets_the_locked_out_admin_in_at_once(app, client, db):
    """The README's way back in after a forgotten password is `seed-demo --reset-admin-password`; but whoever
    forgot it has usually used up the 5 tries, and the new password then met "登录失败次数太多，请 15 分钟后再试"
    (seen live). The reset now forgets the name's failed logins. A reset of a disabled admin says that it stays
    disabled, instead of printing a password that cannot log in."""
    from wxapp_backend.auth.models import StaffUser

    runner = app.test_cli_runner()
    assert runner.invoke(args=["seed-demo"]).exit_code == 0
    for address in ("127.0.0.1", "198.51.100.7"):
        for _ in range(5):
            wrong = client.post("/api/v1/staff/login", json={"username": "admin", "password": "wrong-pass-1"},
                                environ_base={"REMOTE_ADDR": address})
            assert wrong.status_code == 401
    reset = runner.invoke(args=["seed-demo", "--reset-admin-password"])
    assert reset.exit_code == 0, reset.output
    password = re.search(r"密码：(\S+)", reset.output).group(1)
    login = client.post("/api/v1/staff/login", json={"username": "admin", "password": password})
    assert login.status_code == 200, login.get_json()

    db.query(StaffUser).filter_by(username="admin").update({"active": False})
    db.commit()
    again = runner.invoke(args=["seed-demo", "--reset-admin-password"])
    assert again.exit_code == 0 and "已停用" in again.output


def test_gunicorns_own_log_lines_are_json_like_the_rest(tmp_path):
    """LOG_JSON (on by default) promises structured JSON lines on stderr, but gunicorn's own lines ("Booting
    worker", "Worker exiting", a worker timing out) came as "[2026-12-06 08:29:41 +0000] [10006] [INFO] ...",
    which a log collector parsing JSON drops or garbles. They are now JSON lines too."""
    import json
    import signal
    import time

    from wxapp_backend.kv import stop_embedded_redis

    env = _clean_env(tmp_path, BIND="127.0.0.1:0", WEB_CONCURRENCY="1", WXAPP_METRICS_SHARED="1",
                     PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Booting worker" in line:
                break
        assert any("Booting worker" in ln for ln in lines), lines
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        stop_embedded_redis(tmp_path)
    lines += rest.splitlines()
    records = [json.loads(ln) for ln in lines if ln.strip()]  # every line: one JSON object
    assert any(r["msg"].startswith("Starting gunicorn") for r in records)
    assert any(r["msg"].startswith("Booting worker") for r in records)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)


def test_a_relative_instance_path_means_the_folder_where_the_command_runs(tmp_path, monkeypatch):
    """INSTANCE_PATH=inst stopped every command with Flask's traceback ("If an instance path is provided it must
    be absolute"). It is now taken from the folder where the command runs (and `serve` hands its children, which
    start in the checkout, that same folder)."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"INSTANCE_PATH": "inst"})
    assert settings.instance_path.is_absolute() and settings.instance_path == tmp_path / "inst"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'inst' / 'wxapp.sqlite3'}"


def test_a_command_before_init_db_says_to_run_init_db(tmp_path):
    """`seed-demo` (or `kb search`, `create-staff`) on a fresh checkout before `init-db` printed a traceback
    ending in "no such table: grids". It now says to run init-db first. And init-db's own report is no longer
    wrapped in nine JSON lines of Alembic announcing its plugins ("setup plugin alembic.autogenerate...")."""
    from wxapp_backend.kv import stop_embedded_redis

    env = _clean_env(tmp_path)
    try:
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "seed-demo"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        init_db = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init-db"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
    finally:
        stop_embedded_redis(tmp_path)
    assert result.returncode == 1, result.stderr
    assert "请先运行 flask --app wsgi init-db" in result.stderr and "Traceback" not in result.stderr
    assert init_db.returncode == 0 and "数据库已就绪" in init_db.stdout, init_db.stderr
    assert "setup plugin" not in init_db.stderr


def test_a_broken_notify_templates_file_stops_the_start_and_a_broken_edit_keeps_the_last_good_one(
        app, settings, client, make_user, user_token, monkeypatch, tmp_path):
    """NOTIFY_TEMPLATES naming a file that cannot be read (or is not YAML/JSON) was found only when the first
    notification went out: every notification job failed, and GET /api/v1/me/subscribe-credits was a 500 for
    every user; so was an edit that broke the file while running. The start now stops naming the variable, and
    a broken edit keeps the templates read before (logged) until the file is fixed."""
    import wxapp_backend
    from wxapp_backend.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        wxapp_backend.create_app(settings.with_overrides(notify_templates_path=str(tmp_path / "missing.yaml")))
    assert "NOTIFY_TEMPLATES" in str(exc.value) and HAN.search(str(exc.value))

    templates = tmp_path / "kinds.json"
    templates.write_text('{"appeal_accepted": {"template_id": "tpl-accepted-1"}}', encoding="utf-8")
    state = app.extensions["wxapp"]
    monkeypatch.setattr(state, "settings", settings.with_overrides(notify_templates_path=str(templates)))
    headers = user_token(make_user())
    first = client.get("/api/v1/me/subscribe-credits", headers=headers)
    assert first.status_code == 200
    assert "tpl-accepted-1" in first.get_data(as_text=True)
    templates.write_text('{"appeal_accepted": {"template_id": ', encoding="utf-8")  # saved half-way
    os.utime(templates, (1, 1))  # a different modification time, however fast the test runs
    broken = client.get("/api/v1/me/subscribe-credits", headers=headers)
    assert broken.status_code == 200, broken.get_json()
    assert "tpl-accepted-1" in broken.get_data(as_text=True)


def test_gunicorn_refuses_worker_counts_it_cannot_serve_with(tmp_path):
    """WEB_CONCURRENCY=0 started a gunicorn master with no worker: nothing answered and nothing said why.
    WEB_THREADS=abc stopped it with a traceback from the configuration file. Both now stop it with one line
    naming the variable (and no private Redis left behind: tests/integration/test_jobs_qa_s12.py)."""
    from wxapp_backend.kv import stop_embedded_redis

    try:
        for name, bad in (("WEB_CONCURRENCY", "0"), ("WEB_THREADS", "abc"), ("WEB_TIMEOUT", "-1")):
            env = _clean_env(tmp_path, BIND="127.0.0.1:0", **{name: bad})
            proc = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
            assert proc.returncode == 1 and name in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    finally:
        stop_embedded_redis(tmp_path)


def test_forwarded_allow_ips_takes_only_addresses_as_gunicorn_does(tmp_path):
    """FORWARDED_ALLOW_IPS=10.0.0.0/8 (or a host name, or a typo) was taken and then never matched: the
    proxy's X-Forwarded-For was ignored and every client behind it counted as the proxy, so one busy office
    used up everyone's per-address limits (gunicorn itself refuses such a value, in English). It now stops the
    start naming the variable."""
    base = {"INSTANCE_PATH": str(tmp_path)}
    for bad in ("10.0.0.0/8", "nginx", "127.0.0.1;10.0.0.2"):
        with pytest.raises(ConfigError) as exc:
            Settings.from_env({**base, "FORWARDED_ALLOW_IPS": bad})
        assert "FORWARDED_ALLOW_IPS" in str(exc.value) and HAN.search(str(exc.value))
    ok = Settings.from_env({**base, "FORWARDED_ALLOW_IPS": " 10.0.0.2, ::1 ,*"})
    assert ok.forwarded_allow_ips == "10.0.0.2, ::1 ,*"


def test_healthz_answers_503_when_postgresql_takes_the_connection_but_never_answers(app, settings):
    """With a PostgreSQL that accepts the TCP connection but never answers (stuck, or a half-dead proxy in
    front of it), /healthz waited for ever instead of answering 503 naming the database, and so did every
    request and /metrics. Connecting now gives up after 5 s (unless DATABASE_URL sets connect_timeout)."""
    import socket
    import threading
    import time

    import wxapp_backend

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel completes the handshake; nothing ever answers
    try:
        url = f"postgresql+psycopg://wxapp:pw@127.0.0.1:{server.getsockname()[1]}/wxapp"
        stuck = wxapp_backend.create_app(settings.with_overrides(database_url=url))
        answers: list = []

        def ask() -> None:
            started = time.monotonic()
            resp = stuck.test_client().get("/healthz")
            answers.append((resp.status_code, resp.get_json(), time.monotonic() - started))

        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        thread.join(20)
        assert answers, "/healthz was still waiting after 20 s"
        status, body, took = answers[0]
        assert status == 503 and body["failing"] == ["db"] and took < 15, answers
    finally:
        server.close()
