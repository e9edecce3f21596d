"""Scenario 4. Storing and loading a 10 MB array result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    GB,
    MB,
    RedisServer,
    Report,
    Settings,
    best_of,
    check,
    na,
    pinned,
)

# 4. Storing and loading a 10 MB array result
# ---------------------------------------------------------------------------------------------


def bench_big_result(report: Report, cfg: Settings, tmp: Path, server: RedisServer | None
                     ) -> None:
    sec = report.section(4, f"A {cfg.result_mb} MB numpy result: store and load (GB/s)",
                         "`Codec.encode` / `Codec.decode` alone, and end to end through a "
                         "backend (encode + `backend.set`; `backend.get` + decode). A memory "
                         "copy of the array is the floor any store/load pays at least once.")
    t = sec.table("Operation", "GB/s", "ms")
    try:
        import numpy as np
    except Exception as exc:
        t.add("all", na(exc), "")
        report.target("4", f"store ≥ 1.5 GB/s / load ≥ 5 GB/s ({cfg.result_mb} MB result)",
                      na(exc), None)
        return
    import pickle

    import persistmemo

    arr = np.random.default_rng(1).random(cfg.result_mb * MB // 8)
    nbytes = arr.nbytes
    disk = persistmemo.Cache(tmp / "big-pm")
    codec = disk.codec
    key = "pm:1:default:bench.big:v-1:" + "0" * 64
    blob = codec.encode(arr, key=key, created=0.0, duration=0.0)
    assert np.array_equal(codec.decode(blob, key=key).value, arr)
    rows: dict[str, float | str] = {}
    n = cfg.result_repeat

    def e2e_set(backend: Any) -> Callable[[], Any]:
        return lambda: backend.set(key, codec.encode(arr, key=key, created=0.0, duration=0.0))

    def e2e_get(backend: Any) -> Callable[[], Any]:
        return lambda: codec.decode(backend.get(key), key=key).value

    redis_cache = None
    if server is not None:
        try:
            redis_cache = persistmemo.Cache(server.url)
            redis_cache.backend.set(key, blob)
        except Exception as exc:
            redis_cache = None
            rows["encode + Redis SET"] = rows["Redis GET + decode"] = na(exc)
    with pinned(on=False):
        rows["memory copy (arr.copy(), floor)"] = best_of(arr.copy, n)
        rows["Codec.encode"] = best_of(
            lambda: codec.encode(arr, key=key, created=0.0, duration=0.0), n)
        rows["encode + disk set"] = best_of(e2e_set(disk.backend), n)
        rows["disk set alone (pre-encoded, context)"] = best_of(
            lambda: disk.backend.set(key, blob), n)
        if redis_cache is not None:
            rows["encode + Redis SET"] = best_of(e2e_set(redis_cache.backend), n)
            rows["Redis SET alone (pre-encoded, context)"] = best_of(
                lambda: redis_cache.backend.set(key, blob), n)
        rows["pickle.dumps (protocol 5, context)"] = best_of(
            lambda: pickle.dumps(arr, protocol=5), n)
        rows["Codec.decode"] = best_of(lambda: codec.decode(blob, key=key).value, n)
        disk.backend.set(key, blob)
        rows["disk get + decode"] = best_of(e2e_get(disk.backend), n)
        rows["disk get alone (context)"] = best_of(lambda: disk.backend.get(key), n)
        if redis_cache is not None:
            redis_cache.backend.set(key, blob)
            rows["Redis GET + decode"] = best_of(e2e_get(redis_cache.backend), n)
            rows["Redis GET alone (context)"] = best_of(lambda: redis_cache.backend.get(key), n)
        pickled = pickle.dumps(arr, protocol=5)
        rows["pickle.loads (context)"] = best_of(lambda: pickle.loads(pickled), n)
    for name, secs in rows.items():
        if isinstance(secs, str):
            t.add(name, secs, "")
        else:
            t.add(name, nbytes / secs / GB, secs * 1e3)

    def gbs(name: str) -> float | str:
        v = rows.get(name, "n/a (no Redis)")
        return nbytes / v / GB if isinstance(v, float) else v

    for name in ("Codec.encode", "encode + disk set", "encode + Redis SET"):
        check(report, "4s", gbs(name), mb=cfg.result_mb, name=name)
    for name in ("Codec.decode", "disk get + decode", "Redis GET + decode"):
        check(report, "4l", gbs(name), mb=cfg.result_mb, name=name)
    sec.notes.append(f"Best of {n}. `Codec.decode` verifies the BLAKE3 check over the whole "
                     "entry and returns a writable array (one copy out of the stored bytes).")
    disk.close()
    if redis_cache is not None:
        redis_cache.close()


# ---------------------------------------------------------------------------------------------
