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
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blake3 import blake3

from persistmemo._identity import module_name
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
_INLINE_MAX = 64  # a container/object encoding longer than this is replaced by its digest

_u64 = struct.Struct(">Q").pack
_i64 = struct.Struct(">q").pack
_f64 = struct.Struct(">d").pack
_NAN = _f64(math.nan)
_encoders: dict[type, Callable[[Any], Any]] = {}


class _Unencodable(Exception):
    """Raised inside the encoder; carries the offending type and the path inside the argument."""

    def __init__(self, obj: Any, reason: str = "", *, hook: bool = False) -> None:
        super().__init__(reason)
        self.type_name = _qualname(type(obj))
        self.reason = reason
        self.hook = hook  # a user hook failed (the fix is in the hook, not a new encoder)
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
    mod = cls.__module__
    if mod in ("__main__", "__mp_main__"):  # a script's class: tagged like its functions
        mod = module_name(mod)
    return f"{mod}.{cls.__qualname__}"


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


class _State(threading.local):
    """Per-thread state of one top-level encoding: the memo of shared sub-objects and the
    optional fallback the fingerprint installs for values that have no canonical encoding."""

    memo: dict[int, tuple[Any, bytes]] | None = None
    fallback: Callable[[Any, bytearray], bool] | None = None
    types: set[type] | None = None  # the fingerprint collects the classes of tagged values


_state = _State()


def _members(v: Any, depth: int, pairs: bool) -> list[bytes]:
    encoded = []
    for m in (v.items() if pairs else v):
        part = bytearray()
        try:
            if pairs:
                _enc(m[0], part, depth)
                _enc(m[1], part, depth)
            else:
                _enc(m, part, depth)
        except _Unencodable as e:
            k = m[0] if pairs else None
            e.path.append(f"[{k!r}]" if isinstance(k, (str, int)) else "[...]" if pairs
                          else "{...}")
            raise
        encoded.append(bytes(part))
    encoded.sort()  # order-free: sorted by the members' (for dicts: the keys') canonical bytes
    return encoded


def _as_root(fn: _Encoder, v: Any, out: bytearray, depth: int) -> None:
    _state.memo = {}
    try:
        fn(v, out, depth)
    finally:
        _state.memo = None


def _seal(v: Any, out: bytearray, start: int, memo: dict[int, tuple[Any, bytes]],
          always: bool = False) -> None:
    # An encoding longer than _INLINE_MAX is replaced by b"H" + its digest, and memoised by
    # the object's id for the rest of this top-level encoding (the memo keeps the object alive,
    # so ids stay unique): `[x, x]` nested n deep costs O(n), not O(2**n). The H rule depends
    # on content only, never on sharing, so equal values built differently still agree. Short
    # encodings are cheap to redo and are not memoised.
    if len(out) - start > _INLINE_MAX:
        enc = b"H" + blake3(out[start:]).digest()
        del out[start:]
        out += enc
        memo[id(v)] = (v, enc)
    elif always:  # a tagged object's body is built afresh (fields(), a hook): memo it anyway
        memo[id(v)] = (v, bytes(out[start:]))


_CONTAINER_TAGS: dict[type, bytes] = {tuple: b"(", list: b"[", dict: b"{", set: b"S",
                                      frozenset: b"Z"}
_ZERO = _u64(0)


def _enc_container(v: Any, out: bytearray, depth: int) -> None:
    cls = type(v)
    if not v:
        out += _CONTAINER_TAGS[cls] + _ZERO
        return
    memo = _state.memo
    if memo is None:
        _as_root(_enc_container, v, out, depth)
        return
    seen = memo.get(id(v))
    if seen is not None:
        out += seen[1]
        return
    start = len(out)
    out += _CONTAINER_TAGS[cls] + _u64(len(v))
    if cls is tuple or cls is list:
        for i, item in enumerate(v):
            try:
                _enc(item, out, depth)
            except _Unencodable as e:
                e.path.append(f"[{i}]")
                raise
    else:
        out += b"".join(_members(v, depth, cls is dict))
    _seal(v, out, start, memo)


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
        micros = (off.days * 86_400 + off.seconds) * 1_000_000 + off.microseconds  # exact
        out += b"z" + _i64(micros) + _text(tz.tzname(None) or "")
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


def _enc_ordereddict(v: Any, out: bytearray, depth: int) -> None:
    # A model's state_dict(): its items in order (OrderedDicts compare their order too).
    out += b"o"
    _enc(list(v.items()), out, depth)


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
    tuple: _enc_container,
    list: _enc_container,
    dict: _enc_container,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    set: _enc_container,
    frozenset: _enc_container,
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
    ("collections", "OrderedDict"): _enc_ordereddict,
    ("pathlib", "PurePosixPath"): _enc_path,
    ("pathlib", "PureWindowsPath"): _enc_path,
    ("pathlib", "PosixPath"): _enc_path,
    ("pathlib", "WindowsPath"): _enc_path,
}


