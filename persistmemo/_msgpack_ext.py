"""msgpack with extension types: the payload of :class:`~persistmemo.codec.MsgpackSerializer`.

Private to :mod:`persistmemo.codec`. The ext codes, their layouts and the out-of-band array buffers
are persisted and documented in ``docs/codec.md`` (section 2); the golden payloads in
``tests/test_codec.py`` pin them.

Encoding: :func:`_prepare` turns bytearrays into exts and refuses what msgpack would pack with the
wrong type, then :func:`_pack` runs the packer with :meth:`_Packing.default` for the rest (numpy
array buffers are collected out of band, never copied into the body). Decoding: :func:`_unpack`
takes a flat fast path when no container marker can occur, else per-call ext/list hooks.

numpy is imported lazily (only when an array or numpy scalar is met).
"""

from __future__ import annotations

import datetime as _dt
import struct
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import PosixPath, PurePath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any

import msgpack

from ._decode_limits import GUARD_FROM, Budget, unflooded, unflooded_dict
from .errors import SerializationError

# ---- msgpack extension codes. Persisted: never renumber, only add. Table in docs/codec.md. ----
# Markers (1-15): an empty ext that is the first element of an array; the rest are the items.
EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_ORDEREDDICT = 4  # [marker, {map}]
EXT_FRACTION = 5  # [marker, numerator, denominator]
# Leaves (16-31 standard library, 32-47 numpy): the ext data is the whole value.
EXT_BIGINT = 16
EXT_BYTEARRAY = 17
EXT_COMPLEX = 18
EXT_DECIMAL = 19
EXT_DATETIME = 20
EXT_DATE = 21
EXT_TIME = 22
EXT_TIMEDELTA = 23
EXT_UUID = 24
EXT_PATH = 25
EXT_NDARRAY = 32
EXT_NPSCALAR = 33
# 48: a third-party value (torch, pandas, Arrow, polars, scipy.sparse, structured numpy), framed
# by persistmemo._types (kind + buffer table + plain meta), its buffers out of band.
EXT_TYPED = 48
# 49: a whole payload compressed with zstd (persistmemo._compress); decoded by every reader.
EXT_ZSTD = 49

# A payload that starts with 0xC1 (the one byte msgpack never emits) carries out-of-band buffers:
# 0xC1, u64 body length, msgpack body, then the raw array buffers back to back.
_OOB_TAG = 0xC1
_OOB_HEAD = struct.Struct(">BQ")
_MAX_DEPTH = 511  # msgpack's own packer nesting limit; the unpacker allows 1024

_I64 = struct.Struct(">q")
_COMPLEX = struct.Struct(">dd")
_DATE = struct.Struct(">HBB")
_DATETIME = struct.Struct(">HBBBBBIB")  # y, m, d, H, M, S, us, fold; then the tz section
_TIME = struct.Struct(">BBBIB")  # H, M, S, us, fold; then the tz section
_TIMEDELTA = struct.Struct(">iii")  # days, seconds, microseconds
_TZ_FIXED, _TZ_NAMED, _TZ_ZONEINFO = 1, 2, 3
_ONE_US = _dt.timedelta(microseconds=1)
_PATH_TYPES: tuple[type[PurePath], ...] = (PurePosixPath, PureWindowsPath, PosixPath, WindowsPath)
UNPACKED_LIMIT = 1 << 30  # decompressed payload bytes: the codec passes its max_value_size
_NUMPY_KINDS = frozenset("biufcmMSU")  # bool, ints, floats, complex, timedelta/datetime64, S, U


def _qualname(tp: type) -> str:
    """Return ``module.QualName`` for error messages."""
    module = getattr(tp, "__module__", None)
    name = str(getattr(tp, "__qualname__", None) or getattr(tp, "__name__", repr(tp)))
    return name if module in (None, "builtins") else f"{module}.{name}"


