"""numpy beyond plain arrays: structured dtypes and plain-data ndarray subclasses.

Results: a structured array is stored as its raw bytes plus a description of its dtype (field
names, formats, offsets, item size; nested records and sub-arrays included, object fields
refused). ``np.memmap`` is plain data and comes back as an ``ndarray``; ``np.recarray`` comes
back as a recarray. Other subclasses (``np.matrix``, masked arrays, user classes) carry more than
their data and are refused with a hint to return ``np.asarray(x)``.
(Keys of numpy values, memmaps included, are persistmemo._npkeys's.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from persistmemo._types import Carrier
from persistmemo._types._common import flat_bytes, qualname
from persistmemo.errors import SerializationError

_PLAIN_KINDS = frozenset("biufcmMSUV")


def _spec(dt: np.dtype[Any]) -> Any:
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return {"base": _spec(base), "shape": list(shape)}
    if dt.fields is None:
        if dt.kind not in _PLAIN_KINDS or dt.hasobject:
            raise SerializationError(f"numpy dtype {dt} holds Python objects")
        return dt.str
    names = list(dt.names or ())
    if any(len(dt.fields[n]) > 2 for n in names):
        raise SerializationError("structured dtypes with field titles are not supported")
    return {"names": names, "formats": [_spec(dt.fields[n][0]) for n in names],
            "offsets": [dt.fields[n][1] for n in names], "itemsize": dt.itemsize,
            "aligned": dt.isalignedstruct}


def _dtype(spec: Any) -> np.dtype[Any]:
    if isinstance(spec, str):
        dt = np.dtype(spec)
        if dt.kind not in _PLAIN_KINDS or dt.hasobject or dt.fields is not None:
            raise ValueError(f"refusing numpy dtype {spec!r}")
        return dt
    if "base" in spec:
        return np.dtype((_dtype(spec["base"]), tuple(int(n) for n in spec["shape"])))
    fields: Any = {"names": [str(n) for n in spec["names"]],
              "formats": [_dtype(f) for f in spec["formats"]],
              "offsets": [int(o) for o in spec["offsets"]], "itemsize": int(spec["itemsize"])}
    dtype: np.dtype[Any] = np.dtype(fields, align=bool(spec["aligned"]))
    return dtype


def _encode(a: Any) -> Carrier:
    cls = type(a)
    if cls is np.recarray:
        kind = "recarray"
    elif cls is np.ndarray or isinstance(a, np.memmap):
        kind = "ndarray"
    else:
        raise SerializationError(
            f"{qualname(cls)} is an ndarray subclass with more than plain data; return "
            "np.asarray(x) (an ndarray) or use serializer='pickle' with a secret")
    arr = np.asarray(a)
    if arr.dtype.fields is None and kind == "ndarray":
        arr = np.ascontiguousarray(arr)  # a memmap of a plain dtype: store as an ndarray
    meta = {"kind": kind, "dtype": _spec(arr.dtype), "shape": list(arr.shape)}
    return Carrier("numpy_extra:array", meta, [flat_bytes(arr)])


def value_encoder(cls: type) -> Callable[[Any], Carrier] | None:
    """Return the result encoder of ndarrays the plain msgpack codec does not handle."""
    return _encode


def decode(name: str, meta: Any, buffers: list[memoryview]) -> Any:
    """Rebuild a stored structured array, recarray or (former) memmap."""
    if name != "array":
        raise ValueError(f"unknown numpy carrier {name!r}")
    dtype = _dtype(meta["dtype"])
    shape = tuple(int(n) for n in meta["shape"])
    count = 1
    for n in shape:
        count *= n
    (raw,) = buffers
    if raw.nbytes != count * dtype.itemsize:
        raise ValueError("array buffer has the wrong size")
    arr = np.empty(shape, dtype)
    if raw.nbytes:
        flat_bytes(arr)[:] = np.frombuffer(raw, np.uint8)
    return arr.view(np.recarray) if meta["kind"] == "recarray" else arr

