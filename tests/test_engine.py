"""Engine v2: one protocol for call/map/refresh (sync and async), one set of counters,
one option rule, the backend adapter, the URL scheme registry and the module layering."""

from __future__ import annotations

import ast
import asyncio
import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import empty_cache

import persistmemo
from persistmemo import AsyncMemoized, Cache, CacheInfo, Memoized
from persistmemo.backends.base import MISSING, BaseLock, adapt
from persistmemo.errors import BackendUnavailable, ConfigurationError
from persistmemo.testing import BackendContract


@pytest.fixture(params=["memory", "disk", "tiered"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cache]:
    """An empty Cache on memory, disk, and disk behind a memory tier."""
    if request.param == "tiered":
        c = Cache(tmp_path / "shared", local="memory")
        yield c
        c.close()
    else:
        yield from empty_cache(request.param, request, tmp_path)


def _sum(*infos: CacheInfo) -> CacheInfo:
    return CacheInfo(*(sum(vals) for vals in zip(*infos)))


def test_counters_identical_across_call_map_refresh_async(cache: Cache) -> None:
    """Cache.info() is the sum of every function's cache_info() after every kind of call."""

    @cache.memoize
    def f(x: int) -> int:
        return x * 2

    @cache.memoize
    async def g(x: int) -> int:
        return x * 3

    assert [f(1), f(1), f(2)] == [2, 2, 4]
    assert f.map([1, 2, 3, 3, 4]) == [2, 4, 6, 6, 8]
    assert f.refresh(1) == 2

    async def scenario() -> list[int]:
        return [await g(1), await g(1), *(await g.map([1, 2])), await g.refresh(2)]

    assert asyncio.run(scenario()) == [3, 3, 3, 6, 6]
    fi, gi = f.cache_info(), g.cache_info()
    assert (fi.hits, fi.misses, fi.stores) == (4, 5, 5)  # map: 3 and 4 new, 3 twice
    assert gi.misses == 3 and gi.hits == 2
    assert cache.info() == _sum(fi, gi)


def test_errors_and_thread_waits_reach_both_counters(tmp_path: Path) -> None:
    """Store errors and waits on another thread count once, in the function and the cache."""
    backend = _Flaky()
    cache = Cache(backend, backoff=0)

    @cache.memoize
    def slow(x: int) -> int:
        time.sleep(0.2)
        return x

    threads = [threading.Thread(target=slow, args=(1,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    backend.down = True
    assert slow(5) == 5 and slow.map([6, 7]) == [6, 7]
    info = slow.cache_info()
    assert info.lock_waits >= 1 and info.errors >= 3
    assert cache.info() == info


def test_map_is_single_flight_across_threads() -> None:
    """Two threads mapping the same cold inputs compute each input once."""
    cache = Cache("memory://")
    runs: list[int] = []

    @cache.memoize
    def slow(x: int) -> int:
        runs.append(x)
        time.sleep(0.1)
        return x

    out: list[list[int]] = []
    threads = [threading.Thread(target=lambda: out.append(slow.map([1, 2, 3])))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == [[1, 2, 3], [1, 2, 3]]
    assert sorted(runs) == [1, 2, 3]


def test_options_one_rule_function_over_cache_over_default() -> None:
    """A memoize option overrides the cache's, which overrides the default; None inherits."""
    cache = Cache("memory://", ttl=30, lock=False, lock_wait=7)

    @cache.memoize(ttl=5, lock=None)
    def f(x: int) -> int:
        return x

    f(1)
    opts = f.memo.engine.options
    assert (opts.ttl, opts.lock, opts.lock_wait, opts.lock_ttl) == (5.0, False, 7.0, 10.0)
    with pytest.raises(ConfigurationError, match=r"lock_tll.*known"):
        cache.memoize(lock_tll=3)(lambda x: x)
    with pytest.raises(ConfigurationError, match="lock_ttl"):
        Cache("memory://", lock_ttl=0)


def test_isinstance_and_coroutine_function() -> None:
    """isinstance works on what memoize returns, and async ones stay coroutine functions."""
    cache = Cache("memory://")

    @cache.memoize
    def f(x: int) -> int:
        return x

    @cache.memoize
    async def g(x: int) -> int:
        return x

    assert isinstance(f, Memoized) and not isinstance(f, AsyncMemoized)
    assert isinstance(g, AsyncMemoized) and not isinstance(g, Memoized)
    assert inspect.iscoroutinefunction(g) and not inspect.iscoroutinefunction(f)
    assert not isinstance(object(), Memoized)


class _DictLock(BaseLock):
    def __init__(self, store: _Duck, key: str, ttl: float) -> None:
        super().__init__("lock:" + key, str(id(self)), ttl)
        self.store = store

    def acquire(self) -> bool:
        with self.store.mutex:
            if self.store.get(self.key) is not MISSING:
                return False
            self.store.set(self.key, self.token.encode(), ttl=self.ttl)
            return True

    def release(self) -> bool:
        with self.store.mutex:
            if self.store.get(self.key) == self.token.encode():
                return self.store.delete(self.key)
            return False

    def renew(self) -> bool:
        with self.store.mutex:
            if self.store.get(self.key) == self.token.encode():
                self.store.set(self.key, self.token.encode(), ttl=self.ttl)
                return True
            return False


class _Duck:
    """A third-party store: only the seven primitives, no persistmemo base class."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float | None]] = {}
        self.mutex = threading.RLock()

    def get(self, key: str) -> Any:
        item = self.data.get(key)
        if item is None or (item[1] is not None and item[1] <= time.monotonic()):
            return MISSING
        return item[0]

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self.data[key] = (value, None if ttl is None else time.monotonic() + ttl)

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def clear(self, prefix: str = "") -> int:
        doomed = [k for k in self.data if k.startswith(prefix)]
        for k in doomed:
            del self.data[k]
        return len(doomed)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return iter([k for k in list(self.data) if k.startswith(prefix)
                     and not k.startswith("lock:") and self.get(k) is not MISSING])

    def lock(self, key: str, *, ttl: float) -> _DictLock:
        return _DictLock(self, key, ttl)

    def close(self) -> None:
        pass


class _Flaky(_Duck):
    """A duck-typed store that can be switched to 'unreachable'."""

    down = False

    def get(self, key: str) -> Any:
        if self.down:
            raise BackendUnavailable("flaky store is down")
        return super().get(key)


class TestDuckTypedBackend(BackendContract):
    """A store with only the documented primitives passes the whole contract suite."""

    @pytest.fixture
    def backend(self) -> Any:
        """The duck-typed store, adapted."""
        return adapt(_Duck())


def test_duck_typed_backend_serves_a_cache() -> None:
    """Cache(duck) works: the adapter derives batches, composites and async twins."""
    cache = Cache(_Duck())

    @cache.memoize
    def f(x: int) -> int:
        return x + 1

    assert [f(1), f(1)] == [2, 2] and f.map([1, 2]) == [2, 3]
    assert f.cache_info().hits == 2
    with pytest.raises(TypeError, match=r"lacks.*lock"):
        adapt(object())


def test_url_scheme_registry() -> None:
    """A new scheme is one register_scheme() call; unknown schemes list the known ones."""
    from persistmemo.backends.memory import MemoryBackend
    from persistmemo.config import _SCHEMES, register_scheme

    made: list[str] = []

    def factory(url: str, **options: Any) -> MemoryBackend:
        made.append(url)
        return MemoryBackend()

    register_scheme("pmtest", factory=factory)
    try:
        cache = Cache("pmtest://anything")
        assert made == ["pmtest://anything"] and cache.backend.name == "memory"
    finally:
        del _SCHEMES["pmtest"]
    with pytest.raises(ConfigurationError, match="redis://"):
        Cache("nosuch://x")


# keys, codec, backends, engine, decorator, CLI, with their helpers, lowest first.
_LAYERS = ["errors", "_stats", "_breaker", "_canonical", "keys", "_compress", "_msgpack_ext",
           "_signing", "codec", "_mmap", "backends", "_project", "config", "_inspect", "_options",
           "_pickling", "_switch", "_progress", "_usage", "_store", "_lease", "_observe",
           "_engine", "_drivers", "_explain", "_decorator", "_cache", "pytest_plugin", "cli"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n.split(".")[1] for n in names if n.startswith("persistmemo.")}


def test_layers_import_downwards_only() -> None:
    """No module imports (even lazily) one of a higher layer: no import cycles."""
    root = Path(persistmemo.__file__).parent
    rank = {name: i for i, name in enumerate(_LAYERS)}
    bad = []
    for path in root.glob("*.py"):
        mod = path.stem
        if mod in ("__init__", "__main__", "testing") or mod not in rank:
            continue
        for dep in _imports(path) - {mod}:
            if rank.get(dep, -1) > rank[mod]:
                bad.append(f"{mod} -> {dep}")
    for path in (root / "backends").glob("*.py"):
        for dep in _imports(path) - {"backends"}:
            if rank.get(dep, -1) > rank["backends"]:
                bad.append(f"backends/{path.name} -> {dep}")
    assert not bad, bad
