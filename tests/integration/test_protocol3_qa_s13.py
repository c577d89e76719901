"""QA pass 13 on the WeChat API client and sending: a refused token stable_token keeps handing out, empty chat
replies, the daily quota (45009) in a fan-out and in notifications."""

from __future__ import annotations

import threading

import pytest

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
