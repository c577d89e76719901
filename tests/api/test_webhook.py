"""The webhooks end to end: official vectors, safe/compatible/plain mode, hostile input, replies, deadline."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlencode

import pytest

from handlers import Router, Text
from handlers.bot import GREETING, HUMAN_NOTE, UNSUPPORTED, WELCOME
from wxapp_backend import create_app
from wxapp_backend.wechat.chat import make_push, open_reply, seal_push
from wxapp_backend.wechat.crypto import Crypto, WeChatEnvelopeError, sign
from wxapp_backend.wechat.pipeline import account_from_settings

KEFU = "/cgi-bin/message/custom/send"
OA_TOKEN, OA_KEY, OA_APPID = "pamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6"
OLD_KEY = base64.b64encode(bytes(range(32))).decode()[:43]

_apps: dict = {}


def build(settings, **overrides):
    """One app per distinct override set (sharing the session's database and Redis)."""
    key = repr(sorted((k, repr(v)) for k, v in overrides.items()))
    if key not in _apps:
        _apps[key] = create_app(settings.with_overrides(**overrides))
    return _apps[key]


@pytest.fixture
def oa(app, settings):
    """An Official Account with Tencent's sample key that also takes plain pushes (WECHAT_REQUIRE_ENCRYPTION=false),
    so that the plain, compatible and safe paths can all be tried on it."""
    return build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID,
                 wechat_require_encryption=False)


def acct_of(application, name="oa"):
    return account_from_settings(application.extensions["wxapp"].settings, name)


def post(application, name, plain, *, encrypt=None, path=None, **kw):
    acct = acct_of(application, name)
    args, body = seal_push(acct, plain, encrypt=encrypt, **kw)
    path = path or ("/wechat" if name == "oa" else "/wxa/message")
    return application.test_client().post(path + "?" + urlencode(args), data=body)


def text_push(application, text, openid="oUserA1", msg_id=None, name="oa"):
    return make_push(acct_of(application, name), openid, text=text, msg_id=msg_id)


def reply_of(application, resp, name="oa"):
    return open_reply(acct_of(application, name), resp.get_data(as_text=True))


