"""Process helpers for the end-to-end tests: free ports, health waits, child-process bookkeeping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return text[-limit:] if text else "(empty)"


def run_flask(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run `python -m flask --app wsgi <args>` like a newcomer would; fail with its output when it fails."""
    cmd = [sys.executable, "-m", "flask", "--app", "wsgi", *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"`flask --app wsgi {' '.join(args)}` exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout


def wait_for_health(base_url: str, proc: subprocess.Popen, stderr_path: Path, timeout: float = 30) -> None:
    """Poll /healthz until it answers 200; fail early (with the server's stderr) if the process dies."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the server exited with {proc.returncode} before /healthz answered\n"
                f"--- server stderr\n{tail(stderr_path)}",
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    pytest.fail(
        f"{base_url}/healthz did not answer 200 within {timeout:.0f} s (last: {last})\n"
        f"--- server stderr\n{tail(stderr_path)}",
        pytrace=False,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    """terminate, wait, kill: the polite way first."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def count_rows(database_url: str, table: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one())
    finally:
        engine.dispose()


# --- /proc bookkeeping (Linux; psutil is not a dependency) ------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces; the fields after the last ')' are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphaned zombie waits for PID 1 to reap it; it runs nothing)."""
    st = _stat(pid)
    return st is not None and st[0] not in {"Z", "X"}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def descendants(pid: int) -> dict[int, str]:
    """Every living descendant of `pid`, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and is_running(child):
                found[child] = cmdline(child)
                todo.append(child)
    return found
