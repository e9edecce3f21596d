"""Engine v2 defects found by a hostile probe, each pinned by the behaviour it must have."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import pytest
from _duck import DuckStore
from _redis_fixtures import RedisServer, free_port

import persistmemo
from persistmemo import Cache
from persistmemo.backends.disk import DiskBackend
from persistmemo.backends.memory import MemoryBackend
from persistmemo.backends.tiered import TieredBackend


def _counted(cache: Cache, **opts: Any) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cache.memoize(**opts)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    return square, calls


@pytest.mark.parametrize("where", ["shared", "local"])
@pytest.mark.parametrize("garbage", [b"garbage", b"PM\x01\x01" + b"\x00" * 40])
def test_undecodable_entry_under_a_local_tier_is_a_quick_miss(
        tmp_path: Path, where: str, garbage: bytes) -> None:
    """Garbage in the shared store or the local directory tier: recomputed and overwritten."""
    shared = MemoryBackend()
    tier = TieredBackend(DiskBackend(tmp_path / "local"), shared)
    square, calls = _counted(Cache(tier, lock_wait=30))
    key = square.cache_key(3)
    (shared if where == "shared" else tier.local).set(key, garbage)
    t0 = time.monotonic()
    assert square(3) == 9 and calls == [3]
    assert time.monotonic() - t0 < 2.0
    assert square(3) == 9 and calls == [3]  # overwritten with a good entry
    assert shared.get(key) != garbage and tier.local.get(key) != garbage


def test_undecodable_entry_with_a_foreign_secret_is_a_quick_miss() -> None:
    """An entry signed with another secret (seen through the local tier) is recomputed fast."""
    shared = MemoryBackend()
    other = Cache(TieredBackend(MemoryBackend(), shared), serializer="pickle", secret="a")
    mine = Cache(TieredBackend(MemoryBackend(), shared), serializer="pickle", secret="b",
                 lock_wait=30)
    fo, _ = _counted(other)
    fm, calls = _counted(mine)
    assert fo(2) == 4
    t0 = time.monotonic()
    assert fm(2) == 4 and fm(2) == 4 and calls == [2]
    assert time.monotonic() - t0 < 2.0


def test_async_undecodable_entry_under_a_local_tier_is_a_quick_miss() -> None:
    """The async path takes the lease too when the tier reports an unusable entry."""
    tier = TieredBackend(MemoryBackend(), MemoryBackend())
    cache = Cache(tier, lock_wait=30)
    runs: list[int] = []

    @cache.memoize
    async def f(x: int) -> int:
        runs.append(x)
        return x + 1

    tier.local.set(f.cache_key(1), b"garbage")
    t0 = time.monotonic()
    assert asyncio.run(f(1)) == 2 and runs == [1]
    assert time.monotonic() - t0 < 2.0


def test_abandoned_async_leader_lets_its_lease_lapse() -> None:
    """A leader whose event loop closed stops renewing: the next call does not wait."""
    cache = Cache(DuckStore(), lock_ttl=0.5, lock_wait=10)

    @cache.memoize
    async def g(x: int) -> int:
        await asyncio.sleep(0.6)
        return x

    loop = asyncio.new_event_loop()
    task = loop.create_task(g(1))
    loop.run_until_complete(asyncio.sleep(0.1))  # g(1) leads and holds the lease
    loop.close()
    del task
    gc.collect()
    time.sleep(1.0)  # 2x lock_ttl: renewed only if the abandoned leader were still renewing
    t0 = time.monotonic()
    assert asyncio.run(g(1)) == 1
    assert time.monotonic() - t0 < 3.0 and g.cache_info().lock_timeouts == 0


def test_closing_an_abandoned_async_leader_raises_no_runtime_error() -> None:
    """Closing a leader's coroutine mid-compute runs no I/O step (no 'ignored GeneratorExit')."""
    store = DuckStore()
    cache = Cache(store, lock_ttl=5)

    @cache.memoize
    async def g(x: int) -> int:
        await asyncio.sleep(10)
        return x

    coro = g(1)
    loop = asyncio.new_event_loop()
    try:
        fut = asyncio.ensure_future(coro, loop=loop)
        loop.run_until_complete(asyncio.sleep(0.1))
        fut.remove_done_callback  # noqa: B018 - keep the task referenced until here
    finally:
        loop.close()
    coro.close()  # raises RuntimeError if the protocol tried to await on GeneratorExit
    assert g.cache_info().stores == 0 and store.keys("lock:") is not None


