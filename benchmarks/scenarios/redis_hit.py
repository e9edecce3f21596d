"""Scenario 6. Redis hits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.harness import (
    _PIN,
    RedisServer,
    Report,
    Settings,
    check,
    compare,
    compare_async,
    na,
    pinned,
    ratio,
)

# 6. Redis hits
# ---------------------------------------------------------------------------------------------


def bench_redis_hit(report: Report, cfg: Settings, server: RedisServer) -> None:
    import redis

    import persistmemo

    sec = report.section(6, "Redis hit (µs per call, local redis-server over loopback TCP)",
                         "Sync: persistmemo vs a raw redis-py `GET` of the same stored bytes, "
                         "vs dogpile.cache (`dogpile.cache.redis`, `cache_on_arguments`). "
                         "Async, inside one event loop: persistmemo async vs a raw "
                         "`redis.asyncio` GET vs cashews (`@cache(ttl=...)`).")
    cache = persistmemo.Cache(server.url)

    @cache.memoize
    def rf(x):
        return x * 2

    @cache.memoize
    async def arf(x):
        return x * 2

    rf(1)
    key = rf.cache_key(1)
    client = redis.Redis(host="127.0.0.1", port=server.port)
    codec = cache.codec
    kb = rf.keys

    def floor() -> Any:
        k = kb((1,), {})
        return codec.decode(client.get(k), key=k).value

    sync: dict[str, Callable[[], Any] | str] = {
        "pm": lambda: rf(1),
        "get": lambda: client.get(key),
        "floor": floor,
    }
    try:
        from dogpile.cache import make_region

        region = make_region().configure(
            "dogpile.cache.redis", expiration_time=3600,
            arguments={"host": "127.0.0.1", "port": server.port, "db": 0,
                       "redis_expiration_time": 7200, "distributed_lock": False})

        @region.cache_on_arguments()
        def dp(x):
            return x * 2

        sync["dogpile"] = lambda: dp(1)
    except Exception as exc:
        sync["dogpile"] = na(exc)

    async_c: dict[str, Callable[[], Any] | str] = {"pm_async": lambda: arf(1)}
    aclient_box: list[Any] = []

    async def araw() -> Any:
        if not aclient_box:
            import redis.asyncio as aioredis

            aclient_box.append(aioredis.Redis(host="127.0.0.1", port=server.port))
        return await aclient_box[0].get(key)

    async_c["aget"] = araw
    try:
        from cashews import Cache as CashewsCache

        cw = CashewsCache()
        cw.setup(f"redis://127.0.0.1:{server.port}/0", client_side=False)

        @cw(ttl="1h")
        async def cwf(x):
            return x * 2

        async_c["cashews"] = lambda: cwf(1)
    except Exception as exc:
        async_c["cashews"] = na(exc)

    with pinned():
        res = compare(sync, cfg)
        ares = compare_async(async_c, cfg)
    t = sec.table("Sync hit", "µs per call", "vs raw GET")
    t.add("persistmemo `f(1)`", res["pm"], ratio(res["pm"], res["get"]))
    t.add("raw redis-py `GET` of the same bytes", res["get"], "1.00x")
    t.add("key + raw `GET` + `Codec.decode` (floor)", res["floor"],
          ratio(res["floor"], res["get"]))
    t.add("dogpile.cache `cache_on_arguments`", res["dogpile"], ratio(res["dogpile"], res["get"]))
    a = sec.table("Async hit (one event loop)", "µs per call", "vs raw async GET")
    a.add("persistmemo `await f(1)`", ares["pm_async"], ratio(ares["pm_async"], ares["aget"]))
    a.add("raw `redis.asyncio` `GET`", ares["aget"], "1.00x")
    a.add("cashews `@cache(ttl=...)`", ares["cashews"], ratio(ares["cashews"], ares["aget"]))
    pmv, gv = res["pm"], res["get"]
    check(report, "6", pmv / gv if isinstance(pmv, float) and isinstance(gv, float) else "n/a")
    sec.notes.append(f"redis-server pinned to CPU {sorted(_PIN['redis'] or [])}, the benchmark "
                     f"to CPU {sorted(_PIN['bench'] or [])}.")
    client.close()
    cache.close()


# ---------------------------------------------------------------------------------------------
