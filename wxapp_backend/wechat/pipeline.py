"""The webhook pipeline: signature -> decrypt -> parse -> dedup -> router (inside the deadline) -> reply.

One `Pipeline` per application (app.extensions["wxapp_pipeline"]); the webhook views, the console chat
simulator and `flask chat` all go through `Pipeline.handle`.

Hot path (see docs/bench/webhook.md): one Redis round trip claims the message and reads everything the
middleware and the conversation matchers need (user cache, conversation state, rate counter); the answer is
then stored by a write nobody waits for (`Dedup.finish_nowait`). A rule with a fixed answer (greetings,
menu ...) is rendered before the claim and stored by the claim itself when the user turns out to be known,
unblocked, not in a flow and under the rate limit: one Redis call, no handler. A message whose route is
known to be quick (`Router.plan`: a cache hit for the user and a
rule marked fast, e.g. a greeting) runs in the request thread; anything else runs in the bounded pool so
that the deadline holds. Either way a reply produced after the deadline is never answered passively: the
push gets "success" and the reply goes by customer-service message. Also the small user service the chat needs
(`touch_user`): users are upserted by openid with a short Redis cache, so a chatty user costs no
database write per message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Flask, current_app, has_app_context
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handlers.middleware import rate_exempt, rate_key, rate_limit
from handlers.replies import Image, Many, News, Reply, Text, Transfer
from handlers.router import Context, Router
from handlers.state import state_key

from ..config import Settings
from . import jobs
from .crypto import (
    BadCiphertext,
    BadPayload,
    BadSignature,
    Crypto,
    PayloadTooLarge,
    WeChatEnvelopeError,
    check_signature,
    check_timestamp,
)
from .dedup import Claim, Commands, Dedup
from .messages import (
    _XML_ILLEGAL,
    Message,
    dedup_key,
    encrypted_field,
    normalise,
    parse_body,
    render_image_reply,
    render_news_reply,
    render_text_reply,
    truncate_utf8,
)

log = logging.getLogger(__name__)

SUCCESS = "success"
CRASH_TEXT = "抱歉，小二刚才开了个小差，请稍后再发一次试试～"
# A hand-over to a person exists only as the passive answer (transfer_customer_service): one worked out after the
# deadline cannot pass the conversation on, and its note ("正在为您转接…") would leave the user waiting for nobody.
LATE_TRANSFER_TEXT = "抱歉，小二刚才有点忙，没能为您转接人工客服。请再回复“人工”，马上为您转接～"
# How long a retry waits for the first try's answer before answering "success".
RETRY_WAIT = 0.8
# A processing record this long past the first try's deadline has no live try behind it (seconds). WeChat's
# retry comes about 5 s after the push and looks after its own wait (RETRY_WAIT): with the default 4 s deadline
# that is ~1.8 s past it, so a larger margin (or a deadline much above 4 s) would miss the retry it is for.
STALE_AFTER = 1.0
USER_CACHE_TTL = 60  # seconds at most (a block or unblock from staff drops the entries at once: auth.blocking)
# Each entry lives 80-100 % of USER_CACHE_TTL, so that users first seen together (a broadcast, a menu push)
# do not all need their database refresh in the same second a minute later.
USER_CACHE_SPREAD = USER_CACHE_TTL // 5
POOL_THREADS = 16
# A handler still running when the push was answered "success" sends its reply itself when it finishes; if its
# process dies first (kill -9, a crash, a deploy), WeChat sends no retry after that "success" and the reply would
# be lost. A job scheduled this long after the push runs the message again unless the handler finished (seconds).
LATE_WATCHDOG_AFTER = 300
LATE_MARK_TTL = 3600

OUTCOMES = Counter("wechat_webhook_messages_total", "Webhook pushes by outcome", ["account", "outcome"])
_OUTCOME_CHILDREN: dict[tuple[str, str], Any] = {}


def _count(account: str, outcome: str) -> None:
    """OUTCOMES.labels(account, outcome).inc() with the labelled child looked up once per process."""
    child = _OUTCOME_CHILDREN.get((account, outcome))
    if child is None:
        child = _OUTCOME_CHILDREN[(account, outcome)] = OUTCOMES.labels(account, outcome)
    child.inc()


class NotConfigured(WeChatEnvelopeError):
    """The account has no token (or no AES key for an encrypted push)."""

    status = 403
    default_code = "not_configured"
    default_message = "服务器未配置该微信账号的消息接入参数。"


class MissingParameter(WeChatEnvelopeError):
    """A query parameter WeChat always sends is missing."""

    status = 400
    default_code = "missing_parameter"

    def __init__(self, name: str) -> None:
        super().__init__(message_zh=f"缺少参数 {name}。")
        self.fields = {name: "必填"}


@dataclass(frozen=True)
class Account:
    """How one account's pushes are authenticated and answered."""

    name: str  # "oa" | "wxa"
    token: str
    appid: str
    crypto: Crypto | None
    fmt: str  # "xml" | "json"
    require_encryption: bool = False