def test_local_copy_from_a_duck_store_never_outlives_the_function_ttl() -> None:
    """A store that cannot report TTLs: the local copy is trusted no longer than ttl."""
    shared = DuckStore()
    fa, calls_a = _counted(Cache(shared, local="memory"), ttl=0.4)
    fb, _ = _counted(Cache(shared), ttl=0.4)
    assert fb(1) == 1 and fa(1) == 1 and calls_a == []  # promoted into A's memory tier
    time.sleep(0.6)
    assert fa(1) == 1 and calls_a == [1]


def test_a_store_that_ignores_ttls_never_serves_expired_entries() -> None:
    """An entry older than the function's ttl is a miss, whatever the store kept."""

    class Forever(DuckStore):
        def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
            super().set(key, value, ttl=None)

    square, calls = _counted(Cache(Forever()), ttl=0.3)
    assert square(2) == 4 and square(2) == 4 and calls == [2]
    time.sleep(0.4)
    assert square(2) == 4 and calls == [2, 2]


def test_bare_memoize_uses_the_default_caches_namespace() -> None:
    """@memoize on the default cache keys by that cache's namespace, so clear() reaches it."""
    cache = Cache("memory://", namespace="app")
    persistmemo.set_default_cache(cache)

    @persistmemo.memoize
    def f(x: int) -> int:
        return x

    assert f.cache_key(1).startswith("pm:2:app:")
    assert f(1) == 1 and cache.clear() == 1
    assert f(1) == 1 and f.cache_info().misses == 2


def test_default_namespace_follows_a_default_cache_set_after_decorating() -> None:
    """A function decorated before set_default_cache takes its namespace at first use."""

    @persistmemo.memoize
    def f(x: int) -> int:
        return x

    persistmemo.set_default_cache(Cache("memory://", namespace="later"))
    assert f(2) == 2 and f.cache_key(2).startswith("pm:2:later:")


def test_function_namespace_wins_over_the_default_caches() -> None:
    """memoize(namespace=...) beats the default cache's namespace (function > cache)."""
    persistmemo.set_default_cache(Cache("memory://", namespace="app"))

    @persistmemo.memoize(namespace="mine")
    def f(x: int) -> int:
        return x

    assert f.cache_key(1).startswith("pm:2:mine:")


@pytest.mark.parametrize("local", ["memory", "dir"])
def test_shared_store_failures_behind_a_local_tier_are_counted(
        tmp_path: Path, local: str) -> None:
    """A failing shared store counts in f.cache_info().errors and Cache.info().errors."""
    cache = Cache(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2,
                  local="memory" if local == "memory" else str(tmp_path / "l"))
    square, _ = _counted(cache)
    assert square(3) == 9 and square(3) == 9
    errors = square.cache_info().errors
    assert errors >= 1 and cache.info().errors == errors


def test_cache_backoff_reaches_the_tiers_shared_store(fresh_redis: RedisServer) -> None:
    """Cache(backoff=...) is the back-off of the local tier's shared store too."""
    cache = Cache(fresh_redis.url, local="memory", backoff=0.3)
    tier = cache.backend
    assert isinstance(tier, TieredBackend)
    assert tier._shared_breaker.backoff == 0.3 and tier._local_breaker.backoff == 0.3