def assert_error(resp, status, code=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    data = resp.get_json()
    assert set(data) == {"error", "message", "fields"}
    if code:
        assert data["error"] == code
    return data


# ------------------------------------------------------------------------------------------ URL check


def test_url_check_official_vector(app, settings):
    a = build(settings, wechat_token="AAAAA")
    resp = a.test_client().get("/wechat?signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504"
                               "&nonce=1514711492&echostr=4375120948345356249")
    assert resp.status_code == 200
    assert resp.get_data() == b"4375120948345356249"
    assert resp.mimetype == "text/plain"


def test_url_check_refuses_bad_or_missing_signature(app, settings):
    c = build(settings, wechat_token="AAAAA").test_client()
    assert_error(c.get("/wechat?signature=" + "0" * 40 + "&timestamp=1714036504&nonce=1514711492&echostr=1"),
                 403, "bad_signature")
    data = assert_error(c.get("/wechat?timestamp=1714036504&nonce=1514711492&echostr=1"), 400, "missing_parameter")
    assert "signature" in data["fields"]


def test_unconfigured_account_is_refused(client):
    assert_error(client.get("/wechat?signature=a&timestamp=1&nonce=1&echostr=1"), 403, "not_configured")


# ------------------------------------------------------------------------------------------ official vectors


def test_wxa_json_safe_mode_vector_end_to_end(app, settings):
    a = build(settings, wxa_token="AAAAA", wxa_aes_key="A" * 43, wxa_appid="wxba5fad812f8e6fb9",
              wxa_msg_format="json", webhook_timestamp_window=0)
    query = ("signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d&timestamp=1714112445&nonce=415670741"
             "&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes"
             "&msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3")
    body = ('{"ToUserName":"gh_97417a04a28d","Encrypt":"+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUO'
            'b05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5'
            'kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWy'
            'gb3VIYnSeOBrebufAlr7F9mFUPAJGj04="}')
    resp = a.test_client().post("/wxa/message?" + query, data=body, content_type="application/json")
    assert resp.status_code == 200 and resp.get_data() == b"success"
    # A different key for the same vector is a clean 400, not a 500.
    b = build(settings, wxa_token="AAAAA", wxa_aes_key="B" * 43, wxa_appid="wxba5fad812f8e6fb9",
              wxa_msg_format="json", webhook_timestamp_window=0)
    assert_error(b.test_client().post("/wxa/message?" + query, data=body), 400, "bad_ciphertext")


def test_oa_safe_mode_with_tencent_sample_key(oa):
    resp = post(oa, "oa", text_push(oa, "你好"))
    assert resp.status_code == 200
    raw = resp.get_data(as_text=True)
    assert "<Encrypt>" in raw and "你好" not in raw
    doc = reply_of(oa, resp)
    assert doc["MsgType"] == "text" and doc["Content"] == GREETING
    assert doc["ToUserName"] == "oUserA1"


def test_plain_mode_reply_is_plain_xml(oa):
    resp = post(oa, "oa", text_push(oa, "你好"), encrypt=False)
    assert resp.status_code == 200 and resp.mimetype == "application/xml"
    assert "<Content><![CDATA[" + GREETING + "]]></Content>" in resp.get_data(as_text=True)


def test_compatible_mode_uses_the_ciphertext(oa):
    acct = acct_of(oa)
    plain = text_push(oa, "你好")
    args, body = seal_push(acct, plain)
    # Compatible mode: plaintext fields beside Encrypt; a forged plaintext must be ignored.
    forged = body.decode().replace("<xml>", "<xml><MsgType>text</MsgType><Content>伪造</Content>"
                                            "<FromUserName>oEvil</FromUserName>")
    resp = oa.test_client().post("/wechat?" + urlencode(args), data=forged)
    assert resp.status_code == 200
    doc = reply_of(oa, resp)
    assert doc["ToUserName"] == "oUserA1" and doc["Content"] == GREETING


def test_previous_key_is_tried_and_the_reply_uses_it(app, settings):
    a = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_aes_key_previous=OLD_KEY,
              wechat_appid=OA_APPID)
    old = Crypto(OA_TOKEN, [OLD_KEY], OA_APPID)
    ts, nonce = str(int(time.time())), "12345"
    sealed = old.encrypt(text_push(a, "你好"), nonce=nonce, timestamp=ts)
    args = {"signature": sign(OA_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce, "encrypt_type": "aes",
            "msg_signature": sealed["MsgSignature"]}
    resp = a.test_client().post("/wechat?" + urlencode(args),
                                data=f"<xml><Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt></xml>")
    assert resp.status_code == 200
    env = resp.get_data(as_text=True)
    enc = env.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    msig = env.split("<MsgSignature><![CDATA[")[1].split("]]>")[0]
    rts = env.split("<TimeStamp>")[1].split("</TimeStamp>")[0]
    rnonce = env.split("<Nonce><![CDATA[")[1].split("]]>")[0]
    plain, _ = old.decrypt(enc, msig, rts, rnonce)  # readable with the previous key only
    assert GREETING in plain
    with pytest.raises(WeChatEnvelopeError):
        Crypto(OA_TOKEN, [OA_KEY], OA_APPID).decrypt(enc, msig, rts, rnonce)


def test_require_encryption_refuses_plain(app, settings):
    a = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID,
              wechat_require_encryption=True)
    assert_error(post(a, "oa", text_push(a, "你好"), encrypt=False), 403, "encryption_required")
    assert post(a, "oa", text_push(a, "你好")).status_code == 200


def test_an_account_with_a_key_refuses_plain_pushes_unless_told_otherwise(app, settings):
    """Plain mode's signature covers the token, timestamp and nonce but not the body: whoever saw one push URL
    (a proxy's access log) could post any message as anyone within the timestamp window. An account that has an
    EncodingAESKey gets safe or compatible pushes from WeChat, which carry the body under msg_signature; plain
    ones are refused unless WECHAT_REQUIRE_ENCRYPTION=false says the account is really in plain mode."""
    keyed = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID,
                  wechat_require_encryption=None)
    assert_error(post(keyed, "oa", text_push(keyed, "你好"), encrypt=False), 403, "encryption_required")
    assert post(keyed, "oa", text_push(keyed, "你好")).status_code == 200
    told = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID,
                 wechat_require_encryption=False)
    assert post(told, "oa", text_push(told, "你好"), encrypt=False).status_code == 200
    keyless = build(settings, wechat_token=OA_TOKEN, wechat_aes_key="", wechat_appid=OA_APPID,
                    wechat_require_encryption=None)
    assert post(keyless, "oa", text_push(keyless, "你好"), encrypt=False).status_code == 200
    from wxapp_backend.config import Settings

    assert Settings.from_env({"INSTANCE_PATH": "/tmp/x"}).wechat_require_encryption is None  # the default: auto


