#!/usr/bin/env python
"""persistmemo benchmarks: hits, misses, big arrays, import time, Redis, fail-open, stampedes.

Usage::

    python benchmarks/run.py [--quick] [--redis | --no-redis] [--out docs/benchmarks.md]

Every number is the minimum over several repeats of a batch of many calls (best-of-N filters
out the noise of other processes), and every contender of a table is measured in the same run,
interleaved, so the ratios are fair. A peer library that fails to import or to run is reported
as ``n/a (reason)`` instead of stopping the run. With ``--redis`` (the default when
``redis-server`` is on PATH) a private ``redis-server`` is started on a free loopback port with
persistence off, and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import itertools
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark this checkout

MB = 1_000_000
GB = 1_000_000_000


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


class Settings:
    """Sizes and repeat counts: --quick trades precision for a run under a minute."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        # Many short batches: when other processes compete for the CPU, most batches get
        # preempted; the minimum over many short interleaved batches still finds quiet windows
        # (a batch shorter than a scheduler time slice often runs uninterrupted).
        self.batch_time = 0.002  # seconds per timed batch of fast calls
        self.repeat = 10 if quick else 60  # batches per contender; the minimum is reported
        self.miss_calls = 20 if quick else 30  # calls per miss batch
        self.miss_repeat = 5 if quick else 50
        self.sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
        self.key_mb = 100  # keying: a 100 MB argument
        self.key_repeat = 3 if quick else 10
        self.joblib_repeat = 1 if quick else 3
        self.result_mb = 10  # store/load: a 10 MB result
        self.result_repeat = 5 if quick else 25
        self.import_runs = 5 if quick else 15
        self.map_n = 1000
        self.map_repeat = 5 if quick else 30
        self.thread_trials = 5 if quick else 20
        self.proc_trials = 1 if quick else 3
        self.takeover_trials = 1 if quick else 2
        self.paused_trials = 1 if quick else 3


# ---------------------------------------------------------------------------------------------
# Report model
# ---------------------------------------------------------------------------------------------


def na(reason: object) -> str:
    """Render a contender that could not be measured."""
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    if isinstance(reason, BaseException):
        text = f"{type(reason).__name__}: {text}" if str(reason).strip() else text
    return f"n/a ({text[:90]})"