def _unsupported(value: object, what: str = "") -> SerializationError:
    """Build the error for a value the msgpack serializer cannot encode."""
    detail = f" ({what})" if what else ""
    return SerializationError(
        f"cannot encode a value of type {_qualname(type(value))}{detail} with the msgpack "
        "serializer: use serializer='pickle' with a secret, or return a supported type"
    )


# ------------------------------------------------------------------------------------------------
# msgpack: encoding
# ------------------------------------------------------------------------------------------------


def _ext(code: int, data: bytes) -> Any:
    return msgpack.ExtType(code, data)


_M_TUPLE, _M_SET, _M_FROZENSET, _M_ODICT, _M_FRACTION = (
    _ext(c, b"") for c in (EXT_TUPLE, EXT_SET, EXT_FROZENSET, EXT_ORDEREDDICT, EXT_FRACTION)
)


def _encode_tz(tz: _dt.tzinfo | None) -> bytes:
    """Encode a tzinfo as the trailing section of a datetime/time ext (empty when naive)."""
    if tz is None:
        return b""
    if type(tz) is _dt.timezone:
        offset = tz.utcoffset(None) or _dt.timedelta(0)
        micros = _I64.pack(offset // _ONE_US)
        name = tz.tzname(None) or ""
        if name == _dt.timezone(offset).tzname(None):
            return bytes((_TZ_FIXED,)) + micros
        return bytes((_TZ_NAMED,)) + micros + name.encode("utf-8", "surrogatepass")
    zoneinfo = sys.modules.get("zoneinfo")  # a ZoneInfo instance means zoneinfo is imported
    if zoneinfo is not None and type(tz) is zoneinfo.ZoneInfo:
        key: str | None = getattr(tz, "key", None)
        if key is None:
            raise _unsupported(tz, "a ZoneInfo built from a file has no key to store")
        return bytes((_TZ_ZONEINFO,)) + key.encode("utf-8", "surrogatepass")
    raise _unsupported(tz, "only datetime.timezone and zoneinfo.ZoneInfo are stored")


def _e_datetime(v: _dt.datetime) -> Any:
    head = _DATETIME.pack(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold)
    return _ext(EXT_DATETIME, head + _encode_tz(v.tzinfo))


def _e_time(v: _dt.time) -> Any:
    head = _TIME.pack(v.hour, v.minute, v.second, v.microsecond, v.fold)
    return _ext(EXT_TIME, head + _encode_tz(v.tzinfo))


def _e_bigint(v: int) -> Any:
    # Only ints outside [-2**63, 2**64) reach here: two's complement, big-endian, minimal length.
    return _ext(EXT_BIGINT, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True))


def _e_path(v: PurePath) -> Any:
    flavour = _PATH_TYPES.index(type(v))
    return _ext(EXT_PATH, bytes((flavour,)) + str(v).encode("utf-8", "surrogatepass"))


# Items a tuple/set/frozenset may hold to use the compact form (msgpack packs them natively).
_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _collection(code: int, marker: Any) -> Callable[[Any], Any]:
    """Build the encoder for tuple, set or frozenset (compact form when every item is scalar)."""

    def encode(value: Any) -> Any:
        if _SCALARS.issuperset(map(type, value)):
            # Compact form: one ext holding a msgpack array, decoded by one more unpackb and no
            # per-item hook, so ``(1, "a")`` reads about as fast as ``[1, "a"]``.
            packer = msgpack.Packer(use_bin_type=True, strict_types=True, buf_size=256)
            try:
                return _ext(code, packer.pack(list(value)))
            except (OverflowError, UnicodeEncodeError):  # big int, lone surrogate: general form
                pass
        return [marker, *value]

    return encode


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    tuple: _collection(EXT_TUPLE, _M_TUPLE),
    set: _collection(EXT_SET, _M_SET),
    frozenset: _collection(EXT_FROZENSET, _M_FROZENSET),
    OrderedDict: lambda v: [_M_ODICT, dict(v)],
    Fraction: lambda v: [_M_FRACTION, v.numerator, v.denominator],
    int: _e_bigint,
    bytearray: lambda v: _ext(EXT_BYTEARRAY, bytes(v)),
    complex: lambda v: _ext(EXT_COMPLEX, _COMPLEX.pack(v.real, v.imag)),
    Decimal: lambda v: _ext(EXT_DECIMAL, str(v).encode("ascii")),
    _dt.datetime: _e_datetime,
    _dt.date: lambda v: _ext(EXT_DATE, _DATE.pack(v.year, v.month, v.day)),
    _dt.time: _e_time,
    _dt.timedelta: lambda v: _ext(
        EXT_TIMEDELTA, _TIMEDELTA.pack(v.days, v.seconds, v.microseconds)
    ),
    uuid.UUID: lambda v: _ext(EXT_UUID, v.bytes),
    **dict.fromkeys(_PATH_TYPES, _e_path),
}

