"""Get-or-compute for one memoized function: lookup -> (lock -> re-check) -> call -> store.

The sync and async paths share everything except the waiting and the I/O calls: key building,
decoding, statistics, the circuit breaker and store policy live in :class:`Engine` helpers.

Single-flight has two layers. Threads (or tasks) of one process share one in-flight computation
through a ``_Flight`` (no backend polling). Processes and machines coordinate through the
backend's lease lock (owner token, TTL, compare-and-delete release), renewed by a heartbeat
while the function runs, and re-check the cache after acquiring. The lock is an optimisation:
if it is lost, evicted or the store is down, a value is computed twice, never wrong.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import asyncio

from persistmemo.backends.base import MISSING, Lock, Missing
from persistmemo.errors import BackendError, DecodeError, KeyEncodingError, SerializationError

if TYPE_CHECKING:
    from persistmemo._cache import Cache
    from persistmemo.keys import KeyBuilder

__all__ = ["CacheInfo", "Engine", "UncacheableResultWarning"]



def _log() -> Any:
    import logging  # lazily: logging costs ~5 ms of `import persistmemo`

    return logging.getLogger("persistmemo")
_POLL_FIRST = 0.002
_POLL_MAX = 0.01  # waiters re-check at least every 10 ms (a read-only check on every store)


class UncacheableResultWarning(UserWarning):
    """A result could not be encoded, so it was returned but not stored."""


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
    """Mutable counters (a plain object: += under the GIL is good enough for statistics)."""

    __slots__ = CacheInfo._fields

    def __init__(self) -> None:
        self.hits = self.misses = self.stores = self.errors = 0
        self.decode_failures = self.lock_waits = self.lock_timeouts = 0

    def snapshot(self) -> CacheInfo:
        """Return the counters as an immutable :class:`CacheInfo`."""
        return CacheInfo(*(getattr(self, f) for f in CacheInfo._fields))


class _Flight:
    """One in-flight computation in this process, shared by the threads that want it."""

    __slots__ = ("done", "has_value", "owner", "raw", "value")

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.done = threading.Event()
        self.raw: bytes | None = None  # the encoded result, decoded afresh by each waiter
        # A result the codec cannot encode is handed to waiters as the same object (as
        # functools.lru_cache would) rather than computed again by each of them in turn.
        self.value: Any = None
        self.has_value = False


_Outcome = tuple[Any, "bytes | Missing | None", bool]


class _Renewer:
    """One daemon thread per process renewing every held lease at a third of its TTL.

    Registering a lease is the common case on every locked miss, so it must be cheap: the thread
    is only woken when the new lease is due before its current wake-up time.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[Lock, float]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake_at = float("inf")

    def add(self, lock: Lock) -> None:
        due = time.monotonic() + lock.ttl / 3
        with self._cond:
            self._held[id(lock)] = (lock, due)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="persistmemo-renew",
                                                daemon=True)
                self._thread.start()
            elif due < self._wake_at:
                self._cond.notify()

    def discard(self, lock: Lock) -> None:
        with self._cond:
            self._held.pop(id(lock), None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [lk for lk, at in self._held.values() if at <= now]
                for lk in due:
                    self._held[id(lk)] = (lk, now + lk.ttl / 3)
                self._wake_at = min((at for _, at in self._held.values()), default=now + 60)
                if not due:
                    self._cond.wait(max(0.0, self._wake_at - now))
                    continue
            for lk in due:
                try:
                    if not lk.renew():
                        self.discard(lk)
                except Exception:  # a lost store: the lease lapses, at worst one recomputation
                    self.discard(lk)


_renewer = _Renewer()


def _reset_after_fork() -> None:
    global _renewer
    _renewer = _Renewer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class Engine:
    """Get-or-compute for one function on one :class:`~persistmemo.Cache`."""

    def __init__(
        self,
        cache: Cache,
        keys: KeyBuilder,
        func: Callable[..., Any],
        *,
        ttl: float | None,
        lock: bool,
        lock_ttl: float,
        lock_wait: float | None,
    ) -> None:
        self.cache = cache
        self.keys = keys
        self.func = func
        self.ttl = ttl
        self.use_lock = lock
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self.codec = cache.codec
        self.stats = Stats()
        self._flights: dict[str, _Flight] = {}
        self._aflights: dict[tuple[int, str], asyncio.Future[_Flight]] = {}
        self._mutex = threading.Lock()
        self._warned: set[str] = set()
        self._pid = os.getpid()

    # -- shared helpers ----------------------------------------------------------------------
    def _warn_once(self, tag: str, message: str, *args: Any) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            _log().warning(message, *args)

    def decode(self, raw: bytes | Missing, key: str, *, recheck: bool = False) -> Any:
        """Decode stored bytes; a failure is a miss (logged once per reason), returns MISSING.

        ``recheck``: the re-read after taking the lock; an entry that already failed to decode
        on the first read is not counted twice.
        """
        if raw is MISSING:
            return MISSING
        try:
            return self.codec.decode(raw, key=key).value  # type: ignore[arg-type]
        except DecodeError as exc:
            if not recheck:
                self._decode_failed(exc)
            return MISSING

    def _decode_failed(self, exc: DecodeError) -> None:
        self.stats.decode_failures += 1
        self.cache.stats.decode_failures += 1
        reason = str(exc).split(":", 1)[0]
        self._warn_once("decode:" + reason, "persistmemo: stored entry for %s could not be "
                        "used (%s); recomputing", self.keys.identity, exc)

    def encode(self, value: Any, key: str, duration: float) -> bytes | None:
        """Encode a result for storage, or warn once and return None if it cannot be."""
        try:
            blob = self.codec.encode(value, key=key, created=time.time(), duration=duration)
            limit = getattr(self.cache._backend, "max_value_size", None)
            if limit is not None and len(blob) > limit:  # e.g. Redis's 512 MB bulk limit
                raise SerializationError(
                    f"the stored entry would be {len(blob):,} bytes, more than this store "
                    f"accepts ({limit:,}); use a directory store for values this big")
            return blob
        except SerializationError as exc:
            tname = f"{type(value).__module__}.{type(value).__qualname__}"
            if "enc:" + tname not in self._warned:
                self._warned.add("enc:" + tname)
                msg = (f"persistmemo: result of {self.keys.identity}() not cached: {exc}")
                _log().warning("%s", msg)
                warnings.warn(msg, UncacheableResultWarning, stacklevel=5)
            return None

    def hit(self, value: Any) -> Any:
        self.stats.hits += 1
        self.cache.stats.hits += 1
        return value

    def _miss_counted(self) -> None:
        self.stats.misses += 1
        self.cache.stats.misses += 1

    def _store_counted(self) -> None:
        self.stats.stores += 1
        self.cache.stats.stores += 1

    # -- sync path -----------------------------------------------------------------------------
    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Return ``func(*args, **kwargs)``, from the cache when possible.

        This is the hit path, the hottest code in the library: keep it flat.
        """
        try:
            key = self.keys(args, kwargs)
        except KeyEncodingError:
            raise
        except TypeError:
            return self.func(*args, **kwargs)  # does not bind: let Python raise its own error
        cache = self.cache
        if not cache._down_until or cache.available():
            backend = cache._backend
            if backend is None:
                backend = cache.backend
            try:
                raw = backend.get(key)
            except BackendError as exc:
                cache.backend_failed(exc)
            else:
                if cache._down_until:
                    cache.backend_ok()
                if raw is not MISSING:
                    try:
                        value = self.codec.decode(raw, key=key).value  # type: ignore[arg-type]
                    except DecodeError as exc:
                        self._decode_failed(exc)
                    else:
                        self.stats.hits += 1
                        cache.stats.hits += 1
                        return value
        return self.compute(key, args, kwargs)

    def compute(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Compute (once per process and, with the lock, once across workers) and store."""
        if not self.use_lock:
            return self._run_and_store(key, args, kwargs, None)
        if os.getpid() != self._pid:  # forked: the parent's flights (and mutex) are not ours
            self._flights, self._mutex, self._pid = {}, threading.Lock(), os.getpid()
        with self._mutex:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            if flight.owner == threading.get_ident():  # recursion on the same key
                return self._run_and_store(key, args, kwargs, None)
            self.stats.lock_waits += 1
            if not flight.done.wait(self.lock_wait):  # waited long enough: compute ourselves
                self.stats.lock_timeouts += 1
                return self._run_and_store(key, args, kwargs, None)
            value = self._from_flight(flight, key)
            if value is not MISSING:
                return self.hit(value)
            return self.compute(key, args, kwargs)  # the leader raised: elect a new one
        try:
            return self._locked(key, args, kwargs, flight)
        finally:
            with self._mutex:
                self._flights.pop(key, None)
            flight.done.set()

    def _from_flight(self, flight: _Flight, key: str) -> Any:
        """The leader's result for a waiter: decoded afresh, or the object if unencodable."""
        if flight.raw is not None:
            return self.decode(flight.raw, key)
        return flight.value if flight.has_value else MISSING

    def _lock_steps(self, key: str) -> Generator[float, tuple[bool, bytes | Missing], _Outcome]:
        """The cross-worker waiting protocol, without I/O (shared by the sync and async paths).

        Yields the delay to sleep before the next ``acquire_and_get``; is sent its result.
        Returns ``(value, raw, acquired)``: a value (MISSING if none) and whether we hold the
        lease (then compute under it), or neither (waited ``lock_wait``: compute unlocked).
        """
        deadline = None if self.lock_wait is None else time.monotonic() + self.lock_wait
        delay, waited = 0.0, False
        while True:
            acquired, raw = yield delay
            value = self.decode(raw, key, recheck=True)
            if value is not MISSING:
                return value, raw, acquired
            if acquired:
                return MISSING, None, True
            if not waited:
                waited = True
                self.stats.lock_waits += 1
                self.cache.stats.lock_waits += 1
            if deadline is not None and time.monotonic() >= deadline:
                self.stats.lock_timeouts += 1
                self.cache.stats.lock_timeouts += 1
                return MISSING, None, False
            delay = min(max(delay * 1.5, _POLL_FIRST), _POLL_MAX)

    def _locked(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                flight: _Flight) -> Any:
        cache = self.cache
        if not cache.available():
            return self._run_and_store(key, args, kwargs, None, flight)
        backend = cache.backend
        lock = backend.lock(key, ttl=self.lock_ttl)
        steps = self._lock_steps(key)
        delay = next(steps)
        try:
            while True:
                if delay:
                    time.sleep(delay)
                try:
                    result = backend.acquire_and_get(lock, key)
                except BackendError as exc:
                    cache.backend_failed(exc)
                    return self._run_and_store(key, args, kwargs, None, flight)
                delay = steps.send(result)
        except StopIteration as done:
            value, raw, acquired = done.value
        if value is MISSING:
            return self._run_and_store(key, args, kwargs, lock if acquired else None, flight)
        if acquired:
            self._release(lock)
        flight.raw = raw
        return self.hit(value)

    def _release(self, lock: Lock) -> None:
        try:
            lock.release()
        except BackendError as exc:
            self.cache.backend_failed(exc)

    def _started(self, lock: Lock | None) -> float:
        """Bookkeeping before the function runs; returns the start time."""
        self._miss_counted()
        if lock is not None:
            _renewer.add(lock)
        return time.perf_counter()

    def _finished(self, key: str, value: Any, start: float, lock: Lock | None,
                  flight: _Flight | None) -> bytes | None:
        """Bookkeeping after the function returned: the encoded result, or None to skip."""
        duration = time.perf_counter() - start
        if lock is not None:
            _renewer.discard(lock)
        raw = self.encode(value, key, duration)
        if flight is not None:
            flight.raw, flight.value, flight.has_value = raw, value, True
        if raw is not None and not (lock is not None or self.cache.available()):
            return None  # the store is in its back-off window: don't even try
        return raw

    def _run_and_store(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                       lock: Lock | None, flight: _Flight | None = None) -> Any:
        start = self._started(lock)
        try:
            value = self.func(*args, **kwargs)
        except BaseException:
            if lock is not None:
                _renewer.discard(lock)
                self._release(lock)  # waiters take over at once, not after the lease
            raise
        raw = self._finished(key, value, start, lock, flight)
        if raw is None:
            if lock is not None:
                self._release(lock)
            return value
        try:
            self.cache.backend.set_and_release(key, raw, ttl=self.ttl, lock=lock)
            self._store_counted()
        except BackendError as exc:
            self.cache.backend_failed(exc)
        return value

    # -- async path ----------------------------------------------------------------------------
    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Await ``func(*args, **kwargs)``, from the cache when possible."""
        try:
            key = self.keys(args, kwargs)
        except KeyEncodingError:
            raise
        except TypeError:
            return await self.func(*args, **kwargs)
        cache = self.cache
        if cache.available():
            try:
                value = self.decode(await cache.backend.aget(key), key)
            except BackendError as exc:
                cache.backend_failed(exc)
            else:
                if cache._down_until:
                    cache.backend_ok()
                if value is not MISSING:
                    return self.hit(value)
        return await self.acompute(key, args, kwargs)

    async def acompute(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The async twin of :meth:`compute` (tasks of one event loop share one flight)."""
        import asyncio

        if not self.use_lock:
            return await self._arun_and_store(key, args, kwargs, None)
        loop = asyncio.get_running_loop()
        fkey = (id(loop), key)
        fut = self._aflights.get(fkey)
        if fut is not None:  # another task of this loop computes it: wait for its result
            self.stats.lock_waits += 1
            try:
                flight = await asyncio.wait_for(asyncio.shield(fut), self.lock_wait)
            except asyncio.TimeoutError:
                self.stats.lock_timeouts += 1
                return await self._arun_and_store(key, args, kwargs, None)
            value = self._from_flight(flight, key)
            if value is not MISSING:
                return self.hit(value)
            return await self.acompute(key, args, kwargs)  # the leader raised: elect a new one
        fut = self._aflights[fkey] = loop.create_future()
        flight = _Flight()
        try:
            return await self._alocked(key, args, kwargs, flight)
        finally:
            self._aflights.pop(fkey, None)
            if not fut.done():
                fut.set_result(flight)

    async def _alocked(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                       flight: _Flight) -> Any:
        import asyncio

        cache = self.cache
        if not cache.available():
            return await self._arun_and_store(key, args, kwargs, None, flight)
        backend = cache.backend
        lock = backend.lock(key, ttl=self.lock_ttl)
        steps = self._lock_steps(key)
        delay = next(steps)
        try:
            while True:
                if delay:
                    await asyncio.sleep(delay)
                try:
                    result = await backend.aacquire_and_get(lock, key)
                except BackendError as exc:
                    cache.backend_failed(exc)
                    return await self._arun_and_store(key, args, kwargs, None, flight)
                delay = steps.send(result)
        except StopIteration as done:
            value, raw, acquired = done.value
        if value is MISSING:
            return await self._arun_and_store(key, args, kwargs, lock if acquired else None,
                                              flight)
        if acquired:
            await self._arelease(lock)
        flight.raw = raw
        return self.hit(value)

    async def _arelease(self, lock: Lock) -> None:
        try:
            await self.cache.backend.arelease(lock)
        except BackendError as exc:
            self.cache.backend_failed(exc)

    async def _arun_and_store(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                              lock: Lock | None, flight: _Flight | None = None) -> Any:
        start = self._started(lock)
        try:
            coro: Awaitable[Any] = self.func(*args, **kwargs)
            value = await coro
        except BaseException:
            if lock is not None:
                import asyncio

                _renewer.discard(lock)
                await asyncio.shield(self._arelease(lock))
            raise
        raw = self._finished(key, value, start, lock, flight)
        if raw is None:
            if lock is not None:
                await self._arelease(lock)
            return value
        try:
            await self.cache.backend.aset_and_release(key, raw, ttl=self.ttl, lock=lock)
            self._store_counted()
        except BackendError as exc:
            self.cache.backend_failed(exc)
        return value
