"""``memoize`` and the typed wrappers it returns (sync and async run one engine protocol)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from persistmemo._drivers import async_driver, sync_driver
from persistmemo._engine import Engine
from persistmemo._options import KEY_OPTIONS, check_options
from persistmemo.errors import ConfigurationError

if TYPE_CHECKING:
    import datetime as _dt

    from persistmemo._explain import Explanation
    from persistmemo._fingerprint import Dependency
    from persistmemo._stats import CacheInfo
    from persistmemo._store import Store
    from persistmemo.codec import Serializer

__all__ = ["AsyncMemoized", "Memoized", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")
_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200  # inspect.CO_*


class _MemoizedMeta(type):
    """``isinstance(f, Memoized)`` is true of the function ``memoize`` returns, too."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return (type.__instancecheck__(cls, obj)
                or type.__instancecheck__(cls, getattr(obj, "__memoized__", None)))


class _MemoizedBase(Generic[P, R], metaclass=_MemoizedMeta):
    """State shared by the sync and async wrappers; the engine is built on first use."""

    __wrapped__: Callable[..., Any]
    _driver: Callable[..., Callable[..., Any]]

    def __init__(self, cache: Store | None, func: Callable[..., Any], options: dict[str, Any]
                 ) -> None:
        from persistmemo._store import check_namespace
        from persistmemo.keys import KeyBuilder

        self._given = dict(options)  # as given: pickling by value rebuilds from them
        engine_opts = check_options(options, where="memoize", extra=KEY_OPTIONS)
        functools.update_wrapper(self, func)  # type: ignore[arg-type]
        self._cache = cache  # None: the default cache, resolved at the first call
        self._options = engine_opts
        namespace = options.get("namespace") or (cache.namespace if cache else "default")
        if options.get("namespace") is not None:
            check_namespace(namespace)
        # On the default cache, the namespace is the default cache's (function > cache >
        # default, like every option), known only when the default cache is first needed.
        self._default_namespace = options.get("namespace") is None and cache is None
        self.keys = KeyBuilder(func, namespace=namespace, version=options.get("version"),
                               ignore=options.get("ignore") or (), key=options.get("key"),
                               ignore_deps=options.get("ignore_deps") or (),
                               depends_on=options.get("depends_on") or ())
        self._engine: Engine | None = None

    def _start(self) -> Engine:
        from persistmemo import _store, _switch
        from persistmemo._store import default_cache, make_codec

        generation = _store.generation
        cache = self._cache or default_cache()
        if self._default_namespace:
            self._adopt_namespace(cache.namespace)
        options = cache.options.merged(self._options)
        codec, backend = cache.codec, cache.backend
        if {"serializer", "max_value_size", "compress", "compress_threshold"} & set(self._options):
            codec = make_codec(options.serializer, cache._secret, cache._verify_keys,
                               options.max_value_size, options.compress,
                               options.compress_threshold)
        if options.mmap:
            from persistmemo._mmap import mapped

            backend, codec = mapped(backend, codec, self.keys.identity)
        engine = Engine(keys=self.keys, func=self.__wrapped__, options=options, codec=codec,
                        backend=backend, breaker=cache.breaker, stats=cache.stats,
                        usage=cache.usage)
        engine.generation = generation
        engine.disabled = _switch.env_disabled() or hasattr(cache, "config_error")
        old = self._engine
        if old is not None:  # moved to a new default cache: f.cache_info() keeps counting
            for name in type(old.stats).__slots__:
                if name != "parent":
                    setattr(engine.stats, name, getattr(old.stats, name))
        self._engine = engine
        return engine

    def _adopt_namespace(self, namespace: str) -> None:
        """Functions on the default cache take its namespace (from the configuration)."""
        self.keys.set_namespace(namespace)  # (the same builder: ignore_deps, depends_on kept)

    def _current(self) -> Engine:
        """The engine, (re)built on first use or after the default cache was replaced."""
        from persistmemo import _store

        engine = self._engine
        if engine is None or (self._cache is None and engine.generation != _store.generation):
            engine = self._start()
        return engine

    def entry(self) -> Callable[..., Any]:
        """The function handed to the user: a driver bound to this object, with its methods.

        A plain function (not this object) so that a memoized recursion costs two frames and
        two units of the recursion limit per level, and pickles like the function it wraps.
        """
        fn: Any = self._driver(Engine.call, self)
        functools.update_wrapper(fn, self.__wrapped__)
        public: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            public.update((k, v) for k, v in vars(klass).items() if not k.startswith("_"))
        for name, attr in public.items():
            if not isinstance(attr, property):  # (a property would run now: engine builds)
                setattr(fn, name, getattr(self, name))
        fn.keys = self.keys
        fn.memo = fn.__memoized__ = self
        self._public = fn
        entry: Callable[..., Any] = fn
        return entry

    @property
    def engine(self) -> Engine:
        """The get-or-compute engine (built on first use)."""
        return self._current()

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Return the key under which ``f(*args, **kwargs)`` is stored."""
        self._current()  # the default cache's namespace comes from the configuration
        return self.keys(args, kwargs)

    def explain(self, *args: P.args, **kwargs: P.kwargs) -> Explanation:
        """Say whether ``f(*args, **kwargs)`` is stored, and if not, why (without calling f).

        Returns an :class:`~persistmemo.Explanation`: ``hit``, ``key``, ``reasons`` (changed
        argument by parameter, changed code or dependency by name, other namespace, other key
        format, expired, never computed) and the ``nearest`` stored entries; its ``str()`` is a
        readable report.
        """
        from persistmemo._explain import explain_call

        return explain_call(self, args, kwargs)

    def explain_key(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, str]:
        """Return a short digest per argument (compare two calls to see which one differs)."""
        self._current()  # the default cache's namespace comes from the configuration
        return self.keys.describe(args, kwargs)

    def dependencies(self) -> dict[str, Dependency]:
        """Return what the code fingerprint covers: ``{name: Dependency(kind, digest)}``.

        ``kind`` is ``"code"`` (a user function/class), ``"value"`` (a global or closure
        value), ``"library"`` (by qualified name), ``"effect"`` (a variable only used for side
        effects, keyed by its type) or ``"missing"`` (an unbound global).
        """
        return self.keys.dependencies()

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the stored result of ``f(*args, **kwargs)``; return whether there was one."""
        return self.engine.invalidate(self.keys(args, kwargs))

    def cache_clear(self) -> int:
        """Delete every stored result of this function (all versions); return how many."""
        return self.engine.clear()

    def cache_info(self) -> CacheInfo:
        """Return this function's counters in this process (hits, misses, stores, ...)."""
        return self.engine.stats.snapshot()

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr_name = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        binder = self.__dict__.get("_binder")
        if binder is None:
            from persistmemo._bound import Binder

            name = self.__dict__.get("_attr_name") or self.__wrapped__.__name__
            binder = self.__dict__["_binder"] = Binder(self.entry(), name)
        if obj is None:  # K.method: the function (pickles by reference, inspect sees it)
            return binder.entry
        return binder.bind(obj)

    def __repr__(self) -> str:
        return f"<memoized {self.keys.identity}>"

    def __reduce__(self) -> Any:
        from persistmemo._pickling import reduce_memoized

        return reduce_memoized(self)


