"""QA pass 13 on the WeChat protocol layer (WECHAT.md): what users type, what the envelope carries, field rules."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests

from tests.api.test_webhook import OA_APPID, OA_KEY, OA_TOKEN, acct_of, assert_error, build, reply_of
from wxapp_backend.wechat.chat import make_push, seal_push
from wxapp_backend.wechat.crypto import sign
from wxapp_backend.wechat.messages import BadPayload, normalise, parse_xml
from wxapp_backend.wechat.templates import TemplateFieldError, validate_value


@pytest.fixture
def oa(app, settings):
    return build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID,
                 wechat_require_encryption=False)


# ------------------------------------------------------------------------------------------ DOCTYPE in a message
# A DTD can stand only before the root element; the text a user sends sits in a CDATA section, where "<!DOCTYPE"
# is just text. A pasted web page ("<!DOCTYPE html>...") was refused as an attack: 400 to WeChat, which tried
# three times and then showed the user "该公众号暂时无法提供服务".

PAGE = "帮我看看这个网页为什么打不开：<!DOCTYPE html><html><body>办事指南</body></html>"


@pytest.mark.parametrize("text", [PAGE, PAGE.replace("><", ">\r\n<"), "<!ENTITY 是什么意思？[1]",
                                  "<!doctype html>\n<!-- 注释 --><?php echo 1; ?>"])
def test_a_pasted_web_page_is_a_message_not_an_attack(oa, text):
    acct = acct_of(oa)
    for encrypt in (True, False):
        args, body = seal_push(acct, make_push(acct, "oPaste1", text=text), encrypt=encrypt)
        resp = oa.test_client().post("/wechat?" + urlencode(args), data=body)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert reply_of(oa, resp)["MsgType"] == "text"
    doc = parse_xml(make_push(acct, "oPaste1", text=text))
    assert normalise(doc, "oa").content == text.replace("\r\n", "\n").strip()  # XML reads a line end as \n


@pytest.mark.parametrize("body", [
    '<?xml version="1.0"?>\n<!-- a comment --><!DOCTYPE x [<!ENTITY a "b">]><xml><A>&a;</A></xml>',
    '<?pi <![CDATA[ ?><!DOCTYPE x [<!ENTITY a "b">]><xml><A><![CDATA[]]>&a;</A></xml>',
    '<!-- <![CDATA[ --><!DOCTYPE x [<!ENTITY a "b">]><!-- ]]> --><xml><A>&a;</A></xml>',
    '<xml><A><!DOCTYPE x [<!ENTITY a "b">]></A></xml>',
    '<xml><A>1</A></xml><!DOCTYPE x>',
    ' \ufeff<!DOCTYPE x [<!ENTITY a "b">]><xml><A>&a;</A></xml>',
    b'\n\xef\xbb\xbf<!DOCTYPE x [<!ENTITY a "b">]><xml><A>&a;</A></xml>',
    '\u00a0<!DOCTYPE x [<!ENTITY a "b">]><xml><A>&a;</A></xml>',
])
def test_a_real_dtd_anywhere_is_still_refused(body):
    with pytest.raises(BadPayload):
        parse_xml(body)


# ------------------------------------------------------------------------------------------ timestamps


def test_a_timestamp_of_thousands_of_digits_is_a_clean_403_not_a_500(oa):
    acct = acct_of(oa)
    ts = "1" * 5000
    args, body = seal_push(acct, make_push(acct, "oLongTs", text="你好"), encrypt=False)
    args.update(timestamp=ts, signature=sign(OA_TOKEN, ts, args["nonce"]))
    assert_error(oa.test_client().post("/wechat?" + urlencode(args), data=body), 403, "stale_timestamp")


# ------------------------------------------------------------------------------------------ template fields
# WeChat's subscribe-message table: number, amount, time and date take digits 0-9. A full-width "１２" (what a
# Chinese input method types) or another script's digits passed our check and would earn a 47003 from WeChat.


@pytest.mark.parametrize(("key", "value"), [
    ("number1", "１２３"), ("number1", "١٢٣"), ("amount1", "１００元"), ("amount1", "¥١٠٠"),
    ("date1", "２０２５年１０月１６日"), ("time1", "１４:３０"), ("time1", "2025-10-16 １４:30"),
])
def test_digits_other_than_0_to_9_are_refused_before_wechat_refuses_them(key, value):
    from wxapp_backend.wechat.standin import _field_ok

    with pytest.raises(TemplateFieldError):
        validate_value(key, value)
    if key in ("number1", "amount1"):
        assert not _field_ok(key, value)  # the stand-in, like WeChat, refuses them too


@pytest.mark.parametrize(("key", "value"), [("number1", "123"), ("amount1", "￥100.50"),
                                            ("date1", "2025年10月16日"), ("time1", "2025-10-16 14:30~15:30")])
def test_ascii_digits_still_pass(key, value):
    assert validate_value(key, value) == value


@pytest.mark.parametrize("value", ["(021)63281234", "+86(21)63281234", "021-6328*1234#8"])
def test_the_standin_takes_the_phone_numbers_wechat_and_we_take(value):
    """phone_number is "17位以内，数字、符号": the stand-in refused brackets and * #, so a test against it would
    report a 47003 WeChat does not give."""
    from wxapp_backend.wechat.standin import _field_ok

    assert validate_value("phone_number1", value) == value
    assert _field_ok("phone_number1", value)


# ------------------------------------------------------------------------------------------ API answers


class _JsonGatewaySession(requests.Session):
    """api.weixin.qq.com behind a gateway (an egress proxy, a load balancer) that answers sends with an HTTP error
    and a JSON body of its own, without WeChat's errcode."""

    def request(self, method, url, **kw):
        resp = requests.Response()
        resp.url = url
        resp.headers["Content-Type"] = "application/json"
        if url.endswith("/cgi-bin/stable_token"):
            resp.status_code, resp._content = 200, b'{"access_token":"T-qa13","expires_in":7200}'
        else:
            resp.status_code, resp._content = 503, b'{"message":"Service Unavailable","code":503}'
        return resp


