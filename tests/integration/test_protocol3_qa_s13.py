"""QA pass 13 on the WeChat API client and sending: a refused token stable_token keeps handing out, empty chat
replies, the daily quota (45009) in a fan-out and in notifications."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from handlers import Router
from handlers.replies import Image, Many, News, Text
from wxapp_backend.wechat.client import WeChatAPIError, build_api

CUSTOM = "/cgi-bin/message/custom/send"
SUBSCRIBE = "/cgi-bin/message/subscribe/send"
STABLE = "/cgi-bin/stable_token"


@pytest.fixture
def state(app_ctx):
    return app_ctx.extensions["wxapp"]


@pytest.fixture
def wxa(state):
    return build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=lambda s: None)


def _forced(standin) -> list[bool]:
    return [bool(c.body.get("force_refresh")) for c in standin.calls_to(STABLE)]


# ------------------------------------------------------------------------------------------ a refused token
# stable_token in normal mode hands back the cached token while WeChat thinks it valid, even when the API has just
# refused it (40001): refetching it without force_refresh got the same token back, so every call cost two sends and
# a fetch and then failed, until the token's lifetime ran out (up to two hours without a message sent).


def test_a_refused_token_that_stable_token_hands_back_is_force_refreshed(wxa, standin):
    old = wxa.access_token()
    standin.refuse_token(old)
    assert wxa.send_text("o-user-1", "您好")["errcode"] == 0
    new = wxa.access_token()
    assert new != old
    assert [c.query["access_token"] for c in standin.calls_to(CUSTOM)] == [old, new]
    # The cold fetch, the ordinary refetch that handed back the refused token, then one forced refresh.
    assert _forced(standin) == [False, False, True]
    wxa.send_text("o-user-1", "再来一条")  # the token works now: one send, no fetch
    assert standin.count(CUSTOM) == 3 and standin.count(STABLE) == 3


def test_many_callers_refused_at_once_make_one_forced_refresh(state, standin):
    apis = [build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=lambda s: None)
            for _ in range(6)]
    old = apis[0].access_token()
    standin.refuse_token(old)
    barrier = threading.Barrier(len(apis))
    results: list[object] = []

    def run(api) -> None:
        assert api.access_token() == old  # each holds the refused token when it sends
        barrier.wait()
        try:
            results.append(api.send_text("o-user-1", "hi")["errcode"])
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in apis]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [0] * len(apis)
    assert _forced(standin).count(True) == 1
    assert standin.count(CUSTOM) <= 2 * len(apis)  # one retry each at most


def test_a_forced_token_refused_again_is_not_forced_again_soon(wxa, standin):
    """force_refresh is allowed 20 times a day, 30 s apart (WeChat): one refused token must not start a storm."""
    old = wxa.access_token()
    standin.refuse_token(old)
    wxa.send_text("o-user-1", "hi")
    new = wxa.access_token()
    standin.refuse_token(new)  # WeChat refuses the forced token too
    for _ in range(3):
        with pytest.raises(WeChatAPIError) as info:
            wxa.send_text("o-user-1", "hi")
        assert info.value.errcode == 40001
    assert _forced(standin).count(True) == 1
    # Each failing call costs one send (the refetched token is the refused one: no second send with it).
    assert standin.count(CUSTOM) == 2 + 3


def test_after_the_interval_a_newly_refused_token_may_be_forced_again(wxa, standin, state):
    old = wxa.access_token()
    standin.refuse_token(old)
    wxa.send_text("o-user-1", "hi")
    new = wxa.access_token()
    standin.refuse_token(new)
    state.redis.delete(wxa.tokens.force_interval_key)  # 30 s later
    assert wxa.send_text("o-user-1", "hi")["errcode"] == 0
    assert _forced(standin).count(True) == 2


def test_the_daily_force_refresh_budget_is_kept(wxa, standin, state, monkeypatch):
    monkeypatch.setattr(type(wxa.tokens), "FORCE_DAILY_MAX", 0)
    old = wxa.access_token()
    standin.refuse_token(old)
    with pytest.raises(WeChatAPIError) as info:
        wxa.send_text("o-user-1", "hi")
    assert info.value.errcode == 40001
    assert _forced(standin).count(True) == 0 and standin.count(CUSTOM) == 1


# ------------------------------------------------------------------------------------------ empty replies
# A handler that answered an empty Text, News or Many made the webhook answer 500 (the rendering raised after the
# claim) and left the dedup record "processing": WeChat's retries got "success" and the message was lost. An empty
# reply is no reply now.

EMPTY = {"空文本": Text(""), "空白": Text(" \n"), "空图文": News(()), "空组合": Many(()),
         "组合里全空": Many((Text(""), News(()))), "空图片": Image("")}


@pytest.fixture(scope="module")
def empty_app(settings):
    from wxapp_backend import create_app

    r = Router()

    @r.default
    def answer(ctx):
        if ctx.text.startswith("先空"):
            return Many((Text(""), Text("真正的回答"), News(())))
        return EMPTY[ctx.text]

    return create_app(settings.with_overrides(wechat_token="emptyreply", wxa_token="emptyreply",
                                              wechat_aes_key="", wxa_aes_key="", wxa_msg_format="xml",
                                              extra={"wechat_router": r}))


def _push(application, account, text, msg_id):
    from urllib.parse import urlencode

    from wxapp_backend.wechat.chat import make_push, seal_push
    from wxapp_backend.wechat.pipeline import account_from_settings

    acct = account_from_settings(application.extensions["wxapp"].settings, account)
    plain = make_push(acct, f"oEmpty{account}", text=text, msg_id=msg_id)
    args, body = seal_push(acct, plain)
    path = "/wechat" if account == "oa" else "/wxa/message"
    return application.test_client().post(path + "?" + urlencode(args), data=body), plain, acct


@pytest.mark.parametrize("account", ["oa", "wxa"])
@pytest.mark.parametrize("text", list(EMPTY))
def test_an_empty_reply_is_no_reply_not_a_500(empty_app, account, text, run_jobs, standin):
    from wxapp_backend.wechat.messages import dedup_key, normalise, parse_body

    msg_id = str(771000 + list(EMPTY).index(text) + (100 if account == "wxa" else 0))
    resp, plain, acct = _push(empty_app, account, text, msg_id)
    assert resp.status_code == 200 and resp.get_data() == b"success", resp.get_data(as_text=True)
    pipeline = empty_app.extensions["wxapp_pipeline"]
    msg = normalise(parse_body(plain.encode(), acct.fmt), account)
    record = pipeline.dedup.wait(dedup_key(msg, acct.appid or acct.name), 1.0)
    assert record is not None and record.state == "done"  # not left "processing"
    with empty_app.app_context():
        run_jobs()
    assert standin.count(CUSTOM) == 0  # nothing empty goes out by customer-service message either


def test_the_first_non_empty_part_of_many_is_the_answer(empty_app):
    from wxapp_backend.wechat.chat import open_reply

    resp, _, acct = _push(empty_app, "oa", "先空后实", "771900")
    assert resp.status_code == 200
    assert open_reply(acct, resp.get_data(as_text=True))["Content"] == "真正的回答"


def test_a_reply_that_cannot_be_rendered_is_a_failed_handler(empty_app, monkeypatch):
    """Whatever else makes rendering fail is handled as a handler failure: the crash text, the record released."""
    from wxapp_backend.wechat import pipeline as pipeline_module
    from wxapp_backend.wechat.chat import open_reply
    from wxapp_backend.wechat.messages import dedup_key, normalise, parse_body

    real = pipeline_module.render_text_reply

    def broken(msg, text, *args, **kwargs):
        if text == "真正的回答":
            raise ValueError("cannot render")
        return real(msg, text, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "render_text_reply", broken)
    resp, plain, acct = _push(empty_app, "oa", "先空后实", "771902")
    assert resp.status_code == 200
    monkeypatch.undo()
    assert open_reply(acct, resp.get_data(as_text=True))["Content"] == pipeline_module.CRASH_TEXT
    msg = normalise(parse_body(plain.encode(), acct.fmt), "oa")
    assert empty_app.extensions["wxapp"].redis.get(dedup_key(msg, acct.appid or acct.name)) is None  # released


# ------------------------------------------------------------------------------------------ daily quota (45009)
# Once WeChat answered 45009 (the API's daily quota is used up), every remaining row of the fan-out chunk still
# called WeChat, each logging its own alert, and so did every later chunk and every notification.


def _alerts(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "alert", False)]


def test_a_fanout_stops_calling_wechat_after_45009(published_notice, app, app_ctx, make_user, make_staff, run_jobs, standin, db,
                                                   monkeypatch, caplog):
    from sqlalchemy import update

    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import broadcast
    from wxapp_backend.notices.broadcast_models import OutboxRow
    from wxapp_backend.notices.models import SubscribeCredit

    nid = published_notice(5, fanout_send_chunk=2)
    standin.fail_next(SUBSCRIBE, 45009)
    with caplog.at_level(logging.WARNING):
        run_jobs()
        assert standin.count(SUBSCRIBE) == 1  # the rest of the chunk and the later chunks waited
        rows = db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").order_by(OutboxRow.id).all()
        assert [r.status for r in rows] == ["pending"] * 5
        assert all(r.next_attempt_at is not None and r.errcode == 45009 for r in rows)
        assert [r.attempts for r in rows] == [0] * 5  # none used a try, not even the one WeChat refused
        assert [c.credits for c in db.query(SubscribeCredit).all()] == [1] * 5  # nothing spent
        # Rows due meanwhile (a new job, the sweeper's) do not call WeChat either while the quota is out.
        with session_scope() as s:
            s.execute(update(OutboxRow).where(OutboxRow.notice_id == nid).values(next_attempt_at=None))
        broadcast.send_notice(nid)
        run_jobs()
        assert standin.count(SUBSCRIBE) == 1
    assert len(_alerts(caplog)) == 1
    # The cool-down over (WeChat's midnight, or a person's clear_quota), the rows go out.
    for key in app.extensions["wxapp"].redis.scan_iter("wxapp:wechat:quota:*"):
        app.extensions["wxapp"].redis.delete(key)
    broadcast.send_notice(nid)
    run_jobs()
    db.expire_all()
    assert [r.status for r in db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe")] == ["sent"] * 5
    assert standin.count(SUBSCRIBE) == 6


def test_notifications_after_45009_wait_without_calling_wechat(make_user, standin, db, caplog):
    from tests.integration.test_notify_delivery import _give_credits, _notify
    from wxapp_backend.notices.jobs import deliver_notification

    users = [make_user() for _ in range(3)]
    for u in users:
        _give_credits(u, 1)
    standin.fail_next(SUBSCRIBE, 45009)
    with caplog.at_level(logging.WARNING):
        # (their inbox has them; the subscribe message waits for the cool-down: test_notices3_qa_s14)
        assert [deliver_notification(_notify(u)) for u in users] == ["pending"] * 3
    assert standin.count(SUBSCRIBE) == 1
    assert len(_alerts(caplog)) == 1


def test_the_quota_cool_down_is_configurable_and_alerts_once_per_cool_down(state, wxa, standin, monkeypatch,
                                                                           caplog):
    from wxapp_backend.config import Settings

    assert Settings.from_env({"APP_ENV": "testing", "WECHAT_QUOTA_COOLDOWN": "600"}).extra[
        "wechat_quota_cooldown"] == 600
    monkeypatch.setitem(state.settings.extra, "wechat_quota_cooldown", 600)
    standin.fail_next(CUSTOM, 45009)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with pytest.raises(WeChatAPIError) as info:
                wxa.send_text("o-user-1", "hi")
            assert info.value.errcode == 45009 and not info.value.transient
    assert standin.count(CUSTOM) == 1 and len(_alerts(caplog)) == 1
    to_midnight = 86400 - (time.time() + 8 * 3600) % 86400  # within 10 min of China's midnight it waits less
    assert min(600, to_midnight) - 10 < wxa.quota_wait("custom_send") <= 600
    assert wxa.quota_wait("subscribe_send") == 0  # each API has its own quota
    assert wxa.send_subscribe("o-user-1", "TPL", {"thing1": "活动"})["errcode"] == 0


def test_the_quota_mark_never_reads_longer_than_the_cool_down(state, wxa, standin, monkeypatch):
    # The mark was written rounded to the millisecond: a 45009 at x.0009 s stored x+600.001, read back (same
    # instant) as 600.0001 s left, longer than the cool-down itself (CI read 600.00005 once). Truncated now.
    import wxapp_backend.wechat.client as client

    monkeypatch.setitem(state.settings.extra, "wechat_quota_cooldown", 600)
    frozen = 1_800_000_000.0009  # a Tuesday morning in China: midnight is hours away
    monkeypatch.setattr(client.time, "time", lambda: frozen)
    standin.fail_next(CUSTOM, 45009)
    with pytest.raises(WeChatAPIError):
        wxa.send_text("o-user-1", "hi")
    assert 599.99 < wxa.quota_wait("custom_send") <= 600