class Memoized(_MemoizedBase[P, R]):
    """A memoized function: call it like the original; it gains cache methods."""

    _driver = staticmethod(sync_driver)

    if TYPE_CHECKING:
        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

        def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
            """Recompute ``f(*args, **kwargs)``, store it (replacing any entry), return it."""

        def map(self, calls: Iterable[Any], /, *, progress: bool = False) -> list[R]:
            """Return ``[f(*c) for c in calls]`` with one batched lookup."""
    else:
        __call__ = sync_driver(Engine.call)
        refresh = sync_driver(Engine.refresh)
        map = sync_driver(Engine.map)
        refresh.__doc__ = "Recompute ``f(*args, **kwargs)``, store it (replacing any entry)."
        map.__doc__ = """Return ``[f(*c) for c in calls]`` with one batched lookup.

        Each item is a tuple of positional arguments; any other item is a single argument.
        Hits are read in one batch; each miss is computed once (single-flight) and stored.
        ``progress=True`` shows a progress bar on stderr (tqdm when installed) with the counts
        of computed and reused results.
        """


class AsyncMemoized(_MemoizedBase[P, R]):
    """A memoized ``async def`` function: awaiting it never blocks the event loop on I/O.

    ``memoize`` returns a real ``async def`` function bound to it (see :meth:`entry`), so
    ``inspect.iscoroutinefunction()`` is true, and ``isinstance(f, AsyncMemoized)`` too.
    """

    _driver = staticmethod(async_driver)

    if TYPE_CHECKING:
        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

        async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
            """Recompute, store and return ``await f(*args, **kwargs)``."""

        async def map(self, calls: Iterable[Any], /, *, progress: bool = False) -> list[R]:
            """Return ``[await f(*c) for c in calls]`` with one batched lookup."""
    else:
        __call__ = async_driver(Engine.call)
        refresh = async_driver(Engine.refresh)
        map = async_driver(Engine.map)


