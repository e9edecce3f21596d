"""Regressions found by probing the third-party value types as a hostile user (issue 8b)."""

from __future__ import annotations

from typing import Any

import pytest
from _types_helpers import key, need, roundtrip


def _frame_equal(a: Any, b: Any) -> None:
    pd = need("pandas")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.dtypes) == list(b.dtypes)


def test_duplicate_column_names_round_trip() -> None:
    """A frame with duplicate column labels is stored and comes back identical."""
    pd = need("pandas")
    need("pyarrow")
    df = pd.DataFrame([[1, 2.5, "x"]], columns=["a", "a", "b"])
    _frame_equal(df, roundtrip(df))
    mixed = pd.DataFrame([[1, 2, 3]], columns=pd.Index([0, 0, 1]))
    _frame_equal(mixed, roundtrip(mixed))


def test_duplicate_columns_with_object_column() -> None:
    """Duplicate labels with a column that travels beside the Arrow stream keep their order."""
    pd = need("pandas")
    need("pyarrow")
    df = pd.DataFrame({"a": [1, 2]})
    df = pd.concat([df, pd.Series([1, "z"], dtype=object, name="a"), df], axis=1)
    _frame_equal(df, roundtrip(df))


def test_string_python_storage_round_trip() -> None:
    """string[python] columns come back as string[python], not string[pyarrow]."""
    pd = need("pandas")
    need("pyarrow")
    df = pd.DataFrame({"s": pd.Series(["a", None], dtype="string[python]"),
                       "p": pd.Series(["a", None], dtype="string[pyarrow]"),
                       "i": pd.Series([1, None], dtype="Int64")})
    _frame_equal(df, roundtrip(df))


@pytest.mark.parametrize("make", [
    lambda pd: pd.Timestamp("2020-01-02 03:04:05.123456789"),
    lambda pd: pd.Timestamp("2020-01-02", tz="Europe/Paris"),
    lambda pd: pd.Timestamp("2020-01-02").as_unit("s"),
    lambda pd: pd.Timedelta(seconds=3, microseconds=7),
    lambda pd: pd.Period("2020Q3", freq="Q"),
    lambda pd: pd.Interval(0.5, 2.5, closed="both"),
    lambda pd: pd.Interval(1, 3),
])
def test_pandas_scalar_results(make: Any) -> None:
    """pandas scalars are results too: equal value, same type, same unit/tz/freq/closed."""
    pd = need("pandas")
    need("pyarrow")
    value = make(pd)
    out = roundtrip(value)
    assert type(out) is type(value) and out == value
    for attr in ("unit", "tz", "freqstr", "closed"):
        assert getattr(out, attr, None) == getattr(value, attr, None), attr
    if isinstance(value, pd.Interval):
        assert type(out.left) is type(value.left)


def test_na_and_nat_results_and_object_columns() -> None:
    """pd.NA and pd.NaT round-trip alone and inside object columns, not confused with None/NaN."""
    pd = need("pandas")
    np = need("numpy")
    need("pyarrow")
    assert roundtrip(pd.NA) is pd.NA and roundtrip(pd.NaT) is pd.NaT
    df = pd.DataFrame({"o": pd.Series([None, np.nan, pd.NA, pd.NaT, pd.Timestamp("2020"), 1],
                                      dtype=object)})
    out = roundtrip(df)
    _frame_equal(df, out)
    got = out["o"].tolist()
    assert got[0] is None and got[2] is pd.NA and got[3] is pd.NaT
    assert isinstance(got[1], float) and got[1] != got[1]


def test_object_columns_key_distinguish_na_kinds() -> None:
    """None, NaN, pd.NA and NaT in an object column are four different keys."""
    pd = need("pandas")
    np = need("numpy")
    keys = {key(pd.Series([v], dtype=object)) for v in (None, np.nan, pd.NA, pd.NaT)}
    assert len(keys) == 4


def test_categorical_result_round_trip() -> None:
    """A bare pandas.Categorical result comes back with its categories, order and NaNs."""
    pd = need("pandas")
    need("pyarrow")
    for cat in (pd.Categorical(["b", None, "a"], categories=["b", "a", "z"], ordered=True),
                pd.Categorical([1, 2, 1]), pd.Categorical([], categories=["x"])):
        out = roundtrip(cat)
        assert type(out) is pd.Categorical
        pd.testing.assert_extension_array_equal(out, cat, check_exact=True)
        assert out.ordered == cat.ordered and list(out.categories) == list(cat.categories)


