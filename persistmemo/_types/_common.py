"""Shared helpers of the third-party type modules: canonical pieces, in-place buffer hashing."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from blake3 import blake3

from persistmemo._types import Unsupported

_BIG = 1 << 20  # from 1 MiB, BLAKE3 hashes with all cores
_u64 = struct.Struct(">Q").pack
_i64 = struct.Struct(">q").pack


def text(s: str) -> bytes:
    """Length-prefixed UTF-8, as in the canonical key encoding."""
    b = s.encode("utf-8", "surrogatepass")
    return _u64(len(b)) + b


def u64(n: int) -> bytes:
    """Big-endian unsigned 64-bit."""
    return _u64(n)


def i64(n: int) -> bytes:
    """Big-endian signed 64-bit."""
    return _i64(n)


def new_hasher(size_hint: int = 0) -> Any:
    """A BLAKE3 hasher, multi-threaded when the data is big."""
    return blake3(max_threads=blake3.AUTO if size_hint >= _BIG else 1)


def digest(data: Any) -> bytes:
    """BLAKE3 of a bytes-like object, hashed in place (32 bytes)."""
    view = memoryview(data)
    return new_hasher(view.nbytes).update(view).digest()  # type: ignore[no-any-return]


def flat_bytes(arr: Any) -> Any:
    """A 1-D uint8 view of a numpy array's C-order bytes (copies only if not contiguous)."""
    import numpy as np

    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(np.uint8) if arr.size else np.empty(0, np.uint8)


def ndarray_body(arr: Any) -> bytes:
    """Canonical body of a plain numpy array: dtype, shape and BLAKE3 of the C-order bytes."""
    if arr.dtype.hasobject:
        return b"O" + u64(len(arr)) + b"".join(canonical(v) for v in arr.tolist())
    out = b"A" + text(arr.dtype.str) + u64(arr.ndim) + b"".join(map(u64, arr.shape))
    return out + digest(flat_bytes(arr))


def canonical(value: Any) -> bytes:
    """The canonical key bytes of a nested value (raises :class:`Unsupported`)."""
    from persistmemo._canonical import canonical_bytes
    from persistmemo.errors import KeyEncodingError

    try:
        return canonical_bytes(value)
    except KeyEncodingError as exc:
        raise Unsupported(f"it holds a {exc.type_name} value with no canonical encoding") from None


def seq(parts: Iterable[bytes]) -> bytes:
    """A count-prefixed concatenation of self-delimiting parts."""
    items = list(parts)
    return u64(len(items)) + b"".join(items)


def qualname(cls: type) -> str:
    """``module.QualName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def class_identity(cls: type) -> bytes:
    """A class's qualified name and the fingerprint of its code (cached per class)."""
    cached = _CLASS_IDS.get(cls)
    if cached is None:
        import types

        from persistmemo.keys import code_fingerprint

        # The methods too: their code is found even when the class's source is not.
        methods = sorted((k, v) for k, v in vars(cls).items() if isinstance(v, types.FunctionType))
        parts = seq(text(k) + text(code_fingerprint(v)) for k, v in methods)
        cached = text(qualname(cls)) + text(code_fingerprint(cls)) + parts
        _CLASS_IDS[cls] = cached
    return cached


_CLASS_IDS: dict[type, bytes] = {}
