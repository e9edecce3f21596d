"""An in-process backend: a dict with expiry. For tests, notebooks and as a reference store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from persistmemo.backends.base import MISSING, BaseBackend, BaseLock, Missing

__all__ = ["MemoryBackend", "MemoryLock"]


class MemoryBackend(BaseBackend):
    """Keep entries in this process's memory (thread-safe; lost when the process exits)."""

    name = "memory"

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._mutex = threading.RLock()

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
                    del self._data[key]
            return MISSING
        return value

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        deadline = None if ttl is None else time.monotonic() + ttl
        with self._mutex:
            self._data[key] = (bytes(value), deadline)

    def add(self, key: str, value: bytes, *, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent or expired; return whether it did."""
        with self._mutex:
            if self.get(key) is not MISSING:
                return False
            self._data[key] = (value, None if ttl is None else time.monotonic() + ttl)
            return True

    def delete(self, key: str) -> bool:
        with self._mutex:
            return self._data.pop(key, None) is not None

    def clear(self, prefix: str = "") -> int:
        with self._mutex:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for k in doomed:
                del self._data[k]
        return len(doomed)

    def keys(self, prefix: str = "") -> Iterator[str]:
        with self._mutex:
            found = [k for k in self._data if k.startswith(prefix)]
        for k in found:
            if not k.startswith("lock:") and self.get(k) is not MISSING:
                yield k

    def lock(self, key: str, *, ttl: float) -> MemoryLock:
        import secrets

        return MemoryLock(self, "lock:" + key, secrets.token_hex(16), ttl)


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
                del self._store._data[self.key]
                return True
            return False

    def renew(self) -> bool:
        with self._store._mutex:
            if self._store.get(self.key) == self.token.encode():
                self._store._data[self.key] = (self.token.encode(), time.monotonic() + self.ttl)
                return True
            return False
