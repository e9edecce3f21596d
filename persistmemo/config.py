"""Where the cache lives: a backend object, a path, or a URL; else the environment, read lazily.

Precedence: an explicit backend/client > a location string or path > ``PERSISTMEMO_URL`` > the
project file (``[tool.persistmemo] url`` in the nearest ``pyproject.toml``, or
``persistmemo.toml``; see :mod:`persistmemo._project`) > the user cache directory
(``$XDG_CACHE_HOME/persistmemo`` or ``~/.cache/persistmemo``).

Recognised locations: a directory path (``str``/``Path``), ``file:///path``, ``memory://``,
``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``, ``rediss+cluster://``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from persistmemo._project import default_directory
from persistmemo.backends.base import Backend
from persistmemo.errors import ConfigurationError

if TYPE_CHECKING:
    import datetime as _dt

__all__ = ["default_directory", "default_location", "register_scheme", "resolve_backend",
           "seconds"]

# URL scheme -> factory(url, **options) -> backend. A new backend is one module plus one
# register_scheme() call; the factories import their drivers lazily.
_SCHEMES: dict[str, Callable[..., Any]] = {}


def register_scheme(*schemes: str, factory: Callable[..., Any]) -> None:
    """Make ``Cache("<scheme>://...")`` build its store with ``factory(url, **options)``."""
    for scheme in schemes:
        _SCHEMES[scheme.lower()] = factory
_DISK_PARAMS = {"size_limit": int, "busy_timeout": float}


def seconds(value: float | int | _dt.timedelta | None, name: str) -> float | None:
    """Normalise a duration option (seconds or ``timedelta``) to float seconds."""
    if value is None:
        return None
    if type(value).__name__ == "timedelta" and hasattr(value, "total_seconds"):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{name} must be seconds (int/float) or a datetime.timedelta, "
            f"got {type(value).__name__}: {value!r}"
        )
    if value < 0 or value != value:
        raise ConfigurationError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


def default_location() -> str:
    """Return where the default cache lives: ``PERSISTMEMO_URL`` > project file > user dir.

    The CLI and the library's default cache both resolve the location here, so
    ``persistmemo stats`` run inside a project shows that project's cache.
    """
    from persistmemo._project import load_settings

    return str(load_settings().values["url"])


def _disk(path: str | os.PathLike[str], params: dict[str, Any]) -> Backend:
    from persistmemo.backends.disk import DiskBackend

    unknown = set(params) - set(_DISK_PARAMS)
    if unknown:
        raise ConfigurationError(
            f"unknown disk cache option(s) {sorted(unknown)!r}; known: {sorted(_DISK_PARAMS)!r}"
        )
    try:
        typed = {k: _DISK_PARAMS[k](v) for k, v in params.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad disk cache option: {exc}") from exc
    return DiskBackend(path, **typed)


def resolve_backend(location: Any = None, **options: Any) -> Backend:
    """Turn a location (backend, client, path, URL or None) into a :class:`Backend`.

    ``options`` are backend-specific (``size_limit`` for disk; timeouts for Redis).
    """
    if location is None:
        location = default_location()
    if isinstance(location, Backend):
        if options:
            raise ConfigurationError(
                f"backend options {sorted(options)!r} cannot apply to an existing backend object"
            )
        return location
    if isinstance(location, os.PathLike):
        return _disk(location, options)
    if not isinstance(location, str):
        mod = type(location).__module__
        if mod.startswith("redis"):  # a redis-py client the user already has
            from persistmemo.backends.redis import RedisBackend

            return RedisBackend(location, **options)
        raise ConfigurationError(
            f"location must be a path, a URL or a backend, got {type(location).__name__}"
        )
    if "://" not in location:
        if not location:
            raise ConfigurationError("location is an empty string")
        return _disk(location, options)
    scheme = urlsplit(location).scheme.lower()
    factory = _SCHEMES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"unknown cache URL scheme {scheme!r} in location; use a path or one of "
            f"{sorted(s + '://' for s in _SCHEMES)}"
        )
    return factory(location, **options)  # type: ignore[no-any-return]


def _memory(url: str, **options: Any) -> Backend:
    if urlsplit(url).query or options:
        raise ConfigurationError("memory:// takes no options")
    from persistmemo.backends.memory import MemoryBackend

    return MemoryBackend()


def _file(url: str, **options: Any) -> Backend:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return _disk(unquote(parts.path), {**query, **options})


def _redis(url: str, **options: Any) -> Backend:
    from persistmemo.backends.redis import RedisBackend

    return RedisBackend(url, **options)


register_scheme("memory", factory=_memory)
register_scheme("file", factory=_file)
register_scheme("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", factory=_redis)
