"""Background jobs surviving crashes, and what the start-up leaves behind (QA pass 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_ops_qa_s10 import _clean_env

ROOT = Path(__file__).resolve().parents[2]


def slow_job(marker: str, seconds: float) -> str:
    """A job for a real worker: notes its start and its end in `marker`, `seconds` apart."""
    with open(marker, "a") as fh:
        fh.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with open(marker, "a") as fh:
        fh.write(f"done {os.getpid()}\n")
    return "done"


def _redis_servers_under(folder: Path) -> list[int]:
    """Pids of redis-server processes whose command line names `folder` (an embedded Redis started there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in cmd and str(folder) in cmd:
            found.append(int(entry.name))
    return found


def test_gunicorn_refusing_a_worker_count_leaves_no_redis_running(tmp_path):
    """WEB_CONCURRENCY=0 (or WEB_THREADS=abc, WEB_TIMEOUT=-1) stopped gunicorn with its one line, but only after
    the configuration file had started the private Redis: every refused start left a redis-server running (and
    holding instance/redis) that nobody had asked for. The counts are now checked before the Redis starts."""
    from wxapp_backend.kv import stop_embedded_redis

    try:
        for name, bad in (("WEB_CONCURRENCY", "0"), ("WEB_THREADS", "abc"), ("WEB_TIMEOUT", "-1")):
            env = _clean_env(tmp_path, BIND="127.0.0.1:0", **{name: bad})
            proc = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
            assert proc.returncode == 1 and name in proc.stderr, proc.stderr
            assert _redis_servers_under(tmp_path) == [], f"{name}={bad} left a redis-server running"
    finally:
        stop_embedded_redis(tmp_path)


# --------------------------------------------------------------------------- a worker killed -9 with a job in hand


@pytest.fixture
def worker_env(tmp_path, monkeypatch):
    """A service environment with init-db run, for `flask worker`s: its own database, and always its own embedded
    Redis (which a test may stop and start again), also on a run with REDIS_URL set."""
    from tests.e2e.conftest import close_service_env, make_service_env
    from tests.e2e.helpers import run_flask

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("TEST_REDIS_URL", raising=False)
    svc = make_service_env(tmp_path / "instance")
    try:
        run_flask(["init-db"], svc.env)
        yield svc
    finally:
        close_service_env(svc)


def test_a_job_whose_worker_was_killed_runs_again_as_soon_as_a_worker_starts(worker_env, tmp_path):
    """kill -9 of `flask worker` (or of serve's worker: serve then stops, and its service manager starts it again)
    with a job in hand: the job sat "started" until its heartbeat lapsed (90 s) and a clean-up after that found it,
    up to two and a half minutes later, a late reply to a WeChat message or a reminder held up all that time. A
    worker starting on the same machine now sees that the job's worker is gone (its process no longer runs) and
    runs the job again at once."""
    from tests.e2e.test_ops_qa_s11 import FlaskWorker, _lines, _wait

    marker = tmp_path / "killed-worker.txt"
    first = FlaskWorker(worker_env, tmp_path, "first")
    try:
        first.queue.enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), 1, job_id="qa-s12-worker-killed")
        _wait("the job starts", lambda: _lines(marker, "start"), 60, first.proc, first.stderr_path)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.close()
    started = time.monotonic()
    again = FlaskWorker(worker_env, tmp_path, "again")
    try:
        _wait("the job runs again and ends", lambda: _lines(marker, "done"), 30, again.proc, again.stderr_path)
        assert time.monotonic() - started < 30
        assert len(_lines(marker, "start")) == 2
        job = again.queue.fetch_job("qa-s12-worker-killed")
        _wait("the job is finished", lambda: job.get_status(refresh=True) == "finished", 10)
    finally:
        again.close()


def test_a_second_worker_leaves_a_live_workers_job_alone(worker_env, tmp_path):
    """The other side of the test above: a worker starting while another one runs a long job does not take the
    job as abandoned (that would be the job twice: a second WeChat message, a second credit spent)."""
    from tests.e2e.test_ops_qa_s11 import FlaskWorker, _lines, _wait

    marker = tmp_path / "live-worker.txt"
    first = FlaskWorker(worker_env, tmp_path, "first")
    try:
        first.queue.enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), 1, job_id="qa-s12-live")
        _wait("the job starts", lambda: _lines(marker, "start"), 60, first.proc, first.stderr_path)
        second = FlaskWorker(worker_env, tmp_path, "second")
        try:
            time.sleep(4)  # the second worker's start-up clean-up has run by now
            assert len(_lines(marker, "start")) == 1
            assert first.queue.fetch_job("qa-s12-live").get_status() == "started"
        finally:
            second.close()
    finally:
        first.close()


