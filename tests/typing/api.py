"""Type-checked, never run: the public API's static types (checked by mypy in .ci/run)."""

from __future__ import annotations

import persistmemo
from persistmemo import Cache, CacheInfo, memoize


@memoize
def add(a: int, b: int = 1) -> int:
    return a + b


@memoize(ttl=60, ignore=["verbose"])
def scale(x: float, verbose: bool = False) -> float:
    return x * 2


cache = Cache("memory://")


@cache.memoize
def upper(s: str) -> str:
    return s.upper()


@cache.memoize(ignore_deps=("counter",), depends_on=(persistmemo,))
def tracked(x: int) -> int:
    return x


@cache.memoize(version=2)
async def fetch(url: str) -> bytes:
    return url.encode()


def uses() -> None:
    total: int = add(1, b=2)
    half: float = scale(1.5)
    text: str = upper("x")
    key: str = add.cache_key(1)
    gone: bool = add.invalidate(1)
    cleared: int = upper.cache_clear()
    info: CacheInfo = add.cache_info()
    again: int = add.refresh(3)
    batch: list[int] = add.map([(1,), (2, 3)])
    hits: int = info.hits + info.misses
    deps: dict[str, persistmemo.Dependency] = tracked.dependencies()
    kind: str = deps["x"].kind
    del total, half, text, key, gone, cleared, again, batch, hits, kind
    add("no")  # type: ignore[arg-type]
    upper(1)  # type: ignore[arg-type]
    persistmemo.set_default_cache(cache)
    why: persistmemo.Explanation = add.explain(1, b=2)
    stored: bool = why.hit
    kinds: list[str] = [r.kind for r in why.reasons]
    shown: list[int] = add.map([1, 2], progress=True)
    with persistmemo.disabled():
        add(1)
    del why, stored, kinds, shown


@persistmemo.disabled()
def without_cache() -> int:
    return add(1)


tiered = Cache("memory://", local="memory", local_max_bytes=1 << 20, local_ttl=30)


async def uses_async() -> None:
    body: bytes = await fetch("u")
    bodies: list[bytes] = await fetch.map(["u", "v"])
    again: bytes = await fetch.refresh("u")
    ok: bool = isinstance(fetch, persistmemo.AsyncMemoized)
    del body, bodies, again, ok


big = Cache("memory://", compress="zstd:9", compress_threshold=1 << 20, mmap=True)


@persistmemo.memoize(cache=big, mmap=False, compress=False)
def arrays(n: int) -> list[float]:
    return [0.0] * n


def uses_big() -> None:
    values: list[float] = arrays(3)
    del values
