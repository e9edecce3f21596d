"""The :class:`Cache`: one store, one codec, shared options, a circuit breaker and counters."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from persistmemo.backends.base import Backend
from persistmemo.config import resolve_backend, seconds
from persistmemo.errors import BackendError, BackendUnavailable, ConfigurationError

if TYPE_CHECKING:
    import datetime as _dt

    from persistmemo._decorator import AsyncMemoized, Memoized, _Decorator
    from persistmemo._engine import CacheInfo
    from persistmemo.codec import Codec, Serializer

__all__ = ["Cache"]



def _log() -> Any:
    import logging  # lazily: logging costs ~5 ms of `import persistmemo`

    return logging.getLogger("persistmemo")
P = ParamSpec("P")
R = TypeVar("R")
_NAMESPACE_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_namespace(namespace: str) -> str:
    """Validate a namespace: 1-64 characters from ``[A-Za-z0-9_.-]``."""
    if (not isinstance(namespace, str) or not 0 < len(namespace) <= 64
            or not set(namespace) <= _NAMESPACE_OK):
        raise ConfigurationError(
            f"namespace must be 1-64 characters from [A-Za-z0-9_.-], got {namespace!r}"
        )
    return namespace


class Cache:
    """A persistent memoization cache on one store (disk by default, or Redis, or memory).

    Args:
        location: a directory path, a URL (``file://``, ``memory://``, ``redis://``,
            ``rediss://``, ``unix://``, ``redis+cluster://``), a redis-py client, or a
            :class:`~persistmemo.backends.Backend`. ``None``: ``PERSISTMEMO_URL`` if set, else
            ``$XDG_CACHE_HOME/persistmemo`` or ``~/.cache/persistmemo``, read on first use.
        namespace: keeps applications apart in one store (``[A-Za-z0-9_.-]``).
        ttl: default time to live of entries (seconds or ``timedelta``; ``None``: forever).
        serializer: ``"msgpack"`` (default, data only) or ``"pickle"`` (needs ``secret``).
        secret: HMAC key for the pickle serializer (default ``PERSISTMEMO_SECRET``).
        verify_keys: older secrets still accepted when reading (key rotation).
        lock: single-flight per key across threads, processes and machines (default True).
        lock_ttl: lease of the cross-process lock in seconds, renewed while computing.
        lock_wait: how long a waiter waits for another worker before computing itself.
        fail_open: on store errors, log, skip the store for ``backoff`` seconds and return the
            function's result (default). ``False`` raises :class:`~persistmemo.BackendError`.
        backoff: seconds the store is skipped after a failure (circuit breaker).
        compress: ``"zstd"`` or ``"zstd:<level>"`` (default level 3): store msgpack payloads of
            at least ``compress_threshold`` bytes (default 64 KiB) zstd-compressed when that
            saves space. Needs ``zstandard`` (``persistmemo[zstd]``); any reader decodes them.
        mmap: directory stores: numpy arrays in results of 32 KiB or more are returned as
            read-only views of the stored file (integrity still checked); see ``memoize``.
        **backend_options: store options, e.g. ``size_limit`` (disk), ``socket_timeout`` (Redis).

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
        compress: str | None = None,
        compress_threshold: int | None = None,
        mmap: bool = False,
        **backend_options: Any,
    ) -> None:
        from persistmemo._engine import Stats

        self.namespace = check_namespace(namespace)
        self.ttl = seconds(ttl, "ttl")
        self.lock = bool(lock)
        self.lock_ttl = seconds(lock_ttl, "lock_ttl") or 10.0
        self.lock_wait = seconds(lock_wait, "lock_wait")
        self.fail_open = bool(fail_open)
        self.backoff = seconds(backoff, "backoff") or 0.0
        self._secret = secret
        self._verify_keys = tuple(verify_keys)
        self._serializer = serializer
        self.mmap = bool(mmap)
        self._compress = (compress, compress_threshold)
        self.codec = make_codec(serializer, secret, self._verify_keys, *self._compress)
        self.stats = Stats()
        self._location = location
        self._backend_options = backend_options
        self._backend: Backend | None = None
        self._open_lock = threading.Lock()
        self._down_until = 0.0
        self._error_kinds: set[str] = set()
        if location is not None:  # validate eagerly: a bad URL fails here, not on first call
            self._backend = resolve_backend(location, **backend_options)

    def __repr__(self) -> str:
        return f"<persistmemo.Cache backend={self._backend!r} namespace={self.namespace!r}>"

    @property
    def backend(self) -> Backend:
        """The store, resolved on first use (so the environment is read then, not at import)."""
        b = self._backend
        if b is None:
            with self._open_lock:
                if self._backend is None:
                    self._backend = resolve_backend(self._location, **self._backend_options)
                b = self._backend
        return b

    # -- circuit breaker ---------------------------------------------------------------------
    def available(self) -> bool:
        """Whether calls should use the store now (False during the back-off window)."""
        down = self._down_until
        return not down or time.monotonic() >= down

    def backend_failed(self, exc: BackendError) -> None:
        """Count a store failure; raise it, or (for an unreachable store) open the breaker.

        Only :class:`BackendUnavailable` (refused, timed out, paused) opens the breaker for
        ``backoff`` seconds: then every call would pay the timeout again. Other errors (a full
        disk, Redis out of memory, a missing permission) are per command: reads may still work,
        so they are counted and logged once per kind but do not stop the store being used.
        """
        self.stats.errors += 1
        if not self.fail_open:
            raise exc
        if isinstance(exc, BackendUnavailable):
            first = not self._down_until
            self._down_until = time.monotonic() + self.backoff
            if first:
                _log().warning("persistmemo: cache store %r is unavailable (%s); results are "
                               "computed without it and it is retried in %.1fs",
                               self._backend, exc, self.backoff)
            return
        kind = type(exc.__cause__ or exc).__name__
        if kind not in self._error_kinds:
            self._error_kinds.add(kind)
            _log().warning("persistmemo: cache store %r failed (%s); the result is returned "
                           "without being cached", self._backend, exc)

    def backend_ok(self) -> None:
        """Close the breaker after a successful call (logs the recovery once)."""
        if self._down_until:
            self._down_until = 0.0
            _log().warning("persistmemo: cache store %r is back", self._backend)

    # -- decorating --------------------------------------------------------------------------
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
        compress: str | None = ...,
        compress_threshold: int | None = ...,
        mmap: bool | None = ...,
    ) -> _Decorator: ...

    def memoize(self, func: Any = None, /, **options: Any) -> Any:
        """Decorate a function (sync or async) so its results are stored in this cache.

        Usable bare (``@cache.memoize``) or with options (``@cache.memoize(ttl=60)``); see
        :func:`persistmemo.memoize` for the options and the attributes the function gains.
        """
        from persistmemo._decorator import wrap

        if func is None:
            return lambda f: wrap(self, f, **options)
        if not callable(func):
            raise ConfigurationError(
                f"memoize() decorates a function; got {type(func).__name__}: use "
                f"@memoize or @memoize(ttl=...) with keyword options"
            )
        return wrap(self, func, **options)

    # -- whole-cache operations --------------------------------------------------------------
    def clear(self) -> int:
        """Delete every persistmemo entry of this namespace; return how many."""
        from persistmemo.keys import KEY_FORMAT

        return self.backend.clear(f"pm:{KEY_FORMAT}:{self.namespace}:")

    def info(self) -> CacheInfo:
        """Counters of every function memoized on this cache in this process."""
        return self.stats.snapshot()

    def close(self) -> None:
        """Close the store's connections and files."""
        if self._backend is not None:
            self._backend.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_codec(
    serializer: str | Serializer | None,
    secret: bytes | str | None,
    verify_keys: Iterable[bytes | str] = (),
    compress: str | None = None,
    compress_threshold: int | None = None,
) -> Codec:
    """Build the codec for a serializer spec (``PERSISTMEMO_SECRET`` is the default secret)."""
    from persistmemo._compress import parse_compress
    from persistmemo.codec import Codec, get_serializer

    if secret is None and serializer == "pickle":
        secret = os.environ.get("PERSISTMEMO_SECRET") or None
    s = get_serializer(serializer, secret=secret, verify_keys=tuple(verify_keys))
    return Codec(s, compress=parse_compress(compress, compress_threshold))


