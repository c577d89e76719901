"""One `ast.parse` at a time in this process: a guard for CPython's gh-106905 (3.11 and early 3.12).

CPython keeps the recursion depth of its AST converter in interpreter-wide state. When two threads convert
at once, one of them fails with ``SystemError: AST constructor recursion depth mismatch``. Two callers of
`ast.parse` live in this service: werkzeug, while it compiles the URL rules of every `create_app`, and the
standard `traceback` module, which in Python 3.11 parses the source line of every frame it formats (so any
thread logging an exception). A thread switch inside a conversion is rare (a garbage collection running a
finaliser is enough) but real: a test run failed with it in `create_app` while a pool thread logged, and a
log line formatted at the wrong moment is lost the same way. Serialising `ast.parse` closes it; the lock is
re-entrant, so a finaliser that parses on the same thread does not deadlock.
"""

from __future__ import annotations

import ast
import sys
import threading
from typing import Any

_lock = threading.RLock()
unguarded_parse = getattr(ast.parse, "__wrapped_by_astguard__", ast.parse)


def _guarded_parse(*args: Any, **kwargs: Any) -> Any:
    with _lock:
        return unguarded_parse(*args, **kwargs)


_guarded_parse.__wrapped_by_astguard__ = unguarded_parse  # type: ignore[attr-defined]
_guarded_parse.__doc__ = unguarded_parse.__doc__


def install() -> bool:
    """Put the guarded `ast.parse` in place on the Pythons that need it; True when it is in place."""
    if sys.version_info >= (3, 13):  # the converter's depth is per thread there
        return False
    if ast.parse is not _guarded_parse:
        ast.parse = _guarded_parse
    return True
