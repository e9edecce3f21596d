"""persistmemo: make expensive functions cheap the second time, in any process, on any machine.

A decorator turns a call's arguments into a stable, typed key; the result is stored in a local
diskcache (the default) or a shared Redis, so results survive restarts and are shared by every
worker pointing at the same store.

Example:
    >>> import persistmemo
    >>> @persistmemo.memoize(cache=persistmemo.Cache("memory://"))
    ... def fib(n: int) -> int:
    ...     return n if n < 2 else fib(n - 1) + fib(n - 2)
    >>> fib(80)
    23416728348467685
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persistmemo._cache import Cache, default_cache, set_default_cache
from persistmemo._decorator import AsyncMemoized, Memoized, memoize
from persistmemo._engine import UncacheableResultWarning
from persistmemo._stats import CacheInfo
from persistmemo._switch import disabled
from persistmemo.backends.base import MISSING, Backend, Lock, Missing
from persistmemo.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    DecodeError,
    KeyEncodingError,
    LockTimeout,
    PersistmemoError,
    SerializationError,
)
from persistmemo.keys import Dependency, register_key_encoder

if TYPE_CHECKING:
    from persistmemo._explain import Explanation
    from persistmemo.backends.disk import DiskBackend
    from persistmemo.backends.memory import MemoryBackend
    from persistmemo.backends.redis import RedisBackend


def __getattr__(name: str) -> Any:
    # Backends import their drivers (diskcache, redis) lazily: `import persistmemo` stays fast.
    if name == "Explanation":  # what f.explain() returns: imported with it, not at import
        from persistmemo._explain import Explanation

        return Explanation
    if name in ("DiskBackend", "MemoryBackend", "RedisBackend"):
        from persistmemo import backends

        return getattr(backends, name)
    # __version__ comes from the installed metadata, read lazily (importlib.metadata is slow).
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("persistmemo")
        except PackageNotFoundError:  # a source tree that is not installed
            return "0.0.0+unknown"
    raise AttributeError(f"module 'persistmemo' has no attribute {name!r}")

__all__ = [
    "MISSING",
    "AsyncMemoized",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Cache",
    "CacheInfo",
    "ConfigurationError",
    "DecodeError",
    "Dependency",
    "DiskBackend",
    "Explanation",
    "KeyEncodingError",
    "Lock",
    "LockTimeout",
    "Memoized",
    "MemoryBackend",
    "Missing",
    "PersistmemoError",
    "RedisBackend",
    "SerializationError",
    "UncacheableResultWarning",
    "__version__",
    "default_cache",
    "disabled",
    "memoize",
    "register_key_encoder",
    "set_default_cache",
]
