"""Get-or-compute as a sans-I/O protocol: lookup -> (lease -> re-check) -> compute -> store.

:class:`Engine` methods :meth:`~Engine.call`, :meth:`~Engine.refresh` and :meth:`~Engine.map`
are generators that never do I/O themselves: they *yield* steps (a backend operation, "compute",
"sleep", "join/wait for a flight") and are *sent* the results (or have the exception thrown
into them). The drivers in :mod:`persistmemo._drivers` execute the steps, synchronously or with
``await``; that is the only difference between the sync and async paths. Counters are updated
here, once per event, never by the drivers.

Single-flight has two layers. Threads (or tasks) of one process share one computation through a
:class:`~persistmemo._lease.Flight`. Processes and machines coordinate through the backend's
lease (owner token, TTL, compare-and-delete release), renewed while the function runs, and
re-check the cache after acquiring. The lease is an optimisation: if it is lost, evicted or the
store is down, a value is computed twice, never wrong.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from persistmemo import _usage
from persistmemo._lease import FOLLOWER, LEADER, Flight, renewer
from persistmemo._observe import Observer
from persistmemo._stats import CacheInfo, Stats
from persistmemo.backends.base import MISSING, Lock
from persistmemo.errors import BackendError, DecodeError, KeyEncodingError, SerializationError

if TYPE_CHECKING:
    from persistmemo._breaker import Breaker
    from persistmemo._options import Options
    from persistmemo._usage import Recorder
    from persistmemo.backends.base import BaseBackend
    from persistmemo.codec import Codec
    from persistmemo.keys import KeyBuilder

__all__ = ["COMPUTE", "IO", "JOIN", "SLEEP", "WAIT", "CacheInfo", "Engine", "Steps",
           "UncacheableResultWarning"]

# Step kinds: (kind, target, args, kwargs). IO: target names a backend method (its async twin
# is "a" + target). COMPUTE: call the function with args/kwargs (target: the lease held).
# SLEEP: args[0] seconds. JOIN: join the flight of key args[0]; sent (flight, role). WAIT: wait
# up to args[0] seconds for flight ``target``; sent whether it finished.
IO, COMPUTE, SLEEP, JOIN, WAIT = "io", "compute", "sleep", "join", "wait"
Step = tuple[str, Any, tuple[Any, ...], dict[str, Any]]
Steps = Generator[Step, Any, Any]
_NOKW: dict[str, Any] = {}
_POLL_FIRST = 0.002
_POLL_MAX = 0.01  # waiters re-check at least every 10 ms (a read-only check on every store)
_SEEN_MAX = 1024
_FROZEN = frozenset({int, float, complex, str, bytes, bool, type(None)})


def frozen(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is deeply immutable (scalars, and tuples/frozensets of them)."""
    t = type(value)
    if t in _FROZEN:
        return True
    if (t is tuple or t is frozenset) and depth < 4 and len(value) <= 64:
        return all(frozen(v, depth + 1) for v in value)
    return False


def _log() -> Any:
    import logging  # lazily: logging costs ~5 ms of `import persistmemo`

    return logging.getLogger("persistmemo")


class UncacheableResultWarning(UserWarning):
    """A result could not be encoded, so it was returned but not stored."""


