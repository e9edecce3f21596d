"""Single-flight: one computation per key across threads, processes and machines."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import empty_cache

from persistmemo import Cache

WORKER = str(Path(__file__).with_name("stampede_worker.py"))
STORES = ["disk", "redis"]


def _location(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "disk":
        return str(tmp_path / "stampede-cache")
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["memory", "disk", "redis"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A Cache on every backend kind, empty."""
    yield from empty_cache(request.param, request, tmp_path)


def _executions(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _spawn(location: str, log: Path, seconds: float, lock_ttl: float, start_at: float,
           arg: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, location, str(log), str(seconds), str(lock_ttl), str(start_at),
         str(arg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_threads_share_one_computation(cache: Cache) -> None:
    """Eight threads asking for the same cold key run the body once and all get the value."""
    runs = []
    barrier = threading.Barrier(8)

    @cache.memoize
    def slow(x: int) -> list[int]:
        runs.append(x)
        time.sleep(0.3)
        return [x, x]

    results: list[Any] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        results.append(slow(5))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert runs == [5]
    assert results == [[5, 5]] * 8
    results[0].append(1)  # waiters get their own copy, not a shared mutable object
    assert results[1] == [5, 5]


def test_leader_exception_releases_waiters_promptly(cache: Cache) -> None:
    """If the computing thread raises, waiters take over at once instead of waiting a lease."""
    runs = []
    barrier = threading.Barrier(6)

    @cache.memoize(lock_ttl=30)
    def fragile(x: int) -> int:
        runs.append(x)
        time.sleep(0.2)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        return x

    outcomes: list[Any] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        try:
            outcomes.append(fragile(3))
        except RuntimeError as exc:
            outcomes.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert time.monotonic() - t0 < 5  # far below the 30 s lease
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1
    assert outcomes.count(3) == 5
    assert len(runs) == 2


def test_recursive_memoized_function_does_not_deadlock(cache: Cache) -> None:
    """A memoized recursive function (fib) works with locking on."""

    @cache.memoize
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(60) == 1548008755920
    assert fib.cache_info().misses == 61


def test_asyncio_tasks_share_one_computation(cache: Cache) -> None:
    """Fifty tasks awaiting the same call run it once."""
    runs = []

    @cache.memoize
    async def slow(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.2)
        return x * 2

    async def main() -> list[int]:
        return list(await asyncio.gather(*(slow(4) for _ in range(50))))

    assert asyncio.run(main()) == [8] * 50
    assert runs == [4]


@pytest.mark.parametrize("kind", STORES)
def test_processes_share_one_computation(kind: str, request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    """Six processes calling the same slow function at once run its body exactly once."""
    location = _location(kind, request, tmp_path)
    log = tmp_path / "runs.log"
    start_at = time.time() + 1.5  # all workers are imported and ready by then
    procs = [_spawn(location, log, 1.0, 5.0, start_at, arg=11) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len(_executions(log)) == 1
    computed_by = {line.split()[2] for line, _ in outs}
    assert len(computed_by) == 1  # everyone got the one computation's value


@pytest.mark.parametrize("kind", STORES)
def test_killed_lock_holder_is_taken_over_after_the_lease(kind: str,
                                                          request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    """A holder killed with SIGKILL blocks the others for at most the lease (plus a margin)."""
    location = _location(kind, request, tmp_path)
    log = tmp_path / "runs.log"
    lease = 1.5
    holder = _spawn(location, log, 60.0, lease, 0, arg=22)
    deadline = time.monotonic() + 20
    while not _executions(log) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_executions(log)) == 1, holder.communicate(timeout=5)
    waiter = _spawn(location, log, 0.1, lease, 0, arg=22)
    time.sleep(0.3)  # the waiter is now waiting on the lease
    killed_at = time.monotonic()
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=10)
    _, err = waiter.communicate(timeout=30)
    took = time.monotonic() - killed_at
    assert waiter.returncode == 0, err
    assert len(_executions(log)) == 2
    assert took < lease + 1.5, took


@pytest.mark.parametrize("kind", STORES)
def test_computation_longer_than_lease_runs_once(kind: str, request: pytest.FixtureRequest,
                                                 tmp_path: Path) -> None:
    """The lease is renewed while computing: a 2.5 s job with a 0.6 s lease runs once."""
    location = _location(kind, request, tmp_path)
    log = tmp_path / "runs.log"
    start_at = time.time() + 1.5
    procs = [_spawn(location, log, 2.5, 0.6, start_at, arg=33) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len(_executions(log)) == 1


CRASHMOD = """
import sys, persistmemo
cache = persistmemo.Cache(sys.argv[1], namespace="crash")
def expected(i):
    n = 1000 + (i * 7919) % 200_000
    return (i, bytes([i % 251]) * n, list(range(i % 50)))
@cache.memoize(lock=False)
def blob(i):
    return expected(i)
"""

WRITER = """
import sys
from crashmod import blob
i = int(sys.argv[2])
print("ready", flush=True)
while True:
    blob.refresh(i % 40)
    i += 1
"""

READER = """
import persistmemo
from crashmod import blob, cache, expected
bad = found = 0
for i in range(40):
    key = blob.cache_key(i)
    raw = cache.backend.get(key)
    if raw is persistmemo.MISSING:
        continue
    try:
        v = cache.codec.decode(raw, key=key).value
    except persistmemo.DecodeError:
        continue  # detected corruption: a miss, never a wrong value
    found += 1
    bad += v != expected(i)
print(found, bad)
"""


@pytest.mark.parametrize("kind", STORES)
def test_writer_killed_mid_write_never_leaves_a_wrong_value(kind: str,
                                                            request: pytest.FixtureRequest,
                                                            tmp_path: Path) -> None:
    """A writer SIGKILLed dozens of times mid-write leaves entries that are absent or correct."""
    location = _location(kind, request, tmp_path)
    (tmp_path / "crashmod.py").write_text(CRASHMOD)
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    reader = tmp_path / "reader.py"
    reader.write_text(READER)
    rounds = 24
    for r in range(rounds):
        p = subprocess.Popen([sys.executable, str(writer), location, str(r * 13)],
                             stdout=subprocess.PIPE, text=True, cwd=tmp_path)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.02 + (r % 7) * 0.015)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=10)
    res = subprocess.run([sys.executable, str(reader), location], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    found, bad = map(int, res.stdout.split())
    assert bad == 0
    assert found > 0


FORKED = """
import multiprocessing as mp, os, sys, threading
import persistmemo
cache = persistmemo.Cache(sys.argv[1], namespace="fork")

@cache.memoize
def tagged(i):
    return {"i": i, "sq": i * i}

for i in range(20):  # warm the cache (and open connections) in the parent
    tagged(i)

def child(q):
    errors = []
    def run(t):
        try:
            for i in range(40):
                v = tagged(i)
                if v != {"i": i, "sq": i * i}:
                    errors.append((i, v))
        except Exception as exc:
            errors.append(repr(exc))
    threads = [threading.Thread(target=run, args=(t,)) for t in range(16)]
    for t in threads: t.start()
    for t in threads: t.join(30)
    q.put((os.getpid(), errors, cache.info().errors))

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=child, args=(q,)) for _ in range(8)]
    for p in procs: p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs: p.join(30)
    bad = [r for r in results if r[1] or r[2]]
    print(len(results), len(bad), bad[:2])
"""


@pytest.mark.parametrize("kind", STORES)
def test_forked_children_with_threads(kind: str, request: pytest.FixtureRequest,
                                      tmp_path: Path) -> None:
    """A cache warmed in a parent serves 8 forked children x 16 threads, no errors or cross-talk."""
    location = _location(kind, request, tmp_path)
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    res = subprocess.run([sys.executable, str(script), location], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[:2] == ["8", "0"], res.stdout


class _Unencodable:
    """A result type the default codec cannot store."""


def test_unencodable_result_shared_with_waiting_threads(cache: Cache) -> None:
    """Threads waiting on a result the codec cannot store get the leader's object, not N runs."""
    import warnings

    runs = []
    barrier = threading.Barrier(6)

    @cache.memoize
    def make(x: int) -> _Unencodable:
        runs.append(x)
        time.sleep(0.2)
        return _Unencodable()

    out: list[Any] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        out.append(make(1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert len(out) == 6 and all(isinstance(o, _Unencodable) for o in out)
    assert runs == [1]


def test_async_leader_failure_elects_one_new_leader(cache: Cache) -> None:
    """When the computing task raises, one waiting task computes next (not every waiter)."""
    runs = []

    @cache.memoize
    async def flaky(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.1)
        if len(runs) == 1:
            raise RuntimeError("first")
        return x

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(flaky(7) for _ in range(20)),
                                         return_exceptions=True))

    results = asyncio.run(main())
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert results.count(7) == 19
    assert len(runs) == 2
