"""Stopping and crashing the real processes (QA pass 11): `serve` and `flask worker` with a job in hand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry

from tests.e2e.helpers import ROOT, descendants, free_port, is_running, run_flask, tail, wait_for_health
from wxapp_backend.db import session_scope

pytestmark = pytest.mark.e2e


def long_job(marker: str, long_runs: int = 1) -> str:
    """A job for the worker: notes each run (and its process) in `marker`; its first `long_runs` runs take five
    minutes, a later one ends at once."""
    path = Path(marker)
    runs = path.read_text().count("start") if path.exists() else 0
    with path.open("a") as fh:
        fh.write(f"start {os.getpid()}\n")
    if runs < long_runs:
        time.sleep(300)
    with path.open("a") as fh:
        fh.write(f"done {os.getpid()}\n")
    return "done"


def _lines(marker: Path, word: str) -> list[str]:
    if not marker.exists():
        return []
    return [ln.split()[1] for ln in marker.read_text().splitlines() if ln.startswith(word + " ")]


def _wait(what: str, check, timeout: float, proc: subprocess.Popen | None = None, stderr_path: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}\n--- stderr\n{tail(stderr_path)}",
                        pytrace=False)
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout:.0f} s" + (f"\n--- stderr\n{tail(stderr_path)}" if stderr_path else ""),
                pytrace=False)


class Serve:
    """`flask --app wsgi serve` in its own session, as a newcomer starts it."""

    def __init__(self, service_env, tmp_path: Path, name: str) -> None:
        self.service_env, self.port = service_env, free_port()
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.stdout_path = tmp_path / f"{name}.stdout"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--bind", f"127.0.0.1:{self.port}",
                 "--workers", "1"], cwd=ROOT, env=service_env.env, stdout=out, stderr=err, start_new_session=True)
        self.seen: dict[int, str] = {}

    def wait_ready(self) -> redis.Redis:
        wait_for_health(f"http://127.0.0.1:{self.port}", self.proc, self.stderr_path, timeout=60)
        client = redis.Redis.from_url(self.service_env.redis_url())

        def registered():
            ours = descendants(self.proc.pid)
            return [w for w in Worker.all(connection=client) if w.pid in ours]

        _wait("serve's job worker registers", registered, 30, self.proc, self.stderr_path)
        return client

    def snapshot(self) -> dict[int, str]:
        self.seen.update(descendants(self.proc.pid))
        return self.seen

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        self.snapshot()
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit within {timeout:.0f} s of {signal.Signals(sig).name}; still running: "
                        f"{descendants(self.proc.pid)}\n--- stderr\n{tail(self.stderr_path)}", pytrace=False)

    def left_running(self, grace: float = 3.0) -> dict[int, str]:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(is_running(pid) for pid in self.seen):
            time.sleep(0.1)
        return {pid: cmd for pid, cmd in self.seen.items() if is_running(pid)}

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        for pid in self.seen:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_stopping_serve_mid_job_leaves_no_process_and_the_job_runs_on_the_next_start(service_env, tmp_path):
    """SIGTERM to `serve` while its worker ran a long job: the worker waited for the job, serve killed the worker
    after 20 s, and the job's work-horse (RQ puts it in a process group of its own) ran on as an orphan, holding
    the embedded Redis (which serve then left running). Now the worker gives the job a grace period, then stops
    it and puts it back at the head of the queue; nothing outlives serve, and the next start runs the job."""
    marker = tmp_path / "runs.txt"
    first = Serve(service_env, tmp_path, "first")
    try:
        client = first.wait_ready()
        Queue("default", connection=client).enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), job_id="qa-s11-long")
        client.close()
        horse = int(_wait("the job starts", lambda: _lines(marker, "start"), 30, first.proc,
                          first.stderr_path)[0])
        assert horse in first.snapshot()
        started = time.monotonic()
        first.stop(signal.SIGTERM)
        assert time.monotonic() - started < 40
        left = first.left_running()
        assert not left, f"processes left running after serve exited: {left}"
        assert first.proc.returncode == 0, tail(first.stderr_path)
        assert _lines(marker, "done") == []  # cut off, not finished
        if not service_env.external_redis_url:
            assert "已停止内置 Redis" in first.stdout_path.read_text(), first.stdout_path.read_text()
    finally:
        first.kill_all()

    second = Serve(service_env, tmp_path, "second")
    try:
        client = second.wait_ready()
        _wait("the job handed back runs on the next start", lambda: _lines(marker, "done"), 60, second.proc,
              second.stderr_path)
        assert len(_lines(marker, "start")) == 2 and len(_lines(marker, "done")) == 1
        queue = Queue("default", connection=client)
        job = queue.fetch_job("qa-s11-long")
        _wait("the job is finished", lambda: job.get_status(refresh=True) == "finished", 30)
        # (a periodic job may be running at this moment: only this one is looked for)
        assert job.id not in FailedJobRegistry(queue=queue).get_job_ids()
        assert job.id not in StartedJobRegistry(queue=queue).get_job_ids()
        client.close()
        second.stop(signal.SIGINT)
        assert not second.left_running()
    finally:
        second.kill_all()


# --------------------------------------------------------------------------- a job's process killed -9


class FlaskWorker:
    """`flask --app wsgi worker` on its own."""

    def __init__(self, service_env, tmp_path: Path, name: str) -> None:
        self.stderr_path = tmp_path / f"{name}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT,
                                         env=service_env.env, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        self.client = redis.Redis.from_url(service_env.redis_url())
        _wait("the worker registers", lambda: [w for w in Worker.all(connection=self.client) if w.pid == self.proc.pid],
              60, self.proc, self.stderr_path)
        self.queue = Queue("default", connection=self.client)

    def close(self) -> None:
        for pid in descendants(self.proc.pid):
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.client.close()


@pytest.fixture
def worker(service_env, tmp_path):
    run_flask(["init-db"], service_env.env)  # the worker's beat runs the periodic jobs on the tables
    w = FlaskWorker(service_env, tmp_path, "worker")
    yield w
    w.close()


def _kill_horse_of_run(marker: Path, run: int, proc) -> int:
    pid = int(_wait(f"run {run} of the job starts", lambda: (_lines(marker, "start") + [None] * run)[run - 1], 60,
                    proc))
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_job_whose_process_is_killed_runs_once_more(worker, tmp_path):
    """kill -9 of the process running a job (the out-of-memory killer, an operator): RQ moved a job without retries
    (an activity's reminders, a notice's send, every periodic job) to the failed jobs, lost until someone requeued
    it by hand. It now runs once more, and only once."""
    marker = tmp_path / "killed-once.txt"
    job = worker.queue.enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), 1, job_id="qa-s11-killed-once")
    _kill_horse_of_run(marker, 1, worker.proc)
    _wait("the job runs once more and ends", lambda: _lines(marker, "done"), 60, worker.proc, worker.stderr_path)
    time.sleep(1)
    assert len(_lines(marker, "start")) == 2 and len(_lines(marker, "done")) == 1
    job.refresh()
    assert job.get_status() == "finished"
    assert job.id not in FailedJobRegistry(queue=worker.queue).get_job_ids()


def test_a_job_killed_twice_goes_to_the_failed_jobs_not_round_again(worker, tmp_path):
    marker = tmp_path / "killed-twice.txt"
    job = worker.queue.enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), 5, job_id="qa-s11-killed-twice",
                               retry=Retry(max=3))
    _kill_horse_of_run(marker, 1, worker.proc)
    _kill_horse_of_run(marker, 2, worker.proc)
    _wait("the job is failed", lambda: job.get_status(refresh=True) == "failed", 30, worker.proc, worker.stderr_path)
    time.sleep(2)
    assert len(_lines(marker, "start")) == 2  # no third run, retries or not
    assert job.id in FailedJobRegistry(queue=worker.queue).get_job_ids()


def test_a_second_stop_request_hands_the_job_back_at_once(worker, tmp_path):
    """Ctrl-C twice (or SIGTERM twice) on `flask worker`: RQ's cold stop killed the job and left it "started",
    found only when its heartbeat lapsed. The second request now hands the job back at once."""
    marker = tmp_path / "twice.txt"
    job = worker.queue.enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), 1, job_id="qa-s11-twice")
    horse = int(_wait("the job starts", lambda: _lines(marker, "start"), 60, worker.proc)[0])
    os.kill(worker.proc.pid, signal.SIGTERM)
    time.sleep(1.5)  # RQ ignores a second signal within a second of the first
    os.kill(worker.proc.pid, signal.SIGTERM)
    worker.proc.wait(timeout=5)  # well within the 10 s grace
    assert not is_running(horse)
    assert job.get_status(refresh=True) == "queued" and worker.queue.get_job_ids()[0] == job.id
    assert job.id not in StartedJobRegistry(queue=worker.queue).get_job_ids()


def test_a_killed_worker_takes_its_job_process_with_it_and_the_job_runs_again(worker, service_env, tmp_path):
    """kill -9 of the worker itself: its work-horse (in a process group of its own) ran the job on, unsupervised;
    nothing refreshed the job's heartbeat, so once it lapsed the next clean-up handed the still running job to
    another worker as well. RQ's scheduler process ran on too, holding the scheduler lock. Now both die with
    their worker, and the clean-up runs the job once more."""
    from rq.utils import current_timestamp

    from wxapp_backend.jobs_runtime import AppWorker

    marker = tmp_path / "worker-killed.txt"
    job = worker.queue.enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), 1, job_id="qa-s11-worker-killed")
    horse = int(_wait("the job starts", lambda: _lines(marker, "start"), 60, worker.proc)[0])
    children = descendants(worker.proc.pid)  # the horse and RQ's scheduler process
    assert horse in children and len(children) >= 2, children
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    _wait("the job's process dies with its worker", lambda: not is_running(horse), 5)
    _wait("the scheduler process dies with its worker", lambda: not any(is_running(p) for p in children), 10)
    # What the next worker's registry clean-up does once the dead worker's heartbeat has lapsed (~90 s).
    survivor = AppWorker([worker.queue], connection=worker.client)
    StartedJobRegistry(queue=worker.queue).cleanup(timestamp=current_timestamp() + 600,
                                                   exception_handlers=survivor._exc_handlers)
    assert job.get_status(refresh=True) == "queued"
    again = FlaskWorker(service_env, tmp_path, "again")
    try:
        _wait("the job runs once more and ends", lambda: _lines(marker, "done"), 60, again.proc, again.stderr_path)
        assert len(_lines(marker, "start")) == 2
    finally:
        again.close()


# --------------------------------------------------------------------------- test isolation: the KB index


def _kb_ids(app) -> list[str]:
    from wxapp_backend.knowledge_store.services import get_runtime

    with app.app_context():
        return sorted(e.id for e in get_runtime().get().entries)


def test_kb_isolation_first_test_builds_an_index(app_ctx):
    """With the next test: the suite's one application keeps this process's knowledge-base index between tests.
    `_clean` emptied the tables and Redis but not that index, so the next test searched this test's entries: a
    test adding rows as this one does (no version bump) saw them for a minute, and one that loaded the default
    knowledge base saw them for a second (`kb search` printed "决定：fallback" for 营业执照 after
    test_inputs_qa_s9's console test when run as test_api_fuzz, test_auth, test_inputs_qa_s9, test_contract_qa_s9)."""
    from wxapp_backend.knowledge_store.models import KBEntry

    with session_scope() as s:
        s.add(KBEntry(id="qa-s11-first", question="外籍人才工作许可怎么办", answer="到一网通办申请。"))
    assert _kb_ids(app_ctx) == ["qa-s11-first"]


def test_kb_isolation_second_test_sees_only_its_own_entries(app_ctx):
    from wxapp_backend.knowledge_store.models import KBEntry

    with session_scope() as s:
        s.add(KBEntry(id="qa-s11-second", question="社保怎么开户", answer="一网通办。"))
    assert _kb_ids(app_ctx) == ["qa-s11-second"]


# --------------------------------------------------------------------------- init-db: again, and at the same time


def test_init_db_run_three_times_at_once_and_again_succeeds_each_time_with_the_same_data(service_env):
    """Deploy scripts run init-db on every machine (and `serve` does it too): on PostgreSQL, runs at the same
    moment each saw an empty knowledge base after the migrations and loaded it; all but one died with a
    UniqueViolation traceback (exit status 1). Every run now succeeds, and a later run changes nothing."""
    from tests.e2e.helpers import count_rows

    cmd = [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"]
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=service_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    outputs = [(p.wait(timeout=180), *p.communicate()) for p in runs]
    for code, out, err in outputs:
        assert code == 0 and "Traceback" not in err, err[-3000:]
        assert "数据库已就绪" in out
    assert sum("知识库：载入默认条目" in out for _, out, _ in outputs) == 1
    tables = ("kb_entries", "appeal_categories", "alembic_version")
    counts = {t: count_rows(service_env.database_url, t) for t in tables}
    assert counts["kb_entries"] > 100 and counts["appeal_categories"] > 5 and counts["alembic_version"] == 1
    again = subprocess.run(cmd, cwd=ROOT, env=service_env.env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "知识库：载入" not in again.stdout, again.stderr[-3000:]
    assert {t: count_rows(service_env.database_url, t) for t in tables} == counts


# --------------------------------------------------------------------------- Redis or the database missing at start


def _clean_env(instance: Path, **extra: str) -> dict[str, str]:
    """The embedded defaults (SQLite in `instance`, the private Redis) whatever the suite runs on: these tests are
    about what a newcomer's one-command start says. (make_service_env would hand them the suite's external Redis,
    so the private one never starts, and create a PostgreSQL database nobody drops.)"""
    from tests.e2e.conftest import _APP_ENV_NAMES, _APP_ENV_PREFIXES

    env = {k: v for k, v in os.environ.items() if k not in _APP_ENV_NAMES and not k.startswith(_APP_ENV_PREFIXES)}
    env.update({"APP_ENV": "development", "INSTANCE_PATH": str(instance), "PYTHONUNBUFFERED": "1"})
    instance.mkdir(parents=True, exist_ok=True)
    return {**env, **extra}


def test_serve_refuses_to_start_without_redis_in_one_line(tmp_path):
    """REDIS_URL pointing at a Redis that does not answer: serve loaded the database, printed 已启动, started
    gunicorn and the worker, and stopped again when the worker died of it, with exit status 0. It now says in one
    line that Redis does not answer, before starting anything, with exit status 1."""
    env = _clean_env(tmp_path / "instance", REDIS_URL="redis://127.0.0.1:1/0")
    run = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--bind",
                          f"127.0.0.1:{free_port()}", "--workers", "1"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr[-3000:]
    assert "无法使用 Redis（REDIS_URL）" in run.stderr and "Traceback" not in run.stderr
    assert "已启动" not in run.stdout and "gunicorn" not in run.stderr


def test_serve_whose_worker_dies_says_so_and_exits_with_failure(service_env, tmp_path):
    """kill -9 of serve's job worker: serve stopped the rest, as it should, and exited with status 0, so a service
    manager (Restart=on-failure) or a script took it for a requested stop. Now 1; nothing is left running."""
    serve = Serve(service_env, tmp_path, "dies")
    try:
        client = serve.wait_ready()
        (worker,) = [w.pid for w in Worker.all(connection=client) if w.pid in descendants(serve.proc.pid)]
        client.close()
        serve.snapshot()
        os.kill(worker, signal.SIGKILL)
        serve.proc.wait(timeout=60)
        assert serve.proc.returncode == 1, tail(serve.stderr_path)
        assert "已退出" in serve.stderr_path.read_text()
        assert not serve.left_running()
    finally:
        serve.kill_all()


def test_a_worker_without_its_database_says_so_in_one_line(tmp_path):
    """`flask worker` with a database that does not answer (or has no tables yet) started and failed every job,
    with nothing said at the start. It now refuses in one line naming DATABASE_URL (or init-db), exit status 1."""
    from wxapp_backend.kv import stop_embedded_redis

    instance = tmp_path / "instance"
    cases = [({"DATABASE_URL": "postgresql+psycopg://wxapp:Pw-Secret-9@127.0.0.1:1/wxapp"}, "DATABASE_URL"),
             ({}, "init-db")]  # the embedded SQLite file, never initialised
    try:
        for extra, said in cases:
            try:
                run = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT,
                                     env=_clean_env(instance, **extra), capture_output=True, text=True, timeout=40)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the worker ran on without its database ({said})", pytrace=False)
            assert run.returncode == 1 and said in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
            assert "Pw-Secret-9" not in run.stderr
    finally:
        stop_embedded_redis(instance)


def test_an_embedded_redis_that_cannot_start_is_one_line_for_flask_and_gunicorn(tmp_path):
    """The private Redis refusing to start (here: its socket folder, in /tmp for a deep checkout, made by someone
    else) printed a traceback from every flask command and from gunicorn's worker. Now one line, exit status 1."""
    import hashlib

    instance = tmp_path / ("deep" * 30) / "instance"
    redis_dir = instance / "redis"
    digest = hashlib.sha1(str(redis_dir).encode()).hexdigest()[:16]
    taken = Path("/tmp") / f"wxapp-redis-{os.getuid()}-{digest}"
    taken.mkdir(mode=0o777)
    taken.chmod(0o777)
    try:
        env = _clean_env(instance, BIND=f"127.0.0.1:{free_port()}", WEB_CONCURRENCY="1")
        flask = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init-db"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
        gunicorn = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=60)
    finally:
        taken.rmdir()
    for run in (flask, gunicorn):
        assert run.returncode == 1, run.stderr[-3000:]
        assert "内置 Redis" in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "Booting worker" not in gunicorn.stderr


# --------------------------------------------------------------------------- periodic jobs: several schedulers


def test_beats_in_several_processes_at_once_enqueue_each_periodic_job_once(service_env):
    """Every worker runs a beat and cron may run `flask beat` too: started together, the SLA tick (deadlines),
    the reminders and the other periodic jobs are enqueued once per time slot between them, not once each."""
    run_flask(["init-db"], service_env.env)
    cmd = [sys.executable, "-m", "flask", "--app", "wsgi", "beat"]
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=service_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(4)]
    outputs = [(p.wait(timeout=120), *p.communicate()) for p in runs]
    assert all(code == 0 for code, _, _ in outputs), [err[-2000:] for _, _, err in outputs]
    client = redis.Redis.from_url(service_env.redis_url())
    queue = Queue("default", connection=client)
    try:
        ids = queue.get_job_ids()
        assert len(ids) == len(set(ids)), ids  # no job twice in the queue
        names = [i.rsplit("-", 1)[0].removeprefix("periodic-") for i in ids]
        assert {"appeals_tick", "activity_reminders", "activity_attendance", "notify_sweep"} <= set(names), ids
        # Once per slot: a slot may turn over while the four start (its job then runs for each slot, as it should).
        assert all(names.count(n) <= 2 for n in names), ids
        # Negative control: without the slot claims, a second beat puts the same jobs in again, and the check
        # above sees it.
        client.delete(*client.keys("beat:*"))
        run_flask(["beat"], service_env.env)
        again = queue.get_job_ids()
        assert len(again) > len(set(again))
    finally:
        client.close()


