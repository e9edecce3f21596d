"""Deep-learning values: keying and store/load GB/s, persistmemo vs joblib.Memory.

For a 100 MB float32 tensor, a 100 MB numeric DataFrame and a 100 MB-parameter nn.Module:

- keying: ``f.cache_key(value)`` (persistmemo: canonical form, buffers hashed in place with
  BLAKE3) vs ``joblib.hash(value)`` (what joblib.Memory keys with: a pickle stream hashed);
- store: the first call of a memoized identity-like function (the function itself is free),
  i.e. keying + encoding + writing; load: the second call (keying + reading + decoding);
- Redis (when ``redis-server`` is on PATH): 100 MB tensor store and load over loopback.

Run (about 30-60 s; sizes are configurable)::

    python benchmarks/deep_learning.py               # 100 MB values, prints a markdown table
    python benchmarks/deep_learning.py --mb 20       # smaller values, faster

Each figure is the best of ``--repeat`` runs (default 3), in GB/s of the value's raw size.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Smallest wall time of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def make_values(mb: int) -> dict[str, tuple[Any, int]]:
    """The three values of about ``mb`` MB each, with their raw sizes in bytes."""
    import numpy as np
    import pandas as pd
    import torch

    n = mb * 1_000_000 // 4
    tensor = torch.randn(n)
    cols = 10
    frame = pd.DataFrame({f"c{i}": np.random.default_rng(i).random(mb * 1_000_000 // 8 // cols)
                          for i in range(cols)})
    width = 1000
    layers = max(1, n // (width * width))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"tensor (float32)": (tensor, tensor.numel() * 4),
            "DataFrame (10 float64 columns)": (frame, int(frame.memory_usage(index=False).sum())),
            f"nn.Module ({layers} Linear layers)": (model, model_bytes)}


def keying(values: dict[str, tuple[Any, int]], repeat: int) -> list[tuple[str, str, float]]:
    """Keying GB/s of persistmemo and joblib.hash for each value."""
    import joblib

    import persistmemo

    f = persistmemo.memoize(cache=persistmemo.Cache("memory://"))(lambda v: None)
    rows = []
    for name, (value, size) in values.items():
        rows.append((name, "persistmemo key", size / best_of(lambda v=value: f.cache_key(v),
                                                             repeat) / 1e9))
        rows.append((name, "joblib.hash", size / best_of(lambda v=value: joblib.hash(v),
                                                         repeat) / 1e9))
    return rows


def store_load(values: dict[str, tuple[Any, int]], repeat: int,
               redis_url: str | None) -> list[tuple[str, str, float, float]]:
    """Store and load GB/s of a memoized identity function, persistmemo vs joblib.Memory."""
    import joblib

    import persistmemo

    rows = []
    for name, (value, size) in values.items():
        result = value.state_dict() if hasattr(value, "state_dict") else value
        label = name + (" -> state_dict()" if result is not value else "")
        stores: list[tuple[str, Callable[[str], Any]]] = [
            ("persistmemo disk", lambda d: persistmemo.Cache(d).memoize(lambda v: result)),
            ("joblib.Memory", lambda d: joblib.Memory(d, verbose=0).cache(lambda v: result)),
        ]
        if redis_url and "tensor" in name:
            stores.append(("persistmemo redis",
                           lambda d: persistmemo.Cache(redis_url).memoize(lambda v: result)))
        for store, make in stores:
            st = ld = float("inf")
            for _ in range(repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    func = make(tmp)
                    if store.endswith("redis"):
                        func.cache_clear()
                    start = time.perf_counter()
                    func(value)
                    st = min(st, time.perf_counter() - start)
                    ld = min(ld, best_of(lambda f=func: f(value), 2))
            rows.append((label, store, size / st / 1e9, size / ld / 1e9))
    return rows


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    """Run the benchmark and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="size of each value in MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    values = make_values(args.mb)
    print(f"## Keying ({args.mb} MB values, GB/s, best of {args.repeat})\n")
    print("| value | keyed by | GB/s |\n|---|---|---|")
    for name, who, gbs in keying(values, args.repeat):
        print(f"| {name} | {who} | {gbs:.2f} |")
    server = None
    redis_url = None
    if not args.no_redis and shutil.which("redis-server"):
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                   "--appendonly", "no", "--dir", tempfile.gettempdir()],
                                  stdout=subprocess.DEVNULL)
        redis_url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.3)
    try:
        rows = store_load(values, args.repeat, redis_url)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    print(f"\n## Store / load through a memoized function ({args.mb} MB, GB/s)\n")
    print("| value | store | store GB/s | load GB/s |\n|---|---|---|---|")
    for label, store, st, ld in rows:
        print(f"| {label} | {store} | {st:.2f} | {ld:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
