"""Scenario 7. Redis misses: round trips and latency."""

from __future__ import annotations

import contextlib
import gc
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import (
    RedisServer,
    Report,
    Settings,
    _now,
    check,
    na,
    pinned,
    ratio,
)

# 7. Redis misses: round trips and latency
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def count_round_trips() -> Iterator[list[int]]:
    """Count redis-py sends (one per command, one per pipeline): round trips of this process."""
    import redis.connection as rc

    cls = rc.AbstractConnection
    orig = cls.send_packed_command
    counter = [0]

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return orig(self, *args, **kwargs)

    cls.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        cls.send_packed_command = orig  # type: ignore[method-assign]


def command_stats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_").upper(): int(v["calls"]) for k, v in stats.items()}


def bench_redis_miss(report: Report, cfg: Settings, server: RedisServer) -> None:
    import redis

    import persistmemo

    sec = report.section(7, "Redis miss: round trips and latency",
                         "Round trips are counted client-side (one per redis-py send: a "
                         "pipeline is one), commands server-side from `INFO commandstats` "
                         "deltas. Latency: a new argument per call, trivial function.")
    cache = persistmemo.Cache(server.url)

    @cache.memoize
    def rm_lock(x):
        return x * 2

    @cache.memoize(lock=False)
    def rm_nolock(x):
        return x * 2

    @cache.memoize
    def rm_floor(x):
        return x * 2

    admin = redis.Redis(host="127.0.0.1", port=server.port)
    client = redis.Redis(host="127.0.0.1", port=server.port)
    codec = cache.codec
    kb = rm_floor.keys
    counter = itertools.count(10**12)

    def floor(i: int) -> None:
        k = kb((i,), {})
        if client.get(k) is None:
            client.set(k, codec.encode(i * 2, key=k, created=time.time(), duration=0.0))

    token = "0123456789abcdef0123456789abcdef"
    release = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
               "return redis.call('del', KEYS[1]) end")
    release_sha = client.script_load(release)

    def lease_floor(i: int) -> None:
        # the three round trips of a locked miss, done directly with redis-py
        k = kb((i,), {})
        if client.get(k) is None:
            pipe = client.pipeline(transaction=False)
            pipe.set(k + ":lock", token, nx=True, px=10_000).get(k).execute()
            raw = codec.encode(i * 2, key=k, created=time.time(), duration=0.0)
            pipe = client.pipeline(transaction=False)
            pipe.set(k, raw).evalsha(release_sha, 1, k + ":lock", token).execute()

    fns: dict[str, Callable[[int], Any]] = {"lock": rm_lock, "nolock": rm_nolock,
                                            "floor": floor, "lease": lease_floor}
    for fn in fns.values():
        fn(next(counter))  # connect, load scripts
    trips: dict[str, str] = {}
    cmds: dict[str, str] = {}
    for name, fn in fns.items():
        try:
            before = command_stats(admin)
            with count_round_trips() as n:
                fn(next(counter))
            after = command_stats(admin)
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            delta.pop("INFO", None)
            trips[name] = str(n[0])
            cmds[name] = ", ".join(f"{k} x{v}" if v > 1 else k
                                   for k, v in sorted(delta.items()) if v > 0)
        except Exception as exc:
            trips[name] = cmds[name] = na(exc)
    best: dict[str, float | str] = dict.fromkeys(fns, float("inf"))
    with pinned():
        for _ in range(cfg.miss_repeat):
            for name, fn in fns.items():
                args = [next(counter) for _ in range(cfg.miss_calls)]
                gc.disable()
                try:
                    t0 = _now()
                    for a in args:
                        fn(a)
                    dt = _now() - t0
                finally:
                    gc.enable()
                best[name] = min(best[name], dt / len(args) * 1e6)  # type: ignore[type-var]
    t = sec.table("One miss", "round trips", "commands (server side)", "µs per call",
                  "vs raw GET + SET", "vs raw with lease", left=(0, 2))
    t.add("persistmemo, lock=True (default)", trips["lock"], cmds["lock"], best["lock"],
          ratio(best["lock"], best["floor"]), ratio(best["lock"], best["lease"]))
    t.add("persistmemo, lock=False", trips["nolock"], cmds["nolock"], best["nolock"],
          ratio(best["nolock"], best["floor"]), "")
    t.add("raw: key + GET + encode + SET (floor)", trips["floor"], cmds["floor"], best["floor"],
          "1.00x", "")
    t.add("raw with lease: GET; SET NX + GET; SET + EVALSHA", trips["lease"], cmds["lease"],
          best["lease"], ratio(best["lease"], best["floor"]), "1.00x")
    try:
        n_lock = int(trips["lock"])
    except ValueError:
        n_lock = None  # type: ignore[assignment]
    check(report, "7", float(n_lock) if n_lock is not None else trips["lock"])
    sec.notes.append(f"{cfg.miss_calls} misses per batch, best of {cfg.miss_repeat}. "
                     "Server-side counts include the commands a Lua script runs (the release "
                     "script's GET and DEL).")
    admin.close()
    client.close()
    cache.close()


# ---------------------------------------------------------------------------------------------
