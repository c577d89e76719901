"""The chatbot router: rule kinds, first match wins, middleware order, reply coercion."""

from __future__ import annotations

import pytest

from handlers import Router, Text, Transfer
from handlers.replies import as_reply
from handlers.router import Context
from wxapp_backend.wechat.messages import normalise


def ctx(msg_type="text", content=None, event=None, key=None, account="oa") -> Context:
    raw = {"ToUserName": "gh_x", "FromUserName": "oU", "CreateTime": "1700000000", "MsgType": msg_type}
    if content is not None:
        raw["Content"] = content
    if event:
        raw["Event"] = event
    if key is not None:
        raw["EventKey"] = key
    return Context(msg=normalise(raw, account), redis=None)  # type: ignore[arg-type]


def build() -> Router:
    r = Router()

    @r.text("人工", "转人工")
    def human(c):
        return Transfer("稍等")

    @r.regex(r"^(\d)$")
    def digit(c):
        return f"数字{c.match.group(1)}"

    @r.event("subscribe")
    def follow(c):
        return "欢迎"

    @r.click("MENU_APPEAL")
    def appeal(c):
        return "反映"

    @r.match(lambda c: "发票" in c.text)
    def invoice(c):
        return "发票问题"

    @r.msg_type("image")
    def image(c):
        return "图片"

    @r.regex(r"发票")
    def never(c):  # shadowed by the matcher above: first match wins
        return "不会到这里"

    @r.default
    def other(c):
        return None

    return r


@pytest.mark.parametrize(("c", "expected"), [
    (ctx(content=" 转人工 "), Transfer("稍等")),
    (ctx(content="7"), Text("数字7")),
    (ctx(content="77"), None),
    (ctx("event", event="subscribe", key="qrscene_a"), Text("欢迎")),
    (ctx("event", event="CLICK", key="MENU_APPEAL"), Text("反映")),
    (ctx("event", event="CLICK", key="MENU_OTHER"), None),
    (ctx(content="开发票怎么办"), Text("发票问题")),
    (ctx("image"), Text("图片")),
    (ctx("voice"), None),
])
def test_rules_first_match_wins(c, expected):
    assert build().dispatch(c) == expected


def test_rule_name_recorded_and_text_case_insensitive():
    r = Router()

    @r.text("Hello")
    def hi(c):
        return "hi"

    c = ctx(content="HELLO")
    assert r.dispatch(c) == Text("hi")
    assert c.extra["rule"] == "text:Hello"


def test_middleware_runs_outermost_first_and_can_short_circuit():
    r = Router()
    seen = []

    @r.default
    def d(c):
        seen.append("handler")
        return "ok"

    @r.use
    def outer(c, nxt):
        seen.append("outer")
        return nxt(c)

    @r.use
    def gate(c, nxt):
        seen.append("gate")
        return "拦截" if c.text == "stop" else nxt(c)

    assert r.dispatch(ctx(content="go")) == Text("ok")
    assert seen == ["outer", "gate", "handler"]
    seen.clear()
    assert r.dispatch(ctx(content="stop")) == Text("拦截")
    assert seen == ["outer", "gate"]


def test_reply_coercion():
    assert as_reply("") is None and as_reply(None) is None
    assert as_reply("x") == Text("x")
    with pytest.raises(TypeError):
        as_reply(42)