_default_cache: Cache | None = None
_default_env: tuple[str | None, ...] = ()
_default_explicit = False
_default_lock = threading.Lock()


def _env_signature() -> tuple[str | None, ...]:
    env = os.environ
    return (env.get("PERSISTMEMO_URL"), env.get("XDG_CACHE_HOME"), env.get("HOME"))


def default_cache() -> Cache:
    """The process-wide cache used by :func:`persistmemo.memoize`.

    Created on first use from ``PERSISTMEMO_URL`` / the user cache directory; created anew if
    those variables changed since (unless :func:`set_default_cache` chose one explicitly).
    """
    global _default_cache, _default_env
    with _default_lock:
        if _default_explicit and _default_cache is not None:
            return _default_cache
        sig = _env_signature()
        if _default_cache is None or sig != _default_env:
            _default_cache, _default_env = Cache(), sig
        return _default_cache


def set_default_cache(cache: Cache | Any | None) -> Cache | None:
    """Choose the cache used by :func:`persistmemo.memoize` (a Cache or a location).

    Functions already called keep the cache they started with. ``None`` returns to the
    environment-driven default. Returns the new default cache (or None).
    """
    global _default_cache, _default_explicit, _default_env
    new = cache if isinstance(cache, Cache) or cache is None else Cache(cache)
    with _default_lock:
        _default_cache, _default_explicit, _default_env = new, new is not None, _env_signature()
    return new
