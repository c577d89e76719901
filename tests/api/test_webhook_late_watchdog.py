"""A reply that missed the 5-second budget survives the death of the process that was working it out."""

from __future__ import annotations

import threading
import time

from test_webhook import KEFU, build, post, text_push

from handlers import Router, Text
from wxapp_backend.wechat import jobs


def _router(release: threading.Event, calls: list) -> Router:
    r = Router()

    @r.default
    def slow(ctx):
        calls.append(ctx.text)
        if len(calls) == 1:  # the first try stalls past the deadline (its process "dies" with it)
            release.wait(10)
        return Text("慢慢的回答")

    return r


def _watchdog_jobs(application):
    from rq.registry import ScheduledJobRegistry

    from wxapp_backend.queue import get_queue

    with application.app_context():
        q = get_queue()
        return [q.fetch_job(i) for i in ScheduledJobRegistry(queue=q).get_job_ids() if i.startswith("late-")]


def test_a_late_reply_whose_process_died_is_sent_by_the_watchdog_once(app, settings, standin, run_jobs,
                                                                       redis_client):
    """The push was answered "success" at the deadline and the handler, still running, was to send its reply
    itself; killed before it finished (kill -9, a deploy), the reply was lost for good: WeChat retries nothing
    after "success". A job scheduled with the push runs the message again unless the handler finished; the
    handler that finishes after the watchdog answered sends nothing."""
    release, calls = threading.Event(), []
    a = build(settings, wechat_token="wdtoken", webhook_deadline=0.3, extra={"wechat_router": _router(release, calls)})
    jobs.open_window(redis_client, "oa", "oDied1", kind="message")
    assert post(a, "oa", text_push(a, "慢问题", openid="oDied1", msg_id="910001")).get_data() == b"success"
    (watchdog,) = _watchdog_jobs(a)
    with a.app_context():
        assert watchdog.func(*watchdog.args) == "sent"  # the handler has not finished: it runs again here
    run_jobs()
    assert [c.body["text"]["content"] for c in standin.calls_to(KEFU)] == ["慢慢的回答"]
    release.set()  # the first try finishes at last: the watchdog answered, it sends nothing
    time.sleep(0.3)
    assert run_jobs() == 0 and len(standin.calls_to(KEFU)) == 1
    assert calls == ["慢问题", "慢问题"]


def test_a_late_reply_the_handler_sent_is_not_sent_again_by_the_watchdog(app, settings, standin, run_jobs,
                                                                         redis_client):
    calls: list = []

    def slow_but_alive(ctx):
        calls.append(ctx.text)
        time.sleep(0.2)
        return Text("慢慢的回答")

    b = build(settings, wechat_token="wdtoken3", webhook_deadline=0.05,
              extra={"wechat_router": _single(slow_but_alive)})
    jobs.open_window(redis_client, "oa", "oSlow2", kind="message")
    assert post(b, "oa", text_push(b, "慢问题", openid="oSlow2", msg_id="910002")).get_data() == b"success"
    time.sleep(0.4)
    run_jobs()
    assert len(standin.calls_to(KEFU)) == 1
    (watchdog,) = _watchdog_jobs(b)
    with b.app_context():
        assert watchdog.func(*watchdog.args) == "answered"
    assert run_jobs() == 0 and len(standin.calls_to(KEFU)) == 1 and calls == ["慢问题"]


def _single(fn) -> Router:
    r = Router()
    r.default(fn)
    return r
