"""`flask --app wsgi chat`: talk to the bot in a terminal through the real webhook path.

Each line is built into a WeChat push (signed with the account's token, encrypted when an AES key is
configured), POSTed to /wechat (or /wxa/message) through the WSGI app, and the answer is opened and printed,
as are customer-service messages sent later (read back from the loopback WeChat stand-in).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
import secrets
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import click
from flask import Flask, current_app

from .crypto import sign
from .messages import _cdata, parse_body
from .pipeline import SUCCESS, Account, account_from_settings

DEFAULT_API_BASE = "https://api.weixin.qq.com"
KEFU_PATH = "/cgi-bin/message/custom/send"


# ---------------------------------------------------------------------------------------------- pushes


def make_push(acct: Account, openid: str, *, text: str | None = None, event: str | None = None,
              event_key: str | None = None, msg_id: str | None = None, now: int | None = None,
              extra: dict[str, Any] | None = None) -> str:
    """The plaintext of a user message (text) or an event, in the account's format."""
    now = int(time.time()) if now is None else now
    fields: dict[str, Any] = {"ToUserName": "gh_chatsimulator", "FromUserName": openid, "CreateTime": now}
    if event:
        fields.update(MsgType="event", Event=event)
        if event_key is not None:
            fields["EventKey"] = event_key
    else:
        fields.update(MsgType="text", Content=text or "",
                      MsgId=msg_id or str(secrets.randbelow(10**18) + 10**18))
    fields.update(extra or {})
    if acct.fmt == "json":
        return json.dumps(fields, ensure_ascii=False)
    # Escaped as WeChat does: a "]]>" in the text is split across two sections, characters XML forbids dropped.
    parts = "".join(f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}>{_cdata(str(v))}</{k}>"
                    for k, v in fields.items())
    return f"<xml>{parts}</xml>"


def seal_push(acct: Account, plaintext: str, *, encrypt: bool | None = None, timestamp: int | None = None,
              nonce: str | None = None) -> tuple[dict[str, str], bytes]:
    """(query args, body) as WeChat would send them: signed, and encrypted when the account has a key."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nc = nonce or str(secrets.randbelow(9 * 10**9) + 10**9)
    args = {"signature": sign(acct.token, ts, nc), "timestamp": ts, "nonce": nc}
    if encrypt is None:
        encrypt = acct.crypto is not None
    if not encrypt:
        return args, plaintext.encode("utf-8")
    assert acct.crypto is not None
    sealed = acct.crypto.encrypt(plaintext, nonce=nc, timestamp=ts)
    args.update(encrypt_type="aes", msg_signature=sealed["MsgSignature"])
    if acct.fmt == "json":
        body = json.dumps({"ToUserName": "gh_chatsimulator", "Encrypt": sealed["Encrypt"]})
    else:
        body = f"<xml><ToUserName><![CDATA[gh_chatsimulator]]></ToUserName><Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt></xml>"
    return args, body.encode("utf-8")


def open_reply(acct: Account, body: str) -> dict[str, Any] | None:
    """The answer's plaintext fields (decrypted when sealed), or None for "success"/empty."""
    if not body or body.strip() == SUCCESS:
        return None
    doc = parse_body(body, "json" if body.lstrip().startswith("{") else "xml")
    if "Encrypt" in doc and acct.crypto is not None:
        plain, _ = acct.crypto.decrypt(doc["Encrypt"], doc.get("MsgSignature", ""), doc.get("TimeStamp", ""),
                                       doc.get("Nonce", ""))
        doc = parse_body(plain, "json" if plain.lstrip().startswith("{") else "xml")
    return doc


# A mini-program link in a text (handlers/links.py), as a person trying the bot out reads it: the text and the page.
_MINI_LINK = re.compile(r'<a data-miniprogram-appid="[^"]*" data-miniprogram-path="([^"]*)">([^<]*)</a>')


def _readable(text: str) -> str:
    """`text` with its mini-program links shown as their text and page (WeChat shows them as tappable text)."""
    if "<a " not in text:
        return text
    return _MINI_LINK.sub(lambda m: f"{html.unescape(m.group(2))}［小程序页面 {html.unescape(m.group(1))}］", text)


