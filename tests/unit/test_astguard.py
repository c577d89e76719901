"""gh-106905: two threads in `ast.parse` at once made `create_app` fail with a SystemError (a test run did)."""

from __future__ import annotations

import ast
import gc
import sys
import threading

import pytest

import wxapp_backend  # noqa: F401  (installs the guard)
from wxapp_backend import astguard

SOURCE = "def f(a, b):\n    return [a + b for _ in range(3)]\n" * 200


def _parse_while_another_thread_parses(parse, rounds: int = 5) -> list[BaseException]:
    """Run `parse` on this thread; a garbage collection inside it runs a finaliser that lets another thread
    call `ast.parse` (as werkzeug's route compiler on one thread and a traceback on another do)."""
    go, done, stop = threading.Event(), threading.Event(), threading.Event()

    def other() -> None:
        while not stop.is_set():
            if go.wait(0.05):
                go.clear()
                ast.parse("x = [1, 2, (3, 4)]\n" * 5)
                done.set()

    class Finaliser:
        def __del__(self) -> None:
            go.set()
            done.wait(0.2)  # gives up the GIL, as any blocking call in a finaliser would
            done.clear()

    worker = threading.Thread(target=other, daemon=True)
    worker.start()
    errors: list[BaseException] = []
    threshold = gc.get_threshold()
    try:
        for _ in range(rounds):
            gc.disable()
            cycle = Finaliser()
            cycle.me = cycle  # type: ignore[attr-defined]
            del cycle
            gc.set_threshold(50)
            gc.enable()
            try:
                parse(SOURCE)
            except SystemError as exc:
                errors.append(exc)
    finally:
        gc.set_threshold(*threshold)
        gc.enable()
        stop.set()
        worker.join(2)
    return errors


def test_ast_parse_is_guarded_once_the_package_is_imported():
    if sys.version_info >= (3, 13):
        assert ast.parse is astguard.unguarded_parse
    else:
        assert ast.parse is not astguard.unguarded_parse
        assert astguard.install() is True and ast.parse is not astguard.unguarded_parse  # idempotent


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="the converter's depth is per thread from 3.13 on")
def test_a_parse_on_another_thread_does_not_break_the_one_running():
    assert _parse_while_another_thread_parses(ast.parse) == []


def test_the_same_interleaving_breaks_the_unguarded_parse_on_this_python():
    """The negative control: on the Pythons the guard is installed for, the unguarded parse fails here."""
    errors = _parse_while_another_thread_parses(astguard.unguarded_parse)
    if ast.parse is astguard.unguarded_parse:  # 3.13+: nothing to guard against
        assert errors == []
    else:
        assert errors and "recursion depth mismatch" in str(errors[0])
