"""Every performance target, in one place: id -> (text, limit, direction, unit).

The text is a template filled by the scenario (e.g. ``{name}``); a scenario reports a
measured value with ``check(report, id, value, **fields)`` and never hard-codes a limit.
The ids group by report section (1 = disk hit, ... 12 = recursion).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TARGETS", "Target"]


class Target(NamedTuple):
    text: str
    limit: float
    at_most: bool = True  # False: the value must be >= limit
    unit: str = "x"


TARGETS: dict[str, Target] = {
    "1a": Target("disk hit {name} ≤ 1.4x floor (key + get + decode)", 1.4),
    "1b": Target("disk hit {name} ≤ 0.55x diskcache memoize hit", 0.55),
    "2": Target("disk miss {label} at {size:,} entries ≤ 1.25x raw", 1.25),
    "2b": Target("disk miss with the default lock ≤ 2x a raw miss (at {size:,} entries)", 2.0),
    "3": Target("keying a {mb} MB array ≥ 3 GB/s", 3.0, False, "GB/s"),
    "4s": Target("store {mb} MB result: {name} ≥ 1.5 GB/s", 1.5, False, "GB/s"),
    "4l": Target("load {mb} MB result: {name} ≥ 5 GB/s", 5.0, False, "GB/s"),
    "5a": Target("`import persistmemo` < 15 ms", 15.0, True, "ms"),
    "5c": Target("fresh import + decorate + first hit ≤ 1.5x diskcache's", 1.5),
    "6": Target("Redis hit ≤ 1.15x raw redis-py GET", 1.15),
    "7": Target("Redis cold miss with lock ≤ 3 round trips", 3, True, "round trips"),
    "8": Target("f.map speed-up on {name} ≥ 20x", 20.0, False),
    "9a": Target("fail-open, {name}: first call ≤ 0.6 s (0.5 s timeouts)", 0.6, True, "s"),
    "9b": Target("fail-open, {name}: later calls add < 50 µs (≈ 0)", 50.0, True, "µs"),
    "10": Target("takeover after SIGKILL ({name}) ≤ lock_ttl + 0.1 s", 2.1, True, "s"),
    "11a": Target("memory-tier hit ≤ 3 µs", 3.0, True, "µs"),
    "11b": Target("memory-tier hit ≥ 5x faster than a disk hit", 5.0, False),
    "11c": Target("Redis + local=\"memory\": repeated hits make 0 round trips", 0, True,
                  "round trips"),
    "12a": Target("naive memoized fib(400) on an empty cache at the default recursion limit",
                  1, False, "ok"),
    "12b": Target("memoized DP depth ≥ 40% of the plain function's", 0.4, False),
}