# msgpack packs these natively, even with strict_types, so ``default`` never sees them: bytearray
# and memoryview would come back as bytes, ExtType/Timestamp as whatever their code decodes to.
_NATIVE_WRONG = (bytearray, memoryview, msgpack.ExtType, msgpack.Timestamp)
_CONTAINERS = (list, tuple, set, frozenset, dict, OrderedDict)
_SCAN = frozenset(_NATIVE_WRONG + _CONTAINERS)


def _prepare(value: Any, depth: int = 0) -> Any:
    """Return ``value`` with every bytearray made an ext; refuse memoryview and msgpack types.

    Copy on write: containers are rebuilt only along the path to a bytearray. The scan is one
    ``set(map(type, ...))`` per container (about the cost of packing it) and plain loops, so
    each nesting level costs one Python frame.
    """
    tp = type(value)
    if tp is bytearray:
        return _ENCODERS[bytearray](value)
    if tp in _NATIVE_WRONG:
        raise _unsupported(value)
    if tp is dict or tp is OrderedDict:
        types = set(map(type, value))
        types.update(map(type, value.values()))
        if _SCAN.isdisjoint(types):
            return value
        if depth >= _MAX_DEPTH:
            raise SerializationError(f"value is nested deeper than {_MAX_DEPTH} levels")
        changed = False
        pairs = []
        for k, v in value.items():
            new_k, new_v = _prepare(k, depth + 1), _prepare(v, depth + 1)
            changed = changed or new_k is not k or new_v is not v
            pairs.append((new_k, new_v))
        return tp(pairs) if changed else value
    if tp in _CONTAINERS:
        if _SCAN.isdisjoint(set(map(type, value))):
            return value
        if depth >= _MAX_DEPTH:
            raise SerializationError(f"value is nested deeper than {_MAX_DEPTH} levels")
        changed = False
        items = []
        for item in value:
            new = _prepare(item, depth + 1)
            changed = changed or new is not item
            items.append(new)
        return (items if tp is list else tp(items)) if changed else value
    return value


def _numpy() -> Any:
    """Import numpy on first use only (``import persistmemo.codec`` must not pay for it)."""
    import numpy

    return numpy


def _checked_dtype(np: Any, spec: str) -> Any:
    dtype = np.dtype(spec)
    if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.str != spec:
        raise ValueError(f"refusing numpy dtype {spec!r}")
    return dtype


