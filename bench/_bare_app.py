"""WSGI app for bench/webhook.py: the full application, plus a bare Flask endpoint at /bare on the same workers."""

from __future__ import annotations

import os
import sys

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from wxapp_backend import create_app
from wxapp_backend.config import Settings

# bench/webhook.py --switch-interval: an experiment only (the project's gunicorn keeps Python's 5 ms default).
if os.environ.get("BENCH_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

bare = Flask("bare")


@bare.post("/")
def constant():
    return "success"


# The benchmark's users write far more than 20 messages a minute each: lift the chat rate limit.
full = create_app(Settings.from_env().with_overrides(extra={"chat_rate_limit": 10**9}))
app = DispatcherMiddleware(full, {"/bare": bare})

if os.environ.get("BENCH_TRACE"):
    # bench/webhook.py --trace: per-request wall and CPU time inside the WSGI call, per path, written to
    # BENCH_TRACE.<pid> when the worker exits (tells server-side time from queueing outside the app).
    import atexit
    import threading
    import time

    _inner = app
    _samples: dict[str, list[tuple[float, float]]] = {"/bare/": [], "/wechat": []}
    _lock = threading.Lock()

    def app(environ, start_response):  # type: ignore[no-redef]
        w, c = time.perf_counter(), time.thread_time()
        try:
            return _inner(environ, start_response)
        finally:
            sample = (time.perf_counter() - w, time.thread_time() - c)
            path = environ.get("PATH_INFO", "")
            with _lock:
                _samples.setdefault("/wechat" if path.startswith("/wechat") else path, []).append(sample)

    def _dump() -> None:
        import json

        with open(f"{os.environ['BENCH_TRACE']}.{os.getpid()}", "w") as f:
            json.dump(_samples, f)

    atexit.register(_dump)
