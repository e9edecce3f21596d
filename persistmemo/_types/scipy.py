"""scipy.sparse matrices and arrays as keys and results (component arrays, no pickle).

Key: the class (``csr_matrix`` and ``csr_array`` behave differently), shape, dtype and the
canonical CSR form (duplicates summed, indices sorted, explicit zeros kept), so the same matrix
built in another order or format shares the key of its class. Results: the class, shape and the
format's component arrays as raw buffers; the class is looked up in ``scipy.sparse`` from a
fixed list of names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from persistmemo._types import Carrier, Unsupported
from persistmemo._types._common import ndarray_body, seq, text, u64
from persistmemo.errors import SerializationError

_FORMATS = ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")
_CLASSES = frozenset(f"{f}_{k}" for f in _FORMATS for k in ("matrix", "array"))
# What each stored format keeps (lil and dok travel as csr and are converted back).
_PARTS = {"csr": ("data", "indices", "indptr"), "csc": ("data", "indices", "indptr"),
          "bsr": ("data", "indices", "indptr"), "coo": ("data", "row", "col"),
          "dia": ("data", "offsets")}


def _class_name(m: Any) -> str:
    name = type(m).__name__
    if name not in _CLASSES or getattr(sp, name, None) is not type(m):
        raise Unsupported(f"{type(m).__qualname__} is not one of scipy.sparse's classes")
    return name


def _key(m: Any) -> bytes:
    if m.dtype.hasobject:
        raise Unsupported("sparse matrices of dtype=object have no canonical encoding")
    csr = sp.csr_array(m, copy=True)
    csr.sum_duplicates()  # also sorts the indices
    parts = (csr.data, csr.indices.astype(np.int64), csr.indptr.astype(np.int64))
    head = text("scipy.sparse") + text(_class_name(m)) + text(m.dtype.str)
    return head + seq(u64(n) for n in m.shape) + b"".join(ndarray_body(p) for p in parts)


def key_encoder(cls: type) -> Callable[[Any], bytes]:
    """Return the key encoder of scipy.sparse classes."""
    return _key


def _encode(m: Any) -> Carrier:
    try:
        name = _class_name(m)
    except Unsupported as exc:
        raise SerializationError(str(exc)) from None
    fmt = name.split("_")[0]
    if fmt in ("lil", "dok"):
        m = m.tocsr()
    stored = m.format
    arrays = [np.ascontiguousarray(getattr(m, p)) for p in _PARTS[stored]]
    for a in arrays:
        if a.dtype.hasobject:
            raise SerializationError("sparse matrices of dtype=object cannot be stored")
    meta = {"class": name, "format": stored, "shape": list(m.shape),
            "blocksize": list(getattr(m, "blocksize", ())) if stored == "bsr" else None,
            "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]}
    return Carrier("scipy:sparse", meta, [a.reshape(-1).view(np.uint8) for a in arrays])


def value_encoder(cls: type) -> Callable[[Any], Carrier] | None:
    """Return the result encoder of scipy.sparse classes."""
    return _encode


def _array(spec: Any, raw: memoryview) -> Any:
    dtype = np.dtype(str(spec[0]))
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError("refusing sparse component dtype")
    shape = tuple(int(n) for n in spec[1])
    return np.frombuffer(raw, dtype).reshape(shape).copy()


def decode(name: str, meta: Any, buffers: list[memoryview]) -> Any:
    """Rebuild a stored sparse matrix or array."""
    cls_name, stored = str(meta["class"]), str(meta["format"])
    if name != "sparse" or cls_name not in _CLASSES or stored not in _PARTS:
        raise ValueError("unknown sparse carrier")
    a = [_array(s, raw) for s, raw in zip(meta["arrays"], buffers, strict=True)]
    shape = tuple(int(n) for n in meta["shape"])
    if stored == "coo":
        m: Any = sp.coo_array((a[0], (a[1], a[2])), shape=shape)
    elif stored == "dia":
        m = sp.dia_array((a[0], a[1]), shape=shape)
    elif stored == "bsr":
        m = sp.bsr_array((a[0], a[1], a[2]), shape=shape, blocksize=tuple(meta["blocksize"]))
    else:
        m = getattr(sp, f"{stored}_array")((a[0], a[1], a[2]), shape=shape)
    if stored in ("csr", "csc", "bsr"):
        # The constructor checks only the array lengths: forged indices outside the shape
        # would be written out of bounds by toarray() (C++). Full check: linear in nnz.
        m.check_format(full_check=True)
    return getattr(sp, cls_name)(m.asformat(cls_name.split("_")[0]))