class Engine(Observer):
    """Get-or-compute for one function: its key builder, options, codec, store and counters."""

    def __init__(self, *, keys: KeyBuilder, func: Callable[..., Any], options: Options,
                 codec: Codec, backend: BaseBackend, breaker: Breaker, stats: Stats,
                 usage: Recorder | None = None) -> None:
        from persistmemo._lease import Flights

        self.keys, self.func, self.options, self.codec = keys, func, options, codec
        self.backend, self.breaker = backend, breaker
        self.stats = Stats(parent=stats)
        self.flights = Flights()
        self._warned: set[str] = set()
        self._seen: dict[str, tuple[bytes, Any, float, bytes, float | None]] = {}
        self._stable = bool(getattr(backend, "stable_reads", False))
        # Persisted, cross-worker statistics (batched by the recorder; see _usage).
        self.usage = usage
        self.urow = usage.row((keys.namespace, keys.identity)) if usage else [0, 0, 0.0, 0.0]
        self.generation = 0  # of the default cache this engine was built for
        self.disabled = False  # PERSISTMEMO_DISABLE, read when the engine is built
        self._logger = _log()
        # The biggest entry the store accepts (Redis: 512 MB), also behind a local tier.
        self._max_value: int | None = getattr(backend, "max_value_size", None) or getattr(
            getattr(backend, "shared", None), "max_value_size", None)
        # A composite store (the local tier) that keeps serving when one of its stores fails
        # reports those failures here, so they reach the counters like any other store error.
        self._take_failures = getattr(backend, "take_failures", None)

    # -- pure helpers ----------------------------------------------------------------------
    def _warn_once(self, tag: str, message: str, *args: Any) -> bool:
        if tag in self._warned:
            return False
        self._warned.add(tag)
        _log().warning(message, *args)
        return True

    def _failed(self, exc: BackendError) -> None:
        self.stats.count("errors")
        self.breaker.failed(exc)

    def absorbed(self) -> None:
        """Count the failures a composite store absorbed (it served from its other tier)."""
        if self._take_failures is not None:
            n = self._take_failures()
            if n:
                self.stats.count("errors", n)

    def decode(self, raw: Any, key: str, *, recheck: bool = False) -> Any:
        """Decode stored bytes; a failure is a miss (counted unless ``recheck``), MISSING."""
        entry = self.decode_entry(raw, key, recheck=recheck)
        return MISSING if entry is MISSING else entry[0]

    def decode_entry(self, raw: Any, key: str, *, recheck: bool = False) -> Any:
        """Like :meth:`decode`, returning the whole :class:`~persistmemo.codec.Entry`.

        An entry older than the function's ``ttl`` is a miss too: a copy may outlive its entry
        (a local tier in front of a store that cannot report remaining TTLs, a store that
        ignores TTLs), and the entry's own creation time is the one clock every copy shares.
        """
        if raw is MISSING:
            return MISSING
        try:
            entry = self.codec.decode(raw, key=key)
        except DecodeError as exc:
            if isinstance(exc.__cause__, RecursionError):  # the stack ran out, not the entry
                raise RecursionError(str(exc.__cause__)) from exc
            if not recheck:
                self.stats.count("decode_failures")
                self._warn_once("decode:" + str(exc).split(":", 1)[0], "persistmemo: stored "
                                "entry for %s could not be used (%s); recomputing",
                                self.keys.identity, exc)
            return MISSING
        ttl = self.options.ttl
        if ttl is not None and entry[1] + ttl <= time.time():
            return MISSING  # expired (see above): recomputed and stored afresh
        return entry

    def encode(self, value: Any, key: str, duration: float, meta: bytes = b"") -> bytes | None:
        """Encode a result for storage, or warn once and return None if it cannot be."""
        try:
            blob = self.codec.encode(value, key=key, created=time.time(), duration=duration,
                                     meta=meta)
            limit = self._max_value
            if limit is not None and len(blob) > limit:  # e.g. Redis's 512 MB bulk limit
                raise SerializationError(
                    f"the stored entry would be {len(blob):,} bytes, more than this store "
                    f"accepts ({limit:,}); use a directory store for values this big")
            return blob
        except SerializationError as exc:
            if isinstance(exc.__cause__, RecursionError):  # the stack ran out (a deep
                return None  # recursion's innermost levels): the value is fine, just not stored
            tname = f"{type(value).__module__}.{type(value).__qualname__}"
            msg = f"persistmemo: result of {self.keys.identity}() not cached: {exc}"
            if self._warn_once("enc:" + tname, "%s", msg):
                warnings.warn(msg, UncacheableResultWarning, stacklevel=4)
            return None

    # -- protocols (what call / refresh / map do) ------------------------------------------
    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The key of a call, or None when the call does not bind (Python raises on it)."""
        try:
            return self.keys(args, kwargs)
        except KeyEncodingError:
            raise
        except TypeError:
            return None

    def hit(self, raw: Any, key: str) -> Any:
        """The value of a lookup's result (counted as a hit), or MISSING.

        A store that hands back the very same ``bytes`` object for an unchanged entry (the
        in-process memory store and tier) lets us skip decoding it again: for a deeply
        immutable value, returning the object decoded last time is indistinguishable from
        returning an equal copy. The identity check makes this exact (we hold the bytes, so
        their id cannot be reused).
        """
        if raw is MISSING:
            return MISSING
        seen = self._seen.get(key)
        if seen is not None and seen[0] is raw and (seen[4] is None or time.time() < seen[4]):
            self.stats.hit()
            self.used(key, seen[2], meta=seen[3])
            return seen[1]
        entry = self.decode_entry(raw, key)
        if entry is MISSING:
            return MISSING
        value = entry[0]
        self.stats.hit()
        self.used(key, entry[2], meta=entry[3])  # what this hit saved (see used())
        if self._stable and frozen(value):
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            ttl = self.options.ttl
            self._seen[key] = (raw, value, entry[2], entry[3],
                               None if ttl is None else entry[1] + ttl)
        return value

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps:
        """``func(*args, **kwargs)``, from the cache when possible."""
        key = self.key(args, kwargs)
        if key is None:  # does not bind: let Python raise its own error
            return (yield (COMPUTE, None, args, kwargs))
        value = yield from self._lookup(key)
        if value is not MISSING:
            return value
        return (yield from self._timed_miss(key, args, kwargs))

    def _timed_miss(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps:
        """:meth:`_miss`, its whole time (lease, run, store) charged to a calling
        computation, so the caller's self time is its own work only."""
        start = time.perf_counter()
        try:
            return (yield from self._miss(key, args, kwargs))
        finally:
            _usage.charge(time.perf_counter() - start)

    def miss(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any],
             error: BackendError | None) -> Steps:
        """What follows a lookup the driver did itself (the sync hit path): found nothing."""
        if error is not None:
            self._failed(error)
        elif self.breaker.down_until:
            self.breaker.ok()
        self.absorbed()
        return (yield from self._timed_miss(key, args, kwargs))

    def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps:
        """Recompute ``func(*args, **kwargs)`` and store it, replacing any entry."""
        key = self.keys(args, kwargs)
        return (yield from self._run(key, args, kwargs, None, None))

    def map(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps:
        """``[func(*c) for c in calls]`` with one batched lookup (``args == (calls,)``);
        ``progress=True`` shows a bar with the computed and reused counts."""
        from persistmemo._progress import Progress

        (calls,) = args
        arglists = [c if type(c) is tuple else (c,) for c in calls]
        keys = [self.keys(a, {}) for a in arglists]
        with Progress(len(keys), self.keys.identity, enabled=bool(kwargs.get("progress"))
                      ) as bar:
            return (yield from self._map(arglists, keys, bar))

    def _map(self, arglists: list[tuple[Any, ...]], keys: list[str], bar: Any) -> Steps:
        raws: list[Any] = [MISSING] * len(keys)
        found: list[Any] = [MISSING] * len(keys)
        if keys and self.breaker.available():
            try:
                raws = yield (IO, "get_many", (keys,), _NOKW)
            except BackendError as exc:
                self._failed(exc)
            else:
                self.breaker.ok()
                self.absorbed()
                found = [self.decode_entry(r, k) for r, k in zip(raws, keys)]
        results: list[Any] = []
        done: dict[str, Any] = {}
        for a, k, e in zip(arglists, keys, found):
            if e is not MISSING:
                v = e[0]
                self.stats.hit()
                self.used(k, e[2], meta=e[3])
                bar.reused()
            elif k in done:
                v = done[k]  # the same call twice in one batch: served by the first
                self.stats.hit()
                bar.reused()
            else:  # each miss runs the whole protocol: single-flight, counters, store
                v = done[k] = yield from self._timed_miss(k, a, {})
                bar.computed()
            results.append(v)
        return results

    # -- steps ---------------------------------------------------------------------------
    def _lookup(self, key: str) -> Steps:
        if not self.breaker.available():
            return MISSING
        try:
            raw = yield (IO, "get", (key,), _NOKW)
        except BackendError as exc:
            self._failed(exc)
            return MISSING
        if self.breaker.down_until:
            self.breaker.ok()
        self.absorbed()
        return self.hit(raw, key)

    def _miss(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps:
        """Compute once per process (and, with the lease, once across workers) and store."""
        if self.keys._manifest_pending and self.breaker.available():
            yield from self._store_manifest()  # the first miss of a fingerprint: record it
        if not self.options.lock:
            return (yield from self._run(key, args, kwargs, None, None))
        flight, role = yield (JOIN, None, (key,), _NOKW)
        if role == LEADER:
            try:
                return (yield from self._lead(key, args, kwargs, flight))
            finally:
                flight.finish()
        if role == FOLLOWER:
            self.stats.count("lock_waits")
            if (yield (WAIT, flight, (self.options.lock_wait,), _NOKW)):
                value = self._from_flight(flight, key)
                if value is not MISSING:
                    self.stats.hit()
                    self.used(key, None, flight.raw)
                    return value
                return (yield from self._miss(key, args, kwargs))  # leader raised: re-elect
            self.stats.count("lock_timeouts")  # waited long enough: compute ourselves
        return (yield from self._run(key, args, kwargs, None, None))  # or recursion on key

    def _from_flight(self, flight: Flight, key: str) -> Any:
        """The leader's result for a waiter: decoded afresh, or the object if unencodable."""
        if flight.raw is not None:
            return self.decode(flight.raw, key)
        return flight.value if flight.has_value else MISSING

    def _lead(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], flight: Flight
              ) -> Steps:
        if not self.breaker.available():
            return (yield from self._run(key, args, kwargs, None, flight))
        try:
            lock = self.backend.lock(key, ttl=self.options.lock_ttl)
        except BackendError as exc:
            self._failed(exc)
            return (yield from self._run(key, args, kwargs, None, flight))
        value, raw, acquired = yield from self._lease(key, lock)
        if value is MISSING:
            return (yield from self._run(key, args, kwargs, lock if acquired else None, flight))
        if acquired:
            yield from self._release(lock)
        flight.raw = raw
        self.stats.hit()
        self.used(key, None, raw)
        return value

    def _lease(self, key: str, lock: Lock) -> Steps:
        """Take the lease or wait for its holder's result; returns (value, raw, acquired)."""
        wait = self.options.lock_wait
        deadline = None if wait is None else time.monotonic() + wait
        delay, waited = 0.0, False
        while True:
            if delay:
                yield (SLEEP, None, (delay,), _NOKW)
            try:
                acquired, raw = yield (IO, "acquire_and_get", (lock, key), _NOKW)
                value = self.decode(raw, key, recheck=True)
                if value is MISSING and raw is not MISSING and not acquired:
                    # Present but unusable (corrupt, foreign, another secret, expired): a
                    # store may report it without trying the lease (a local tier does), and
                    # waiting for it to turn into a value could take the whole lock_wait.
                    acquired = yield (IO, "acquire", (lock,), _NOKW)
            except BackendError as exc:
                self._failed(exc)
                return MISSING, None, False
            self.absorbed()
            if value is not MISSING or acquired:
                return value, raw, acquired
            if not waited:
                waited = True
                self.stats.count("lock_waits")
            if deadline is not None and time.monotonic() >= deadline:
                self.stats.count("lock_timeouts")
                return MISSING, None, False
            delay = min(max(delay * 1.5, _POLL_FIRST), _POLL_MAX)

    def _release(self, lock: Lock) -> Steps:
        try:
            yield (IO, "release", (lock,), _NOKW)
        except BackendError as exc:
            self._failed(exc)

    def _run(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], lock: Lock | None,
             flight: Flight | None) -> Steps:
        """Compute (under ``lock`` if held), hand the result to ``flight``, store it."""
        self.stats.count("misses")
        digests = self.digests(args, kwargs)  # before the call: the function may mutate them
        start = time.perf_counter()
        frame = _usage.enter()  # nested memoized computations charge their time to it
        try:
            if lock is not None:
                renewer.add(lock, None if flight is None else flight.alive)
            value = yield (COMPUTE, lock, args, kwargs)  # (the driver sees the lease held)
        except GeneratorExit:  # abandoned (its event loop closed): no step may run any more
            self._computed(frame, start, key)
            if lock is not None:
                renewer.discard(lock)  # the lease lapses within lock_ttl
            raise
        except BaseException:
            self._computed(frame, start, key)
            if lock is not None:
                renewer.discard(lock)
                yield from self._release(lock)  # waiters take over at once, not after the lease
            raise
        duration = time.perf_counter() - start
        meta = self.meta(digests, self._computed(frame, start, key))
        if lock is not None:
            renewer.discard(lock)
        raw = self.encode(value, key, duration, meta)
        if flight is not None:
            flight.raw, flight.value, flight.has_value = raw, value, True
        if raw is None or (lock is None and not self.breaker.available()):
            if lock is not None:
                yield from self._release(lock)
            return value  # unencodable, or the store is in its back-off window
        stored = time.perf_counter()
        try:
            yield (IO, "set_and_release", (key, raw), {"ttl": self.options.ttl, "lock": lock})
        except BackendError as exc:
            self._failed(exc)
        else:
            self.stats.count("stores")
            if self._logger.isEnabledFor(10):
                self._debug("store", key, time.perf_counter() - stored, len(raw))
        self.absorbed()
        return value

    def _store_manifest(self) -> Steps:
        """Record the fingerprint's dependency manifest once (for "why did this miss")."""
        record = self.keys.take_manifest()
        if record is None:
            return
        try:
            raw = self.codec.encode(record[1], key=record[0], created=time.time(), duration=0.0)
            yield (IO, "set", (record[0], raw), {"ttl": None})
        except RecursionError:  # a deep recursion's innermost miss: a shallower one will do it
            self.keys._manifest_pending = True
        except (BackendError, SerializationError) as exc:
            self._warn_once("manifest", "persistmemo: dependency manifest of %s not stored: %s",
                            self.keys.identity, exc)

    # -- whole-function operations (plain calls: no waiting, no compute) ---------------------
    def invalidate(self, key: str) -> bool:
        """Delete one entry; False if there was none or the store failed."""
        try:
            return self.backend.delete(key)
        except BackendError as exc:
            self._failed(exc)
            return False

    def clear(self) -> int:
        """Delete every entry of this function (all versions); 0 if the store failed."""
        try:
            cleared = self.backend.clear(self.keys.prefix)
            self.backend.clear(self.keys.manifest_prefix)  # its dependency manifests
            return cleared
        except BackendError as exc:
            self._failed(exc)
            return 0

