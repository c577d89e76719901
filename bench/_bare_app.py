"""WSGI app for bench/webhook.py: the full application, plus a bare Flask endpoint at /bare on the same workers."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from wxapp_backend import create_app
from wxapp_backend.config import Settings

bare = Flask("bare")


@bare.post("/")
def constant():
    return "success"


# The benchmark's users write far more than 20 messages a minute each: lift the chat rate limit.
full = create_app(Settings.from_env().with_overrides(extra={"chat_rate_limit": 10**9}))
app = DispatcherMiddleware(full, {"/bare": bare})
