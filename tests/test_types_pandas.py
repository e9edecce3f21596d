"""pandas values: keys from every row, names, order and dtype; exact round trips via Arrow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _types_helpers import key, need, roundtrip
from hypothesis import given, settings
from hypothesis import strategies as st

from persistmemo import Cache, memoize

pd = need("pandas")
need("pyarrow")
hpd = pytest.importorskip("hypothesis.extra.pandas")
from pandas.testing import (  # noqa: E402
    assert_frame_equal,
    assert_index_equal,
    assert_series_equal,
)


def rich_frame() -> Any:
    """A frame with every kind of column the issue names."""
    return pd.DataFrame({
        "i": [1, 2, 3],
        "f": [1.5, np.nan, -0.0],
        "n": pd.array([1, None, 3], dtype="Int64"),
        "c": pd.Categorical(["a", "b", "a"], categories=["b", "a"], ordered=True),
        "t": pd.date_range("2024-01-01", periods=3, tz="Europe/Paris"),
        "s": pd.array(["x", None, "z"], dtype="string"),
        "o": ["u", "v", "w"],
        "b": pd.array([True, None, False], dtype="boolean"),
        "td": pd.to_timedelta([1, 2, 3], unit="s"),
    }, index=pd.Index([10, 20, 30], name="id"))


def test_rich_frame_round_trips_exactly() -> None:
    """Every dtype (nullable, categorical, tz, string, timedelta) comes back exactly."""
    df = rich_frame()
    back = roundtrip(df)
    assert_frame_equal(back, df, check_exact=True)
    assert back.dtypes.equals(df.dtypes)
    back.iloc[0, 0] = 99  # the result is an ordinary, writable frame
    assert df.iloc[0, 0] == 1


@pytest.mark.parametrize("change", [
    lambda d: d.assign(f=[1.5, np.nan, 0.0]),  # -0.0 -> 0.0
    lambda d: d.assign(i=[1, 2, 4]),
    lambda d: d.astype({"i": "int32"}),
    lambda d: d.rename(columns={"o": "p"}),
    lambda d: d[list(d.columns[::-1])],
    lambda d: d.set_axis([10, 20, 31]).rename_axis("id"),
    lambda d: d.rename_axis("key"),
    lambda d: d.assign(c=d["c"].cat.set_categories(["a", "b"], ordered=True)),
    lambda d: d.assign(c=d["c"].cat.as_unordered()),
    lambda d: d.assign(t=d["t"].dt.tz_convert("UTC")),
    lambda d: d.assign(n=pd.array([1, 2, 3], dtype="Int64")),
    lambda d: d.assign(s=pd.array(["x", "", "z"], dtype="string")),
    lambda d: d.iloc[:2],
], ids=["negzero", "value", "dtype", "colname", "order", "index", "indexname", "categories",
        "ordered", "tz", "na", "na-vs-empty", "rows"])
def test_any_change_changes_the_key(change: Any) -> None:
    """A change of one element, dtype, name, order, index or category changes the key."""
    df = rich_frame()
    assert key(change(df)) != key(df)


def test_equal_frames_built_differently_share_a_key() -> None:
    """Copies, dict- vs array-built frames and concatenated halves share the key."""
    rng = np.random.default_rng(0)
    arr = rng.random((50, 4))
    a = pd.DataFrame(arr, columns=list("abcd"))
    b = pd.DataFrame({c: arr[:, i].copy() for i, c in enumerate("abcd")})
    c = pd.concat([a.iloc[:20], a.iloc[20:]])
    assert key(a) == key(b) == key(c) == key(a.copy())
    df = rich_frame()
    assert key(df) == key(df.copy(deep=True))


def test_series_index_and_categorical_keys() -> None:
    """Series name and index, MultiIndex levels and Categorical categories are in the key."""
    s = pd.Series([1.0, 2.0], index=["a", "b"], name="x")
    assert key(s) == key(s.copy())
    assert key(s) != key(s.rename("y"))
    assert key(s) != key(s.set_axis(["a", "c"]))
    mi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
    mi2 = pd.MultiIndex.from_arrays([["a", "b"], [1, 2]], names=["k", "n"])
    assert key(mi) == key(mi2)
    assert key(mi) != key(mi.set_names(["k", "m"]))
    assert key(pd.RangeIndex(3)) == key(pd.Index([0, 1, 2]))  # pandas treats them as equivalent
    assert key(pd.RangeIndex(3)) != key(pd.RangeIndex(4))
    c = pd.Categorical(["a", "b"], categories=["a", "b", "z"])
    assert key(c) != key(pd.Categorical(["a", "b"], categories=["a", "b"]))


def test_scalars_and_missing_values_are_keys() -> None:
    """Timestamps (with tz), Timedelta, Period, NA and NaT are encodable and distinct."""
    ts = pd.Timestamp("2024-01-01 12:00", tz="UTC")
    assert key(ts) != key(ts.tz_convert("Europe/Paris"))
    assert key(pd.NA) != key(pd.NaT) != key(None)
    assert key(pd.Timedelta(1, "s")) != key(pd.Timedelta(2, "s"))
    assert key(pd.Period("2024-01", "M")) != key(pd.Period("2024-01", "D"))
    assert key(pd.Series([pd.NA, 1], dtype=object)) != key(pd.Series([None, 1], dtype=object))


def test_series_and_index_results_round_trip() -> None:
    """Series (named and unnamed), Index, RangeIndex and MultiIndex results come back exact."""
    for s in [pd.Series([1, 2], name="x"), pd.Series([1.5, None]), pd.Series(["a", None]),
              pd.Series([1, 2], name=3, index=pd.Index(["p", "q"], name="k"))]:
        assert_series_equal(roundtrip(s), s, check_exact=True)
    for idx in [pd.RangeIndex(2, 20, 3, name="r"), pd.Index(["a", "b"], name="s"),
                pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"]),
                pd.DatetimeIndex(["2024-01-01"], tz="UTC")]:
        assert_index_equal(roundtrip(idx), idx, exact=True)


def test_object_columns_keep_their_python_values() -> None:
    """Object columns of mixed values (ints, strs, None, Decimal) come back as the same objects."""
    from decimal import Decimal

    df = pd.DataFrame({"a": pd.Series([1, "x", None], dtype=object), "n": [1.0, 2.0, 3.0],
                       "d": pd.Series([Decimal("1.10"), 2, (1, 2)], dtype=object)})
    back = roundtrip(df)
    assert_frame_equal(back, df, check_exact=True)
    assert [type(v) for v in back["d"]] == [Decimal, int, tuple]
    s = pd.Series([1, "a"], dtype=object, name="m")
    assert_series_equal(roundtrip(s), s, check_exact=True)


COLUMNS = [
    hpd.column("i", dtype=np.int64),
    hpd.column("f", dtype=np.float64),
    hpd.column("u", dtype=np.uint8),
    hpd.column("b", dtype=bool),
    hpd.column("s", elements=st.text(max_size=5)),
    hpd.column("t", dtype="datetime64[ns]"),
]


@settings(max_examples=40, deadline=None)
@given(hpd.data_frames(COLUMNS, index=hpd.range_indexes(max_size=8)))
def test_property_frames_round_trip_and_key(df: Any) -> None:
    """Generated frames round-trip exactly; a deep copy shares the key; a change does not."""
    assert_frame_equal(roundtrip(df), df, check_exact=True)
    assert key(df) == key(df.copy(deep=True))
    if len(df):
        changed = df.copy()
        changed.iloc[0, 0] = changed.iloc[0, 0] + 1 if changed.iloc[0, 0] < 2**62 else 0
        assert key(changed) != key(df)


@settings(max_examples=30, deadline=None)
@given(hpd.series(dtype=float, index=hpd.indexes(dtype=int, max_size=6, unique=True),
                  name=st.sampled_from([None, "x", 3])))
def test_property_series_round_trip(s: Any) -> None:
    """Generated Series with integer indexes round-trip exactly."""
    assert_series_equal(roundtrip(s), s, check_exact=True)
    assert key(s) == key(s.copy())


def test_memoized_frame_function_is_served_from_the_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataFrame in, a DataFrame out: the second call is a hit and pickle is never used."""
    import pickle

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("pickle must not be called")

    monkeypatch.setattr(pickle, "loads", boom)
    calls = []

    @memoize(cache=Cache("memory://"))
    def summary(df: Any) -> Any:
        calls.append(1)
        return df.describe(include="all")

    df = rich_frame()[["i", "f", "o"]]
    first = summary(df)
    second = summary(df.copy())
    assert len(calls) == 1
    assert_frame_equal(first, second, check_exact=True)