def fmt(value: float | str | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (strings pass through)."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def ratio(a: float | str | None, b: float | str | None) -> str:
    """``a / b`` as ``1.23x``, or n/a when either side is missing."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return "n/a"
    r = a / b
    return f"{r:.2f}x" if r < 100 else f"{r:,.0f}x"


class Table:
    def __init__(self, headers: list[str], left: tuple[int, ...] = (0,)) -> None:
        self.headers = headers
        self.left = left  # columns of text (left-aligned); the others hold numbers
        self.rows: list[list[str]] = []

    def add(self, *cells: object) -> None:
        self.rows.append([c if isinstance(c, str) else fmt(c) for c in cells])  # type: ignore[arg-type]

    def markdown(self) -> str:
        align = ["---" if i in self.left else "---:" for i in range(len(self.headers))]
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join(align) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        return "\n".join(lines)


class Section:
    def __init__(self, number: int, title: str, intro: str = "") -> None:
        self.number = number
        self.title = title
        self.intro = intro
        self.tables: list[Table] = []
        self.notes: list[str] = []

    def table(self, *headers: str, left: tuple[int, ...] = (0,)) -> Table:
        t = Table(list(headers), left)
        self.tables.append(t)
        return t

    def markdown(self) -> str:
        parts = [f"### {self.number}. {self.title}"]
        if self.intro:
            parts.append(self.intro)
        parts.extend(t.markdown() for t in self.tables)
        if self.notes:
            parts.append("\n".join(f"- {n}" for n in self.notes))
        return "\n\n".join(parts)


class Report:
    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.targets: list[tuple[str, str, str, str]] = []  # (id, target, measured, verdict)

    def section(self, number: int, title: str, intro: str = "") -> Section:
        s = Section(number, title, intro)
        self.sections.append(s)
        return s

    def target(self, tid: str, text: str, shown: str, ok: bool | None) -> None:
        """Record a target: ``ok`` None means it could not be measured."""
        verdict = "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")
        self.targets.append((tid, text, shown, verdict))

    def targets_table(self) -> Table:
        t = Table(["#", "Target", "Measured", "Result"], left=(0, 1, 3))
        for row in self.targets:
            t.rows.append(list(row))
        return t


def check(report: Report, tid: str, text: str, value: float | str | None, limit: float,
          *, at_most: bool = True, unit: str = "x") -> None:
    """Record a target ``value <= limit`` (or ``>=``); a non-number is n/a."""
    if not isinstance(value, (int, float)):
        report.target(tid, text, str(value), None)
        return
    ok = value <= limit if at_most else value >= limit
    shown = f"{value:.2f}{unit}" if unit == "x" else f"{fmt(value)} {unit}"
    report.target(tid, text, shown, ok)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

_now = time.perf_counter


def _batch(fn: Callable[[], Any], number: int) -> float:
    gc_was = gc.isenabled()
    gc.disable()
    try:
        rng = itertools.repeat(None, number)
        t0 = _now()
        for _ in rng:
            fn()
        return _now() - t0
    finally:
        if gc_was:
            gc.enable()


def _calibrate(fn: Callable[[], Any], batch_time: float) -> int:
    number = 1
    while True:
        t = _batch(fn, number)
        if t >= batch_time or number >= 10_000_000:
            return number
        if t <= 0:
            number *= 10
        else:
            number = max(number * 2, int(number * batch_time / t * 1.05))


def compare(contenders: dict[str, Callable[[], Any] | str], cfg: Settings,
            *, batch_time: float | None = None, repeat: int | None = None
            ) -> dict[str, float | str]:
    """Time zero-argument callables, interleaved; return µs per call (minimum) or n/a text."""
    batch_time = cfg.batch_time if batch_time is None else batch_time
    repeat = cfg.repeat if repeat is None else repeat
    out: dict[str, float | str] = {}
    numbers: dict[str, int] = {}
    for name, fn in contenders.items():
        if isinstance(fn, str):
            out[name] = fn
            continue
        try:
            fn()
            numbers[name] = _calibrate(fn, batch_time)
            out[name] = float("inf")
        except Exception as exc:
            out[name] = na(exc)
    for _ in range(repeat):
        for name, number in numbers.items():
            if isinstance(out[name], str):
                continue
            fn = contenders[name]
            assert callable(fn)
            try:
                per_call = _batch(fn, number) / number * 1e6
            except Exception as exc:
                out[name] = na(exc)
                continue
            out[name] = min(out[name], per_call)  # type: ignore[type-var]
    return out


def compare_async(contenders: dict[str, Callable[[], Any] | str], cfg: Settings
                  ) -> dict[str, float | str]:
    """Like :func:`compare` for coroutine functions, all inside one event loop."""

    async def batch(fn: Callable[[], Any], number: int) -> float:
        t0 = _now()
        for _ in range(number):
            await fn()
        return _now() - t0

    async def main() -> dict[str, float | str]:
        out: dict[str, float | str] = {}
        numbers: dict[str, int] = {}
        for name, fn in contenders.items():
            if isinstance(fn, str):
                out[name] = fn
                continue
            try:
                await fn()
                number = 1
                while True:
                    t = await batch(fn, number)
                    if t >= cfg.batch_time:
                        break
                    number = max(number * 2, int(number * cfg.batch_time / max(t, 1e-9) * 1.05))
                numbers[name] = number
                out[name] = float("inf")
            except Exception as exc:
                out[name] = na(exc)
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(cfg.repeat):
                for name, number in numbers.items():
                    if isinstance(out[name], str):
                        continue
                    try:
                        per_call = await batch(contenders[name], number) / number * 1e6  # type: ignore[arg-type]
                    except Exception as exc:
                        out[name] = na(exc)
                        continue
                    out[name] = min(out[name], per_call)  # type: ignore[type-var]
        finally:
            if gc_was:
                gc.enable()
        return out

    return asyncio.run(main())


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Minimum wall time of ``repeat`` single calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = _now()
        fn()
        best = min(best, _now() - t0)
    return best


# ---------------------------------------------------------------------------------------------
# CPU pinning (the benchmark and redis-server share the last core)
# ---------------------------------------------------------------------------------------------

_ALL_CPUS: set[int] = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
_PIN = {"bench": None, "redis": None}  # type: dict[str, set[int] | None]


@contextlib.contextmanager
def pinned(on: bool = True) -> Iterator[None]:
    """Pin this thread to the benchmark core (on=False: let it use every core)."""
    target = _PIN["bench"] if on else _ALL_CPUS
    if not target or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, target)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------------------------------------
# A private redis-server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free loopback port, persistence off, controlled by pid."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        core = _PIN["redis"]

        def preexec() -> None:  # runs in the child before exec: pin redis-server to its core
            if core and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, core)

        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def quiet_logging() -> None:
    """persistmemo logs fail-open warnings: keep them out of the benchmark output."""
    for name in ("persistmemo", "cachier", "cashews", "dogpile"):
        lg = logging.getLogger(name)
        lg.addHandler(logging.NullHandler())
        lg.propagate = False


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line(redis_exe: str | None) -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_server = "none"
    if redis_exe:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([redis_exe, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
            redis_server = next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")),
                                out.strip())
    libs = ", ".join(f"{name} {version_of(dist)}" for name, dist in (
        ("persistmemo", "persistmemo"), ("diskcache", "diskcache"), ("redis-py", "redis"),
        ("msgpack", "msgpack"), ("blake3", "blake3"), ("numpy", "numpy"), ("joblib", "joblib"),
        ("cachier", "cachier"), ("dogpile.cache", "dogpile.cache"), ("cashews", "cashews")))
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()} "
            f"({platform.python_implementation()}); {platform.system()} {platform.release()} "
            f"({platform.machine()}); redis-server {redis_server}; {libs}")


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "persistmemo"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' + uncommitted changes in persistmemo/' if dirty else ''}" if rev else "unknown"


def raw_diskcache(path: Path) -> Any:
    """A plain ``diskcache.Cache`` on a persistmemo directory (same settings, so no rewrite)."""
    import diskcache

    return diskcache.Cache(str(path))


# ---------------------------------------------------------------------------------------------
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
            check(report, "1a", f"disk hit {name} ≤ 1.4x floor (key + get + decode)",
                  pm_us / res["floor"] if isinstance(pm_us, float) and isinstance(
                      res["floor"], float) else "n/a", 1.4)
            dcv = res.get("diskcache")
            check(report, "1b", f"disk hit {name} ≤ 0.55x diskcache memoize hit",
                  pm_us / dcv if isinstance(pm_us, float) and isinstance(dcv, float) else
                  (dcv if isinstance(dcv, str) else "n/a"), 0.55)
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
# 2. Disk misses at several cache sizes
# ---------------------------------------------------------------------------------------------


def bench_disk_miss(report: Report, cfg: Settings, tmp: Path) -> None:
    import persistmemo

    sec = report.section(2, "Disk miss (µs per call) at several cache sizes",
                         "A new argument on every call, so each call looks up, computes a "
                         "trivial function and stores. The raw floor is persistmemo's key + "
                         "`diskcache.Cache.get` + `Codec.encode` + `diskcache.Cache.set`. All "
                         "contenders write into the same directory, prefilled with N entries; "
                         "the entries a batch adds are deleted after it (untimed), so N stays put.")
    pm_dir = tmp / "miss-pm"
    cache = persistmemo.Cache(pm_dir)

    @cache.memoize(lock=False)
    def miss_nolock(x):
        return x * 2

    @cache.memoize
    def miss_lock(x):
        return x * 2

    @cache.memoize
    def miss_floor(x):  # only its KeyBuilder is used
        return x * 2

    raw = raw_diskcache(pm_dir)
    codec = cache.codec
    kb = miss_floor.keys
    counter = itertools.count(10**12)

    def floor(i: int) -> None:
        k = kb((i,), {})
        if raw.get(k) is None:
            raw.set(k, codec.encode(i * 2, key=k, created=time.time(), duration=0.0))

    def lease_floor(i: int) -> None:
        # the same plus the least a store-based lease costs: add, re-read, compare-and-delete
        k = kb((i,), {})
        if raw.get(k) is None:
            lk = "lock:" + k
            raw.add(lk, b"token", expire=10)
            raw.get(k)
            raw.set(k, codec.encode(i * 2, key=k, created=time.time(), duration=0.0))
            with raw.transact():
                if raw.get(lk) == b"token":
                    raw.delete(lk)

    contenders: dict[str, tuple[Callable[[int], Any], Callable[[int], str]]] = {
        "nolock": (miss_nolock, miss_nolock.cache_key),
        "lock": (miss_lock, miss_lock.cache_key),
        "floor": (floor, miss_floor.cache_key),
        "lease": (lease_floor, miss_floor.cache_key),
    }
    for fn, _ in contenders.values():  # warm up: open the database, build engines
        fn(next(counter))

    def prefill(start: int, stop: int) -> None:
        with raw.transact(retry=True):
            for i in range(start, stop):
                k = f"pm:1:default:prefill.fill:0000000000000000:{i:064x}"
                raw.set(k, codec.encode(i, key=k, created=0.0, duration=0.0))

    t = sec.table("Entries in cache", "pm miss, lock=False", "pm miss, lock=True (default)",
                  "raw: key + get + encode + set", "raw + a lease (add, get, txn delete)",
                  "lock=False / raw (target ≤ 1.25)", "lock=True / raw (target ≤ 1.25)",
                  "lock=True / raw + lease")
    filled = 0
    results: dict[int, dict[str, float | str]] = {}
    with pinned():
        for size in cfg.sizes:
            prefill(filled, size)
            filled = size
            best: dict[str, float | str] = dict.fromkeys(contenders, float("inf"))
            for _ in range(cfg.miss_repeat):
                for name, (fn, key_of) in contenders.items():
                    if isinstance(best[name], str):
                        continue
                    args = [next(counter) for _ in range(cfg.miss_calls)]
                    gc.disable()
                    try:
                        t0 = _now()
                        for a in args:
                            fn(a)
                        dt = _now() - t0
                    except Exception as exc:
                        best[name] = na(exc)
                        continue
                    finally:
                        gc.enable()
                    best[name] = min(best[name], dt / len(args) * 1e6)  # type: ignore[type-var]
                    with raw.transact(retry=True):
                        for a in args:
                            raw.delete(key_of(a))
            results[size] = best
            t.add(f"{size:,}", best["nolock"], best["lock"], best["floor"], best["lease"],
                  ratio(best["nolock"], best["floor"]), ratio(best["lock"], best["floor"]),
                  ratio(best["lock"], best["lease"]))
            for name, label in (("nolock", "lock=False"), ("lock", "lock=True")):
                v, fl = best[name], best["floor"]
                check(report, "2", f"disk miss {label} at {size:,} entries ≤ 1.25x raw",
                      v / fl if isinstance(v, float) and isinstance(fl, float) else "n/a", 1.25)
    lo, hi = cfg.sizes[0], cfg.sizes[-1]
    t.add(f"{hi:,} vs {lo:,} (flatness)", ratio(results[hi]["nolock"], results[lo]["nolock"]),
          ratio(results[hi]["lock"], results[lo]["lock"]),
          ratio(results[hi]["floor"], results[lo]["floor"]),
          ratio(results[hi]["lease"], results[lo]["lease"]), "", "", "")
    sec.notes.append(f"{cfg.miss_calls} calls per batch, best of {cfg.miss_repeat} batches. "
                     "lock=True takes and releases a lease row per miss (diskcache `add` + a "
                     "compare-and-delete transaction): two SQLite write transactions more than "
                     "the raw floor; the `raw + a lease` column is that floor with the same "
                     "three writes done directly on diskcache.")
    raw.close()
    cache.close()


# ---------------------------------------------------------------------------------------------
# 3. Keying a 100 MB array
# ---------------------------------------------------------------------------------------------


def bench_keying(report: Report, cfg: Settings, tmp: Path) -> None:
    sec = report.section(3, f"Keying a {cfg.key_mb} MB contiguous float64 numpy argument",
                         "GB/s of building the key of `f(arr)` (`f.cache_key(arr)`), against "
                         "`joblib.hash(arr)`; raw BLAKE3 over the buffer for context.")
    t = sec.table("Keying", "GB/s", "ms per key", "vs joblib.hash")
    try:
        import numpy as np
    except Exception as exc:
        t.add("all", na(exc), "", "")
        report.target("3", f"keying {cfg.key_mb} MB ≥ 3 GB/s", na(exc), None)
        return
    import blake3

    import persistmemo

    cache = persistmemo.Cache("memory://")

    @cache.memoize
    def analyse(arr):
        return float(arr.sum())

    arr = np.random.default_rng(0).random(cfg.key_mb * MB // 8)
    nbytes = arr.nbytes
    rows: dict[str, float | str] = {}
    with pinned(on=False):  # BLAKE3 hashes big buffers on every core
        rows["persistmemo f.cache_key(arr)"] = best_of(lambda: analyse.cache_key(arr),
                                                       cfg.key_repeat)
        view = memoryview(arr).cast("B")
        rows["raw blake3 (max_threads=AUTO)"] = best_of(
            lambda: blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest(), cfg.key_repeat)
        rows["raw blake3 (1 thread)"] = best_of(lambda: blake3.blake3(view).digest(),
                                                cfg.key_repeat)
        try:
            import joblib

            rows["joblib.hash(arr)"] = best_of(lambda: joblib.hash(arr), cfg.joblib_repeat)
        except Exception as exc:
            rows["joblib.hash(arr)"] = na(exc)
    jl = rows["joblib.hash(arr)"]
    for name, secs in rows.items():
        if isinstance(secs, str):
            t.add(name, secs, "", "")
            continue
        t.add(name, nbytes / secs / GB, secs * 1e3,
              ratio(jl, secs) if isinstance(jl, float) else "n/a")
    pm = rows["persistmemo f.cache_key(arr)"]
    check(report, "3", f"keying a {cfg.key_mb} MB array ≥ 3 GB/s",
          nbytes / pm / GB if isinstance(pm, float) else pm, 3.0, at_most=False, unit="GB/s")
    sec.notes.append(f"Best of {cfg.key_repeat} (joblib: {cfg.joblib_repeat}); the process may "
                     f"use all {len(_ALL_CPUS) or os.cpu_count()} cores here.")


# ---------------------------------------------------------------------------------------------
# 4. Storing and loading a 10 MB array result
# ---------------------------------------------------------------------------------------------


def bench_big_result(report: Report, cfg: Settings, tmp: Path, server: RedisServer | None
                     ) -> None:
    sec = report.section(4, f"A {cfg.result_mb} MB numpy result: store and load (GB/s)",
                         "`Codec.encode` / `Codec.decode` alone, and end to end through a "
                         "backend (encode + `backend.set`; `backend.get` + decode). A memory "
                         "copy of the array is the floor any store/load pays at least once.")
    t = sec.table("Operation", "GB/s", "ms")
    try:
        import numpy as np
    except Exception as exc:
        t.add("all", na(exc), "")
        report.target("4", f"store ≥ 1.5 GB/s / load ≥ 5 GB/s ({cfg.result_mb} MB result)",
                      na(exc), None)
        return
    import pickle

    import persistmemo

    arr = np.random.default_rng(1).random(cfg.result_mb * MB // 8)
    nbytes = arr.nbytes
    disk = persistmemo.Cache(tmp / "big-pm")
    codec = disk.codec
    key = "pm:1:default:bench.big:v-1:" + "0" * 64
    blob = codec.encode(arr, key=key, created=0.0, duration=0.0)
    assert np.array_equal(codec.decode(blob, key=key).value, arr)
    rows: dict[str, float | str] = {}
    n = cfg.result_repeat

    def e2e_set(backend: Any) -> Callable[[], Any]:
        return lambda: backend.set(key, codec.encode(arr, key=key, created=0.0, duration=0.0))

    def e2e_get(backend: Any) -> Callable[[], Any]:
        return lambda: codec.decode(backend.get(key), key=key).value

    redis_cache = None
    if server is not None:
        try:
            redis_cache = persistmemo.Cache(server.url)
            redis_cache.backend.set(key, blob)
        except Exception as exc:
            redis_cache = None
            rows["encode + Redis SET"] = rows["Redis GET + decode"] = na(exc)
    with pinned(on=False):
        rows["memory copy (arr.copy(), floor)"] = best_of(arr.copy, n)
        rows["Codec.encode"] = best_of(
            lambda: codec.encode(arr, key=key, created=0.0, duration=0.0), n)
        rows["encode + disk set"] = best_of(e2e_set(disk.backend), n)
        rows["disk set alone (pre-encoded, context)"] = best_of(
            lambda: disk.backend.set(key, blob), n)
        if redis_cache is not None:
            rows["encode + Redis SET"] = best_of(e2e_set(redis_cache.backend), n)
            rows["Redis SET alone (pre-encoded, context)"] = best_of(
                lambda: redis_cache.backend.set(key, blob), n)
        rows["pickle.dumps (protocol 5, context)"] = best_of(
            lambda: pickle.dumps(arr, protocol=5), n)
        rows["Codec.decode"] = best_of(lambda: codec.decode(blob, key=key).value, n)
        disk.backend.set(key, blob)
        rows["disk get + decode"] = best_of(e2e_get(disk.backend), n)
        rows["disk get alone (context)"] = best_of(lambda: disk.backend.get(key), n)
        if redis_cache is not None:
            redis_cache.backend.set(key, blob)
            rows["Redis GET + decode"] = best_of(e2e_get(redis_cache.backend), n)
            rows["Redis GET alone (context)"] = best_of(lambda: redis_cache.backend.get(key), n)
        pickled = pickle.dumps(arr, protocol=5)
        rows["pickle.loads (context)"] = best_of(lambda: pickle.loads(pickled), n)
    for name, secs in rows.items():
        if isinstance(secs, str):
            t.add(name, secs, "")
        else:
            t.add(name, nbytes / secs / GB, secs * 1e3)

    def gbs(name: str) -> float | str:
        v = rows.get(name, "n/a (no Redis)")
        return nbytes / v / GB if isinstance(v, float) else v

    for name in ("Codec.encode", "encode + disk set", "encode + Redis SET"):
        check(report, "4", f"store {cfg.result_mb} MB result: {name} ≥ 1.5 GB/s", gbs(name),
              1.5, at_most=False, unit="GB/s")
    for name in ("Codec.decode", "disk get + decode", "Redis GET + decode"):
        check(report, "4", f"load {cfg.result_mb} MB result: {name} ≥ 5 GB/s", gbs(name), 5.0,
              at_most=False, unit="GB/s")
    sec.notes.append(f"Best of {n}. `Codec.decode` verifies the BLAKE3 check over the whole "
                     "entry and returns a writable array (one copy out of the stored bytes).")
    disk.close()
    if redis_cache is not None:
        redis_cache.close()


# ---------------------------------------------------------------------------------------------
# 5. Import time and the first hit of a fresh process
# ---------------------------------------------------------------------------------------------

_IMPORT_ONLY = """\
import time
t0 = time.perf_counter()
import persistmemo
t1 = time.perf_counter()
import sys
print(repr((t1 - t0, "numpy" in sys.modules, "redis" in sys.modules, persistmemo.__file__,
            len(sys.modules))))
"""

_PM_FIRST_HIT = """\
import time
t0 = time.perf_counter()
import persistmemo
cache = persistmemo.Cache({dir!r})
calls = []

@cache.memoize
def f(x):
    calls.append(x)
    return x * 2

v = f(1)
t1 = time.perf_counter()
print(repr((t1 - t0, v, len(calls))))
"""

_DC_FIRST_HIT = """\
import time
t0 = time.perf_counter()
import diskcache
cache = diskcache.Cache({dir!r})
calls = []

@cache.memoize()
def f(x):
    calls.append(x)
    return x * 2

v = f(1)
t1 = time.perf_counter()
print(repr((t1 - t0, v, len(calls))))
"""


def bench_import(report: Report, cfg: Settings, tmp: Path) -> None:
    import ast

    sec = report.section(5, "Fresh process: import time and first hit",
                         "Each measurement is a new interpreter (`.pyc` files warmed first, "
                         "written under a private `PYTHONPYCACHEPREFIX`); the time is taken "
                         "inside the child from before the first import to after the first "
                         "call, best of N runs. Wall time includes interpreter start-up.")
    work = tmp / "import"
    work.mkdir()
    scripts = {
        "import persistmemo": _IMPORT_ONLY,
        "persistmemo: import + Cache + decorate + first hit": _PM_FIRST_HIT.format(
            dir=str(work / "pm-cache")),
        "diskcache: import + Cache + memoize + first hit": _DC_FIRST_HIT.format(
            dir=str(work / "dc-cache")),
        "python -c pass (start-up only)": "",
    }
    paths = {}
    for i, (name, src) in enumerate(scripts.items()):
        p = work / f"bench_import_{i}.py"
        p.write_text(src)
        paths[name] = p
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

    def run(name: str) -> tuple[float, tuple[Any, ...] | None]:
        t0 = _now()
        proc = subprocess.run([sys.executable, str(paths[name])], capture_output=True,
                              text=True, env=env, cwd=str(work), timeout=120)
        wall = _now() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                               else f"exit {proc.returncode}")
        out = proc.stdout.strip()
        return wall, (ast.literal_eval(out) if out else None)

    best: dict[str, tuple[float, float] | str] = {}
    info: dict[str, tuple[Any, ...]] = {}
    with pinned():
        for name in scripts:  # warm-up: writes the .pyc files and fills both caches
            try:
                run(name)
                run(name)
                best[name] = (float("inf"), float("inf"))
            except Exception as exc:
                best[name] = na(exc)
        for _ in range(cfg.import_runs):
            for name in scripts:
                cur = best[name]
                if isinstance(cur, str):
                    continue
                try:
                    wall, out = run(name)
                except Exception as exc:
                    best[name] = na(exc)
                    continue
                inner = out[0] if out else wall
                best[name] = (min(cur[0], inner), min(cur[1], wall))
                if out:
                    info[name] = out
    t = sec.table("Fresh process", "in-process ms", "wall ms (incl. start-up)", "notes",
                  left=(0, 3))
    notes = {}
    imp = info.get("import persistmemo")
    if imp:
        notes["import persistmemo"] = (f"numpy imported: {imp[1]}; redis imported: {imp[2]}; "
                                       f"{imp[4]} modules loaded")
    for key in ("persistmemo: import + Cache + decorate + first hit",
                "diskcache: import + Cache + memoize + first hit"):
        if key in info:
            notes[key] = "hit (function not called)" if info[key][2] == 0 else \
                f"MISS: the function ran {info[key][2]} time(s)"
    for name in scripts:
        v = best[name]
        if isinstance(v, str):
            t.add(name, v, "", "")
        elif name.startswith("python -c"):
            t.add(name, "", v[1] * 1e3, "interpreter start-up")
        else:
            t.add(name, v[0] * 1e3, v[1] * 1e3, notes.get(name, ""))
    pmv = best["persistmemo: import + Cache + decorate + first hit"]
    dcv = best["diskcache: import + Cache + memoize + first hit"]
    r = ratio(pmv[0], dcv[0]) if not isinstance(pmv, str) and not isinstance(dcv, str) else "n/a"
    t.add("persistmemo / diskcache (import + first hit)", r, "", "target < 1.15x")
    iv = best["import persistmemo"]
    check(report, "5a", "`import persistmemo` < 15 ms",
          iv[0] * 1e3 if not isinstance(iv, str) else iv, 15.0, unit="ms")
    if imp:
        report.target("5b", "`import persistmemo` imports neither numpy nor redis",
                      f"numpy: {'yes' if imp[1] else 'no'}, redis: {'yes' if imp[2] else 'no'}",
                      not imp[1] and not imp[2])
    else:
        report.target("5b", "`import persistmemo` imports neither numpy nor redis", "n/a", None)
    check(report, "5c", "fresh import + first hit < 1.15x diskcache's",
          pmv[0] / dcv[0] if not isinstance(pmv, str) and not isinstance(dcv, str) else "n/a",
          1.15)
    sec.notes.append(f"Best of {cfg.import_runs} processes each. persistmemo's first call also "
                     "fingerprints the function's source (`inspect.getsource` + `ast`).")


# ---------------------------------------------------------------------------------------------
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
    check(report, "6", "Redis hit ≤ 1.15x raw redis-py GET",
          pmv / gv if isinstance(pmv, float) and isinstance(gv, float) else "n/a", 1.15)
    sec.notes.append(f"redis-server pinned to CPU {sorted(_PIN['redis'] or [])}, the benchmark "
                     f"to CPU {sorted(_PIN['bench'] or [])}.")
    client.close()
    cache.close()


# ---------------------------------------------------------------------------------------------
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
    check(report, "7", "Redis miss with lock ≤ 3 round trips",
          float(n_lock) if n_lock is not None else trips["lock"], 3, unit="round trips")
    sec.notes.append(f"{cfg.miss_calls} misses per batch, best of {cfg.miss_repeat}. "
                     "Server-side counts include the commands a Lua script runs (the release "
                     "script's GET and DEL).")
    admin.close()
    client.close()
    cache.close()


# ---------------------------------------------------------------------------------------------
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
        check(report, "8", f"f.map speed-up on {name} ≥ 20x",
              s / m if isinstance(m, float) and isinstance(s, float) else "n/a", 20.0,
              at_most=False)
    sec.notes.append("Single calls hit the key memo of small arguments; both sides decode "
                     f"{cfg.map_n} entries. The floor uses the backend's own `get_many` (Redis: "
                     "one `MGET`; disk: one indexed `SELECT ... IN (...)` per 500 keys).")


# ---------------------------------------------------------------------------------------------
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
        check(report, "9", f"fail-open, {name}: first call ≤ 0.6 s (0.5 s timeouts)",
              max(firsts), 0.6, unit="s")
        check(report, "9", f"fail-open, {name}: later calls add < 50 µs (≈ 0)",
              (later - plain) if isinstance(later, float) and isinstance(plain, float)
              else "n/a", 50.0, unit="µs")

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
                server_box.append(RedisServer(redis_exe, tmp / "redis-paused"))
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
                check(report, "10", f"takeover after SIGKILL ({name}) ≤ lock_ttl + 0.1 s",
                      max(leases), 2.1, unit="s")
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
# Main
# ---------------------------------------------------------------------------------------------


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def render(report: Report, machine: str, command: str, elapsed: float, revision: str,
           loads: tuple[str, str]) -> str:
    parts = [
        "# Benchmarks",
        "<!-- generated by benchmarks/run.py: edit the script, not this file -->",
        f"**Machine:** {machine}. Load average (1/5/15 min) {loads[0]} at the start and "
        f"{loads[1]} at the end of the run (other processes share the machine).",
        f"**Command:** `{command}` (persistmemo revision {revision}; "
        f"run on {time.strftime('%Y-%m-%d %H:%M %Z')} in {elapsed:.0f} s)",
        "Method: every figure is the minimum over several repeats of a batch of many calls "
        "(best-of-N filters out the noise of other processes); the contenders of a table are "
        "measured in the same run, interleaved, so ratios are fair. Lower µs is better, higher "
        "GB/s is better. Reproduce with the command above; see `benchmarks/README.md`.",
        "## Targets",
        report.targets_table().markdown(),
        "## Results",
        *(s.markdown() for s in report.sections),
    ]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and fewer repeats (under a minute)")
    parser.add_argument("--redis", action=argparse.BooleanOptionalAction, default=None,
                        help="start a private redis-server for the Redis benchmarks "
                             "(default: on if redis-server is on PATH)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="markdown file to write ('-': don't write)")
    parser.add_argument("--only", default="",
                        help="comma-separated section numbers to run (default: all)")
    parser.add_argument("--no-pin", action="store_true",
                        help="don't pin the benchmark and redis-server to fixed CPUs")
    args = parser.parse_args(argv)
    cfg = Settings(args.quick)
    only = {int(x) for x in args.only.split(",") if x.strip()} if args.only else set(range(1, 11))
    redis_exe = shutil.which("redis-server")
    use_redis = (redis_exe is not None) if args.redis is None else args.redis
    if use_redis and redis_exe is None:
        print("--redis given but redis-server is not on PATH: Redis benchmarks are n/a",
              file=sys.stderr)
    if not args.no_pin and len(_ALL_CPUS) >= 2:
        # One core for both: a loopback round trip between two cores of a VM pays two
        # cross-core wake-ups (measured here: ~150 µs per GET split across cores vs ~50 µs on one).
        core = {max(_ALL_CPUS)}
        _PIN["redis"], _PIN["bench"] = core, core
    quiet_logging()
    import warnings

    warnings.simplefilter("ignore")  # peers' deprecation chatter
    started = _now()
    load_start = loadavg()
    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="persistmemo-bench-"))
    server: RedisServer | None = None
    server_error = "n/a (no redis-server: pass --redis with redis-server on PATH)"
    try:
        if use_redis and redis_exe is not None:
            try:
                server = RedisServer(redis_exe, tmp / "redis")
            except Exception as exc:
                server_error = na(exc)

        def run(number: int, title: str, fn: Callable[[], None]) -> None:
            if number not in only:
                return
            print(f"[{_now() - started:6.1f}s] {number}. {title} ...", file=sys.stderr,
                  flush=True)
            try:
                fn()
            except Exception as exc:  # a whole section failed: report it, keep going
                traceback.print_exc()
                report.section(number, title).notes.append(na(exc))

        def needs_redis(fn: Callable[[RedisServer], None], number: int, title: str
                        ) -> Callable[[], None]:
            def go() -> None:
                if server is None:
                    report.section(number, title).notes.append(server_error)
                    report.target(str(number), title, server_error, None)
                    return
                fn(server)
            return go

        run(1, "disk hit", lambda: bench_disk_hit(report, cfg, tmp))
        run(2, "disk miss", lambda: bench_disk_miss(report, cfg, tmp))
        run(3, "keying a big array", lambda: bench_keying(report, cfg, tmp))
        run(4, "big result", lambda: bench_big_result(report, cfg, tmp, server))
        run(5, "import time", lambda: bench_import(report, cfg, tmp))
        run(6, "Redis hit", needs_redis(lambda s: bench_redis_hit(report, cfg, s), 6,
                                        "Redis hit"))
        run(7, "Redis miss", needs_redis(lambda s: bench_redis_miss(report, cfg, s), 7,
                                         "Redis miss round trips"))
        run(8, "f.map", lambda: bench_map(report, cfg, tmp, server))
        run(9, "fail-open", lambda: bench_fail_open(report, cfg, tmp,
                                                     redis_exe if use_redis else None))
        run(10, "stampede", lambda: bench_stampede(report, cfg, tmp, server))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = _now() - started
    report.sections.sort(key=lambda s: s.number)
    command = "python benchmarks/run.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    text = render(report, machine_line(redis_exe), command, elapsed, git_revision(),
                  (load_start, loadavg()))
    print(text)
    if args.out != "-":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
