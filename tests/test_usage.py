"""Persisted usage statistics (cross-worker, batched, self time), DEBUG records, map progress."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import persistmemo
from persistmemo import _usage
from persistmemo.backends.memory import MemoryBackend

BIN = Path(sys.executable).parent / "persistmemo"

WORKER = textwrap.dedent('''
    import sys, time
    import persistmemo

    @persistmemo.memoize
    def work(x):
        time.sleep(0.01)
        return x * 2

    start = int(sys.argv[1])
    for i in range(start, start + 10):
        work(i)
''')


def stats_json(url: str, cwd: Path) -> Any:
    """`persistmemo --url URL stats --json` for this test's namespace, parsed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    res = subprocess.run([str(BIN), "--url", url, "stats", "--json", "--namespace",
                          cwd.name[-60:]], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def run_workers(tmp_path: Path, url: str, starts: list[int]) -> None:
    """Run one worker process per start value, concurrently, on the same store."""
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")},
           "PERSISTMEMO_URL": url, "PERSISTMEMO_NAMESPACE": tmp_path.name[-60:]}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(s)],
                              cwd=tmp_path, env=env, stderr=subprocess.PIPE)
             for s in starts]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


@pytest.mark.parametrize("store", ["disk", "redis", "cluster"])
def test_stats_add_up_two_worker_processes(tmp_path: Path, store: str,
                                           request: pytest.FixtureRequest) -> None:
    """Two workers with overlapping inputs: stats shows the calls of both, each once."""
    fixture = {"redis": "redis_url", "cluster": "redis_cluster_url"}.get(store)
    url = request.getfixturevalue(fixture) if fixture else str(tmp_path / "c")
    run_workers(tmp_path, url, [0, 5])
    row = next(r for r in stats_json(url, tmp_path)["functions"]
               if r["function"] == "worker.work")
    assert row["hits"] + row["misses"] == 20
    assert row["entries"] == 15 and row["misses"] >= 15
    assert row["compute_s"] >= 0.15 * 0.9
    run_workers(tmp_path, url, [0])
    again = next(r for r in stats_json(url, tmp_path)["functions"]
                 if r["function"] == "worker.work")
    assert again["hits"] == row["hits"] + 10 and again["misses"] == row["misses"]
    assert again["saved_s"] >= row["saved_s"] + 10 * 0.01 * 0.9


def test_compute_time_is_self_time_for_recursion(tmp_path: Path) -> None:
    """A recursive memoized function's compute time counts each level's own work once."""
    cache = persistmemo.Cache(str(tmp_path / "c"))

    @cache.memoize
    def depth(n: int) -> int:
        import time

        time.sleep(0.03)
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(5) == 5
    cache.close()  # flushes
    (row,) = list(_usage.read_usage(cache.backend))
    assert row.misses == 6
    assert 0.03 * 6 * 0.9 <= row.compute_s < 0.03 * 6 + 0.1  # inclusive would be ~0.63 s


def test_flushes_are_batched_not_per_call() -> None:
    """Hundreds of calls write the statistics at most once per flush interval."""
    writes: list[str] = []

    class Counting(MemoryBackend):
        def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
            if key.startswith(_usage.PREFIX):
                writes.append(key)
            super().set(key, value, ttl=ttl)

    cache = persistmemo.Cache(Counting())

    @cache.memoize
    def ident(x: int) -> int:
        return x

    for i in range(300):
        ident(i % 10)
    assert len(writes) <= 1
    cache.close()
    (row,) = list(_usage.read_usage(cache.backend))
    assert (row.hits, row.misses) == (290, 10)


def test_failed_flush_keeps_the_counts_and_never_raises() -> None:
    """A store that fails while flushing loses nothing and raises nothing."""
    class Flaky(MemoryBackend):
        fail = True

        def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
            if key.startswith(_usage.PREFIX) and self.fail:
                raise OSError("disk full")
            super().set(key, value, ttl=ttl)

    backend = Flaky()
    cache = persistmemo.Cache(backend)

    @cache.memoize
    def ident(x: int) -> int:
        return x

    ident(1)
    ident(1)
    cache.usage.flush()
    backend.fail = False
    cache.usage.flush()
    (row,) = list(_usage.read_usage(backend))
    assert (row.hits, row.misses) == (1, 1)


