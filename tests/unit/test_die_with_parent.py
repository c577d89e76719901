"""The death signal of a forked child (the scheduler process, a job's work horse, serve's children) is set without
loading a library in the child: a dlopen (ctypes.CDLL, `import ctypes`) in a child forked while another thread of the
worker held the loader's lock hangs for good (a scheduler that never ran a delayed job again)."""

from __future__ import annotations

import ctypes
import os
import signal

import pytest

from wxapp_backend import jobs_runtime


def test_the_child_loads_no_library(monkeypatch):
    if jobs_runtime._PRCTL is None:
        pytest.skip("no libc prctl on this system")

    def no_dlopen(*a, **kw):
        raise AssertionError("a library loaded in the forked child")

    monkeypatch.setattr(ctypes, "CDLL", no_dlopen)
    pid = os.fork()
    if pid == 0:  # the child: set its death signal as the scheduler does, then say whether it could
        try:
            jobs_runtime._die_with_parent(signal.SIGTERM)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_death_signal_is_set(monkeypatch):
    """It still works: a child whose parent dies gets the signal (the child reads its own setting back)."""
    if jobs_runtime._PRCTL is None:
        pytest.skip("no libc prctl on this system")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        jobs_runtime._die_with_parent(signal.SIGTERM)
        got = ctypes.c_int(0)
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(2, ctypes.byref(got))  # PR_GET_PDEATHSIG
        os.write(write, str(got.value).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert int(os.read(read, 16)) == signal.SIGTERM
