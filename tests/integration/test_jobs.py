"""Jobs: enqueued only after commit, failures kept and visible."""

from __future__ import annotations

from wxapp_backend.db import session_scope
from wxapp_backend.queue import enqueue, enqueue_after_commit, failed_jobs


def failing_job(n: int) -> None:
    raise ValueError(f"boom {n}")


def ok_job(n: int) -> int:
    return n * 2


def test_job_is_enqueued_only_on_commit(app_ctx, run_jobs):
    state = app_ctx.extensions["wxapp"]
    with session_scope() as s:
        enqueue_after_commit(s, ok_job, 1)
        assert state.queue.count == 0  # nothing visible before the commit
    assert state.queue.count == 1
    assert run_jobs() == 1


def test_rolled_back_transaction_enqueues_nothing(app_ctx):
    state = app_ctx.extensions["wxapp"]
    try:
        with session_scope() as s:
            enqueue_after_commit(s, ok_job, 1)
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    assert state.queue.count == 0


def test_failed_jobs_are_kept_and_listed(app_ctx, run_jobs, client, make_staff, console_login):
    enqueue(failing_job, 7)
    assert run_jobs() == 1
    failed = failed_jobs()
    assert len(failed) == 1
    assert "boom 7" in failed[0]["error"] and failed[0]["func"].endswith("failing_job")
    console_login(make_staff(role="admin"))
    page = client.get("/console/jobs").get_data(as_text=True)
    assert "failing_job" in page and "boom 7" in page


def test_failed_job_can_be_requeued_from_console(app_ctx, run_jobs, client, make_staff, console_login):
    state = app_ctx.extensions["wxapp"]
    job = enqueue(failing_job, 8)
    run_jobs()
    token = console_login(make_staff(role="admin"))
    resp = client.post(f"/console/jobs/{job.id}/requeue", data={"csrf_token": token})
    assert resp.status_code == 302
    assert state.queue.count == 1


def test_job_counts_reach_metrics(app_ctx, client):
    enqueue(ok_job, 1)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'job_queue_depth{state="queued"} 1.0' in text


def test_the_worker_logs_at_log_level(app, settings):
    """LOG_LEVEL=WARNING silences rq's own INFO lines too (rq would set its loggers to INFO)."""
    import logging

    from wxapp_backend import create_app
    from wxapp_backend.jobs_runtime import run_worker

    quiet = create_app(settings.with_overrides(log_level="WARNING", queue_name="log-level-test"))
    with quiet.app_context():
        run_worker(["log-level-test"], burst=True)
    assert logging.getLogger("rq.worker").getEffectiveLevel() == logging.WARNING


def test_a_job_queued_inside_a_savepoint_that_rolls_back_is_dropped(app_ctx, run_jobs):
    """Only the savepoint's work is undone: its job goes with it, the outer transaction's stays (a job queued
    in a released savepoint belongs to the outer transaction then); and releasing a savepoint enqueues nothing
    before the real commit (it used to enqueue every job queued so far, before the data was committed)."""
    state = app_ctx.extensions["wxapp"]
    with session_scope() as s:
        enqueue_after_commit(s, ok_job, 1)
        with s.begin_nested():
            enqueue_after_commit(s, ok_job, 2)  # released: kept
        assert state.queue.count == 0  # SQLAlchemy fires after_commit for a released savepoint too: not yet
        try:
            with s.begin_nested():
                enqueue_after_commit(s, ok_job, 3)
                with s.begin_nested():
                    enqueue_after_commit(s, ok_job, 4)  # inside the one that rolls back: dropped too
                raise RuntimeError("undo this savepoint")
        except RuntimeError:
            pass
    assert sorted(job.args[0] for job in state.queue.jobs) == [1, 2]


def test_periodic_ticks_leave_no_routine_lines_in_the_log(app, settings, capfd):
    """A quiet service wrote three or four INFO lines per periodic tick (several ticks a minute: dequeued, completed,
    Job OK, "Result is kept"), and the lines that matter scrolled away. A tick now leaves none at INFO; an ordinary
    job still says it ran; "Result is kept" is gone for every job."""
    from rq import Queue

    from wxapp_backend import create_app
    from wxapp_backend.jobs_runtime import run_worker

    info = create_app(settings.with_overrides(log_level="INFO", queue_name="ticks-test"))
    with info.app_context():
        q = Queue("ticks-test", connection=info.extensions["wxapp"].redis)
        q.enqueue(ok_job, 1, job_id="periodic-ticks_test-1")
        q.enqueue(ok_job, 2, job_id="plain-ticks-test-2")
        capfd.readouterr()
        run_worker(["ticks-test"], burst=True)
        assert q.fetch_job("periodic-ticks_test-1").return_value() == 2  # the tick did run
    err = capfd.readouterr().err
    assert "plain-ticks-test-2" in err and "Successfully completed" in err, err
    assert "periodic-ticks_test" not in err and err.count("Successfully completed") == 1, err
    assert "Result is kept" not in err, err
