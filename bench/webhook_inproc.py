"""In-process cost of one safe-mode push through the webhook (no gunicorn, no HTTP, one thread).

Builds the same pushes as bench/webhook.py (a greeting from 50 users, unique MsgIds, encrypted beforehand),
calls the WSGI app directly and prints CPU and wall time per push, the embedded Redis server's CPU per push
and the Redis commands each push ran. With `--callgrind` it runs itself under valgrind and has callgrind
dump its counters right before and right after the measured pushes (`callgrind_control -d`), so the
user-space instructions per push come from the pushes alone (no start-up in them): a figure that does not
depend on what else the machine is doing.

    .venv/bin/python bench/webhook_inproc.py [--pushes 3000]
    .venv/bin/python bench/webhook_inproc.py --callgrind [--pushes 1000]   # needs valgrind (Debian package)
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def _environ(raw: bytes) -> dict:
    head, body = raw.split(b"\r\n\r\n", 1)
    path, query = head.split(b"\r\n")[0].decode().split()[1].split("?", 1)
    return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "text/xml", "wsgi.input": io.BytesIO(body), "SERVER_NAME": "bench", "SERVER_PORT": "1",
            "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}


def _server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(pushes: int, built: int) -> None:
    import webhook as wb

    instance = Path(tempfile.mkdtemp(prefix="wxapp-inproc-"))
    (instance / "metrics").mkdir()
    os.environ.update({"APP_ENV": "development", "INSTANCE_PATH": str(instance), "SECRET_KEY": "b" * 32,
                       "WECHAT_TOKEN": wb.TOKEN, "WECHAT_AES_KEY": wb.AES_KEY, "WECHAT_APPID": wb.APPID,
                       "WECHAT_SECRET": "s", "WECHAT_API_BASE": "http://127.0.0.1:9", "LOG_LEVEL": "WARNING",
                       "PROMETHEUS_MULTIPROC_DIR": str(instance / "metrics")})
    from wxapp_backend import create_app
    from wxapp_backend.cli import upgrade_database
    from wxapp_backend.config import Settings
    from wxapp_backend.kv import stop_embedded_redis

    setup = create_app(Settings.from_env())
    with setup.app_context():
        upgrade_database()
    os.environ["REDIS_URL"] = setup.extensions["wxapp"].redis_url
    try:
        import _bare_app  # the benchmark's app: the full application with the chat rate limit lifted

        app = _bare_app.app
        environs = [_environ(r) for r in wb.build_requests(max(built, pushes + 500), 50, 1)[0]]

        def start_response(status: str, headers: list) -> None:
            pass

        for env in environs[:500]:  # warm up: user rows, caches, scripts
            out = b"".join(app(env, start_response))
        if b"<Encrypt>" not in out:
            raise SystemExit(f"unexpected answer: {out[:200]!r}")
        r = setup.extensions["wxapp"].redis
        server = int(r.info("server")["process_id"])
        stats0, server0 = r.info("commandstats"), _server_cpu(server)
        dump = os.environ.get("BENCH_CALLGRIND_DUMP")
        if dump:
            subprocess.run(["callgrind_control", "--dump=before", str(os.getpid())], check=True,
                           stdout=subprocess.DEVNULL)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for env in environs[500:500 + pushes]:
            b"".join(app(env, start_response))
        cpu1, wall1 = time.process_time(), time.perf_counter()
        if dump:
            subprocess.run(["callgrind_control", "--dump=pushes", str(os.getpid())], check=True,
                           stdout=subprocess.DEVNULL)
        server1, stats1 = _server_cpu(server), r.info("commandstats")
        print(f"{pushes} pushes: CPU {1e6 * (cpu1 - cpu0) / pushes:.0f} us/push, wall "
              f"{1e6 * (wall1 - wall0) / pushes:.0f} us/push, Redis server CPU {1e6 * (server1 - server0) / pushes:.0f} "
              f"us/push (Redis {r.info('server')['redis_version']})")
        calls = {k[len("cmdstat_"):]: (v["calls"] - stats0.get(k, {"calls": 0})["calls"]) / pushes
                 for k, v in stats1.items() if k != "cmdstat_info"}
        print("Redis commands per push: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items()) if v))
    finally:
        stop_embedded_redis(instance)


def callgrind(pushes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                        "--pushes", str(pushes)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "BENCH_CALLGRIND_DUMP": "1", "PYTHONHASHSEED": "0"})
        for part in sorted(Path(tmp).glob("callgrind.out*")):
            lines = part.read_text(errors="replace").splitlines()
            if "desc: Trigger: dump pushes" in lines:  # the dump taken right after the measured pushes
                total = int(next(x for x in lines if x.startswith(("summary:", "totals:"))).split()[1])
                print(f"user-space instructions per push: {total / pushes:,.0f} ({pushes} pushes, {total:,} in all)")
                return
    raise SystemExit("callgrind wrote no dump for the pushes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pushes", type=int, default=None, help="measured pushes (default 3000; 1000 with --callgrind)")
    ap.add_argument("--built", type=int, default=0, help="requests to build (default: pushes + 500)")
    ap.add_argument("--callgrind", action="store_true", help="instructions per push under valgrind")
    args = ap.parse_args()
    if args.callgrind:
        callgrind(args.pushes or 1000)
    else:
        run(args.pushes or 3000, args.built)


if __name__ == "__main__":
    main()
