"""The benchmark harness: settings, timing, the report model, pinning, machine line."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import itertools
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from persistmemo.testing import RedisServer

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


def check(report: Report, tid: str, value: float | str | None, **fields: Any) -> None:
    """Record target ``tid`` of benchmarks/targets.py for a measured value (a string: n/a)."""
    from benchmarks.targets import TARGETS

    text, limit, at_most, unit = TARGETS[tid]
    text = text.format(**fields)
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


# A private redis-server: the launcher the test suite uses too (persistmemo.testing)
# ---------------------------------------------------------------------------------------------


def start_redis(exe: str, workdir: Path) -> RedisServer:
    """Start redis-server on a free loopback port, pinned to the benchmark's core."""
    return RedisServer(exe, workdir, "--loglevel", "warning", "--protected-mode", "no",
                       cpus=_PIN["redis"])


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


