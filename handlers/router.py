"""The chatbot router: rules by message type, event, event key, exact text, regex or a custom matcher.

First match wins, in registration order. A handler takes a `Context` and returns a str, a reply from
`handlers.replies`, or None (answer nothing). Middleware wraps every dispatch:
`def mw(ctx, call_next) -> reply`.

Inline dispatch: the webhook normally runs the router in a thread pool so that a slow handler cannot hold the
answer past WeChat's deadline. A message whose whole path is known to be quick runs in the request thread
instead (`Router.plan`): every middleware says it is quick for this message (`mw.inline`, True or a
function of the context), every rule test tried before the winner is cheap (the built-in tests are; a custom
`match(fn, cheap=True)` promises to read only the message and `ctx.state`), and the winning rule was
registered with `fast=True` (no database, no network: it answers from the message and `ctx.state`).

Fixed answers: a rule registered with `answer=` (e.g. `router.text("你好", answer=Text("您好！"))`) always
gives that reply. The webhook may store it with its claim of the message, before any handler runs, valid
only if the claim finds what the plan assumed: a known, unblocked user, no conversation state and the rate
limit not reached (`Router.plan` sets `ctx.answer`). Otherwise the message goes the usual way.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .replies import Reply, as_reply

if TYPE_CHECKING:
    import redis

    from wxapp_backend.wechat.messages import Message

    from .state import ConversationState

Handler = Callable[["Context"], Any]
Matcher = Callable[["Context"], Any]
Middleware = Callable[["Context", Callable[["Context"], "Reply | None"]], "Reply | None"]


_UNRESOLVED = object()
_PUNCT = " 。，、！？!?,.～~…"


# “我的诉求 please”, “菜单 pls”, “Please 菜单”: English politeness around a command (it went to the knowledge base).
_POLITE = re.compile(r"^(?:please|pls|plz)(?![A-Za-z])[\s,，]*|[\s,，]*(?<![A-Za-z])(?:please|pls|plz)$", re.IGNORECASE)


def command_word(text: str) -> str:
    """A short text as a command word: full-width folded, in simplified characters (“菜單” is 菜单), case-folded,
    without the punctuation around it (“我要反映！”, “菜单。”) nor an English “please” (“我的诉求 please”); punctuation
    alone (“？”, a menu word) stays."""
    t = to_simplified(unicodedata.normalize("NFKC", text).strip())
    t = t.strip(_PUNCT) or t
    return (_POLITE.sub("", t).strip(_PUNCT) or t).casefold()


def to_simplified(text: str) -> str:
    """Traditional characters as simplified ones (the knowledge base's table), as 繁體 users type commands."""
    return text.translate(_t2s())


@functools.cache
def _t2s() -> dict[int, str]:
    from knowledge.analysis import load_t2s

    return load_t2s()


@dataclass
class Context:
    """One inbound message on its way through the router."""

    msg: Message
    redis: redis.Redis
    settings: Any = None
    user_id: int | None = None
    blocked: bool = False
    match: Any = None  # what the winning rule matched (a re.Match for regex rules)
    extra: dict[str, Any] = field(default_factory=dict)
    _state: ConversationState | None = None
    _resolved: Any = field(default=_UNRESOLVED, repr=False)  # the handler, when Router.plan resolved it
    answer: Reply | None = None  # set by Router.plan when the resolved rule has a fixed answer
    _text: tuple[Any, str] | None = field(default=None, repr=False, compare=False)

    @property
    def account(self) -> str:
        return self.msg.account

    @property
    def openid(self) -> str:
        return self.msg.source

    @property
    def text(self) -> str:
        """The stripped text of a text message ('' otherwise)."""
        msg = self.msg
        cached = self._text
        if cached is not None and cached[0] is msg:  # every rule test asks; work it out once per message
            return cached[1]
        text = (msg.content or "").strip() if msg.msg_type == "text" else ""
        self._text = (msg, text)
        return text

    @property
    def state(self) -> ConversationState:
        """The user's conversation state (Redis, with a TTL), loaded on first use."""
        if self._state is None:
            from .state import ConversationState

            # The webhook reads the state in its first Redis round trip (see pipeline._prefetch).
            prefetched = self.extra.get("prefetched") or {}
            if "state" in prefetched:
                self._state = ConversationState(self.redis, self.account, self.openid,
                                                snapshot=prefetched["state"])
            else:
                self._state = ConversationState(self.redis, self.account, self.openid)
        return self._state

    @property
    def planned(self) -> bool:
        """Whether `Router.plan` resolved a quick route for this message (it runs in the request thread)."""
        return self._resolved is not _UNRESOLVED

    def restate(self, raw: Any) -> None:
        """The state as read again under the user's step lock (`raw`, or handlers.state._NO_SNAPSHOT to read it on
        use): it replaces what the webhook's claim read, and the rules are tried again on it (the route found on
        the old state may be the wrong one: a draft opened meanwhile)."""
        from .state import ConversationState

        self._state = ConversationState(self.redis, self.account, self.openid, snapshot=raw)
        self._resolved = _UNRESOLVED
        self.match = None
        self.answer = None


@dataclass(frozen=True)
class Rule:
    name: str
    test: Callable[[Context], Any]
    handler: Handler
    fast: bool = False  # the handler answers from the message and ctx.state only (may run inline)
    cheap: bool = True  # the test reads only the message and ctx.state (may run in the request thread)
    answer: Reply | None = None  # the fixed reply of a rule registered with answer=
    pure: bool = False  # with no conversation state, the test depends only on the message's routing fields


def inline_ok(mw: Any, ctx: Context) -> bool:
    """Whether middleware `mw` is quick for this message (its `inline` attribute: bool or fn(ctx))."""
    flag = getattr(mw, "inline", False)
    return bool(flag(ctx) if callable(flag) else flag)


class _Rules(list):
    """The router's rule list; every change bumps `version` (remembered plans are valid for one version)."""

    version = 0


def _bumps(name: str) -> Callable[..., Any]:
    method = getattr(list, name)

    def changed(self: _Rules, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        self.version += 1
        return result

    changed.__name__ = name
    return changed


for _name in ("append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "__setitem__",
              "__delitem__", "__iadd__", "__imul__"):
    setattr(_Rules, _name, _bumps(_name))


class Router:
    """Rules and middleware; `dispatch(ctx)` runs the chain and the first matching handler."""

    def __init__(self) -> None:
        self.rules: list[Rule] = _Rules()
        self.middleware: list[Middleware] = []
        self.fallback: Handler | None = None
        self.fallback_fast = False
        self._chain: tuple[tuple[Middleware, ...], Callable[[Context], Reply | None]] | None = None
        # Router.plan's outcome per message (routing fields) for users with no conversation state: the index
        # of the winning rule (-1: the fallback), or None (not quick). Valid for this list of rules only.
        self._plans: dict[tuple, int | None] = {}
        self._plans_for: tuple[Any, int, Handler | None, bool] = (None, -1, None, False)

    # ----------------------------------------------------------------------------------- registration

    def add(self, name: str, test: Callable[[Context], Any], handler: Handler, *, fast: bool = False,
            cheap: bool = True, pure: bool = False) -> Handler:
        self.rules.append(Rule(name, test, handler, fast, cheap, pure=pure))
        return handler

    def _rule(self, name: str, test: Callable[[Context], Any], fast: bool = False,
              cheap: bool = True, answer: Reply | None = None, pure: bool = True) -> Any:
        if answer is not None:  # a fixed answer: registered now, no handler to decorate
            reply = as_reply(answer)
            self.rules.append(Rule(name, test, lambda ctx: reply, True, cheap, reply, pure))
            return None

        def deco(handler: Handler) -> Handler:
            return self.add(name, test, handler, fast=fast, cheap=cheap, pure=pure)

        return deco

    def text(self, *texts: str, fast: bool = False, answer: Reply | str | None = None) -> Any:
        """Exact text (after stripping spaces and the punctuation around it: “我要反映！” is 我要反映; full-width
        folded; ASCII case-insensitive). With `answer=`, a fixed reply (no decorator)."""
        wanted = frozenset(command_word(t) for t in texts)
        longest = max((len(t) for t in texts), default=0) + 8  # room for the punctuation around it

        def test(c: Context) -> bool:
            t = c.text
            return t != "" and len(t) <= longest and command_word(t) in wanted

        return self._rule(f"text:{'|'.join(texts)}", test, fast, answer=answer)

    def regex(self, pattern: str | re.Pattern[str], flags: int = 0, *, fast: bool = False
              ) -> Callable[[Handler], Handler]:
        """Regular expression searched in the text; ctx.match is the re.Match."""
        rx = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        return self._rule(f"regex:{rx.pattern}", lambda c: rx.search(c.text) if c.text else None, fast)

    def msg_type(self, *types: str, fast: bool = False, answer: Reply | str | None = None) -> Any:
        """Message type: text, image, voice, video, shortvideo, location, link, file, miniprogrampage...
        With `answer=`, a fixed reply (no decorator)."""
        wanted = frozenset(types)
        return self._rule(f"type:{'|'.join(types)}", lambda c: c.msg.msg_type in wanted, fast, answer=answer)

    def event(self, *events: str, key: str | None = None, fast: bool = False,
              answer: Reply | str | None = None) -> Any:
        """Event (lower-case, e.g. subscribe, unsubscribe, scan, location, click, view), optionally its key.
        With `answer=`, a fixed reply (no decorator)."""
        wanted = frozenset(e.lower() for e in events)

        def test(c: Context) -> bool:
            return c.msg.is_event and c.msg.event in wanted and (key is None or c.msg.event_key == key)

        return self._rule(f"event:{'|'.join(events)}:{key or ''}", test, fast, answer=answer)

    def click(self, *keys: str, fast: bool = False) -> Callable[[Handler], Handler]:
        """A menu CLICK with one of these keys."""
        wanted = frozenset(keys)
        return self._rule(f"click:{'|'.join(keys)}",
                          lambda c: c.msg.is_event and c.msg.event == "click" and c.msg.event_key in wanted, fast)

    def match(self, fn: Matcher, *, fast: bool = False, cheap: bool = False,
              pure: bool = False) -> Callable[[Handler], Handler]:
        """A custom matcher: any truthy result matches and is kept in ctx.match.

        `cheap=True` promises that `fn` reads only the message and `ctx.state` (so it may be tried in the
        request thread); `fast=True` that the handler does too (see the module notes on inline dispatch);
        `pure=True` that, for a user with no conversation state, whether it matches depends only on the
        message's type, text, event and event key (so `plan` may remember the outcome, as for the built-in
        rules).
        """
        return self._rule(f"match:{getattr(fn, '__name__', 'fn')}", fn, fast, cheap, pure=pure and cheap)

    def default(self, handler: Handler | None = None, *, fast: bool = False) -> Any:
        """What runs when no rule matches (`@router.default` or `@router.default(fast=True)`)."""
        if handler is None:
            def deco(h: Handler) -> Handler:
                return self.default(h, fast=fast)

            return deco
        self.fallback = handler
        self.fallback_fast = fast
        return handler

    def use(self, mw: Middleware) -> Middleware:
        """Append a middleware (outermost first)."""
        self.middleware.append(mw)
        return mw

    # ----------------------------------------------------------------------------------- dispatch

    def resolve(self, ctx: Context) -> Handler | None:
        for rule in self.rules:
            found = rule.test(ctx)
            if found:
                ctx.match = found
                ctx.extra["rule"] = rule.name
                return rule.handler
        ctx.extra["rule"] = "default"
        return self.fallback

    def plan(self, ctx: Context) -> bool:
        """True when `dispatch(ctx)` is known to be quick, so it may run in the request thread.

        Tries the rules like `resolve` (stopping at the first test that is not cheap) and keeps the
        resolution in ctx, so `dispatch` does not test the rules again. For a user with no conversation
        state the outcome of a short message is remembered when every rule tried was pure; the next such
        message only runs the winning rule's test again (for ctx.match).
        """
        if not all(inline_ok(mw, ctx) for mw in self.middleware):
            return False
        key = _plan_key(ctx)
        if key is not None:
            found = self._plans.get(key, _UNRESOLVED) if self._plans_valid() else _UNRESOLVED
            if found is None:
                return False
            if found is not _UNRESOLVED:
                if found < 0:
                    return self._take_fallback(ctx)
                rule = self.rules[found]
                matched = rule.test(ctx)
                if matched:
                    return self._take(ctx, rule, matched)
        pure = True
        for index, rule in enumerate(self.rules):
            if not rule.cheap:
                return self._remember(key, pure, None)
            found = rule.test(ctx)
            if found:
                if not rule.fast:
                    return self._remember(key, pure, None)
                self._remember(key, pure, index)
                return self._take(ctx, rule, found)
            pure = pure and rule.pure
        if not self.fallback_fast:
            return self._remember(key, pure, None)
        self._remember(key, pure, -1)
        return self._take_fallback(ctx)

    @staticmethod
    def _take(ctx: Context, rule: Rule, found: Any) -> bool:
        ctx.match = found
        ctx.extra["rule"] = rule.name
        ctx._resolved = rule.handler
        ctx.answer = rule.answer
        return True

    def _take_fallback(self, ctx: Context) -> bool:
        if not self.fallback_fast:
            return False
        ctx.extra["rule"] = "default"
        ctx._resolved = self.fallback
        return True

    def _plans_valid(self) -> bool:
        rules = self.rules
        now = (rules, getattr(rules, "version", None), self.fallback, self.fallback_fast)
        if now[1] is None or self._plans_for != now:  # rules changed or a new fallback: forget every outcome
            self._plans = {}
            self._plans_for = now
            return False
        return True

    def _remember(self, key: tuple | None, pure: bool, outcome: int | None) -> bool:
        """Keep `outcome` (a rule index, -1 for the fallback, None: not quick) when every rule tried before
        it was pure; returns False (for the callers that answer "not quick")."""
        if key is not None and pure:
            if len(self._plans) >= _MAX_PLANS:
                self._plans = {}
            self._plans_valid()
            self._plans[key] = outcome
        return False

    def _route(self, ctx: Context) -> Reply | None:
        handler = ctx._resolved if ctx._resolved is not _UNRESOLVED else self.resolve(ctx)
        return as_reply(handler(ctx)) if handler is not None else None

    def dispatch(self, ctx: Context) -> Reply | None:
        ctx.extra["router"] = self  # a rule that steps aside for another one's answer resolves in the whole router
        # The middleware chain is built once (and again only when the middleware list changes).
        middleware = tuple(self.middleware)
        chain = self._chain
        if chain is None or chain[0] != middleware:
            call: Callable[[Context], Reply | None] = self._route
            for mw in reversed(middleware):
                call = _wrap(mw, call)
            chain = self._chain = (middleware, call)
        return chain[1](ctx)


_MAX_PLANS = 4096  # remembered plan outcomes per router (short messages only)
_PLAN_TEXT_MAX = 32


def _plan_key(ctx: Context) -> tuple | None:
    """The routing fields of a message from a user with no conversation state, or None (not remembered)."""
    prefetched = ctx.extra.get("prefetched")
    if not prefetched or "state" not in prefetched or prefetched["state"] is not None or ctx._state is not None:
        return None
    msg = ctx.msg
    text = ctx.text
    if len(text) > _PLAN_TEXT_MAX:
        return None
    return (msg.msg_type, msg.is_event, msg.event, msg.event_key, text)


def _wrap(mw: Middleware, nxt: Callable[[Context], Reply | None]) -> Callable[[Context], Reply | None]:
    def run(ctx: Context) -> Reply | None:
        return as_reply(mw(ctx, nxt))

    return run
