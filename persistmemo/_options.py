"""Engine options in one typed place, with one inheritance rule: function > cache > default.

Each option is one row of :data:`SPECS`: its default and its checker (which normalises the
value, e.g. a ``timedelta`` to seconds, or raises :class:`~persistmemo.ConfigurationError`
naming the option). ``Cache(...)`` and ``memoize(...)`` both take these options; a value given
to ``memoize`` overrides the cache's, which overrides the default. Adding an option is one row
of :data:`SPECS` plus its name in ``Options.__slots__`` (and its annotation, for mypy).

Options that only shape the key (``version``, ``ignore``, ``namespace``, ``key``) are function
options read by :class:`~persistmemo.keys.KeyBuilder`; they are listed in :data:`KEY_OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from persistmemo.config import seconds
from persistmemo.errors import ConfigurationError

__all__ = ["KEY_OPTIONS", "SPECS", "Options", "check_options"]


def _duration(value: Any, name: str) -> float | None:
    return seconds(value, name)


def _positive(value: Any, name: str) -> float:
    s = seconds(value, name)
    if not s:
        raise ConfigurationError(f"{name} must be > 0 seconds, got {value!r}")
    return s


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {type(value).__name__}: "
                                 f"{value!r}")
    return value


def _any(value: Any, name: str) -> Any:
    return value


def _compress(value: Any, name: str) -> Any:
    from persistmemo._compress import parse_compress

    parse_compress(value)  # raises ConfigurationError naming compress
    return value


def _threshold(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name} must be a number of bytes >= 0, got {value!r}")
    return value


def _size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 64:
        raise ConfigurationError(f"{name} must be a number of bytes >= 64, got {value!r}")
    return value


# name -> (checker, "None means inherit", default). ``memoize(lock=None)`` inherits the cache's
# setting, while ``memoize(ttl=None)`` means "no expiry", so the two rules are per option.
SPECS: dict[str, tuple[Callable[[Any, str], Any], bool, Any]] = {
    "ttl": (_duration, False, None),
    "lock": (_flag, True, True),
    "lock_ttl": (_positive, True, 10.0),
    "lock_wait": (_duration, False, 300.0),
    "serializer": (_any, True, None),  # None: the cache's codec
    "max_value_size": (_size, True, 1 << 30),  # larger results are not stored, entries missed
    "compress": (_compress, True, None),  # "zstd" / "zstd:<level>"; False: none
    "compress_threshold": (_threshold, True, None),  # None: persistmemo._compress's default
    "mmap": (_flag, True, False),  # directory stores: map big hits (persistmemo._mmap)
}
KEY_OPTIONS = frozenset({"version", "ignore", "namespace", "key", "ignore_deps", "depends_on"})


class Options:
    """The resolved engine options of one memoized function (or the defaults of a cache).

    A plain class, not a dataclass: ``dataclasses`` imports ``inspect`` (~10 ms of a cold start).
    """

    __slots__ = ("compress", "compress_threshold", "lock", "lock_ttl", "lock_wait",
                 "max_value_size", "mmap", "serializer", "ttl")
    ttl: float | None
    lock: bool
    lock_ttl: float
    lock_wait: float | None
    serializer: Any
    compress: Any
    compress_threshold: int | None
    mmap: bool
    max_value_size: int

    def __init__(self, **given: Any) -> None:
        for name, (_, _, default) in SPECS.items():
            setattr(self, name, given.pop(name, default))
        if given:
            raise TypeError(f"unknown option(s) {sorted(given)!r}")

    def merged(self, given: Mapping[str, Any]) -> Options:
        """Return these options overridden by the (already checked) ``given`` ones."""
        if not given:
            return self
        return Options(**{**{n: getattr(self, n) for n in SPECS}, **given})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and all(
            getattr(self, n) == getattr(other, n) for n in SPECS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Options(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in SPECS) + ")"


assert set(SPECS) == set(Options.__slots__)


def check_options(given: Mapping[str, Any], *, where: str, extra: frozenset[str] = frozenset()
                  ) -> dict[str, Any]:
    """Check and normalise engine options; drop the ones that mean "inherit".

    Raises:
        ConfigurationError: an unknown option (the message lists the known ones) or a bad value.
    """
    unknown = set(given) - set(SPECS) - extra
    if unknown:
        known = sorted(set(SPECS) | extra)
        raise ConfigurationError(f"unknown {where} option(s) {sorted(unknown)!r}; known: {known!r}")
    out: dict[str, Any] = {}
    for name, value in given.items():
        if name in extra:
            continue
        check, none_inherits, _ = SPECS[name]
        if value is None and none_inherits:
            continue
        out[name] = check(value, name)
    return out
