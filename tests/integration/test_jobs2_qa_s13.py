"""QA session 13, background jobs: sends that survive a lost completion, dead workers found sooner, and the rest."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.integration import test_jobs_qa_s12
from wxapp_backend.wechat.jobs import open_window, window_key

worker_env = test_jobs_qa_s12.worker_env  # a fixture: `flask worker`s on their own embedded Redis and database

CUSTOM = "/cgi-bin/message/custom/send"
TEXT = {"msgtype": "text", "text": {"content": "小二来回复您啦"}}


@pytest.fixture(autouse=True)
def _no_backoff(app_ctx, monkeypatch):
    """Busy (-1) retries inside a call without waiting."""
    from wxapp_backend.wechat import client

    monkeypatch.setitem(app_ctx.extensions, "wxapp_wechat_apis", {})
    real = client.build_api
    monkeypatch.setattr(client, "build_api", lambda *a, **kw: real(*a, **{**kw, "sleep": lambda s: None}))


class _RedisOutage:
    """The application's Redis client stops answering (ConnectionError on every command) while `down` is set."""

    def __init__(self, client: redis.Redis, monkeypatch) -> None:
        self.down = False
        real = client.execute_command

        def execute_command(*args, **kwargs):
            if self.down:
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            return real(*args, **kwargs)

        monkeypatch.setattr(client, "execute_command", execute_command)


def _api_then(monkeypatch, after_send=None, before_send=None):
    """Wrap the customer-service API of wechat.jobs: `before_send` runs before the call (it may raise: the process
    died before WeChat had the message), `after_send` after WeChat answered ok."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    real_api = wechat_jobs._api

    class Api:
        def __init__(self, account):
            self.real = real_api(account)

        def send_custom(self, openid, payload):
            if before_send is not None:
                before_send()
            resp = self.real.send_custom(openid, payload)
            if after_send is not None:
                after_send()
            return resp

    monkeypatch.setattr(wechat_jobs, "_api", Api)


# --------------------------------------------------------------------------- 1. a send's completion lost with Redis


def test_a_customer_message_whose_completion_was_lost_with_redis_is_not_sent_again(app_ctx, standin, monkeypatch):
    """WeChat took the message, then Redis stopped answering before the job could note it was sent (the note was
    a Redis key): the job raised, RQ ran it again once Redis was back, the slot it had taken let it through and
    the user got the same reply twice. The send is now recorded in the database, which a re-run reads."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oLostDone", kind="message")
    outage = _RedisOutage(r, monkeypatch)
    _api_then(monkeypatch, after_send=lambda: setattr(outage, "down", standin.count(CUSTOM) == 1))
    try:
        wechat_jobs.send_customer_message("wxa", "oLostDone", TEXT, "wxa-lost-done-0")
    except redis.ConnectionError:
        pass  # the job fails; RQ cannot even record that (Redis is away): it runs again later
    assert standin.count(CUSTOM) == 1
    outage.down = False
    assert wechat_jobs.send_customer_message("wxa", "oLostDone", TEXT, "wxa-lost-done-0") == "already_sent"
    assert standin.count(CUSTOM) == 1, "the user got the same message twice"
    assert int(r.hget(window_key("wxa", "oLostDone"), "sent")) == 1


def test_a_customer_message_whose_job_died_before_sending_is_still_sent_once(app_ctx, standin, monkeypatch):
    """The other side: a run that took its window slot and died before WeChat had the message (killed, Redis gone
    before the call) leaves no record of a send: the re-run sends it, on the same slot, once."""
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oDiedBefore", kind="message")
    runs = {"n": 0}

    def die_first_time():
        runs["n"] += 1
        if runs["n"] == 1:
            raise SystemExit("killed before the call")

    _api_then(monkeypatch, before_send=die_first_time)
    with pytest.raises(SystemExit):
        wechat_jobs.send_customer_message("wxa", "oDiedBefore", TEXT, "wxa-died-before-0")
    assert standin.count(CUSTOM) == 0
    assert wechat_jobs.send_customer_message("wxa", "oDiedBefore", TEXT, "wxa-died-before-0") == "sent"
    assert wechat_jobs.send_customer_message("wxa", "oDiedBefore", TEXT, "wxa-died-before-0") == "already_sent"
    assert standin.count(CUSTOM) == 1
    assert int(r.hget(window_key("wxa", "oDiedBefore"), "sent")) == 1


