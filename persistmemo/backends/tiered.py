"""A local tier in front of a shared store: one backend composed of two, for the engine.

``Cache("redis://...", local="memory")`` reads the process's memory first and Redis only on a
local miss (promoting what it finds), so repeated hits cost no round trip; stores, deletions and
clears reach both tiers.

Why no pub/sub (or any invalidation channel) is needed: keys are content addresses. A key names
the code and the arguments, so the value under it never changes; it only appears (stored) or
disappears (expired, evicted, invalidated). Appearing needs no coherence at all. Disappearing is
bounded by ``local_ttl``: a local copy is trusted for at most ``local_ttl`` seconds (default 60),
and never beyond the entry's own TTL, so after another worker invalidates an entry (or a deploy
clears the store) this process may serve its copy for at most ``local_ttl`` more seconds.

When the shared store is unreachable the local tier keeps serving and storing (failures of the
shared store are logged once and skipped for ``backoff`` seconds, like the cache's breaker);
leases fall back to the local tier's own, so threads/processes on this machine still coordinate.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from persistmemo._breaker import Breaker
from persistmemo.backends.base import MISSING, BaseBackend, Lock, Missing
from persistmemo.errors import BackendError

__all__ = ["TieredBackend", "TieredLock"]

_UNKNOWN = -1.0  # remaining TTL the shared store cannot tell


def _get_with_ttl(store: BaseBackend, key: str) -> tuple[bytes | Missing, float | None]:
    """The value and its remaining TTL (``None``: none, -1: unknown), for promotion.

    A store may offer ``get_with_ttl(key)`` itself (the memory store does); Redis pipelines
    GET + PTTL (one round trip); the disk store reads diskcache's expiry. A third-party store
    that cannot tell gets copies trusted for ``local_ttl``.
    """
    native = getattr(store, "get_with_ttl", None)
    if native is not None:
        return native(key)  # type: ignore[no-any-return]
    if type(store).__name__ == "RedisBackend":  # GET + PTTL pipelined: still one round trip
        with store._guard:  # type: ignore[attr-defined]
            pipe = store._sync().pipeline(transaction=False)  # type: ignore[attr-defined]
            value, ms = pipe.get(key).pttl(key).execute()
        if value is None:
            return MISSING, None
        return value, (None if ms is None or ms < 0 else ms / 1000)
    value = store.get(key)
    if value is not MISSING and type(store).__name__ == "DiskBackend":
        try:  # a second indexed read, only when a shared hit is promoted
            found, expire = store.cache.get(key, None, expire_time=True)  # type: ignore[attr-defined]
        except Exception:  # the value itself was read fine: promote for local_ttl
            return value, _UNKNOWN
        return value, (None if found is None or expire is None else expire - time.time())
    return value, _UNKNOWN


class TieredBackend(BaseBackend):
    """``local`` in front of ``shared``; local copies live at most ``local_ttl`` seconds.

    Args:
        local: the fast tier (a :class:`~persistmemo.backends.memory.MemoryBackend` or a
            local :class:`~persistmemo.backends.disk.DiskBackend`).
        shared: the store every worker sees (Redis, a shared disk, any backend).
        local_ttl: seconds a local copy is trusted (the staleness bound after an
            invalidation elsewhere).
        backoff: seconds the shared store is skipped after it was found unreachable.
    """

    def __init__(self, local: BaseBackend, shared: BaseBackend, *, local_ttl: float = 60.0,
                 backoff: float = 5.0) -> None:
        self.local, self.shared = local, shared
        self.local_ttl = float(local_ttl)
        self.name = f"{local.name}+{shared.name}"
        self.stable_reads = bool(getattr(local, "stable_reads", False))
        self._shared_breaker = Breaker(backoff=backoff, fail_open=True, label=shared)
        self._local_breaker = Breaker(backoff=backoff, fail_open=True, label=local)
        self._failures = 0  # absorbed store failures, taken by the engine for its counters
        self._failures_mutex = threading.Lock()

    @classmethod
    def build(cls, local: str | os.PathLike[str], shared: BaseBackend, *, max_bytes: int,
              local_ttl: float, backoff: float = 5.0) -> TieredBackend:
        """Build the tier ``Cache(local=...)`` asks for: ``"memory"`` or a directory path."""
        if local == "memory":
            from persistmemo.backends.memory import MemoryBackend

            return cls(MemoryBackend(max_bytes=max_bytes), shared, local_ttl=local_ttl,
                       backoff=backoff)
        from persistmemo.backends.disk import DiskBackend

        return cls(DiskBackend(local), shared, local_ttl=local_ttl, backoff=backoff)

    def __repr__(self) -> str:
        return f"<TieredBackend local={self.local!r} shared={self.shared!r}>"

    # -- guarded access to each tier -------------------------------------------------------
    def _try(self, breaker: Breaker, default: Any, op: Any, *args: Any, **kw: Any) -> Any:
        if not breaker.available():
            return default
        try:
            result = op(*args, **kw)
        except BackendError as exc:
            self._failed(breaker, exc)
            return default
        breaker.ok()
        return result

    def _failed(self, breaker: Breaker, exc: BackendError) -> None:
        breaker.failed(exc)
        with self._failures_mutex:
            self._failures += 1

    def take_failures(self) -> int:
        """How many store failures this tier absorbed since the last call (then zero).

        The engine adds them to its ``errors`` counter: a failure served from the other tier
        is still a failure the user should see in ``cache_info()``/``Cache.info()``.
        """
        if not self._failures:  # the hot path: no lock
            return 0
        with self._failures_mutex:
            n, self._failures = self._failures, 0
        return n

    def _local_ttl(self, ttl: float | None) -> float:
        return self.local_ttl if ttl is None or ttl < 0 else min(self.local_ttl, ttl)

    def _promote(self, key: str, value: bytes, ttl: float | None) -> None:
        if ttl == _UNKNOWN:
            ttl = None  # a store that cannot say: trust the copy for local_ttl
        if ttl is None or ttl > 0:
            self._try(self._local_breaker, None, self.local.set, key, value,
                      ttl=self._local_ttl(ttl))

    # -- primitives ------------------------------------------------------------------------
    def get(self, key: str) -> bytes | Missing:
        if not self._local_breaker.down_until:  # the hit path: no helper call
            try:
                value = self.local.get(key)
            except BackendError as exc:
                self._failed(self._local_breaker, exc)
            else:
                if value is not MISSING:
                    return value
        found, ttl = self._try(self._shared_breaker, (MISSING, None), _get_with_ttl,
                               self.shared, key)
        if isinstance(found, bytes):
            self._promote(key, found, ttl)
        return found  # type: ignore[no-any-return]

    async def aget(self, key: str) -> bytes | Missing:
        """A local hit without a thread hop; the shared store through its own async twin."""
        inline = getattr(self.local, "stable_reads", False)  # the in-process memory tier
        if inline and not self._local_breaker.down_until:
            try:
                value = self.local.get(key)  # in-process memory: no I/O to await
            except BackendError as exc:
                self._failed(self._local_breaker, exc)
            else:
                if value is not MISSING:
                    return value
        return await super().aget(key)  # (a local disk tier and promotion run in a thread)

    def get_many(self, keys: Sequence[str]) -> list[bytes | Missing]:
        found: list[bytes | Missing] = self._try(self._local_breaker, [MISSING] * len(keys),
                                                 self.local.get_many, keys)
        todo = [k for k, v in zip(keys, found) if v is MISSING]
        if todo:
            more = iter(self._try(self._shared_breaker, [MISSING] * len(todo),
                                  self.shared.get_many, todo))
            # Not promoted: a batch read does not return remaining TTLs, and a copy must never
            # outlive its entry. The next single read of a key promotes it.
            found = [next(more) if v is MISSING else v for v in found]
        return found

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._try(self._local_breaker, None, self.local.set, key, value, ttl=self._local_ttl(ttl))
        self._try(self._shared_breaker, None, self.shared.set, key, value, ttl=ttl)

    def set_many(self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None) -> None:
        self._try(self._local_breaker, None, self.local.set_many, items,
                  ttl=self._local_ttl(ttl))
        self._try(self._shared_breaker, None, self.shared.set_many, items, ttl=ttl)

    def delete(self, key: str) -> bool:
        here = self._try(self._local_breaker, False, self.local.delete, key)
        there = self._try(self._shared_breaker, False, self.shared.delete, key)
        return bool(here or there)

    def clear(self, prefix: str = "") -> int:
        here = self._try(self._local_breaker, 0, self.local.clear, prefix)
        there = self._try(self._shared_breaker, 0, self.shared.clear, prefix)
        return max(int(here), int(there))

    def keys(self, prefix: str = "") -> Iterator[str]:
        seen = set(self._try(self._shared_breaker, [], lambda: list(self.shared.keys(prefix))))
        seen.update(self._try(self._local_breaker, [], lambda: list(self.local.keys(prefix))))
        return iter(sorted(seen))

    def lock(self, key: str, *, ttl: float) -> TieredLock:
        return TieredLock(self, key, ttl)

    def close(self) -> None:
        self.local.close()
        self.shared.close()

    # -- miss-path composites --------------------------------------------------------------
    def acquire_and_get(self, lock: Lock, key: str) -> tuple[bool, bytes | Missing]:
        value = self._try(self._local_breaker, MISSING, self.local.get, key)
        if value is not MISSING:
            return False, value
        assert isinstance(lock, TieredLock)
        if self._shared_breaker.available():
            try:
                acquired, value = self.shared.acquire_and_get(lock.shared, key)
            except BackendError as exc:
                self._failed(self._shared_breaker, exc)
            else:
                lock.holder = lock.shared if acquired else None
                return acquired, value
        acquired = lock.acquire_local()
        return acquired, MISSING

    def set_and_release(self, key: str, value: bytes, *, ttl: float | None,
                        lock: Lock | None) -> None:
        try:
            self.set(key, value, ttl=ttl)
        finally:
            if lock is not None:
                lock.release()


class TieredLock:
    """The shared store's lease, or the local tier's while the shared store is down."""

    def __init__(self, tier: TieredBackend, key: str, ttl: float) -> None:
        self.key, self.ttl, self._tier = key, float(ttl), tier
        self.shared = tier.shared.lock(key, ttl=ttl)
        self.local = tier.local.lock(key, ttl=ttl)
        self.token = self.shared.token
        self.holder: Lock | None = None

    def acquire_local(self) -> bool:
        ok = self._tier._try(self._tier._local_breaker, False, self.local.acquire)
        self.holder = self.local if ok else None
        return bool(ok)

    def acquire(self) -> bool:
        breaker = self._tier._shared_breaker
        if breaker.available():
            try:
                ok = self.shared.acquire()
            except BackendError as exc:
                self._tier._failed(breaker, exc)
            else:
                self.holder = self.shared if ok else None
                return ok
        return self.acquire_local()

    def _holder_op(self, name: str) -> bool:
        holder = self.holder
        if holder is None:  # never acquired here: only the shared store can tell (stale token)
            holder = self.shared
        breaker = self._tier._shared_breaker if holder is self.shared else self._tier._local_breaker
        return bool(self._tier._try(breaker, False, getattr(holder, name)))

    def release(self) -> bool:
        released = self._holder_op("release")
        self.holder = None if released else self.holder
        return released

    def renew(self) -> bool:
        return self._holder_op("renew")
