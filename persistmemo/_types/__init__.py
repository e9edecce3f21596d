"""Keys and stored values for third-party types: torch, pandas, polars, pyarrow, scipy.sparse.

Each library has its own module here that imports the library lazily. This package imports
nothing heavy: a registry maps a class's top-level module and qualified name to the module that
handles it, and that module (and its library) is imported only when a value of that class is
being encoded or decoded. An argument or result of a library's type means the library is
already imported by the caller, so the lookup itself never imports one.

Keys: :func:`key_encoder` returns ``encode(value) -> bytes``, the canonical body appended after
the ``L`` tag by :mod:`persistmemo._canonical` (kind name first, then the type's own fields; raw
buffers are hashed in place with BLAKE3, never pickled, never a library's own hash function).

Values: :func:`encode_value` / :func:`decode_value` frame a *carrier*: the ext data of
``EXT_TYPED`` (see :mod:`persistmemo._msgpack_ext`) is ``u8 len + kind + u32 count + count x
(u64 offset, u64 size) + msgpack(meta)``, and the raw buffers travel out of band, after the
msgpack body, like numpy arrays. Decoders only read data (Arrow IPC, raw buffers, plain meta):
nothing is unpickled.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Unsupported", "decode_value", "encode_value", "key_encoder", "value_encoder"]

# (top-level module, class qualname) -> module in this package. Base classes count too, so a
# user's ``class Net(nn.Module)`` and an ``np.memmap`` result are found through their MRO.
_KEY_TYPES: dict[tuple[str, str], str] = {
    ("torch", "Tensor"): "torch",
    ("torch", "Parameter"): "torch",
    ("torch", "Module"): "torch",
    ("torch", "dtype"): "torch",
    ("torch", "device"): "torch",
    ("torch", "Size"): "torch",
    ("pandas", "DataFrame"): "pandas",
    ("pandas", "Series"): "pandas",
    ("pandas", "Index"): "pandas",
    ("pandas", "Categorical"): "pandas",
    ("pandas", "Timestamp"): "pandas",
    ("pandas", "Timedelta"): "pandas",
    ("pandas", "Period"): "pandas",
    ("pandas", "Interval"): "pandas",
    ("pandas", "NAType"): "pandas",
    ("pandas", "NaTType"): "pandas",
    ("pyarrow", "Table"): "arrow",
    ("pyarrow", "RecordBatch"): "arrow",
    ("pyarrow", "Array"): "arrow",
    ("pyarrow", "ChunkedArray"): "arrow",
    ("polars", "DataFrame"): "polars",
    ("polars", "Series"): "polars",
    ("scipy", "_spbase"): "scipy",
}
_VALUE_TYPES: dict[tuple[str, str], str] = {
    **_KEY_TYPES,
    ("numpy", "ndarray"): "numpy_extra",  # structured dtypes and plain-data subclasses only
}
_LIBRARIES = frozenset(m for m, _ in _VALUE_TYPES)
_MODULES: dict[str, Any] = {}
_u64 = struct.Struct(">Q").pack


class Unsupported(Exception):
    """A value of a handled library that has no encoding (the message says why and what to do)."""


def _module(name: str) -> Any:
    mod = _MODULES.get(name)
    if mod is None:
        mod = _MODULES[name] = importlib.import_module(f"persistmemo._types.{name}")
    return mod


def _lookup(cls: type, table: dict[tuple[str, str], str]) -> str | None:
    for base in cls.__mro__:
        top = base.__module__.partition(".")[0]
        if top in _LIBRARIES:
            name = table.get((top, base.__qualname__))
            if name is not None:
                return name
    return None


def key_encoder(cls: type) -> Callable[[Any], bytes] | None:
    """Return the canonical key encoder for instances of ``cls``, or None if none handles it."""
    try:
        return _KEY_CACHE[cls]
    except KeyError:
        pass
    name = _lookup(cls, _KEY_TYPES)
    enc = None if name is None else _guarded(_module(name).key_encoder(cls))
    if len(_KEY_CACHE) < 10_000:  # classes made on the fly must not grow it without bound
        _KEY_CACHE[cls] = enc
    return enc


def _guarded(enc: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """Turn a library's own error (RuntimeError, ArrowInvalid, RecursionError...) into
    :class:`Unsupported`, so the caller gets a KeyEncodingError naming the argument."""

    def encode(value: Any) -> bytes:
        try:
            return enc(value)
        except Unsupported:
            raise
        except Exception as exc:
            raise Unsupported(f"{type(exc).__name__}: {exc}"[:300]) from None

    return encode


_KEY_CACHE: dict[type, Callable[[Any], bytes] | None] = {}


def value_encoder(cls: type) -> Callable[[Any], Carrier] | None:
    """Return ``encode(value) -> Carrier`` for results of type ``cls``, or None."""
    name = _lookup(cls, _VALUE_TYPES)
    return None if name is None else _module(name).value_encoder(cls)


class Carrier:
    """A stored value: its kind (``module:name``), plain metadata and raw buffers."""

    __slots__ = ("buffers", "kind", "meta")

    def __init__(self, kind: str, meta: Any, buffers: Sequence[Any] = ()) -> None:
        self.kind = kind
        self.meta = meta
        self.buffers = list(buffers)  # anything exposing the buffer protocol, 1-D bytes


def encode_value(value: Any, add_buffer: Callable[[memoryview], int]) -> bytes | None:
    """Frame ``value`` as carrier ext data, or return None if no module handles its type.

    Raises:
        persistmemo.errors.SerializationError: a handled library's value that cannot be stored.
    """
    import msgpack

    enc = value_encoder(type(value))
    if enc is None:
        return None
    from persistmemo.errors import SerializationError

    try:
        carrier = enc(value)
    except SerializationError:
        raise
    except Exception as exc:  # a library's own error (ArrowNotImplementedError, ...)
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        raise SerializationError(f"cannot store a {name}: {exc!r}"[:500]) from exc
    kind = carrier.kind.encode("ascii")
    head = bytearray((len(kind),)) + kind + struct.pack(">I", len(carrier.buffers))
    for buf in carrier.buffers:
        view = memoryview(buf).cast("B")
        head += _u64(add_buffer(view)) + _u64(view.nbytes)
    meta: bytes = msgpack.packb(carrier.meta, use_bin_type=True)
    return bytes(head) + meta


def decode_value(data: bytes, take: Callable[[int, int], memoryview]) -> Any:
    """Rebuild a value from carrier ext data; ``take(offset, size)`` returns a raw buffer."""
    import msgpack

    klen = data[0]
    kind = data[1 : 1 + klen].decode("ascii")
    (count,) = struct.unpack_from(">I", data, 1 + klen)
    pos = 5 + klen
    buffers = []
    for _ in range(count):
        offset, size = struct.unpack_from(">QQ", data, pos)
        buffers.append(take(offset, size))
        pos += 16
    meta = msgpack.unpackb(data[pos:], raw=False, strict_map_key=False)
    module, _, name = kind.partition(":")
    if module not in _DECODERS:
        raise ValueError(f"unknown carrier kind {kind!r}")
    return _module(module).decode(name, meta, buffers)


_DECODERS = frozenset(_VALUE_TYPES.values())
