"""The decorator's contract, on every backend: keys, fidelity, attributes, errors, async."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import fractions
import inspect
import os
import pathlib
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import empty_cache

import persistmemo
from persistmemo import Cache, KeyEncodingError, UncacheableResultWarning, memoize
from persistmemo.errors import ConfigurationError


@pytest.fixture(params=["memory", "disk", "redis", "cluster"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A Cache on every backend kind, empty."""
    yield from empty_cache(request.param, request, tmp_path)


def counted(c: Cache, **opts: Any) -> Any:
    calls: list[Any] = []

    @c.memoize(**opts)
    def f(a: Any, b: Any = 0) -> Any:
        """Doc of f."""
        calls.append((a, b))
        return (a, b)

    return f, calls


def test_bare_and_called_decorator(cache: Cache) -> None:
    """@cache.memoize and @cache.memoize(ttl=...) both work; the second call is a hit."""

    @cache.memoize
    def bare(x: int) -> int:
        return x + 1

    @cache.memoize(ttl=60)
    def called(x: int) -> int:
        return x + 2

    assert bare(1) == 2 and bare(1) == 2
    assert called(1) == 3 and called(1) == 3
    assert bare.cache_info().hits == 1 and bare.cache_info().misses == 1
    assert called.cache_info().hits == 1


def test_equivalent_calls_share_one_entry(cache: Cache) -> None:
    """f(1), f(a=1), f(1, 0), f(b=0, a=1) compute once."""
    f, calls = counted(cache)
    assert f(1) == f(a=1) == f(1, 0) == f(b=0, a=1) == (1, 0)
    assert len(calls) == 1


def test_typed_distinct_arguments_do_not_share(cache: Cache) -> None:
    """1, 1.0, True, "1" are four computations, each returning its own type."""
    f, calls = counted(cache)
    results = [f(1), f(1.0), f(True), f("1"), f(1), f(1.0), f(True), f("1")]
    assert len(calls) == 4
    assert [type(r[0]) for r in results] == [int, float, bool, str] * 2


def test_wrapper_keeps_signature_docstring_and_wrapped(cache: Cache) -> None:
    """The decorated function keeps its name, docstring, signature and __wrapped__."""
    f, _ = counted(cache)
    assert f.__name__ == "f"
    assert f.__doc__ == "Doc of f."
    assert str(inspect.signature(f)) == "(a: 'Any', b: 'Any' = 0) -> 'Any'"
    assert f.__wrapped__(5) == (5, 0)


FIDELITY = [
    None, 0, "", [], (), {}, False, 2**100, -(2**70), float("inf"), 1.5, "é",
    (1, (2, [3, (4,)])), {1: "a", (2, 3): [4]}, {"x": {1, 2}}, frozenset({1, 2}), b"\x00b",
    bytearray(b"ba"), 3 + 4j, decimal.Decimal("1.10"), fractions.Fraction(1, 3),
    dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.date(2024, 1, 2), dt.time(1, 2, 3), dt.timedelta(days=2), uuid.UUID(int=7),
    pathlib.PurePosixPath("/a/b"), Path("rel/p"),
]