def wrap(cache: Store | None, func: Callable[..., Any], **options: Any) -> Any:
    """Wrap ``func`` in the right memoized class for it."""
    if isinstance(func, (staticmethod, classmethod)):
        raise ConfigurationError(
            "put @memoize below @staticmethod/@classmethod (decorate the plain function)")
    if not isinstance(func, (FunctionType, MethodType)):
        raise ConfigurationError(
            f"memoize() needs a function, got {type(func).__name__}: wrap the callable in a "
            f"def (its identity and code fingerprint come from the function)")
    flags = getattr(func, "__func__", func).__code__.co_flags  # (no `inspect`: ~10 ms import)
    if flags & (_CO_GENERATOR | _CO_ASYNC_GENERATOR):
        raise ConfigurationError(
            f"memoize() cannot cache generator function {func.__qualname__}(): its result is "
            f"a one-shot iterator; return a list instead")
    cls = AsyncMemoized if flags & _CO_COROUTINE else Memoized
    memo: _MemoizedBase[Any, Any] = cls(cache, func, options)
    parent = func.__qualname__.rpartition(".")[0]
    if parent and not parent.endswith("<locals>"):
        return memo  # defined in a class body: a descriptor whose helpers bind the instance
    return memo.entry()


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
    max_value_size: int | None = ...,
    compress: str | bool | None = ...,
    compress_threshold: int | None = ...,
    mmap: bool | None = ...,
    ignore_deps: Iterable[str] = ...,
    depends_on: Iterable[Any] = ...,
    cache: Store | None = ...,
) -> _Decorator: ...


def memoize(func: Any = None, /, *, cache: Store | None = None, **options: Any) -> Any:
    """Store a function's results so later calls, in any process, reuse them.

    Usable bare (``@memoize``) or with options (``@memoize(ttl=60)``). Without ``cache=``
    it uses the default cache: ``PERSISTMEMO_URL`` if set, else ``$XDG_CACHE_HOME/persistmemo``
    or ``~/.cache/persistmemo`` (read at the first call, not at import). An option given here
    overrides the cache's, which overrides the default.

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
        max_value_size: the largest stored entry in bytes (default: the cache's, 1 GiB).
        compress, compress_threshold: ``"zstd"``/``"zstd:<level>"`` compression of results of
            at least that many bytes (default 64 KiB); ``False`` turns the cache's off.
        mmap: directory stores: return numpy arrays (and tensors) of stored results of 32 KiB
            and more as memory-mapped views of the stored file; integrity is still checked.
        ignore_deps: global or closure variable names left out of the code fingerprint (a
            counter, ``t0 = time.time()``, a run id).
        depends_on: extra objects whose identity joins the fingerprint: values, functions,
            or modules (an installed one by its version, a user module by its source).
        cache: a :class:`persistmemo.Cache` to use instead of the default.

    The wrapper keeps the signature and docstring and gains ``cache_key()``, ``invalidate()``,
    ``cache_clear()``, ``cache_info()``, ``refresh()``, ``map()``, ``dependencies()`` and
    ``__wrapped__``.

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


