"""pandas results: DataFrame, Series and Index through Arrow IPC, exactly or not at all.

Columns Arrow carries exactly go through ``pa.Table.from_pandas`` / ``to_pandas`` (pandas' own
metadata restores dtypes: nullable, categorical, tz, string, period, interval). Columns it does
not (object columns of Python values, complex, float16) travel beside it as persistmemo msgpack
payloads. Index and column-label names and a datetime index's ``freq`` travel in the metadata.
Before storing, the dtypes an empty slice comes back with are compared with the original's:
a frame that would not come back identical is refused (not stored) with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from persistmemo._types import Carrier
from persistmemo.errors import SerializationError


def _levels(idx: pd.Index) -> list[Any]:
    return [lv.dtype for lv in idx.levels] if isinstance(idx, pd.MultiIndex) else [idx.dtype]


def _to_arrow(df: pd.DataFrame) -> tuple[Any, list[list[Any]]]:
    """Arrow IPC bytes of ``df`` and the ``[position, dtype]`` casts that restore its dtypes."""
    import pyarrow as pa

    from persistmemo._types.arrow import ipc_bytes

    # Label names travel in the metadata, exactly (Arrow would turn non-str names into str).
    df = df.rename_axis(index=[None] * df.index.nlevels, columns=[None] * df.columns.nlevels)
    table = pa.Table.from_pandas(df)
    back = table.slice(0, 0).to_pandas()  # rebuilding no rows shows the dtypes we would return
    casts = _casts(df, back)
    if not (back.dtypes.equals(df.dtypes) and back.columns.equals(df.columns)
            and type(back.index) is type(df.index) and _levels(back.index) == _levels(df.index)
            and _levels(back.columns) == _levels(df.columns)):
        raise SerializationError(
            "this DataFrame's dtypes do not survive Arrow exactly; convert the columns to "
            "explicit dtypes or use serializer='pickle' with a secret")
    return ipc_bytes(table), casts


def _casts(df: pd.DataFrame, back: pd.DataFrame) -> list[list[Any]]:
    """Cast the string columns Arrow brings back with another storage (string[python] comes
    back as string[pyarrow]) to their own dtype, in ``back`` too, so the check sees them."""
    casts: list[list[Any]] = []
    for i, (want, got) in enumerate(zip(df.dtypes, back.dtypes, strict=True)):
        if want != got and isinstance(want, pd.StringDtype) and isinstance(got, pd.StringDtype):
            casts.append([i, str(want.storage), want.na_value is pd.NA])
            back.isetitem(i, back.iloc[:, i].astype(want))
    return casts


def _string_dtype(storage: str, na: bool) -> Any:
    return pd.StringDtype(storage, na_value=pd.NA if na else np.nan)


def _apply_casts(df: pd.DataFrame, casts: list[list[Any]]) -> None:
    for pos, storage, na in casts:
        df.isetitem(int(pos), df.iloc[:, int(pos)].astype(_string_dtype(str(storage), bool(na))))


def _packed(value: Any) -> bytes:
    """``value`` with persistmemo's own msgpack codec (exact Python and numpy types)."""
    from persistmemo._msgpack_ext import _pack

    return b"".join(_pack(value, "surrogatepass"))


def _beside(dtype: Any) -> bool:
    """Whether a column travels beside the Arrow stream (Arrow would not keep it exactly)."""
    return isinstance(dtype, np.dtype) and (dtype.hasobject or dtype.kind == "c"
                                            or dtype == np.float16)


def _freq(idx: pd.Index) -> str | None:
    freq = getattr(idx, "freqstr", None)
    return freq if isinstance(idx, (pd.DatetimeIndex, pd.TimedeltaIndex)) else None


def _encode_frame(df: pd.DataFrame) -> Carrier:
    side = [i for i, dt in enumerate(df.dtypes) if _beside(dt)]
    meta: dict[str, Any] = {"side": side, "freq": _freq(df.index),
                            "names": _packed([list(df.index.names), list(df.columns.names)])}
    if not isinstance(df.index, pd.MultiIndex) and df.index.dtype == object:
        # An object index (mixed Python values) travels beside, value by value, like columns.
        tail = [_packed(df.index.tolist())]
        meta["oindex"] = True
        df = df.set_axis(pd.RangeIndex(len(df)), axis=0)
    else:
        tail = []
    if not side and df.columns.is_unique:
        data, meta["casts"] = _to_arrow(df)
        return Carrier("pandas:frame", meta, [data, *tail])
    # Column labels travel as their own Index (duplicates, beside columns): the data columns
    # are renamed by position, so duplicate labels never meet Arrow.
    meta["labels"] = True
    keep = [i for i in range(df.shape[1]) if i not in set(side)]
    typed = df.iloc[:, keep].set_axis([f"c{i}" for i in keep], axis=1)
    data, meta["casts"] = _to_arrow(typed)
    columns, _ = _to_arrow(pd.DataFrame(index=df.columns))
    payloads = [_packed(_column_values(df.iloc[:, i])) for i in side]
    return Carrier("pandas:frame", meta, [data, columns, *payloads, *tail])


