"""Background jobs surviving crashes, and what the start-up leaves behind (QA pass 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_ops_qa_s10 import _clean_env

ROOT = Path(__file__).resolve().parents[2]


def _redis_servers_under(folder: Path) -> list[int]:
    """Pids of redis-server processes whose command line names `folder` (an embedded Redis started there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in cmd and str(folder) in cmd:
            found.append(int(entry.name))
    return found


def test_gunicorn_refusing_a_worker_count_leaves_no_redis_running(tmp_path):
    """WEB_CONCURRENCY=0 (or WEB_THREADS=abc, WEB_TIMEOUT=-1) stopped gunicorn with its one line, but only after
    the configuration file had started the private Redis: every refused start left a redis-server running (and
    holding instance/redis) that nobody had asked for. The counts are now checked before the Redis starts."""
    from wxapp_backend.kv import stop_embedded_redis

    try:
        for name, bad in (("WEB_CONCURRENCY", "0"), ("WEB_THREADS", "abc"), ("WEB_TIMEOUT", "-1")):
            env = _clean_env(tmp_path, BIND="127.0.0.1:0", **{name: bad})
            proc = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
            assert proc.returncode == 1 and name in proc.stderr, proc.stderr
            assert _redis_servers_under(tmp_path) == [], f"{name}={bad} left a redis-server running"
    finally:
        stop_embedded_redis(tmp_path)
