"""The webhook's quick path: greetings answered in the request thread, with no database, deadline intact."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from sqlalchemy import event
from test_webhook import KEFU, acct_of, build, oa, post, reply_of, text_push  # noqa: F401 - oa is a fixture

from handlers import Router, Text
from handlers.bot import GREETING
from wxapp_backend.wechat.chat import seal_push


def test_greeting_runs_inline_without_pool_or_database(oa, monkeypatch):  # noqa: F811
    first = post(oa, "oa", text_push(oa, "你好", openid="oInline1"))  # creates the user (database, pool)
    assert reply_of(oa, first)["Content"] == GREETING

    pipeline = oa.extensions["wxapp_pipeline"]

    def no_pool():
        raise AssertionError("a greeting must not go through the handler pool")

    monkeypatch.setattr(pipeline, "_executor", no_pool)
    statements: list[str] = []
    engine = oa.extensions["wxapp"].db.engine

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for i in range(3):
            resp = post(oa, "oa", text_push(oa, "您好", openid="oInline1", msg_id=f"77000{i}"))
            assert reply_of(oa, resp)["Content"] == GREETING
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []


def test_knowledge_questions_still_use_the_pool(oa, monkeypatch):  # noqa: F811
    post(oa, "oa", text_push(oa, "你好", openid="oInline2"))
    pipeline = oa.extensions["wxapp_pipeline"]
    used: list[bool] = []
    real = pipeline._executor

    def spy():
        used.append(True)
        return real()

    monkeypatch.setattr(pipeline, "_executor", spy)
    resp = post(oa, "oa", text_push(oa, "开办企业需要哪些材料", openid="oInline2"))
    assert resp.status_code == 200 and used == [True]


def fast_but_slow_router(seconds: float, calls: list) -> Router:
    r = Router()

    @r.text("慢", fast=True)  # wrongly marked fast: the deadline must still hold
    def slow(ctx):
        calls.append(ctx.text)
        time.sleep(seconds)
        return Text("迟到的回答")

    return r


def test_inline_handler_missing_the_deadline_answers_success_and_sends_later(app, settings, standin, run_jobs):
    calls: list = []
    a = build(settings, wechat_token="inlinelate", webhook_deadline=0.2,
              extra={"wechat_router": fast_but_slow_router(0.4, calls)})
    plain = text_push(a, "慢", openid="oInlineLate", msg_id="910001")
    first = post(a, "oa", plain)
    assert first.get_data() == b"success"  # never the late reply passively
    again = a.test_client().post("/wechat?" + urlencode(seal_push(acct_of(a), plain)[0]), data=plain.encode())
    assert again.get_data() == b"success"  # the retry gets the stored answer, the handler does not run again
    run_jobs()
    assert [c.body["text"]["content"] for c in standin.calls_to(KEFU)] == ["迟到的回答"]
    assert calls == ["慢"]