def test_mmap_corruption_after_a_verified_hit_hides_behind_no_mtime(tmp_path: Any) -> None:
    """A file rewritten in place with its mtime restored is re-verified: a miss, not wrong data."""
    import os

    np = need("numpy")
    from persistmemo import Cache

    calls: list[int] = []
    with Cache(tmp_path / "c", mmap=True) as cache:

        @cache.memoize
        def make(n: int) -> Any:
            calls.append(n)
            return np.full(n, 7, dtype=np.int64)

        make(10_000)
        assert (make(10_000) == 7).all() and calls == [10_000]  # verified, remembered
        (path,) = sorted((tmp_path / "c").rglob("*.val"))
        st = os.stat(path)
        data = bytearray(path.read_bytes())
        data[-8:] = np.int64(8).tobytes()
        with open(path, "r+b") as f:  # same inode, same size
            f.write(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        again = make(10_000)
        assert (again == 7).all() and calls == [10_000, 10_000]


def test_tied_weights_are_part_of_a_module_key() -> None:
    """A model whose two layers share one weight differs from one with two equal copies."""
    torch = need("torch")
    nn = torch.nn

    class Tied(nn.Module):
        def __init__(self, tie: bool) -> None:
            super().__init__()
            self.enc = nn.Linear(3, 3, bias=False)
            self.dec = nn.Linear(3, 3, bias=False)
            with torch.no_grad():
                self.enc.weight.copy_(torch.arange(9.0).reshape(3, 3))
                self.dec.weight.copy_(self.enc.weight)
            if tie:
                self.dec.weight = self.enc.weight

    assert key(Tied(True)) != key(Tied(False))
    assert key(Tied(True)) == key(Tied(True)) and key(Tied(False)) == key(Tied(False))
    shared = Tied(True)
    with torch.no_grad():
        shared.enc.weight[0, 0] = -1.0  # both layers see the change
    assert key(shared) != key(Tied(True))


def test_state_dict_arguments_are_keyed_by_content_and_order() -> None:
    """A model's state_dict() (an OrderedDict of tensors) is a key; values and order count."""
    from collections import OrderedDict

    torch = need("torch")
    torch.manual_seed(0)
    sd = torch.nn.Linear(3, 2).state_dict()
    same = OrderedDict((k, v.clone()) for k, v in sd.items())
    assert key(sd) == key(same)
    changed = OrderedDict((k, v.clone()) for k, v in sd.items())
    changed["weight"][0, 0] += 1
    assert key(changed) != key(sd)
    assert key(OrderedDict(reversed(list(sd.items())))) != key(sd)
    assert key(dict(sd)) != key(sd)  # a plain dict is another type


def test_compiled_module_argument_error_names_the_fix() -> None:
    """A torch.compile()d module argument is refused with a message naming model._orig_mod."""
    torch = need("torch")
    import warnings

    from persistmemo.errors import KeyEncodingError

    with warnings.catch_warnings():  # torch's own deprecation noise while importing dynamo
        warnings.simplefilter("ignore", DeprecationWarning)
        compiled = torch.compile(torch.nn.Linear(2, 2))
    with pytest.raises(KeyEncodingError, match="_orig_mod"):
        key(compiled)


def test_object_index_of_mixed_values_round_trips() -> None:
    """An object index of mixed Python values (a Series, a frame, a bare Index) comes back exact."""
    pd = need("pandas")
    need("pyarrow")
    idx = pd.Index([1, "a", 2.5, None, ("t", 1)], dtype=object, name="k")
    s = pd.Series(range(5), index=idx, name="v")
    out = roundtrip(s)
    pd.testing.assert_series_equal(out, s, check_exact=True)
    assert [type(v) for v in out.index] == [type(v) for v in idx]
    _frame_equal(s.to_frame().assign(o=pd.Series([1, "x", 3, 4, 5], dtype=object, index=idx)),
                 roundtrip(s.to_frame().assign(o=pd.Series([1, "x", 3, 4, 5], dtype=object,
                                                           index=idx))))
    pd.testing.assert_index_equal(roundtrip(idx), idx, exact=True)
    empty = pd.Series([], index=pd.Index([], dtype=object), dtype="float64")
    pd.testing.assert_series_equal(roundtrip(empty), empty, check_exact=True)