class _Packing:
    """Per-call packing state: the out-of-band array buffers collected by ``default``."""

    __slots__ = ("buffers", "size", "used")

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []
        self.size = 0
        self.used = False  # whether any ext was produced (then the payload is tagged 0xC1)

    def default(self, value: Any) -> Any:
        self.used = True
        encoder = _ENCODERS.get(type(value))
        if encoder is not None:
            return encoder(value)
        if type(value).__module__ == "numpy":
            return self._numpy(value)
        return self._typed(value)

    def _typed(self, value: Any) -> Any:
        from . import _types  # lazy registry: imports a library's module only for its values

        try:
            data = _types.encode_value(value, self._add_buffer)
        except SerializationError as exc:  # same wording as every unsupported value
            raise _unsupported(value, str(exc)) from exc
        if data is None:
            raise _unsupported(value)
        return _ext(EXT_TYPED, data)

    def _add_buffer(self, view: memoryview) -> int:
        offset = _align(self.size)  # every buffer starts 16-aligned in the region
        if offset > self.size:
            self.buffers.append(memoryview(bytes(offset - self.size)))
            self.size = offset
        if view.nbytes:
            self.buffers.append(view)
            self.size += view.nbytes
        return offset

    def _numpy(self, value: Any) -> Any:
        np = sys.modules["numpy"]
        is_array = type(value) is np.ndarray  # subclasses (np.matrix, ...) are refused
        if not is_array and not isinstance(value, np.generic):
            return self._typed(value)  # np.memmap, np.recarray, ...
        dtype = value.dtype
        if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None:
            if is_array:
                return self._typed(value)  # structured dtypes
            raise _unsupported(value, f"numpy dtype {dtype}")
        spec = dtype.str.encode("ascii")
        if not is_array:  # a numpy scalar: np.float32, np.bool_, np.str_, np.datetime64, ...
            if dtype.kind == "U":  # np.str_/np.bytes_ are str/bytes subclasses: store the value
                raw = str(value).encode("utf-8", "surrogatepass")
            elif dtype.kind == "S":
                raw = bytes(value)
            else:
                raw = value.tobytes()
            return _ext(EXT_NPSCALAR, bytes((len(spec),)) + spec + raw)
        if not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)
        # The buffer travels after the msgpack body (no copy here; one copy into the envelope).
        head = bytes((len(spec),)) + spec + bytes((value.ndim,))
        offset = _align(self.size)  # every buffer starts 16-aligned in the region
        if offset > self.size:
            self.buffers.append(memoryview(bytes(offset - self.size)))
            self.size = offset
        head += struct.pack(f">{value.ndim}QQ", *value.shape, offset)
        if value.nbytes:
            self.buffers.append(memoryview(value.reshape(-1).view(np.uint8)))
            self.size += value.nbytes
        return _ext(EXT_NDARRAY, head)


def _pack(value: Any, unicode_errors: str | None, exts: bool = False
          ) -> list[bytes | memoryview]:
    """Pack ``value``; ``exts``: it already holds ExtTypes (prepared bytearrays).

    A payload holding any ext is tagged (0xC1, body length, body, buffers) so the reader decodes
    it with the guarded hooks; an untagged payload must hold no ext at all.
    """
    state = _Packing()
    packer = msgpack.Packer(
        default=state.default,
        use_bin_type=True,
        strict_types=True,
        unicode_errors=unicode_errors,
        buf_size=1024,  # the 256 KiB default costs a large malloc per call
    )
    body: bytes = packer.pack(value)
    if not (state.used or exts or state.buffers):
        return [body]
    if not state.buffers:
        return [_OOB_HEAD.pack(_OOB_TAG, len(body)), body]
    end = _OOB_HEAD.size + len(body)
    pad = bytes(_align(end) - end)  # the region starts 16-aligned (as does the payload)
    return [_OOB_HEAD.pack(_OOB_TAG, len(body)), body, pad, *state.buffers]


def _align(n: int) -> int:
    """Round ``n`` up to a multiple of 16 (array buffers are aligned for any dtype)."""
    return (n + 15) & ~15


# ------------------------------------------------------------------------------------------------
# msgpack: decoding
# ------------------------------------------------------------------------------------------------


class _Marker:
    """Stands in for a container type until the enclosing array is finished."""

    __slots__ = ("build", "code")

    def __init__(self, code: int, build: Callable[[list[Any]], Any]) -> None:
        self.code = code
        self.build = build


def _b_odict(items: list[Any]) -> Any:
    if len(items) != 2 or type(items[1]) is not dict:
        raise ValueError("malformed OrderedDict")
    return OrderedDict(items[1])


def _b_fraction(items: list[Any]) -> Any:
    if len(items) != 3 or type(items[1]) is not int or type(items[2]) is not int or \
            items[2] <= 0:
        raise ValueError("malformed Fraction")
    return _coprime_fraction(items[1], items[2])


