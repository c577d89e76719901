"""The WeChat API client against the stand-in: tokens, one refresh + one retry, busy backoff, quota alert."""

from __future__ import annotations

import logging

import pytest
import requests
from prometheus_client import REGISTRY

from wxapp_backend.wechat.client import WeChatAPIError, WeChatHTTP, build_api, code_to_session, get_api
from wxapp_backend.wechat.templates import TemplateFieldError

CUSTOM = "/cgi-bin/message/custom/send"
SUBSCRIBE = "/cgi-bin/message/subscribe/send"
STABLE = "/cgi-bin/stable_token"


@pytest.fixture
def state(app_ctx):
    return app_ctx.extensions["wxapp"]


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def wxa(state, sleeps):
    """The mini-program API with a recording sleep, so backoff is asserted without waiting."""
    return build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=sleeps.append)


def test_token_is_fetched_once_with_stable_token_and_cached(wxa, standin, state):
    token = wxa.access_token()
    assert wxa.access_token() == token
    assert standin.count(STABLE) == 1
    assert standin.count("/cgi-bin/token") == 0
    body = standin.calls_to(STABLE)[0].body
    assert body == {"grant_type": "client_credential", "appid": state.settings.wxa_appid,
                    "secret": state.settings.wxa_secret, "force_refresh": False}
    ttl = state.redis.ttl(wxa.tokens.key)
    assert 7200 - 300 - 5 <= ttl <= 7200 - 300


def test_get_api_builds_both_accounts_from_settings(state, standin):
    oa, wxa = get_api("oa"), get_api("wxa")
    assert get_api("oa") is oa
    assert oa.appid == state.settings.wechat_appid and wxa.appid == state.settings.wxa_appid
    assert oa.access_token() != wxa.access_token()
    assert standin.count(STABLE) == 2
    with pytest.raises(ValueError):
        get_api("corp")


def test_send_text_carries_the_token(wxa, standin):
    wxa.send_text("o-user-1", "您好")
    call = standin.calls_to(CUSTOM)[0]
    assert call.query["access_token"] == wxa.access_token()
    assert call.body == {"touser": "o-user-1", "msgtype": "text", "text": {"content": "您好"}}


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
def test_token_error_refreshes_once_and_retries_once(wxa, standin, errcode):
    wxa.access_token()
    standin.fail_next(CUSTOM, errcode)
    assert wxa.send_text("o-user-1", "hi")["errcode"] == 0
    assert standin.count(CUSTOM) == 2
    # The cold fetch and the one refresh, forced: the stand-in's ordinary refetch hands back the refused token.
    assert [c.body["force_refresh"] for c in standin.calls_to(STABLE)] == [False, False, True]


def test_expired_token_gets_a_new_one(wxa, standin, state):
    old = wxa.access_token()
    standin.expire_tokens()
    wxa.send_text("o-user-1", "hi")
    new = wxa.access_token()
    assert new != old and state.redis.get(wxa.tokens.key).decode() == new
    calls = standin.calls_to(CUSTOM)
    assert [c.query["access_token"] for c in calls] == [old, new]


def test_second_token_error_is_raised_not_looped(wxa, standin):
    wxa.access_token()
    standin.fail_next(CUSTOM, 40001, times=5)
    with pytest.raises(WeChatAPIError) as info:
        wxa.send_text("o-user-1", "hi")
    assert info.value.errcode == 40001 and not info.value.transient
    assert standin.count(CUSTOM) == 2
    assert standin.count(STABLE) == 3  # the cold fetch, the refetch (the same token) and one forced refresh


def test_busy_is_retried_with_backoff(wxa, standin, sleeps):
    standin.fail_next(CUSTOM, -1, times=2)
    assert wxa.send_text("o-user-1", "hi")["errcode"] == 0
    assert standin.count(CUSTOM) == 3
    assert sleeps == [0.2, 0.5]


