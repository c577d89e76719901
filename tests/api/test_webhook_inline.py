"""The webhook's quick path: greetings answered in the request thread, with no database, deadline intact."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from sqlalchemy import event
from test_webhook import KEFU, acct_of, build, oa, post, reply_of, text_push  # noqa: F401 - oa is a fixture

from handlers import Router, Text
from handlers.bot import GREETING
from handlers.middleware import DEFAULT_MIDDLEWARE
from handlers.state import state_key
from wxapp_backend.wechat.chat import seal_push
from wxapp_backend.wechat.pipeline import user_cache_key


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


# ------------------------------------------------------------------ pure replies: answered with the claim


def pure_router(calls: list) -> Router:
    r = Router()
    r.middleware[:0] = list(DEFAULT_MIDDLEWARE)  # user cache, blocklist, rate limit as in production

    @r.match(lambda c: c.state.get().get("flow"), cheap=True)
    def in_flow(ctx):
        return Text("流程里的下一步")

    r.text("你好", answer=Text("你好呀"))

    @r.default
    def other(ctx):
        calls.append(ctx.msg.msg_id)
        return Text("别的")

    return r


def test_pure_reply_is_stored_with_the_claim(app, settings, redis_client, monkeypatch):
    calls: list = []
    a = build(settings, wechat_token="puretoken", extra={"wechat_router": pure_router(calls)})
    post(a, "oa", text_push(a, "你好", openid="oPure1", msg_id="920000"))  # unknown user: the normal path
    pipeline = a.extensions["wxapp_pipeline"]

    def no_second_call(*args, **kwargs):
        raise AssertionError("an answer stored with the claim needs no second Redis call")

    monkeypatch.setattr(pipeline.dedup, "finish_nowait", no_second_call)
    monkeypatch.setattr(pipeline.dedup, "finish", no_second_call)
    plain = text_push(a, "你好", openid="oPure1", msg_id="920001")
    first = post(a, "oa", plain)
    assert reply_of(a, first)["Content"] == "你好呀"
    key = f"wx:{acct_of(a).appid or 'oa'}:oa:id:920001"
    assert redis_client.get(key) == b"D" + first.get_data()  # stored at once, byte for byte
    again = [post(a, "oa", plain).get_data() for _ in range(2)]
    assert again == [first.get_data()] * 2
    # Anything without a fixed answer still goes the usual way, once per message.
    monkeypatch.undo()
    other = text_push(a, "别的话", openid="oPure1", msg_id="920002")
    assert [reply_of(a, post(a, "oa", other))["Content"] for _ in range(3)] == ["别的"] * 3
    assert calls == ["920002"]


def test_early_answer_is_dropped_when_the_claim_finds_otherwise(app, settings, redis_client, make_user):
    calls: list = []
    a = build(settings, wechat_token="puretoken2", extra={"wechat_router": pure_router(calls)})
    post(a, "oa", text_push(a, "你好", openid="oPure2"))  # caches the user
    # Control: a known user with no conversation state gets the pure answer...
    assert reply_of(a, post(a, "oa", text_push(a, "你好", openid="oPure2")))["Content"] == "你好呀"
    # ...but once a flow is under way, the same words belong to the flow.
    redis_client.set(state_key("oa", "oPure2"), json.dumps({"flow": "appeal"}), ex=600)
    assert reply_of(a, post(a, "oa", text_push(a, "你好", openid="oPure2")))["Content"] == "流程里的下一步"
    # A blocked user stays silent even when cached (the cache says blocked).
    make_user(oa_openid="oPure3", blocked=True)
    assert post(a, "oa", text_push(a, "你好", openid="oPure3")).get_data() == b"success"
    assert redis_client.get(user_cache_key("oa", "oPure3")).endswith(b":1")
    assert post(a, "oa", text_push(a, "你好", openid="oPure3")).get_data() == b"success"
