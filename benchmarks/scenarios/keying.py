"""Scenario 3. Keying a 100 MB array."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.harness import (
    _ALL_CPUS,
    GB,
    MB,
    Report,
    Settings,
    best_of,
    check,
    na,
    pinned,
    ratio,
)

# 3. Keying a 100 MB array
# ---------------------------------------------------------------------------------------------


def bench_keying(report: Report, cfg: Settings, tmp: Path) -> None:
    sec = report.section(3, f"Keying a {cfg.key_mb} MB contiguous float64 numpy argument",
                         "GB/s of building the key of `f(arr)` (`f.cache_key(arr)`), against "
                         "`joblib.hash(arr)`; raw BLAKE3 over the buffer for context.")
    t = sec.table("Keying", "GB/s", "ms per key", "vs joblib.hash")
    try:
        import numpy as np
    except Exception as exc:
        t.add("all", na(exc), "", "")
        report.target("3", f"keying {cfg.key_mb} MB ≥ 3 GB/s", na(exc), None)
        return
    import blake3

    import persistmemo

    cache = persistmemo.Cache("memory://")

    @cache.memoize
    def analyse(arr):
        return float(arr.sum())

    arr = np.random.default_rng(0).random(cfg.key_mb * MB // 8)
    nbytes = arr.nbytes
    rows: dict[str, float | str] = {}
    with pinned(on=False):  # BLAKE3 hashes big buffers on every core
        rows["persistmemo f.cache_key(arr)"] = best_of(lambda: analyse.cache_key(arr),
                                                       cfg.key_repeat)
        view = memoryview(arr).cast("B")
        rows["raw blake3 (max_threads=AUTO)"] = best_of(
            lambda: blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest(), cfg.key_repeat)
        rows["raw blake3 (1 thread)"] = best_of(lambda: blake3.blake3(view).digest(),
                                                cfg.key_repeat)
        try:
            import joblib

            rows["joblib.hash(arr)"] = best_of(lambda: joblib.hash(arr), cfg.joblib_repeat)
        except Exception as exc:
            rows["joblib.hash(arr)"] = na(exc)
    jl = rows["joblib.hash(arr)"]
    for name, secs in rows.items():
        if isinstance(secs, str):
            t.add(name, secs, "", "")
            continue
        t.add(name, nbytes / secs / GB, secs * 1e3,
              ratio(jl, secs) if isinstance(jl, float) else "n/a")
    pm = rows["persistmemo f.cache_key(arr)"]
    check(report, "3", nbytes / pm / GB if isinstance(pm, float) else pm, mb=cfg.key_mb)
    sec.notes.append(f"Best of {cfg.key_repeat} (joblib: {cfg.joblib_repeat}); the process may "
                     f"use all {len(_ALL_CPUS) or os.cpu_count()} cores here.")


# ---------------------------------------------------------------------------------------------