def test_a_notification_whose_completion_was_lost_with_redis_is_not_sent_again(app_ctx, standin, monkeypatch,
                                                                               make_user):
    """The same for a notification (its outcome is a database row already): Redis gone right after WeChat's ok
    (the job cannot release its lock nor be marked finished), the re-run sends nothing."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import jobs as notice_jobs
    from wxapp_backend.notices.models import Notification
    from wxapp_backend.notices.services import notify

    user = make_user(oa_openid="oOaLostDone")
    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "oa", "oOaLostDone", kind="message")
    with session_scope() as s:
        note = notify(s, user.id, "appeal_progress", {}, title="您的诉求有新进展", body="已受理")
    outage = _RedisOutage(r, monkeypatch)
    real_call = notice_jobs._call

    def call_then_lose_redis(step):
        resp = real_call(step)
        outage.down = True
        return resp

    monkeypatch.setattr(notice_jobs, "_call", call_then_lose_redis)
    try:
        notice_jobs.deliver_notification(note.id)
    except redis.ConnectionError:
        pass
    sent = standin.count()
    outage.down = False
    monkeypatch.setattr(notice_jobs, "_call", real_call)
    # Outside RQ the lock the first run could not release makes this run come back later ("busy"); inside RQ the
    # job's rerun takes its own lock over. Either way nothing is sent again.
    assert notice_jobs.deliver_notification(note.id) in ("skipped", "busy")
    r.delete(f"wxapp:notify:lock:{note.id}")  # the lock's expiry
    assert notice_jobs.deliver_notification(note.id) == "skipped"
    assert standin.count() == sent
    with session_scope() as s:
        assert s.get(Notification, note.id).status == "sent_custom"


def test_the_record_of_customer_sends_is_kept_a_month_then_dropped(app_ctx, standin):
    """The send records outlive any job that could run again (a failed job can be requeued for 30 days), then the
    daily clean-up drops them."""
    from datetime import timedelta

    from wxapp_backend.db import session_scope, utcnow
    from wxapp_backend.periodic import PERIODIC
    from wxapp_backend.wechat import jobs as wechat_jobs
    from wxapp_backend.wechat.models import CustomSend

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oOld", kind="message")
    assert wechat_jobs.send_customer_message("wxa", "oOld", TEXT, "wxa-old-0") == "sent"
    assert wechat_jobs.send_customer_message("wxa", "oOld", TEXT, "wxa-month-0") == "sent"
    with session_scope() as s:
        s.get(CustomSend, "wxa-old-0").sent_at = utcnow() - timedelta(days=32)
        s.get(CustomSend, "wxa-month-0").sent_at = utcnow() - timedelta(days=29)
    assert wechat_jobs.forget_old_sends() == 1
    with session_scope() as s:
        assert s.get(CustomSend, "wxa-old-0") is None and s.get(CustomSend, "wxa-month-0") is not None
    assert "wxapp_backend.wechat.jobs.forget_old_sends" in {p.func for p in PERIODIC}


# --------------------------------------------------------------------------- 2. a worker elsewhere that died


def timed_job(marker: str, seconds: float) -> str:
    """A job for a real worker: notes each run's start and end in `marker`; the first run takes `seconds` (300:
    until it is killed), a later one ends at once."""
    path = Path(marker)
    first = not path.exists()
    with path.open("a") as fh:
        fh.write(f"start {os.getpid()}\n")
    if first:
        time.sleep(seconds)
    with path.open("a") as fh:
        fh.write(f"done {os.getpid()}\n")
    return "done"


def _as_if_elsewhere(client: redis.Redis, pid: int) -> str:
    """Make the worker of process `pid` look as if it ran on another machine (no pid of it to look at here)."""
    from rq import Worker

    from wxapp_backend.jobs_runtime import HOST_FIELD

    worker = next(w for w in Worker.all(connection=client) if w.pid == pid)
    client.hset(worker.key, HOST_FIELD, "another-machine|boot|pid:[1]")
    return worker.name


def test_a_job_of_a_worker_that_died_on_another_machine_runs_again_within_seconds(worker_env, tmp_path):
    """A worker on another machine killed -9 (or powered off) with a job in hand: its job waited for RQ's heartbeat
    lapse (90 s), and then for a clean-up, which an idle worker runs only between its waits for a job (up to
    405 s each). Workers now beat every JOB_HEARTBEAT seconds into a key that lapses on Redis's clock, and every
    worker's beat thread, busy or idle, runs the job of one that stopped beating again some 7 beats later."""
    from tests.e2e.test_ops_qa_s11 import FlaskWorker, _lines, _wait

    worker_env.env["JOB_HEARTBEAT"] = "1"
    marker = tmp_path / "elsewhere-died.txt"
    first = FlaskWorker(worker_env, tmp_path, "first")
    idle = None
    try:
        first.queue.enqueue("tests.integration.test_jobs2_qa_s13.timed_job", str(marker), 300, job_id="qa-s13-elsewhere")
        _wait("the job starts", lambda: _lines(marker, "start"), 60, first.proc, first.stderr_path)
        _as_if_elsewhere(first.client, first.proc.pid)
        idle = FlaskWorker(worker_env, tmp_path, "idle")  # waits for jobs meanwhile, as a second machine's would
        time.sleep(3)  # the idle worker's start-up clean-up is over: the job is for its beat thread to find
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.close()
    try:
        died = time.monotonic()
        _wait("the job runs again and ends", lambda: _lines(marker, "done"), 45, idle.proc, idle.stderr_path)
        assert time.monotonic() - died < 45
        assert len(_lines(marker, "start")) == 2
        job = idle.queue.fetch_job("qa-s13-elsewhere")
        _wait("the job is finished", lambda: job.get_status(refresh=True) == "finished", 10)
    finally:
        if idle is not None:
            idle.close()


