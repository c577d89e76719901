"""`flask --app wsgi serve`, the README's one-command start: web and job worker up, Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from rq import Worker

from tests.e2e.helpers import ROOT, descendants, free_port, is_running, tail, wait_for_health

pytestmark = pytest.mark.e2e


def _job_worker(redis_url: str, serve_pid: int, proc: subprocess.Popen, stderr_path, timeout: float = 20):
    """The RQ worker registered in Redis that is a child of this `serve`, waiting until it has registered."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"serve exited with {proc.returncode}\n--- stderr\n{tail(stderr_path)}", pytrace=False
                )
            ours = descendants(serve_pid)
            workers = [w for w in Worker.all(connection=client) if w.pid in ours]
            if workers:
                return workers
            time.sleep(0.2)
    finally:
        client.close()
    pytest.fail(
        f"no RQ worker started by serve registered in {redis_url} within {timeout:.0f} s; "
        f"processes: {descendants(serve_pid)}\n--- stderr\n{tail(stderr_path)}",
        pytrace=False,
    )


@pytest.mark.parametrize("signal_to", ["serve", "process-group"])
def test_serve_runs_web_and_worker_and_stops_on_ctrl_c(service_env, tmp_path, signal_to):
    """SIGINT to serve alone (kill -INT) and to its whole process group (Ctrl-C in a terminal)."""
    port = free_port()
    stderr_path = tmp_path / "serve.stderr"
    with open(tmp_path / "serve.stdout", "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "wsgi",
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            cwd=ROOT,
            env=service_env.env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    children: dict[int, str] = {}
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc, stderr_path)
        _job_worker(service_env.redis_url(), proc.pid, proc, stderr_path)
        children = descendants(proc.pid)
        assert any("gunicorn" in cmd for cmd in children.values()), children
        assert any(cmd.endswith("worker") for cmd in children.values()), children

        if signal_to == "serve":
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"serve did not exit within 30 s of SIGINT; still running: {descendants(proc.pid)}\n"
                f"--- stderr\n{tail(stderr_path)}",
                pytrace=False,
            )
        deadline = time.monotonic() + 5  # an orphan may need a moment to notice its parent is gone
        while time.monotonic() < deadline and any(is_running(pid) for pid in children):
            time.sleep(0.1)
        left = {pid: cmd for pid, cmd in children.items() if is_running(pid)}
        assert not left, f"processes left running after serve exited: {left}"
        assert proc.returncode == 0, f"serve exited with {proc.returncode}\n--- stderr\n{tail(stderr_path)}"
        if not service_env.external_redis_url:  # the private Redis that init-db or serve started stops too
            from wxapp_backend.kv import _socket_path

            sock = _socket_path(service_env.instance / "redis")  # not redis_url(): that would start it again
            try:
                still = redis.Redis.from_url(f"unix://{sock}", socket_connect_timeout=1).ping()
            except (redis.RedisError, OSError):
                still = False
            assert not still, "the embedded Redis was left running after serve exited"
            assert "已停止内置 Redis" in (tmp_path / "serve.stdout").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        for pid in children:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
