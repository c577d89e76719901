"""QA session 17 on the WeChat webhook and API client: each test shows a defect that was found and fixed."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

import pytest
import requests

from tests.api.test_webhook import build
from wxapp_backend.wechat.chat import make_push, seal_push
from wxapp_backend.wechat.pipeline import account_from_settings

OA_TOKEN = "qa17token"
WXA_TOKEN = "qa17wxatoken"


def post(application, name, plain):
    acct = account_from_settings(application.extensions["wxapp"].settings, name)
    args, body = seal_push(acct, plain)
    path = "/wechat" if name == "oa" else "/wxa/message"
    return application.test_client().post(path + "?" + urlencode(args), data=body)


# --- 1. a push whose CreateTime no clock can hold ----------------------------------------------------------
# The handler's user upsert turned CreateTime into a datetime: 10**26 (or -10**20) raised OverflowError inside the
# handler, so a text got the crash text and was released for WeChat's retry to crash again, an event got "success"
# and an error log; a malformed push is to be a clean 400 (WECHAT.md: every parse failure a clean 4xx).


@pytest.mark.parametrize("create_time", [10**26, -(10**20)])
@pytest.mark.parametrize("kind", ["text", "event"])
def test_a_signed_push_with_an_impossible_create_time_is_a_clean_400(app, settings, caplog, create_time, kind):
    oa = build(settings, wechat_token=OA_TOKEN)
    acct = account_from_settings(oa.extensions["wxapp"].settings, "oa")
    plain = (make_push(acct, "oQa17Time", text="你好", now=create_time) if kind == "text"
             else make_push(acct, "oQa17Time", event="subscribe", now=create_time))
    with caplog.at_level(logging.ERROR):
        resp = post(oa, "oa", plain)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"] == "bad_payload" and "CreateTime" in body["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_json_mini_program_push_with_an_impossible_create_time_is_a_clean_400(app, settings, caplog):
    wxa = build(settings, wxa_token=WXA_TOKEN, wxa_msg_format="json")
    plain = json.dumps({"ToUserName": "gh_qa17", "FromUserName": "oQa17Json", "CreateTime": 10**30,
                        "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": ""})
    with caplog.at_level(logging.ERROR):
        resp = post(wxa, "wxa", plain)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_ordinary_create_time_still_gets_its_answer(app, settings):
    oa = build(settings, wechat_token=OA_TOKEN)
    acct = account_from_settings(oa.extensions["wxapp"].settings, "oa")
    resp = post(oa, "oa", make_push(acct, "oQa17Ok", text="你好"))
    assert resp.status_code == 200 and b"<xml>" in resp.get_data()


# --- 2. an API answer whose errcode is no number -----------------------------------------------------------
# WeChatHTTP.call did int(data["errcode"]): a gateway in front of WECHAT_API_BASE answering {"errcode":"busy"} or
# {"errcode":{...}} raised a bare ValueError/TypeError, which callers (jobs, login) that catch WeChatAPIError let
# through as a crash instead of a failure to try again later.


class _OddErrcodeSession(requests.Session):
    def __init__(self, errcode) -> None:
        super().__init__()
        self.errcode = errcode

    def request(self, method, url, **kw):
        resp = requests.Response()
        resp.url, resp.status_code = url, 200
        resp.headers["Content-Type"] = "application/json"
        resp._content = json.dumps({"errcode": self.errcode, "errmsg": "gateway"}).encode()
        return resp


@pytest.mark.parametrize("errcode", ["busy", {"code": 1}, [1, 2], "1e3"])
def test_an_answer_with_an_errcode_that_is_no_number_is_a_transient_api_error(errcode):
    from wxapp_backend.wechat.client import WeChatAPIError, WeChatHTTP

    http = WeChatHTTP("http://wechat.invalid", session=_OddErrcodeSession(errcode))
    with pytest.raises(WeChatAPIError) as err:
        http.call("POST", "/cgi-bin/message/custom/send", api="custom_send", json_body={"touser": "o"})
    assert err.value.errcode == -2 and err.value.transient


def test_a_numeric_errcode_in_a_string_is_still_read_as_wechat_sends_it():
    from wxapp_backend.wechat.client import WeChatAPIError, WeChatHTTP

    http = WeChatHTTP("http://wechat.invalid", session=_OddErrcodeSession("45015"))
    with pytest.raises(WeChatAPIError) as err:
        http.call("POST", "/cgi-bin/message/custom/send", api="custom_send", json_body={"touser": "o"})
    assert err.value.errcode == 45015
