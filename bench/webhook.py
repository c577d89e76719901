"""Benchmark: a safe-mode OA text message through the full webhook pipeline vs a bare Flask endpoint.

Both run on the same gunicorn (project gunicorn.conf.py: gthread with balanced keep-alive connections;
`WEB_WORKER_CLASS=gthread` for gunicorn's own) in the same run; the load generator is
asyncio with pre-built keep-alive HTTP/1.1 requests (unique MsgIds, encrypted beforehand), loopback only,
bounded in time and count. Two modes, each run for the bare endpoint and then the full pipeline:

- closed loop: `--clients` connections, each sends its next request when the previous one is answered.
  Measures throughput; its latency is clients / throughput (Little's law), not a property of the server.
- open loop: requests are *scheduled* at a fixed rate (`--rate`, req/s) whatever the answers do, over at
  most `--clients` connections (more are opened, up to `--max-connections`, when all are busy); latency
  counts from the scheduled send time, so a server that falls behind shows it (no coordinated omission).

`--rounds N` repeats both modes N times (bare and full alternate within a round). Usage:

    .venv/bin/python bench/webhook.py [--workers 4] [--threads 4] [--clients 50] [--seconds 8] \
        [--rate 400] [--rounds 2] [--py-spy /tmp/webhook-prof]

`--py-spy PREFIX` samples one gunicorn worker with py-spy (raw collapsed stacks, PREFIX-<pid>.txt) during
the first full-pipeline closed-loop phase; summarise with `--py-spy-report PREFIX-<pid>.txt`.
Uses the embedded SQLite/Redis in a temporary instance unless DATABASE_URL / REDIS_URL are set, or
`--pg postgresql://postgres@127.0.0.1:5432` (a fresh database `wxapp_bench_webhook` on that server).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import shutil
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
MAX_REQUESTS = 200_000  # hard cap on requests built per phase


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


class Result:
    def __init__(self, latencies: list[float], errors: int, elapsed: float, extra: str = "") -> None:
        self.latencies, self.errors, self.elapsed, self.extra = latencies, errors, elapsed, extra


async def closed_loop(port: int, reqs: list[bytes], clients: int, seconds: float, expect: bytes,
                      ramp: float = 0.0, close: bool = False) -> Result:
    """`clients` connections, each sending its next request when the previous is answered.

    `ramp` > 0 opens the connections one after another over that many seconds (client i at i * ramp /
    clients) instead of all in the same instant. `close`: every request on a new connection
    (`Connection: close`), the connection's set-up counted in its latency."""
    latencies: list[float] = []
    errors = 0
    it = iter(reqs)
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        reader = writer = None
        if ramp > 0:
            await asyncio.sleep(i * ramp / clients)
        while time.perf_counter() < stop_at:
            req = next(it, None)
            if req is None:
                break
            if close:
                req = req.replace(b"Connection: keep-alive", b"Connection: close", 1)
            opened_at = time.perf_counter()
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # A kept-alive connection's set-up is not part of any request; a fresh one's is part of its own.
            t0 = opened_at if close else time.perf_counter()
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
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return Result(latencies, errors, time.perf_counter() - started)


async def open_loop(port: int, reqs: list[bytes], rate: float, seconds: float, expect: bytes,
                    connections: int, max_connections: int) -> Result:
    """Send at a fixed schedule (rate req/s); latency from each request's scheduled time."""
    latencies: list[float] = []
    errors = 0
    idle: collections.deque = collections.deque()
    opened = 0
    waiters: collections.deque = collections.deque()
    n = min(len(reqs), int(rate * seconds))
    tasks: list[asyncio.Task] = []

    async def get_conn():
        nonlocal opened
        if idle:
            return idle.popleft()
        if opened < max_connections:
            opened += 1
            return await asyncio.open_connection("127.0.0.1", port)
        fut = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        return await fut

    def put_conn(conn) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        idle.append(conn)

    async def one(req: bytes, scheduled: float) -> None:
        nonlocal errors, opened
        conn = await get_conn()
        reader, writer = conn
        writer.write(req)
        try:
            status, body = await _read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            errors += 1
            writer.close()
            opened -= 1
            return
        latencies.append(time.perf_counter() - scheduled)
        if status != 200 or expect not in body:
            errors += 1
        put_conn(conn)

    # Open the base connections before the clock starts.
    for _ in range(connections):
        idle.append(await asyncio.open_connection("127.0.0.1", port))
    opened = connections
    start = time.perf_counter() + 0.01
    interval = 1.0 / rate
    sent = 0
    while sent < n:
        now = time.perf_counter()
        due = min(n, int((now - start) / interval) + 1)
        while sent < due:  # catch up when the event loop was late: the schedule is fixed
            tasks.append(asyncio.create_task(one(reqs[sent], start + sent * interval)))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
    await asyncio.wait(tasks, timeout=30)
    elapsed = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    return Result(latencies, errors + sum(1 for t in tasks if not t.done()), elapsed,
                  f"offered {rate:.0f} req/s, {opened} connections at most")