def account_from_settings(settings: Settings, name: str) -> Account:
    if name == "oa":
        token, appid, keys, fmt = (settings.wechat_token, settings.wechat_appid,
                                   [settings.wechat_aes_key, settings.wechat_aes_key_previous], "xml")
    elif name == "wxa":
        token, appid, keys, fmt = (settings.wxa_token, settings.wxa_appid,
                                   [settings.wxa_aes_key, settings.wxa_aes_key_previous], settings.wxa_msg_format)
    else:
        raise ValueError(name)
    crypto = Crypto(token, keys, appid) if keys[0] else None
    # Plain mode's signature does not cover the body, so a key configured means safe or compatible pushes only,
    # unless WECHAT_REQUIRE_ENCRYPTION says otherwise (an account WeChat really has in plain mode).
    require = settings.wechat_require_encryption
    return Account(name, token, appid, crypto, fmt, crypto is not None if require is None else require)


@dataclass(frozen=True)
class Outcome:
    """The HTTP answer to a push."""

    body: str
    content_type: str = "text/plain; charset=utf-8"
    status: int = 200


_SUCCESS = Outcome(SUCCESS)


class Pending:
    """The rest of a push after its claim (`Pipeline.begin`): call it, once, to get the answer."""

    __slots__ = ("args", "run")

    def __init__(self, run, *args: Any) -> None:
        self.run, self.args = run, args

    def __call__(self) -> Outcome:
        return self.run(*self.args)


