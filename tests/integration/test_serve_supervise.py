"""`serve` leaves nothing running: what a child leaves behind (RQ's scheduler process or a job's fork when the
worker is killed or quits) is stopped with it. CI saw `flask worker`'s scheduler process run on after serve."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from wxapp_backend import cli

CHILD = """
import subprocess, sys, time
left = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
open(sys.argv[1], "w").write(str(left.pid))
time.sleep(0.3)
sys.exit(3)  # quits early, as a crashed worker would, leaving its own child behind
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_childs_leftovers_are_stopped_with_it(tmp_path):
    pid_file = tmp_path / "left.pid"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(pid_file)], preexec_fn=cli._child_setup)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        cli._supervise([child])  # returns once the child has quit (it stops the rest)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    left = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _running(left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(left), "a process the child left behind runs on after serve's supervision ended"