def test_busy_gives_up_after_a_bounded_number_of_tries(wxa, standin, sleeps):
    standin.fail_next(CUSTOM, -1, times=10)
    with pytest.raises(WeChatAPIError) as info:
        wxa.send_text("o-user-1", "hi")
    assert info.value.errcode == -1 and info.value.transient
    assert standin.count(CUSTOM) == 3
    assert sleeps == [0.2, 0.5]


def test_busy_token_endpoint_is_retried_too(wxa, standin, sleeps):
    standin.fail_next(STABLE, -1)
    assert wxa.access_token()
    assert standin.count(STABLE) == 2 and sleeps == [0.2]


def test_daily_quota_alerts_and_is_not_retried(wxa, standin, caplog, sleeps):
    wxa.access_token()
    standin.fail_next(CUSTOM, 45009)
    with caplog.at_level(logging.ERROR, logger="wxapp_backend.wechat.client"):
        with pytest.raises(WeChatAPIError) as info:
            wxa.send_text("o-user-1", "hi")
    assert info.value.errcode == 45009 and not info.value.transient
    assert standin.count(CUSTOM) == 1 and sleeps == []
    alerts = [r for r in caplog.records if getattr(r, "alert", False)]
    assert len(alerts) == 1 and alerts[0].levelno == logging.ERROR and alerts[0].api == "custom_send"
    # No automatic clear_quota: nothing but the token and the one send reached WeChat.
    assert {c.path for c in standin.calls} == {STABLE, CUSTOM}


def test_quota_on_token_fetch_alerts_too(wxa, standin, caplog):
    standin.fail_next(STABLE, 45009)
    with caplog.at_level(logging.ERROR):
        with pytest.raises(WeChatAPIError):
            wxa.access_token()
    assert any(getattr(r, "alert", False) for r in caplog.records)
    assert standin.count(STABLE) == 1


def test_compare_and_expire_keeps_a_newer_token(wxa, standin, state, monkeypatch):
    """A call that failed with a stale token must not drop the newer token another process cached."""
    stale = wxa.access_token()
    # Another process force-refreshes (this revokes `stale` at once) and caches the new token.
    fresh = requests.post(standin.base_url + STABLE, json={
        "grant_type": "client_credential", "appid": state.settings.wxa_appid,
        "secret": state.settings.wxa_secret, "force_refresh": True}, timeout=5).json()["access_token"]
    state.redis.set(wxa.tokens.key, fresh, ex=600)
    # Our call started before that and still holds the stale token.
    real_read = wxa.tokens.cached_with  # the call reads the token (with the API's quota mark) once, at its start
    handed = iter([stale])
    monkeypatch.setattr(wxa.tokens, "cached_with",
                        lambda key: (next(handed, None) or real_read(key)[0], None))
    wxa.send_text("o-user-1", "hi")
    assert [c.query["access_token"] for c in standin.calls_to(CUSTOM)] == [stale, fresh]
    assert state.redis.get(wxa.tokens.key).decode() == fresh
    assert standin.count(STABLE) == 2  # ours at the start and the other process's; no refetch by us
    assert wxa.tokens.invalidate(stale) is False
    assert wxa.tokens.invalidate(fresh) is True and state.redis.get(wxa.tokens.key) is None


def test_timeouts_are_transient_errors(state, standin):
    http = WeChatHTTP(standin.base_url, timeout=0.2)
    api = build_api("wxa", state.settings, state.redis, http, sleep=lambda s: None)
    api.access_token()
    standin.set_latency(1.0, CUSTOM)
    with pytest.raises(WeChatAPIError) as info:
        api.send_text("o-user-1", "hi")
    assert info.value.errcode == -2 and info.value.transient


def test_every_call_has_the_configured_timeout(state):
    assert state.wechat_http.timeout == state.settings.wechat_api_timeout


def test_calls_are_counted_in_metrics(wxa, standin, client):
    before = REGISTRY.get_sample_value("wechat_api_calls_total", {"api": "custom_send", "errcode": "42001"}) or 0
    wxa.access_token()
    standin.expire_tokens()
    wxa.send_text("o-user-1", "hi")
    after = REGISTRY.get_sample_value("wechat_api_calls_total", {"api": "custom_send", "errcode": "42001"})
    assert after == before + 1
    text = client.get("/metrics").get_data(as_text=True)
    assert 'wechat_api_calls_total{api="stable_token",errcode="0"}' in text