def _coprime_fraction(numerator: int, denominator: int) -> Fraction:
    """A Fraction from the lowest terms its writer stored, without ``Fraction()``'s gcd: that
    costs quadratic time in the digits (a forged 400 KB entry took 5.5 s per hit)."""
    make = getattr(Fraction, "_from_coprime_ints", None)  # Python 3.12+
    if make is not None:
        made: Fraction = make(numerator, denominator)
        return made
    made = Fraction.__new__(Fraction)  # 0/1, no gcd; then the stored terms (3.10, 3.11)
    made._numerator = numerator  # type: ignore[attr-defined]
    made._denominator = denominator  # type: ignore[attr-defined]
    return made


_MARKERS: dict[int, _Marker] = {
    EXT_TUPLE: _Marker(EXT_TUPLE, lambda items: tuple(items[1:])),
    EXT_SET: _Marker(EXT_SET, lambda items: set(unflooded(items[1:]))),
    EXT_FROZENSET: _Marker(EXT_FROZENSET, lambda items: frozenset(unflooded(items[1:]))),
    EXT_ORDEREDDICT: _Marker(EXT_ORDEREDDICT, _b_odict),
    EXT_FRACTION: _Marker(EXT_FRACTION, _b_fraction),
}


def _decode_tz(data: bytes, start: int) -> _dt.tzinfo | None:
    if len(data) == start:
        return None
    tag = data[start]
    if tag in (_TZ_FIXED, _TZ_NAMED):
        (micros,) = _I64.unpack_from(data, start + 1)
        offset = _dt.timedelta(microseconds=micros)
        if tag == _TZ_FIXED:
            if len(data) != start + 9:
                raise ValueError("trailing bytes after timezone")
            return _dt.timezone(offset)
        return _dt.timezone(offset, data[start + 9 :].decode("utf-8", "surrogatepass"))
    if tag == _TZ_ZONEINFO:
        from zoneinfo import ZoneInfo

        return ZoneInfo(data[start + 1 :].decode("utf-8", "surrogatepass"))
    raise ValueError(f"unknown timezone tag {tag}")


def _d_datetime(data: bytes) -> _dt.datetime:
    year, month, day, hour, minute, second, micro, fold = _DATETIME.unpack_from(data)
    tz = _decode_tz(data, _DATETIME.size)
    return _dt.datetime(year, month, day, hour, minute, second, micro, tz, fold=fold)


def _d_time(data: bytes) -> _dt.time:
    hour, minute, second, micro, fold = _TIME.unpack_from(data)
    return _dt.time(hour, minute, second, micro, _decode_tz(data, _TIME.size), fold=fold)


def _d_path(data: bytes) -> PurePath:
    return _PATH_TYPES[data[0]](data[1:].decode("utf-8", "surrogatepass"))


def _d_npscalar(data: bytes) -> Any:
    np = _numpy()
    dtype = _checked_dtype(np, data[1 : 1 + data[0]].decode("ascii"))
    raw = data[1 + data[0] :]
    if dtype.kind == "U":
        return np.str_(raw.decode("utf-8", "surrogatepass"))
    if dtype.kind == "S":
        return np.bytes_(raw)
    if len(raw) != dtype.itemsize:
        raise ValueError("numpy scalar has the wrong size")
    return np.frombuffer(raw, dtype=dtype)[0]


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"unexpected msgpack ext code {code} in a compact collection")


def _compact(build: Callable[[list[Any]], Any]) -> Callable[[bytes], Any]:
    """Build the decoder of a compact tuple/set/frozenset: its ext data is a flat msgpack array
    of scalars (no map, no nested array: refused at the first one, before it can expand)."""

    def decode(data: bytes) -> Any:
        lists = [0]

        def one_list(items: list[Any]) -> list[Any]:
            lists[0] += 1  # the top-level array is the only one, and it is finished last
            if lists[0] > 1:
                raise ValueError("nested array in a compact collection")
            return items

        items = msgpack.unpackb(
            data, raw=False, unicode_errors="surrogatepass", timestamp=3, ext_hook=_no_ext,
            list_hook=one_list, max_map_len=0,
        )
        if type(items) is not list:
            raise ValueError("compact collection is not an array")
        return build(items)

    return decode


