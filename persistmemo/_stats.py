"""Counters: one :class:`Stats` per memoized function, rolled up into its cache's totals.

Every event is counted once, by the engine's protocol, through :meth:`Stats.count`, which
updates the function's counters and its cache's in the same call: ``f.cache_info()`` summed over
the functions of a cache always equals ``Cache.info()``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CacheInfo", "Stats"]


class CacheInfo(NamedTuple):
    """Counters of one memoized function (or a whole cache) in this process."""

    hits: int
    misses: int
    stores: int
    errors: int
    decode_failures: int
    lock_waits: int
    lock_timeouts: int


class Stats:
    """Mutable counters, optionally rolled up into a parent (the cache's totals).

    ``+=`` under the GIL is good enough for statistics.
    """

    __slots__ = (*CacheInfo._fields, "parent")

    def __init__(self, parent: Stats | None = None) -> None:
        self.parent = parent
        self.hits = self.misses = self.stores = self.errors = 0
        self.decode_failures = self.lock_waits = self.lock_timeouts = 0

    def count(self, event: str, n: int = 1) -> None:
        """Add ``n`` to counter ``event`` here and in the parent."""
        setattr(self, event, getattr(self, event) + n)
        if self.parent is not None:
            self.parent.count(event, n)

    def hit(self) -> None:
        """Count a hit (the hot path: no getattr/setattr)."""
        self.hits += 1
        if self.parent is not None:
            self.parent.hits += 1

    def snapshot(self) -> CacheInfo:
        """Return the counters as an immutable :class:`CacheInfo`."""
        return CacheInfo(*(getattr(self, f) for f in CacheInfo._fields))
