"""Benchmark: a safe-mode OA text message through the full webhook pipeline vs a bare Flask endpoint.

Both run on the same gunicorn (project gunicorn.conf.py, gthread) in the same run; the load generator is
asyncio with pre-built keep-alive HTTP/1.1 requests (unique MsgIds, encrypted beforehand), loopback only,
bounded in time and count. Usage:

    .venv/bin/python bench/webhook.py [--workers 4] [--clients 50] [--seconds 10]

Uses the embedded SQLite/Redis in a temporary instance unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wxbench0000000001"
TEXT = "你好"  # a greeting: the handler itself is trivial, so this measures the pipeline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_requests(n: int, clients: int, port: int) -> tuple[list[bytes], list[bytes]]:
    from wxapp_backend.config import Settings
    from wxapp_backend.wechat.chat import make_push, seal_push
    from wxapp_backend.wechat.pipeline import account_from_settings

    acct = account_from_settings(Settings(wechat_token=TOKEN, wechat_aes_key=AES_KEY, wechat_appid=APPID), "oa")
    full, bare = [], []
    base_id = secrets.randbelow(10**12) * 10**6
    for i in range(n):
        plain = make_push(acct, f"oBench{i % clients:04d}", text=TEXT, msg_id=str(base_id + i))
        args, body = seal_push(acct, plain)
        full.append(_http(f"/wechat?{urlencode(args)}", body, port))
        bare.append(_http("/bare/", body, port))
    return full, bare


def _http(path: str, body: bytes, port: int) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def run_phase(port: int, reqs: list[bytes], clients: int, seconds: float,
                    expect: bytes) -> tuple[int, list[float], int, float]:
    """Closed loop: `clients` connections, each sending its next request when the previous is answered."""
    latencies: list[float] = []
    errors = 0
    it = iter(reqs)
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader = writer = None
        while time.perf_counter() < stop_at:
            req = next(it, None)
            if req is None:
                break
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.perf_counter()
            writer.write(req)
            try:
                status, body = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                errors += 1
                writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - t0)
            if status != 200 or expect not in body:
                errors += 1
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return len(latencies), latencies, errors, elapsed


def summarise(name: str, count: int, lat: list[float], errors: int, seconds: float) -> dict:
    lat = sorted(lat)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [lat[-1]] * 99
    out = {"name": name, "requests": count, "rps": count / seconds, "p50_ms": q[49] * 1000,
           "p99_ms": q[98] * 1000, "errors": errors}
    print(f"{name:>14}: {out['rps']:8.0f} req/s   p50 {out['p50_ms']:6.1f} ms   p99 {out['p99_ms']:6.1f} ms   "
          f"({count} requests, {errors} errors)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=60000)
    args = ap.parse_args()

    instance = Path(tempfile.mkdtemp(prefix="wxapp-bench-"))
    port = free_port()
    env = {**os.environ, "APP_ENV": "development", "INSTANCE_PATH": str(instance), "SECRET_KEY": "b" * 32,
           "WECHAT_TOKEN": TOKEN, "WECHAT_AES_KEY": AES_KEY, "WECHAT_APPID": APPID, "WECHAT_SECRET": "s",
           "WECHAT_API_BASE": "http://127.0.0.1:9", "LOG_LEVEL": "WARNING", "BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": str(args.workers), "WEB_THREADS": str(args.threads),
           "PROMETHEUS_MULTIPROC_DIR": str(instance / "metrics")}
    (instance / "metrics").mkdir()
    # Schema and (embedded) Redis first, in this process.
    os.environ.update({k: v for k, v in env.items() if k in ("APP_ENV", "INSTANCE_PATH", "SECRET_KEY")})
    from wxapp_backend import create_app
    from wxapp_backend.cli import upgrade_database
    from wxapp_backend.config import Settings

    setup = create_app(Settings.from_env(env))
    with setup.app_context():
        upgrade_database()
    env["REDIS_URL"] = setup.extensions["wxapp"].redis_url
    env.setdefault("DATABASE_URL", setup.extensions["wxapp"].settings.resolved_database_url)

    n = min(args.max_requests, int(args.seconds * 4000) + 2000)
    print(f"building {n} encrypted requests ...", flush=True)
    full_reqs, bare_reqs = build_requests(n, args.clients, port)
    warm = build_requests(args.clients * 20, args.clients, port)[0]

    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
                             "--pythonpath", f"{ROOT},{ROOT / 'bench'}", "_bare_app:app"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)
        print(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread); {args.clients} clients; "
              f"{args.seconds:.0f} s per phase; {os.cpu_count()} CPUs", flush=True)
        # Warm up every worker (imports, connections, user rows and caches).
        asyncio.run(run_phase(port, warm, args.clients, 30, b"<Encrypt>"))
        asyncio.run(run_phase(port, bare_reqs[: args.clients * 20], args.clients, 30, b"success"))
        bare = summarise("bare endpoint", *asyncio.run(run_phase(port, bare_reqs, args.clients, args.seconds,
                                                                 b"success")))
        full = summarise("full pipeline", *asyncio.run(run_phase(port, full_reqs, args.clients, args.seconds,
                                                                 b"<Encrypt>")))
        ratio = full["rps"] / bare["rps"]
        print(f"{'ratio':>14}: {ratio:.0%} of the bare endpoint's throughput "
              f"(target >= 50 %); full p99 {full['p99_ms']:.1f} ms (target < 50 ms)")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        from wxapp_backend.kv import stop_embedded_redis

        if not os.environ.get("REDIS_URL"):
            stop_embedded_redis(instance)


if __name__ == "__main__":
    main()
