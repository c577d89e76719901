"""Mini-program JSON pushes can say what XML cannot: a lone surrogate and NUL. A lone surrogate in FromUserName
was a 500 (the Redis key cannot be encoded); NUL in Content reached the stored chat log (PostgreSQL refuses it).
Both are dropped, as an XML push could not have carried them."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from wxapp_backend import create_app
from wxapp_backend.wechat.chat import seal_push
from wxapp_backend.wechat.messages import parse_json
from wxapp_backend.wechat.pipeline import account_from_settings

WXA = dict(wxa_token="wxajsontext", wxa_msg_format="json", wxa_appid="wxajsontextappid")


def _push(application, doc_text: str):
    acct = account_from_settings(application.extensions["wxapp"].settings, "wxa")
    args, body = seal_push(acct, doc_text)
    return application.test_client().post("/wxa/message?" + urlencode(args), data=body)


def test_lone_surrogates_and_nul_are_dropped():
    assert parse_json('{"FromUserName": "o\\ud800x", "MsgType": "text"}')["FromUserName"] == "ox"
    doc = parse_json('{"FromUserName": "oUser", "MsgType": "text", "Content": "你\\u0000好\\udfff", "x": ["a\\u0000"]}')
    assert doc["Content"] == "你好" and doc["x"] == ["a"]
    assert parse_json('{"Content": "\\\\u0000 typed as text"}')["Content"] == "\\u0000 typed as text"
    assert parse_json('{"Content": "😀 \\ud83d\\ude00"}')["Content"] == "😀 😀"  # a surrogate pair is one emoji


def test_the_webhook_answers_them_without_a_server_error(app, settings):
    application = create_app(settings.with_overrides(**WXA))
    base = {"ToUserName": "gh_x", "CreateTime": 1700000000, "MsgType": "text"}
    for i, doc in enumerate(({**base, "FromUserName": "o\ud800", "Content": "你好"},
                             {**base, "FromUserName": "oNulUser", "Content": "你\u0000好"})):
        resp = _push(application, json.dumps({**doc, "MsgId": i + 1}))
        assert resp.status_code == 200, resp.get_data(as_text=True)
