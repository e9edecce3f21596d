"""pyarrow and polars values: chunking-independent keys, exact round trips via Arrow IPC."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from _types_helpers import key, need, roundtrip
from hypothesis import given, settings
from hypothesis import strategies as st

pa = need("pyarrow")


def rechunk(arr: Any, cuts: list[int]) -> Any:
    """The same data as a ChunkedArray split at ``cuts``."""
    bounds = [0, *sorted(c % (len(arr) + 1) for c in cuts), len(arr)]
    return pa.chunked_array([arr[a:b] for a, b in itertools.pairwise(bounds)], type=arr.type)


VALUES = st.one_of(
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=20).map(
        lambda v: pa.array(v, pa.int64())),
    st.lists(st.one_of(st.none(), st.floats(allow_nan=False)), max_size=20).map(
        lambda v: pa.array(v, pa.float64())),
    st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=20).map(pa.array),
    st.lists(st.one_of(st.none(), st.booleans()), max_size=20).map(
        lambda v: pa.array(v, pa.bool_())),
    st.lists(st.one_of(st.none(), st.lists(st.integers(0, 9), max_size=3)), max_size=10).map(
        lambda v: pa.array(v, pa.list_(pa.int64()))),
)


@settings(max_examples=60, deadline=None)
@given(VALUES, st.lists(st.integers(0, 40), max_size=4), st.lists(st.integers(0, 40), max_size=4))
def test_property_chunking_does_not_change_the_key(arr: Any, cuts1: list[int],
                                                   cuts2: list[int]) -> None:
    """The same values chunked differently (or sliced) share a key; round trips are exact."""
    a, b = rechunk(arr, cuts1), rechunk(arr, cuts2)
    assert key(a) == key(b)
    assert key(pa.table({"x": a})) == key(pa.table({"x": b}))
    assert roundtrip(a).equals(a) and roundtrip(arr).equals(arr)
    if len(arr) and arr[0].is_valid:
        changed = pa.array([None, *arr.to_pylist()[1:]], arr.type)
        assert key(changed) != key(arr)


def test_nulls_and_values_under_them_are_handled() -> None:
    """A null differs from a zero or an empty string; garbage under a null does not count."""
    assert key(pa.array([1, None])) != key(pa.array([1, 0]))
    assert key(pa.array(["a", None])) != key(pa.array(["a", ""]))
    assert key(pa.array([1, 2, 3])[1:]) == key(pa.array([2, 3]))
    assert key(pa.array([1.0, None], pa.float32())) != key(pa.array([1.0, None], pa.float64()))


def test_table_schema_is_in_the_key() -> None:
    """Column names, order, types and schema metadata change a Table's key."""
    t = pa.table({"a": [1, 2], "b": ["x", "y"]})
    assert key(t) == key(pa.Table.from_batches(t.to_batches(max_chunksize=1)))
    assert key(t) != key(t.rename_columns(["a", "c"]))
    assert key(t) != key(t.select(["b", "a"]))
    assert key(t) != key(t.replace_schema_metadata({"k": "v"}))
    assert key(t) != key(t.to_batches()[0])  # a RecordBatch is another type
    d = pa.array(["a", "b", "a"]).dictionary_encode()
    assert key(pa.table({"d": d})) != key(pa.table({"d": pa.array(["a", "b", "a"])}))


def test_every_arrow_container_round_trips() -> None:
    """Table, RecordBatch, Array and ChunkedArray come back equal, with their own types."""
    t = pa.table({"a": [1, None], "s": ["x", None], "l": [[1], []],
                  "ts": pa.array([0, 1], pa.timestamp("us", tz="UTC"))})
    for v in [t, t.to_batches()[0], t.column("s"), pa.array([{"k": 1}, None])]:
        back = roundtrip(v)
        assert type(back) is type(v) and back.equals(v)
        if hasattr(back, "schema"):
            assert back.schema.equals(v.schema, check_metadata=True)


def test_polars_frames_and_series() -> None:
    """polars: keys follow data and dtypes, not chunking; results round-trip with dtypes."""
    pl = need("polars")
    df = pl.DataFrame({"a": [1, None, 3], "s": ["x", "y", None],
                       "c": pl.Series(["u", "v", "u"], dtype=pl.Categorical),
                       "l": [[1], [2, 3], []]})
    back = roundtrip(df)
    assert back.equals(df) and back.schema == df.schema
    assert key(df) == key(pl.concat([df[:1], df[1:]], rechunk=False))
    assert key(df) != key(df.with_columns(pl.col("a").cast(pl.Int32)))
    assert key(df) != key(df.rename({"a": "b"}))
    s = df["s"]
    assert roundtrip(s).equals(s) and roundtrip(s).name == "s"
    assert key(s) != key(s.rename("t"))


@pytest.mark.parametrize("lib", ["pyarrow", "polars"])
def test_memoized_arrow_function_hits(lib: str) -> None:
    """A Table/DataFrame argument and result: the second call (re-chunked input) is a hit."""
    from persistmemo import Cache, memoize

    mod = need(lib)
    calls = []

    @memoize(cache=Cache("memory://"))
    def head(t: Any) -> Any:
        calls.append(1)
        return t.slice(0, 2)

    t = mod.DataFrame({"a": [1, 2, 3]}) if lib == "polars" else pa.table({"a": [1, 2, 3]})
    first = head(t)
    second = head(t.clone() if lib == "polars" else pa.Table.from_batches(
        t.to_batches(max_chunksize=1)))
    assert len(calls) == 1 and first.equals(second)


def test_polars_object_columns_are_refused() -> None:
    """polars Object columns reach Arrow as pointers: refused, never keyed by address."""
    pl = need("polars")
    from persistmemo import KeyEncodingError

    df = pl.DataFrame({"o": pl.Series([object()], dtype=pl.Object)})
    with pytest.raises(KeyEncodingError, match="Object"):
        key(df)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-(2**31), 2**31)),
                          st.one_of(st.none(), st.text(max_size=3))), max_size=12),
       st.integers(0, 12))
def test_property_polars_chunking_and_round_trip(rows: list[Any], cut: int) -> None:
    """polars frames: a re-chunked copy shares the key, the frame round-trips with dtypes."""
    pl = need("polars")
    df = pl.DataFrame({"i": [r[0] for r in rows], "s": [r[1] for r in rows]},
                      schema={"i": pl.Int64, "s": pl.String})
    chunked = pl.concat([df[:cut], df[cut:]], rechunk=False)
    assert key(df) == key(chunked)
    back = roundtrip(chunked)
    assert back.equals(df) and back.schema == df.schema
    if rows:
        changed = df.with_columns(pl.Series("i", [None if rows[0][0] is not None else 1]
                                            + [r[0] for r in rows[1:]], dtype=pl.Int64))
        assert key(changed) != key(df)
