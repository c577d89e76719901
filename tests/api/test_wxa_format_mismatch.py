"""The mini-program console's 数据格式 (JSON or XML) and WXA_MSG_FORMAT disagreeing made every push a bare
“微信消息格式有误” 400: the log said `bad_payload` for each message and nothing about which setting to change."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from wxapp_backend import create_app
from wxapp_backend.wechat.chat import seal_push
from wxapp_backend.wechat.pipeline import account_from_settings

XML = ("<xml><ToUserName>gh_x</ToUserName><FromUserName>oFmtUser</FromUserName><CreateTime>1700000000</CreateTime>"
       "<MsgType>text</MsgType><Content>你好</Content><MsgId>42</MsgId></xml>")
JSON = json.dumps({"ToUserName": "gh_x", "FromUserName": "oFmtUser", "CreateTime": 1700000000, "MsgType": "text",
                   "Content": "你好", "MsgId": 42})


def _post(settings, fmt: str, path: str, body: str):
    application = create_app(settings.with_overrides(wxa_token="wxafmt", wxa_msg_format=fmt, wxa_appid="wxafmtappid",
                                                     wechat_token="oafmt"))
    acct = account_from_settings(application.extensions["wxapp"].settings, "wxa" if path == "/wxa/message" else "oa")
    args, sealed = seal_push(acct, body)
    return application.test_client().post(f"{path}?{urlencode(args)}", data=sealed)


@pytest.mark.parametrize(("fmt", "body", "sent"), [("json", XML, "XML"), ("xml", JSON, "JSON")])
def test_a_push_in_the_other_format_names_the_setting(app, settings, fmt, body, sent):
    resp = _post(settings, fmt, "/wxa/message", body)
    assert resp.status_code == 400
    payload = resp.get_json()
    assert payload["error"] == "format_mismatch"
    assert "WXA_MSG_FORMAT" in payload["message"] and sent in payload["message"]


@pytest.mark.parametrize(("fmt", "body"), [("json", XML), ("xml", JSON)])
def test_the_same_push_in_the_configured_format_is_answered(app, settings, fmt, body):
    other = JSON if body == XML else XML
    assert _post(settings, fmt, "/wxa/message", other).status_code == 200


def test_a_body_that_is_neither_stays_a_plain_bad_payload(app, settings):
    resp = _post(settings, "json", "/wxa/message", "hello, not a push")
    assert resp.status_code == 400 and resp.get_json()["error"] == "bad_payload"


def test_the_official_account_speaks_xml_only_and_says_nothing_of_the_mini_programs_setting(app, settings):
    resp = _post(settings, "json", "/wechat", JSON)
    assert resp.status_code == 400 and resp.get_json()["error"] != "format_mismatch"
