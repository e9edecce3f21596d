"""Scenario 2. Disk misses at several cache sizes."""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable
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
    raw_diskcache,
)

# 2. Disk misses at several cache sizes
# ---------------------------------------------------------------------------------------------


def bench_disk_miss(report: Report, cfg: Settings, tmp: Path) -> None:
    import persistmemo

    sec = report.section(2, "Disk miss (µs per call) at several cache sizes",
                         "A new argument on every call, so each call looks up, computes a "
                         "trivial function and stores. The raw floor is persistmemo's key + "
                         "`diskcache.Cache.get` + `Codec.encode` + `diskcache.Cache.set`. All "
                         "contenders write into the same directory, prefilled with N entries; "
                         "the entries a batch adds are deleted after it (untimed), so N stays put.")
    pm_dir = tmp / "miss-pm"
    cache = persistmemo.Cache(pm_dir)

    @cache.memoize(lock=False)
    def miss_nolock(x):
        return x * 2

    @cache.memoize
    def miss_lock(x):
        return x * 2

    @cache.memoize
    def miss_floor(x):  # only its KeyBuilder is used
        return x * 2

    raw = raw_diskcache(pm_dir)
    codec = cache.codec
    kb = miss_floor.keys
    counter = itertools.count(10**12)

    def floor(i: int) -> None:
        k = kb((i,), {})
        if raw.get(k) is None:
            raw.set(k, codec.encode(i * 2, key=k, created=time.time(), duration=0.0))

    def lease_floor(i: int) -> None:
        # the same plus the least a store-based lease costs: add, re-read, compare-and-delete
        k = kb((i,), {})
        if raw.get(k) is None:
            lk = "lock:" + k
            raw.add(lk, b"token", expire=10)
            raw.get(k)
            raw.set(k, codec.encode(i * 2, key=k, created=time.time(), duration=0.0))
            with raw.transact():
                if raw.get(lk) == b"token":
                    raw.delete(lk)

    contenders: dict[str, tuple[Callable[[int], Any], Callable[[int], str]]] = {
        "nolock": (miss_nolock, miss_nolock.cache_key),
        "lock": (miss_lock, miss_lock.cache_key),
        "floor": (floor, miss_floor.cache_key),
        "lease": (lease_floor, miss_floor.cache_key),
    }
    for fn, _ in contenders.values():  # warm up: open the database, build engines
        fn(next(counter))

    def prefill(start: int, stop: int) -> None:
        with raw.transact(retry=True):
            for i in range(start, stop):
                k = f"pm:1:default:prefill.fill:0000000000000000:{i:064x}"
                raw.set(k, codec.encode(i, key=k, created=0.0, duration=0.0))

    t = sec.table("Entries in cache", "pm miss, lock=False", "pm miss, lock=True (default)",
                  "raw: key + get + encode + set", "raw + a lease (add, get, txn delete)",
                  "lock=False / raw (target ≤ 1.25)", "lock=True / raw (target ≤ 2)",
                  "lock=True / raw + lease")
    filled = 0
    results: dict[int, dict[str, float | str]] = {}
    with pinned():
        for size in cfg.sizes:
            prefill(filled, size)
            filled = size
            best: dict[str, float | str] = dict.fromkeys(contenders, float("inf"))
            for _ in range(cfg.miss_repeat):
                for name, (fn, key_of) in contenders.items():
                    if isinstance(best[name], str):
                        continue
                    args = [next(counter) for _ in range(cfg.miss_calls)]
                    gc.disable()
                    try:
                        t0 = _now()
                        for a in args:
                            fn(a)
                        dt = _now() - t0
                    except Exception as exc:
                        best[name] = na(exc)
                        continue
                    finally:
                        gc.enable()
                    best[name] = min(best[name], dt / len(args) * 1e6)  # type: ignore[type-var]
                    with raw.transact(retry=True):
                        for a in args:
                            raw.delete(key_of(a))
            results[size] = best
            t.add(f"{size:,}", best["nolock"], best["lock"], best["floor"], best["lease"],
                  ratio(best["nolock"], best["floor"]), ratio(best["lock"], best["floor"]),
                  ratio(best["lock"], best["lease"]))
            v, fl = best["nolock"], best["floor"]
            check(report, "2", v / fl if isinstance(v, float) and isinstance(fl, float)
                  else "n/a", label="lock=False", size=size)
            v = best["lock"]
            check(report, "2b", v / fl if isinstance(v, float) and isinstance(fl, float)
                  else "n/a", size=size)
    lo, hi = cfg.sizes[0], cfg.sizes[-1]
    t.add(f"{hi:,} vs {lo:,} (flatness)", ratio(results[hi]["nolock"], results[lo]["nolock"]),
          ratio(results[hi]["lock"], results[lo]["lock"]),
          ratio(results[hi]["floor"], results[lo]["floor"]),
          ratio(results[hi]["lease"], results[lo]["lease"]), "", "", "")
    sec.notes.append(f"{cfg.miss_calls} calls per batch, best of {cfg.miss_repeat} batches. "
                     "lock=True takes and releases a lease row per miss (diskcache `add` + a "
                     "compare-and-delete transaction): two SQLite write transactions more than "
                     "the raw floor; the `raw + a lease` column is that floor with the same "
                     "three writes done directly on diskcache.")
    raw.close()
    cache.close()


# ---------------------------------------------------------------------------------------------