_LEAVES: dict[int, Callable[[bytes], Any]] = {
    EXT_TUPLE: _compact(tuple),  # non-empty data; an empty one is a marker (general form)
    EXT_SET: _compact(set),  # scalars only: no floodable hashes (see _decode_limits)
    EXT_FROZENSET: _compact(frozenset),
    EXT_BIGINT: lambda d: int.from_bytes(d, "big", signed=True),
    EXT_BYTEARRAY: bytearray,
    EXT_COMPLEX: lambda d: complex(*_COMPLEX.unpack(d)),
    EXT_DECIMAL: lambda d: Decimal(d.decode("ascii")),
    EXT_DATETIME: _d_datetime,
    EXT_DATE: lambda d: _dt.date(*_DATE.unpack(d)),
    EXT_TIME: _d_time,
    EXT_TIMEDELTA: lambda d: _dt.timedelta(*_TIMEDELTA.unpack(d)),
    EXT_UUID: lambda d: uuid.UUID(bytes=d),
    EXT_PATH: _d_path,
    EXT_NPSCALAR: _d_npscalar,
}


def _d_ndarray(data: bytes, region: memoryview | None, state: list[int]) -> Any:
    np = _numpy()
    pos = 1 + data[0]
    dtype = _checked_dtype(np, data[1:pos].decode("ascii"))
    ndim = data[pos]
    shape_offset = struct.unpack_from(f">{ndim}QQ", data, pos + 1)
    if pos + 1 + 8 * (ndim + 1) != len(data):
        raise ValueError("malformed ndarray header")
    shape, offset = shape_offset[:-1], shape_offset[-1]
    if dtype.itemsize == 0:  # "S0"/"U0": numpy makes them S1/U1, so nothing would back them
        raise ValueError(f"refusing zero-size numpy dtype {dtype.str!r} (forged)")
    count = 1
    for dim in shape:
        count *= dim
    nbytes = count * dtype.itemsize
    # Buffers are laid out in the order the arrays occur: every byte is used exactly once.
    # Buffers are 16-aligned and in the order the arrays occur: no byte is used twice.
    if offset != _align(state[1]) or offset + nbytes > (0 if region is None else len(region)):
        raise ValueError("ndarray buffer out of place")
    state[1] = offset + nbytes
    if nbytes == 0:
        return np.empty(shape, dtype=dtype)
    assert region is not None
    flat = np.frombuffer(region, dtype=dtype, count=count, offset=offset)
    if dtype.kind == "U":
        _check_code_points(np, flat)
    if len(state) > 2 and not state[2]:  # mmap=True: a read-only view of the mapped file
        view = flat.reshape(shape)
        view.flags.writeable = False
        return view
    if region.readonly:  # bytes: copy once, so the result is writable
        return flat.reshape(shape).copy()
    # A private bytearray (the disk store reads values into one): the array keeps it alive and
    # uses it in place, no copy.
    return flat.reshape(shape)


def _check_code_points(np: Any, flat: Any) -> None:
    """Refuse a str array holding code points above U+10FFFF (forged: numpy would build
    invalid str objects from them, which crash whoever reads the value)."""
    if flat.size and int(flat.view(np.uint32).max()) > 0x10FFFF:
        raise ValueError("numpy str array holds code points above U+10FFFF (forged)")


def _d_typed(data: bytes, region: memoryview | None, state: list[int]) -> Any:
    from . import _types

    def take(offset: int, size: int) -> memoryview:
        # Buffers are 16-aligned and in the order the values occur: no byte is used twice.
        if offset != _align(state[1]) or offset + size > (0 if region is None else len(region)):
            raise ValueError("buffer out of place")
        state[1] = offset + size
        return memoryview(b"") if region is None else region[offset : offset + size]

    return _types.decode_value(data, take)


