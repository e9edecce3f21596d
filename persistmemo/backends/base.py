"""The :class:`Backend` protocol every store implements, and the ``MISSING`` sentinel.

Backends are deliberately small and bytes-only: keys are ``str``, values are ``bytes``. Encoding,
integrity checks, TTL policy and stampede logic live above them (``codec``, ``_engine``), so a new
store needs only a handful of methods. :class:`BaseBackend` supplies the composite operations
(``get_many``, ``acquire_and_get`` ...) and the async twins (through a worker thread) on top of the
primitives; a backend overrides them when it can do better (Redis pipelines them into one round
trip, ``redis.asyncio`` serves the async twins natively).

Every backend raises :class:`persistmemo.errors.BackendError` (or ``BackendUnavailable``) for
store failures, never the driver's own exceptions: the engine turns those into fail-open misses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

__all__ = ["MISSING", "PRIMITIVES", "Backend", "BaseBackend", "BaseLock", "Lock", "Missing",
           "adapt"]


T = TypeVar("T")


async def _to_thread(func: Callable[..., T], *args: Any) -> T:
    import asyncio  # imported lazily: asyncio alone costs ~30 ms at import time

    return await asyncio.to_thread(func, *args)


class Missing:
    """Type of :data:`MISSING`: the result of a lookup that found nothing (``None`` is a value)."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


@runtime_checkable
class Lock(Protocol):
    """A lease on one key: an owner token, a TTL, and compare-and-delete release.

    The lock is an efficiency device (one computation instead of N), never a correctness one:
    a lease can expire or be evicted, and then at worst two workers compute the same value.
    """

    key: str
    token: str
    ttl: float

    def acquire(self) -> bool:
        """Try once, without waiting; return True if this token now holds the lease."""
        ...

    def release(self) -> bool:
        """Delete the lease if (and only if) this token still holds it; return whether it did."""
        ...

    def renew(self) -> bool:
        """Extend the lease to ``ttl`` from now if this token still holds it."""
        ...


@runtime_checkable
class Backend(Protocol):
    """The primitives every store implements: bytes in, bytes out, ``str`` keys.

    That is the whole contract: :func:`adapt` derives everything else (batches, the miss-path
    composites, the async twins) for an object that only has these, so a third-party store
    needs no base class. Subclass :class:`BaseBackend` to override a derived method when the
    store can do better (Redis pipelines ``acquire_and_get`` into one round trip).

    - ``get(key)``: the value, or :data:`MISSING` (``None`` is never a miss marker).
    - ``set(key, value, *, ttl)``: store, replacing; ``ttl`` seconds or ``None`` (forever).
    - ``delete(key)``: whether something was deleted.
    - ``clear(prefix)``: delete the keys starting with ``prefix``; how many.
    - ``keys(prefix)``: iterate the live keys starting with ``prefix``.
    - ``lock(key, *, ttl)``: a :class:`Lock` (lease) on ``key``, not yet acquired.
    - ``close()``: release connections and files.

    Store failures raise :class:`~persistmemo.errors.BackendError` (``BackendUnavailable``
    when the store cannot be reached); anything else is a bug in the store.
    """

    def get(self, key: str) -> bytes | Missing: ...
    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None: ...
    def delete(self, key: str) -> bool: ...
    def clear(self, prefix: str = "") -> int: ...
    def keys(self, prefix: str = "") -> Iterator[str]: ...
    def lock(self, key: str, *, ttl: float) -> Lock: ...
    def close(self) -> None: ...


PRIMITIVES: Final = ("get", "set", "delete", "clear", "keys", "lock", "close")


def adapt(store: Any) -> BaseBackend:
    """Return ``store`` as a :class:`BaseBackend` (itself if it is one, else an adapter).

    Raises:
        TypeError: ``store`` lacks one of the :class:`Backend` primitives (named).
    """
    if isinstance(store, BaseBackend):
        return store
    missing = [name for name in PRIMITIVES if not callable(getattr(store, name, None))]
    if missing:
        raise TypeError(f"{type(store).__name__} is not a persistmemo backend: it lacks "
                        f"{missing!r} (see persistmemo.backends.Backend)")
    return _Adapted(store)


