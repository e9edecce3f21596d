"""Scenario 9. Fail-open."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    RedisServer,
    Report,
    Settings,
    _now,
    check,
    compare,
    na,
    pinned,
    start_redis,
)
from persistmemo.testing import free_port

# 9. Fail-open
# ---------------------------------------------------------------------------------------------


def bench_fail_open(report: Report, cfg: Settings, tmp: Path, redis_exe: str | None) -> None:
    import persistmemo

    sec = report.section(9, "Fail-open: Redis down or paused",
                         "Added latency of a call when Redis is unusable: the first call pays "
                         "the failure (refused / connect timeout / socket timeout, 0.5 s "
                         "defaults), then the breaker is open for `backoff` (5 s) and calls "
                         "skip Redis. `plain` is the undecorated function.")
    t = sec.table("Scenario", "first call, ms (worst of the trials)",
                  "later calls (breaker open), µs per call", "plain function, µs per call")

    def body(x):
        return x * 2

    plain = compare({"plain": lambda: body(1)}, cfg)["plain"]

    def later_calls(f: Any) -> float | str:
        # the same call again: while the breaker is open it never touches Redis
        return compare({"f": lambda: f(1)}, cfg, batch_time=cfg.batch_time / 2,
                       repeat=cfg.repeat)["f"]

    def scenario(name: str, url: str, prepare: Callable[[Any], None] | None = None,
                 trials: int = 1) -> None:
        firsts: list[float] = []
        later: float | str = "n/a"
        try:
            for _ in range(trials):
                cache = persistmemo.Cache(url)
                f = cache.memoize(body)
                if prepare is not None:
                    prepare(f)
                t0 = _now()
                v = f(1)
                firsts.append(_now() - t0)
                assert v == 2
                if cache.info().errors < 1:
                    raise RuntimeError("the store did not fail")
                later = later_calls(f)
                cache.close()
        except Exception as exc:
            t.add(name, na(exc), "", "")
            return
        finally:
            if "paused" in name and server_box:
                server_box[0].resume()
        t.add(name, max(firsts) * 1e3, later, plain)
        check(report, "9a", max(firsts), name=name)
        check(report, "9b", (later - plain) if isinstance(later, float) and isinstance(plain, float)
              else "n/a", name=name)

    server_box: list[RedisServer] = []
    with pinned():
        # Refused: nothing listens on the port.
        scenario("Redis down (closed port: connection refused)",
                 f"redis://127.0.0.1:{free_port()}/0", trials=3)
        # Connect timeout: a listener whose accept queue is full drops new SYNs.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname(), timeout=1)
        try:
            scenario("Redis unreachable (SYNs dropped: connect timeout 0.5 s)",
                     f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        finally:
            filler.close()
            listener.close()
        # Paused: SIGSTOP a dedicated server after the client connected.
        if redis_exe:
            try:
                server_box.append(start_redis(redis_exe, tmp / "redis-paused"))
                paused_server = server_box[0]

                def pause(f: Any) -> None:
                    paused_server.resume()
                    f(1)  # connect and store while the server runs
                    f(1)
                    paused_server.pause()

                scenario("Redis paused (SIGSTOP: socket timeout 0.5 s)", paused_server.url,
                         pause, trials=cfg.paused_trials)
            except Exception as exc:
                t.add("Redis paused (SIGSTOP)", na(exc), "", "")
            finally:
                for s in server_box:
                    s.stop()
        else:
            t.add("Redis paused (SIGSTOP)", "n/a (no redis-server)", "", "")
    sec.notes.append("First call: the worst of the trials, each with a new `Cache` (a fresh "
                     "breaker). A closed loopback port refuses at once, so no connect timeout "
                     "is paid there; the connect timeout is shown by a listener that drops "
                     "SYNs. Later calls repeat `f(1)`: key (memoized) + breaker check + the "
                     "function + encode, no I/O.")


# ---------------------------------------------------------------------------------------------
