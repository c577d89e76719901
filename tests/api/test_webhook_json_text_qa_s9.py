"""Mini-program JSON pushes can say what XML cannot: a lone surrogate and NUL. A lone surrogate in FromUserName
was a 500 (the Redis key cannot be encoded); NUL in Content reached the stored chat log (PostgreSQL refuses it)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from wxapp_backend import create_app
from wxapp_backend.wechat.chat import seal_push
from wxapp_backend.wechat.messages import BadPayload, parse_json
from wxapp_backend.wechat.pipeline import account_from_settings

WXA = dict(wxa_token="wxajsontext", wxa_msg_format="json", wxa_appid="wxajsontextappid")


def _push(application, doc_text: str):
    acct = account_from_settings(application.extensions["wxapp"].settings, "wxa")
    args, body = seal_push(acct, doc_text)
    return application.test_client().post("/wxa/message?" + urlencode(args), data=body)


def test_a_lone_surrogate_is_refused_and_nul_is_dropped():
    with pytest.raises(BadPayload):
        parse_json('{"FromUserName": "o\\ud800x", "MsgType": "text"}')
    with pytest.raises(BadPayload):
        parse_json('{"FromUserName": "oUser", "MsgType": "text", "Content": "\\udfff"}')
    doc = parse_json('{"FromUserName": "oUser", "MsgType": "text", "Content": "你\\u0000好", "x": ["a\\u0000"]}')
    assert doc["Content"] == "你好" and doc["x"] == ["a"]
    assert parse_json('{"Content": "\\\\u0000 typed as text"}')["Content"] == "\\u0000 typed as text"


def test_the_webhook_answers_them_without_a_server_error(app, settings):
    application = create_app(settings.with_overrides(**WXA))
    base = {"ToUserName": "gh_x", "CreateTime": 1700000000, "MsgType": "text"}
    bad = _push(application, json.dumps({**base, "FromUserName": "o\ud800", "Content": "你好", "MsgId": 1}))
    assert bad.status_code == 400, bad.get_data(as_text=True)
    ok = _push(application, json.dumps({**base, "FromUserName": "oNulUser", "Content": "你\u0000好", "MsgId": 2}))
    assert ok.status_code == 200, ok.get_data(as_text=True)