def _deep_types(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return (type(v), [_deep_types(x) for x in v])
    if isinstance(v, dict):
        return (type(v), sorted(repr(_deep_types(k)) + repr(_deep_types(x)) for k, x in v.items()))
    return type(v)


@pytest.mark.parametrize("value", FIDELITY, ids=lambda v: type(v).__name__)
def test_hit_returns_equal_value_of_same_type(cache: Cache, value: Any) -> None:
    """A hit returns a value equal to and of the same types as what the function returned."""
    calls = []

    @cache.memoize
    def produce(tag: str) -> Any:
        calls.append(tag)
        return value

    first = produce("x")
    again = produce("x")
    assert len(calls) == 1
    assert again == value and first == value
    assert _deep_types(again) == _deep_types(value)


def test_numpy_results_round_trip(cache: Cache) -> None:
    """numpy arrays and scalars come back with dtype, shape, values, and are writeable."""

    @cache.memoize
    def arr(n: int) -> Any:
        return (np.arange(n, dtype=np.float32).reshape(2, -1), np.int16(7))

    a1, _ = arr(6)
    a2, s2 = arr(6)
    assert arr.cache_info().hits == 1
    assert a2.dtype == np.float32 and a2.shape == (2, 3) and np.array_equal(a1, a2)
    assert type(s2) is np.int16 and s2 == 7
    a2[0, 0] = 42  # writeable


def test_none_and_falsy_results_are_cached(cache: Cache) -> None:
    """None, 0, "" and [] are stored and served as hits."""
    calls = []

    @cache.memoize
    def falsy(i: int) -> Any:
        calls.append(i)
        return [None, 0, "", []][i]

    for _ in range(2):
        assert [falsy(i) for i in range(4)] == [None, 0, "", []]
    assert len(calls) == 4
    assert falsy.cache_info().hits == 4


def test_exceptions_propagate_and_are_not_cached(cache: Cache) -> None:
    """An exception reaches the caller unchanged and the next call computes again."""
    state = {"n": 0}

    @cache.memoize
    def flaky(x: int) -> int:
        state["n"] += 1
        if state["n"] == 1:
            raise ValueError("first time", x)
        return x * 10

    with pytest.raises(ValueError) as info:
        flaky(3)
    assert info.value.args == ("first time", 3)
    assert flaky(3) == 30
    assert flaky(3) == 30
    assert state["n"] == 2


def test_cache_key_invalidate_refresh_and_clear(cache: Cache) -> None:
    """cache_key is stable, invalidate deletes one entry, refresh recomputes, cache_clear all."""
    f, calls = counted(cache)
    g, _ = counted(cache)  # another function with the same code and name (other closure)
    assert f.cache_key(1) == f.cache_key(a=1, b=0)
    assert f.cache_key(1).startswith("pm:2:")
    f(1), f(2), g(1)
    assert f.invalidate(1) is True
    assert f.invalidate(1) is False
    f(1)
    assert len(calls) == 3
    assert f.refresh(2) == (2, 0)
    assert len(calls) == 4
    f(2)
    assert len(calls) == 4
    assert f.cache_clear() >= 2


def test_cache_clear_only_this_function(cache: Cache) -> None:
    """cache_clear() leaves other functions' entries alone."""

    @cache.memoize
    def one(x: int) -> int:
        return x

    @cache.memoize
    def two(x: int) -> int:
        return -x

    one(1), one(2), two(1)
    assert one.cache_clear() == 2
    two(1)
    assert two.cache_info().hits == 1
    one(1)
    assert one.cache_info().misses == 3


def test_version_pins_and_invalidates(cache: Cache) -> None:
    """version= changes the key; the same version shares entries."""
    calls = []

    def make(version: Any) -> Any:
        @cache.memoize(version=version)
        def model(x: int) -> int:
            calls.append(version)
            return x

        return model

    make(1)(5), make(1)(5), make(2)(5)
    assert calls == [1, 2]


def test_ttl_expires_entries(cache: Cache) -> None:
    """An entry older than ttl is recomputed."""
    f, calls = counted(cache, ttl=0.3)
    f(1)
    f(1)
    assert len(calls) == 1
    deadline = time.monotonic() + 5
    while len(calls) == 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        f(1)
    assert len(calls) == 2


def test_timedelta_ttl_and_bad_ttl() -> None:
    """ttl accepts timedelta; a bad ttl is a ConfigurationError naming it."""
    c = Cache("memory://", ttl=dt.timedelta(seconds=5))
    assert c.ttl == 5.0
    with pytest.raises(ConfigurationError, match="ttl"):
        Cache("memory://", ttl="soon")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl"):
        c.memoize(ttl="later")(lambda x: x)  # type: ignore[call-overload]


def test_unkeyable_argument_raises_naming_parameter(cache: Cache) -> None:
    """An unsupported argument type raises KeyEncodingError (TypeError) naming it; f not run."""
    f, calls = counted(cache)

    class Opaque:
        pass

    with pytest.raises(TypeError) as info:
        f(1, Opaque())
    assert isinstance(info.value, KeyEncodingError)
    assert "'b'" in str(info.value) and "Opaque" in str(info.value)
    assert calls == []


def test_bad_call_raises_pythons_own_type_error(cache: Cache) -> None:
    """A call that does not bind raises the function's own TypeError."""
    f, _ = counted(cache)
    with pytest.raises(TypeError, match=r"unexpected keyword|got an unexpected"):
        f(1, c=3)


class Opaque:
    """A class without any key encoding."""

    def __init__(self, x: int) -> None:
        self.x = x


def test_unencodable_result_is_returned_with_one_warning(cache: Cache) -> None:
    """A result the codec cannot encode is returned, warned about once, and not stored."""

    @cache.memoize
    def make(x: int) -> Any:
        return Opaque(x)

    with pytest.warns(UncacheableResultWarning, match="Opaque"):
        r = make(1)
    assert isinstance(r, Opaque) and r.x == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make(2).x == 2  # no second warning for the same type
    assert make.cache_info().stores == 0


def test_corrupt_entry_is_a_miss_and_overwritten(cache: Cache) -> None:
    """Garbage under a valid key is a miss: recomputed, overwritten, never a crash."""
    f, calls = counted(cache)
    key = f.cache_key(7)
    cache.backend.set(key, b"garbage \x00\x01 not an envelope", ttl=None)
    assert f(7) == (7, 0)
    assert f(7) == (7, 0)
    assert len(calls) == 1
    assert f.cache_info().decode_failures == 1
    assert cache.backend.get(key) != b"garbage \x00\x01 not an envelope"


def test_entry_copied_under_another_key_is_a_miss(cache: Cache) -> None:
    """A valid entry moved under another key does not verify (no cross-key hits)."""
    f, calls = counted(cache)
    f(1)
    cache.backend.set(f.cache_key(2), cache.backend.get(f.cache_key(1)), ttl=None)
    assert f(2) == (2, 0)
    assert len(calls) == 2


@dataclasses.dataclass(frozen=True)
class Model:
    """A keyable ``self``: a dataclass."""

    scale: int

    @memoize(cache=Cache("memory://"))
    def predict(self, x: int) -> int:
        return self.scale * x


class Service:
    """An un-keyable ``self``, ignored explicitly."""

    def __init__(self) -> None:
        self.calls = 0

    @memoize(cache=Cache("memory://"), ignore=["self"])
    def lookup(self, x: int) -> int:
        self.calls += 1
        return x * 2


class Bad:
    @memoize(cache=Cache("memory://"))
    def method(self, x: int) -> int:
        return x


def test_methods_with_keyable_or_ignored_self() -> None:
    """Methods work when self is a dataclass or ignored; bound helpers take the instance."""
    assert Model(2).predict(3) == 6 and Model(3).predict(3) == 9
    assert Model(2).predict(3) == 6
    assert Model.predict.cache_info().hits == 1
    assert Model(2).predict.cache_key(3) != Model(3).predict.cache_key(3)
    s = Service()
    assert s.lookup(2) == 4 and Service().lookup(2) == 4
    assert s.calls == 1


def test_unkeyable_self_error_says_how_to_fix() -> None:
    """An un-keyable self raises KeyEncodingError that suggests a fix."""
    with pytest.raises(KeyEncodingError) as info:
        Bad().method(1)
    msg = str(info.value)
    assert "'self'" in msg and "__persistmemo_key__" in msg and "ignore=['self']" in msg


def test_async_functions_are_memoized(cache: Cache) -> None:
    """async def functions are memoized, keep being coroutine functions, and share one run."""
    calls = []

    @cache.memoize
    async def fetch(x: int) -> dict[str, int]:
        calls.append(x)
        await asyncio.sleep(0.01)
        return {"x": x}

    assert inspect.iscoroutinefunction(fetch)

    async def main() -> list[Any]:
        first = await fetch(1)
        rest = await asyncio.gather(*(fetch(2) for _ in range(10)))
        return [first, await fetch(1), *rest]

    out = asyncio.run(main())
    assert out[0] == out[1] == {"x": 1}
    assert all(o == {"x": 2} for o in out[2:])
    assert calls == [1, 2]


def test_async_exceptions_propagate(cache: Cache) -> None:
    """An async function's exception propagates and is not cached."""

    @cache.memoize
    async def boom(x: int) -> int:
        raise KeyError(x)

    with pytest.raises(KeyError):
        asyncio.run(boom(1))
    assert boom.cache_info().stores == 0


def test_map_batches_lookups(cache: Cache) -> None:
    """map() returns f(*args) for each item, computing only the misses."""
    f, calls = counted(cache)
    f(1)
    assert f.map([(1,), (2, 5), 3, (1,)]) == [(1, 0), (2, 5), (3, 0), (1, 0)]
    assert len(calls) == 3
    assert f.map([(2, 5), 3]) == [(2, 5), (3, 0)]
    assert len(calls) == 3


def test_default_cache_reads_environment_at_first_use(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """memoize without cache= uses PERSISTMEMO_URL, read at the first call (not at decoration)."""

    @memoize
    def tripled(x: int) -> int:
        return 3 * x

    target = tmp_path / "from-env"
    monkeypatch.setenv("PERSISTMEMO_URL", str(target))
    assert tripled(2) == 6
    assert target.is_dir()
    assert tripled(2) == 6 and tripled.cache_info().hits == 1


def test_default_cache_uses_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """Without PERSISTMEMO_URL the default is $XDG_CACHE_HOME/persistmemo."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg2"))

    @memoize
    def plus(x: int) -> int:
        return x + 1

    assert plus(1) == 2
    assert (tmp_path / "xdg2" / "persistmemo").is_dir()
    assert oct((tmp_path / "xdg2" / "persistmemo").stat().st_mode & 0o777) == "0o700"


def test_bad_locations_and_options_are_clear_errors(tmp_path: Path) -> None:
    """Unknown URL schemes, unknown options and bad namespaces raise ConfigurationError."""
    with pytest.raises(ConfigurationError, match="scheme"):
        Cache("ftp://x")
    with pytest.raises(ConfigurationError, match="size_limt"):
        Cache(tmp_path / "c", size_limt=5)
    with pytest.raises(ConfigurationError, match="namespace"):
        Cache("memory://", namespace="a:b")
    with pytest.raises(ConfigurationError, match="unknown memoize option"):
        Cache("memory://").memoize(tll=5)(lambda x: x)


SCRIPT = """
import sys
import persistmemo
counter = []
@persistmemo.memoize
def compute(x):
    counter.append(x)
    return {{"x": x, "sq": (x * x, float(x))}}
out = [compute(i) for i in range({n})]
assert all(o == {{"x": i, "sq": (i * i, float(i))}} for i, o in enumerate(out))
print(len(counter), compute.cache_info().hits)
"""


def _run(script: str, env: dict[str, str], cwd: Path) -> str:
    path = cwd / "job.py"
    path.write_text(textwrap.dedent(script))
    res = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                         timeout=60, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("kind", ["disk", "redis", "cluster"])
def test_results_survive_the_process_and_are_shared(kind: str, request: pytest.FixtureRequest,
                                                    tmp_path: Path) -> None:
    """A second process reuses the first one's results (disk directory, Redis, Cluster)."""
    url = {"disk": lambda: str(tmp_path / "shared"),
           "redis": lambda: request.getfixturevalue("redis_url"),
           "cluster": lambda: request.getfixturevalue("redis_cluster_url")}[kind]()
    if kind != "disk":
        Cache(url).clear()
    env = {**os.environ, "PERSISTMEMO_URL": url}
    assert _run(SCRIPT.format(n=20), env, tmp_path) == "20 0"
    assert _run(SCRIPT.format(n=25), env, tmp_path) == "5 20"


def test_editing_the_function_body_invalidates(tmp_path: Path) -> None:
    """Changing the body changes the fingerprint; comments alone do not."""
    env = {**os.environ, "PERSISTMEMO_URL": str(tmp_path / "edits")}
    base = ("import persistmemo\n@persistmemo.memoize\ndef g(x):\n    return x {op}\n"
            "print(g(2), g.cache_info().misses)\n")
    assert _run(base.format(op="+ 1"), env, tmp_path) == "3 1"
    assert _run(base.format(op="+ 1  # comment"), env, tmp_path) == "3 0"
    assert _run(base.format(op="+ 2"), env, tmp_path) == "4 1"


def test_version_exported() -> None:
    """persistmemo.__version__ is the installed version."""
    assert isinstance(persistmemo.__version__, str) and persistmemo.__version__


def test_closure_scalars_are_part_of_the_key() -> None:
    """Functions made by a factory with different scalar parameters never share entries."""
    c = Cache("memory://")

    def make(k: int) -> Any:
        @c.memoize
        def scaled(x: int) -> int:
            return x * k

        return scaled

    assert make(2)(3) == 6
    assert make(3)(3) == 9
    assert make(2)(3) == 6


def test_two_lambdas_on_one_line_differ() -> None:
    """Two memoized lambdas on the same line have different identities' fingerprints."""
    c = Cache("memory://")
    a, b = c.memoize(lambda x: x + 1), c.memoize(lambda x: x * 10)
    assert a(2) == 3 and b(2) == 20 and a(2) == 3


def test_generators_and_non_functions_refused() -> None:
    """Generator functions and non-function callables are refused with a clear error."""
    c = Cache("memory://")

    def gen(n: int) -> Any:
        yield n

    with pytest.raises(ConfigurationError, match="generator"):
        c.memoize(gen)

    class Callable_:
        def __call__(self, x: int) -> int:
            return x

    with pytest.raises(ConfigurationError, match="needs a function"):
        c.memoize(Callable_())


def test_per_function_pickle_serializer_uses_cache_secret() -> None:
    """serializer='pickle' on one function signs with the cache's secret and round-trips."""
    c = Cache("memory://", secret="s3cret")

    @c.memoize(serializer="pickle")
    def obj(x: int) -> Opaque:
        return Opaque(x)

    assert obj(1).x == 1
    assert obj(1).x == 1
    assert obj.cache_info().hits == 1


_pickle_cache = Cache("memory://")


@_pickle_cache.memoize
def picklable_square(x: int) -> int:
    """A module-level memoized function (multiprocessing pickles it by reference)."""
    return x * x


def test_memoized_function_pickles_by_reference() -> None:
    """A module-level memoized function pickles by reference (multiprocessing pools work)."""
    import pickle

    assert pickle.loads(pickle.dumps(picklable_square)) is picklable_square


def test_multiprocessing_pool_shares_the_disk_cache(tmp_path: Path) -> None:
    """Workers of a spawn Pool running a memoized function share one disk cache."""
    script = tmp_path / "pooljob.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing as mp
        import persistmemo
        cache = persistmemo.Cache({str(tmp_path / 'pool-cache')!r})
        @cache.memoize
        def cube(x):
            return x ** 3
        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(2) as pool:
                assert pool.map(cube, range(10)) == [x ** 3 for x in range(10)]
            print(sum(cube(x) for x in range(10)), cube.cache_info().hits)
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["2025", "10"]


def test_backends_exported_at_top_level() -> None:
    """DiskBackend, MemoryBackend and RedisBackend are importable from persistmemo."""
    from persistmemo import DiskBackend, MemoryBackend, RedisBackend

    assert MemoryBackend().get("x") is persistmemo.MISSING
    assert DiskBackend.name == "disk" and RedisBackend.__name__ == "RedisBackend"


def test_namespaces_isolate_applications_sharing_a_store(cache: Cache) -> None:
    """Two namespaces on one store never share entries; Cache.clear() clears only its own."""
    other = Cache(cache.backend, namespace="app2")

    def build(c: Cache) -> tuple[Any, list[int]]:
        calls: list[int] = []

        @c.memoize
        def work(x: int) -> int:
            calls.append(x)
            return x + 100

        return work, calls

    w1, c1 = build(cache)
    w2, c2 = build(other)
    assert w1(1) == w2(1) == 101
    assert c1 == [1] and c2 == [1]
    assert w1.cache_key(1) != w2.cache_key(1)
    assert other.clear() == 1
    w1(1)
    assert c1 == [1]  # the default namespace kept its entry