def test_a_gateway_error_with_a_json_body_is_a_transient_failure_not_a_send(app_ctx):
    """WeChat answers every call with HTTP 200; a 503 carrying JSON came from something in between and WeChat never
    had the message. It counted as sent: a notification marked delivered, a subscribe credit spent, a chat reply
    lost without a retry."""
    from wxapp_backend.wechat.client import WeChatAPIError, WeChatHTTP, build_api

    state = app_ctx.extensions["wxapp"]
    api = build_api("wxa", state.settings, state.redis,
                    WeChatHTTP("http://wechat.invalid", session=_JsonGatewaySession()), sleep=lambda s: None)
    with pytest.raises(WeChatAPIError) as err:
        api.send_text("o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "您好")
    assert err.value.transient and "503" in err.value.errmsg
    with pytest.raises(WeChatAPIError):
        api.send_subscribe("o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "T1", {"thing1": "活动提醒"})


# ------------------------------------------------------------------------------------------ envelope edges (guards)


def test_query_parameters_in_upper_case_hex_and_repeated_names(oa):
    """encrypt_type "AES" and upper-case hex signatures are WeChat's too; of a repeated name the first value counts
    (as Flask's request.args gives it), so a second msg_signature appended cannot replace the one that was checked."""
    acct = acct_of(oa)
    args, body = seal_push(acct, make_push(acct, "oCase1", text="你好"))
    upper = dict(args, encrypt_type="AES", msg_signature=args["msg_signature"].upper(),
                 signature=args["signature"].upper())
    assert reply_of(oa, oa.test_client().post("/wechat?" + urlencode(upper), data=body))["MsgType"] == "text"
    args2, body2 = seal_push(acct, make_push(acct, "oCase1", text="菜单"))
    forged_first = "msg_signature=" + "0" * 40 + "&" + urlencode(args2)
    assert_error(oa.test_client().post("/wechat?" + forged_first, data=body2), 403, "bad_signature")
    assert oa.test_client().post("/wechat?" + urlencode(args2) + "&msg_signature=" + "0" * 40,
                                 data=body2).status_code == 200


def test_a_json_retry_with_its_msgid_as_a_huge_number_or_as_text_runs_once(app, settings, standin, run_jobs):
    """The MsgId of a JSON push can come as a number (here beyond 64 bits) or as a string: one message either way."""
    import json

    wxa = build(settings, wxa_token="AAAAA", wxa_aes_key="A" * 43, wxa_appid="wxba5fad812f8e6fb9",
                wxa_msg_format="json")
    acct = acct_of(wxa, "wxa")
    standin.reset()
    digits = "123456789012345678901234567890"
    for msg_id in (int(digits), digits):
        plain = json.loads(make_push(acct, "oHugeId1", text="你好"))
        plain["MsgId"] = msg_id
        args, body = seal_push(acct, json.dumps(plain, ensure_ascii=False))
        resp = wxa.test_client().post("/wxa/message?" + urlencode(args), data=body)
        assert resp.status_code == 200 and resp.get_data() == b"success"
    run_jobs()
    assert len(standin.calls_to("/cgi-bin/message/custom/send")) == 1
