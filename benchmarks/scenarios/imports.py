"""Scenario 5. Import time and the first hit of a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Report,
    Settings,
    _now,
    check,
    na,
    pinned,
    ratio,
)

# 5. Import time and the first hit of a fresh process
# ---------------------------------------------------------------------------------------------

_IMPORT_ONLY = """\
import time
t0 = time.perf_counter()
import persistmemo
t1 = time.perf_counter()
import sys
print(repr((t1 - t0, "numpy" in sys.modules, "redis" in sys.modules, persistmemo.__file__,
            len(sys.modules))))
"""

_PM_FIRST_HIT = """\
import time
t0 = time.perf_counter()
import persistmemo
cache = persistmemo.Cache({dir!r})
calls = []

@cache.memoize
def f(x):
    calls.append(x)
    return x * 2

v = f(1)
t1 = time.perf_counter()
print(repr((t1 - t0, v, len(calls))))
"""

_DC_FIRST_HIT = """\
import time
t0 = time.perf_counter()
import diskcache
cache = diskcache.Cache({dir!r})
calls = []

@cache.memoize()
def f(x):
    calls.append(x)
    return x * 2

v = f(1)
t1 = time.perf_counter()
print(repr((t1 - t0, v, len(calls))))
"""


def bench_import(report: Report, cfg: Settings, tmp: Path) -> None:
    import ast

    sec = report.section(5, "Fresh process: import time and first hit",
                         "Each measurement is a new interpreter (`.pyc` files warmed first, "
                         "written under a private `PYTHONPYCACHEPREFIX`); the time is taken "
                         "inside the child from before the first import to after the first "
                         "call, best of N runs. Wall time includes interpreter start-up.")
    work = tmp / "import"
    work.mkdir()
    scripts = {
        "import persistmemo": _IMPORT_ONLY,
        "persistmemo: import + Cache + decorate + first hit": _PM_FIRST_HIT.format(
            dir=str(work / "pm-cache")),
        "diskcache: import + Cache + memoize + first hit": _DC_FIRST_HIT.format(
            dir=str(work / "dc-cache")),
        "python -c pass (start-up only)": "",
    }
    paths = {}
    for i, (name, src) in enumerate(scripts.items()):
        p = work / f"bench_import_{i}.py"
        p.write_text(src)
        paths[name] = p
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

    def run(name: str) -> tuple[float, tuple[Any, ...] | None]:
        t0 = _now()
        proc = subprocess.run([sys.executable, str(paths[name])], capture_output=True,
                              text=True, env=env, cwd=str(work), timeout=120)
        wall = _now() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                               else f"exit {proc.returncode}")
        out = proc.stdout.strip()
        return wall, (ast.literal_eval(out) if out else None)

    best: dict[str, tuple[float, float] | str] = {}
    info: dict[str, tuple[Any, ...]] = {}
    with pinned():
        for name in scripts:  # warm-up: writes the .pyc files and fills both caches
            try:
                run(name)
                run(name)
                best[name] = (float("inf"), float("inf"))
            except Exception as exc:
                best[name] = na(exc)
        for _ in range(cfg.import_runs):
            for name in scripts:
                cur = best[name]
                if isinstance(cur, str):
                    continue
                try:
                    wall, out = run(name)
                except Exception as exc:
                    best[name] = na(exc)
                    continue
                inner = out[0] if out else wall
                best[name] = (min(cur[0], inner), min(cur[1], wall))
                if out:
                    info[name] = out
    t = sec.table("Fresh process", "in-process ms", "wall ms (incl. start-up)", "notes",
                  left=(0, 3))
    notes = {}
    imp = info.get("import persistmemo")
    if imp:
        notes["import persistmemo"] = (f"numpy imported: {imp[1]}; redis imported: {imp[2]}; "
                                       f"{imp[4]} modules loaded")
    for key in ("persistmemo: import + Cache + decorate + first hit",
                "diskcache: import + Cache + memoize + first hit"):
        if key in info:
            notes[key] = "hit (function not called)" if info[key][2] == 0 else \
                f"MISS: the function ran {info[key][2]} time(s)"
    for name in scripts:
        v = best[name]
        if isinstance(v, str):
            t.add(name, v, "", "")
        elif name.startswith("python -c"):
            t.add(name, "", v[1] * 1e3, "interpreter start-up")
        else:
            t.add(name, v[0] * 1e3, v[1] * 1e3, notes.get(name, ""))
    pmv = best["persistmemo: import + Cache + decorate + first hit"]
    dcv = best["diskcache: import + Cache + memoize + first hit"]
    r = ratio(pmv[0], dcv[0]) if not isinstance(pmv, str) and not isinstance(dcv, str) else "n/a"
    t.add("persistmemo / diskcache (import + first hit)", r, "", "target ≤ 1.5x")
    iv = best["import persistmemo"]
    check(report, "5a", iv[0] * 1e3 if not isinstance(iv, str) else iv)
    if imp:
        report.target("5b", "`import persistmemo` imports neither numpy nor redis",
                      f"numpy: {'yes' if imp[1] else 'no'}, redis: {'yes' if imp[2] else 'no'}",
                      not imp[1] and not imp[2])
    else:
        report.target("5b", "`import persistmemo` imports neither numpy nor redis", "n/a", None)
    check(report, "5c",
          pmv[0] / dcv[0] if not isinstance(pmv, str) and not isinstance(dcv, str) else "n/a")
    sec.notes.append(f"Best of {cfg.import_runs} processes each. persistmemo's first call also "
                     "fingerprints the function's source (`inspect.getsource` + `ast`).")


# ---------------------------------------------------------------------------------------------
