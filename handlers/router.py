"""The chatbot router: rules by message type, event, event key, exact text, regex or a custom matcher.

First match wins, in registration order. A handler takes a `Context` and returns a str, a reply from
`handlers.replies`, or None (answer nothing). Middleware wraps every dispatch:
`def mw(ctx, call_next) -> reply`.
"""

from __future__ import annotations

import re
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

    @property
    def account(self) -> str:
        return self.msg.account

    @property
    def openid(self) -> str:
        return self.msg.source

    @property
    def text(self) -> str:
        """The stripped text of a text message ('' otherwise)."""
        return (self.msg.content or "").strip() if self.msg.msg_type == "text" else ""

    @property
    def state(self) -> ConversationState:
        """The user's conversation state (Redis, with a TTL), loaded on first use."""
        if self._state is None:
            from .state import ConversationState

            self._state = ConversationState(self.redis, self.account, self.openid)
        return self._state


@dataclass(frozen=True)
class Rule:
    name: str
    test: Callable[[Context], Any]
    handler: Handler


class Router:
    """Rules and middleware; `dispatch(ctx)` runs the chain and the first matching handler."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.middleware: list[Middleware] = []
        self.fallback: Handler | None = None

    # ----------------------------------------------------------------------------------- registration

    def add(self, name: str, test: Callable[[Context], Any], handler: Handler) -> Handler:
        self.rules.append(Rule(name, test, handler))
        return handler

    def _rule(self, name: str, test: Callable[[Context], Any]) -> Callable[[Handler], Handler]:
        def deco(handler: Handler) -> Handler:
            return self.add(name, test, handler)

        return deco

    def text(self, *texts: str) -> Callable[[Handler], Handler]:
        """Exact text (after stripping; ASCII case-insensitive)."""
        wanted = {t.strip().casefold() for t in texts}
        return self._rule(f"text:{'|'.join(texts)}", lambda c: c.text.casefold() in wanted and c.text != "")

    def regex(self, pattern: str | re.Pattern[str], flags: int = 0) -> Callable[[Handler], Handler]:
        """Regular expression searched in the text; ctx.match is the re.Match."""
        rx = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        return self._rule(f"regex:{rx.pattern}", lambda c: rx.search(c.text) if c.text else None)

    def msg_type(self, *types: str) -> Callable[[Handler], Handler]:
        """Message type: text, image, voice, video, shortvideo, location, link, file, miniprogrampage..."""
        wanted = set(types)
        return self._rule(f"type:{'|'.join(types)}", lambda c: c.msg.msg_type in wanted)

    def event(self, *events: str, key: str | None = None) -> Callable[[Handler], Handler]:
        """Event (lower-case, e.g. subscribe, unsubscribe, scan, location, click, view), optionally its key."""
        wanted = {e.lower() for e in events}

        def test(c: Context) -> bool:
            return c.msg.is_event and c.msg.event in wanted and (key is None or c.msg.event_key == key)

        return self._rule(f"event:{'|'.join(events)}:{key or ''}", test)

    def click(self, *keys: str) -> Callable[[Handler], Handler]:
        """A menu CLICK with one of these keys."""
        wanted = set(keys)
        return self._rule(f"click:{'|'.join(keys)}",
                          lambda c: c.msg.is_event and c.msg.event == "click" and c.msg.event_key in wanted)

    def match(self, fn: Matcher) -> Callable[[Handler], Handler]:
        """A custom matcher: any truthy result matches and is kept in ctx.match."""
        return self._rule(f"match:{getattr(fn, '__name__', 'fn')}", fn)

    def default(self, handler: Handler) -> Handler:
        """What runs when no rule matches."""
        self.fallback = handler
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

    def _route(self, ctx: Context) -> Reply | None:
        handler = self.resolve(ctx)
        return as_reply(handler(ctx)) if handler is not None else None

    def dispatch(self, ctx: Context) -> Reply | None:
        call: Callable[[Context], Reply | None] = self._route
        for mw in reversed(self.middleware):
            call = _wrap(mw, call)
        return call(ctx)


def _wrap(mw: Middleware, nxt: Callable[[Context], Reply | None]) -> Callable[[Context], Reply | None]:
    def run(ctx: Context) -> Reply | None:
        return as_reply(mw(ctx, nxt))

    return run
