"""Scenario 1. Disk hits with small arguments."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Report,
    Settings,
    check,
    compare,
    na,
    pinned,
    ratio,
    raw_diskcache,
)

# 1. Disk hits with small arguments
# ---------------------------------------------------------------------------------------------


def bench_disk_hit(report: Report, cfg: Settings, tmp: Path) -> None:
    import msgpack

    import persistmemo

    sec = report.section(1, "Disk hit, small arguments (µs per call)",
                         "Every contender reads the same kind of entry back from a local "
                         "directory: persistmemo (`Cache(dir)`), diskcache `Cache.memoize`, "
                         "joblib.Memory, cachier (pickle backend). The floor is the work a "
                         "persistmemo hit cannot avoid: its key (`f.cache_key(...)`'s "
                         "KeyBuilder) + `diskcache.Cache.get` + `Codec.decode`.")
    pm_dir = tmp / "hit-pm"
    cache = persistmemo.Cache(pm_dir)

    @cache.memoize
    def f1(x):
        return x * 2

    @cache.memoize
    def f2(a, b):
        return a * b

    calls: dict[str, tuple[Any, ...]] = {"f(1)": (1,), 'f("abc", 2)': ("abc", 2)}
    pm = {"f(1)": f1, 'f("abc", 2)': f2}
    for name, args in calls.items():
        pm[name](*args)
    raw = raw_diskcache(pm_dir)
    codec = cache.codec

    def floor_of(fn: Any, args: tuple[Any, ...]) -> Callable[[], Any]:
        kb, get, decode, kw = fn.keys, raw.get, codec.decode, {}

        def floor() -> Any:
            k = kb(args, kw)
            return decode(get(k), key=k).value

        return floor

    def sqlite_floor_of(fn: Any, args: tuple[Any, ...]) -> Callable[[], Any] | str:
        # What a read could cost without diskcache's get(): one prepared SELECT (context only).
        try:
            con = raw._con  # diskcache's per-thread sqlite3 connection (private)
            sql = ("SELECT value FROM Cache WHERE key = ? AND raw = 1 "
                   "AND (expire_time IS NULL OR expire_time > ?)")
            kb, decode, kw, now = fn.keys, codec.decode, {}, time.time
            k0 = kb(args, kw)
            if not isinstance(con.execute(sql, (k0, now())).fetchone()[0], bytes):
                return "n/a (entry not stored inline)"
        except Exception as exc:
            return na(exc)

        def sqlite_floor() -> Any:
            k = kb(args, kw)
            return decode(con.execute(sql, (k, now())).fetchone()[0], key=k).value

        return sqlite_floor

    def const_floor_of(value: Any) -> Callable[[], Any]:
        key = f"bench:const:{value!r}"
        raw.set(key, msgpack.packb(value))
        get, unpackb = raw.get, msgpack.unpackb

        def floor0() -> Any:
            return unpackb(get(key))

        return floor0

    # Peers
    peers: dict[str, dict[str, Callable[[], Any] | str]] = {n: {} for n in calls}
    try:
        import diskcache

        dc = diskcache.Cache(str(tmp / "hit-diskcache"))

        @dc.memoize()
        def d1(x):
            return x * 2

        @dc.memoize()
        def d2(a, b):
            return a * b

        peers["f(1)"]["diskcache"] = lambda: d1(1)
        peers['f("abc", 2)']["diskcache"] = lambda: d2("abc", 2)
    except Exception as exc:
        for n in calls:
            peers[n]["diskcache"] = na(exc)
    try:
        import joblib

        mem = joblib.Memory(str(tmp / "hit-joblib"), verbose=0)

        def j1_(x):
            return x * 2

        def j2_(a, b):
            return a * b

        j1, j2 = mem.cache(j1_), mem.cache(j2_)
        peers["f(1)"]["joblib"] = lambda: j1(1)
        peers['f("abc", 2)']["joblib"] = lambda: j2("abc", 2)
    except Exception as exc:
        for n in calls:
            peers[n]["joblib"] = na(exc)
    try:
        from cachier import cachier

        cdir = str(tmp / "hit-cachier")

        @cachier(cache_dir=cdir, backend="pickle")
        def c1(x):
            return x * 2

        @cachier(cache_dir=cdir, backend="pickle")
        def c2(a, b):
            return a * b

        peers["f(1)"]["cachier"] = lambda: c1(1)
        peers['f("abc", 2)']["cachier"] = lambda: c2("abc", 2)
    except Exception as exc:
        for n in calls:
            peers[n]["cachier"] = na(exc)

    t = sec.table("Call", "persistmemo", "floor: key + get + decode", "floor w/o our key",
                  "key + direct SQLite SELECT + decode", "diskcache memoize", "joblib.Memory",
                  "cachier (pickle)")
    r = sec.table("Call", "pm / floor (target ≤ 1.4)", "pm / diskcache (target ≤ 0.55)",
                  "floor / diskcache", "pm / direct-SELECT floor", "pm / joblib",
                  "pm / cachier")
    with pinned():
        for name, args in calls.items():
            fn = pm[name]
            value = fn(*args)
            contenders: dict[str, Callable[[], Any] | str] = {
                "pm": (lambda fn=fn, args=args: fn(*args)),
                "floor": floor_of(fn, args),
                "floor0": const_floor_of(value),
                "sqlite": sqlite_floor_of(fn, args),
                **peers[name],
            }
            res = compare(contenders, cfg)
            t.add(name, res["pm"], res["floor"], res["floor0"], res["sqlite"],
                  res.get("diskcache"), res.get("joblib"), res.get("cachier"))
            r.add(name, ratio(res["pm"], res["floor"]), ratio(res["pm"], res.get("diskcache")),
                  ratio(res["floor"], res.get("diskcache")), ratio(res["pm"], res["sqlite"]),
                  ratio(res["pm"], res.get("joblib")), ratio(res["pm"], res.get("cachier")))
            pm_us = res["pm"]
            check(report, "1a", pm_us / res["floor"] if isinstance(pm_us, float) and isinstance(
                      res["floor"], float) else "n/a", name=name)
            dcv = res.get("diskcache")
            check(report, "1b", pm_us / dcv if isinstance(pm_us, float) and isinstance(dcv, float)
                  else (dcv if isinstance(dcv, str) else "n/a"), name=name)
    sec.notes.append("Each call goes through a zero-argument lambda (same overhead for all). "
                     "The floor w/o our key is a constant string key + `diskcache.Cache.get` + "
                     "`msgpack.unpackb` of the bare value, i.e. no key building, no envelope "
                     "check. The direct-SELECT column replaces `diskcache.Cache.get` by one "
                     "`SELECT value FROM Cache WHERE key = ? ...` on diskcache's own connection: "
                     "what a persistmemo read could cost without diskcache's per-call overhead. "
                     "cachier runs with its defaults (the pickle file is reloaded on every "
                     "call).")
    raw.close()
    cache.close()


# ---------------------------------------------------------------------------------------------