def test_a_live_workers_long_job_is_not_taken_from_it(worker_env, tmp_path):
    """The negative control: a worker elsewhere running a job many beats long keeps beating; the other worker
    leaves the job alone, and it runs once."""
    from tests.e2e.test_ops_qa_s11 import FlaskWorker, _lines, _wait
    from wxapp_backend.jobs_runtime import CONFIRM_BEATS, LAPSE_BEATS

    worker_env.env["JOB_HEARTBEAT"] = "1"
    marker = tmp_path / "elsewhere-live.txt"
    seconds = 3 * (LAPSE_BEATS + CONFIRM_BEATS)  # three times what finds a dead worker
    first = FlaskWorker(worker_env, tmp_path, "first")
    other = None
    try:
        first.queue.enqueue("tests.integration.test_jobs2_qa_s13.timed_job", str(marker), seconds, job_id="qa-s13-live")
        _wait("the job starts", lambda: _lines(marker, "start"), 60, first.proc, first.stderr_path)
        _as_if_elsewhere(first.client, first.proc.pid)
        other = FlaskWorker(worker_env, tmp_path, "other")
        _wait("the job ends", lambda: _lines(marker, "done"), seconds + 30, first.proc, first.stderr_path)
        job = first.queue.fetch_job("qa-s13-live")
        _wait("the job is finished", lambda: job.get_status(refresh=True) == "finished", 10)
        time.sleep(2)
        assert len(_lines(marker, "start")) == 1, "a live worker's job was run a second time"
    finally:
        first.close()
        if other is not None:
            other.close()


