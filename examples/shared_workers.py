"""Several worker processes share one persistmemo cache: each input is computed once, in total.

Every worker computes an expensive function over its own range of inputs; the ranges overlap.
A worker reuses what any other worker already stored, and when two workers want the same
input at the same moment, one computes while the other waits for the result (stampede
protection), so the workers together compute each distinct input exactly once.

Launch a small demo (worker processes started by this script)::

    python examples/shared_workers.py                        # 2 workers, local directory
    python examples/shared_workers.py --url redis://localhost:6379/0 --workers 3

Run one worker (this is what ``docker compose up`` does, twice, against one Redis)::

    PERSISTMEMO_URL=redis://redis:6379/0 python examples/shared_workers.py --worker \\
        --name worker-a --inputs 0-59

The cache is ``--url``, else the project's, found as the ``persistmemo`` command finds it:
``$PERSISTMEMO_URL``, else ``url`` in ``[tool.persistmemo]`` of the nearest ``pyproject.toml``
(``examples/.persistmemo-cache`` in this repository), else the user cache directory. Each
worker prints ``RESULT {json}`` as its last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import persistmemo

NAMESPACE = "shared-workers-demo"
COST = float(os.environ.get("SHARED_WORKERS_COST", "0.2"))  # seconds per computation
computed: list[int] = []  # inputs whose body ran in this process


@persistmemo.memoize(namespace=NAMESPACE)
def expensive(x: int) -> tuple[int, str]:
    """Stand-in for a slow computation: sleep, then hash the input many times."""
    computed.append(x)
    time.sleep(COST)
    digest = str(x).encode()
    for _ in range(1000):
        digest = hashlib.sha256(digest).digest()
    return x, digest.hex()[:16]


def parse_inputs(spec: str) -> list[int]:
    """Parse ``"0-59"`` or ``"1,4,10-19"`` (ranges inclusive) into a list of ints."""
    values: list[int] = []
    for part in spec.split(","):
        first, sep, last = part.strip().partition("-")
        lo, hi = int(first), int(last) if sep else int(first)
        values.extend(range(lo, hi + 1))
    return values


def location(url: str | None) -> str:
    """Return the cache location: ``--url``, else the project's (as ``persistmemo`` finds it)."""
    from persistmemo.config import default_location

    return url or default_location()


def shown(url: str) -> str:
    """Return a cache location for printing, with any password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
                          ).geturl()


def run_worker(name: str, inputs: list[int], url: str, reverse: bool) -> dict[str, object]:
    """Call ``expensive`` on every input; print and return what was computed vs reused."""
    persistmemo.set_default_cache(url)
    order = list(reversed(inputs)) if reverse else inputs
    print(f"{name}: {len(order)} inputs {order[0]}..{order[-1]} on the shared cache", flush=True)
    start = time.perf_counter()
    for x in order:
        expensive(x)
    info = expensive.cache_info()
    report = {
        "worker": name,
        "inputs": len(order),
        "computed": len(computed),
        "reused": info.hits,
        "waited": info.lock_waits,
        "seconds": round(time.perf_counter() - start, 3),
    }
    print(f"{name}: computed {len(computed)}, reused {info.hits} computed by others or earlier "
          f"(waited for another worker {info.lock_waits} times) in {report['seconds']} s",
          flush=True)
    print("RESULT " + json.dumps(report), flush=True)
    return report


def plan(workers: int, size: int, overlap: int) -> list[list[int]]:
    """Give worker i the inputs [i*(size-overlap), ... + size): neighbours share ``overlap``."""
    step = size - overlap
    return [list(range(i * step, i * step + size)) for i in range(workers)]


def launch(args: argparse.Namespace, url: str) -> int:
    """Start the workers as separate processes on one cache; check the totals."""
    persistmemo.set_default_cache(url)
    if not args.keep:
        print(f"cleared {expensive.cache_clear()} stored results (use --keep to keep them)")
    ranges = plan(args.workers, args.size, args.overlap)
    distinct = len({x for r in ranges for x in r})
    env = {**os.environ, "PERSISTMEMO_URL": url, "SHARED_WORKERS_COST": str(COST)}
    procs = []
    for i, inputs in enumerate(ranges):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--name",
               f"worker-{chr(ord('a') + i)}", "--inputs", f"{inputs[0]}-{inputs[-1]}"]
        if i % 2:
            cmd.append("--reverse")  # meet the neighbour in the middle of the overlap
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    reports = []
    for proc in procs:
        out, _ = proc.communicate()
        for line in out.splitlines():
            if line.startswith("RESULT "):
                reports.append(json.loads(line[len("RESULT "):]))
            else:
                print(line)
        if proc.returncode:
            print(f"a worker failed with exit status {proc.returncode}", file=sys.stderr)
            return 1
    total = sum(r["computed"] for r in reports)
    reused = sum(r["reused"] for r in reports)
    print(f"total: {len(reports)} workers, {sum(r['inputs'] for r in reports)} calls, "
          f"{distinct} distinct inputs, computed {total}, reused {reused}")
    if args.keep:
        return 0
    if total != distinct:
        print(f"unexpected: computed {total} != {distinct} distinct inputs", file=sys.stderr)
        return 1
    print("every distinct input was computed exactly once across all workers")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; run one worker or launch several."""
    global COST
    parser = argparse.ArgumentParser(description="Worker processes sharing one cache.")
    parser.add_argument("--url", help="cache location: redis:// URL or directory "
                        "(default: $PERSISTMEMO_URL, else [tool.persistmemo] url)")
    parser.add_argument("--cost", type=float, default=COST,
                        help=f"seconds each computation takes (default {COST})")
    worker = parser.add_argument_group("one worker (used by docker compose)")
    worker.add_argument("--worker", action="store_true", help="run as one worker")
    worker.add_argument("--name", default=f"worker-{os.getpid()}")
    worker.add_argument("--inputs", default="0-19", help='e.g. "0-59" or "1,5,10-19"')
    worker.add_argument("--reverse", action="store_true", help="go through the inputs backwards")
    demo = parser.add_argument_group("launcher (default)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    demo.add_argument("--size", type=int, default=20, help="inputs per worker (default 20)")
    demo.add_argument("--overlap", type=int, default=10,
                      help="inputs shared with the next worker (default 10)")
    demo.add_argument("--keep", action="store_true",
                      help="keep earlier results (then the workers reuse them all)")
    args = parser.parse_args(argv)
    COST = args.cost
    url = location(args.url)
    if args.worker:
        run_worker(args.name, parse_inputs(args.inputs), url, args.reverse)
        return 0
    if not (args.workers >= 1 and 0 <= args.overlap < args.size):
        parser.error("need --workers >= 1 and 0 <= --overlap < --size")
    print(f"cache: {shown(url)}")
    return launch(args, url)


if __name__ == "__main__":
    sys.exit(main())