# --------------------------------------------------------------------------- the idle worker's wait for a job


def test_an_idle_worker_waits_for_jobs_longer_than_the_shared_clients_redis_timeout(app, monkeypatch):
    """The worker waits for a job with a blocking pop of up to 405 s, on the application's shared Redis client.
    RQ raises that client's socket timeout for the wait, but only for connections made after: the one `flask
    worker` had used to check Redis (10 s timeout) stayed in the pool, the wait took it, and after 10 quiet
    seconds the worker logged "Redis connection timeout, quitting..." and exited (seen in this pass; under `serve`
    a worker that quits stops the whole service). The worker now waits on a Redis client of its own, so no
    connection with the short timeout is in its pool; the jobs keep the shared client's 10-s timeout."""
    import redis

    from wxapp_backend.jobs_runtime import AppWorker, run_worker

    state = app.extensions["wxapp"]
    seen: dict[str, AppWorker] = {}

    def capture(self, **kwargs) -> bool:
        seen["worker"] = self
        return True

    monkeypatch.setattr(AppWorker, "work", capture)
    with app.app_context():
        state.redis.ping()  # what `flask worker` does first (_check_dependencies): a pooled 10-s connection
        run_worker(["qa-s12-idle"], burst=True)
    worker = seen["worker"]
    waits_on = worker.connection.connection_pool.get_connection()
    try:
        assert waits_on.socket_timeout is None or waits_on.socket_timeout > worker.dequeue_timeout
    finally:
        worker.connection.connection_pool.release(waits_on)
    # The jobs' client is not the one whose timeout RQ raises (a stalled Redis fails a job, it does not hang it).
    assert worker.connection.connection_pool is not state.redis.connection_pool
    # And a blocking pop longer than that timeout does not fail on the worker's connection.
    assert worker.connection.blpop(["qa-s12-never-filled"], 11) is None
    assert isinstance(worker.connection, redis.Redis)


def test_serve_whose_worker_was_killed_puts_its_job_back_before_it_exits(worker_env, tmp_path):
    """kill -9 of serve's job worker with a job in hand: serve stopped the rest and exited, the job left "started"
    in Redis until a clean-up 90 s after the next start (or never, if serve was not started again on a machine
    whose other workers share the Redis). serve now puts the job back on the queue before it exits, and says so."""
    import redis
    from rq import Queue, Worker

    from tests.e2e.helpers import descendants, tail
    from tests.e2e.test_ops_qa_s11 import Serve, _lines, _wait

    marker = tmp_path / "serve-worker-killed.txt"
    serve = Serve(worker_env, tmp_path, "serve")
    try:
        client = serve.wait_ready()
        (worker,) = [w.pid for w in Worker.all(connection=client) if w.pid in descendants(serve.proc.pid)]
        Queue("default", connection=client).enqueue("tests.e2e.test_ops_qa_s11.long_job", str(marker), 1,
                                                    job_id="qa-s12-serve-killed")
        client.close()
        _wait("the job starts", lambda: _lines(marker, "start"), 60, serve.proc, serve.stderr_path)
        serve.snapshot()
        os.kill(worker, signal.SIGKILL)
        serve.proc.wait(timeout=60)
        assert serve.proc.returncode == 1, tail(serve.stderr_path)
        assert "1 个任务已放回队列" in serve.stderr_path.read_text(), tail(serve.stderr_path)
        assert not serve.left_running()
    finally:
        serve.kill_all()
    client = redis.Redis.from_url(worker_env.redis_url())  # (the embedded Redis again, from what it saved)
    try:
        queue = Queue("default", connection=client)
        assert queue.fetch_job("qa-s12-serve-killed").get_status() == "queued"
        assert "qa-s12-serve-killed" in queue.get_job_ids()
    finally:
        client.close()