def _enc(v: Any, out: bytearray, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Unencodable(v, f"nested deeper than {_MAX_DEPTH} levels, or contains itself")
    fn = _DISPATCH.get(type(v))
    if fn is not None:
        fn(v, out, depth + 1)
    else:
        _enc_other(v, out, depth + 1)


def _call_hook(what: str, fn: Callable[[Any], Any], v: Any) -> Any:
    try:
        result = fn(v)
    except Exception as exc:  # a raising hook must not make every call silently uncached
        raise _Unencodable(v, f"{what} raised {type(exc).__name__}: {exc}", hook=True) from exc
    if result is v:
        raise _Unencodable(v, f"{what} returned the object itself; return the state that "
                              f"determines the result (e.g. a tuple of fields)", hook=True)
    return result


def _enc_tagged(tag: bytes, cls: type, v: Any, value: Callable[[], Any], out: bytearray,
                depth: int) -> None:
    memo = _state.memo
    if memo is None:
        _as_root(lambda v_, o, d: _enc_tagged(tag, cls, v_, value, o, d), v, out, depth)
        return
    seen = memo.get(id(v))
    if seen is not None:
        out += seen[1]
        return
    start = len(out)
    out += tag + _text(_qualname(cls))
    types = _state.types
    if types is not None:
        types.add(cls)
    _enc(value(), out, depth)
    _seal(v, out, start, memo, always=True)


def _enc_other(v: Any, out: bytearray, depth: int) -> None:
    """Encode everything that is not a plain builtin (checked in a fixed, documented order)."""
    cls = type(v)
    std = _STDLIB.get((cls.__module__, cls.__qualname__))
    if std is not None and sys.modules[cls.__module__].__dict__.get(cls.__qualname__) is cls:
        _DISPATCH[cls] = std  # the exact stdlib class: fast path from now on
        std(v, out, depth)
        return
    hook = getattr(cls, "__persistmemo_key__", None)
    if hook is not None and not isinstance(v, type):
        name = f"{_qualname(cls)}.__persistmemo_key__"
        _enc_tagged(b"K", cls, v, lambda: _call_hook(name, hook, v), out, depth)
        return
    base = next((b for b in cls.__mro__ if b in _encoders), None)
    if base is not None:
        name, custom = f"the key encoder registered for {_qualname(base)}", _encoders[base]
        _enc_tagged(b"R", cls, v, lambda: _call_hook(name, custom, v), out, depth)
        return
    mod = cls.__module__
    numpy = sys.modules.get("numpy")
    if numpy is not None and (mod == "numpy" or mod.startswith("numpy.") or isinstance(
            v, numpy.ndarray)) and (
            _state.fallback is None or isinstance(v, (numpy.ndarray, numpy.generic))):
        # (other numpy objects in a global's value, a Generator or a poly1d: the fallback)
        from persistmemo._npkeys import enc_numpy

        enc_numpy(v, out, depth)
        return
    from persistmemo import _types  # third-party types (torch, pandas, ...): lazy registry

    third = _types.key_encoder(cls)
    if third is not None:
        try:
            out += b"L" + third(v)
        except _types.Unsupported as e:
            raise _Unencodable(v, str(e)) from None
        return
    enum = sys.modules.get("enum")
    if enum is not None and isinstance(v, enum.Enum):
        _enc_tagged(b"E", cls, v, lambda: v.value, out, depth)
        return
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(v, pathlib.PurePath):
        _enc_path(v, out, depth)
        return
    if hasattr(cls, "__dataclass_fields__") and not isinstance(v, type):
        import dataclasses

        def fields() -> Any:
            return tuple((f.name, getattr(v, f.name)) for f in dataclasses.fields(v))

        _enc_tagged(b"C", cls, v, fields, out, depth)
        return
    if isinstance(v, tuple) and hasattr(cls, "_fields"):  # NamedTuple
        _enc_tagged(b"M", cls, v, lambda: tuple(v), out, depth)
        return
    fallback = _state.fallback
    if fallback is not None and fallback(v, out):  # fingerprints: code, library objects
        return
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
    if e.hook:
        return KeyEncodingError(
            f"cannot build a cache key: argument {where!r}{owner} has type {e.type_name}, and "
            f"{e.reason}. Fix that hook, or leave the argument out of the key with "
            f"ignore=[{param!r}].", parameter=where, type_name=e.type_name)
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
