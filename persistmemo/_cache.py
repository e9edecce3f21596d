"""The public :class:`Cache`: a :class:`~persistmemo._store.Store` that can decorate functions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from persistmemo import _store
from persistmemo._decorator import wrap
from persistmemo._store import Store, check_namespace, default_cache, make_codec, set_default_cache
from persistmemo.errors import ConfigurationError

if TYPE_CHECKING:
    import datetime as _dt
    import os

    from persistmemo._decorator import AsyncMemoized, Memoized, _Decorator
    from persistmemo.codec import Serializer

__all__ = ["Cache", "check_namespace", "default_cache", "make_codec", "set_default_cache"]

P = ParamSpec("P")
R = TypeVar("R")


class Cache(Store):
    """A persistent memoization cache on one store (disk by default, or Redis, or memory).

    Args:
        location: a directory path, a URL (``file://``, ``memory://``, ``redis://``,
            ``rediss://``, ``unix://``, ``redis+cluster://``), a redis-py client, or a backend
            (any object with the primitives of :class:`~persistmemo.backends.Backend`).
            ``None``: ``PERSISTMEMO_URL`` if set, else ``$XDG_CACHE_HOME/persistmemo`` or
            ``~/.cache/persistmemo``, read on first use.
        namespace: keeps applications apart in one store (``[A-Za-z0-9_.-]``).
        ttl: default time to live of entries (seconds or ``timedelta``; ``None``: forever).
        serializer: ``"msgpack"`` (default, data only) or ``"pickle"`` (needs ``secret``).
        secret: signs every entry (keyed BLAKE3), with any serializer; unsigned or badly
            signed entries are then misses (default ``PERSISTMEMO_SECRET``). Needed for pickle;
            recommended for any store others can write (a shared Redis): see SECURITY.md.
        verify_keys: older secrets still accepted when reading (key rotation).
        lock: single-flight per key across threads, processes and machines (default True).
        lock_ttl: lease of the cross-process lock in seconds, renewed while computing.
        lock_wait: how long a waiter waits for another worker before computing itself.
        fail_open: on store errors, log, skip the store for ``backoff`` seconds and return the
            function's result (default). ``False`` raises :class:`~persistmemo.BackendError`.
        backoff: seconds the store is skipped after a failure (circuit breaker).
        max_value_size: the largest stored entry in bytes (default 1 GiB): a larger result is
            returned but not stored (one warning), a larger stored entry is a miss.
        local: a local tier in front of the store: ``"memory"`` (this process, bounded by
            ``local_max_bytes``, least recently used first) or a directory path (a local disk
            cache). Reads try it first; stores, invalidations and clears reach both tiers.
        local_max_bytes: size bound of the ``"memory"`` tier (default 64 MiB).
        local_ttl: seconds a local entry is trusted (default 60; never beyond the entry's own
            TTL): the bound on staleness after another worker invalidates an entry.
        compress: ``"zstd"`` or ``"zstd:<level>"`` (default level 3): store msgpack payloads of
            at least ``compress_threshold`` bytes (default 64 KiB) zstd-compressed when that
            saves space. Needs ``zstandard`` (``persistmemo[zstd]``); any reader decodes them.
        mmap: directory stores: numpy arrays (and tensors) in results of 32 KiB or more are
            returned as memory-mapped views of the stored file, integrity still checked.
        **backend_options: store options, e.g. ``size_limit`` (disk), ``socket_timeout`` (Redis).

    Options given to :meth:`memoize` override the cache's, which override the defaults.

    Example:
        >>> cache = Cache("memory://")
        >>> @cache.memoize
        ... def square(x):
        ...     return x * x
        >>> square(4), square(4), square.cache_info().hits
        (16, 16, 1)
    """

    def __init__(
        self,
        location: Any = None,
        *,
        namespace: str = "default",
        ttl: float | _dt.timedelta | None = None,
        serializer: str | Serializer | None = None,
        secret: bytes | str | None = None,
        verify_keys: Iterable[bytes | str] = (),
        lock: bool = True,
        lock_ttl: float | _dt.timedelta = 10.0,
        lock_wait: float | _dt.timedelta | None = 300.0,
        fail_open: bool = True,
        backoff: float | _dt.timedelta = 5.0,
        max_value_size: int | None = None,
        local: str | os.PathLike[str] | None = None,
        local_max_bytes: int = 64 << 20,
        local_ttl: float | _dt.timedelta = 60.0,
        compress: str | bool | None = None,
        compress_threshold: int | None = None,
        mmap: bool = False,
        **backend_options: Any,
    ) -> None:
        super().__init__(location, namespace=namespace, secret=secret, verify_keys=verify_keys,
                         fail_open=fail_open, backoff=backoff, local=local,
                         local_max_bytes=local_max_bytes, local_ttl=local_ttl, ttl=ttl,
                         serializer=serializer, lock=lock, lock_ttl=lock_ttl,
                         lock_wait=lock_wait, max_value_size=max_value_size, compress=compress,
                         compress_threshold=compress_threshold, mmap=mmap, **backend_options)

    @overload
    def memoize(self, func: Callable[P, Awaitable[R]], /) -> AsyncMemoized[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def memoize(self, func: Callable[P, R], /) -> Memoized[P, R]: ...

    @overload
    def memoize(
        self,
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
    ) -> _Decorator: ...

    def memoize(self, func: Any = None, /, **options: Any) -> Any:
        """Decorate a function (sync or async) so its results are stored in this cache.

        Usable bare (``@cache.memoize``) or with options (``@cache.memoize(ttl=60)``); see
        :func:`persistmemo.memoize` for the options and the attributes the function gains.
        """
        if func is None:
            return lambda f: wrap(self, f, **options)
        if not callable(func):
            raise ConfigurationError(
                f"memoize() decorates a function; got {type(func).__name__}: use "
                f"@memoize or @memoize(ttl=...) with keyword options"
            )
        return wrap(self, func, **options)

    def __enter__(self) -> Cache:
        return self


_store.factory = Cache