class LateReply(Exception):
    """The handler missed the deadline; its reply goes out through the customer-service API.

    `sends` carries the payloads when the caller is to enqueue them (an inline handler, after the dedup
    record); None for a pool handler, which enqueues its own when it finishes.
    """

    def __init__(self, sends: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.sends = sends


class _Slot:
    """Hand-over between the request thread and the handler thread, decided under one lock."""

    __slots__ = ("finished", "late", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished = False
        self.late = False


def _format_mismatch(acct: Account, body: bytes) -> BadPayload | None:
    """A push that is not the account's format but reads as the other one: the mini-program console's 数据格式 and
    WXA_MSG_FORMAT disagree. Refused all the same (400), under a code of its own so that the log says what to fix
    rather than “not JSON” for every message."""
    if acct.name != "wxa":  # the Official Account speaks XML only
        return None
    other = "xml" if acct.fmt == "json" else "json"
    try:
        parse_body(body, other)
    except (BadPayload, ValueError):
        return None
    return BadPayload(code="format_mismatch", message_zh=(
        f"收到的消息是 {other.upper()} 格式，而服务器按 {acct.fmt.upper()} 解析（WXA_MSG_FORMAT={acct.fmt}）："
        f"请让小程序后台“消息推送”的数据格式与 WXA_MSG_FORMAT 一致。"))


class Pipeline:
    """Everything between the HTTP request and the answer, for both accounts."""

    def __init__(self, app: Flask, router: Router, accounts: Mapping[str, Account] | None = None) -> None:
        state = app.extensions["wxapp"]
        self.app = app
        self.router = router
        self.settings: Settings = state.settings
        self.redis: redis.Redis = state.redis
        self.accounts = dict(accounts or {n: account_from_settings(self.settings, n) for n in ("oa", "wxa")})
        self.deadline = float(self.settings.webhook_deadline)
        self.dedup = Dedup(self.redis, processing_ttl=self.deadline + 5, done_ttl=300)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    # ------------------------------------------------------------------------------------ entry points

    def verify_url(self, account: str, args: Mapping[str, str]) -> str:
        """The GET check: echostr verbatim when the signature is right."""
        acct = self._account(account)
        for name in ("signature", "timestamp", "nonce", "echostr"):
            if not args.get(name):
                raise MissingParameter(name)
        if not check_signature(acct.token, args["signature"], args["timestamp"], args["nonce"]):
            raise BadSignature()
        return args["echostr"]

    def handle(self, account: str, args: Mapping[str, str], body: bytes, *,
               started: float | None = None, account_config: Account | None = None) -> Outcome:
        """Authenticate, decrypt, parse, dedup and answer one push.

        `account_config` replaces the configured account (the console simulator's throwaway token).
        """
        answer = self.begin(account, args, body, started=started, account_config=account_config)
        return answer if isinstance(answer, Outcome) else answer()

    def begin(self, account: str, args: Mapping[str, str], body: bytes, *,
              started: float | None = None, account_config: Account | None = None) -> Outcome | Pending:
        """`handle` as far as the claim: the answer when the claim settled it (a stored answer, a fixed answer
        stored by the claim, every refusal), else the rest to run (`Pending()`), which may wait for a handler or
        for a first try's answer and so belongs on a thread that may block (http_worker's inline pushes)."""
        started = time.monotonic() if started is None else started
        acct = account_config or self._account(account)
        msg, key_index, nonce = self._open(acct, args, body)
        return self._answer(acct, msg, key_index, nonce, started + self.deadline)

    # ------------------------------------------------------------------------------------ envelope

    def _account(self, name: str) -> Account:
        acct = self.accounts[name]
        if not acct.token:
            raise NotConfigured()
        return acct

    def _open(self, acct: Account, args: Mapping[str, str], body: bytes) -> tuple[Message, int | None, str]:
        timestamp, nonce = args.get("timestamp"), args.get("nonce")
        if not timestamp:
            raise MissingParameter("timestamp")
        if not nonce:
            raise MissingParameter("nonce")
        check_timestamp(timestamp, window_seconds=self.settings.webhook_timestamp_window)
        encrypted = (args.get("encrypt_type") or "").lower() == "aes"
        signature = args.get("signature")
        if not encrypted:
            if acct.require_encryption:
                raise BadSignature(code="encryption_required", message_zh="该账号只接受安全模式（加密）消息。")
            if not signature:
                raise MissingParameter("signature")
            if not check_signature(acct.token, signature, timestamp, nonce):
                raise BadSignature()
        elif signature is not None and not check_signature(acct.token, signature, timestamp, nonce):
            raise BadSignature()
        max_bytes = self.settings.webhook_max_body
        try:
            doc = parse_body(body, acct.fmt, max_bytes=max_bytes)
        except PayloadTooLarge:
            raise
        except BadPayload as exc:
            raise _format_mismatch(acct, body) or exc from None
        ciphertext = encrypted_field(doc)
        key_index: int | None = None
        if encrypted or ciphertext is not None:
            if acct.crypto is None:
                raise NotConfigured(message_zh="服务器未配置 EncodingAESKey，无法解密安全模式消息。")
            if ciphertext is None:
                raise BadCiphertext(message_zh="安全模式消息缺少 Encrypt 字段。")
            if not args.get("msg_signature"):
                raise MissingParameter("msg_signature")
            # Compatible mode carries plaintext too; only the ciphertext is covered by msg_signature.
            plain, key_index = acct.crypto.decrypt(ciphertext, args["msg_signature"], timestamp, nonce)
            doc = parse_body(plain, acct.fmt, max_bytes=max_bytes)
        elif acct.require_encryption:
            raise BadSignature(code="encryption_required", message_zh="该账号只接受安全模式（加密）消息。")
        msg = normalise(doc, acct.name)
        if not msg.source or not msg.msg_type:
            raise BadPayload(message_zh="微信消息缺少 FromUserName 或 MsgType。")
        return msg, key_index, nonce

    # ------------------------------------------------------------------------------------ answer

    def _answer(self, acct: Account, msg: Message, key_index: int | None, nonce: str,
                deadline: float) -> Outcome | Pending:
        # A reply that depends on the message alone is worked out first and stored with the claim.
        early = self._answer_early(acct, msg, key_index, nonce)
        # One round trip claims the message and reads/counts what the middleware needs for this user.
        claim, fetched = self.dedup.claim(dedup_key(msg, acct.appid or acct.name), lambda p: _prefetch(p, msg),
                                          **({} if early is None else early[1]))
        if claim.state == "answered":
            _count(acct.name, "answered")
            return early[0]
        return Pending(self._answer_rest, acct, msg, key_index, nonce, deadline, claim, fetched)

    def _answer_rest(self, acct: Account, msg: Message, key_index: int | None, nonce: str, deadline: float,
                     claim: Claim, fetched: list | None) -> Outcome:
        if claim.state != "new":
            retried = self._retry(acct, claim, deadline)
            if isinstance(retried, Outcome):
                return retried
            claim, fetched = retried, None  # the first try died: this one runs the message (reading for itself)
        if has_app_context() and current_app._get_current_object() is self.app:  # type: ignore[attr-defined]
            return self._answer_claimed(acct, msg, key_index, nonce, deadline, claim, fetched)
        # Handlers, middleware and jobs need this app's context (a stored answer did not). Not another app's:
        # `flask chat` posts from inside the instance app's context to its own app with a private queue.
        with self.app.app_context():
            return self._answer_claimed(acct, msg, key_index, nonce, deadline, claim, fetched)

    def _answer_claimed(self, acct: Account, msg: Message, key_index: int | None, nonce: str, deadline: float,
                        claim: Claim, fetched: list | None) -> Outcome:
        prefetched = None if fetched is None else {"user": fetched[0], "state": fetched[1],
                                                   "rate_count": fetched[2] if not rate_exempt(msg) else None}
        try:
            reply = self._run(msg, deadline, prefetched)
            # Rendered inside the try: a reply that cannot be rendered is a failed handler (released, the crash
            # text), never a 500 that leaves the record "processing" for WeChat's retries to be told "success".
            outcome, sends = self._render(acct, msg, reply, key_index, nonce)
        except LateReply as late:
            # Retries must not get the late reply passively (it is on its way by customer-service message).
            self.dedup.finish_nowait(claim, SUCCESS.encode())
            if late.sends is None:  # still running in the pool: if its process dies, the watchdog answers
                self._enqueue_watchdog(acct.name, msg)
            self.enqueue_sends(acct.name, msg, late.sends or [])  # after the record, as below
            _count(acct.name, "late")
            return _SUCCESS
        except Exception:
            log.exception("chat handler failed", extra={"account": acct.name, "msg_type": msg.msg_type,
                                                        "event": msg.event})
            self.dedup.release(claim)  # WeChat's retry (or the user's next try) runs it again
            _count(acct.name, "error")
            if acct.name == "oa" and not msg.is_event:
                return self._render(acct, msg, Text(CRASH_TEXT), key_index, nonce)[0]
            if not msg.is_event:  # the mini-program's chat takes no passive text, and "success" is never retried
                self.enqueue_sends(acct.name, msg, customer_payloads(acct.name, Text(CRASH_TEXT)))
            return _SUCCESS
        self.dedup.finish_nowait(claim, outcome.body.encode("utf-8"))
        # After the dedup record: a retry can no longer produce a second send.
        self.enqueue_sends(acct.name, msg, sends)
        _count(acct.name, "answered" if outcome is not _SUCCESS else "success")
        return outcome

    def _answer_early(self, acct: Account, msg: Message, key_index: int | None,
                      nonce: str) -> tuple[Outcome, dict[str, Any]] | None:
        """The fixed answer of the rule this message will meet (handlers/router.py), planned as for a known,
        unblocked user with no conversation state under the rate limit, with the claim's arguments that
        store it only if that is what the claim finds. No handler runs. None when there is no such answer."""
        exempt = rate_exempt(msg)
        ctx = self._context(msg, {"user": b"0:0", "state": None, "rate_count": None if exempt else 1})
        if not self.router.plan(ctx) or ctx.answer is None:
            return None
        outcome, sends = self._render(acct, msg, ctx.answer, key_index, nonce)
        if sends or outcome is _SUCCESS:  # a mini-program, or several messages: the usual way
            return None
        # Positions among _prefetch's results: user cache 1, state 2, rate counter 3 (when counted).
        return outcome, {"answer": outcome.body.encode("utf-8"),
                         "valid_if": (1, 2, 0 if exempt else 3, rate_limit(self.settings))}

    def _retry(self, acct: Account, claim: Claim, deadline: float) -> Outcome | Claim:
        """The stored answer for a retry; or, when the first try died without one, the claim this try takes over."""
        _count(acct.name, "retry")
        if claim.state == "processing":
            found = self.dedup.wait(claim.key, min(RETRY_WAIT, max(0.0, deadline - time.monotonic())))
            if found is not None and found.state == "processing":
                # A live first try records something by its deadline (its reply, or "success" with the reply on
                # its way by customer-service message). Still nothing well after it: it died with its process,
                # and WeChat sends no further retry after our "success", so this try runs the message.
                taken = self.dedup.take_over(claim.key, self.deadline + STALE_AFTER)
                if taken is not None:
                    log.warning("webhook retry takes over a message whose first try died",
                                extra={"account": acct.name})
                    return taken
            if found is None or found.state != "done":
                # Still running (or it failed and was released): the first try answers.
                return _SUCCESS
            claim = found
        body = (claim.body or b"").decode("utf-8")
        if body == SUCCESS or not body:
            return _SUCCESS
        return Outcome(body, _content_type(body))

    def _executor(self) -> ThreadPoolExecutor:
        # A pool created before a fork has no threads in the child: make one per process.
        if self._pool is None or self._pool_pid != os.getpid():
            with self._pool_lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="chat")
                    self._pool_pid = os.getpid()
        return self._pool

    def _run(self, msg: Message, deadline: float, prefetched: dict | None = None) -> Reply | None:
        """Run the router (inline when its route is known to be quick, else in the bounded pool); raise
        LateReply when it misses the deadline."""
        ctx = self._context(msg, prefetched)
        if self.router.plan(ctx):
            return self._run_inline(ctx, deadline)
        slot = _Slot()
        future = self._executor().submit(self._work, slot, ctx)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            with slot.lock:
                if not slot.finished:
                    slot.late = True
            if slot.late:
                log.warning("chat handler missed the deadline", extra={"account": msg.account,
                                                                       "msg_type": msg.msg_type})
                raise LateReply() from None
            return future.result()

    def _run_inline(self, ctx: Context, deadline: float) -> Reply | None:
        """A quick route in the request thread. The deadline still holds: a reply that comes too late
        (which a fast rule should never do) goes by customer-service message and the push gets success.
        Runs inside the app context `_answer` opened."""
        reply = self.router.dispatch(ctx)
        if time.monotonic() > deadline:
            msg = ctx.msg
            log.warning("chat handler missed the deadline", extra={"account": msg.account, "msg_type": msg.msg_type,
                                                                   "rule": ctx.extra.get("rule"), "inline": True})
            raise LateReply(late_payloads(msg.account, reply))
        return reply

    def _work(self, slot: _Slot, ctx: Context) -> Reply | None:
        msg = ctx.msg
        with self.app.app_context():
            error: Exception | None = None
            reply: Reply | None = None
            try:
                reply = self.router.dispatch(ctx)
            except Exception as exc:  # handed to the request thread, or logged when late
                error = exc
            with slot.lock:
                slot.finished = True
                late = slot.late
            if late:
                if not self.claim_late_answer(msg, "handler"):
                    log.warning("late chat handler finished after the watchdog answered",
                                extra={"account": msg.account, "msg_type": msg.msg_type})
                    return None
                if error is not None:
                    log.error("late chat handler failed", exc_info=error)
                    # The push was answered "success" and its retries are answered from that record: no retry
                    # runs the message again, so say what a failure in time says (by customer-service message).
                    if not msg.is_event:
                        self.enqueue_sends(msg.account, msg, customer_payloads(msg.account, Text(CRASH_TEXT)))
                elif reply is not None:
                    self.enqueue_sends(msg.account, msg, late_payloads(msg.account, reply))
                return None
            if error is not None:
                raise error
            return reply

    def _context(self, msg: Message, prefetched: dict | None) -> Context:
        ctx = Context(msg=msg, redis=self.redis, settings=self.settings)
        if prefetched is not None:
            ctx.extra["prefetched"] = prefetched
        return ctx

    def dispatch(self, msg: Message, prefetched: dict | None = None) -> Reply | None:
        """Run the router on one message (no deadline, no dedup): for jobs and tests."""
        return self.router.dispatch(self._context(msg, prefetched))

    # ------------------------------------------------------------------------------------ rendering

    def _render(self, acct: Account, msg: Message, reply: Reply | None, key_index: int | None,
                nonce: str) -> tuple[Outcome, list[dict[str, Any]]]:
        reply = solid(reply)
        if reply is None:
            return _SUCCESS, []
        first, rest = (reply.replies[0], list(reply.replies[1:])) if isinstance(reply, Many) else (reply, [])
        if acct.name == "wxa":
            # A mini-program chat takes no passive content reply: everything goes by customer-service API. The one
            # passive answer it takes hands the conversation to the web customer-service tool (网页版客服工具).
            if not isinstance(first, Transfer):
                return _SUCCESS, customer_payloads("wxa", reply)
            sends = customer_payloads("wxa", reply)  # the transfer's note first, then the rest
            if acct.fmt == "json":
                body = _transfer_json(msg)
                if key_index is not None and acct.crypto is not None:
                    body = acct.crypto.encrypt_json(body, key_index, nonce=nonce)
                return Outcome(body, "application/json; charset=utf-8"), sends
            body = _transfer_xml(msg)
            if key_index is not None and acct.crypto is not None:
                body = acct.crypto.encrypt_xml(body, key_index, nonce=nonce)
            return Outcome(body, "application/xml; charset=utf-8"), sends
        sends = [p for r in rest for p in customer_payloads("oa", r)]
        if isinstance(first, Transfer):
            body = _transfer_xml(msg)
            if first.note:
                sends.insert(0, _text_payload(first.note))
        elif isinstance(first, Text):
            body = render_text_reply(msg, first.text)
        elif isinstance(first, News):
            body = render_news_reply(msg, [{"title": a.title, "description": a.description, "url": a.url,
                                            "pic_url": a.pic_url} for a in first.articles])
        elif isinstance(first, Image):
            body = render_image_reply(msg, first.media_id)
        else:
            return _SUCCESS, sends
        if key_index is not None and acct.crypto is not None:
            body = acct.crypto.encrypt_xml(body, key_index, nonce=nonce)
        return Outcome(body, "application/xml; charset=utf-8"), sends

    def claim_late_answer(self, msg: Message, who: str) -> bool:
        """Whether `who` (the late handler, or the watchdog job) is the one to send the reply of a push answered
        "success" before its handler finished: the first to ask, once."""
        try:
            return bool(self.redis.set(late_mark_key(msg), who, nx=True, ex=LATE_MARK_TTL))
        except redis.RedisError:
            return who == "handler"  # without Redis the handler that finished answers; the watchdog cannot know

    def _enqueue_watchdog(self, account: str, msg: Message) -> None:
        from ..queue import enqueue

        try:
            enqueue(jobs.finish_late_reply, account, msg, job_id=f"late-{late_mark_key(msg).rsplit(':', 1)[1]}",
                    delay=LATE_WATCHDOG_AFTER, timeout=120)
        except Exception:  # the push is answered either way; only the crash insurance is missing
            log.exception("could not schedule the late-reply watchdog", extra={"account": account})

    def enqueue_sends(self, account: str, msg: Message, payloads: list[dict[str, Any]]) -> None:
        if not payloads:
            return
        from ..queue import enqueue

        # The message's own fields are WeChat's text, not ours: they go into the id as a digest (an RQ job id
        # must not contain ":", and a Redis key should not carry arbitrary bytes).
        origin = f"{msg.source}\0{msg.msg_id or ''}\0{msg.create_time}\0{msg.event or msg.msg_type}"
        base = hashlib.sha1(origin.encode("utf-8", "surrogatepass")).hexdigest()[:20] + "-" + secrets.token_hex(4)
        for i, payload in enumerate(payloads):
            send_id = f"{account}-{base}-{i}"
            enqueue(jobs.send_customer_message, account, msg.source, payload, send_id, job_id=f"kf-{send_id}",
                    retries=3, timeout=60)


def late_mark_key(msg: Message) -> str:
    """Redis key saying who sends a late reply (the handler or the watchdog); the message's own fields as a digest."""
    origin = f"{msg.account}\0{msg.source}\0{msg.msg_id or ''}\0{msg.create_time}\0{msg.event or msg.msg_type}"
    return "wx:late:" + hashlib.sha1(origin.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _content_type(body: str) -> str:
    if body.startswith("<"):
        return "application/xml; charset=utf-8"
    if body.startswith("{"):
        return "application/json; charset=utf-8"
    return "text/plain; charset=utf-8"


def _transfer_xml(msg: Message) -> str:
    return ("<xml>"
            f"<ToUserName><![CDATA[{msg.source}]]></ToUserName>"
            f"<FromUserName><![CDATA[{msg.target}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime>"
            "<MsgType><![CDATA[transfer_customer_service]]></MsgType>"
            "</xml>")


def _transfer_json(msg: Message) -> str:
    return json.dumps({"ToUserName": msg.source, "FromUserName": msg.target, "CreateTime": int(time.time()),
                       "MsgType": "transfer_customer_service"}, ensure_ascii=False, separators=(",", ":"))


def _text_payload(text: str) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": truncate_utf8(text, 2048)}}


def solid(reply: Reply | None) -> Reply | None:
    """`reply` without its empty parts (a blank text, 图文 without articles, an image without media id); None when
    nothing is left. An empty reply is no reply ("success"): WeChat takes no empty passive answer nor an empty
    customer-service message, and the renderer refuses one."""
    if isinstance(reply, Text):
        text = reply.text
        if not text or text.isspace():
            return None
        # The renderer drops the characters XML forbids, so a text of nothing else ("\x00") would go out empty.
        # Only a text whose first non-blank character is one of them can be such: the common reply is not
        # cleaned twice.
        if _XML_ILLEGAL.match(text.lstrip()) and not _XML_ILLEGAL.sub("", text).strip():
            return None
        return reply
    if isinstance(reply, Many):
        parts = tuple(p for r in reply.replies for p in _parts(solid(r)))
        return None if not parts else parts[0] if len(parts) == 1 else Many(parts)
    if isinstance(reply, News):
        return reply if reply.articles else None
    if isinstance(reply, Image):
        return reply if reply.media_id else None
    return reply


def _parts(reply: Reply | None) -> tuple[Reply, ...]:
    return () if reply is None else reply.replies if isinstance(reply, Many) else (reply,)


def late_payloads(account: str, reply: Reply | None) -> list[dict[str, Any]]:
    """The customer-service messages for a reply that missed the deadline: a hand-over to a person (which only a
    passive answer can make) becomes the advice to ask again."""
    if isinstance(reply, Many):
        return [p for r in reply.replies for p in late_payloads(account, r)]
    if isinstance(reply, Transfer):
        return [_text_payload(LATE_TRANSFER_TEXT)]
    return customer_payloads(account, reply)


def customer_payloads(account: str, reply: Reply | None) -> list[dict[str, Any]]:
    """The customer-service message bodies (without touser) that carry `reply`."""
    reply = solid(reply)
    if reply is None:
        return []
    if isinstance(reply, Many):
        return [p for r in reply.replies for p in customer_payloads(account, r)]
    if isinstance(reply, Text):
        return [_text_payload(reply.text)]
    if isinstance(reply, Transfer):
        return [_text_payload(reply.note)] if reply.note else []
    if isinstance(reply, Image):
        return [{"msgtype": "image", "image": {"media_id": reply.media_id}}]
    if isinstance(reply, News):
        if not reply.articles:
            return []
        a = reply.articles[0]
        if account == "wxa":
            return [{"msgtype": "link", "link": {"title": a.title, "description": a.description, "url": a.url,
                                                  "thumb_url": a.pic_url}}]
        return [{"msgtype": "news", "news": {"articles": [{"title": a.title, "description": a.description,
                                                            "url": a.url, "picurl": a.pic_url}]}}]
    return []


# ---------------------------------------------------------------------------------------------- users


def user_cache_key(account: str, openid: str) -> str:
    return f"wx:user:{account}:{openid}"


# Who an openid was when the database last said (“user id:blocked”), kept long: with the database away for a moment
# a message still knows its writer (the turn it is logged under, their last blocked state), as the short cache did.
USER_KNOWN_TTL = 30 * 24 * 3600


def user_known_key(account: str, openid: str) -> str:
    return f"wx:user_known:{account}:{openid}"


# The users staff have blocked (auth.blocking), kept without expiry: field "<account>:<openid>" for each openid of
# theirs, "user:<id>" for each row, value the block's time (ms). The database stays the truth; this copy refuses a
# blocked writer with the database away even when their user_known entry has expired, and closes the moment between
# a message's database read and its cache write in which a block committed (_REMEMBER_USER).
BLOCKED_KEY = "wx:blocked"
# How much older than a message's database read a block may be and still be taken as committed during that read
# (clocks of the web machines apart): beyond it, a database that says "not blocked" is right and the field is stale.
BLOCK_READ_MARGIN_MS = 5000


def blocked_field(account: str, openid: str) -> str:
    return f"{account}:{openid}"


# touch_user's cache write, after its database read: KEYS cache, user_known, BLOCKED_KEY; ARGV user id, blocked (0|1)
# as the database said, the two TTLs, the openid's field, when the read began (ms), the margin. A block committed
# after that read began (its field newer) wins over the read, so the cache cannot say "not blocked" for a minute
# after a block; a block the hash missed (Redis away at the time) is put back; a field older than the read that
# the database contradicts (an unblock whose HDEL was lost) goes. Returns the blocked flag written.
_REMEMBER_USER = """
local blocked = ARGV[2]
local at = redis.call('HGET', KEYS[3], ARGV[5])
if blocked == '1' then
  if not at then redis.call('HSET', KEYS[3], ARGV[5], ARGV[6]) end
elseif at then
  if tonumber(at) >= tonumber(ARGV[6]) - tonumber(ARGV[7]) then blocked = '1'
  else redis.call('HDEL', KEYS[3], ARGV[5]) end
end
local value = ARGV[1] .. ':' .. blocked
redis.call('SET', KEYS[1], value, 'EX', ARGV[3])
redis.call('SET', KEYS[2], value, 'EX', ARGV[4])
return blocked
"""


def _prefetch(pipe: Commands, msg: Message) -> None:
    """Commands riding on the dedup claim, in this order: user cache, conversation state, then (unless the
    message is exempt) rate counter and its expiry, then the customer-service window."""
    pipe.get(user_cache_key(msg.account, msg.source))
    pipe.get(state_key(msg.account, msg.source))
    if not rate_exempt(msg):
        key = rate_key(msg.account, msg.source)
        pipe.incr_new(key)  # WeChat's retries of a slow answer are one message, not three
        pipe.expire(key, 120)
    kind = _window_kind(msg.event, msg.is_event)
    if kind:
        jobs.open_window(pipe, msg.account, msg.source, kind=kind)


def _window_kind(msg_event: str | None, is_event: bool) -> str | None:
    if not is_event:
        return "message"
    return "event" if msg_event in jobs.WINDOW_EVENTS else None


def touch_user(r: redis.Redis, account: str, openid: str, *, followed: bool | None = None,
               at: int | None = None, window: str | None = "auto", event: str | None = None,
               is_event: bool = False, prefetched: dict | None = None) -> tuple[int | None, bool]:
    """Upsert the user behind an openid; returns (user id, blocked). Cached in Redis for at most
    USER_CACHE_TTL s.

    Follow/unfollow always reach the database, in the order the user did them (`jobs.note_follow`); with it away
    they are queued (`_defer_follow`) and the user last known is returned, as for a message. Also opens the
    customer-service window, unless the webhook already did both reads in its first round trip (`prefetched`).
    """
    cache_key = user_cache_key(account, openid)
    if prefetched is not None:
        cached = prefetched.get("user")
    else:
        kind = _window_kind(event, is_event) if window == "auto" else window
        pipe = r.pipeline(transaction=False)
        pipe.get(cache_key)
        if kind:
            jobs.open_window(pipe, account, openid, kind=kind)
        cached = pipe.execute()[0]
    if cached and followed is None:
        uid, _, blocked = cached.decode().partition(":")
        return int(uid), blocked == "1"
    from sqlalchemy.orm.exc import StaleDataError

    from ..db import DB_AWAY, session_scope

    when = datetime.fromtimestamp(at, UTC) if at else datetime.now(UTC)
    read_ms = int(time.time() * 1000)  # before the read: a block committed after this may not be in it
    pushed = followed
    if followed is not None:
        followed = _latest_follow(r, account, openid, followed, int(when.timestamp()))
    for attempt in range(2):
        try:
            with session_scope() as s:
                user_id, blocked = upsert_chat_user(
                    s, account=account, openid=openid, followed=followed, at=when,
                    message=jobs.refreshes_last_message(account, event, is_event))
            break
        except StaleDataError:  # the row was merged into the user's mini-program row meanwhile: read again
            if attempt:
                raise
        except DB_AWAY as exc:
            if followed is not None:  # the follow's welcome goes out all the same; the follow is recorded later
                _defer_follow(r, account, openid, pushed, int(when.timestamp()), exc)
            else:
                # A message: answered all the same (the knowledge base is in memory), as the writer last known; its
                # last_message_at is refreshed by the next message with the database back.
                log.warning("chat user not refreshed: database away", exc_info=True, extra={"account": account})
            return _last_known(r, account, openid)
    written = r.register_script(_REMEMBER_USER)(
        keys=[cache_key, user_known_key(account, openid), BLOCKED_KEY],
        args=[user_id, int(blocked), USER_CACHE_TTL - secrets.randbelow(USER_CACHE_SPREAD + 1), USER_KNOWN_TTL,
              blocked_field(account, openid), read_ms, BLOCK_READ_MARGIN_MS])
    return user_id, written in (b"1", "1", 1)


def _last_known(r: redis.Redis, account: str, openid: str) -> tuple[int | None, bool]:
    """The writer as last known, with the database away: user_known's “id:blocked”, and blocked as well when staff
    have blocked the openid (BLOCKED_KEY), which outlives an expired user_known (then the id is unknown: None)."""
    try:
        pipe = r.pipeline(transaction=False)
        pipe.get(user_known_key(account, openid))
        pipe.hexists(BLOCKED_KEY, blocked_field(account, openid))
        known, listed = pipe.execute()
    except redis.RedisError:
        known, listed = None, False
    if not known:
        return None, bool(listed)
    uid, _, blocked_flag = known.decode().partition(":")
    return int(uid), blocked_flag == "1" or bool(listed)


def _latest_follow(r: redis.Redis, account: str, openid: str, followed: bool, at: int) -> bool:
    """Note this follow / unfollow (`jobs.note_follow`); the state to write: this one's, or a later one's already
    noted (this push came late, its retry after a slow answer). Redis refusing: this one's."""
    try:
        return jobs.note_follow(r, account, openid, followed, at)[1]
    except redis.RedisError:
        log.warning("follow not noted in Redis", exc_info=True, extra={"account": account, "followed": followed})
        return followed


def _defer_follow(r: redis.Redis, account: str, openid: str, followed: bool, at: int, away: Exception) -> None:
    """A follow / unfollow with the database away (a restart, connection refused): queued for
    `jobs.record_follow_later` (RQ, tried again for some minutes), so that WeChat's retries, which the crash reply
    made, do not end with it lost. Were Redis away too, the warning says what to record."""
    from ..queue import enqueue

    what = {"account": account, "openid": openid, "followed": followed, "at": at}
    try:
        enqueue("wxapp_backend.wechat.jobs.record_follow_later", account, openid, followed, at,
                retries=jobs.FOLLOW_RETRIES)
    except redis.RedisError:
        log.warning("follow/unfollow not recorded: database and queue away (%s)", type(away).__name__,
                    exc_info=True, extra=what)
        return
    log.warning("follow/unfollow queued: database away (%s)", type(away).__name__, extra=what)


def upsert_chat_user(session, *, account: str, openid: str, followed: bool | None = None,
                     at: datetime | None = None, message: bool = True) -> tuple[int, bool]:
    """Create or refresh the user who wrote to an account; sets last_message_at and, when given, followed.

    Official Account users with no mini-program login get the placeholder openid "oa:<oa_openid>" (the
    users.openid column is the mini-program openid and is required). `message=False` leaves last_message_at
    alone: for every event that opens no 48-hour customer-service window (`wechat.jobs.refreshes_last_message`:
    any mini-program event; an Official Account's LOCATION report, VIEW menu link, unsubscribe ...), because
    notices restore that window from last_message_at and WeChat would refuse the send (45015).
    """
    from ..auth.linking import queue_link
    from ..auth.models import User

    column = User.oa_openid if account == "oa" else User.openid
    when = at or datetime.now(UTC)
    created = False
    for _ in range(2):
        user = session.scalar(select(User).where(column == openid))
        if user is None:
            try:
                with session.begin_nested():
                    user = User(openid=f"oa:{openid}" if account == "oa" else openid,
                                oa_openid=openid if account == "oa" else None)
                    session.add(user)
                created = True
            except IntegrityError:  # another worker created it just now
                continue
        break
    else:
        user = session.scalar(select(User).where(column == openid))
    if message:
        user.last_message_at = when
    if followed is not None and account == "oa":
        user.followed = followed
    session.flush()
    if account == "oa":
        queue_link(session, user, created=created, followed=followed)
    return user.id, bool(user.blocked)