# --------------------------------------------------------------------------- /healthz before init-db


def test_healthz_says_the_database_has_no_tables_yet(settings, tmp_path):
    """gunicorn started before `init-db` (or on the wrong, empty database): /healthz answered 200 "db": "ok"
    (SELECT 1 works on an empty database) while every page and push failed, so a load balancer sent traffic to
    it. It is now 503 naming the database, with what to run."""
    from wxapp_backend import create_app

    empty = create_app(settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}"))
    resp = empty.test_client().get("/healthz")
    body = resp.get_json()
    assert resp.status_code == 503 and body["db"] == "error" and body["failing"] == ["db"], body
    assert "init-db" in body["message"] and body["redis"] == "ok"
    empty.extensions["wxapp"].db.engine.dispose()


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path):
    """`serve` on a port something else listens on (a second serve, say): it printed 已启动, then gunicorn's JSON
    lines "Connection in use" for a few seconds and "子进程 gunicorn 已退出（1）". It now refuses at once, naming
    the address and --bind, and starts nothing."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _clean_env(tmp_path / "instance")
        run = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--bind", f"127.0.0.1:{port}",
                              "--workers", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    from wxapp_backend.kv import stop_embedded_redis

    stop_embedded_redis(tmp_path / "instance")
    assert run.returncode == 1, run.stdout + run.stderr[-3000:]
    assert f"127.0.0.1:{port}" in run.stderr and "--bind" in run.stderr and "Traceback" not in run.stderr
    assert "已启动" not in run.stdout and "gunicorn" not in run.stderr


def test_closing_the_terminal_stops_serve_like_ctrl_c(service_env, tmp_path):
    """SIGHUP (the terminal serve ran in was closed, an ssh session dropped): serve died of it at once, its
    children stopped only through their parent-death signal, and the embedded Redis was left running. It is now
    a stop like Ctrl-C: everything ends, the private Redis too, exit status 0."""
    serve = Serve(service_env, tmp_path, "hup")
    try:
        serve.wait_ready().close()
        serve.stop(signal.SIGHUP)
        assert serve.proc.returncode == 0, tail(serve.stderr_path)
        assert not serve.left_running()
        if not service_env.external_redis_url:
            assert "已停止内置 Redis" in serve.stdout_path.read_text()
    finally:
        serve.kill_all()
