"""Canonical key encoding of numpy arrays and scalars (imported only when numpy values show up).

Only the *meaningful* bytes of each element are hashed: the padding bytes of aligned
structured dtypes and of x87 ``longdouble`` (10 significant bytes stored in 12 or 16) hold
garbage, so they are masked out, and equal arrays always share a key. ``datetime64`` and
``timedelta64`` are hashed as raw bytes (their unit is in the dtype). ``np.memmap`` is keyed as
the ndarray it is; a masked array by its data, its mask and its fill value (tag ``W``);
``np.matrix`` has its own tag (``X``). Other ndarray subclasses are refused: they may carry
state (units, metadata) that plain array bytes do not capture.
"""

from __future__ import annotations

import functools
from typing import Any

from blake3 import blake3

from persistmemo._canonical import _BIG_BUFFER, _text, _u64, _Unencodable

__all__ = ["enc_numpy"]


def _x87_longdouble(dt: Any) -> bool:
    import numpy as np

    return bool(dt.kind in "fc" and dt.base == dt and dt.itemsize in (12, 16, 24, 32)
                and np.finfo(np.longdouble).nmant == 63
                and dt.itemsize // (2 if dt.kind == "c" else 1) == np.dtype(np.longdouble).itemsize)


def _mask(dt: Any) -> bytes:
    """One byte per byte of an element: 1 where it carries information, 0 for padding."""
    if dt.fields is not None:
        mask = bytearray(dt.itemsize)
        for field in dt.fields.values():
            sub, offset = field[0], field[1]
            for i, b in enumerate(_mask(sub)):
                if b:
                    mask[offset + i] = 1
        return bytes(mask)
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        n = 1
        for s in shape:
            n *= s
        return bytes(_mask(base) * n)
    if _x87_longdouble(dt):  # x87 extended precision: 10 meaningful bytes, little-endian
        half = dt.itemsize // (2 if dt.kind == "c" else 1)
        return bytes((b"\1" * 10 + b"\0" * (half - 10)) * (dt.itemsize // half))
    return b"\1" * int(dt.itemsize)


def _descr(dt: Any) -> str:
    """``str(dtype.descr)``; for dtypes it cannot describe (overlapping or out-of-order
    fields) an explicit ``fields:`` text of names, offsets, sub-dtypes and the item size."""
    try:
        return str(dt.descr)
    except ValueError:
        fields = sorted((f[1], n, _descr(f[0])) for n, f in dt.fields.items())
        return f"fields:{fields!r}:{dt.itemsize}"


@functools.lru_cache(maxsize=256)
def _padding_index(dt: Any) -> Any:
    """The indices of the meaningful bytes of an element, or None when there is no padding."""
    import numpy as np

    mask = _mask(dt)
    if all(mask):
        return None
    return np.frombuffer(mask, dtype=np.uint8).nonzero()[0]


def _array_body(v: Any) -> bytes:
    """``text(descr) + u64(ndim) + u64(dim)... + BLAKE3-256(meaningful C-order bytes)``."""
    import numpy as np

    if v.dtype.hasobject:
        raise _Unencodable(v, "numpy arrays of dtype=object have no canonical encoding")
    if not v.flags.c_contiguous:
        v = np.ascontiguousarray(v)  # a view and its contiguous copy share one key
    flat = v.reshape(-1).view(np.uint8) if v.size and v.dtype.itemsize else np.empty(0, np.uint8)
    index = _padding_index(v.dtype)
    if index is not None and flat.size:
        flat = np.ascontiguousarray(flat.reshape(-1, v.dtype.itemsize)[:, index]).reshape(-1)
    data = memoryview(flat)  # type: ignore[arg-type]
    threads = blake3.AUTO if len(data) >= _BIG_BUFFER else 1
    digest = blake3(data, max_threads=threads).digest()
    out = bytearray(_text(_descr(v.dtype)) + _u64(v.ndim))
    for n in v.shape:
        out += _u64(n)
    return bytes(out + digest)


def enc_numpy(v: Any, out: bytearray, depth: int) -> None:
    """Encode a numpy array or scalar (tags ``A``, ``W``, ``X``, ``g``)."""
    import numpy as np

    cls = type(v)
    if cls is np.ndarray or cls is np.memmap:
        out += b"A" + _array_body(np.asarray(v))
    elif isinstance(v, np.ma.MaskedArray) and cls is np.ma.MaskedArray:
        out += b"W" + _array_body(np.asarray(v.data)) + _array_body(np.ma.getmaskarray(v))
        out += _array_body(np.array(v.fill_value, dtype=v.dtype))  # filled() depends on it
    elif cls is np.matrix:
        out += b"X" + _array_body(np.asarray(v))
    elif isinstance(v, np.generic) and not v.dtype.hasobject:
        raw = np.asarray(v).reshape(1).view(np.uint8).tobytes()
        index = _padding_index(v.dtype)
        if index is not None:
            raw = bytes(raw[i] for i in index.tolist())
        out += b"g" + _text(_descr(v.dtype)) + _u64(len(raw)) + raw
    elif isinstance(v, np.ndarray):
        raise _Unencodable(v, "ndarray subclasses other than memmap, masked arrays and matrix "
                              "may carry state the array bytes miss; pass np.asarray(x)")
    else:
        raise _Unencodable(v)