def test_memoized_method_recursion_reaches_40_percent_of_plain_depth() -> None:
    """A memoized recursive method goes at least 40% as deep as the plain method."""
    cache = Cache("memory://")

    class Plain:
        def down(self, n: int) -> int:
            return 0 if n == 0 else self.down(n - 1) + 1

    class Memo:
        def __persistmemo_key__(self) -> str:
            return "memo"

        @cache.memoize
        def down(self, n: int) -> int:
            return 0 if n == 0 else self.down(n - 1) + 1

    def deepest(fn: Any, reset: Any) -> int:
        best = 0
        for depth in range(10, 3000, 10):
            reset()
            try:
                fn(depth)
            except RecursionError:
                return best
            best = depth
        return best

    plain = deepest(Plain().down, lambda: None)
    memo = deepest(Memo().down, Memo.down.cache_clear)
    assert memo >= 0.4 * plain


@pytest.mark.parametrize("kind", ["function", "method"])
def test_stack_exhaustion_surfaces_as_recursion_error_not_a_key_error(kind: str) -> None:
    """Running out of stack raises RecursionError, never a KeyEncodingError about 'self'."""
    cache = Cache("memory://")

    class K:
        def __persistmemo_key__(self) -> tuple[str, ...]:
            return ("k",) * 3

        @cache.memoize
        def down(self, n: int) -> int:
            return 0 if n == 0 else self.down(n - 1) + 1

    @cache.memoize
    def down(n: int, tag: tuple[str, ...] = ("a", "b")) -> int:
        return 0 if n == 0 else down(n - 1, tag) + 1

    fn: Any = K().down if kind == "method" else down
    with pytest.raises(RecursionError):
        fn(5000)
    assert fn(50) == 50  # nothing left behind (no stale lease or flight): a fresh call works


def test_every_helper_of_a_bound_method_binds_the_instance() -> None:
    """obj.m.map / refresh / cache_key / explain_key / invalidate all take obj as self."""
    from _methods_mod import K

    k = K(1)
    assert k.m.map([1, (2,)]) == [101, 102] == [k.m(1), k.m(2)]
    assert k.m.refresh(1) == 101 and k.m.cache_key(1) == K.m.cache_key(k, 1)
    assert k.m.explain_key(1) == K.m.explain_key(k, 1)
    assert k.m.invalidate(1) is True and k.m.invalidate(1) is False
    assert k.m.cache_info() == K.m.cache_info() and callable(k.m.cache_clear)
    assert k.m.__name__ == "m" and k.m.__wrapped__ is K.m.__wrapped__
    assert K(2).m.map([1]) == [201]


def test_async_bound_method_map_binds_the_instance() -> None:
    """await obj.am.map(...) calls the method on obj."""
    from _methods_mod import K

    k = K(3)
    assert asyncio.run(k.am.map([1, 2])) == [301, 302]


def test_bound_memoized_method_pickles_like_a_method() -> None:
    """pickle.loads(pickle.dumps(obj.m)) is obj'.m, as for a plain bound method."""
    import pickle

    from _methods_mod import K

    again = pickle.loads(pickle.dumps(K(4).m))
    assert again(5) == 405 and again.__self__ if hasattr(again, "__self__") else True
    assert pickle.loads(pickle.dumps(K.m)) is K.m


def test_bound_memoized_method_runs_in_a_spawned_process_pool() -> None:
    """A bound memoized method travels to ProcessPoolExecutor(spawn) workers."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from _methods_mod import K, call_bound

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        assert pool.submit(call_bound, K(6).m, 7).result(timeout=120) == 607


def test_async_memoized_method_is_a_coroutine_function_on_class_and_instance() -> None:
    """inspect.iscoroutinefunction is true of K.am and of K().am."""
    import inspect

    from _methods_mod import K

    assert inspect.iscoroutinefunction(K.am) and inspect.iscoroutinefunction(K(1).am)
    assert not inspect.iscoroutinefunction(K.m)
