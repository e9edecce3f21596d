"""The progress bar of ``f.map(calls, progress=True)``: tqdm when installed, else a plain line.

The plain fallback writes one carriage-returned line to stderr, and only on a terminal (a
progress bar in a log file is noise); tqdm decides for itself.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Counts computed and reused results of one ``map`` and shows them while it runs."""

    def __init__(self, total: int, label: str, *, enabled: bool) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.n_computed = self.n_reused = 0
        self._bar: Any = None
        self._last = 0.0

    def __enter__(self) -> Progress:
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self._bar = None
            else:
                self._bar = tqdm(total=self.total, desc=self.label, unit="call")
        return self

    def _step(self) -> None:
        if not self.enabled:
            return
        post = f"computed={self.n_computed} reused={self.n_reused}"
        if self._bar is not None:
            self._bar.set_postfix_str(post, refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        done = self.n_computed + self.n_reused
        if sys.stderr.isatty() and (now - self._last > 0.1 or done == self.total):
            self._last = now
            sys.stderr.write(f"\r{self.label}: {done}/{self.total} ({post})")
            sys.stderr.flush()

    def computed(self) -> None:
        """One result was computed."""
        self.n_computed += 1
        self._step()

    def reused(self) -> None:
        """One result came from the cache (or an earlier duplicate in the batch)."""
        self.n_reused += 1
        self._step()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"computed={self.n_computed} reused={self.n_reused}", refresh=True)
            self._bar.close()
        elif self.enabled and sys.stderr.isatty():
            sys.stderr.write("\n")
