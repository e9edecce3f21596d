"""The canonical, type-tagged encoding of argument values (see docs/format.md).

Every value is a one-byte type tag followed by a self-delimiting body, so a concatenation of
encodings is unambiguous and ``1``, ``1.0``, ``True``, ``"1"``, ``b"1"``, ``(1,)``, ``[1]`` all
differ. Dicts and sets are sorted by their members' encoded bytes, so neither insertion order
nor ``PYTHONHASHSEED`` matters. This is part of the persisted key format: a change here must
bump ``persistmemo.keys.KEY_FORMAT``.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from blake3 import blake3

from persistmemo.errors import ConfigurationError, KeyEncodingError

if TYPE_CHECKING:  # imported lazily at run time: `import persistmemo` must stay fast
    import datetime as _dt
    import decimal
    import fractions
    import pathlib
    import uuid

__all__ = ["canonical_bytes", "register_key_encoder"]

_MAX_DEPTH = 200
_BIG_BUFFER = 1 << 20  # hash large array buffers with BLAKE3's multi-threaded mode

_u64 = struct.Struct(">Q").pack
_i64 = struct.Struct(">q").pack
_f64 = struct.Struct(">d").pack
_NAN = _f64(math.nan)
_encoders: dict[type, Callable[[Any], Any]] = {}


class _Unencodable(Exception):
    """Raised inside the encoder; carries the offending type and the path inside the argument."""

    def __init__(self, obj: Any, reason: str = "") -> None:
        super().__init__(reason)
        self.type_name = _qualname(type(obj))
        self.reason = reason
        self.path: list[str] = []


def register_key_encoder(cls: type, encoder: Callable[[Any], Any]) -> None:
    """Teach key building how to encode instances of ``cls`` (and its subclasses).

    ``encoder(obj)`` must return a key-encodable value that captures everything about ``obj``
    that can change the function's result (e.g. ``lambda p: (p.x, p.y)``).

    Example:
        >>> class Point:
        ...     def __init__(self, x, y): self.x, self.y = x, y
        >>> register_key_encoder(Point, lambda p: (p.x, p.y))
    """
    if not isinstance(cls, type):
        raise ConfigurationError(f"register_key_encoder() needs a class, got {cls!r}")
    _encoders[cls] = encoder


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _text(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return _u64(len(b)) + b


# -- the canonical encoder ------------------------------------------------------------------
# Each value is a one-byte type tag followed by a self-delimiting body, so a concatenation of
# encodings is unambiguous: ``1``, ``1.0``, ``True``, ``"1"``, ``b"1"``, ``(1,)``, ``[1]`` differ.


def _enc_int(v: int, out: bytearray, depth: int) -> None:
    if -(1 << 63) <= v < (1 << 63):
        out += b"i" + _i64(v)
    else:
        n = (v.bit_length() + 8) // 8
        out += b"I" + _u64(n) + v.to_bytes(n, "big", signed=True)


def _enc_float(v: float, out: bytearray, depth: int) -> None:
    out += b"f" + (_f64(v) if v == v else _NAN)


def _enc_str(v: str, out: bytearray, depth: int) -> None:
    out += b"s" + _text(v)


def _enc_bytes(v: bytes, out: bytearray, depth: int) -> None:
    out += b"b" + _u64(len(v)) + v


def _enc_bytearray(v: bytearray, out: bytearray, depth: int) -> None:
    out += b"B" + _u64(len(v)) + v


def _enc_none(v: None, out: bytearray, depth: int) -> None:
    out += b"N"


def _enc_bool(v: bool, out: bytearray, depth: int) -> None:
    out += b"T" if v else b"F"


def _enc_items(tag: bytes, items: Sequence[Any], out: bytearray, depth: int) -> None:
    out += tag + _u64(len(items))
    for i, item in enumerate(items):
        try:
            _enc(item, out, depth)
        except _Unencodable as e:
            e.path.append(f"[{i}]")
            raise


def _enc_tuple(v: tuple[Any, ...], out: bytearray, depth: int) -> None:
    _enc_items(b"(", v, out, depth)


def _enc_list(v: list[Any], out: bytearray, depth: int) -> None:
    _enc_items(b"[", v, out, depth)


def _sorted_members(tag: bytes, members: Iterable[Any], out: bytearray, depth: int) -> None:
    encoded = []
    for m in members:
        part = bytearray()
        try:
            _enc(m, part, depth)
        except _Unencodable as e:
            e.path.append("{...}")
            raise
        encoded.append(bytes(part))
    encoded.sort()  # order-free: sorted by the members' own canonical bytes
    out += tag + _u64(len(encoded)) + b"".join(encoded)


def _enc_dict(v: Mapping[Any, Any], out: bytearray, depth: int) -> None:
    pairs = []
    for k, val in v.items():
        part = bytearray()
        try:
            _enc(k, part, depth)
            _enc(val, part, depth)
        except _Unencodable as e:
            e.path.append(f"[{k!r}]" if isinstance(k, (str, int)) else "[...]")
            raise
        pairs.append(bytes(part))
    pairs.sort()  # keys are unique, so this sorts by the keys' canonical bytes
    out += b"{" + _u64(len(pairs)) + b"".join(pairs)


def _enc_set(v: set[Any], out: bytearray, depth: int) -> None:
    _sorted_members(b"S", v, out, depth)


def _enc_frozenset(v: frozenset[Any], out: bytearray, depth: int) -> None:
    _sorted_members(b"Z", v, out, depth)


def _enc_complex(v: complex, out: bytearray, depth: int) -> None:
    re, im = v.real, v.imag
    out += b"c" + (_f64(re) if re == re else _NAN) + (_f64(im) if im == im else _NAN)


def _enc_decimal(v: decimal.Decimal, out: bytearray, depth: int) -> None:
    # str() keeps the exponent: Decimal("1.0") and Decimal("1.00") can format differently.
    out += b"d" + _text(str(v))


def _enc_fraction(v: fractions.Fraction, out: bytearray, depth: int) -> None:
    out += b"q"
    _enc_int(v.numerator, out, depth)
    _enc_int(v.denominator, out, depth)


def _enc_tz(tz: _dt.tzinfo | None, ref: Any, out: bytearray) -> None:
    import datetime as _dt

    if tz is None:
        out += b"N"
    elif type(tz) is _dt.timezone:
        off = tz.utcoffset(None)
        out += b"z" + _i64(int(off.total_seconds() * 1_000_000)) + _text(tz.tzname(None) or "")
    else:
        key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo
        if not isinstance(key, str):
            raise _Unencodable(
                tz, "only datetime.timezone and zoneinfo.ZoneInfo tzinfo are supported")
        out += b"Z" + _text(_qualname(type(tz))) + _text(key)


def _enc_datetime(v: _dt.datetime, out: bytearray, depth: int) -> None:
    out += b"D" + _text(v.replace(tzinfo=None).isoformat()) + bytes([v.fold])
    _enc_tz(v.tzinfo, v, out)


def _enc_date(v: _dt.date, out: bytearray, depth: int) -> None:
    out += b"a" + _text(v.isoformat())


def _enc_time(v: _dt.time, out: bytearray, depth: int) -> None:
    out += b"t" + _text(v.replace(tzinfo=None).isoformat()) + bytes([v.fold])
    _enc_tz(v.tzinfo, None, out)


def _enc_timedelta(v: _dt.timedelta, out: bytearray, depth: int) -> None:
    out += b"e" + _i64(v.days) + _i64(v.seconds) + _i64(v.microseconds)


def _enc_uuid(v: uuid.UUID, out: bytearray, depth: int) -> None:
    out += b"u" + v.bytes


def _enc_path(v: pathlib.PurePath, out: bytearray, depth: int) -> None:
    out += b"p" + _text(type(v).__name__) + _text(str(v))


_Encoder = Callable[[Any, bytearray, int], None]
_DISPATCH: dict[type, _Encoder] = {
    int: _enc_int,
    str: _enc_str,
    float: _enc_float,
    bool: _enc_bool,
    type(None): _enc_none,
    tuple: _enc_tuple,
    list: _enc_list,
    dict: _enc_dict,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    set: _enc_set,
    frozenset: _enc_frozenset,
    complex: _enc_complex,
}
# Standard-library types, keyed by (module, qualname) so their modules are imported only when
# an argument of that type shows up (it is then already imported by the caller).
_STDLIB: dict[tuple[str, str], _Encoder] = {
    ("decimal", "Decimal"): _enc_decimal,
    ("fractions", "Fraction"): _enc_fraction,
    ("datetime", "datetime"): _enc_datetime,
    ("datetime", "date"): _enc_date,
    ("datetime", "time"): _enc_time,
    ("datetime", "timedelta"): _enc_timedelta,
    ("uuid", "UUID"): _enc_uuid,
    ("pathlib", "PurePosixPath"): _enc_path,
    ("pathlib", "PureWindowsPath"): _enc_path,
    ("pathlib", "PosixPath"): _enc_path,
    ("pathlib", "WindowsPath"): _enc_path,
}


def _enc(v: Any, out: bytearray, depth: int) -> None:
    fn = _DISPATCH.get(type(v))
    if fn is not None:
        if depth > _MAX_DEPTH:
            raise _Unencodable(v, f"nested deeper than {_MAX_DEPTH} levels (or contains itself)")
        fn(v, out, depth + 1)
    else:
        _enc_other(v, out, depth + 1)


def _enc_tagged(tag: bytes, cls: type, value: Any, out: bytearray, depth: int) -> None:
    out += tag + _text(_qualname(cls))
    _enc(value, out, depth)


def _enc_other(v: Any, out: bytearray, depth: int) -> None:
    """Encode everything that is not a plain builtin (checked in a fixed, documented order)."""
    cls = type(v)
    std = _STDLIB.get((cls.__module__, cls.__qualname__))
    if std is not None and sys.modules[cls.__module__].__dict__.get(cls.__qualname__) is cls:
        _DISPATCH[cls] = std  # the exact stdlib class: fast path from now on
        _enc(v, out, depth - 1)
        return
    hook = getattr(cls, "__persistmemo_key__", None)
    if hook is not None and not isinstance(v, type):
        _enc_tagged(b"K", cls, hook(v), out, depth)
        return
    for base in cls.__mro__:
        custom = _encoders.get(base)
        if custom is not None:
            _enc_tagged(b"R", cls, custom(v), out, depth)
            return
    from persistmemo import _types  # third-party types (torch, pandas, ...): lazy registry

    third = _types.key_encoder(cls)
    if third is not None:
        try:
            out += b"X" + third(v)
        except _types.Unsupported as e:
            raise _Unencodable(v, str(e)) from None
        return
    if cls.__module__ == "numpy":
        _enc_numpy(v, out, depth)
        return
    enum = sys.modules.get("enum")
    if enum is not None and isinstance(v, enum.Enum):
        _enc_tagged(b"E", cls, v.value, out, depth)
        return
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(v, pathlib.PurePath):
        _enc_path(v, out, depth)
        return
    if hasattr(cls, "__dataclass_fields__") and not isinstance(v, type):
        import dataclasses

        fields = tuple((f.name, getattr(v, f.name)) for f in dataclasses.fields(v))
        _enc_tagged(b"C", cls, fields, out, depth)
        return
    if isinstance(v, tuple) and hasattr(cls, "_fields"):  # NamedTuple
        _enc_tagged(b"M", cls, tuple(v), out, depth)
        return
    raise _Unencodable(v)


def _enc_numpy(v: Any, out: bytearray, depth: int) -> None:
    import numpy as np

    if type(v) is np.ndarray:
        if v.dtype.hasobject:
            raise _Unencodable(v, "numpy arrays of dtype=object have no canonical encoding")
        if not v.flags.c_contiguous:
            v = np.ascontiguousarray(v)  # a view and its contiguous copy share one key
        data = memoryview(v).cast("B") if v.ndim and v.size else v.tobytes()
        threads = blake3.AUTO if len(data) >= _BIG_BUFFER else 1
        digest = blake3(data, max_threads=threads).digest()
        out += b"A" + _text(str(v.dtype.descr)) + _u64(v.ndim)
        for n in v.shape:
            out += _u64(n)
        out += digest
    elif isinstance(v, np.generic) and not v.dtype.hasobject:
        out += b"g" + _text(str(v.dtype.descr)) + _u64(v.nbytes) + v.tobytes()
    else:
        raise _Unencodable(v)


def canonical_bytes(value: Any) -> bytes:
    """Return the canonical, type-tagged encoding of one value (raises KeyEncodingError)."""
    out = bytearray()
    try:
        _enc(value, out, 0)
    except _Unencodable as e:
        raise _key_error(e, "value") from None
    return bytes(out)


def _key_error(e: _Unencodable, param: str, func: str = "") -> KeyEncodingError:
    where = param + "".join(reversed(e.path))
    owner = f" of {func}()" if func else ""
    detail = f" ({e.reason})" if e.reason else ""
    return KeyEncodingError(
        f"cannot build a cache key: argument {where!r}{owner} has type {e.type_name}, which has "
        f"no canonical encoding{detail}. Fix: make it a dataclass or give the class a "
        f"__persistmemo_key__(self) method returning the state that determines the result, call "
        f"persistmemo.register_key_encoder({e.type_name.rsplit('.', 1)[-1]}, fn), or leave it out "
        f"of the key with ignore=[{param!r}].",
        parameter=where,
        type_name=e.type_name,
    )


# Exact types encoded without recursion (fast path for plain scalar arguments).
_SCALARS = frozenset({int, str, float, bool, type(None), bytes})