class BaseBackend:
    """Default composite and async methods built on a backend's primitives.

    Subclasses implement the :class:`Backend` primitives (``get``, ``set``, ``delete``,
    ``clear``, ``keys``, ``lock``, ``close``); everything below derives from them.
    """

    name: str = "base"

    # -- primitives (subclasses implement) --------------------------------------------------
    def get(self, key: str) -> bytes | Missing:  # pragma: no cover - abstract
        raise NotImplementedError

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def delete(self, key: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def clear(self, prefix: str = "") -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def keys(self, prefix: str = "") -> Iterator[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def lock(self, key: str, *, ttl: float) -> Lock:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and file handles (the backend reopens lazily if used again)."""

    # -- composites -------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> list[bytes | Missing]:
        """Look up several keys; the result is aligned with ``keys``."""
        return [self.get(k) for k in keys]

    def set_many(self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None) -> None:
        """Store several entries with one TTL."""
        for key, value in items:
            self.set(key, value, ttl=ttl)

    def acquire_and_get(self, lock: Lock, key: str) -> tuple[bool, bytes | Missing]:
        """Try the lock and re-read ``key`` (one round trip where the store allows it)."""
        acquired = lock.acquire()
        try:
            value = self.get(key)
        except BaseException:
            if acquired:
                lock.release()
            raise
        return acquired, value

    def set_and_release(
        self, key: str, value: bytes, *, ttl: float | None, lock: Lock | None
    ) -> None:
        """Store ``value`` then release ``lock`` (if any), even when the store fails."""
        try:
            self.set(key, value, ttl=ttl)
        finally:
            if lock is not None:
                lock.release()

    # -- async twins (a worker thread; never blocks the event loop on I/O) -------------------
    async def aget(self, key: str) -> bytes | Missing:
        return await _to_thread(self.get, key)

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | Missing]:
        return await _to_thread(self.get_many, keys)

    async def aset(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await _to_thread(lambda: self.set(key, value, ttl=ttl))

    async def adelete(self, key: str) -> bool:
        return await _to_thread(self.delete, key)

    async def aacquire_and_get(self, lock: Lock, key: str) -> tuple[bool, bytes | Missing]:
        return await _to_thread(self.acquire_and_get, lock, key)

    async def aset_and_release(
        self, key: str, value: bytes, *, ttl: float | None, lock: Lock | None
    ) -> None:
        await _to_thread(lambda: self.set_and_release(key, value, ttl=ttl, lock=lock))

    async def arelease(self, lock: Lock) -> bool:
        return await _to_thread(lock.release)

    async def aset_many(self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None
                        ) -> None:
        await _to_thread(lambda: self.set_many(items, ttl=ttl))

    async def aclear(self, prefix: str = "") -> int:
        return await _to_thread(self.clear, prefix)

    def release(self, lock: Lock) -> bool:
        """Release ``lock`` (a step of the engine's protocol, so it has an async twin)."""
        return lock.release()

    def acquire(self, lock: Lock) -> bool:
        """Try ``lock`` once (a step of the engine's protocol, so it has an async twin)."""
        return lock.acquire()

    async def aacquire(self, lock: Lock) -> bool:
        return await _to_thread(lock.acquire)

    def __enter__(self) -> BaseBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Adapted(BaseBackend):
    """A duck-typed store (only the primitives) behind the full :class:`BaseBackend` API."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.name = str(getattr(store, "name", type(store).__name__))

    def __repr__(self) -> str:
        return repr(self.store)

    def get(self, key: str) -> bytes | Missing:
        return self.store.get(key)  # type: ignore[no-any-return]

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self.store.set(key, value, ttl=ttl)

    def delete(self, key: str) -> bool:
        return bool(self.store.delete(key))

    def clear(self, prefix: str = "") -> int:
        return int(self.store.clear(prefix))

    def keys(self, prefix: str = "") -> Iterator[str]:
        return iter(self.store.keys(prefix))

    def lock(self, key: str, *, ttl: float) -> Lock:
        return self.store.lock(key, ttl=ttl)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.store.close()


class BaseLock:
    """Shared state of a lease: key, random owner token, TTL in seconds."""

    def __init__(self, key: str, token: str, ttl: float) -> None:
        if not ttl or ttl <= 0:
            raise ValueError(f"lock ttl must be > 0 seconds, got {ttl!r}")
        self.key = key
        self.token = token
        self.ttl = float(ttl)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} key={self.key!r} ttl={self.ttl}>"
