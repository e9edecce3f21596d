"""Usage statistics persisted in the store, so ``persistmemo stats`` adds up every worker.

Per function (namespace + ``module.qualname``) the store keeps ``hits``, ``misses``,
``compute_s`` (self time of the computations: time spent inside nested memoized calls is
counted by those calls, not twice) and ``saved_s`` (for each hit, the compute time of the entry
it reused).

Writes are batched: calls add to an in-process buffer, flushed at most every
:data:`FLUSH_INTERVAL` seconds by the call that finds it due, after any computation of at least
:data:`EAGER_FLUSH` seconds (a round trip is nothing next to it), and at interpreter or
``multiprocessing`` worker exit. A process killed without exiting (SIGKILL,
``Pool.terminate()``) loses at most the cheap calls of its last :data:`FLUSH_INTERVAL` seconds.

A flush never loses another worker's update: on Redis it is ``HINCRBY`` / ``HINCRBYFLOAT`` in
one pipeline, on a directory one SQLite transaction (read, add, write). A failed flush keeps
the counts for the next one and never reaches the caller.

Stored under ``pmstats:1:<namespace>:<module.qualname>`` (escaped like keys), outside the
``pm:`` key space so listings and clears of entries never see them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from persistmemo.backends.base import Backend

__all__ = ["PREFIX", "FunctionUsage", "Recorder", "read_usage"]

PREFIX = "pmstats:1:"
FLUSH_INTERVAL = 2.0
EAGER_FLUSH = 1.0  # a computation at least this long (self time) is flushed right away
_FIELDS = ("hits", "misses", "compute_s", "saved_s")


class FunctionUsage(NamedTuple):
    """The persisted totals of one function, over every process that used the store."""

    namespace: str
    function: str
    hits: int
    misses: int
    compute_s: float
    saved_s: float


# -- self time: a frame per running computation, per thread / asyncio task -----------------
_frame: ContextVar[list[float] | None] = ContextVar("persistmemo_frame", default=None)


def enter() -> tuple[Token[list[float] | None], list[float]]:
    """Start timing a computation's children (nested memoized computations)."""
    frame = [0.0]
    return _frame.set(frame), frame


def leave(token: Token[list[float] | None], frame: list[float], inclusive: float) -> float:
    """End a computation; return its self time (``inclusive`` minus its children's time)."""
    with contextlib.suppress(ValueError):  # another context (should not happen): carry on
        _frame.reset(token)
    return max(0.0, inclusive - frame[0])


def charge(seconds: float) -> None:
    """Charge a nested memoized computation's whole time (run, encode, store) to its parent,
    so the parent's self time is its own work only."""
    parent = _frame.get()
    if parent is not None:
        parent[0] += seconds


# -- the buffer and its flushes -------------------------------------------------------------
def stat_key(namespace: str, function: str) -> str:
    from persistmemo.keys import _escape

    return f"{PREFIX}{_escape(namespace)}:{_escape(function)}"


class Recorder:
    """Buffers one cache's usage counts and flushes them to its store in batches.

    Each function's engine increments its own row (a list: ``hits, misses, compute_s,
    saved_s``) without a lock on the hit path; a flush takes what the rows hold and subtracts
    exactly that, so increments made meanwhile stay for the next flush.
    """

    def __init__(self, cache: Any) -> None:
        """``cache``: the store side of a cache (``.available()``, ``.backend``)."""
        self._cache = cache
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], list[float]] = {}
        self._carry: dict[tuple[str, str], list[float]] = {}  # counts a failed flush kept
        self.due = time.monotonic() + FLUSH_INTERVAL
        _recorders.add(self)

    def row(self, who: tuple[str, str]) -> list[float]:
        """The live counters of one function (namespace, identity)."""
        with self._lock:
            row = self._rows.get(who)
            if row is None:
                row = self._rows[who] = [0, 0, 0.0, 0.0]
            return row

    def computed(self, row: list[float], self_time: float) -> None:
        """Count a miss that ran the function for ``self_time`` seconds (self time)."""
        with self._lock:
            row[1] += 1
            row[2] += self_time
        # An expensive computation is worth a round trip at once: its numbers then survive a
        # worker that is killed (Pool.terminate, SIGKILL) before the next periodic flush.
        if self_time >= EAGER_FLUSH or time.monotonic() >= self.due:
            self.flush()

    def _take(self) -> dict[tuple[str, str], list[float]]:
        with self._lock:
            self.due = time.monotonic() + FLUSH_INTERVAL
            taken, self._carry = self._carry, {}
            for who, row in self._rows.items():
                snap = row[:]
                if not any(snap):
                    continue
                for i, v in enumerate(snap):
                    row[i] -= v
                old = taken.get(who)
                taken[who] = snap if old is None else [a + b for a, b in zip(old, snap)]
            return taken

    def flush(self) -> None:
        """Write the buffered counts to the store (never raises; kept on failure)."""
        register_worker_exit()
        pending = self._take()
        if not pending:
            return
        cache = self._cache
        try:
            if not cache.available():
                raise ConnectionError("store in its back-off window")
            _write(cache.backend, {stat_key(*who): row for who, row in pending.items()})
        except Exception as exc:  # statistics must never break or slow down a call
            import logging

            logging.getLogger("persistmemo").debug("persistmemo: usage not saved yet: %s", exc)
            with self._lock:
                for who, row in pending.items():
                    old = self._carry.get(who)
                    self._carry[who] = row if old is None else [a + b for a, b in zip(old, row)]

    def forget(self) -> None:
        """Drop the counts (in a forked child: they are the parent's to flush)."""
        self._lock = threading.Lock()
        self._carry = {}
        for row in self._rows.values():
            row[:] = [0, 0, 0.0, 0.0]


