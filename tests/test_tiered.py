"""The local tier: Cache(location, local="memory" | <dir>) in front of a shared store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis_fixtures import RedisServer, command, free_port

from persistmemo import Cache
from persistmemo.backends.base import MISSING
from persistmemo.backends.disk import DiskBackend
from persistmemo.backends.memory import MemoryBackend
from persistmemo.backends.tiered import TieredBackend
from persistmemo.errors import ConfigurationError
from persistmemo.testing import BackendContract


class TestTieredContract(BackendContract):
    """A tiered store is a backend: it passes the whole contract suite."""

    @pytest.fixture(params=["memory+memory", "disk+memory", "memory+redis"])
    def backend(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
        """Each local tier in front of each kind of shared store."""
        local_kind, shared_kind = request.param.split("+")
        local: Any = MemoryBackend() if local_kind == "memory" else DiskBackend(tmp_path / "l")
        if shared_kind == "redis":
            from persistmemo.backends.redis import RedisBackend

            shared: Any = RedisBackend(request.getfixturevalue("redis_url"))
            shared.clear("")
        else:
            shared = MemoryBackend()
        tier = TieredBackend(local, shared, local_ttl=60)
        yield tier
        tier.close()


def _counted(cache: Cache, **opts: Any) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cache.memoize(**opts)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    return square, calls


def _commands(port: int) -> int:
    info = command(port, "INFO", "stats").decode()
    return int(info.split("total_commands_processed:")[1].split()[0])


def test_repeated_hits_make_no_round_trip(fresh_redis: RedisServer) -> None:
    """Redis + local="memory": after the first hit, hits never reach Redis."""
    cache = Cache(fresh_redis.url, local="memory")
    square, calls = _counted(cache)
    assert square(3) == 9 and square(3) == 9
    before = _commands(fresh_redis.port)
    assert [square(3) for _ in range(100)] == [9] * 100
    assert _commands(fresh_redis.port) - before == 1  # the INFO command itself
    assert calls == [3] and square.cache_info().hits == 101


def test_shared_hits_are_promoted(tmp_path: Path) -> None:
    """Another worker's result is read from the shared store once, then locally."""
    shared = MemoryBackend()
    a = Cache(TieredBackend(MemoryBackend(), shared))
    b = Cache(TieredBackend(MemoryBackend(), shared))
    fa, calls = _counted(a)
    fb, _ = _counted(b)
    assert fa(4) == 16 and fb(4) == 16 and calls == [4]
    key = fb.cache_key(4)
    assert isinstance(b.backend, TieredBackend)
    assert b.backend.local.get(key) is not MISSING


def test_staleness_bounded_by_local_ttl() -> None:
    """After another worker invalidates, a local copy is served for at most local_ttl."""
    shared = MemoryBackend()
    a = Cache(TieredBackend(MemoryBackend(), shared, local_ttl=0.4))
    b = Cache(TieredBackend(MemoryBackend(), shared, local_ttl=0.4))
    fa, calls_a = _counted(a)
    fb, calls_b = _counted(b)
    assert fa(2) == 4 and fb(2) == 4 and calls_b == []
    assert fa.invalidate(2)
    assert fb(2) == 4 and calls_b == []  # still trusted locally
    time.sleep(0.5)
    assert fb(2) == 4 and calls_b == [2]  # local copy expired: recomputed


def test_local_copy_never_outlives_the_entry_ttl(fresh_redis: RedisServer) -> None:
    """A promoted copy expires with the shared entry's own TTL, not local_ttl."""
    a = Cache(fresh_redis.url, local="memory")
    b = Cache(fresh_redis.url, local="memory", local_ttl=60)
    fa, _ = _counted(a, ttl=0.5)
    fb, calls_b = _counted(b, ttl=0.5)
    assert fa(5) == 25
    time.sleep(0.2)
    assert fb(5) == 25 and calls_b == []  # promoted with ~0.3 s left
    time.sleep(0.45)
    assert fb(5) == 25 and calls_b == [5]


