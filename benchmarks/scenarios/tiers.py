"""Scenario 11. The local tier: memory-tier hits vs disk hits; Redis + local="memory"."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import RedisServer, Report, Settings, check, compare, pinned, ratio


def bench_tiers(report: Report, cfg: Settings, tmp: Path, server: RedisServer | None) -> None:
    """Hits served by the memory tier, side by side with disk and diskcache hits."""
    import diskcache

    import persistmemo

    sec = report.section(11, "Local tier", "`Cache(location, local=\"memory\")`: hits served "
                         "from this process's memory tier, in front of disk or Redis.")
    caches = {
        "memory tier (disk + local=\"memory\")": persistmemo.Cache(tmp / "t-shared",
                                                                   local="memory"),
        "disk hit (no tier)": persistmemo.Cache(tmp / "t-disk"),
        "memory:// store": persistmemo.Cache("memory://"),
    }
    funcs = {}
    for name, cache in caches.items():
        @cache.memoize
        def f(x: int) -> int:
            return x * 2

        f(1)
        funcs[name] = f
    dc = diskcache.Cache(str(tmp / "t-dc"))

    @dc.memoize()
    def g(x: int) -> int:
        return x * 2

    g(1)
    contenders = {name: (lambda f=f: f(1)) for name, f in funcs.items()}
    contenders["diskcache memoize hit"] = lambda: g(1)
    with pinned():
        res = compare(contenders, cfg)  # type: ignore[arg-type]
    t = sec.table("Hit", "µs per call", "vs memory tier")
    tier = res["memory tier (disk + local=\"memory\")"]
    for name, v in res.items():
        t.add(name, v, ratio(v, tier))
    disk = res["disk hit (no tier)"]
    check(report, "11a", tier)
    check(report, "11b", disk / tier if isinstance(disk, float) and isinstance(tier, float)
          else "n/a")
    if server is None:
        check(report, "11c", "n/a (no redis-server)")
    else:
        _redis_round_trips(report, server)
    for cache in caches.values():
        cache.close()
    dc.close()


def _redis_round_trips(report: Report, server: RedisServer) -> None:
    import persistmemo
    from benchmarks.scenarios.redis_miss import count_round_trips

    cache = persistmemo.Cache(server.url, local="memory", namespace="tiers")

    @cache.memoize
    def h(x: int) -> int:
        return x + 1

    h(1)
    with count_round_trips() as trips:
        for _ in range(1000):
            h(1)
    check(report, "11c", float(trips[0]))
    cache.clear()
    cache.close()