def describe_reply(doc: dict[str, Any] | None) -> str:
    """A line of text for a passive reply."""
    if doc is None:
        return ""
    kind = doc.get("MsgType")
    if kind == "text":
        return _readable(str(doc.get("Content") or ""))
    if kind == "transfer_customer_service":
        return "［已转接人工客服］"
    if kind == "news":
        items = (doc.get("Articles") or {}).get("item")
        items = items if isinstance(items, list) else [items]
        return "［图文］" + "；".join(str((i or {}).get("Title") or "") for i in items)
    return f"［{kind}］"


def describe_payload(payload: dict[str, Any]) -> str:
    """A line of text for a customer-service message body."""
    kind = payload.get("msgtype")
    if kind == "text":
        return _readable(str((payload.get("text") or {}).get("content") or ""))
    if kind == "news":
        return "［图文］" + "；".join(a.get("title", "") for a in payload.get("news", {}).get("articles", []))
    if kind == "link":
        return "［链接］" + str(payload.get("link", {}).get("title", ""))
    return f"［{kind}］"


# ---------------------------------------------------------------------------------------------- session


def throwaway_overrides(settings, account: str) -> dict[str, Any]:
    """Settings for a session when the account has no token: a token and AES key valid only for it."""
    key = base64.b64encode(os.urandom(32)).decode()[:43]
    if account == "oa" and not settings.wechat_token:
        return {"wechat_token": secrets.token_hex(8), "wechat_aes_key": key, "wechat_aes_key_previous": "",
                "wechat_appid": settings.wechat_appid or "wxchatsession0000",
                "wechat_secret": settings.wechat_secret or "chat-session-secret",
                "wechat_require_encryption": False}
    if account == "wxa" and not settings.wxa_token:
        return {"wxa_token": secrets.token_hex(8), "wxa_aes_key": key, "wxa_aes_key_previous": "",
                "wxa_appid": settings.wxa_appid or "wxachatsession000",
                "wxa_secret": settings.wxa_secret or "chat-session-secret"}
    return {}


class ChatSession:
    """A conversation with the bot through the WSGI app's webhook, as one user."""

    def __init__(self, app: Flask, account: str, openid: str, standin: Any = None) -> None:
        self.app, self.account, self.openid, self.standin = app, account, openid, standin
        self.acct = account_from_settings(app.extensions["wxapp"].settings, account)
        self.client = app.test_client()
        self.path = "/wechat" if account == "oa" else "/wxa/message"
        self._seen = 0

    def send(self, text: str | None = None, *, event: str | None = None, event_key: str | None = None,
             wait_late: float = 0.3) -> list[str]:
        """Send one message or event; returns the bot's answers (passive first, then later ones)."""
        plain = make_push(self.acct, self.openid, text=text, event=event, event_key=event_key)
        args, body = seal_push(self.acct, plain)
        resp = self.client.post(self.path + "?" + urlencode(args), data=body,
                                content_type="application/json" if self.acct.fmt == "json" else "text/xml")
        out: list[str] = []
        if resp.status_code != 200:
            return [f"［错误 {resp.status_code}］{resp.get_data(as_text=True)}"]
        passive = describe_reply(open_reply(self.acct, resp.get_data(as_text=True)))
        if passive:
            out.append(passive)
        out.extend(self.later(wait_late))
        return out

    def later(self, wait: float) -> list[str]:
        """Run the queued customer-service jobs and collect what reached the stand-in, for up to `wait` s."""
        end = time.monotonic() + wait
        found: list[str] = []
        while True:
            self._drain()
            found.extend(self._new_sends())
            if found or time.monotonic() >= end:
                return found
            time.sleep(0.1)

    def _drain(self) -> None:
        from rq import SimpleWorker

        state = self.app.extensions["wxapp"]
        with self.app.app_context():
            # WARNING: the worker's per-job lines would come between the user's line and the bot's answer.
            SimpleWorker([state.queue], connection=state.redis).work(burst=True, with_scheduler=False,
                                                                      logging_level="WARNING")

    def _new_sends(self) -> list[str]:
        if self.standin is None:
            return []
        calls = self.standin.calls_to(KEFU_PATH)
        new, self._seen = calls[self._seen:], len(calls)
        # Only what WeChat accepted reached the user: a send refused (an expired token, 45015) and retried
        # would otherwise show twice.
        return ["［客服消息］" + describe_payload(c.body or {}) for c in new
                if (c.body or {}).get("touser") == self.openid and c.errcode == 0]


