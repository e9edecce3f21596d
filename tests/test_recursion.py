"""Deep recursion: a memoized level costs two Python frames, on the miss and the hit path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from persistmemo import Cache


def _max_depth(run: Callable[[int], Any]) -> int:
    """The deepest n for which run(n) does not hit the recursion limit (bisection)."""
    lo, hi = 1, 4000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            run(mid)
        except RecursionError:
            hi = mid - 1
        else:
            lo = mid
    return lo


def test_naive_fib_400_on_an_empty_cache(tmp_path: Path) -> None:
    """A naive memoized fib(400) computes on an empty disk cache at the default limit."""
    script = tmp_path / "fib.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import persistmemo
        assert sys.getrecursionlimit() == 1000
        cache = persistmemo.Cache({str(tmp_path / 'c')!r})
        @cache.memoize
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        print(fib(400) % 1000003, fib.cache_info().misses)
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = 0, 1
    for _ in range(400):
        a, b = b, a + b
    assert res.stdout.split() == [str(a % 1000003), "401"]


@pytest.mark.parametrize("kind", ["memory://", "disk"])
def test_memoized_dp_reaches_40_percent_of_plain_depth(kind: str, tmp_path: Path) -> None:
    """A memoized DP recursion goes at least 40% as deep as the same plain function."""

    def plain(n: int) -> int:
        return 0 if n == 0 else 1 + plain(n - 1)

    cache = Cache(kind if kind != "disk" else tmp_path / "c")

    @cache.memoize
    def memo(n: int) -> int:
        return 0 if n == 0 else 1 + memo(n - 1)

    depth = int(0.4 * _max_depth(plain)) + 1
    assert memo(depth) == depth  # cold cache: every level misses
    assert memo.cache_info().misses == depth + 1


def _frames_between(stop: str) -> list[str]:
    f = sys._getframe(1)
    names = []
    while f is not None and f.f_code.co_name != stop:
        names.append(f.f_code.co_name)
        f = f.f_back  # type: ignore[assignment]
    return names


def test_two_frames_per_level_on_miss_and_hit_paths() -> None:
    """Between two memoized levels there is exactly one engine frame (miss and hit)."""
    cache = Cache("memory://")
    seen: list[list[str]] = []

    @cache.memoize
    def leaf(n: int) -> int:
        seen.append(_frames_between("outer"))
        return n

    @cache.memoize
    def outer(n: int) -> int:
        return leaf(n)

    outer(1)  # both miss: outer -> driver -> leaf
    assert seen[-1][0] == "leaf" and len(seen[-1]) == 2
    leaf.invalidate(2)
    leaf(2)
    outer(2)  # outer misses, leaf hits: the hit path never enters the body again
    assert len(seen) == 2


class _Walker:
    """Objects whose memoized method recurses (self ignored in the key)."""

    @Cache("memory://").memoize(ignore=["self"])
    def depth(self, n: int) -> int:
        return 0 if n == 0 else 1 + self.depth(n - 1)


def test_memoized_method_recursion_is_deep_too() -> None:
    """A memoized method recursing through self goes at least a quarter as deep as plain code."""

    def plain(n: int) -> int:
        return 0 if n == 0 else 1 + plain(n - 1)

    depth = int(_max_depth(plain) / 4)
    assert _Walker().depth(depth) == depth
    assert _Walker().depth.invalidate(depth) is True  # bound helpers still take the instance
