"""The private Redis server: started once on demand, shared by every process of one instance."""

from __future__ import annotations

import multiprocessing

import redis

from wxapp_backend.kv import ensure_embedded_redis, stop_embedded_redis


def _start(path: str, q) -> None:
    url = ensure_embedded_redis(path)
    r = redis.Redis.from_url(url)
    q.put((url, r.info("server")["process_id"]))


def test_concurrent_starts_share_one_server(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_start, args=(str(tmp_path), q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = [q.get(timeout=5) for _ in procs]
    try:
        assert len({pid for _, pid in results}) == 1, results
        assert len({url for url, _ in results}) == 1
    finally:
        stop_embedded_redis(tmp_path)


def test_restart_after_stop(tmp_path):
    url = ensure_embedded_redis(tmp_path)
    redis.Redis.from_url(url).set("k", "v")
    stop_embedded_redis(tmp_path)
    url2 = ensure_embedded_redis(tmp_path)
    try:
        assert redis.Redis.from_url(url2).ping()
    finally:
        stop_embedded_redis(tmp_path)
