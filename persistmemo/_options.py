"""Engine options in one typed place, with one inheritance rule: function > cache > default.

Each option is one row of :data:`SPECS`: its default and its checker (which normalises the
value, e.g. a ``timedelta`` to seconds, or raises :class:`~persistmemo.ConfigurationError`
naming the option). ``Cache(...)`` and ``memoize(...)`` both take these options; a value given
to ``memoize`` overrides the cache's, which overrides the default. Adding an option is one row
here plus one field on :class:`Options`.

Options that only shape the key (``version``, ``ignore``, ``namespace``, ``key``) are function
options read by :class:`~persistmemo.keys.KeyBuilder`; they are listed in :data:`KEY_OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
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


@dataclass(frozen=True)
class Options:
    """The resolved engine options of one memoized function (or the defaults of a cache)."""

    ttl: float | None = None
    lock: bool = True
    lock_ttl: float = 10.0
    lock_wait: float | None = 300.0
    serializer: Any = None  # None: the cache's codec

    def merged(self, given: Mapping[str, Any]) -> Options:
        """Return these options overridden by the (already checked) ``given`` ones."""
        return replace(self, **given) if given else self


# name -> (checker, "None means inherit"). ``memoize(lock=None)`` inherits the cache's
# setting, while ``memoize(ttl=None)`` means "no expiry", so the two rules are per option.
SPECS: dict[str, tuple[Callable[[Any, str], Any], bool]] = {
    "ttl": (_duration, False),
    "lock": (_flag, True),
    "lock_ttl": (_positive, True),
    "lock_wait": (_duration, False),
    "serializer": (_any, True),
}
KEY_OPTIONS = frozenset({"version", "ignore", "namespace", "key"})
assert set(SPECS) == {f.name for f in fields(Options)}


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
        check, none_inherits = SPECS[name]
        if value is None and none_inherits:
            continue
        out[name] = check(value, name)
    return out