HELP = ("输入文字与数字店小二对话；命令：/follow 关注  /unfollow 取消关注  /click KEY 点击菜单  "
        "/scan 扫码  /quit 退出")


def _terminal_lines(echo: Any) -> Any:
    """Lines typed at the terminal (or piped in) until end of input or Ctrl-C, which end the chat quietly."""
    while True:
        try:
            yield click.prompt("我", prompt_suffix="> ", default="", show_default=False)
        except (click.Abort, EOFError):
            echo("")
            return


def run_chat(app: Flask, account: str, openid: str, lines: Any = None, echo: Any = click.echo,
             standin: Any = None) -> None:
    """The interactive loop (lines: an iterable of inputs for tests; None reads the terminal).

    `standin`: a running WeChatStandIn that WECHAT_API_BASE points at, to read sent messages back from.
    """
    settings = app.extensions["wxapp"].settings
    overrides = throwaway_overrides(settings, account)
    own_standin = None
    if standin is None and settings.wechat_api_base.rstrip("/") == DEFAULT_API_BASE:
        from .standin import WeChatStandIn

        standin = own_standin = WeChatStandIn().start()
        overrides["wechat_api_base"] = standin.base_url
    # A private queue: this session runs only its own jobs, never the instance's real ones.
    overrides["queue_name"] = f"chat-{secrets.token_hex(4)}"
    # The terminal is the conversation: the service's routine INFO lines (token fetched, knowledge base loaded)
    # would land between a question and its answer. Warnings and errors still show; LOG_LEVEL=DEBUG keeps all.
    root = logging.getLogger()
    root_level = root.level
    if settings.log_level == "INFO":
        overrides["log_level"] = "WARNING"
    from .. import create_app

    chat_app = create_app(replace(settings, **overrides))
    session = ChatSession(chat_app, account, openid, standin)
    name = "公众号" if account == "oa" else "小程序"
    echo(f"已连接{name}消息接口（{session.path}，{'安全模式' if session.acct.crypto else '明文模式'}"
         f"{'，临时 Token' if 'wechat_token' in overrides or 'wxa_token' in overrides else ''}"
         f"{'，本地模拟微信接口' if standin else ''}）。{HELP}")
    late_wait = chat_app.extensions["wxapp"].settings.webhook_deadline + 1.5
    try:
        source = lines if lines is not None else _terminal_lines(echo)
        for raw in source:
            line = (raw or "").strip()
            if not line:
                continue
            if line in ("/quit", "/exit", "/q"):
                break
            if line == "/help":
                echo(HELP)
                continue
            if line.startswith("/"):
                cmd, _, arg = line[1:].partition(" ")
                event = {"follow": "subscribe", "unfollow": "unsubscribe", "click": "CLICK",
                         "scan": "SCAN", "enter": "user_enter_tempsession"}.get(cmd)
                if event is None:
                    echo(f"不认识的命令 /{cmd}。{HELP}")
                    continue
                answers = session.send(event=event, event_key=arg.strip() or None, wait_late=0.5)
            else:
                answers = session.send(line, wait_late=0.5)
                if not answers:
                    answers = session.later(late_wait)
            for answer in answers or ["（没有回复）"]:
                echo(f"店小二> {answer}")
    finally:
        root.setLevel(root_level)
        if own_standin is not None:
            own_standin.stop()


def register_cli(app: Flask) -> None:
    @app.cli.command("chat")
    @click.option("--account", type=click.Choice(["oa", "wxa"]), default="oa", help="公众号（oa）或小程序（wxa）")
    @click.option("--openid", default="chat-cli-user", help="模拟用户的 openid")
    def chat_command(account: str, openid: str) -> None:
        """与数字店小二对话：消息经真实的消息接口（签名，配置了 EncodingAESKey 时加密），与线上一致。"""
        if not openid.strip():  # every message would come back as "［错误 400］" instead of an answer
            raise click.UsageError("模拟用户的 openid（--openid）不能为空")
        # Before the first line: without its tables (init-db not run yet) or Redis, every message was answered
        # "稍后再发一次" or "［错误 500］" with a traceback in the log; this stops with one line (cli.localise).
        from ..cli import _check_dependencies

        _check_dependencies()
        run_chat(current_app._get_current_object(), account, openid)  # type: ignore[attr-defined]
