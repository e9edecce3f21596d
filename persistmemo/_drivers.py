"""The two drivers of the engine's protocol: one executes its steps directly, one awaits them.

A driver *is* what the user calls (the function ``memoize`` returns is a driver closed over its
memoized object), not a helper it calls, and it calls the user's function from its own frame: a
memoized recursion costs two Python frames per level (this driver and the function), so it goes
half as deep as plain recursion at worst. It is a plain function, not an object with
``__call__``, because on Python 3.10/3.11 calling an instance costs one more unit of the
recursion limit per level than calling a function.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from persistmemo import _store, _switch
from persistmemo._engine import COMPUTE, IO, JOIN, SLEEP, Engine, Steps
from persistmemo._lease import LEADER, renewer
from persistmemo.backends.base import MISSING
from persistmemo.errors import BackendError

__all__ = ["async_driver", "sync_driver"]

Protocol = Callable[["Engine", tuple[Any, ...], dict[str, Any]], Steps]


_CALL = Engine.call
_ACQUIRE = frozenset({"acquire_and_get", "acquire"})
_MAP = Engine.map


def _engine(memo: Any) -> Engine:
    """The memoized object's engine; rebuilt when the default cache it uses was replaced."""
    engine: Engine | None = memo._engine
    if engine is None or (engine.generation != _store.generation and memo._cache is None):
        engine = memo._start()
    return engine


def _straight(protocol: Protocol, engine: Engine, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
    """Switched off (``persistmemo.disabled()``): what the protocol would compute, no cache."""
    if protocol is _MAP:
        return [engine.func(*(c if type(c) is tuple else (c,))) for c in args[0]]
    return engine.func(*args, **kwargs)


def sync_driver(protocol: Protocol, memo: Any = None) -> Callable[..., Any]:
    """Return a function running ``protocol`` for its arguments, executing each step.

    With ``memo`` the function is bound to it; without, it is a method (``self`` first).
    """

    def drive(*args: Any, **kwargs: Any) -> Any:
        self = memo
        if self is None:
            self, args = args[0], args[1:]
        engine = self._engine
        if engine is None or (engine.generation != _store.generation and self._cache is None):
            engine = self._start()
        if _switch.depth or engine.disabled:
            return _straight(protocol, engine, args, kwargs)
        if protocol is _CALL and not engine.breaker.down_until:
            value, steps = _lookup(engine, args, kwargs)
            if steps is None:
                return value
        else:
            steps = protocol(engine, args, kwargs)
        result: Any = None
        error: BaseException | None = None
        held: list[Any] = [None, None]  # (flight led, lease computed under): see _abandon
        while True:
            try:
                kind, target, a, kw = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value
            except RecursionError:
                _abandon(held, release=True)
                raise
            error = None
            try:
                if kind == IO:  # (==, not is: a driver may arrive by value, by cloudpickle)
                    result = getattr(engine.backend, target)(*a, **kw)
                    if target in _ACQUIRE and (result[0] if type(result) is tuple else result):
                        held[1] = a[0]  # a lease now held
                elif kind == COMPUTE:
                    result = engine.func(*a, **kw)  # from this frame: 2 frames per level
                elif kind == SLEEP:
                    time.sleep(a[0])
                    result = None
                elif kind == JOIN:
                    result = engine.flights.join(a[0])
                    held[0] = result[0] if result[1] == LEADER else held[0]
                else:  # WAIT
                    result = target.event.wait(a[0])
            except BaseException as exc:  # the protocol cleans up (releases) and re-raises
                error = exc

    return drive


def _lookup(engine: Engine, args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[Any, Steps | None]:
    """The hit path of ``Engine.call``, unrolled (no generator): (value, None) on a hit, else
    (MISSING, the steps that follow the lookup). It returns before the function runs, so it
    adds no frame to a recursion."""
    key = engine.key(args, kwargs)
    if key is None:
        return MISSING, engine.call(args, kwargs)
    failed = None
    try:
        # get_owned: a buffer that is ours alone (the disk store reads large values into a
        # bytearray that numpy results then use in place, without a copy).
        backend = engine.backend
        value = engine.hit(getattr(backend, "get_owned", backend.get)(key), key)
    except BackendError as exc:
        failed, value = exc, MISSING
    if value is not MISSING:
        return value, None
    return MISSING, engine.miss(key, args, kwargs, failed)


def async_driver(protocol: Protocol, memo: Any = None
                 ) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Return an ``async`` function running ``protocol``, awaiting I/O and the function."""

    async def drive(*args: Any, **kwargs: Any) -> Any:
        import asyncio

        self = memo
        if self is None:
            self, args = args[0], args[1:]
        engine = _engine(self)
        if _switch.depth or engine.disabled:
            if protocol is _MAP:
                return [await engine.func(*(c if type(c) is tuple else (c,))) for c in args[0]]
            return await engine.func(*args, **kwargs)
        steps = protocol(engine, args, kwargs)
        result: Any = None
        error: BaseException | None = None
        held: list[Any] = [None, None]
        while True:
            try:
                kind, target, a, kw = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value
            except RecursionError:
                _abandon(held, release=False)  # (no blocking I/O on the loop: it lapses)
                raise
            error = None
            try:
                if kind == IO:  # (==, not is: a driver may arrive by value, by cloudpickle)
                    result = await getattr(engine.backend, "a" + target)(*a, **kw)
                    if target in _ACQUIRE and (result[0] if type(result) is tuple else result):
                        held[1] = a[0]
                elif kind == COMPUTE:
                    result = await engine.func(*a, **kw)
                elif kind == SLEEP:
                    await asyncio.sleep(a[0])
                    result = None
                elif kind == JOIN:
                    result = engine.flights.ajoin(a[0])
                    held[0] = result[0] if result[1] == LEADER else held[0]
                else:  # WAIT
                    result = await _wait(target.future, a[0])
            except GeneratorExit:  # abandoned (its loop closed): clean up without any I/O
                steps.close()
                raise
            except BaseException as exc:
                error = exc

    return drive


def _abandon(held: list[Any], *, release: bool) -> None:
    """Clean up after a protocol the call stack killed (a RecursionError while resuming it
    may skip its own ``finally`` blocks): wake the flight's waiters, stop renewing the lease
    and release it (or let it lapse within ``lock_ttl``). Each step is idempotent, so doing
    it again after the protocol did is harmless."""
    flight, lock = held
    with contextlib.suppress(Exception):  # (even a RecursionError again: best effort)
        if flight is not None:
            flight.finish()
    with contextlib.suppress(Exception):
        if lock is not None:
            renewer.discard(lock)
            if release:  # else, or if this fails, it lapses within lock_ttl
                lock.release()


async def _wait(future: Any, timeout: float | None) -> bool:
    import asyncio

    try:
        await asyncio.wait_for(asyncio.shield(future), timeout)
    except asyncio.TimeoutError:
        return False
    return True
