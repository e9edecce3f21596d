"""The circuit breaker: a store that is down is skipped for ``backoff`` seconds, not retried.

:class:`~persistmemo.errors.StoreDisabled` (an unsafe or unusable cache directory) turns the
store off for the rest of the process, with one warning naming the reason and the fix.
Otherwise only :class:`~persistmemo.BackendUnavailable` (refused, timed out, paused) opens the
breaker: then every call would pay the timeout again. Other errors (a full disk, Redis out of
memory, a missing permission) are per command: reads may still work, so they are counted and
logged once per kind but do not stop the store being used.
"""

from __future__ import annotations

import time
from typing import Any

from persistmemo.errors import BackendError, BackendUnavailable, StoreDisabled

__all__ = ["Breaker"]


def _log() -> Any:
    import logging  # lazily: logging costs ~5 ms of `import persistmemo`

    return logging.getLogger("persistmemo")


class Breaker:
    """Fail-open policy of one store: when to skip it, what to log, what to raise."""

    __slots__ = ("_kinds", "backoff", "down_until", "fail_open", "label")

    def __init__(self, *, backoff: float, fail_open: bool, label: Any = None) -> None:
        self.backoff = backoff
        self.fail_open = fail_open
        self.label = label  # what the log messages name (the backend, resolved lazily)
        self.down_until = 0.0
        self._kinds: set[str] = set()

    def available(self) -> bool:
        """Whether calls should use the store now (False during the back-off window)."""
        down = self.down_until
        return not down or time.monotonic() >= down

    def failed(self, exc: BackendError) -> None:
        """Raise ``exc`` (``fail_open=False``), or log it and maybe open the breaker."""
        if not self.fail_open:
            raise exc
        if isinstance(exc, StoreDisabled):  # unsafe/unusable directory: off for this process
            first = self.down_until != float("inf")
            self.down_until = float("inf")
            if first:
                _log().warning("persistmemo: cache store disabled for this process: %s; results "
                               "are computed without it", exc)
            return
        if isinstance(exc, BackendUnavailable):
            first = not self.down_until
            self.down_until = time.monotonic() + self.backoff
            if first:
                _log().warning("persistmemo: cache store %r is unavailable (%s); results are "
                               "computed without it and it is retried in %.1fs",
                               self.label, exc, self.backoff)
            return
        kind = type(exc.__cause__ or exc).__name__
        if kind not in self._kinds:
            self._kinds.add(kind)
            _log().warning("persistmemo: cache store %r failed (%s); the result is returned "
                           "without being cached", self.label, exc)

    def ok(self) -> None:
        """Close the breaker after a successful call (logs the recovery once)."""
        if self.down_until:
            self.down_until = 0.0
            _log().warning("persistmemo: cache store %r is back", self.label)