def test_a_worker_is_taken_for_dead_only_when_its_process_here_is_gone(redis_client):
    """What the quick clean-up relies on: a worker on this machine whose pid no longer runs, or runs another
    process (a pid used again after a restart, as in a container), is dead; one that runs, one on another machine
    (or in another container) and one whose record has expired are not known to be."""
    from wxapp_backend.jobs_runtime import (
        HOST_FIELD,
        STARTED_FIELD,
        host_identity,
        process_started,
        worker_is_gone,
    )

    host = host_identity()
    me = process_started(os.getpid())
    assert host and me
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    key = "rq:worker:qa-s12-probe"

    def gone(**fields) -> bool:
        redis_client.delete(key)
        if fields:
            redis_client.hset(key, mapping=fields)
        return worker_is_gone(redis_client, "qa-s12-probe", host)

    assert not gone(**{HOST_FIELD: host, STARTED_FIELD: me, "pid": os.getpid()})  # alive
    assert gone(**{HOST_FIELD: host, STARTED_FIELD: str(int(me) + 1), "pid": os.getpid()})  # pid used again
    assert gone(**{HOST_FIELD: host, STARTED_FIELD: me, "pid": ended.pid})  # ended
    assert not gone(**{HOST_FIELD: "elsewhere|boot|pid:[1]", STARTED_FIELD: me, "pid": ended.pid})
    assert not gone(pid=ended.pid)  # a plain RQ worker: nothing recorded to tell by
    assert not gone()  # expired


# --------------------------------------------------------------------------- Redis going away during a job


def test_a_worker_rides_out_redis_going_away_while_its_job_runs(worker_env, tmp_path):
    """Redis stopped for half a minute (a restart, a fail-over) while a job ran: the worker's next heartbeat
    failed, RQ logged "found an unhandled exception, quitting...", the worker exited (with status 0, so a service
    manager restarting on failure did not start it again; under `serve` the whole service stopped) and its job's
    process died with it, half done. The worker now notes the missed heartbeat and goes on: the job ends, its
    result is recorded once Redis is back, and the worker takes the next job."""
    from rq import Queue

    from tests.e2e.test_ops_qa_s11 import FlaskWorker, _lines, _wait
    from wxapp_backend.kv import ensure_embedded_redis, stop_embedded_redis

    marker = tmp_path / "redis-away.txt"
    worker = FlaskWorker(worker_env, tmp_path, "worker")
    try:
        worker.queue.enqueue("tests.integration.test_jobs_qa_s12.slow_job", str(marker), 45, job_id="qa-s12-away")
        _wait("the job starts", lambda: _lines(marker, "start"), 60, worker.proc, worker.stderr_path)
        worker.client.close()
        stop_embedded_redis(worker_env.instance)
        time.sleep(40)  # the worker's heartbeat (every 30 s of the job) meets no Redis
        assert worker.proc.poll() is None, "the worker quit while Redis was away"
        ensure_embedded_redis(worker_env.instance)
        _wait("the job ends", lambda: _lines(marker, "done"), 30, worker.proc, worker.stderr_path)
        queue = Queue("default", connection=worker.client)
        job = queue.fetch_job("qa-s12-away")
        _wait("the job is finished", lambda: job.get_status(refresh=True) == "finished", 30, worker.proc,
              worker.stderr_path)
        worker.queue.enqueue("tests.integration.test_jobs_qa_s12.slow_job", str(marker), 0, job_id="qa-s12-next")
        _wait("the next job runs", lambda: len(_lines(marker, "done")) == 2, 30, worker.proc, worker.stderr_path)
    finally:
        worker.close()


# --------------------------------------------------------------------------- a push's delivery run again