def test_shared_store_down_local_keeps_serving_and_storing() -> None:
    """With Redis unreachable the local tier serves and stores; no error reaches the caller."""
    cache = Cache(f"redis://127.0.0.1:{free_port()}/0", local="memory", backoff=30)
    square, calls = _counted(cache)
    t0 = time.monotonic()
    assert [square(3), square(3), square(4), square(4)] == [9, 9, 16, 16]
    assert time.monotonic() - t0 < 2.0
    assert calls == [3, 4] and square.cache_info().hits == 2


def test_invalidate_clear_refresh_reach_both_tiers() -> None:
    """invalidate, cache_clear, Cache.clear and refresh act on the local and shared tier."""
    local, shared = MemoryBackend(), MemoryBackend()
    cache = Cache(TieredBackend(local, shared))
    square, calls = _counted(cache)
    square(1), square(2), square(3)
    k1 = square.cache_key(1)
    assert local.get(k1) is not MISSING and shared.get(k1) is not MISSING
    assert square.invalidate(1)
    assert local.get(k1) is MISSING and shared.get(k1) is MISSING
    shared.set(square.cache_key(2), b"stale", ttl=None)
    local.set(square.cache_key(2), b"stale", ttl=None)
    assert square.refresh(2) == 4 and local.get(square.cache_key(2)) != b"stale"
    assert shared.get(square.cache_key(2)) == local.get(square.cache_key(2))
    assert square.cache_clear() == 2
    assert list(local.keys("pm:")) == [] and list(shared.keys("pm:")) == []
    square(5)
    assert cache.clear() == 1 and list(local.keys("pm:")) == []


def test_local_directory_tier(tmp_path: Path) -> None:
    """local=<dir> puts a disk tier in front of the store."""
    cache = Cache("memory://", local=tmp_path / "local")
    square, calls = _counted(cache)
    assert square(6) == 36 and square(6) == 36 and calls == [6]
    assert isinstance(cache.backend, TieredBackend)
    assert isinstance(cache.backend.local, DiskBackend)


def test_memory_tier_is_bounded_lru() -> None:
    """local_max_bytes bounds the memory tier; least recently used entries go first."""
    tier = MemoryBackend(max_bytes=300)
    for i in range(3):
        tier.set(f"k{i}", bytes(100), ttl=None)
    assert tier.get("k0") is not MISSING  # k0 is now the most recently used
    tier.set("k3", bytes(100), ttl=None)
    assert tier.get("k1") is MISSING and tier.get("k0") is not MISSING
    tier.set("huge", bytes(1000), ttl=None)
    assert tier.get("huge") is MISSING


def test_bad_local_options_are_clear_errors() -> None:
    """local, local_max_bytes and local_ttl are validated with errors naming them."""
    with pytest.raises(ConfigurationError, match="local must be"):
        Cache("memory://", local=3)
    with pytest.raises(ConfigurationError, match="local_max_bytes"):
        Cache("memory://", local="memory", local_max_bytes=0)
    with pytest.raises(ConfigurationError, match="local_ttl"):
        Cache("memory://", local="memory", local_ttl=0)


def test_async_functions_use_both_tiers(fresh_redis: RedisServer) -> None:
    """Async memoized functions read the memory tier inline and Redis on a local miss."""
    import asyncio

    runs: list[int] = []

    def make(cache: Cache) -> Any:
        @cache.memoize
        async def f(x: int) -> int:
            runs.append(x)
            return x * 2

        return f

    w = make(Cache(fresh_redis.url))
    r = make(Cache(fresh_redis.url, local="memory"))

    async def scenario() -> list[int]:
        return [await w(3), await r(3), await r(3), *(await r.map([3, 4]))]

    assert asyncio.run(scenario()) == [6, 6, 6, 6, 8]
    assert runs == [3, 4] and r.cache_info().hits == 3


def test_promoted_disk_entry_keeps_its_ttl(tmp_path: Path) -> None:
    """A copy promoted from a shared disk store expires with the entry, not after local_ttl."""
    a = Cache(tmp_path / "shared")
    b = Cache(tmp_path / "shared", local="memory", local_ttl=60)
    fa, _ = _counted(a, ttl=0.5)
    fb, calls_b = _counted(b, ttl=0.5)
    assert fa(7) == 49 and fb(7) == 49 and calls_b == []
    time.sleep(0.6)
    assert fb(7) == 49 and calls_b == [7]
