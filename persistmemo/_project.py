"""Project configuration: one source of truth for the default cache and the ``persistmemo`` CLI.

Settings come from, highest first:

1. explicit arguments (``Cache(...)``, ``@memoize(...)``, ``persistmemo --url ...``);
2. ``PERSISTMEMO_*`` environment variables (``PERSISTMEMO_URL``, ``PERSISTMEMO_NAMESPACE``,
   ``PERSISTMEMO_TTL``, ... one per option below, upper-cased);
3. the project file: the nearest ``persistmemo.toml`` (top-level keys) or ``pyproject.toml``
   with a ``[tool.persistmemo]`` table, searched from the working directory upwards;
4. the user default: ``$XDG_CACHE_HOME/persistmemo`` or ``~/.cache/persistmemo``.

A relative ``url`` in a project file is relative to that file's directory, so every command run
anywhere inside the project finds the same cache. ``PERSISTMEMO_CONFIG`` names a config file
explicitly, or disables the search with ``none``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from persistmemo.errors import ConfigurationError

__all__ = ["OPTIONS", "ProjectFile", "Settings", "cache_arguments", "default_directory",
           "find_project_file", "load_settings", "signature"]


def default_directory() -> Path:
    """Return ``$XDG_CACHE_HOME/persistmemo`` or ``~/.cache/persistmemo``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "persistmemo"


def _duration(value: Any, name: str) -> float | None:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "null", "forever"):
            return None
        value = _number(text, name)
    seconds = _number(value, name)
    if seconds < 0 or seconds != seconds:
        raise ConfigurationError(f"{name} must be >= 0 seconds, got {value!r}")
    return seconds


def _number(value: Any, name: str) -> float:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigurationError(f"{name} must be a number, got {value!r}")


def _integer(value: Any, name: str) -> int:
    number = _number(value, name)
    if number != int(number):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    return int(number)


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


#: Every setting a project file or ``PERSISTMEMO_*`` variable may hold, with its parser.
OPTIONS: dict[str, Callable[[Any, str], Any]] = {
    "url": _text,
    "namespace": _text,
    "ttl": _duration,
    "local": _text,
    "local_max_bytes": _integer,
    "local_ttl": _duration,
    "serializer": _text,
    "lock": _boolean,
    "lock_ttl": _duration,
    "lock_wait": _duration,
    "fail_open": _boolean,
    "backoff": _duration,
    "size_limit": _integer,
    "busy_timeout": _number,
    "socket_timeout": _number,
    "connect_timeout": _number,
}
_SECRETS = ("secret", "verify_keys")


class ProjectFile(NamedTuple):
    """A project configuration file and the raw settings it holds."""

    path: Path
    table: dict[str, Any]


class Settings(NamedTuple):
    """Resolved settings (parsed, without explicit arguments) and where they came from."""

    values: dict[str, Any]
    sources: dict[str, str]  # option -> "env PERSISTMEMO_X" / the file path / "default"
    project: ProjectFile | None


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read persistmemo configuration {path}: {exc}") from exc


def _read(path: Path) -> ProjectFile | None:
    data = _load_toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("persistmemo")
        if table is None:
            return None
        if not isinstance(table, dict):
            raise ConfigurationError(f"{path}: [tool.persistmemo] must be a table")
        return ProjectFile(path, table)
    return ProjectFile(path, data)


def find_project_file(start: str | os.PathLike[str] | None = None) -> ProjectFile | None:
    """Return the nearest project configuration above ``start`` (default: the cwd), if any.

    In each directory, from ``start`` upwards, a ``persistmemo.toml`` wins over a
    ``pyproject.toml``; a ``pyproject.toml`` without ``[tool.persistmemo]`` is skipped.
    ``PERSISTMEMO_CONFIG`` overrides the search (a file path, or ``none`` to disable it).
    """
    forced = os.environ.get("PERSISTMEMO_CONFIG", "").strip()
    if forced.lower() in ("none", "off", "0", "false"):
        return None
    if forced:
        path = Path(forced).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"PERSISTMEMO_CONFIG={forced!r}: no such file")
        return _read(path.resolve())
    try:
        here = Path(start if start is not None else os.getcwd()).resolve()
    except OSError:  # the cwd was deleted
        return None
    for directory in (here, *here.parents):
        for name in ("persistmemo.toml", "pyproject.toml"):
            candidate = directory / name
            if candidate.is_file():
                found = _read(candidate)
                if found is not None:
                    return found
    return None


def _parse(name: str, raw: Any, origin: str) -> Any:
    if name in _SECRETS:
        raise ConfigurationError(
            f"{origin}: {name!r} does not belong in a configuration file (it would be "
            f"committed with the project); set PERSISTMEMO_SECRET in the environment instead")
    parser = OPTIONS.get(name)
    if parser is None:
        raise ConfigurationError(
            f"{origin}: unknown persistmemo option {name!r}; known: {sorted(OPTIONS)}")
    return parser(raw, f"{origin}: {name}")


def load_settings(environ: Mapping[str, str] | None = None,
                  start: str | os.PathLike[str] | None = None) -> Settings:
    """Merge ``PERSISTMEMO_*`` variables over the project file (explicit arguments go on top).

    Raises:
        ConfigurationError: an unreadable file, an unknown option or a value of the wrong type,
            naming the file (or variable) and the option.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    project = find_project_file(start)
    if project is not None:
        for name, raw in project.table.items():
            values[name] = _parse(name, raw, str(project.path))
            sources[name] = str(project.path)
        url = values.get("url")
        if url and "://" not in url and not Path(url).expanduser().is_absolute():
            values["url"] = str(project.path.parent / url)
    for name in OPTIONS:
        var = "PERSISTMEMO_" + name.upper()
        raw = env.get(var, "").strip()
        if raw:
            values[name] = _parse(name, raw, var)
            sources[name] = f"env {var}"
    if "url" not in values:
        values["url"] = str(default_directory())
        sources["url"] = "default"
    return Settings(values, sources, project)


def signature() -> tuple[Any, ...]:
    """A cheap fingerprint of everything :func:`load_settings` reads (to notice changes)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items()
                       if k.startswith("PERSISTMEMO_") or k in ("XDG_CACHE_HOME", "HOME")))
    try:
        project = find_project_file()
    except ConfigurationError:
        return (env, "invalid")
    if project is None:
        return (env, None)
    try:
        mtime = project.path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return (env, str(project.path), mtime)


_DISK_ONLY = ("size_limit", "busy_timeout")
_REDIS_ONLY = ("socket_timeout", "connect_timeout")


def cache_arguments(settings: Settings, accepted: Collection[str]) -> dict[str, Any]:
    """Turn settings into ``Cache(location, **options)`` arguments (``location`` included).

    ``accepted``: the option names the cache class takes. Store options that do not apply to
    the chosen store (``size_limit`` with a Redis URL) are left out rather than refused: one
    project file may serve a directory and, through ``PERSISTMEMO_URL``, a Redis.
    """
    values = dict(settings.values)
    url = values.pop("url")
    is_redis = "://" in url and not url.lower().startswith(("file:", "memory:"))
    for name in _DISK_ONLY if is_redis else _REDIS_ONLY:
        values.pop(name, None)
    for name in list(values):
        if name not in accepted and "*" not in accepted:
            raise ConfigurationError(
                f"{settings.sources.get(name, name)}: option {name!r} is not supported by this "
                f"version of persistmemo")
    return {"location": url, **values}
