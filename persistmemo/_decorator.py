"""``memoize`` and the typed wrappers it returns (sync and async share one engine)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from persistmemo._engine import CacheInfo, Engine
from persistmemo.backends.base import MISSING
from persistmemo.config import seconds
from persistmemo.errors import BackendError, ConfigurationError

if TYPE_CHECKING:
    import datetime as _dt

    from persistmemo._cache import Cache
    from persistmemo.codec import Serializer

__all__ = ["AsyncMemoized", "Memoized", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")
_OPTIONS = frozenset({"ttl", "version", "ignore", "namespace", "key", "serializer", "lock",
                      "lock_ttl", "lock_wait", "compress", "compress_threshold", "mmap"})


class _MemoizedBase(Generic[P, R]):
    """State shared by the sync and async wrappers; the engine is built on first use."""

    __wrapped__: Callable[..., Any]

    def __init__(self, cache: Cache | None, func: Callable[..., Any], options: dict[str, Any]
                 ) -> None:
        from persistmemo.keys import KeyBuilder

        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown memoize option(s) {sorted(unknown)!r}; known: {sorted(_OPTIONS)!r}")
        functools.update_wrapper(self, func)  # type: ignore[arg-type]
        self._cache = cache  # None: the default cache, resolved at the first call
        self._options = options
        namespace = options.get("namespace") or (cache.namespace if cache else "default")
        if options.get("namespace") is not None:
            from persistmemo._cache import check_namespace

            check_namespace(namespace)
        seconds(options.get("ttl"), "ttl")
        if "compress" in options or "compress_threshold" in options:  # fail at decoration
            from persistmemo._compress import parse_compress

            parse_compress(options.get("compress", "zstd"), options.get("compress_threshold"))
        self.keys = KeyBuilder(func, namespace=namespace, version=options.get("version"),
                               ignore=options.get("ignore") or (), key=options.get("key"))
        self._engine: Engine | None = None

    def _start(self) -> Engine:
        from persistmemo._cache import default_cache, make_codec

        cache = self._cache or default_cache()
        o = self._options
        engine = Engine(
            cache, self.keys, self.__wrapped__,
            ttl=seconds(o["ttl"], "ttl") if "ttl" in o else cache.ttl,
            lock=cache.lock if o.get("lock") is None else bool(o["lock"]),
            lock_ttl=seconds(o.get("lock_ttl"), "lock_ttl") or cache.lock_ttl,
            lock_wait=seconds(o["lock_wait"], "lock_wait") if "lock_wait" in o
            else cache.lock_wait,
        )
        if o.get("serializer") is not None or "compress" in o or "compress_threshold" in o:
            compress = (o.get("compress", cache._compress[0]),
                        o.get("compress_threshold", cache._compress[1]))
            engine.codec = make_codec(o.get("serializer") or cache._serializer, cache._secret,
                                      cache._verify_keys, *compress)
        if cache.mmap if o.get("mmap") is None else o["mmap"]:
            from persistmemo._mmap import mapped

            engine.cache, engine.codec = mapped(cache, engine.codec, self.keys.identity)
        self._engine = engine
        return engine

    @property
    def engine(self) -> Engine:
        """The get-or-compute engine (built on first use)."""
        return self._engine or self._start()

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Return the key under which ``f(*args, **kwargs)`` is stored."""
        return self.keys(args, kwargs)

    def explain_key(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, str]:
        """Return a short digest per argument (compare two calls to see which one differs)."""
        return self.keys.describe(args, kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the stored result of ``f(*args, **kwargs)``; return whether there was one."""
        engine = self.engine
        try:
            return engine.cache.backend.delete(self.keys(args, kwargs))
        except BackendError as exc:
            engine.cache.backend_failed(exc)
            return False

    def cache_clear(self) -> int:
        """Delete every stored result of this function (all versions); return how many."""
        engine = self.engine
        try:
            return engine.cache.backend.clear(self.keys.prefix)
        except BackendError as exc:
            engine.cache.backend_failed(exc)
            return 0

    def cache_info(self) -> CacheInfo:
        """Return this function's counters in this process (hits, misses, stores, ...)."""
        return self.engine.stats.snapshot()

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return _Bound(self, obj)

    def __repr__(self) -> str:
        return f"<memoized {self.keys.identity}>"

    def __reduce__(self) -> str:
        # Pickle by reference (like a plain function), so multiprocessing can send it to
        # workers: the receiving process imports the module and finds the same memoized object.
        return str(self.__qualname__)  # type: ignore[attr-defined]


class Memoized(_MemoizedBase[P, R]):
    """A memoized function: call it like the original; it gains cache methods."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        engine = self._engine or self._start()
        return engine.call(args, kwargs)  # type: ignore[no-any-return]

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Recompute ``f(*args, **kwargs)``, store it (replacing any entry) and return it."""
        engine = self.engine
        key = self.keys(args, kwargs)
        return engine._run_and_store(key, args, kwargs, None)  # type: ignore[no-any-return]

    def map(self, calls: Iterable[Any]) -> list[R]:
        """Return ``[f(*c) for c in calls]`` with one batched lookup and one batched store.

        Each item is a tuple of positional arguments; any other item is a single argument.
        """
        engine = self.engine
        arglists = [c if type(c) is tuple else (c,) for c in calls]
        keys = [self.keys(a, {}) for a in arglists]
        cache = engine.cache
        found: list[Any] = [MISSING] * len(keys)
        if cache.available() and keys:
            try:
                raws = cache.backend.get_many(keys)
                found = [engine.decode(r, k) for r, k in zip(raws, keys)]
            except BackendError as exc:
                cache.backend_failed(exc)
        results: list[Any] = []
        todo: dict[str, bytes] = {}
        computed: dict[str, Any] = {}
        for a, k, v in zip(arglists, keys, found):
            if v is not MISSING:
                results.append(engine.hit(v))
            elif k in computed:
                results.append(computed[k])
            else:
                engine._miss_counted()
                value = computed[k] = self.__wrapped__(*a)
                raw = engine.encode(value, k, 0.0)
                if raw is not None:
                    todo[k] = raw
                results.append(value)
        if todo and cache.available():
            try:
                cache.backend.set_many(list(todo.items()), ttl=engine.ttl)
                engine.stats.stores += len(todo)
            except BackendError as exc:
                cache.backend_failed(exc)
        return results


class AsyncMemoized(_MemoizedBase[P, R]):
    """A memoized ``async def`` function: awaiting it never blocks the event loop on I/O.

    :func:`wrap` hands out a real ``async def`` function carrying this object's methods as
    attributes, so ``inspect.iscoroutinefunction()`` is true on every Python version.
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        engine = self._engine or self._start()
        return engine.acall(args, kwargs)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Recompute, store and return ``await f(*args, **kwargs)``."""
        engine = self.engine
        key = self.keys(args, kwargs)
        return await engine._arun_and_store(key, args, kwargs, None)  # type: ignore[no-any-return]


_ASYNC_ATTRS = ("cache_key", "explain_key", "invalidate", "cache_clear", "cache_info", "refresh",
                "keys")


def _async_function(memo: AsyncMemoized[Any, Any], func: Callable[..., Any]) -> Any:
    @functools.wraps(func)
    async def memoized(*args: Any, **kwargs: Any) -> Any:
        engine = memo._engine or memo._start()
        return await engine.acall(args, kwargs)

    for name in _ASYNC_ATTRS:
        setattr(memoized, name, getattr(memo, name))
    memoized.memo = memo  # type: ignore[attr-defined]
    return memoized


class _Bound:
    """A memoized function bound to an instance (``obj.method``)."""

    __slots__ = ("_m", "_obj")

    def __init__(self, memoized: _MemoizedBase[Any, Any], obj: Any) -> None:
        self._m = memoized
        self._obj = obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._m(self._obj, *args, **kwargs)  # type: ignore[operator]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._m, name)
        if name in ("cache_key", "explain_key", "invalidate", "refresh"):
            return functools.partial(attr, self._obj)
        return attr


def wrap(cache: Cache | None, func: Callable[..., Any], **options: Any) -> Any:
    """Wrap ``func`` in the right memoized class for it."""
    import inspect

    if isinstance(func, (staticmethod, classmethod)):
        raise ConfigurationError(
            "put @memoize below @staticmethod/@classmethod (decorate the plain function)")
    if not (inspect.isfunction(func) or inspect.ismethod(func)):
        raise ConfigurationError(
            f"memoize() needs a function, got {type(func).__name__}: wrap the callable in a "
            f"def (its identity and code fingerprint come from the function)")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise ConfigurationError(
            f"memoize() cannot cache generator function {func.__qualname__}(): its result is "
            f"a one-shot iterator; return a list instead")

    if inspect.iscoroutinefunction(func):
        return _async_function(AsyncMemoized(cache, func, options), func)
    return Memoized(cache, func, options)


@overload
def memoize(func: Callable[P, Awaitable[R]], /) -> AsyncMemoized[P, R]: ...  # type: ignore[overload-overlap]


@overload
def memoize(func: Callable[P, R], /) -> Memoized[P, R]: ...


@overload
def memoize(
    func: None = None,
    /,
    *,
    ttl: float | _dt.timedelta | None = ...,
    version: str | int | None = ...,
    ignore: Iterable[str] = ...,
    namespace: str | None = ...,
    key: Callable[..., Any] | None = ...,
    serializer: str | Serializer | None = ...,
    lock: bool | None = ...,
    lock_ttl: float | _dt.timedelta | None = ...,
    lock_wait: float | _dt.timedelta | None = ...,
    compress: str | None = ...,
    compress_threshold: int | None = ...,
    mmap: bool | None = ...,
    cache: Cache | None = ...,
) -> _Decorator: ...


def memoize(func: Any = None, /, *, cache: Cache | None = None, **options: Any) -> Any:
    """Store a function's results so later calls, in any process, reuse them.

    Usable bare (``@memoize``) or with options (``@memoize(ttl=60)``). Without ``cache=``
    it uses the default cache: ``PERSISTMEMO_URL`` if set, else ``$XDG_CACHE_HOME/persistmemo``
    or ``~/.cache/persistmemo`` (read at the first call, not at import).

    Args:
        ttl: seconds (or ``timedelta``) an entry lives; ``None`` keeps it until evicted.
        version: pins the function's identity (instead of its code fingerprint): bump it to
            invalidate, keep it to reuse entries across edits.
        ignore: parameter names left out of the key (e.g. ``["verbose"]``).
        namespace: keeps applications apart in one store.
        key: ``key(*args, **kwargs) -> value``: a custom key (the value is canonically encoded).
        serializer: ``"msgpack"`` (default) or ``"pickle"`` (with a secret).
        lock: one computation per key across threads, processes and machines (default on).
        lock_ttl, lock_wait: lease length and how long a waiter waits for another worker.
        compress, compress_threshold: ``"zstd"``/``"zstd:<level>"`` compression of results of
            at least that many bytes (see :class:`Cache`).
        mmap: directory stores: return numpy arrays of stored results (32 KiB and more) as
            read-only memory-mapped views of the stored file; integrity is still checked.
        cache: a :class:`persistmemo.Cache` to use instead of the default.

    The wrapper keeps the signature and docstring and gains ``cache_key()``, ``invalidate()``,
    ``cache_clear()``, ``cache_info()``, ``refresh()``, ``map()`` and ``__wrapped__``.

    Example:
        >>> import persistmemo
        >>> @persistmemo.memoize(cache=persistmemo.Cache("memory://"))
        ... def slow_square(x: int) -> int:
        ...     return x * x
        >>> slow_square(3)
        9
    """
    if func is None:
        return lambda f: wrap(cache, f, **options)
    if not callable(func):
        raise ConfigurationError(
            f"memoize() decorates a function; got {type(func).__name__}: use @memoize or "
            f"@memoize(ttl=...) with keyword options")
    return wrap(cache, func, **options)


class _Decorator:
    """Type of ``memoize(...)`` called with options: apply it to a function."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> AsyncMemoized[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, func: Callable[P, R], /) -> Memoized[P, R]: ...

    def __call__(self, func: Any, /) -> Any:  # pragma: no cover - typing only
        raise NotImplementedError