def _d_zstd(data: bytes, copy: bool, limit: int) -> Any:
    from ._compress import decompress

    # The frame's declared size must fit max_value_size: a forged 131 KB frame of zeros would
    # otherwise allocate 4 GiB per hit (zstd reaches ~32,000x).
    return _unpack(decompress(data, limit), copy, limit)


def _no_ext_plain(code: int, ext: bytes) -> Any:
    raise ValueError(f"ext code {code} in an untagged payload (forged)")


def _unpack(data: bytes | memoryview, copy: bool = True, limit: int = UNPACKED_LIMIT) -> Any:
    """Decode a msgpack payload (see docs/codec.md) with exact types, in bounded memory/time.

    ``copy=False`` (``mmap=True`` loads): numpy arrays are read-only views of ``data``.
    """
    if data[:1] != b"\xc1":  # untagged: plain msgpack without any ext
        if type(data) is not bytes:
            data = bytes(data)  # a copy, but msgpack parsing costs far more per byte
        if len(data) < GUARD_FROM:
            # Fast path (ints, strs, lists, dicts...): no ext can occur, so no floodable hash;
            # below GUARD_FROM even the worst expansion (~80x) stays a few tens of MiB.
            return msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=False,
                unicode_errors="surrogatepass",
                timestamp=3,
                ext_hook=_no_ext_plain,
            )
        return _guarded(data, None, len(data), plain=True)
    _, body_len = _OOB_HEAD.unpack_from(data)
    view = memoryview(data)
    body_end = _OOB_HEAD.size + body_len
    if body_end > len(view):
        raise ValueError("body length exceeds payload")
    start = _align(body_end) if len(view) > body_end else body_end
    if start > len(view):
        raise ValueError("out-of-band region is truncated")
    return _guarded(view[_OOB_HEAD.size : body_end], view[start:], len(data), copy=copy,
                    limit=limit)


def _guarded(body: bytes | memoryview, region: memoryview | None, size: int,
             plain: bool = False, copy: bool = True, limit: int = UNPACKED_LIMIT) -> Any:
    """Decode with per-call hooks: markers, arrays, a memory budget and hash-flood checks."""
    # state[0]: markers produced and not yet consumed; state[1]: next out-of-band offset.
    # Per-call closures, not shared state: hooks run Python code, so another thread may decode
    # in between.
    state = [0, 0, int(copy)]  # state[2]: copy arrays (0: views, for mmap=True)
    budget = Budget(size)

    def ext_hook(code: int, ext: bytes) -> Any:
        if plain:
            raise ValueError(f"ext code {code} in an untagged payload (forged)")
        budget.charge_ext(len(ext))
        if not ext:
            marker = _MARKERS.get(code)
            if marker is not None:
                state[0] += 1
                return marker
        if code == EXT_NDARRAY:
            return _d_ndarray(ext, region, state)
        if code == EXT_TYPED:
            return _d_typed(ext, region, state)
        if code == EXT_ZSTD:
            return _d_zstd(ext, copy, limit)
        return _LEAVES[code](ext)

    def list_hook(items: list[Any]) -> Any:
        budget.charge_list(len(items))
        if items and type(items[0]) is _Marker:
            state[0] -= 1
            return items[0].build(items)
        return items

    def pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        budget.charge_dict(len(pairs))
        return unflooded_dict(pairs)

    value = msgpack.unpackb(
        body,
        raw=False,
        strict_map_key=False,
        unicode_errors="surrogatepass",
        timestamp=3,
        ext_hook=ext_hook,
        list_hook=list_hook,
        object_pairs_hook=pairs_hook,
    )
    if state[0]:  # a marker outside first position leaked into the value: forged data
        raise ValueError("misplaced container marker")
    if state[1] != (0 if region is None else len(region)):
        raise ValueError("unused out-of-band bytes")
    return value
