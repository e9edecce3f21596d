"""A bounded SIGKILL campaign on the disk store: writers (forked from a warm parent) killed at
random moments while a reader verifies every value it gets. Pass: 0 wrong values, 0 reader
errors, an intact database, and 0 orphaned value files once the store is opened again."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WORKER = textwrap.dedent("""
    import json, os, random, sys, time
    from persistmemo import Cache

    SIZES = [10, 100, 1000, 40_000, 150_000, 400_000]  # rows and value files
    cache = Cache(sys.argv[2], size_limit=3_000_000, lock_ttl=1.0, lock_wait=1.0)

    @cache.memoize
    def f(i):
        n = SIZES[i % len(SIZES)]
        return (i, (str(i).encode() * (n // len(str(i)) + 1))[:n])

    mode = sys.argv[1]
    rnd = random.Random(os.getpid())

    def write_forever():
        end = time.monotonic() + 20  # a safety net: never outlive the test by much
        while time.monotonic() < end:
            i = rnd.randrange(60)
            if rnd.random() < 0.3:
                f.invalidate(i)  # overwrites: old value files are removed after each commit
            assert f(i) == f.__wrapped__(i)

    if mode == "spawn":  # a warm parent forks writers on demand: a kill costs a fork, not a
        import signal    # Python start-up
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
        f(0)
        for line in sys.stdin:
            if os.fork() == 0:
                rnd = random.Random(os.getpid())
                os.write(1, b"%d\\n" % os.getpid())  # one atomic write per child
                write_forever()
                os._exit(0)
    else:
        stop = sys.argv[3] if len(sys.argv) > 3 else ""
        reads = wrong = errors = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for i in (range(60) if mode == "verify" else [rnd.randrange(60)]):
                try:
                    value = f(i)
                except Exception:
                    errors += 1
                    continue
                reads += 1
                wrong += value != f.__wrapped__(i)
            if mode == "verify" or os.path.exists(stop):
                break
        info = f.cache_info()
        print(json.dumps({"reads": reads, "wrong": wrong, "errors": errors,
                          "hits": info.hits, "decode_failures": info.decode_failures}))
""")


def _orphans(d: Path) -> list[Path]:
    with sqlite3.connect(f"file:{d}/cache.db?mode=ro", uri=True) as con:
        referenced = {r[0] for r in con.execute(
            "SELECT filename FROM Cache WHERE filename IS NOT NULL")}
    return [p for p in d.rglob("*.val") if str(p.relative_to(d)) not in referenced]


@pytest.mark.timeout(240)
def test_sigkill_campaign_no_wrong_values_no_orphans(tmp_path: Path) -> None:
    """>= 200 writer SIGKILLs (0-250 ms into their writes) with a verifying reader, bounded."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    store, stop = tmp_path / "store", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    py = [sys.executable, str(worker)]
    subprocess.run([*py, "verify", str(store)], env=env, check=True, capture_output=True)
    reader = subprocess.Popen([*py, "read", str(store), str(stop)], env=env,
                              stdout=subprocess.PIPE, text=True)
    rnd = random.Random(10)
    kills, t0 = 0, time.monotonic()
    spawner = subprocess.Popen([*py, "spawn", str(store)], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    assert spawner.stdin is not None and spawner.stdout is not None
    try:
        while kills < 200 and time.monotonic() - t0 < 100:
            spawner.stdin.write("go\n" * 3)
            spawner.stdin.flush()
            pids = []
            while len(pids) < 3:
                line = spawner.stdout.readline()
                assert line, "the spawner died"
                pids += [int(line)] if line.strip() else []
            time.sleep(rnd.uniform(0.0, 0.25))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
    finally:
        for pid in pids:  # also on failure or timeout: never leave a writer running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        spawner.stdin.close()
        spawner.kill()
        spawner.wait()
        spawner.stdout.close()
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    stats = json.loads(out)
    assert kills >= 200, kills
    assert elapsed < 120, elapsed
    assert stats["wrong"] == 0 and stats["errors"] == 0, stats
    assert stats["reads"] > 100, stats
    with sqlite3.connect(f"file:{store}/cache.db?mode=ro", uri=True) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    time.sleep(0.06)  # the sweep spares files younger than 50 ms (a writer before its flock)
    res = subprocess.run([*py, "verify", str(store)], env=env, check=True,
                         capture_output=True, text=True)
    after = json.loads(res.stdout)
    assert after["wrong"] == 0 and after["errors"] == 0 and after["reads"] == 60, after
    assert after["hits"] > 0, after
    left = _orphans(store)
    if left:  # diagnose: would a full sweep remove them (bounded sweep) or not (locked)?
        from persistmemo.backends.disk import DiskBackend

        removed = DiskBackend(store).sweep(budget=30)
        raise AssertionError(f"{len(left)} orphans after reopen; a full sweep removed {removed}")
    print(f"campaign: {kills} kills in {elapsed:.1f}s, reader {stats}, after reopen {after}")
