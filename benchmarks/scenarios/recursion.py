"""Scenario 12. Deep recursion: naive fib(400) and a DP's depth, memoized vs plain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Report, Settings, check

_FIB = """
import sys, persistmemo
cache = persistmemo.Cache({dir!r})
@cache.memoize
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
print(fib(400) % 1000, sys.getrecursionlimit())
"""

_DEPTH = """
import persistmemo
def plain(n):
    return 0 if n == 0 else 1 + plain(n - 1)
cache = persistmemo.Cache({dir!r})
@cache.memoize
def memo(n):
    return 0 if n == 0 else 1 + memo(n - 1)
def deepest(run):
    lo, hi = 1, 5000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            run(mid)
        except RecursionError:
            hi = mid - 1
        else:
            lo = mid
    return lo
def cold(n):
    cache.clear()
    return memo(n)
print(deepest(plain), deepest(cold))
"""


def bench_recursion(report: Report, cfg: Settings, tmp: Path) -> None:
    """Run both in fresh interpreters at the default recursion limit."""
    sec = report.section(12, "Deep recursion", "Fresh interpreters, default recursion limit, "
                         "empty caches.")
    t = sec.table("Case", "Result")
    fib = subprocess.run([sys.executable, "-c", _FIB.format(dir=str(tmp / "fib"))],
                         capture_output=True, text=True, timeout=300)
    ok = fib.returncode == 0
    t.add("naive fib(400), disk cache", "ok" if ok else f"failed: {fib.stderr[-200:]}")
    check(report, "12a", 1.0 if ok else 0.0)
    depth = subprocess.run([sys.executable, "-c", _DEPTH.format(dir="memory://")],
                           capture_output=True, text=True, timeout=300)
    if depth.returncode != 0:
        check(report, "12b", f"n/a ({depth.stderr[-200:]})")
        return
    plain, memo = map(int, depth.stdout.split())
    t.add("plain recursion depth", str(plain))
    t.add("memoized (memory://, every level a miss) depth", f"{memo} ({memo / plain:.0%})")
    check(report, "12b", memo / plain)
