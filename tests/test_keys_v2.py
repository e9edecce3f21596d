"""Keys v2: regression tests for the defects of 0.1 (each fails on 0.1) and the v2 encodings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persistmemo
from persistmemo import Cache, KeyEncodingError, register_key_encoder
from persistmemo.keys import KEY_FORMAT, KeyBuilder, canonical_bytes

cb = canonical_bytes


def mem() -> Cache:
    return Cache("memory://")


def test_key_format_2_prefix() -> None:
    """KEY_FORMAT is 2 and every key starts with pm:2:."""
    c = mem()

    @c.memoize
    def f(x: int) -> int:
        return x

    assert KEY_FORMAT == 2
    assert f.cache_key(1).startswith("pm:2:default:")


# -- closures and factories --------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: (np.zeros(3), np.ones(3)),
    lambda: ((1, 2), (1, 3)),
    lambda: ([1, 2], [1, 3]),
    lambda: (np.float64(0.1), np.float64(0.3)),
    lambda: ({"a": 1}, {"a": 2}),
])
def test_factory_closures_never_share_entries(make: Any) -> None:
    """A factory closing over arrays, tuples, lists, numpy scalars gives separate entries."""
    c = mem()

    def make_weights(w: Any) -> Any:
        @c.memoize
        def f(x: float) -> Any:
            return repr(w) + str(x)

        return f

    a, b = make()
    fa, fb = make_weights(a), make_weights(b)
    assert fa(1.0) != fb(1.0)
    assert fa.cache_key(1.0) != fb.cache_key(1.0)


def test_linspace_models_differ() -> None:
    """make_model(lr) for three numpy learning rates returns three different results."""
    c = mem()

    def make_model(lr: Any) -> Any:
        @c.memoize
        def train(x: float) -> float:
            return float(lr * x)

        return train

    results = [make_model(lr)(1.0) for lr in np.linspace(0.1, 0.5, 3)]
    assert results == pytest.approx([0.1, 0.3, 0.5])


# -- mutable defaults --------------------------------------------------------------------------


def test_mutable_default_mutated_in_place_positional_and_keyword_agree() -> None:
    """After a default list changes in place, f(2) and f(x=2) still share one key."""
    c = mem()
    opts: list[int] = [1]

    @c.memoize
    def f(x: int, o: list[int] = opts) -> int:
        return x + sum(o)

    assert f(2) == 3
    opts.append(10)
    assert f.cache_key(2) == f.cache_key(x=2)
    assert f(2) == 13 and f(x=2) == 13


# -- numpy -------------------------------------------------------------------------------------


def test_aligned_structured_arrays_ignore_padding() -> None:
    """Equal aligned structured arrays share a key whatever their padding bytes hold."""
    dtype = np.dtype([("a", "u1"), ("b", "<f8")], align=True)
    raw_a = bytearray(np.zeros(3, dtype).tobytes())
    raw_b = bytearray(raw_a)
    for i in range(3):  # scribble over the 7 padding bytes after field a
        raw_b[i * 16 + 1:i * 16 + 8] = b"\xab" * 7
    a = np.frombuffer(bytes(raw_a), dtype)
    b = np.frombuffer(bytes(raw_b), dtype)
    assert a.tobytes() != b.tobytes() and (a == b).all()
    assert cb(a) == cb(b)
    assert cb(a[0]) == cb(b[0])  # numpy scalars (np.void) too
    c = a.copy()
    c["b"][1] = 1.0
    assert cb(c) != cb(a)


def test_longdouble_padding_ignored() -> None:
    """Equal longdouble arrays share a key whatever their padding bytes hold."""
    if np.finfo(np.longdouble).nmant != 63:
        pytest.skip("longdouble is not x87 extended precision on this platform")
    size = np.dtype(np.longdouble).itemsize
    a = np.array([1.5, -2.25], dtype=np.longdouble)
    raw = bytearray(a.tobytes())
    for i in range(2):
        raw[i * size + 10:(i + 1) * size] = b"\x5a" * (size - 10)
    b = np.frombuffer(bytes(raw), np.longdouble)
    assert a.tobytes() != b.tobytes() and (a == b).all()
    assert cb(a) == cb(b)
    assert cb(a[0]) == cb(b[0])
    assert cb(a) != cb(np.array([1.5, -2.0], dtype=np.longdouble))


def test_datetime64_and_timedelta64_arrays() -> None:
    """datetime64/timedelta64 arrays are keyed by value and unit instead of raising."""
    d = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")
    assert cb(d) == cb(d.copy())
    assert cb(d) != cb(d.astype("datetime64[s]"))
    assert cb(d) != cb(np.array(["2024-01-01", "2024-01-03"], dtype="datetime64[D]"))
    t = np.array([1, 2], dtype="timedelta64[s]")
    assert cb(t) != cb(t.astype("timedelta64[ms]"))
    assert cb(d[::-1][::-1]) == cb(d)
    assert cb(np.datetime64("2024-01-01")) != cb(np.datetime64("2024-01-02"))


def test_memmap_keyed_as_ndarray(tmp_path: Path) -> None:
    """np.load(mmap_mode='r') gives the same key as the array in memory."""
    arr = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "a.npy", arr)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap)
    assert cb(mm) == cb(arr)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_masked_arrays_with_their_mask_and_matrix_own_tag() -> None:
    """Masked arrays key data and mask; np.matrix differs from the same ndarray."""
    a = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    b = np.ma.masked_array([1, 2, 3], mask=[0, 0, 0])
    assert cb(a) != cb(b)
    assert cb(a) == cb(np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]))
    assert cb(b) != cb(np.array([1, 2, 3]))
    assert cb(np.matrix([[1, 2]])) != cb(np.array([[1, 2]]))
    assert cb(np.matrix([[1, 2]])) == cb(np.matrix([[1, 2]]))


def test_other_ndarray_subclasses_refused() -> None:
    """An unknown ndarray subclass (it may carry state) raises KeyEncodingError."""

    class Tagged(np.ndarray):
        pass

    with pytest.raises(KeyEncodingError, match=r"np\.asarray"):
        cb(np.zeros(2).view(Tagged))


# -- hooks -------------------------------------------------------------------------------------


def test_raising_hook_is_key_encoding_error_naming_hook() -> None:
    """A __persistmemo_key__ raising TypeError surfaces as KeyEncodingError naming the hook."""
    c = mem()

    class Model:
        def __persistmemo_key__(self) -> Any:
            raise TypeError("boom")

    @c.memoize
    def f(m: Model) -> int:
        return 1

    with pytest.raises(KeyEncodingError, match=r"__persistmemo_key__ raised TypeError: boom"):
        f(Model())


def test_raising_registered_encoder_names_it() -> None:
    """A registered encoder that raises is reported, not turned into an uncached call."""

    class Point:
        pass

    def bad(p: Point) -> Any:
        raise TypeError("nope")

    register_key_encoder(Point, bad)
    with pytest.raises(KeyEncodingError, match=r"key encoder registered for .*Point raised"):
        cb(Point())


def test_raising_key_function_is_reported() -> None:
    """A key= function raising TypeError raises KeyEncodingError instead of running uncached."""
    c = mem()
    calls: list[int] = []

    def key(x: Any) -> Any:
        raise TypeError("bad key")

    @c.memoize(key=key)
    def f(x: int) -> int:
        calls.append(x)
        return x

    with pytest.raises(KeyEncodingError, match=r"key= function .*key.* raised TypeError"):
        f(1)
    assert calls == []


def test_self_returning_hook_is_key_encoding_error() -> None:
    """A hook returning self raises KeyEncodingError, not RecursionError."""

    class Me:
        def __persistmemo_key__(self) -> Any:
            return self

    with pytest.raises(KeyEncodingError, match="returned the object itself"):
        cb(Me())

    class Loop:
        def __persistmemo_key__(self) -> Any:
            return [self]

    with pytest.raises(KeyEncodingError, match="contains itself"):
        cb(Loop())


# -- shared sub-objects ------------------------------------------------------------------------


def test_shared_subobjects_linear_time() -> None:
    """[x, x] nested 22 (and 200) deep encodes in milliseconds, not seconds."""
    x: Any = [1, 2]
    for _ in range(22):
        x = [x, x]
    start = time.perf_counter()
    enc = cb(x)
    assert time.perf_counter() - start < 0.5
    assert len(enc) < 200

    @dataclasses.dataclass(frozen=True)
    class Node:
        left: Any
        right: Any

    n: Any = 0
    for _ in range(60):
        n = Node(n, n)
    start = time.perf_counter()
    cb(n)
    assert time.perf_counter() - start < 0.5


def test_shared_and_unshared_equal_values_agree() -> None:
    """Sharing is invisible: [x, x] and [x, copy(x)] give one encoding."""
    x = [list(range(50)), {"a": (1, 2)}]
    y = [list(range(50)), {"a": (1, 2)}]
    assert cb([x, x]) == cb([x, y])
    assert cb((x, [x])) == cb((y, [x]))


def test_deep_nesting_refused_cleanly() -> None:
    """Nesting beyond the limit is a KeyEncodingError, never RecursionError."""
    x: Any = 0
    for _ in range(5000):
        x = [x]
    with pytest.raises(KeyEncodingError):
        cb(x)
    kb = KeyBuilder(lambda v: v, version=1)
    with pytest.raises(KeyEncodingError):
        kb((x,), {})


# -- timezones ---------------------------------------------------------------------------------


def test_timezone_offsets_exact() -> None:
    """Offsets one microsecond apart (same name) give different keys."""
    base = dt.datetime(2024, 1, 1, 12)
    for hours in (0, 5, 23):
        for us in (1, 999_999):
            off = dt.timedelta(hours=hours, minutes=59, seconds=59, microseconds=us)
            a = dt.timezone(off, "X")
            b = dt.timezone(off - dt.timedelta(microseconds=1), "X")
            assert cb(base.replace(tzinfo=a)) != cb(base.replace(tzinfo=b))
            assert cb(dt.time(1, tzinfo=a)) != cb(dt.time(1, tzinfo=b))


# -- identity of script classes ----------------------------------------------------------------


def test_main_classes_tagged_by_script_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataclass defined in __main__ is tagged with the script's stem, like functions."""
    import sys
    import types

    main = types.ModuleType("__main__")
    main.__file__ = "/somewhere/train_job.py"
    monkeypatch.setitem(sys.modules, "__main__", main)

    @dataclasses.dataclass
    class Params:
        lr: float

    Params.__module__ = "__main__"
    Params.__qualname__ = "Params"
    assert b"train_job.Params" in cb(Params(0.1))
    assert b"__main__" not in cb(Params(0.1))


