"""In-process single-flight (:class:`Flight`) and the lease renewer thread.

Threads (or tasks) of one process share one in-flight computation per key through a
:class:`Flight` (no backend polling). Processes and machines coordinate through the backend's
lease, renewed by :data:`renewer` at a third of its TTL while the function runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from persistmemo.backends.base import Lock

__all__ = ["FOLLOWER", "LEADER", "REENTRANT", "Flight", "Flights", "renewer"]

LEADER, FOLLOWER, REENTRANT = "leader", "follower", "reentrant"


class Flight:
    """One in-flight computation in this process, shared by the threads/tasks that want it."""

    __slots__ = ("event", "future", "has_value", "key", "owner", "raw", "table", "value")

    def __init__(self, table: dict[Any, Flight], key: Any, owner: Any, future: Any = None
                 ) -> None:
        self.table, self.key, self.owner = table, key, owner
        self.event = threading.Event() if future is None else None
        self.future = future  # an asyncio.Future for flights of an event loop
        self.raw: bytes | None = None  # the encoded result, decoded afresh by each waiter
        # A result the codec cannot encode is handed to waiters as the same object (as
        # functools.lru_cache would) rather than computed again by each of them in turn.
        self.value: Any = None
        self.has_value = False

    def alive(self) -> bool:
        """Whether the leader can still finish (False once its event loop is closed)."""
        return self.future is None or not self.future.get_loop().is_closed()

    def finish(self) -> None:
        """Leave the table and wake every waiter (the leader calls this exactly once)."""
        if self.table.get(self.key) is self:
            del self.table[self.key]
        if self.event is not None:
            self.event.set()
        elif not self.future.done() and self.alive():  # (a closed loop: nobody to wake)
            self.future.set_result(self)


class Flights:
    """The flights of one memoized function: one table for threads, one per event loop."""

    def __init__(self) -> None:
        self._threads: dict[Any, Flight] = {}
        self._tasks: dict[Any, Flight] = {}
        self._mutex = threading.Lock()
        self._pid = os.getpid()

    def join(self, key: str) -> tuple[Flight, str]:
        """Join (or start, as leader) the thread flight of ``key``."""
        if os.getpid() != self._pid:  # forked: the parent's flights (and mutex) are not ours
            self._threads, self._mutex, self._pid = {}, threading.Lock(), os.getpid()
        me = threading.get_ident()
        with self._mutex:
            flight = self._threads.get(key)
            if flight is None:
                flight = self._threads[key] = Flight(self._threads, key, me)
                return flight, LEADER
        return flight, (REENTRANT if flight.owner == me else FOLLOWER)

    def ajoin(self, key: str) -> tuple[Flight, str]:
        """Join (or start, as leader) the flight of ``key`` in the running event loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        fkey = (id(loop), key)
        flight = self._tasks.get(fkey)
        if flight is None:
            flight = self._tasks[fkey] = Flight(self._tasks, fkey, me, loop.create_future())
            return flight, LEADER
        return flight, (REENTRANT if flight.owner is me else FOLLOWER)


class _Renewer:
    """One daemon thread per process renewing every held lease at a third of its TTL.

    Registering a lease is the common case on every locked miss, so it must be cheap: the thread
    is only woken when the new lease is due before its current wake-up time.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[Lock, float, Callable[[], bool] | None]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake_at = float("inf")
        self._idle = 0

    def add(self, lock: Lock, alive: Callable[[], bool] | None = None) -> None:
        """Renew ``lock`` until discarded, or until ``alive()`` says its holder is gone (an
        abandoned async leader: its event loop closed), after which the lease lapses."""
        due = time.monotonic() + lock.ttl / 3
        with self._cond:
            self._held[id(lock)] = (lock, due, alive)
            self._idle = 0
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
                due = [(lk, ok) for lk, at, ok in self._held.values() if at <= now]
                for lk, ok in due:
                    self._held[id(lk)] = (lk, now + lk.ttl / 3, ok)
                # Idle, it still wakes every second: then registering a lease (due in
                # ttl/3, seconds away) never has to wake it, which costs a thread switch
                # (~0.1-0.3 ms) on every locked miss. Idle for a minute, it exits.
                if not self._held:
                    self._idle = self._idle + 1 if not due else 0
                    if self._idle > 60:
                        self._thread = None
                        return
                self._wake_at = min((e[1] for e in self._held.values()), default=now + 1.0)
                if not due:
                    self._cond.wait(max(0.0, self._wake_at - now))
                    continue
            for lk, ok in due:
                try:
                    if (ok is not None and not ok()) or not lk.renew():
                        self.discard(lk)
                except Exception:  # a lost store: the lease lapses, at worst one recomputation
                    self.discard(lk)


class _RenewerHandle:
    """The process's renewer, replaced in a forked child (the parent's thread is not ours)."""

    def __init__(self) -> None:
        self.current = _Renewer()

    def add(self, lock: Lock, alive: Callable[[], bool] | None = None) -> None:
        self.current.add(lock, alive)

    def discard(self, lock: Lock) -> None:
        self.current.discard(lock)


renewer = _RenewerHandle()


def _reset_after_fork() -> None:
    renewer.current = _Renewer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