def test_a_worker_whose_beat_lapsed_while_redis_was_away_keeps_its_job(app_ctx, redis_client):
    """Redis away (a restart, a fail-over) for longer than the lapse: every worker's alive key has lapsed when it
    is back. The first look that finds a key missing only notes it; a worker that beats again before the second
    look (it does one beat after Redis is back) is alive and keeps its job. One that stays silent is dead."""
    from rq import Worker

    from wxapp_backend.jobs_runtime import BEAT_FIELD, CONFIRM_BEATS, alive_key, stopped_beating

    name = "qa-s13-probe"
    redis_client.hset(Worker.redis_worker_namespace_prefix + name, mapping={BEAT_FIELD: 1, "pid": 1})
    assert not stopped_beating(redis_client, name)  # first look: noted
    redis_client.set(alive_key(name), 1, px=4000)  # its next beat
    time.sleep(CONFIRM_BEATS + 0.2)
    assert not stopped_beating(redis_client, name)
    redis_client.delete(alive_key(name))
    assert not stopped_beating(redis_client, name)  # missing again: a new first look
    time.sleep(CONFIRM_BEATS + 0.2)
    assert stopped_beating(redis_client, name)
    # A worker of an earlier release keeps no alive key: never taken for dead this way (RQ's lapse finds it).
    redis_client.hdel(Worker.redis_worker_namespace_prefix + name, BEAT_FIELD)
    assert not stopped_beating(redis_client, name)


# --------------------------------------------------------------------------- the jobs page: what is running


def test_the_jobs_page_says_which_jobs_are_running_and_for_how_long(app_ctx, client, make_staff, console_login):
    """/console/jobs counted 执行中 but named none: an admin seeing “执行中 1” for half an hour (a notice's send to
    thousands, a job stuck on WeChat) could not tell what it was, since when, or on which worker. The page now
    lists the running jobs: the job, when it started, how long it has run, and the worker."""
    from datetime import timedelta

    from rq.registry import StartedJobRegistry
    from rq.utils import now

    from wxapp_backend.queue import enqueue

    state = app_ctx.extensions["wxapp"]
    job = enqueue("wxapp_backend.notices.broadcast.send_notice", 7, 0, 0, job_id="qa-s13-running")
    state.queue.remove(job.id)
    job.started_at = now() - timedelta(minutes=42, seconds=5)
    job.worker_name = "host-a.12345"
    job.save()
    state.redis.zadd(StartedJobRegistry(queue=state.queue).key, {f"{job.id}:exec1": time.time() + 90})
    console_login(make_staff(role="admin"))
    page = client.get("/console/jobs").get_data(as_text=True)
    assert "执行中的任务" in page
    assert "<code>wxapp_backend.notices.broadcast.send_notice</code>" in page
    assert "42 分钟" in page and "host-a.12345" in page


def test_opening_the_jobs_page_does_not_fail_a_dead_workers_job(app_ctx, client, make_staff, console_login):
    """The page's 执行中 count was RQ's count of the registry, which first runs RQ's clean-up of it, from the web
    process: a job whose worker had died (its heartbeat lapsed) went to the failed jobs for good when an admin
    looked, where the workers' own clean-up runs it once more. Looking now changes nothing."""
    from rq.job import JobStatus
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    from wxapp_backend.queue import enqueue

    state = app_ctx.extensions["wxapp"]
    job = enqueue("wxapp_backend.notices.broadcast.fanout_tick", job_id="qa-s13-lapsed")  # no retries
    state.queue.remove(job.id)
    job.set_status(JobStatus.STARTED)
    state.redis.zadd(StartedJobRegistry(queue=state.queue).key, {f"{job.id}:exec1": time.time() - 30})  # lapsed
    console_login(make_staff(role="admin"))
    page = client.get("/console/jobs").get_data(as_text=True)
    assert '<span class="label">执行中</span><span class="value">1</span>' in page
    assert FailedJobRegistry(queue=state.queue).get_job_count(cleanup=False) == 0
    assert job.get_status(refresh=True) == JobStatus.STARTED


def test_a_customer_message_is_still_sent_once_while_the_database_is_away(app_ctx, standin, monkeypatch):
    """The database is where a send is now noted; while it does not answer, a chat reply is not held back (it
    goes by the Redis note alone, as before), and a re-run still sends nothing."""
    from sqlalchemy.exc import OperationalError

    from wxapp_backend import db as db_module
    from wxapp_backend.wechat import jobs as wechat_jobs

    def away():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db_module.Database, "session_scope", lambda self: away())
    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oDbAway", kind="message")
    assert wechat_jobs.send_customer_message("wxa", "oDbAway", TEXT, "wxa-db-away-0") == "sent"
    assert wechat_jobs.send_customer_message("wxa", "oDbAway", TEXT, "wxa-db-away-0") == "already_sent"
    assert standin.count(CUSTOM) == 1
