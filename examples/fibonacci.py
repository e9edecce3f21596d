"""Textbook recursive Fibonacci, naive vs memoized with persistmemo.

Run it twice: the first run computes and stores every fib(i) it needs; the second run finds
them in the cache on disk and computes nothing new::

    python examples/fibonacci.py            # computes, stores
    python examples/fibonacci.py            # reuses: "computed 0 new results"
    python examples/fibonacci.py --clear    # forget the stored results first

The cache is the project's: ``$PERSISTMEMO_URL`` if set (a directory or a ``redis://`` URL),
else ``url`` in ``[tool.persistmemo]`` of the nearest ``pyproject.toml`` (this repository's
says ``examples/.persistmemo-cache``), else the user cache directory. The ``persistmemo``
command resolves it the same way, so ``persistmemo stats`` shows this cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import persistmemo
from persistmemo.config import default_location

LOCATION = default_location()  # PERSISTMEMO_URL > [tool.persistmemo] url > user cache dir
NAIVE_LIMIT = 32  # naive fib(n) makes ~1.6 * 1.618**n calls: fib(32) is already ~1 s

cache = persistmemo.Cache(LOCATION)
calls = {"naive": 0, "memoized": 0}  # how many times each function body ran


def fib_naive(n: int) -> int:
    """Return the n-th Fibonacci number, recomputing every subproblem."""
    calls["naive"] += 1
    return n if n < 2 else fib_naive(n - 1) + fib_naive(n - 2)


@cache.memoize(ignore_deps=["calls"])  # a call counter: it never changes the result
def fib(n: int) -> int:
    """Return the n-th Fibonacci number; each fib(i) is computed once, ever."""
    calls["memoized"] += 1
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def shown(location: str) -> str:
    """Return the cache location for printing, without any password it may contain."""
    parts = urlsplit(location)
    if parts.password is None:
        return location
    return parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
                          ).geturl()


def short(value: int) -> str:
    """Return a number, abbreviated in the middle when it has many digits."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...{text[-10:]} ({len(text)} digits)"


def measured(label: str, n: int, func: Callable[[int], int]) -> tuple[int, int]:
    """Call ``func(n)`` through the memoized fib; print and return (computed, reused)."""
    before_calls, before_hits = calls["memoized"], fib.cache_info().hits
    start = time.perf_counter()
    value = func(n)
    elapsed = time.perf_counter() - start
    computed = calls["memoized"] - before_calls
    reused = fib.cache_info().hits - before_hits
    print(f"{label:<9} fib({n}) = {short(value)}  [{elapsed * 1000:8.2f} ms]  "
          f"computed {computed}, reused {reused} from the cache")
    return computed, reused


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(
        description="Recursive Fibonacci, naive vs memoized (run it twice).")
    parser.add_argument("--n", type=int, default=30,
                        help="n for the naive vs memoized comparison (default 30)")
    parser.add_argument("--big", type=int, default=300,
                        help="a large n, only feasible memoized (default 300)")
    parser.add_argument("--clear", action="store_true",
                        help="delete this example's stored results first")
    args = parser.parse_args(argv)
    if args.n < 0 or args.big < 0:
        parser.error("--n and --big must be >= 0")

    print(f"cache: {shown(LOCATION)}"
          + ("" if os.environ.get("PERSISTMEMO_URL") else
             "  (set PERSISTMEMO_URL or [tool.persistmemo] url in pyproject.toml to change)"))
    # Open the store (the first access opens SQLite or connects), so timings measure lookups.
    cache.backend.get("persistmemo-example:warm-up")
    if args.clear:
        print(f"cleared {fib.cache_clear()} stored results")

    if args.n <= NAIVE_LIMIT:
        start = time.perf_counter()
        value = fib_naive(args.n)
        elapsed = time.perf_counter() - start
        print(f"{'naive':<9} fib({args.n}) = {value}  [{elapsed * 1000:8.2f} ms]  "
              f"{calls['naive']:,} calls, nothing stored")
    else:
        print(f"naive     fib({args.n}) skipped: it would make ~{1.618 ** args.n:.1e} calls")

    total_computed = total_reused = 0
    for n in (args.n, args.big):  # plain recursion: fib(300) on an empty cache just works
        computed, reused = measured("memoized", n, fib)
        total_computed += computed
        total_reused += reused

    info = fib.cache_info()
    print(f"fib.cache_info(): hits={info.hits} misses={info.misses} stores={info.stores} "
          f"errors={info.errors}")
    print(f"This run computed {total_computed} new results and reused {total_reused} "
          f"from the cache.")
    if total_computed == 0:
        print("Nothing was recomputed: every result came from the persistent cache.")
    else:
        print(f"Run it again: those {total_computed} results are now stored and will be reused.")
    cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