def test_notebook_functions_named_after_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a kernel, __main__ functions are named after __session__ / JPY_SESSION_NAME."""
    import sys
    import types

    from persistmemo._identity import function_identity, module_name

    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert module_name("__main__") == "__main__"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/work/analysis.ipynb")
    assert module_name("__main__") == "analysis"
    main.__session__ = "/home/u/other/report.ipynb"  # type: ignore[attr-defined]

    def slow() -> None: ...

    slow.__module__ = "__main__"
    assert function_identity(slow).startswith("report.")


# -- hypothesis --------------------------------------------------------------------------------

leaves = st.integers() | st.text(max_size=5) | st.floats(allow_nan=False) | st.none()
trees = st.recursive(leaves, lambda t: st.lists(t, max_size=3) | st.tuples(t, t)
                     | st.dictionaries(st.text(max_size=3), t, max_size=3), max_leaves=20)


def _rebuild(v: Any) -> Any:
    """An equal value built from fresh objects (no sharing with the original)."""
    if isinstance(v, list):
        return [_rebuild(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_rebuild(x) for x in v)
    if isinstance(v, dict):
        return {k: _rebuild(x) for k, x in reversed(list(v.items()))}
    return v


@settings(max_examples=150, deadline=None)
@given(trees)
def test_equal_values_built_differently_agree(v: Any) -> None:
    """An equal value rebuilt from fresh objects, or shared twice, keys the same."""
    assert cb(v) == cb(_rebuild(v))
    assert cb([v, v]) == cb([v, _rebuild(v)])


def _norm(v: Any) -> Any:
    """A structural normal form: types kept, dicts sorted (equal forms <=> equal values)."""
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_norm(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, _norm(x)) for k, x in v.items())))
    return (type(v).__name__, repr(v))


@settings(max_examples=200, deadline=None)
@given(trees, trees)
def test_structurally_different_values_differ(a: Any, b: Any) -> None:
    """Values that differ in structure, type or content never share an encoding."""
    assert (cb(a) == cb(b)) == (_norm(a) == _norm(b))


def test_public_dependency_type_exported() -> None:
    """persistmemo.Dependency is the (kind, digest) record of f.dependencies()."""
    d = persistmemo.Dependency("value", "ab")
    assert d.kind == "value" and tuple(d) == ("value", "ab")


def test_import_stays_light() -> None:
    """`import persistmemo` loads neither the fingerprint walker (ast, dis, inspect) nor numpy."""
    import subprocess
    import sys

    code = ("import sys, persistmemo; print(sorted(m for m in ('ast', 'dis', 'inspect', 'numpy', "
            "'persistmemo._deps', 'persistmemo._source') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"