_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def flush_all() -> None:
    """Flush every recorder of this process (at exit)."""
    for recorder in list(_recorders):
        recorder.flush()


def _after_fork() -> None:
    for recorder in list(_recorders):
        recorder.forget()


atexit.register(flush_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _ForkToken:
    """A weak-referenceable anchor for ``multiprocessing.util.register_after_fork``."""


_fork_token = _ForkToken()
_mp_registered = False


def _finalize_in_worker(_: object = None) -> None:
    from multiprocessing import util

    util.Finalize(None, flush_all, exitpriority=100)


def register_worker_exit() -> None:
    """Flush at ``multiprocessing`` worker exit too (workers leave through ``os._exit``).

    A worker's finalizer registry is cleared when it starts, so the finalizer is registered
    again in every forked worker; spawned workers import this module afresh.
    """
    global _mp_registered
    import sys

    if _mp_registered or "multiprocessing" not in sys.modules:
        return
    from multiprocessing import util

    _mp_registered = True
    _finalize_in_worker()
    util.register_after_fork(_fork_token, _finalize_in_worker)


# -- the store side -------------------------------------------------------------------------
def _shared(backend: Any) -> Any:
    """The tier the statistics live in: a tiered store's shared one (never the local tier,
    whose reads may be stale: a read-add-write there would lose other workers' updates)."""
    return getattr(backend, "shared", backend)


def _write(backend: Backend, rows: dict[str, list[float]]) -> None:
    backend = _shared(backend)
    name = getattr(backend, "name", "")
    if name in ("redis", "redis-cluster") and hasattr(backend, "_sync"):
        with backend._guard:  # type: ignore[attr-defined]
            pipe = backend._sync().pipeline(transaction=False)
            for key, (hits, misses, compute_s, saved_s) in rows.items():
                pipe.hincrby(key, "hits", int(hits))
                pipe.hincrby(key, "misses", int(misses))
                pipe.hincrbyfloat(key, "compute_s", compute_s)
                pipe.hincrbyfloat(key, "saved_s", saved_s)
            pipe.execute()
        return
    if name == "disk" and hasattr(backend, "cache"):
        import diskcache

        disk: diskcache.Cache = backend.cache
        with disk.transact(retry=True):  # BEGIN IMMEDIATE: read-add-write is not interleaved
            _merge(backend, rows)
        return
    with _memory_lock:  # a process-local store, or a third-party one (best effort)
        _merge(backend, rows)


_memory_lock = threading.Lock()


def _merge(backend: Backend, rows: dict[str, list[float]]) -> None:
    import msgpack

    for key, row in rows.items():
        old = _decode(backend.get(key))
        new = [old[i] + row[i] for i in range(4)]
        backend.set(key, msgpack.packb(dict(zip(_FIELDS, new))), ttl=None)


def _decode(raw: Any) -> list[float]:
    import msgpack

    if not isinstance(raw, (bytes, bytearray)):
        return [0, 0, 0.0, 0.0]
    try:
        data = msgpack.unpackb(raw)
        return [data.get(f, 0) for f in _FIELDS]
    except Exception:
        return [0, 0, 0.0, 0.0]


def read_usage(backend: Backend, namespace: str | None = None) -> Iterator[FunctionUsage]:
    """Yield the persisted totals of every function in ``backend`` (optionally one namespace)."""
    from urllib.parse import unquote

    from persistmemo.keys import _escape

    prefix = PREFIX + (f"{_escape(namespace)}:" if namespace else "")
    backend = _shared(backend)
    keys = sorted(backend.keys(prefix))
    name = getattr(backend, "name", "")
    if name in ("redis", "redis-cluster") and hasattr(backend, "_sync"):
        with backend._guard:  # type: ignore[attr-defined]
            pipe = backend._sync().pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            hashes = pipe.execute() if keys else []
        rows = [[h.get(f.encode(), 0) for f in _FIELDS] for h in hashes]
    else:
        rows = [_decode(backend.get(k)) for k in keys]
    for key, row in zip(keys, rows):
        parts = key[len(PREFIX):].split(":")
        if len(parts) != 2:
            continue
        yield FunctionUsage(unquote(parts[0]), unquote(parts[1]), int(row[0]), int(row[1]),
                            float(row[2]), float(row[3]))
