#!/usr/bin/env python
"""Keys v2 costs: first-call fingerprint time (0/10/50 helpers over 3 modules, each in a fresh
process) and the disk hit of a function reading 5 tracked globals vs diskcache's memoize hit.

Usage::

    python benchmarks/fingerprint.py

Every number is a minimum over repeats (best-of-N filters out other processes' noise); the hit
contenders are measured interleaved in one process. Runs in well under a minute.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELPER_MODULE = "K = {m}\n" + "".join(textwrap.dedent(f'''
def h{i}(x):
    y = x + K + {i}
    for j in range(3):
        y = y * 2 - j
    return y
''') for i in range(20))

COLD = '''
import sys, time
sys.path[:0] = [{root!r}, {tmp!r}]
import persistmemo._deps, persistmemo._source  # what the first memoized call imports anyway
from persistmemo._fingerprint import Fingerprint
import top{n}
start, cpu = time.perf_counter(), time.process_time()
Fingerprint(top{n}.top).digest
print((time.perf_counter() - start) * 1e3, (time.process_time() - cpu) * 1e3)
'''


def first_call(tmp: Path, n: int, runs: int = 7) -> tuple[float, float, float]:
    """Min and median wall ms, and min CPU ms, to fingerprint a function with n helpers, each
    in a fresh process (CPU time is what the call costs on a machine shared with others)."""
    body = " + ".join(f"hm{i % 3}.h{i // 3}(x)" for i in range(n)) or "x"
    (tmp / f"top{n}.py").write_text(f"import hm0, hm1, hm2\n\ndef top(x):\n    return {body}\n")
    code = COLD.format(root=str(ROOT), tmp=str(tmp), n=n)
    runs_ = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split() for _ in range(runs)]
    wall = [float(r[0]) for r in runs_]
    return min(wall), statistics.median(wall), min(float(r[1]) for r in runs_)


def hit_cost(tmp: Path, repeat: int = 40, batch: int = 300) -> dict[str, float]:
    """µs per hit: persistmemo f(1) reading 0 or 5 tracked globals, diskcache memoize f(1)."""
    import diskcache

    import persistmemo

    (tmp / "hitmod.py").write_text(textwrap.dedent('''
        A, B, C, D, E = 1, 2.0, "three", (4, 4), {"five": 5}

        def with_globals(x):
            return (x, A, B, C, D, E)

        def plain(x):
            return (x, 1, 2.0, "three", (4, 4), {"five": 5})
    '''))
    sys.path.insert(0, str(tmp))
    import hitmod  # type: ignore[import-not-found]

    cache = persistmemo.Cache(tmp / "pm")
    pm5 = cache.memoize(hitmod.with_globals)
    pm0 = cache.memoize(hitmod.plain)
    dc = diskcache.Cache(str(tmp / "dc"))

    @dc.memoize()
    def d1(x: int) -> tuple[object, ...]:
        return (x, 1, 2.0, "three", (4, 4), {"five": 5})

    contenders = {"pm, 5 tracked globals": lambda: pm5(1), "pm, no globals": lambda: pm0(1),
                  "diskcache memoize": lambda: d1(1)}
    for fn in contenders.values():
        fn()
    assert len(pm5.dependencies()) == 6, pm5.dependencies()
    best = {name: float("inf") for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / batch * 1e6)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for m in range(3):
            (tmp / f"hm{m}.py").write_text(HELPER_MODULE.format(m=m))
        print("First-call fingerprint (fresh process; 3 helper modules of 20 functions):")
        for n in (0, 10, 50):
            lo, med, cpu = first_call(tmp, n)
            print(f"  {n:2d} dependencies: wall min {lo:.2f} ms, median {med:.2f} ms; "
                  f"CPU min {cpu:.2f} ms")
        best = hit_cost(tmp)
        dc = best["diskcache memoize"]
        print("Disk hit, µs per call (min over batches):")
        for name, us in best.items():
            print(f"  {name:24s} {us:6.2f} µs  ({us / dc:.2f}x diskcache memoize)")


if __name__ == "__main__":
    main()
