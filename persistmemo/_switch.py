"""The off switch for tests: :func:`disabled` and ``PERSISTMEMO_DISABLE=1``.

While switched off, memoized functions call straight through: no lookup, no store, no
counters, no statistics. The switch is process-wide (threads started inside a ``with
disabled():`` block are switched off too), which is what a test that calls code using a
thread pool expects.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

__all__ = ["disabled", "env_disabled"]

#: How many ``disabled()`` blocks are active in this process (read on every call: keep it an int).
depth = 0
_lock = threading.Lock()


def env_disabled() -> bool:
    """Whether ``PERSISTMEMO_DISABLE`` is set to a true value (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get("PERSISTMEMO_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


class disabled(contextlib.ContextDecorator):
    """Make every memoized function call straight through while active.

    Use it as a context manager or a decorator; blocks nest and are thread-safe.

    Example:
        >>> import persistmemo
        >>> @persistmemo.memoize(cache=persistmemo.Cache("memory://"))
        ... def double(x: int) -> int:
        ...     return 2 * x
        >>> with persistmemo.disabled():
        ...     double(2)
        4
        >>> double.cache_info().misses
        0
    """

    def __enter__(self) -> disabled:
        global depth
        with _lock:
            depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global depth
        with _lock:
            depth -= 1
