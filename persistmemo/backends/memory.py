"""An in-process backend: a dict with expiry, optionally bounded in bytes (least recently used).

For tests and notebooks, as a reference store, and as the ``local="memory"`` tier in front of a
shared store (see :mod:`persistmemo.backends.tiered`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from persistmemo.backends.base import MISSING, BaseBackend, BaseLock, Missing

__all__ = ["MemoryBackend", "MemoryLock"]

_LOCK = "lock:"


class MemoryBackend(BaseBackend):
    """Keep entries in this process's memory (thread-safe; lost when the process exits).

    Args:
        max_bytes: bound on the stored values' total size; the least recently used entries
            are evicted first. ``None``: unbounded.
    """

    name = "memory"
    stable_reads = True  # get() returns the stored bytes object itself (see Engine.hit)

    def __init__(self, *, max_bytes: int | None = None) -> None:
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._mutex = threading.RLock()
        self.max_bytes = max_bytes
        self._size = 0

    def __repr__(self) -> str:
        return f"<MemoryBackend entries={len(self._data)}>"

    def get(self, key: str) -> bytes | Missing:
        item = self._data.get(key)
        if item is None:
            return MISSING
        value, deadline = item
        if deadline is not None and deadline <= time.monotonic():
            with self._mutex:
                if self._data.get(key) is item:
                    self._pop(key)
            return MISSING
        if self.max_bytes is not None:
            try:  # noqa: SIM105 (contextlib.suppress costs ~0.3 us on the hit path)
                self._data.move_to_end(key)
            except KeyError:  # the key was just deleted by another thread
                pass
        return value

    def get_with_ttl(self, key: str) -> tuple[bytes | Missing, float | None]:
        """Return the value and its remaining time to live (``None``: no expiry)."""
        value = self.get(key)
        item = self._data.get(key)
        if value is MISSING or item is None or item[1] is None:
            return value, None
        return value, max(0.0, item[1] - time.monotonic())

    def _pop(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self._size -= len(item[0])
        return True

    def _put(self, key: str, value: bytes, deadline: float | None) -> None:
        self._pop(key)
        self._data[key] = (value, deadline)
        self._size += len(value)
        if self.max_bytes is not None and self._size > self.max_bytes:
            for old in [k for k in self._data if not k.startswith(_LOCK)]:
                if self._size <= self.max_bytes:
                    break
                self._pop(old)

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        deadline = None if ttl is None else time.monotonic() + ttl
        value = bytes(value)
        if self.max_bytes is not None and len(value) > self.max_bytes:
            with self._mutex:  # larger than the whole tier: not kept, and no stale copy either
                self._pop(key)
            return
        with self._mutex:
            self._put(key, value, deadline)

    def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent or expired; return whether it did."""
        with self._mutex:
            if self.get(key) is not MISSING:
                return False
            self._put(key, value, None if ttl is None else time.monotonic() + ttl)
            return True

    def delete(self, key: str) -> bool:
        with self._mutex:
            return self._pop(key)

    def clear(self, prefix: str = "") -> int:
        with self._mutex:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for k in doomed:
                self._pop(k)
        return len(doomed)

    def keys(self, prefix: str = "") -> Iterator[str]:
        with self._mutex:
            found = [k for k in self._data if k.startswith(prefix)]
        for k in found:
            if not k.startswith(_LOCK) and self.get(k) is not MISSING:
                yield k

    # In-process: nothing to wait for, so the async twins run inline (no worker thread).
    async def aget(self, key: str) -> bytes | Missing:
        return self.get(key)

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | Missing]:
        return self.get_many(keys)

    async def aset(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self.set(key, value, ttl=ttl)

    def lock(self, key: str, *, ttl: float) -> MemoryLock:
        import secrets

        return MemoryLock(self, _LOCK + key, secrets.token_hex(16), ttl)


class MemoryLock(BaseLock):
    """A lease stored as an ordinary entry whose value is the owner token."""

    def __init__(self, store: MemoryBackend, key: str, token: str, ttl: float) -> None:
        super().__init__(key, token, ttl)
        self._store = store

    def acquire(self) -> bool:
        return self._store.add(self.key, self.token.encode(), ttl=self.ttl)

    def release(self) -> bool:
        with self._store._mutex:
            if self._store.get(self.key) == self.token.encode():
                return self._store._pop(self.key)
            return False

    def renew(self) -> bool:
        with self._store._mutex:
            if self._store.get(self.key) == self.token.encode():
                self._store._put(self.key, self.token.encode(), time.monotonic() + self.ttl)
                return True
            return False
