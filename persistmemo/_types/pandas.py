"""pandas: DataFrame, Series, Index (all kinds), Categorical and scalars as keys; frames as results.

Key: every row, no sampling, and never ``hash_pandas_object`` (its output changed between pandas
versions; this encoding is ours). A frame is its column labels (as an Index), its index, its
``attrs`` and, per column, its dtype (``str(dtype)``: nullable, tz, unit, string storage) and
values. numpy-backed values are hashed in place; masked (nullable) arrays as data + mask with
the data under NA zeroed; categoricals as codes + categories + ordered; Arrow-backed arrays
through the Arrow stream encoding; object values one by one with the canonical encoding. A
``RangeIndex`` is keyed by its values, like the equal int64 ``Index`` (pandas treats them as
equivalent); a ``MultiIndex`` by its level values, so differently built equal indexes agree.

Results: see :mod:`persistmemo._types._pandas_values`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from persistmemo._types import Unsupported
from persistmemo._types._common import canonical, ndarray_body, seq, text, u64
from persistmemo._types._pandas_values import decode as decode
from persistmemo._types._pandas_values import value_encoder as value_encoder


def _objects(values: Any) -> bytes:
    return b"O" + seq(canonical(v) for v in values)


def array_body(arr: Any) -> bytes:
    """Canonical body of a column's values (numpy array or pandas ExtensionArray)."""
    out = text(str(arr.dtype))
    if isinstance(arr, np.ndarray):
        return out + (_objects(arr) if arr.dtype.hasobject else ndarray_body(arr))
    if isinstance(arr, pd.Categorical):
        cats = index_body(arr.categories)
        return out + (b"T" if arr.ordered else b"F") + cats + ndarray_body(arr.codes)
    if hasattr(arr, "_pa_array"):  # ArrowExtensionArray, ArrowStringArray
        from persistmemo._types.arrow import chunked_body

        pa_arr = arr._pa_array
        return out + b"W" + chunked_body(pa_arr.chunks, len(pa_arr), pa_arr.nbytes)
    if hasattr(arr, "_mask") and hasattr(arr, "_data"):  # Int64, Float64, boolean
        data, mask = arr._data, arr._mask
        if mask.any():  # the values under NA are arbitrary
            data = data.copy()
            data[mask] = 0
        return out + b"K" + ndarray_body(mask) + ndarray_body(data)
    if hasattr(arr, "asi8") and arr.dtype.kind in "mM":  # datetime (tz), timedelta
        return out + b"8" + ndarray_body(np.asarray(arr.asi8))
    if type(arr).__name__ in ("NumpyExtensionArray", "PandasArray"):  # (PandasArray: < 2.1)
        return array_body(arr.to_numpy())
    return out + _objects(arr.to_numpy(dtype=object))  # period, interval, sparse, strings, ...


def index_body(idx: pd.Index) -> bytes:
    """Canonical body of an Index (RangeIndex as values, MultiIndex by level values)."""
    names = canonical(list(idx.names))
    if isinstance(idx, pd.MultiIndex):
        levels = (array_body(idx.get_level_values(i).array) for i in range(idx.nlevels))
        return text("pandas.MultiIndex") + names + u64(len(idx)) + seq(levels)
    values = idx.to_numpy() if isinstance(idx, pd.RangeIndex) else idx.array
    freq = getattr(idx, "freqstr", None)
    return text("pandas.Index") + names + canonical(freq) + array_body(values)


def _series_body(s: pd.Series) -> bytes:
    return text("pandas.Series") + canonical(s.name) + index_body(s.index) + array_body(s.array)


def _frame_body(df: pd.DataFrame) -> bytes:
    out = text("pandas.DataFrame") + index_body(df.columns) + index_body(df.index)
    out += canonical(dict(df.attrs)) + u64(df.shape[1])
    dtypes = set(df.dtypes)
    dtype = dtypes.pop() if len(dtypes) == 1 else None
    if df.shape[1] > 1 and isinstance(dtype, np.dtype) and dtype.kind in "biufc":
        # One numpy dtype: the same bytes as column by column, from one 2-D view (no Series).
        values = df.to_numpy()
        if not values.flags.f_contiguous:
            values = np.asfortranarray(values)  # one transposing copy, not one per column
        head = text(str(dtype))
        return out + b"".join(head + ndarray_body(values[:, i]) for i in range(df.shape[1]))
    for i in range(df.shape[1]):
        out += array_body(df.iloc[:, i].array)
    return out


def _timestamp(ts: Any) -> bytes:
    if ts is pd.NaT:
        return text("pandas.NaT")
    return text("pandas.Timestamp") + text(ts.isoformat()) + text(ts.unit) + text(str(ts.tz))


_SCALARS: dict[str, Callable[[Any], bytes]] = {
    "Timestamp": _timestamp,
    "NaTType": _timestamp,
    "Timedelta": lambda v: text("pandas.Timedelta") + text(v.isoformat()) + text(v.unit),
    "Period": lambda v: text("pandas.Period") + text(str(v)) + text(v.freqstr),
    "Interval": lambda v: (text("pandas.Interval") + canonical(v.left) + canonical(v.right)
                           + text(v.closed)),
    "NAType": lambda v: text("pandas.NA"),
}


def key_encoder(cls: type) -> Callable[[Any], bytes]:
    """Return the key encoder of a pandas class."""
    if issubclass(cls, pd.DataFrame):
        return _frame_body
    if issubclass(cls, pd.Series):
        return _series_body
    if issubclass(cls, pd.Index):
        return index_body
    if issubclass(cls, pd.Categorical):
        return lambda c: text("pandas.Categorical") + array_body(c)
    for base in cls.__mro__:
        enc = _SCALARS.get(base.__qualname__)
        if enc is not None and base.__module__.startswith("pandas"):
            return enc
    raise Unsupported(f"{cls.__qualname__} is not supported")