def test_homogeneous_fast_path_gives_the_column_by_column_key() -> None:
    """A one-dtype frame from a 2-D array keys like the same columns built one by one."""
    rng = np.random.default_rng(1)
    for dtype in ("float32", "int64", "bool"):
        arr = (rng.random((7, 5)) * 10).astype(dtype)
        wide = pd.DataFrame(arr)
        by_column = pd.DataFrame({i: arr[:, i].copy() for i in range(5)})
        blocks = pd.concat([pd.DataFrame(arr[:, :2]),
                            pd.DataFrame(arr[:, 2:], columns=[2, 3, 4])], axis=1)
        assert key(wide) == key(by_column) == key(blocks)
        assert key(pd.DataFrame(np.ascontiguousarray(arr))) == key(wide)


ROWS = st.lists(st.tuples(
    st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    st.one_of(st.none(), st.text(max_size=4)),
    st.sampled_from(["lo", "mid", "hi"]),
    st.one_of(st.none(), st.integers(0, 10**9)),
    st.one_of(st.none(), st.booleans()),
    st.floats(allow_nan=True, allow_infinity=True, width=32)), max_size=10)


@settings(max_examples=40, deadline=None)
@given(ROWS, st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]))
def test_property_extension_dtypes_round_trip_and_key(rows: list[Any], tz: str) -> None:
    """Nullable ints/bools, strings, categoricals, tz datetimes, float32: exact round trips;
    a deep copy shares the key; changing one NA into a value does not."""
    cols = list(zip(*rows)) if rows else [()] * 6
    df = pd.DataFrame({
        "n": pd.array(list(cols[0]), dtype="Int64"),
        "s": pd.array(list(cols[1]), dtype="string"),
        "c": pd.Categorical(list(cols[2]), categories=["hi", "mid", "lo"], ordered=True),
        "t": pd.to_datetime(list(cols[3]), unit="s", utc=True).tz_convert(tz),
        "b": pd.array(list(cols[4]), dtype="boolean"),
        "f": np.array(cols[5], dtype=np.float32),
    })
    assert_frame_equal(roundtrip(df), df, check_exact=True)
    assert key(df) == key(df.copy(deep=True))
    if rows and rows[0][0] is None:
        changed = df.copy()
        changed.loc[0, "n"] = 0
        assert key(changed) != key(df)


def test_names_freq_and_non_arrow_columns_round_trip() -> None:
    """Tuple/int label names, a DatetimeIndex freq, complex and float16 columns come back."""
    df = pd.DataFrame({"z": np.array([1 + 2j, 3j]), "h": np.array([1, 2], np.float16),
                       "a": [1, 2]},
                      index=pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC"))
    df.index.name = ("when", 1)
    df.columns.name = 7
    back = roundtrip(df)
    assert_frame_equal(back, df, check_exact=True, check_freq=True)
    assert back.index.freq == df.index.freq and back.index.name == ("when", 1)
    idx = pd.date_range("2024", periods=3, freq="D", name="d")
    assert roundtrip(idx).freq == idx.freq


def test_frames_arrow_would_alter_are_refused_not_altered() -> None:
    """A MultiIndex level Arrow would turn from int to float is refused, never changed."""
    from persistmemo.errors import SerializationError

    mi = pd.MultiIndex.from_arrays([[1, None], ["a", "b"]])
    with pytest.raises(SerializationError, match="survive Arrow"):
        roundtrip(pd.Series([1, 2], index=mi))