def test_the_rerun_of_a_delivery_whose_process_died_does_not_wait_for_its_own_lock(make_user, standin, db, app_ctx,
                                                                                 run_jobs, monkeypatch):
    """A notification's delivery holds a Redis lock (2 minutes) so that two runs never send at once. A run whose
    process died (kill -9, out of memory) leaves it held; RQ runs the job once more within seconds (at once,
    now, when the worker was killed), and that rerun found the lock "busy" and came back when it had expired: the
    push went out two minutes late. The lock now names the RQ job holding it, and the job's own rerun (the same
    job: RQ never runs one job twice at once) carries on at once; any other run still waits."""
    import redis.lock
    from rq import Retry

    from tests.integration.test_notify_delivery import SUBSCRIBE, _give_credits, _notify
    from wxapp_backend.notices import jobs

    user = make_user()
    _give_credits(user, 1)
    nid = _notify(user)
    state = app_ctx.extensions["wxapp"]
    state.queue.empty()  # notify()'s own job: this test enqueues the delivery itself
    real_send, real_release = jobs._send, redis.lock.Lock.release
    died: list[int] = []

    def send(step, notification_id):
        if not died:
            died.append(1)
            raise RuntimeError("the process died here")
        return real_send(step, notification_id)

    def release(self):
        if died == [1]:  # the dead run releases nothing
            died.append(2)
            return None
        return real_release(self)

    monkeypatch.setattr(jobs, "_send", send)
    monkeypatch.setattr(redis.lock.Lock, "release", release)
    job = state.queue.enqueue(jobs.deliver_notification, nid, job_id="qa-s12-delivery", retry=Retry(max=1))
    run_jobs()
    assert died == [1, 2]
    assert job.get_status(refresh=True) == "finished" and job.return_value() == "sent_subscribe"
    assert standin.count(SUBSCRIBE) == 1

    # Another job (the sweep's, a second enqueue) finding a lock held still waits for it.
    other = _notify(user, title="诉求已办结")
    state.queue.empty()
    state.redis.set(f"wxapp:notify:lock:{other}", "job:qa-s12-delivery", px=30_000)
    state.queue.enqueue(jobs.deliver_notification, other, job_id="qa-s12-other")
    run_jobs()
    assert state.queue.fetch_job("qa-s12-other").return_value() == "busy"


# --------------------------------------------------------------------------- the failed jobs page


class Parcel:
    """A job argument of a class that a later release renames (see the test below)."""

    def __init__(self, text: str) -> None:
        self.text = text


def parcel_job(parcel: Parcel) -> None:
    raise ValueError(f"无法处理 {parcel.text}")


def test_the_failed_jobs_page_shows_jobs_whose_arguments_no_longer_load(app_ctx, run_jobs, client, make_staff,
                                                                         console_login, monkeypatch, db):
    """A failed job whose arguments were pickled from a class a later release renamed or moved (an upgrade with
    failed jobs kept for 30 days) made /console/jobs a 500 for everyone: the page unpickled every job's
    arguments. Such a job is now listed, its arguments said to be unreadable. Its 重新执行 button requeued it and
    then said 这个任务已不在失败列表中, with no audit row; it now says it was requeued, on file."""
    from tests.integration.test_audit_qa_s9 import _audit_rows
    from wxapp_backend.queue import enqueue

    first = enqueue(parcel_job, Parcel("旧版本的参数"))
    enqueue(parcel_job, Parcel("另一个"))
    assert run_jobs() == 2
    monkeypatch.delattr(sys.modules[__name__], "Parcel")  # the upgrade
    admin = make_staff(role="admin")
    csrf = console_login(admin)
    resp = client.get("/console/jobs")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    name = f"{__name__}.parcel_job"
    assert page.count(f"<code>{name}</code>") == 2
    assert page.count("参数无法读取") == 2
    resp = client.post(f"/console/jobs/{first.id}/requeue", data={"csrf_token": csrf}, follow_redirects=True)
    assert "已重新排队" in resp.get_data(as_text=True)
    (requeued,) = _audit_rows(db, "job.requeued")
    assert requeued.data == {"job_id": first.id, "func": name}


def test_the_failed_jobs_card_counts_all_of_them_not_the_hundred_shown(app_ctx, run_jobs, client, make_staff,
                                                                      console_login):
    """The 失败 card showed how many rows the page lists (the newest 100): a periodic job failing every minute
    for a day (1,440 failed jobs) read "100". It now shows the failed jobs there are, and says the list is the
    newest 100."""
    import re

    from wxapp_backend.queue import enqueue

    for n in range(103):
        enqueue(parcel_job, n)
    assert run_jobs() == 103
    console_login(make_staff(role="admin"))
    page = client.get("/console/jobs").get_data(as_text=True)
    card = re.search(r'<span class="label">失败</span><span class="value">(\d+)</span>', page)
    assert card and card.group(1) == "103"
    assert "最近 100 个" in page