def summarise(name: str, res: Result) -> dict:
    lat = sorted(res.latencies)
    if not lat:
        lat = [float("nan")]
    q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [lat[-1]] * 99
    out = {"name": name, "requests": len(res.latencies), "rps": len(res.latencies) / res.elapsed,
           "p50_ms": q[49] * 1000, "p90_ms": q[89] * 1000, "p99_ms": q[98] * 1000, "max_ms": lat[-1] * 1000,
           "errors": res.errors}
    print(f"{name:>20}: {out['rps']:7.0f} req/s   p50 {out['p50_ms']:6.1f}   p90 {out['p90_ms']:6.1f}   "
          f"p99 {out['p99_ms']:6.1f}   max {out['max_ms']:6.1f} ms   ({out['requests']} requests, "
          f"{res.errors} errors{'; ' + res.extra if res.extra else ''})", flush=True)
    return out


def _cpu_ticks(pids: list[int], kernel_only: bool = False) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (0 if kernel_only else int(fields[11])) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _switches(pids: list[int]) -> int:
    """Context switches so far (voluntary + involuntary) of every thread of these processes."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                for line in status.read_text().splitlines():
                    if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                        total += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return total


def cpu_split(groups: dict[str, list[int]]) -> dict[str, int]:
    """CPU ticks so far of each named group of processes ("self" means this process, all threads), and
    the workers' context switches (key "switches")."""
    out = {"switches": _switches(groups.get("gunicorn workers", [])),
           "kernel": _cpu_ticks(groups.get("gunicorn workers", []), kernel_only=True)}
    for name, pids in groups.items():
        if name == "self":
            t = os.times()
            out[name] = int((t.user + t.system) * os.sysconf("SC_CLK_TCK"))
        else:
            out[name] = _cpu_ticks(pids)
    return out


def merge_results(parts: list[Result]) -> Result:
    """One Result from the slices of one side."""
    return Result([x for p in parts for x in p.latencies], sum(p.errors for p in parts),
                  sum(p.elapsed for p in parts), f"{len(parts)} slices")


def cpu_report_many(pairs: list[tuple[dict[str, int], dict[str, int]]], requests: int) -> str:
    """cpu_report over several (before, after) readings added up."""
    before = {k: 0 for k in pairs[0][0]}
    after = {k: sum(b[k] - a[k] for a, b in pairs) for k in before}
    return cpu_report(before, after, requests)


def cpu_report(before: dict[str, int], after: dict[str, int], requests: int) -> str:
    """CPU time per request by group, from two cpu_split readings."""
    if not requests:
        return ""
    hz = os.sysconf("SC_CLK_TCK")
    parts = [f"{name} {(after[name] - before[name]) / hz / requests * 1e6:.0f}"
             + (f" (kernel {(after['kernel'] - before['kernel']) / hz / requests * 1e6:.0f})"
                if name == "gunicorn workers" else "")
             for name in before if name not in ("switches", "kernel")]
    return (f"CPU us/request: {', '.join(parts)}; worker context switches/request "
            f"{(after['switches'] - before['switches']) / requests:.1f}")


def worker_pids(master: int) -> list[int]:
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [int(p) for p in out.split()]


def _redis_pids(instance: Path) -> list[int]:
    """The embedded Redis server's pid (none when REDIS_URL points elsewhere)."""
    try:
        return [int((instance / "redis" / "redis.pid").read_text().split()[0])]
    except (OSError, ValueError, IndexError):
        return []


def settle(pids: list[int], limit: float = 90.0) -> None:
    """Wait until the workers are idle (their start-up warm-up thread loads the search index)."""
    hz = os.sysconf("SC_CLK_TCK")
    end = time.time() + limit
    quiet = 0
    while time.time() < end and quiet < 2:
        before = _cpu_ticks(pids)
        time.sleep(0.5)
        busy = (_cpu_ticks(pids) - before) / hz / 0.5  # CPUs' worth of work
        quiet = quiet + 1 if busy < 0.05 else 0


