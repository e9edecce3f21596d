"""Scenario 8. f.map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import (
    RedisServer,
    Report,
    Settings,
    check,
    compare,
    na,
    pinned,
    ratio,
)

# 8. f.map
# ---------------------------------------------------------------------------------------------


def bench_map(report: Report, cfg: Settings, tmp: Path, server: RedisServer | None) -> None:
    import persistmemo

    sec = report.section(8, f"`f.map({cfg.map_n} argument tuples)`, all hits, vs "
                         f"{cfg.map_n} single calls",
                         "One batched lookup (Redis: one `MGET`) against one lookup per call.")
    t = sec.table("Store", f"f.map ({cfg.map_n} hits), ms", f"{cfg.map_n} single calls, ms",
                  "speed-up (target ≥ 20x)", "floor: keys + batched lookup + decodes, ms",
                  "single calls / floor (best possible speed-up)")
    stores: dict[str, Any] = {"disk": tmp / "map-pm"}
    if server is not None:
        stores["Redis"] = server.url
    else:
        t.add("Redis", "n/a (no redis-server)", "", "", "", "")
    calls = [(i,) for i in range(cfg.map_n)]
    for name, location in stores.items():
        try:
            cache = persistmemo.Cache(location)

            @cache.memoize
            def mf(x):
                return x * 2

            mf.map(calls)  # fill
            assert mf.map(calls) == [2 * i for (i,) in calls]

            def singles(mf: Any = mf) -> None:
                for c in calls:
                    mf(*c)

            def floor(mf: Any = mf, cache: Any = cache) -> list[Any]:
                # what any batched hit must do: the keys, one batched lookup, the decodes
                kb, decode, get_many = mf.keys, cache.codec.decode, cache.backend.get_many
                keys = [kb(c, {}) for c in calls]
                return [decode(r, key=k).value for r, k in zip(get_many(keys), keys)]

            with pinned():
                res = compare({"map": lambda mf=mf: mf.map(calls), "singles": singles,
                               "floor": floor}, cfg,
                              batch_time=cfg.batch_time * 2, repeat=cfg.map_repeat)
            cache.close()
        except Exception as exc:
            res = {"map": na(exc), "singles": na(exc), "floor": na(exc)}
        m, s, fl = res["map"], res["singles"], res["floor"]
        t.add(name, m / 1e3 if isinstance(m, float) else m,
              s / 1e3 if isinstance(s, float) else s, ratio(s, m),
              fl / 1e3 if isinstance(fl, float) else fl, ratio(s, fl))
        check(report, "8", s / m if isinstance(m, float) and isinstance(s, float) else "n/a",
              name=name)
    sec.notes.append("Single calls hit the key memo of small arguments; both sides decode "
                     f"{cfg.map_n} entries. The floor uses the backend's own `get_many` (Redis: "
                     "one `MGET`; disk: one indexed `SELECT ... IN (...)` per 500 keys).")


# ---------------------------------------------------------------------------------------------
