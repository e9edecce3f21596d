"""Limits that keep decoding a hostile payload bounded in memory and time.

Private to :mod:`persistmemo._msgpack_ext`. An unsigned store can be written by anyone with
access to it, and the checksum does not stop them, so a payload must not be able to:

- **expand**: a byte of msgpack can become a 64-200 byte Python object (an empty list or dict).
  :class:`Budget` charges every container and ext value its approximate CPython size while
  decoding and aborts once the estimate passes ``EXPANSION`` times the entry size plus
  ``SLACK`` (checked during decoding, so the memory is never reached);
- **flood hashes**: ints, tuples, Decimals... hash deterministically, so a set or dict whose keys
  all share one hash costs quadratic time to build. Before a set or a dict with such keys is
  built, :func:`unflooded` counts equal hashes (a ``Counter`` of hash values has no such
  weakness: equal hash values are equal keys) and refuses more than ``MAX_SAME_HASH``. str and
  bytes hashes are randomized per process and are not checked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

__all__ = ["EXPANSION", "GUARD_FROM", "MAX_SAME_HASH", "SLACK", "Budget", "unflooded",
           "unflooded_dict"]

EXPANSION = 32  # decoded estimate <= 32 x entry size + SLACK
SLACK = 16 << 20
GUARD_FROM = 1 << 20  # untagged payloads smaller than this skip the hooks (bounded by size)
MAX_SAME_HASH = 64  # distinct items sharing one hash value; legitimate data has a handful
_SAFE = frozenset({str, bytes})  # randomized hashes
_first = itemgetter(0)


class Budget:
    """Approximate bytes a decode may still allocate; raises ValueError when exhausted."""

    __slots__ = ("left",)

    def __init__(self, size: int) -> None:
        self.left = EXPANSION * size + SLACK

    def _spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise ValueError(f"decoded value would exceed {EXPANSION}x the stored size "
                             "(an expansion payload?)")

    def charge_list(self, n: int) -> None:
        """A list of ``n`` items: header, GC head and one pointer per item."""
        self._spend(72 + 8 * n)

    def charge_dict(self, n: int) -> None:
        """A dict of ``n`` items (CPython: 200 bytes up to 5 items, then ~48 per item)."""
        self._spend(200 if n <= 5 else 64 + 48 * n)

    def charge_ext(self, n: int) -> None:
        """An ext value with ``n`` bytes of data (a compact tuple's items included)."""
        self._spend(64 + 8 * n)


def _check(items: list[Any]) -> None:
    if len(items) <= MAX_SAME_HASH or _SAFE.issuperset(map(type, items)):
        return
    top = Counter(map(hash, items)).most_common(1)
    if top and top[0][1] > MAX_SAME_HASH:
        raise ValueError(f"{top[0][1]} distinct items share one hash value (hash flooding?)")


def unflooded(items: list[Any]) -> list[Any]:
    """Return ``items`` if building a set of them costs linear time, else raise ValueError."""
    _check(items)
    return items


def unflooded_dict(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    """Build a dict from decoded pairs, refusing keys crafted to share one hash."""
    if not isinstance(pairs, list):
        pairs = list(pairs)
    if len(pairs) > MAX_SAME_HASH:
        _check(list(map(_first, pairs)))
    return dict(pairs)
