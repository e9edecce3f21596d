"""A third-party-style store with only the seven documented primitives (no base class)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

from persistmemo import MISSING


class DuckLock:
    """A lease in a :class:`DuckStore`: owner token, TTL, compare-and-delete release."""

    def __init__(self, store: DuckStore, key: str, ttl: float) -> None:
        self.store, self.key, self.ttl = store, "lock:" + key, float(ttl)
        self.token = secrets.token_hex(8)

    def _mine(self) -> bool:
        return self.store._live(self.key) == self.token.encode()

    def acquire(self) -> bool:
        with self.store.mutex:
            if self.store._live(self.key) is not MISSING:
                return False
            self.store.data[self.key] = (self.token.encode(), time.monotonic() + self.ttl)
            return True

    def release(self) -> bool:
        with self.store.mutex:
            if self._mine():
                del self.store.data[self.key]
                return True
            return False

    def renew(self) -> bool:
        with self.store.mutex:
            if self._mine():
                self.store.data[self.key] = (self.token.encode(), time.monotonic() + self.ttl)
                return True
            return False


class DuckStore:
    """In-memory store honouring TTLs; it cannot report an entry's remaining TTL."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float | None]] = {}
        self.mutex = threading.RLock()

    def _live(self, key: str) -> Any:
        entry = self.data.get(key)
        if entry is None:
            return MISSING
        if entry[1] is not None and entry[1] < time.monotonic():
            del self.data[key]
            return MISSING
        return entry[0]

    def get(self, key: str) -> Any:
        with self.mutex:
            return self._live(key)

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        with self.mutex:
            self.data[key] = (bytes(value), None if ttl is None else time.monotonic() + ttl)

    def delete(self, key: str) -> bool:
        with self.mutex:
            return self._live(key) is not MISSING and self.data.pop(key, None) is not None

    def clear(self, prefix: str = "") -> int:
        with self.mutex:
            gone = [k for k in self.data if k.startswith(prefix) and not k.startswith("lock:")]
            for k in gone:
                del self.data[k]
            return len(gone)

    def keys(self, prefix: str = "") -> Iterator[str]:
        with self.mutex:
            return iter([k for k in list(self.data) if k.startswith(prefix)
                         and not k.startswith("lock:") and self._live(k) is not MISSING])

    def lock(self, key: str, *, ttl: float) -> DuckLock:
        return DuckLock(self, key, ttl)

    def close(self) -> None:
        pass