def _column_values(s: pd.Series) -> Any:
    values = s.to_numpy()
    return values.tolist() if values.dtype.hasobject else values  # objects one by one


def _decode_frame(meta: Any, buffers: list[memoryview]) -> pd.DataFrame:
    from persistmemo._msgpack_ext import _unpack
    from persistmemo._types.arrow import read_ipc

    df = read_ipc(buffers[0]).to_pandas()
    _apply_casts(df, meta.get("casts", []))
    if meta["side"] or meta.get("labels"):
        columns = read_ipc(buffers[1]).to_pandas().index
        payloads = buffers[2 : 2 + len(meta["side"])]
        for n, (pos, raw) in enumerate(zip(meta["side"], payloads, strict=True)):
            values = _unpack(raw)
            column = pd.Series(values, index=df.index,
                               dtype=object if isinstance(values, list) else None)
            df.insert(int(pos), f"__persistmemo_{n}", column)
        df.columns = columns
    if meta.get("oindex"):
        df.index = pd.Index(_unpack(buffers[-1]), dtype=object)
    index_names, column_names = _unpack(meta["names"])
    df.index.names = index_names
    df.columns.names = column_names
    if meta["freq"]:
        df.index = type(df.index)(df.index, freq=meta["freq"])
    return df


def _encode_series(s: pd.Series) -> Carrier:
    unnamed = s.name is None
    carrier = _encode_frame(s.to_frame(name="__series__" if unnamed else s.name))
    return Carrier("pandas:series", {"unnamed": unnamed, "frame": carrier.meta},
                   carrier.buffers)


def _encode_index(idx: pd.Index) -> Carrier:
    carrier = _encode_frame(pd.DataFrame(index=idx))
    return Carrier("pandas:index", {"frame": carrier.meta}, carrier.buffers)


_ATTRS = ("unit", "tz", "freqstr", "closed")


def _encode_scalar(value: Any) -> Carrier:
    """A Timestamp, Timedelta or Period as a one-row column of its own dtype."""
    s = pd.Series([value])
    back = s.iloc[0]
    same = type(back) is type(value) and bool(back == value) and all(
        getattr(back, a, None) == getattr(value, a, None) for a in _ATTRS)
    if not same:
        raise SerializationError(f"a {type(value).__name__} like {value!r} does not survive a "
                                 "pandas column exactly; return its parts instead")
    carrier = _encode_frame(s.to_frame("v"))
    return Carrier("pandas:scalar", {"frame": carrier.meta}, carrier.buffers)


_SCALARS = {"Timestamp": _encode_scalar, "Timedelta": _encode_scalar,
            "Period": _encode_scalar,
            # An Interval's endpoints keep their own types (a column would make them numpy's).
            "Interval": lambda v: Carrier("pandas:interval", {
                "ends": _packed([v.left, v.right]), "closed": v.closed}),
            "NAType": lambda v: Carrier("pandas:na", None),
            "NaTType": lambda v: Carrier("pandas:nat", None)}


def value_encoder(cls: type) -> Callable[[Any], Carrier] | None:
    """Return the result encoder of a pandas class, or None."""
    for base in cls.__mro__:
        if base.__module__.startswith("pandas") and base.__qualname__ in _SCALARS:
            return _SCALARS[base.__qualname__]
    if issubclass(cls, pd.DataFrame):
        return _encode_frame
    if issubclass(cls, pd.Series):
        return _encode_series
    if issubclass(cls, pd.Index):
        return _encode_index
    if issubclass(cls, pd.Categorical):
        return _encode_categorical
    return None


def _encode_categorical(c: pd.Categorical) -> Carrier:
    carrier = _encode_frame(pd.DataFrame({"v": c}))
    return Carrier("pandas:categorical", {"frame": carrier.meta}, carrier.buffers)


def decode(name: str, meta: Any, buffers: list[memoryview]) -> Any:
    """Rebuild a stored pandas value."""
    if name == "frame":
        return _decode_frame(meta, buffers)
    if name == "series":
        s = _decode_frame(meta["frame"], buffers).iloc[:, 0]
        return s.rename(None) if meta["unnamed"] else s
    if name == "index":
        return _decode_frame(meta["frame"], buffers).index
    if name == "categorical":
        return _decode_frame(meta["frame"], buffers).iloc[:, 0].array
    if name == "scalar":
        return _decode_frame(meta["frame"], buffers).iloc[0, 0]
    if name == "interval":
        from persistmemo._msgpack_ext import _unpack

        left, right = _unpack(meta["ends"])
        return pd.Interval(left, right, closed=meta["closed"])
    if name == "na":
        return pd.NA
    if name == "nat":
        return pd.NaT
    raise ValueError(f"unknown pandas carrier {name!r}")
