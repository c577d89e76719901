"""How many access-token fetches do 8 worker processes make on a cold cache?

Ours: `wxapp_backend.wechat.client` (Redis cache, one refresher under a Redis lock, POST /cgi-bin/stable_token).
Baseline: wechatpy 1.8.18's `WeChatClient` with its default session storage (a per-process MemoryStorage).
Both run in 8 fresh processes that start together (a barrier) against the loopback WeChat stand-in, which
this script starts with 200 ms latency. Run:

    .venv/bin/python bench/token_fetch.py [--processes 8] [--latency 0.2] [--redis-url redis://...]

Without --redis-url (or REDIS_URL) a private Redis is started under a temporary directory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _ours(redis_url: str, base_url: str, appid: str, use_lock: bool, barrier, out) -> None:
    from wxapp_backend.config import Settings
    from wxapp_backend.kv import make_redis
    from wxapp_backend.wechat.client import WeChatHTTP, build_api

    settings = Settings(wxa_appid=appid, wxa_secret="bench-secret", wechat_api_base=base_url)
    api = build_api("wxa", settings, make_redis(redis_url), WeChatHTTP(base_url, 5.0), use_lock=use_lock)
    barrier.wait(60)
    started = time.perf_counter()
    token = api.access_token()
    out.put((token, time.perf_counter() - started))


def _wechatpy(base_url: str, appid: str, barrier, out) -> None:
    from wechatpy import WeChatClient

    class StandInClient(WeChatClient):
        # wechatpy 1.8.18 hard-codes https://api.weixin.qq.com/cgi-bin/token in fetch_access_token; this
        # override changes only that URL (to API_BASE_URL + "token"), nothing of its caching or logic.
        def fetch_access_token(self):
            return self._fetch_access_token(url=self.API_BASE_URL + "token", params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})

    client = StandInClient(appid, "bench-secret")  # default session storage: MemoryStorage, per process
    client.API_BASE_URL = base_url + "/cgi-bin/"
    barrier.wait(60)
    started = time.perf_counter()
    token = client.access_token
    out.put((token, time.perf_counter() - started))


def _run(n: int, target, args: tuple) -> tuple[list[str], list[float]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        if p.exitcode != 0:
            raise SystemExit(f"a worker process failed (exit {p.exitcode})")
    return [r[0] for r in results], [r[1] for r in results]


def _line(label: str, fetches: int, tokens: list[str], seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{label:<52} fetches={fetches:<3} distinct_tokens={len(set(tokens)):<3} "
            f"wait_ms median={statistics.median(ms):6.0f} max={ms[-1]:6.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.2, help="stand-in answer delay in seconds")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    args = parser.parse_args(argv)

    import redis
    import wechatpy

    from wxapp_backend.kv import ensure_embedded_redis, stop_embedded_redis
    from wxapp_backend.wechat.standin import WeChatStandIn

    tmp = None
    redis_url = args.redis_url
    if not redis_url:
        tmp = tempfile.TemporaryDirectory(prefix="token-bench-")
        redis_url = ensure_embedded_redis(Path(tmp.name))
    standin = WeChatStandIn(latency=args.latency).start()
    n = args.processes
    print(f"stand-in {standin.base_url}, latency {args.latency * 1000:.0f} ms; Redis {redis_url}; "
          f"{n} processes start together on a cold cache; wechatpy {wechatpy.__version__}")
    try:
        appid = "wxbench" + secrets.token_hex(5)  # a fresh appid: nothing cached under its key
        tokens, secs = _run(n, _ours, (redis_url, standin.base_url, appid, True))
        ours = standin.count("/cgi-bin/stable_token")
        print(_line("ours (Redis lock, stable_token), cold", ours, tokens, secs))

        tokens, secs = _run(n, _ours, (redis_url, standin.base_url, appid, True))
        warm = standin.count("/cgi-bin/stable_token") - ours
        print(_line("ours again, warm cache", warm, tokens, secs))

        appid2 = "wxbench" + secrets.token_hex(5)
        tokens, secs = _run(n, _ours, (redis_url, standin.base_url, appid2, False))
        unlocked = standin.count("/cgi-bin/stable_token") - ours - warm
        print(_line("ours with the lock disabled (control), cold", unlocked, tokens, secs))

        tokens, secs = _run(n, _wechatpy, (standin.base_url, "wxbench" + secrets.token_hex(5)))
        theirs = standin.count("/cgi-bin/token")
        print(_line("wechatpy 1.8.18 WeChatClient (MemoryStorage), cold", theirs, tokens, secs))
    finally:
        standin.stop()
        if tmp is not None:
            stop_embedded_redis(Path(tmp.name))
            tmp.cleanup()
        else:
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter("wxapp:wechat:access_token:wxbench*"):
                client.delete(key)
    ok = ours == 1 and warm == 0
    print("RESULT:", "exactly one fetch for all processes" if ok else "MORE THAN ONE FETCH")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
