"""Run the scenarios, print the report with every target, write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import (
    _ALL_CPUS,
    _PIN,
    ROOT,
    RedisServer,
    Report,
    Settings,
    _now,
    git_revision,
    loadavg,
    machine_line,
    na,
    quiet_logging,
    render,
    start_redis,
)
from benchmarks.scenarios import (
    big_result,
    disk_hit,
    disk_miss,
    fail_open,
    imports,
    keying,
    map,
    recursion,
    redis_hit,
    redis_miss,
    stampede,
    tiers,
)


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
    only = {int(x) for x in args.only.split(",") if x.strip()} if args.only else set(range(1, 13))
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
                server = start_redis(redis_exe, tmp / "redis")
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

        run(1, "disk hit", lambda: disk_hit.bench_disk_hit(report, cfg, tmp))
        run(2, "disk miss", lambda: disk_miss.bench_disk_miss(report, cfg, tmp))
        run(3, "keying a big array", lambda: keying.bench_keying(report, cfg, tmp))
        run(4, "big result", lambda: big_result.bench_big_result(report, cfg, tmp, server))
        run(5, "import time", lambda: imports.bench_import(report, cfg, tmp))
        run(6, "Redis hit", needs_redis(lambda s: redis_hit.bench_redis_hit(report, cfg, s), 6,
                                        "Redis hit"))
        run(7, "Redis miss", needs_redis(lambda s: redis_miss.bench_redis_miss(report, cfg, s), 7,
                                         "Redis miss round trips"))
        run(8, "f.map", lambda: map.bench_map(report, cfg, tmp, server))
        run(9, "fail-open", lambda: fail_open.bench_fail_open(report, cfg, tmp,
                                                     redis_exe if use_redis else None))
        run(10, "stampede", lambda: stampede.bench_stampede(report, cfg, tmp, server))
        run(11, "local tier", lambda: tiers.bench_tiers(report, cfg, tmp, server))
        run(12, "deep recursion", lambda: recursion.bench_recursion(report, cfg, tmp))
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