def test_stale_timestamp_is_refused(oa):
    assert_error(post(oa, "oa", text_push(oa, "你好"), timestamp=int(time.time()) - 3600), 403, "stale_timestamp")


def test_five_megabyte_body_is_413_before_reading(oa):
    args, _ = seal_push(acct_of(oa), text_push(oa, "你好"))
    resp = oa.test_client().post("/wechat?" + urlencode(args), data=b"<xml>" + b"a" * (5 * 1024 * 1024))
    assert_error(resp, 413, "payload_too_large")


# ------------------------------------------------------------------------------------------ hostile input


def _sealed_args(acct, encrypt, ts=None, nonce="42"):
    ts = str(int(time.time())) if ts is None else ts
    return {"signature": sign(acct.token, ts, nonce), "timestamp": ts, "nonce": nonce, "encrypt_type": "aes",
            "msg_signature": sign(acct.token, ts, nonce, encrypt)}


@pytest.mark.parametrize("case", ["wrong_key", "wrong_appid", "truncated", "not_base64", "empty_encrypt"])
def test_bad_ciphertext_is_a_clean_4xx(oa, case):
    acct = acct_of(oa)
    plain = text_push(oa, "你好")
    if case == "wrong_key":
        enc = Crypto(OA_TOKEN, [OLD_KEY], OA_APPID).encrypt(plain)["Encrypt"]
    elif case == "wrong_appid":
        enc = Crypto(OA_TOKEN, [OA_KEY], "wxother0000000000").encrypt(plain)["Encrypt"]
    elif case == "truncated":
        enc = acct.crypto.encrypt(plain)["Encrypt"][:-10]
    elif case == "not_base64":
        enc = "这不是密文!!!"
    else:
        enc = ""
    resp = oa.test_client().post("/wechat?" + urlencode(_sealed_args(acct, enc)),
                                 data=f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>".encode())
    expected = {"wrong_appid": 403}.get(case, 400)
    assert_error(resp, expected)


def test_msg_signature_must_cover_the_ciphertext(oa):
    acct = acct_of(oa)
    args, body = seal_push(acct, text_push(oa, "你好"))
    args["msg_signature"] = "0" * 40
    assert_error(oa.test_client().post("/wechat?" + urlencode(args), data=body), 403, "bad_signature")
    del args["msg_signature"]
    assert_error(oa.test_client().post("/wechat?" + urlencode(args), data=body), 400, "missing_parameter")


@pytest.mark.parametrize("body", [
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><xml><a>&lol2;</a></xml>',
    '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Content>&xxe;</Content></xml>',
    "this is not xml",
    '{"MsgType":"text"}',
    "<xml><MsgType>text</MsgType>",
    "",
    "<xml></xml>",
])
def test_hostile_or_malformed_plain_bodies(oa, body):
    acct = acct_of(oa)
    args, _ = seal_push(acct, "x", encrypt=False)
    assert_error(oa.test_client().post("/wechat?" + urlencode(args), data=body.encode()), 400)


def test_non_json_on_the_json_endpoint(app, settings):
    a = build(settings, wxa_token="wxatoken", wxa_msg_format="json")
    args, _ = seal_push(acct_of(a, "wxa"), "x", encrypt=False)
    assert_error(a.test_client().post("/wxa/message?" + urlencode(args), data=b"<xml></xml>"), 400, "bad_payload")
    assert_error(a.test_client().post("/wxa/message?" + urlencode(args), data=b"[1,2]"), 400, "bad_payload")


@pytest.mark.parametrize("missing", ["timestamp", "nonce", "signature"])
def test_missing_parameters(oa, missing):
    args, body = seal_push(acct_of(oa), text_push(oa, "你好"), encrypt=False)
    del args[missing]
    assert_error(oa.test_client().post("/wechat?" + urlencode(args), data=body), 400, "missing_parameter")


def test_unknown_type_emoji_and_empty_text(oa):
    acct = acct_of(oa)
    unknown = make_push(acct, "oUserB", text="x", extra={"MsgType": "hologram"})
    doc = reply_of(oa, post(oa, "oa", unknown))
    assert doc["Content"] == UNSUPPORTED
    emoji = reply_of(oa, post(oa, "oa", text_push(oa, "请问😀𠀀有什么政策？", openid="oUserB")))
    assert len(emoji["Content"]) > 10  # the knowledge base's answer, choices or fallback
    empty = reply_of(oa, post(oa, "oa", text_push(oa, "", openid="oUserB")))
    assert empty["Content"] == GREETING


def test_success_is_never_encrypted(oa):
    acct = acct_of(oa)
    resp = post(oa, "oa", make_push(acct, "oUserC", event="VIEW", event_key="https://example.com/"))
    assert resp.status_code == 200 and resp.get_data() == b"success"


# ------------------------------------------------------------------------------------------ events and replies


def test_follow_welcome_and_unfollow_recorded(oa, db):
    from wxapp_backend.auth.models import User

    acct = acct_of(oa)
    doc = reply_of(oa, post(oa, "oa", make_push(acct, "oFollower1", event="subscribe", event_key="qrscene_lobby")))
    assert doc["Content"] == WELCOME and "1 政策问答" in doc["Content"]
    user = db.query(User).filter_by(oa_openid="oFollower1").one()
    assert user.followed is True and user.last_message_at is not None
    assert post(oa, "oa", make_push(acct, "oFollower1", event="unsubscribe")).get_data() == b"success"
    db.expire_all()
    assert db.query(User).filter_by(oa_openid="oFollower1").one().followed is False


def test_menu_click_and_digits(oa):
    acct = acct_of(oa)
    from handlers.bot import MENU_TEXT

    # Known keys reach their intent (plug-ins such as the appeal intake may answer them); unknown ones
    # get the menu.
    doc = reply_of(oa, post(oa, "oa", make_push(acct, "oMenu1", event="CLICK", event_key="MENU_ACTIVITY")))
    assert doc["MsgType"] == "text" and doc["Content"] != MENU_TEXT
    doc = reply_of(oa, post(oa, "oa", make_push(acct, "oMenu1", event="CLICK", event_key="NOPE")))
    assert doc["Content"] == MENU_TEXT
    assert reply_of(oa, post(oa, "oa", make_push(acct, "oMenu1", event="CLICK", event_key="MENU_HUMAN")))[
        "MsgType"] == "transfer_customer_service"


def test_human_transfer_with_note(oa, standin, run_jobs):
    resp = post(oa, "oa", text_push(oa, "转人工", openid="oHuman1"))
    assert reply_of(oa, resp)["MsgType"] == "transfer_customer_service"
    run_jobs()
    calls = standin.calls_to(KEFU)
    assert [c.body["text"]["content"] for c in calls] == [HUMAN_NOTE]
    assert calls[0].body["touser"] == "oHuman1"


def test_blocked_user_gets_silence(oa, make_user):
    make_user(oa_openid="oBlocked1", blocked=True)
    assert post(oa, "oa", text_push(oa, "你好", openid="oBlocked1")).get_data() == b"success"


def test_rate_limit_polite_once_then_silence(app, settings):
    a = build(settings, wechat_token="rltoken", extra={"chat_rate_limit": 3})
    replies = [post(a, "oa", text_push(a, "你好", openid="oSpam1")).get_data(as_text=True) for _ in range(6)]
    assert all(GREETING in r for r in replies[:3])
    assert "速度有点快" in replies[3]
    assert replies[4:] == ["success", "success"]


def test_subscribe_msg_events_answer_success(oa):
    acct = acct_of(oa)
    plain = make_push(acct, "oSub1", event="subscribe_msg_popup_event")
    plain = plain.replace("</xml>", "<SubscribeMsgPopupEvent><List><TemplateId><![CDATA[T1]]></TemplateId>"
                                    "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>"
                                    "<PopupScene>0</PopupScene></List></SubscribeMsgPopupEvent></xml>")
    assert post(oa, "oa", plain).get_data() == b"success"


# ------------------------------------------------------------------------------------------ deadline and wxa


def slow_router(seconds: float, calls: list) -> Router:
    r = Router()

    @r.default
    def slow(ctx):
        calls.append(ctx.text)
        time.sleep(seconds)
        return Text("慢慢的回答")

    return r


def test_late_reply_goes_by_customer_service_and_is_not_replayed(app, settings, standin, run_jobs, redis_client):
    calls: list = []
    a = build(settings, wechat_token="latetoken", webhook_deadline=0.3, extra={"wechat_router": slow_router(0.8, calls)})
    plain = text_push(a, "慢问题", openid="oLate1", msg_id="900001")
    acct = acct_of(a)
    from wxapp_backend.wechat import jobs

    jobs.open_window(redis_client, "oa", "oLate1", kind="message")
    started = time.monotonic()
    first = post(a, "oa", plain)
    assert first.get_data() == b"success" and time.monotonic() - started < 0.7
    again = a.test_client().post("/wechat?" + urlencode(seal_push(acct, plain)[0]), data=plain.encode())
    assert again.get_data() == b"success"
    time.sleep(0.8)
    run_jobs()
    sent = standin.calls_to(KEFU)
    assert [c.body["text"]["content"] for c in sent] == ["慢慢的回答"]
    assert calls == ["慢问题"]


def test_wxa_always_answers_success_and_sends_by_customer_service(app, settings, standin, run_jobs):
    a = build(settings, wxa_token="wxatoken", wxa_aes_key="A" * 43, wxa_appid="wxba5fad812f8e6fb9",
              wxa_msg_format="json")
    resp = post(a, "wxa", text_push(a, "你好", openid="oWxa1", name="wxa"))
    assert resp.get_data() == b"success"
    assert run_jobs() == 1
    (call,) = standin.calls_to(KEFU)
    assert call.body == {"touser": "oWxa1", "msgtype": "text", "text": {"content": GREETING}}


def test_odd_msgid_and_openid_characters_still_reach_the_user(app, settings, standin, run_jobs):
    """Found by tests/api/test_webhook_fuzz.py: a MsgId with ":" went into the RQ job id (refused by RQ) after
    the dedup record was written, so the push got a 500 and the answer was lost."""
    a = build(settings, wxa_token="wxatoken", wxa_aes_key="A" * 43, wxa_appid="wxba5fad812f8e6fb9",
              wxa_msg_format="json")
    resp = post(a, "wxa", text_push(a, "你好", openid="oWxa:2 /x", msg_id="12:34", name="wxa"))
    assert resp.get_data() == b"success"
    assert run_jobs() == 1
    (call,) = standin.calls_to(KEFU)
    assert call.body["touser"] == "oWxa:2 /x" and call.body["text"] == {"content": GREETING}


def test_customer_service_refusals_are_counted(app, settings, standin, run_jobs, redis_client):
    from wxapp_backend.metrics import render

    def count(errcode, source):
        for line in render()[0].decode().splitlines():
            if line.startswith("wechat_kefu_refused_total{") and f'errcode="{errcode}"' in line \
                    and f'source="{source}"' in line and 'account="wxa"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    a = build(settings, wxa_token="wxatoken2", wxa_msg_format="json")
    before_api, before_local = count(45047, "wechat"), count(45015, "local")
    standin.fail_next(KEFU, 45047)
    post(a, "wxa", text_push(a, "你好", openid="oWxa2", name="wxa"))
    run_jobs()
    assert count(45047, "wechat") == before_api + 1
    # Outside the 48-hour window the job does not even call WeChat.
    from wxapp_backend.wechat import jobs

    redis_client.hset(jobs.window_key("wxa", "oWxa3"), "at", int(time.time()) - 49 * 3600)
    with app.app_context():
        assert jobs.send_customer_message("wxa", "oWxa3", {"msgtype": "text", "text": {"content": "x"}}) \
            == "refused_45015"
    assert count(45015, "local") == before_local + 1


def test_flask_view_and_fast_path_answer_alike(oa):
    """POSTs are taken by FastPushPath; the Flask view behind it gives the same answers when reached."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    acct = acct_of(oa)
    args, body = seal_push(acct, text_push(oa, "你好", msg_id=77001))
    args["msg_signature"] = "0" * 40
    env = EnvironBuilder(path="/wechat", query_string=args, method="POST", data=body).get_environ()
    app_iter, status, _ = run_wsgi_app(oa.wsgi_app.app.inner, env)  # the Flask app without the fast path (inside ClientAddress)
    fast = oa.test_client().post("/wechat?" + urlencode(args), data=body)
    assert status.split()[0] == str(fast.status_code) and fast.status_code in (400, 401, 403)
    assert b"".join(app_iter) == fast.get_data()
    args, body = seal_push(acct, text_push(oa, "你好", msg_id=77002))
    env = EnvironBuilder(path="/wechat", query_string=args, method="POST", data=body).get_environ()
    app_iter, status, _ = run_wsgi_app(oa.wsgi_app.app.inner, env)
    assert status.startswith("200") and reply_of(oa, _Resp(b"".join(app_iter)))["Content"] == GREETING


class _Resp:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_data(self, as_text: bool = False):
        return self.data.decode() if as_text else self.data