def test_debug_record_per_hit_miss_and_store(caplog: pytest.LogCaptureFixture) -> None:
    """The persistmemo logger emits one DEBUG record per hit, miss and store."""
    cache = persistmemo.Cache("memory://")

    @cache.memoize
    def ident(x: int) -> int:
        return x

    with caplog.at_level(logging.DEBUG, logger="persistmemo"):
        ident(1)
        ident(1)
    events = [(r.pm_event, r.pm_function) for r in caplog.records  # type: ignore[attr-defined]
              if hasattr(r, "pm_event")]
    name = "test_usage.test_debug_record_per_hit_miss_and_store.<locals>.ident"
    assert events == [("miss", name), ("store", name), ("hit", name)]
    assert all(r.levelno == logging.DEBUG and "[" in r.getMessage() for r in caplog.records)


def test_map_progress_counts_computed_and_reused(capsys: pytest.CaptureFixture[str]) -> None:
    """f.map(progress=True) shows a tqdm bar with computed and reused counts."""
    pytest.importorskip("tqdm")
    cache = persistmemo.Cache("memory://")

    @cache.memoize
    def ident(x: int) -> int:
        return x

    ident(0)
    assert ident.map([0, 1, 2, 1], progress=True) == [0, 1, 2, 1]
    err = capsys.readouterr().err
    assert "computed=2 reused=2" in err and "4/4" in err
    assert ident.map([5], progress=False) == [5] and capsys.readouterr().err == ""


def test_stats_colour_on_a_terminal_only(tmp_path: Path) -> None:
    """stats uses colour under a pseudo-terminal, none in a pipe or with NO_COLOR."""
    pty = pytest.importorskip("pty")
    ns = tmp_path.name[-60:]
    url = str(tmp_path / "c")
    run_workers(tmp_path, url, [0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm"

    def under_pty(extra: dict[str, str]) -> str:
        main, child = pty.openpty()
        proc = subprocess.Popen([str(BIN), "--url", url, "stats", "--namespace", ns],
                                stdout=child, stderr=child,
                                env={**env, **extra}, cwd=tmp_path)
        os.close(child)
        chunks = []
        while True:
            try:
                data = os.read(main, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
        os.close(main)
        return b"".join(chunks).decode("utf-8", "replace")

    coloured = under_pty({})
    assert "\033[" in coloured and "worker.work" in coloured
    assert "\033[" not in under_pty({"NO_COLOR": "1"})
    piped = subprocess.run([str(BIN), "--url", url, "stats"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert "worker.work" in piped.stdout and "\033[" not in piped.stdout


def test_stats_reset_forgets_calls_but_keeps_entries(tmp_path: Path) -> None:
    """stats --reset --yes deletes the recorded calls, not the entries."""
    url = str(tmp_path / "c")
    run_workers(tmp_path, url, [0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    ns = tmp_path.name[-60:]
    res = subprocess.run([str(BIN), "--url", url, "--namespace", ns, "stats", "--reset"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1  # not confirmed without a terminal
    res = subprocess.run([str(BIN), "--url", url, "--namespace", ns, "stats", "--reset", "-y"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "reset the statistics of 1" in res.stdout
    (row,) = stats_json(url, tmp_path)["functions"]
    assert (row["hits"], row["misses"], row["entries"]) == (0, 0, 10)


def test_time_saved_counts_nested_hits_by_their_own_work(tmp_path: Path) -> None:
    """A hit inside a computation saves the entry's self time; a top-level hit all of it."""
    cache = persistmemo.Cache(str(tmp_path / "c"))

    @cache.memoize
    def depth(n: int) -> int:
        import time

        time.sleep(0.03)
        return 0 if n == 0 else 1 + depth(n - 1)

    depth(5)  # 6 computations, no hits
    depth(6)  # computes depth(6); depth(5) is a nested hit: ~0.03 s of its own work
    depth(6)  # a top-level hit: all of depth(6)'s ~0.03 s (its callee was a hit)
    cache.close()
    (row,) = list(_usage.read_usage(cache.backend))
    assert (row.hits, row.misses) == (2, 7)
    assert 0.03 * 2 * 0.9 <= row.saved_s < 0.03 * 2 + 0.05  # inclusive: ~0.21 s
