"""Scenario 10. Stampede: wake-up latency and takeover after SIGKILL."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    RedisServer,
    Report,
    Settings,
    check,
    na,
    pinned,
    quiet_logging,
)

# 10. Stampede: wake-up latency and takeover after SIGKILL
# ---------------------------------------------------------------------------------------------

_STAMPEDE: dict[str, Any] = {"hold": 0.0, "started": None, "queue": None, "computed_at": None}


def _mono() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)  # system-wide: comparable across processes


def _stampede_body(x):
    _STAMPEDE["computed_at"] = _mono()
    if _STAMPEDE["queue"] is not None:
        _STAMPEDE["queue"].put(("started", _mono()))
    if _STAMPEDE["started"] is not None:
        _STAMPEDE["started"].set()
    time.sleep(_STAMPEDE["hold"])
    return x * 2


class _StoreClock:
    """Wraps a backend's ``set_and_release`` to note when the leader's store finished."""

    def __init__(self, backend: Any) -> None:
        self.at: float | None = None
        orig = backend.set_and_release

        def timed(*args: Any, **kwargs: Any) -> Any:
            out = orig(*args, **kwargs)
            self.at = _mono()
            return out

        backend.set_and_release = timed


def _open_backend(spec: tuple[str, str]) -> Any:
    kind, where = spec
    if kind == "disk":
        from persistmemo.backends.disk import DiskBackend

        return DiskBackend(where)
    from persistmemo.backends.redis import RedisBackend

    return RedisBackend(where)


def _stampede_child(role: str, spec: tuple[str, str], arg: int, lock_ttl: float, hold: float,
                    go: Any, started: Any, queue: Any) -> None:
    """A worker process: open the store, wait for ``go``, call the memoized function once."""
    quiet_logging()
    import persistmemo

    backend = _open_backend(spec)
    clock = _StoreClock(backend)
    cache = persistmemo.Cache(backend)
    f = cache.memoize(version="stampede", lock_ttl=lock_ttl)(_stampede_body)
    _STAMPEDE.update(hold=hold, started=started if role == "leader" else None,
                     queue=queue if role == "leader" else None)
    backend.get("pm:warm-up")  # open the database / the connection before the clock starts
    queue.put(("ready", role))
    go.wait(60)
    value = f(arg)
    queue.put(("done", role, _mono(), _STAMPEDE["computed_at"], clock.at, value))


def _threads_trial(spec: tuple[str, str], arg: int, waiters: int) -> list[float]:
    import persistmemo

    backend = _open_backend(spec)
    clock = _StoreClock(backend)
    cache = persistmemo.Cache(backend)
    f = cache.memoize(version="stampede-threads")(_stampede_body)
    backend.get("pm:warm-up")
    started = threading.Event()
    _STAMPEDE.update(hold=0.05, started=started, queue=None)
    returns: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        f(arg)
        at = _mono()
        with lock:
            returns.append(at)

    leader = threading.Thread(target=call)
    leader.start()
    started.wait(10)
    _STAMPEDE.update(started=None)
    threads = [threading.Thread(target=call) for _ in range(waiters)]
    for th in threads:
        th.start()
    for th in [leader, *threads]:
        th.join(30)
    cache.close()
    if clock.at is None:
        raise RuntimeError("the leader did not store")
    # the leader's own return is the earliest; the others are the waiters
    return sorted(r - clock.at for r in returns)[1:]


def _processes_trial(ctx: Any, spec: tuple[str, str], arg: int, waiters: int, *,
                     takeover: bool, lock_ttl: float) -> dict[str, Any]:
    queue = ctx.Queue()
    go_leader, go_waiters, started = ctx.Event(), ctx.Event(), ctx.Event()
    hold = 60.0 if takeover else 0.4
    leader = ctx.Process(target=_stampede_child, args=(
        "leader", spec, arg, lock_ttl, hold, go_leader, started, queue), daemon=True)
    procs = [ctx.Process(target=_stampede_child, args=(
        "waiter", spec, arg, lock_ttl, 0.0, go_waiters, started, queue), daemon=True)
        for _ in range(waiters)]
    for p in [leader, *procs]:
        p.start()
    try:
        for _ in range(waiters + 1):
            msg = queue.get(timeout=60)
            if msg[0] != "ready":
                raise RuntimeError(f"unexpected message {msg!r}")
        go_leader.set()
        if not started.wait(30):
            raise RuntimeError("the leader never started computing")
        msg = queue.get(timeout=30)
        if msg[0] != "started":
            raise RuntimeError(f"unexpected message {msg!r}")
        t_started = msg[1]
        go_waiters.set()
        t_kill = None
        if takeover:
            time.sleep(0.2)  # waiters are polling the held lease by now
            os.kill(leader.pid, signal.SIGKILL)  # type: ignore[arg-type]
            t_kill = _mono()
        done = []
        expected = waiters if takeover else waiters + 1
        for _ in range(expected):
            msg = queue.get(timeout=lock_ttl + 30)
            done.append(msg)
    finally:
        for p in [leader, *procs]:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    waiters_done = [m for m in done if m[1] == "waiter"]
    if takeover:
        computed = [m[3] for m in waiters_done if m[3] is not None]
        if not computed:
            raise RuntimeError("no waiter took over")
        first = min(computed)
        return {"since_kill": first - t_kill, "since_lease": first - t_started,
                "computed": len(computed)}
    store_at = next(m[4] for m in done if m[1] == "leader")
    computed = [m for m in waiters_done if m[3] is not None]
    return {"latency": [m[2] - store_at for m in waiters_done if m[3] is None],
            "computed": len(computed)}


def bench_stampede(report: Report, cfg: Settings, tmp: Path, server: RedisServer | None
                   ) -> None:
    sec = report.section(10, "Stampede: waiter wake-up and takeover after SIGKILL",
                         "Wake-up latency = a waiter's return minus the end of the leader's "
                         "store (`set_and_release`), on one monotonic clock. Threads share "
                         "the in-process flight; processes poll the store (2-10 ms back-off). "
                         "Takeover: the lease holder (lock_ttl=2 s) is SIGKILLed 0.2 s after "
                         "it started computing; time until a waiter starts computing.")
    specs: dict[str, tuple[str, str]] = {"disk": ("disk", str(tmp / "stampede-disk"))}
    if server is not None:
        specs["Redis"] = ("redis", server.url)
    t = sec.table("Scenario", "median", "max", "samples", "notes", left=(0, 4))
    arg_counter = itertools.count(int(time.time() * 1000))
    with pinned(on=False):
        for name, spec in specs.items():
            try:
                lat: list[float] = []
                for _ in range(cfg.thread_trials):
                    lat += _threads_trial(spec, next(arg_counter), waiters=4)
                t.add(f"wake-up, threads of one process ({name})",
                      f"{statistics.median(lat) * 1e6:.0f} µs", f"{max(lat) * 1e6:.0f} µs",
                      str(len(lat)), "4 waiter threads")
            except Exception as exc:
                t.add(f"wake-up, threads ({name})", na(exc), "", "", "")
        ctx = multiprocessing.get_context("spawn")
        for name, spec in specs.items():
            try:
                lat, computed = [], 0
                for _ in range(cfg.proc_trials):
                    res = _processes_trial(ctx, spec, next(arg_counter), 3, takeover=False,
                                           lock_ttl=10.0)
                    lat += res["latency"]
                    computed += res["computed"]
                note = "3 waiter processes" + (f"; {computed} waiter(s) computed themselves"
                                               if computed else "")
                t.add(f"wake-up, separate processes ({name})",
                      f"{statistics.median(lat) * 1e3:.1f} ms", f"{max(lat) * 1e3:.1f} ms",
                      str(len(lat)), note)
            except Exception as exc:
                t.add(f"wake-up, separate processes ({name})", na(exc), "", "", "")
        for name, spec in specs.items():
            try:
                kills, leases = [], []
                for _ in range(cfg.takeover_trials):
                    res = _processes_trial(ctx, spec, next(arg_counter), 2, takeover=True,
                                           lock_ttl=2.0)
                    kills.append(res["since_kill"])
                    leases.append(res["since_lease"])
                t.add(f"takeover after SIGKILL, lock_ttl=2 s ({name})",
                      f"{statistics.median(kills):.2f} s", f"{max(kills):.2f} s",
                      str(len(kills)), f"since the lease was taken: median "
                      f"{statistics.median(leases):.2f} s (lease 2 s)")
                check(report, "10", max(leases), name=name)
            except Exception as exc:
                t.add(f"takeover after SIGKILL ({name})", na(exc), "", "", "")
    sec.notes.append("Processes are started with the `spawn` method and open their store before "
                     "the clock starts. A waiter process re-checks the store with a back-off of "
                     "2 ms growing to 10 ms, so after a 0.4 s computation its wake-up is up to "
                     "one 10 ms interval (≈ 5 ms on average; waiters started together poll in "
                     "step, so samples of one trial are correlated). A lease lapses `lock_ttl` "
                     "after it was taken (the holder is killed before its first renewal at "
                     "lock_ttl/3).")


# ---------------------------------------------------------------------------------------------
