"""The store side of a :class:`~persistmemo.Cache`: backend, codec, options, breaker, counters.

:class:`Store` knows nothing about decorating (that is :mod:`persistmemo._cache`, one layer up),
so the engine and the decorator depend on it and it depends on neither: no import cycles. The
process-wide default cache lives here too; ``_cache`` registers the class it builds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from persistmemo._breaker import Breaker
from persistmemo._options import Options, check_options
from persistmemo._stats import CacheInfo, Stats
from persistmemo.backends.base import BaseBackend, adapt
from persistmemo.config import resolve_backend, seconds
from persistmemo.errors import ConfigurationError

if TYPE_CHECKING:
    from persistmemo._usage import Recorder
    from persistmemo.codec import Codec, Serializer

__all__ = ["Store", "check_namespace", "default_cache", "make_codec", "set_default_cache"]

_NAMESPACE_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_namespace(namespace: str) -> str:
    """Validate a namespace: 1-64 characters from ``[A-Za-z0-9_.-]``."""
    if (not isinstance(namespace, str) or not 0 < len(namespace) <= 64
            or not set(namespace) <= _NAMESPACE_OK):
        raise ConfigurationError(
            f"namespace must be 1-64 characters from [A-Za-z0-9_.-], got {namespace!r}"
        )
    return namespace


def make_codec(serializer: str | Serializer | None, secret: bytes | str | None,
               verify_keys: Iterable[bytes | str] = (), max_value_size: int | None = None,
               compress: Any = None, compress_threshold: int | None = None) -> Codec:
    """Build the codec for a serializer spec (``PERSISTMEMO_SECRET`` is the default secret).

    With a secret every entry is signed, whatever the serializer, and unsigned or badly signed
    entries are misses.
    """
    from persistmemo.codec import DEFAULT_MAX_VALUE_SIZE, Codec, get_serializer

    if secret is None:
        secret = os.environ.get("PERSISTMEMO_SECRET") or None
    keys = tuple(verify_keys)
    if keys and secret is None:
        raise ConfigurationError("verify_keys needs a secret (pass secret=... or set "
                                 "PERSISTMEMO_SECRET): they are older secrets for reading")
    compression = None
    if compress is not None and compress is not False:
        from persistmemo._compress import parse_compress

        compression = parse_compress(compress, compress_threshold)
    return Codec(get_serializer(serializer, secret=secret, verify_keys=keys),
                 secret=secret, verify_keys=keys,
                 max_value_size=max_value_size or DEFAULT_MAX_VALUE_SIZE, compress=compression)


class Store:
    """One store (resolved lazily), one codec, default options, a breaker and the totals.

    See :class:`persistmemo.Cache` for the arguments.
    """

    def __init__(self, location: Any = None, *, namespace: str = "default",
                 secret: bytes | str | None = None, verify_keys: Iterable[bytes | str] = (),
                 fail_open: bool = True, backoff: Any = 5.0, local: Any = None,
                 local_max_bytes: int = 64 << 20, local_ttl: Any = 60.0,
                 **options: Any) -> None:
        from persistmemo._options import SPECS

        self._init_kwargs = dict(namespace=namespace, secret=secret,
                                 verify_keys=tuple(verify_keys), fail_open=fail_open,
                                 backoff=backoff, local=local, local_max_bytes=local_max_bytes,
                                 local_ttl=local_ttl, **options)
        engine_opts = {k: v for k, v in options.items() if k in SPECS}
        backend_opts = {k: v for k, v in options.items() if k not in SPECS}
        self.namespace = check_namespace(namespace)
        self.options = Options().merged(check_options(engine_opts, where="Cache"))
        self._secret = secret
        self._verify_keys = tuple(verify_keys)
        o = self.options
        self.codec = make_codec(o.serializer, secret, self._verify_keys, o.max_value_size,
                                o.compress, o.compress_threshold)
        self.stats = Stats()
        self.breaker = Breaker(backoff=seconds(backoff, "backoff") or 0.0,
                               fail_open=bool(fail_open))
        self._location = location
        self._backend_options = backend_opts
        self._local = _check_local(local, local_max_bytes, local_ttl)
        self._backend: BaseBackend | None = None
        self._open_lock = threading.Lock()
        self._usage: Recorder | None = None
        if location is not None:  # validate eagerly: a bad URL fails here, not on first call
            self._backend = self._resolve()

    # v0.1 attribute names, read by users and the CLI
    ttl = property(lambda self: self.options.ttl)
    lock = property(lambda self: self.options.lock)
    lock_ttl = property(lambda self: self.options.lock_ttl)
    lock_wait = property(lambda self: self.options.lock_wait)
    fail_open = property(lambda self: self.breaker.fail_open)
    backoff = property(lambda self: self.breaker.backoff)

    def _resolve(self) -> BaseBackend:
        backend = adapt(resolve_backend(self._location, **self._backend_options))
        limit = getattr(backend, "limit_reads", None)
        if limit is not None:  # the store refuses entries over max_value_size before reading
            limit(self.codec.max_value_size)
        if self._local is not None:
            from persistmemo.backends.tiered import TieredBackend

            kind, max_bytes, ttl = self._local
            backend = TieredBackend.build(kind, backend, max_bytes=max_bytes, local_ttl=ttl,
                                          backoff=self.breaker.backoff)
        self.breaker.label = backend
        return backend

    def __reduce__(self) -> Any:
        # A cache travels as its constructor arguments (a memoized function sent by value to
        # a dask worker brings its cache along); the receiver opens its own connections.
        from persistmemo._pickling import rebuild_cache

        return rebuild_cache, (type(self), self._location, tuple(sorted(self._init_kwargs.items())))

    @property
    def usage(self) -> Recorder:
        """The batched recorder of this cache's usage statistics (persisted in the store)."""
        u = self._usage
        if u is None:
            from persistmemo._usage import Recorder

            with self._open_lock:
                if self._usage is None:
                    self._usage = Recorder(self)
                u = self._usage
        return u

    def available(self) -> bool:
        """Whether calls should use the store now (False during the breaker's back-off)."""
        return self.breaker.available()

    def __repr__(self) -> str:
        return f"<persistmemo.Cache backend={self._backend!r} namespace={self.namespace!r}>"

    @property
    def backend(self) -> BaseBackend:
        """The store, resolved on first use (so the environment is read then, not at import)."""
        b = self._backend
        if b is None:
            with self._open_lock:
                if self._backend is None:
                    self._backend = self._resolve()
                b = self._backend
        return b

    def clear(self) -> int:
        """Delete every persistmemo entry of this namespace (every tier); return how many."""
        from persistmemo.keys import KEY_FORMAT

        cleared = self.backend.clear(f"pm:{KEY_FORMAT}:{self.namespace}:")
        self.backend.clear(f"pmm:{KEY_FORMAT}:{self.namespace}:")  # dependency manifests
        return cleared

    def info(self) -> CacheInfo:
        """Counters of every function memoized on this cache in this process (their sums)."""
        return self.stats.snapshot()

    def close(self) -> None:
        """Flush the usage statistics, then close the store's connections and files."""
        if self._usage is not None:
            self._usage.flush()
        if self._backend is not None:
            self._backend.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_local(local: Any, max_bytes: Any, ttl: Any) -> tuple[Any, int, float] | None:
    if local is None:
        return None
    if not (local == "memory" or isinstance(local, (str, os.PathLike))) or local == "":
        raise ConfigurationError(f"local must be 'memory' or a directory path, got "
                                 f"{type(local).__name__}: {local!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ConfigurationError(f"local_max_bytes must be a positive int, got {max_bytes!r}")
    local_ttl = seconds(ttl, "local_ttl")
    if not local_ttl:
        raise ConfigurationError(f"local_ttl must be > 0 seconds, got {ttl!r}")
    return local, max_bytes, local_ttl


# -- the process-wide default cache ------------------------------------------------------------
factory: Any = Store  # persistmemo._cache sets this to Cache (the class with .memoize)
_default: Any = None
_default_env: tuple[Any, ...] = ()
_default_explicit = False
_default_lock = threading.Lock()
#: Bumped whenever the default cache is replaced: functions that use the default cache notice
#: it at their next call and move to the new one (the pytest fixture relies on this).
generation = 0


def _env_signature() -> tuple[Any, ...]:
    from persistmemo._project import signature

    return signature()


def default_cache() -> Any:
    """The process-wide cache used by :func:`persistmemo.memoize`.

    Created on first use from the project configuration: ``PERSISTMEMO_*`` variables, else
    ``[tool.persistmemo]`` in the nearest ``pyproject.toml`` (or a ``persistmemo.toml``), else
    the user cache directory; created anew if those changed since (unless
    :func:`set_default_cache` chose one explicitly).
    """
    global _default, _default_env, generation
    with _default_lock:
        if _default_explicit and _default is not None:
            return _default
        sig = _env_signature()
        if _default is None or sig != _default_env:
            import inspect

            from persistmemo._project import cache_arguments, load_settings

            params = inspect.signature(factory).parameters.values()
            accepted = {p.name for p in params}
            if any(p.kind is p.VAR_KEYWORD for p in params):
                accepted.add("*")  # takes store options by keyword
            try:
                _default = factory(**cache_arguments(load_settings(), accepted))
            except ConfigurationError as exc:
                _default = _unconfigured(exc)
            _default_env = sig
            generation += 1
        return _default


def _unconfigured(exc: ConfigurationError) -> Any:
    """A broken project file or variable must not crash the user's program: memoized functions
    on the default cache call straight through (nothing cached) until it is fixed."""
    import logging

    logging.getLogger("persistmemo").warning(
        "%s; memoized functions on the default cache run uncached until this is fixed "
        "(persistmemo ls shows the same error)", exc)
    cache = factory("memory://")
    cache.config_error = str(exc)
    return cache


def set_default_cache(cache: Any) -> Any:
    """Choose the cache used by :func:`persistmemo.memoize` (a Cache or a location).

    Functions that use the default cache move to the new one at their next call. ``None``
    returns to the configuration-driven default. Returns the new default cache (or None).
    """
    global _default, _default_explicit, _default_env, generation
    new = cache if isinstance(cache, Store) or cache is None else factory(cache)
    with _default_lock:
        _default, _default_explicit, _default_env = new, new is not None, _env_signature()
        generation += 1
    return new