def py_spy_report(path: str, top: int = 25) -> None:
    """Top functions (self and inclusive sample share) from a py-spy raw (collapsed) file."""
    self_count: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.rsplit(" (", 1)[0] + " (" + f.rsplit(" (", 1)[1].split(":")[0] + ")" if " (" in f else f
                  for f in stack.split(";")]
        self_count[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples")
    print("self:")
    for f, n in self_count.most_common(top):
        print(f"  {n / total:6.1%}  {f}")
    print("inclusive:")
    for f, n in incl.most_common(top * 2):
        print(f"  {n / total:6.1%}  {f}")


def report_trace(instance: Path) -> None:
    import json

    merged: dict[str, list] = {}
    for f in instance.glob("trace.*"):
        for path, samples in json.loads(f.read_text()).items():
            merged.setdefault(path, []).extend(samples)
    print("inside the app (all phases, warm-up included):")
    for path, samples in sorted(merged.items()):
        if len(samples) < 100:
            continue
        wall = sorted(w for w, _ in samples)
        q = statistics.quantiles(wall, n=100)
        cpu = statistics.fmean(c for _, c in samples)
        print(f"  {path:>10}: {len(samples)} requests; wall p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms, "
              f"mean {statistics.fmean(wall) * 1000:.2f} ms; CPU mean {cpu * 1000:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--clients", type=int, default=50, help="closed loop: connections; open loop: base pool")
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--rate", type=float, default=400.0, help="open loop: offered req/s (0: skip open loop)")
    ap.add_argument("--max-connections", type=int, default=200, help="open loop: connection cap")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--slices", type=int, default=4,
                    help="closed loop: alternate bare and full this many times within a phase (default 4)")
    ap.add_argument("--close", action="store_true",
                    help="closed loop: a new connection per request (Connection: close) instead of keep-alive")
    ap.add_argument("--ramp", type=float, default=0.0,
                    help="closed loop: open the connections over this many seconds instead of all at once")
    ap.add_argument("--pg", metavar="SERVER", help="run on PostgreSQL (recreates database wxapp_bench_webhook)")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="experiment: sys.setswitchinterval in the workers (default: Python's 5 ms)")
    ap.add_argument("--mode", choices=("both", "closed", "open"), default="both")
    ap.add_argument("--py-spy", metavar="PREFIX", help="sample one worker during the first full closed phase")
    ap.add_argument("--py-spy-gil", action="store_true", help="py-spy: only samples holding the GIL (CPU)")
    ap.add_argument("--py-spy-report", metavar="FILE", help="summarise a py-spy raw file and exit")
    ap.add_argument("--trace", action="store_true",
                    help="report wall and CPU time spent inside the WSGI app per request (all phases)")
    args = ap.parse_args()
    if args.py_spy_report:
        py_spy_report(args.py_spy_report)
        return

    instance = Path(tempfile.mkdtemp(prefix="wxapp-bench-"))
    port = free_port()
    env = {**os.environ, "APP_ENV": "development", "INSTANCE_PATH": str(instance), "SECRET_KEY": "b" * 32,
           "WECHAT_TOKEN": TOKEN, "WECHAT_AES_KEY": AES_KEY, "WECHAT_APPID": APPID, "WECHAT_SECRET": "s",
           "WECHAT_API_BASE": "http://127.0.0.1:9", "LOG_LEVEL": "WARNING", "BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": str(args.workers), "WEB_THREADS": str(args.threads),
           "PROMETHEUS_MULTIPROC_DIR": str(instance / "metrics")}
    if args.switch_interval:
        env["BENCH_SWITCH_INTERVAL"] = str(args.switch_interval)
    if args.trace:
        env["BENCH_TRACE"] = str(instance / "trace")
    (instance / "metrics").mkdir()
    if args.pg:
        import psycopg

        with psycopg.connect(args.pg.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                             autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "wxapp_bench_webhook" WITH (FORCE)')
            conn.execute('CREATE DATABASE "wxapp_bench_webhook"')
        env["DATABASE_URL"] = args.pg.replace("postgresql://", "postgresql+psycopg://") + "/wxapp_bench_webhook"
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

    closed = args.mode in ("both", "closed")
    opened = args.mode in ("both", "open") and args.rate > 0
    per_closed = min(MAX_REQUESTS, int(args.seconds * 6000) + 2000) if closed else 0
    per_open = min(MAX_REQUESTS, int(args.rate * args.seconds) + 10) if opened else 0
    n = args.rounds * (per_closed + per_open)
    print(f"building {n} encrypted requests ... (database {env['DATABASE_URL'].split('://')[0]})", flush=True)
    full_reqs, bare_reqs = build_requests(n, args.clients, port)
    warm = build_requests(args.clients * 20, args.clients, port)[0]

    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
                             "--pythonpath", f"{ROOT},{ROOT / 'bench'}", "_bare_app:app"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: list[tuple[int, str, dict]] = []
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
        worker_class = os.environ.get("WEB_WORKER_CLASS") or "BalancedThreadWorker"
        per_request = " (a connection per request)" if args.close else ""
        print(f"gunicorn: {args.workers} workers x {args.threads} threads ({worker_class}); "
              f"{args.clients} clients{per_request}; "
              f"{args.seconds:.0f} s per phase; open loop at {args.rate:.0f} req/s; {os.cpu_count()} CPUs; "
              f"{'switch interval ' + str(args.switch_interval) + ' s; ' if args.switch_interval else ''}"
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        # Warm up every worker (imports, connections, user rows and caches), then let the start-up
        # warm-up threads finish before anything is measured.
        asyncio.run(closed_loop(port, warm, args.clients, 30, b"<Encrypt>"))
        asyncio.run(closed_loop(port, bare_reqs[: args.clients * 20], args.clients, 30, b"success"))
        pids = worker_pids(proc.pid)
        settle(pids)
        groups = {"gunicorn workers": pids, "load generator": [], "redis": _redis_pids(instance)}
        groups = {("self" if k == "load generator" else k): v for k, v in groups.items()}
        asyncio.run(closed_loop(port, warm[: args.clients * 4], args.clients, 30, b"<Encrypt>"))
        pos = 0
        for rnd in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {rnd}", flush=True)
            if closed:
                # Bare and full alternate in `--slices` short slices, so that a burst of other work on this
                # shared machine lands on both sides rather than on one of them.
                spy = None
                res = {"bare": [], "full": []}
                cpu = {"bare": [], "full": []}
                per = args.seconds / args.slices
                chunk = per_closed // args.slices
                for sl in range(args.slices):
                    for side, reqs, expect in (("bare", bare_reqs, b"success"), ("full", full_reqs, b"<Encrypt>")):
                        if side == "full" and args.py_spy and rnd == 1 and sl == 0 and pids:
                            spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                            spy = subprocess.Popen([spy_bin, "record", "--pid", str(pids[0]), "--rate", "400",
                                                    "--duration", str(max(1, int(per))), "--format", "raw",
                                                    "--nonblocking", *(["--gil"] if args.py_spy_gil else []),
                                                    "--output", f"{args.py_spy}-{pids[0]}.txt"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        start = pos + sl * chunk
                        c0 = cpu_split(groups)
                        res[side].append(asyncio.run(closed_loop(port, reqs[start: start + chunk], args.clients,
                                                                 per, expect, args.ramp, args.close)))
                        cpu[side].append((c0, cpu_split(groups)))
                bare = summarise("bare closed", merge_results(res["bare"]))
                print(f"{'':>20}  {cpu_report_many(cpu['bare'], bare['requests'])}", flush=True)
                full = summarise("full closed", merge_results(res["full"]))
                print(f"{'':>20}  {cpu_report_many(cpu['full'], full['requests'])}", flush=True)
                if spy is not None:
                    spy.wait(timeout=60)
                    print(f"{'':>20}  py-spy: {args.py_spy}-{pids[0]}.txt", flush=True)
                pos += per_closed
                ratio = full["rps"] / bare["rps"]
                results.append((rnd, "closed", {"bare": bare, "full": full, "ratio": ratio}))
                print(f"{'closed ratio':>20}: {ratio:.0%} of the bare endpoint's throughput (target >= 50 %); "
                      f"full p99 {full['p99_ms']:.1f} ms at {args.clients} clients (target < 50 ms)", flush=True)
            if opened:
                bare = summarise("bare open", asyncio.run(open_loop(
                    port, bare_reqs[pos: pos + per_open], args.rate, args.seconds, b"success", args.clients,
                    args.max_connections)))
                full = summarise("full open", asyncio.run(open_loop(
                    port, full_reqs[pos: pos + per_open], args.rate, args.seconds, b"<Encrypt>", args.clients,
                    args.max_connections)))
                pos += per_open
                results.append((rnd, "open", {"bare": bare, "full": full}))
                print(f"{'open':>20}: at {args.rate:.0f} req/s offered, full p99 {full['p99_ms']:.1f} ms vs bare "
                      f"{bare['p99_ms']:.1f} ms (target < 50 ms)", flush=True)
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if len(results) > 1:
            print("summary (bare req/s, full req/s, ratio, full p50/p99 ms):")
            for rnd, mode, r in results:
                ratio = f"{r['ratio']:4.0%}" if "ratio" in r else "   -"
                print(f"  round {rnd} {mode:>6}: {r['bare']['rps']:6.0f} {r['full']['rps']:6.0f} {ratio}  "
                      f"{r['full']['p50_ms']:6.1f} / {r['full']['p99_ms']:6.1f}  (bare {r['bare']['p50_ms']:.1f} / "
                      f"{r['bare']['p99_ms']:.1f})")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.trace:
            report_trace(instance)
        from wxapp_backend.kv import stop_embedded_redis

        if not os.environ.get("REDIS_URL"):
            stop_embedded_redis(instance)
        shutil.rmtree(instance, ignore_errors=True)  # the temporary instance (SQLite, Redis files, metrics)


if __name__ == "__main__":
    main()
