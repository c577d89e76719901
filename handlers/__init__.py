"""The chatbot: `router` (rules + middleware), conversation state and the default handlers.

Plug in an intent by registering on the router before the generic defaults::

    from handlers import router, Context, replies

    @router.text("我要反映")
    def appeal(ctx: Context):
        ctx.state.merge(flow="appeal", step="describe")
        return "请简单描述您遇到的问题。"

Rules are tried in registration order; `handlers.bot.install_defaults` appends the generic rules (text ->
knowledge base, media hints, default) when `handlers.build_router()` runs, so anything registered on
`router` at import time of your module wins. Return a str, a `replies.*` object or None.
"""

from __future__ import annotations

from . import replies
from .replies import Article, Image, Many, News, Reply, Text, Transfer
from .router import Context, Router

# Rules registered here by other modules (at import) run before the defaults.
router = Router()

# Modules holding intents (knowledge base, appeal intake, activities) that register on `router`.
PLUGINS: list[str] = ["handlers.appeal_intake", "handlers.appeal_followup"]


def build_router(extra_modules: list[str] | None = None) -> Router:
    """The bot's router: plug-in modules' rules first, then the defaults. Built once per process."""
    import importlib

    from .bot import install_defaults

    for name in [*PLUGINS, *(extra_modules or [])]:
        importlib.import_module(name)
    combined = Router()
    combined.rules.extend(router.rules)
    combined.middleware.extend(router.middleware)
    install_defaults(combined)  # default middleware goes in front of the plug-ins' own
    if router.fallback is not None:
        combined.fallback, combined.fallback_fast = router.fallback, router.fallback_fast
    return combined


__all__ = ["Article", "Context", "Image", "Many", "News", "PLUGINS", "Reply", "Router", "Text", "Transfer",
           "build_router", "replies", "router"]
