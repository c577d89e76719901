"""Property-based pushes to both webhooks: any message WeChat could send, and many it never would.

Generated pushes are signed (and, for the Official Account, encrypted with Tencent's sample key) so that they
get past the envelope and reach normalisation, dedup, the router, the middleware and the handlers: unknown
message types and events, odd or missing fields, numbers where text belongs, control characters, emoji and
very long text. Also raw bodies that are not WeChat documents at all. The webhook must never answer with a
server error, and a 200 must be `success` or a reply that opens with the account's key.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wxapp_backend import create_app
from wxapp_backend.wechat.chat import open_reply, seal_push
from wxapp_backend.wechat.pipeline import account_from_settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
OA = dict(wechat_token="pamtest", wechat_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
          wechat_appid="wxb11529c136998cb6", wechat_require_encryption=False)  # plain pushes fuzzed too
WXA = dict(wxa_token="wxafuzz", wxa_msg_format="json", wxa_appid="wxafuzzappid")

MSG_TYPES = ["text", "image", "voice", "video", "shortvideo", "location", "link", "event", "file",
             "miniprogrampage", "", "TEXT", "unknown_kind"]
EVENTS = ["subscribe", "unsubscribe", "SCAN", "LOCATION", "CLICK", "VIEW", "user_enter_tempsession",
          "subscribe_msg_popup_event", "subscribe_msg_change_event", "subscribe_msg_sent_event",
          "view_miniprogram", "", "odd_event"]
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
_value = st.one_of(_text, st.integers(min_value=-(2**70), max_value=2**70), st.just(""),
                   st.text("0123456789", min_size=1, max_size=25), st.just("你好"), st.just("人工"),
                   st.just("1"), st.text("🙂😀👍🏻", max_size=5), st.just("x" * 5000))
_fields = st.fixed_dictionaries(
    {"FromUserName": st.one_of(st.just("oFuzzUser1"), _text.filter(bool)), "MsgType": st.sampled_from(MSG_TYPES)},
    optional={"ToUserName": _value, "CreateTime": _value, "Content": _value, "MsgId": _value,
              "Event": st.sampled_from(EVENTS), "EventKey": _value, "PicUrl": _value, "MediaId": _value,
              "Location_X": _value, "Location_Y": _value, "Scale": _value, "Label": _value, "Latitude": _value,
              "Longitude": _value, "Precision": _value, "SessionFrom": _value, "Title": _value, "Url": _value},
)


def _xml(fields: dict) -> str:
    def one(k: str, v) -> str:
        return f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>"
    return "<xml>" + "".join(one(k, v) for k, v in fields.items()) + "</xml>"


def _check(application, name: str, resp) -> None:
    body = resp.get_data(as_text=True)
    assert resp.status_code < 500, (resp.status_code, body[:300])
    if resp.status_code == 200 and body.strip() != "success":
        assert open_reply(account_from_settings(application.extensions["wxapp"].settings, name), body) is not None


def _post(application, name: str, plain: str | bytes, *, encrypt: bool | None = None):
    acct = account_from_settings(application.extensions["wxapp"].settings, name)
    if isinstance(plain, bytes):
        ts, nonce = str(int(time.time())), "12345"
        from wxapp_backend.wechat.crypto import sign
        args, body = {"signature": sign(acct.token, ts, nonce), "timestamp": ts, "nonce": nonce}, plain
    else:
        args, body = seal_push(acct, plain, encrypt=encrypt)
    path = "/wechat" if name == "oa" else "/wxa/message"
    return application.test_client().post(path + "?" + urlencode(args), data=body)


_settings = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))


def test_official_account_pushes_never_fail_the_webhook(app, settings):
    application = create_app(settings.with_overrides(**OA))

    @_settings
    @given(fields=_fields, encrypt=st.booleans())
    def run(fields, encrypt):
        _check(application, "oa", _post(application, "oa", _xml(fields), encrypt=encrypt))

    run()


def test_mini_program_json_pushes_never_fail_the_webhook(app, settings):
    application = create_app(settings.with_overrides(**WXA))
    json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), _value),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                               max_leaves=8)

    @_settings
    @given(fields=_fields, extra=st.dictionaries(st.sampled_from(["List", "Content", "MsgId", "CreateTime",
                                                                   "Event", "FromUserName", "SessionFrom"]),
                                                 json_values, max_size=3))
    def run(fields, extra):
        _check(application, "wxa", _post(application, "wxa", json.dumps({**fields, **extra}, ensure_ascii=False)))

    run()


def test_bodies_that_are_not_wechat_documents_are_refused_cleanly(app, settings):
    application = create_app(settings.with_overrides(**OA, **WXA))

    @_settings
    @given(body=st.one_of(st.binary(max_size=600), _text.map(lambda t: t.encode("utf-8")),
                          st.builds(lambda t: f"<xml><Encrypt><![CDATA[{t}]]></Encrypt></xml>".encode(), _text)),
           name=st.sampled_from(["oa", "wxa"]))
    def run(body, name):
        _check(application, name, _post(application, name, body))

    run()


_WORDS = ["我要反映", "投诉", "取消", "继续", "重新开始", "确认", "提交", "跳过", "好了", "是", "人工", "菜单", "你好",
          "谢谢", "1", "2", "3", "9", "0", "营业执照怎么办", "外籍人才工作许可怎么办", "小微企业融资有什么政策",
          "我们楼下的路灯坏了一个星期了，晚上很黑", "上海某某科技有限公司，新华大厦", "张三 13800138000",
          "张三 是", "13800138000", "", "😀", "x" * 2500,
          "我的诉求", "评价", "补充", "评价 SQ20251016-0001", "补充 sq20251016-0001", "5", "５", "未解决"]
_step = st.one_of(
    st.tuples(st.just("text"), st.one_of(st.sampled_from(_WORDS), _text)),
    st.tuples(st.just("image"), st.just("")),
    st.tuples(st.just("event"), st.sampled_from(["subscribe", "unsubscribe", "CLICK:MENU_APPEAL", "CLICK:MENU_KB",
                                                 "CLICK:MENU_HUMAN", "CLICK:NO_SUCH_KEY", "LOCATION"])),
)


_INTAKE = [("text", "我要反映"), ("text", "我们楼下的路灯坏了一个星期了，晚上很黑"),
           ("text", "上海某某科技有限公司，新华大厦"), ("text", "张三 13800138000"), ("text", "跳过"), ("text", "确认")]
# The appeal intake's happy path with any steps slipped in between (which may derail it, or not).
_derailed_intake = st.lists(st.lists(_step, max_size=2), min_size=len(_INTAKE), max_size=len(_INTAKE)).map(
    lambda gaps: [step for gap, happy in zip(gaps, _INTAKE, strict=True) for step in (*gap, happy)])
_conversation_settings = settings(max_examples=max(10, EXAMPLES // 3), deadline=None, database=None,
                                  derandomize=True, suppress_health_check=list(HealthCheck))


def test_conversations_of_any_order_never_fail_the_webhook(app, settings, make_building):
    """Multi-turn flows (appeal intake, "did you mean" numbers, menu clicks, follow/unfollow) in any order."""
    make_building(name="新华大厦")
    application = create_app(settings.with_overrides(**OA, extra={"chat_rate_limit": 10**6}))
    counter = iter(range(10**9))

    @_conversation_settings
    @given(steps=st.one_of(st.lists(_step, min_size=1, max_size=12), _derailed_intake))
    def run(steps):
        openid = f"oConv{next(counter)}"
        for kind, value in steps:
            fields: dict = {"ToUserName": "gh_fuzz", "FromUserName": openid, "CreateTime": int(time.time()),
                            "MsgType": kind}
            if kind == "text":
                fields.update(Content=value, MsgId=str(10**17 + next(counter)))
            elif kind == "image":
                fields.update(PicUrl="http://127.0.0.1:9/p.jpg", MediaId="m" + str(next(counter)),
                              MsgId=str(10**17 + next(counter)))
            else:
                event, _, key = value.partition(":")
                fields.update(Event=event, EventKey=key, Latitude="31.2", Longitude="121.4", Precision="10")
            resp = _post(application, "oa", _xml(fields), encrypt=False)
            _check(application, "oa", resp)
            reply = open_reply(account_from_settings(application.extensions["wxapp"].settings, "oa"),
                               resp.get_data(as_text=True))
            if reply and "诉求已提交" in str(reply.get("Content", "")):
                submitted.append(openid)

    submitted: list[str] = []
    run()
    # Generated conversations reach the end of the appeal intake, not only its first steps.
    assert submitted, "no generated conversation submitted an appeal"
