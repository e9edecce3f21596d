"""Deep-learning values: keying and store/load GB/s, persistmemo vs joblib.Memory.

For a 100 MB float32 tensor, a 100 MB numeric DataFrame and a 100 MB-parameter nn.Module:

- keying: ``f.cache_key(value)`` (persistmemo: canonical form, buffers hashed in place with
  BLAKE3) vs ``joblib.hash(value)`` (what joblib.Memory keys with: a pickle stream hashed);
- store: the first call of a memoized identity-like function (the function itself is free),
  i.e. keying + encoding + writing; load: the second call (keying + reading + decoding);
- Redis (when ``redis-server`` is on PATH): 100 MB tensor store and load over loopback;
- ``mmap=True``: load time of a 1 GB float32 array from the directory store (first hit in a
  process, which verifies the file, and the next ones), against a normal hit;
- ``compress="zstd"``: stored size and store/load time of a DataFrame and float32 embeddings.

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
            ("persistmemo disk",
             lambda d, r=result: persistmemo.Cache(d).memoize(lambda v: r)),
            ("joblib.Memory",
             lambda d, r=result: joblib.Memory(d, verbose=0).cache(lambda v: r)),
        ]
        if redis_url and "tensor" in name:
            stores.append(("persistmemo redis",
                           lambda d, r=result: persistmemo.Cache(redis_url).memoize(
                               lambda v: r)))
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
                    ld = min(ld, best_of(lambda f=func, v=value: f(v), 2))
            rows.append((label, store, size / st / 1e9, size / ld / 1e9))
    return rows


def mmap_load(mb: int, repeat: int) -> list[tuple[str, float]]:
    """Seconds to load a ``mb`` MB float32 array: normal hit, first and later mmap hits."""
    import numpy as np

    import persistmemo

    arr = np.random.default_rng(0).random(mb * 1_000_000 // 4, dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = persistmemo.Cache(tmp)
        plain = cache.memoize(version=1)(lambda n: arr)
        mapped = cache.memoize(version=1, mmap=True)(lambda n: arr)
        plain(mb)  # both share the entry (same identity and version)
        rows.append((f"normal hit, {mb} MB", best_of(lambda: plain(mb), repeat)))
        start = time.perf_counter()
        mapped(mb)
        rows.append((f"mmap=True first hit (verifies), {mb} MB", time.perf_counter() - start))
        rows.append((f"mmap=True later hits, {mb} MB", best_of(lambda: mapped(mb), repeat)))
    return rows


def compression(repeat: int) -> list[tuple[str, str, int, float, float]]:
    """Stored bytes and store/load seconds with and without zstd on two realistic values."""
    import numpy as np
    import pandas as pd

    import persistmemo

    rng = np.random.default_rng(0)
    n = 1_000_000
    frame = pd.DataFrame({"user": rng.integers(0, 50_000, n), "score": rng.random(n).round(3),
                          "country": rng.choice(["fr", "de", "us", "jp"], n),
                          "ts": pd.date_range("2024-01-01", periods=n, freq="s")})
    emb = rng.standard_normal((50_000, 384)).astype(np.float32)
    rows = []
    for name, value in (("DataFrame 1M rows x 4", frame), ("float32 embeddings 50k x 384", emb)):
        for spec in (None, "zstd", "zstd:9"):
            with tempfile.TemporaryDirectory() as tmp:
                cache = persistmemo.Cache(tmp, compress=spec)
                f = cache.memoize(ignore=["r"])(lambda v, r=value: r)
                start = time.perf_counter()
                f(1)
                st = time.perf_counter() - start
                size = len(cache.backend.get(f.cache_key(1)))
                ld = best_of(lambda f=f: f(1), repeat)
            rows.append((name, spec or "none", size, st, ld))
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
    parser.add_argument("--mmap-mb", type=int, default=1000, help="array size for mmap")
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
    del values
    print(f"\n## mmap=True ({args.mmap_mb} MB float32 array, directory store)\n")
    print("| load | ms |\n|---|---|")
    for label, secs in mmap_load(args.mmap_mb, args.repeat):
        print(f"| {label} | {secs * 1000:.2f} |")
    print("\n## compress (directory store)\n")
    print("| value | compress | stored MB | store s | load s |\n|---|---|---|---|---|")
    for name, spec, size, st, ld in compression(args.repeat):
        print(f"| {name} | {spec} | {size / 1e6:.1f} | {st:.3f} | {ld:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