def test_message_helpers_build_wechat_bodies(state, standin, sleeps):
    oa = build_api("oa", state.settings, state.redis, state.wechat_http, sleep=sleeps.append)
    wxa = build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=sleeps.append)
    wxa.send_image("o-user-1", "MEDIA1")
    wxa.send_link("o-user-1", "标题", "说明", "https://example.com/a", "https://example.com/t.jpg")
    oa.send_link("o-user-1", "标题", "说明", "https://example.com/a", "https://example.com/t.jpg")
    wxa.send_miniprogram_page("o-user-1", "活动", "pages/activity/detail?id=1", "THUMB")
    bodies = [c.body for c in standin.calls_to(CUSTOM)]
    assert bodies[0] == {"touser": "o-user-1", "msgtype": "image", "image": {"media_id": "MEDIA1"}}
    assert bodies[1]["msgtype"] == "link" and bodies[1]["link"]["thumb_url"].endswith("t.jpg")
    assert bodies[2]["msgtype"] == "news" and bodies[2]["news"]["articles"][0]["url"] == "https://example.com/a"
    assert bodies[3]["miniprogrampage"] == {"title": "活动", "pagepath": "pages/activity/detail?id=1",
                                           "thumb_media_id": "THUMB"}


def test_send_subscribe_validates_before_sending(wxa, standin, state):
    with pytest.raises(TemplateFieldError) as info:
        wxa.send_subscribe("o-user-1", "TPL1", {"thing1": "一" * 21, "time2": "14:30"})
    assert info.value.field == "thing1"
    assert standin.count(SUBSCRIBE) == 0
    wxa.send_subscribe("o-user-1", "TPL1", {"thing1": "诉求已受理", "time2": "2025年10月16日 14:30"},
                       "pages/appeal/detail?id=3")
    body = standin.calls_to(SUBSCRIBE)[0].body
    assert body == {"touser": "o-user-1", "template_id": "TPL1", "page": "pages/appeal/detail?id=3",
                    "data": {"thing1": {"value": "诉求已受理"}, "time2": {"value": "2025年10月16日 14:30"}},
                    "miniprogram_state": state.settings.wxa_state, "lang": "zh_CN"}


def test_send_subscribe_with_a_kind_field_mapping(wxa, standin):
    wxa.send_subscribe("o-user-1", "TPL1", {"title": "活动提醒", "time": "14:30"},
                       kind_fields={"thing1": "title", "time2": "time"})
    assert standin.calls_to(SUBSCRIBE)[0].body["data"] == {"thing1": {"value": "活动提醒"},
                                                           "time2": {"value": "14:30"}}
    with pytest.raises(TemplateFieldError):
        wxa.send_subscribe("o-user-1", "TPL1", {"title": "x"}, kind_fields={"thing1": "title", "time2": "time"})


def test_wechat_errors_from_subscribe_keep_their_code(wxa, standin):
    standin.fail_next(SUBSCRIBE, 43101)
    with pytest.raises(WeChatAPIError) as info:
        wxa.send_subscribe("o-user-1", "TPL1", {"thing1": "x"})
    assert info.value.errcode == 43101 and not info.value.transient
    assert standin.count(SUBSCRIBE) == 1


def test_download_media(wxa, standin):
    standin.add_media("PIC1", b"\x89PNG-bytes", "image/png")
    data, ctype = wxa.download_media("PIC1")
    assert data == b"\x89PNG-bytes" and ctype == "image/png"
    with pytest.raises(WeChatAPIError) as info:
        wxa.download_media("invalid-media")
    assert info.value.errcode == 40007


def test_jscode2session_needs_no_token(state, standin):
    out = code_to_session(state.wechat_http, state.settings.wxa_appid, state.settings.wxa_secret, "alice~1")
    assert out["openid"] == standin.openid_for("alice")
    assert standin.count(STABLE) == 0 and standin.count("/cgi-bin/token") == 0
