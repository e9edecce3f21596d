"""persistmemo.codec: exact round trips, the pinned envelope format, and hostile stored bytes."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import pathlib
import pickle
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import blake3
import msgpack
import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from persistmemo.codec import (
    Codec,
    Entry,
    EntryInfo,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
    get_serializer,
)
from persistmemo.errors import ConfigurationError, DecodeError, SerializationError

KEY = "pm:test:v1:" + "0" * 64
OTHER_KEY = "pm:test:v1:" + "0" * 63 + "1"
SECRET = b"correct horse battery staple"
HEADER = struct.Struct(">2sBBBBHddII")  # docs/codec.md: 32 bytes
KDF_CONTEXT = "persistmemo 2026 entry MAC v2"


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def float_bits(x: float) -> bytes:
    """Return the IEEE bits of ``x`` (exact: nan payloads and -0.0 included)."""
    return struct.pack(">d", x)


def tz_same(a: dt.tzinfo | None, b: dt.tzinfo | None) -> bool:
    """Return whether two tzinfos are the same kind, offset, name or zone key."""
    if type(a) is not type(b):
        return False
    if isinstance(a, ZoneInfo):
        assert isinstance(b, ZoneInfo)
        return a.key == b.key
    if isinstance(a, dt.timezone):
        return a.utcoffset(None) == b.utcoffset(None) and a.tzname(None) == b.tzname(None)  # type: ignore[union-attr]
    return a is None


def assert_same(a: Any, b: Any, path: str = "value") -> None:
    """Assert ``b`` is an exact copy of ``a``: same types recursively, same values (nan-aware)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} came back as {type(b).__name__}"
    tp = type(a)
    if tp is float:
        assert float_bits(a) == float_bits(b), f"{path}: {a!r} != {b!r}"
    elif tp is complex:
        assert float_bits(a.real) + float_bits(a.imag) == float_bits(b.real) + float_bits(b.imag)
    elif tp is decimal.Decimal:
        assert str(a) == str(b), f"{path}: {a!r} != {b!r}"
    elif tp in (list, tuple):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif tp in (dict, collections.OrderedDict):
        assert len(a) == len(b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):  # order is preserved too
            assert_same(ka, kb, f"{path}.key")
            assert_same(va, vb, f"{path}[{ka!r}]")
    elif tp in (set, frozenset):
        assert len(a) == len(b)
        by_value = {y: y for y in b}
        for x in a:
            assert_same(x, by_value[x], f"{path}{{{x!r}}}")
    elif tp is dt.datetime or tp is dt.time:
        assert a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.fold == b.fold, path
        assert tz_same(a.tzinfo, b.tzinfo), f"{path}: {a.tzinfo!r} != {b.tzinfo!r}"
    elif tp is np.ndarray:
        assert a.dtype == b.dtype and a.dtype.str == b.dtype.str, f"{path}: {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}"
        assert a.tobytes() == b.tobytes(), f"{path}: array data differs"  # tobytes: C order
        assert b.flags.writeable, f"{path}: decoded array is read-only"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def roundtrip(value: Any, codec: Codec | None = None) -> Any:
    """Encode then decode ``value`` and return the decoded value."""
    codec = codec or Codec()
    blob = codec.encode(value, key=KEY, created=1.5, duration=0.25)
    entry = codec.decode(blob, key=KEY)
    return entry.value


def forge(
    payload: bytes,
    *,
    key: str = KEY,
    codec_id: int = 1,
    version: int = 2,
    meta: bytes = b"",
    secret: bytes | None = None,
    created: float = 0.0,
    duration: float = 0.0,
    kind: int | None = None,
    flags: int = 0,
) -> bytes:
    """Build an envelope by hand, following docs/codec.md (a valid check unless told otherwise).

    No secret: an XXH3-128 checksum (kind 1); a secret: a keyed-BLAKE3 MAC (kind 2).
    """
    kind = kind if kind is not None else (1 if secret is None else 2)
    header = HEADER.pack(b"PM", version, codec_id, kind, flags, 0, created, duration, len(meta),
                         0)
    signed = key.encode() + b"\0" + header + meta + payload
    if secret is None:
        check = xxhash.xxh3_128_digest(signed)
    else:
        mac_key = blake3.blake3(secret, derive_key_context=KDF_CONTEXT).digest()
        check = blake3.blake3(signed, key=mac_key).digest(32)
    return header + check + meta + payload


def tagged(payload_hex: str) -> str:
    """The payload of a value holding ext types: 0xC1, u64 body length, body (docs/codec.md)."""
    return "c1" + struct.pack(">Q", len(payload_hex) // 2).hex() + payload_hex


class Canary:
    """Unpickling this creates ``marker``: proof that planted bytes ran code in the reader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def canary(tmp_path: Path) -> tuple[bytes, Path]:
    """A pickled canary and the marker path it would create."""
    marker = tmp_path / "canary-ran"
    return pickle.dumps(Canary(marker), protocol=5), marker


@pytest.fixture
def pickle_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls to ``pickle.loads`` (the only place persistmemo unpickles)."""
    calls: list[int] = []
    real = pickle.loads

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pickle, "loads", spy)
    return calls


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------

EXAMPLES: dict[str, Any] = {
    "none": None,
    "true": True,
    "int": -17,
    "int64_min": -(2**63),
    "uint64_max": 2**64 - 1,
    "bigint": 2**64,
    "negative_bigint": -(2**200) + 12345,
    "float": 1.5,
    "nan": float("nan"),
    "inf": float("-inf"),
    "negative_zero": -0.0,
    "str": "héllo \u2603",
    "lone_surrogate": "a\ud800b\udfff",
    "bytes": b"\x00\xff",
    "bytearray": bytearray(b"\x00\x01"),
    "empty_bytearray": bytearray(),
    "list": [1, [2, [3]]],
    "tuple": (1, "a"),
    "empty_tuple": (),
    "nested_tuples": ((), ((1,),), (2, (3, [4, (5,)]))),
    "tuple_with_bigint": (2**70, -(2**70)),
    "tuple_with_surrogate": ("\udc80",),
    "dict": {"a": 1, "b": [None]},
    "dict_non_str_keys": {1: "int", (1, "x"): "tuple", frozenset({2}): "fs", b"k": 0, None: 1},
    "dict_float_bool_keys": {1.5: "f", True: "t", -0.0: "z"},
    "set": {1, "a", (2, 3)},
    "frozenset": frozenset({b"x", 2.5}),
    "empty_set": set(),
    "ordereddict": collections.OrderedDict([("b", 1), ("a", [bytearray(b"q")])]),
    "complex": complex(float("nan"), -0.0),
    "decimal": decimal.Decimal("1.10"),
    "decimal_nan": decimal.Decimal("-NaN"),
    "decimal_snan": decimal.Decimal("sNaN123"),
    "decimal_neg_zero": decimal.Decimal("-0"),
    "decimal_inf": decimal.Decimal("Infinity"),
    "fraction": fractions.Fraction(-(2**100), 3),
    "datetime": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
    "datetime_utc": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    "datetime_offset": dt.datetime(
        2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, seconds=7))
    ),
    "datetime_named_offset": dt.datetime(
        2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")
    ),
    "datetime_zoneinfo_fold": dt.datetime(
        2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")
    ),
    "date": dt.date(1, 1, 1),
    "time": dt.time(23, 59, 59, 999999, fold=1),
    "time_tz": dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    "timedelta": dt.timedelta(days=-999999999),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "path": Path("/tmp/x"),
    "pure_posix_path": pathlib.PurePosixPath("//server/a"),
    "pure_windows_path": pathlib.PureWindowsPath(r"C:\Users\x"),
    "path_surrogateescape": pathlib.PurePosixPath("caf\udce9"),
    "ndarray": np.arange(12.0).reshape(3, 4),
    "ndarray_fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "ndarray_strided": np.arange(20, dtype=np.uint16)[::3],
    "ndarray_0d": np.array(3.25),
    "ndarray_empty": np.zeros((0, 5), dtype=np.complex64),
    "ndarray_big_endian": np.arange(4, dtype=">i8"),
    "ndarray_datetime64": np.array(["2020-01-01", "NaT"], dtype="M8[ns]"),
    "ndarray_timedelta64": np.array([1, -2], dtype="m8[s]"),
    "ndarray_unicode": np.array(["ab", "ĉ"], dtype="<U3"),
    "ndarray_bytes": np.array([b"x", b"yz"]),
    "ndarray_bool": np.array([[True], [False]]),
    "ndarrays_in_containers": [np.ones(3), {"k": (np.zeros(2, dtype=np.float32), np.eye(2))}],
    "np_float32": np.float32(1.5),
    "np_float64": np.float64(-0.0),
    "np_int8": np.int8(-5),
    "np_uint64": np.uint64(2**64 - 1),
    "np_bool": np.bool_(True),
    "np_complex128": np.complex128(1 - 2j),
    "np_str": np.str_("hi"),
    "np_bytes": np.bytes_(b"raw"),
    "np_datetime64": np.datetime64("2020-01-02T03:04", "m"),
    "np_nat": np.datetime64("NaT"),
}


@pytest.mark.parametrize("value", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_examples_round_trip_exactly(value: Any) -> None:
    """Every supported type comes back with exactly its type and value."""
    assert_same(value, roundtrip(value))


def test_entry_carries_created_duration_and_meta() -> None:
    """decode returns an Entry with the stored timestamps and the meta bytes untouched."""
    codec = Codec()
    blob = codec.encode([1], key=KEY, created=1700000000.123, duration=3.5, meta=b"\x81\xa1m\x01")
    entry = codec.decode(blob, key=KEY)
    assert isinstance(entry, Entry)
    assert entry == Entry([1], 1700000000.123, 3.5, b"\x81\xa1m\x01")
    assert type(entry.meta) is bytes


def test_deeply_nested_values_round_trip() -> None:
    """Lists and tuples nested 400 deep (below the 511 limit) round-trip."""
    value: Any = 1
    for i in range(400):
        value = [value] if i % 2 else (value,)
    assert_same(value, roundtrip(value))


def test_large_arrays_travel_out_of_band() -> None:
    """Multi-megabyte arrays (threaded hash, memoryview path) round-trip and stay writable."""
    big = np.random.default_rng(0).random((512, 1024))  # 4 MiB
    value = {"a": big, "b": [big[::2, ::3], np.arange(5)], "c": (big.T,)}
    out = roundtrip(value)
    assert_same(value, out)
    out["a"][0, 0] = -1.0  # writable, and not shared with the input
    assert big[0, 0] != -1.0


def test_decoded_arrays_do_not_share_memory() -> None:
    """Two arrays decoded from one entry are independent writable copies."""
    out = roundtrip([np.zeros(3), np.zeros(3)])
    out[0][:] = 1
    assert out[1].tolist() == [0.0, 0.0, 0.0]


# Hypothesis strategies -------------------------------------------------------------------------

FIXED_OFFSETS = st.timedeltas(
    min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23, minutes=59)
)
TZINFOS = st.one_of(
    st.none(),
    st.timezones(),
    st.builds(dt.timezone, FIXED_OFFSETS),
    st.builds(dt.timezone, FIXED_OFFSETS, st.text(min_size=1, max_size=5)),
)
TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # includes lone surrogates
PATHS = st.builds(
    lambda cls, text: cls(text),
    st.sampled_from([pathlib.PurePosixPath, pathlib.PureWindowsPath, Path]),
    st.text(st.characters(exclude_characters="\0"), max_size=10),
)
HASHABLE_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**130), max_value=2**130),
    st.floats(allow_nan=False),
    TEXT,
    st.binary(max_size=8),
    st.complex_numbers(allow_nan=False),
    st.fractions(),
    st.dates(),
    st.uuids(),
)
HASHABLES = st.recursive(
    HASHABLE_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple), st.frozensets(inner, max_size=3)
    ),
    max_leaves=6,
)
NUMPY_DTYPES = [
    *("?", "i1", "<i2", ">i4", "<i8", "u1", "<u2", "<u4", ">u8", "<f2", "<f4", ">f8", "<f8"),
    *("<c8", "<c16", "<M8[ns]", "<M8[D]", "<m8[us]", "<U3", "|S2"),
]


def arrays(dtypes: list[str]) -> st.SearchStrategy[Any]:
    """Arrays of the given dtypes, any shape up to 3-d, as C, transposed, strided or Fortran."""
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    return hnp.arrays(st.sampled_from(dtypes), shapes).flatmap(
        lambda a: st.sampled_from([a, a.T, a[::2] if a.ndim else a, np.asfortranarray(a)])
    )


def values(dtypes: list[str]) -> st.SearchStrategy[Any]:
    """Nested values of every supported type (arrays of the given dtypes)."""
    array = arrays(dtypes)
    leaves = st.one_of(
        HASHABLE_LEAVES,
        st.floats(),  # nan and infinities
        st.complex_numbers(),
        st.decimals(),  # NaN, sNaN, Infinity, -0
        st.binary(max_size=8).map(bytearray),
        st.datetimes(timezones=TZINFOS).flatmap(
            lambda d: st.sampled_from([d, d.replace(fold=1 - d.fold)])
        ),
        st.times(timezones=TZINFOS),
        st.timedeltas(),
        PATHS,
        st.sets(HASHABLES, max_size=4),
        st.frozensets(HASHABLES, max_size=4),
        array,
        array.filter(lambda a: a.size > 0).map(lambda a: a.reshape(-1)[0]),  # numpy scalars
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(TEXT, inner, max_size=4),
            st.dictionaries(HASHABLES, inner, max_size=4),
            st.dictionaries(TEXT, inner, max_size=3).map(collections.OrderedDict),
        ),
        max_leaves=25,
    )


ARRAYS = arrays(NUMPY_DTYPES)
VALUES = values(NUMPY_DTYPES)
# numpy's own pickling turns strided big-endian arrays native-endian; not the codec's business.
NATIVE_ORDER_VALUES = values([d for d in NUMPY_DTYPES if not d.startswith(">")])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_property_round_trip_is_exact(value: Any) -> None:
    """Any value built from the supported types round-trips with exact types, recursively."""
    assert_same(value, roundtrip(value))


@settings(max_examples=150, deadline=None)
@given(ARRAYS)
def test_property_arrays_round_trip_writable(array: Any) -> None:
    """Arrays of every supported dtype, shape and memory layout come back equal and writable."""
    out = roundtrip(array)
    assert_same(array, out)
    assert out.flags.c_contiguous and out.flags.owndata
    if out.size:
        out.reshape(-1)[0] = out.reshape(-1)[-1]  # writable in place


@settings(max_examples=100, deadline=None)
@given(NATIVE_ORDER_VALUES)
def test_property_pickle_codec_round_trips(value: Any) -> None:
    """The signed pickle codec round-trips what pickle supports."""
    assert_same(value, roundtrip(value, Codec(PickleSerializer(SECRET))))


# ------------------------------------------------------------------------------------------------
# Unsupported values
# ------------------------------------------------------------------------------------------------


class UserClass:
    """A plain user class."""


@dataclasses.dataclass
class UserDataclass:
    """A user dataclass."""

    x: int = 1


class Color(enum.Enum):
    """A user Enum."""

    RED = 1


class Level(enum.IntEnum):
    """A user IntEnum (an int subclass)."""

    LOW = 1


class MyDict(dict):  # type: ignore[type-arg]
    """A dict subclass."""


class MyList(list):  # type: ignore[type-arg]
    """A list subclass."""


class MyTz(dt.tzinfo):
    """A custom tzinfo (like pytz or dateutil zones)."""

    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def dst(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, d: dt.datetime | None) -> str:
        return "MyTz"


def _generator() -> Any:
    yield 1


UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "class": (UserClass(), "UserClass"),
    "dataclass": (UserDataclass(), "UserDataclass"),
    "enum": (Color.RED, "Color"),
    "int_enum": (Level.LOW, "Level"),
    "function": (len, "builtin_function_or_method"),
    "lambda": (lambda: 1, "function"),
    "generator": (_generator(), "generator"),
    "dict_subclass": (MyDict(a=1), "MyDict"),
    "list_subclass": (MyList([1]), "MyList"),
    "defaultdict": (collections.defaultdict(int), "collections.defaultdict"),
    "counter": (collections.Counter("ab"), "collections.Counter"),
    "memoryview": (memoryview(b"ab"), "memoryview"),
    "memoryview_in_list": ([1, memoryview(b"ab")], "memoryview"),
    "memoryview_dict_key": ({memoryview(b"ab"): 1}, "memoryview"),
    "msgpack_exttype": (msgpack.ExtType(1, b""), "ExtType"),
    "object_array": (np.array([1, "a"], dtype=object), "numpy.ndarray"),
    "np_matrix": (np.asarray([[1]]).view(np.matrix), "numpy.matrix"),
    "masked_array": (np.ma.masked_array([1, 2]), "MaskedArray"),
    "custom_tzinfo": (dt.datetime(2020, 1, 1, tzinfo=MyTz()), "MyTz"),
    "nested_in_tuple": ((1, (UserClass(),)), "UserClass"),
    "as_dict_key": ({UserDataclass.__name__: 1, Color.RED: 2}, "Color"),
}


@pytest.mark.parametrize("value,type_name", list(UNSUPPORTED.values()), ids=list(UNSUPPORTED))
def test_unsupported_types_raise_serialization_error_naming_type(
    value: Any, type_name: str
) -> None:
    """An unsupported type is a SerializationError naming the type and the ways out."""
    with pytest.raises(SerializationError) as info:
        Codec().encode(value, key=KEY, created=0.0, duration=0.0)
    message = str(info.value)
    assert type_name in message
    assert "serializer='pickle'" in message and "supported type" in message


def test_error_names_qualified_type_name() -> None:
    """The message carries module and qualified name, so the user can find the class."""
    with pytest.raises(SerializationError, match=r"test_codec\.UserDataclass"):
        MsgpackSerializer().dumps([UserDataclass()])


@pytest.mark.parametrize("depth", [600, 100_000])
def test_too_deep_values_raise_serialization_error(depth: int) -> None:
    """Nesting beyond the limit is a SerializationError, never a RecursionError."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    with pytest.raises(SerializationError, match="nested deeper"):
        Codec().encode(value, key=KEY, created=0.0, duration=0.0)
    tup: Any = ()
    for _ in range(depth):
        tup = (tup, 1)
    with pytest.raises(SerializationError, match="nested deeper"):
        Codec().encode(tup, key=KEY, created=0.0, duration=0.0)


def test_cyclic_value_raises_serialization_error() -> None:
    """A list that contains itself is a SerializationError."""
    value: list[Any] = [1]
    value.append(value)
    with pytest.raises(SerializationError):
        Codec().encode(value, key=KEY, created=0.0, duration=0.0)


def test_zoneinfo_without_key_is_refused(tmp_path: Path) -> None:
    """A ZoneInfo loaded from a file has no key to store: SerializationError."""
    tzfile = Path("/usr/share/zoneinfo/UTC")
    if not tzfile.exists():
        pytest.skip("no system tz database")
    with tzfile.open("rb") as f:
        zone = ZoneInfo.from_file(f)
    with pytest.raises(SerializationError, match="ZoneInfo"):
        MsgpackSerializer().dumps(dt.datetime(2020, 1, 1, tzinfo=zone))


def test_unpicklable_value_is_serialization_error() -> None:
    """The pickle serializer reports unpicklable values as SerializationError naming the type."""
    with pytest.raises(SerializationError, match="lock"):
        PickleSerializer(SECRET).dumps(threading.Lock())


def test_importing_codec_does_not_import_numpy() -> None:
    """numpy is imported lazily: ``import persistmemo.codec`` stays light."""
    code = "import sys, persistmemo.codec; assert 'numpy' not in sys.modules, 'numpy imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ------------------------------------------------------------------------------------------------
# The format is persisted: golden bytes
# ------------------------------------------------------------------------------------------------

GOLDEN_KEY = "pm:golden:v1:" + "ab" * 32
GOLDEN_1 = (
    "504d02010100000041d954fc401000003fc00000000000000000000000000000a65187eb26efa72cb63a8f3cd7ec"
    "2bc4c10000000000000015c712019601a161c40100c0c3cb3ff8000000000000"
)
GOLDEN_2 = (
    "504d0201010000003ff000000000000040000000000000000000000400000000f1d70ed19e7844314ff69e584fc9"
    "cace81a16d01c1000000000000002a82a16b9301c70910400000000000000000cb8000000000000000a17493c700"
    "01c70301920102d5039103"
)
GOLDEN_3 = (
    "504d02020200000040080000000000003fe0000000000000000000000000000017cd88f99ec09aeeccd7c5e4c8b6"
    "8b3fee422c17ab5d13d076805fabc5b1451780054b012e"
)
GOLDEN_2_VALUE = {"k": [1, 2**70, -0.0], "t": ((1, 2), frozenset({3}))}


def test_golden_envelope_msgpack() -> None:
    """A fixed value encodes to exactly the pinned bytes (header, XXH3-128 check, payload)."""
    value = (1, "a", b"\x00", None, True, 1.5)
    blob = Codec().encode(value, key=GOLDEN_KEY, created=1700000000.25, duration=0.125)
    assert blob.hex() == GOLDEN_1
    assert_same(value, Codec().decode(bytes.fromhex(GOLDEN_1), key=GOLDEN_KEY).value)


def test_golden_envelope_with_meta_and_markers() -> None:
    """Meta bytes, big ints, -0.0 and nested containers encode to the pinned bytes."""
    blob = Codec().encode(
        GOLDEN_2_VALUE, key=GOLDEN_KEY, created=1.0, duration=2.0, meta=b"\x81\xa1m\x01"
    )
    assert blob.hex() == GOLDEN_2
    entry = Codec().decode(bytes.fromhex(GOLDEN_2), key=GOLDEN_KEY)
    assert_same(GOLDEN_2_VALUE, entry.value)
    assert entry.meta == b"\x81\xa1m\x01"


def test_golden_envelope_pickle() -> None:
    """The signed pickle envelope (protocol 5, keyed BLAKE3) encodes to the pinned bytes."""
    codec = Codec(PickleSerializer(b"golden-secret"))
    assert codec.encode(1, key=GOLDEN_KEY, created=3.0, duration=0.5).hex() == GOLDEN_3
    assert codec.decode(bytes.fromhex(GOLDEN_3), key=GOLDEN_KEY) == Entry(1, 3.0, 0.5, b"")


def test_golden_matches_documented_layout() -> None:
    """The golden bytes parse with the layout in docs/codec.md (forge() reimplements it)."""
    blob = bytes.fromhex(GOLDEN_2)
    payload = blob[32 + 16 + 4 :]
    assert forge(payload, key=GOLDEN_KEY, meta=b"\x81\xa1m\x01", created=1.0, duration=2.0) == blob
    signed = bytes.fromhex(GOLDEN_3)
    assert forge(signed[64:], key=GOLDEN_KEY, codec_id=2, secret=b"golden-secret", created=3.0,
                 duration=0.5) == signed


GOLDEN_PAYLOADS = [
    ("int", 1, "01"),
    ("tuple_compact", (1, "a"), "d6019201a161"),
    ("tuple_general", ((1,), [2]), "93c70001d50191019102"),
    ("set_compact", {7}, "d5029107"),
    ("set_general", {(1, (2,))}, "92c7000293c7000101d5019102"),
    ("frozenset_compact", frozenset({b"x"}), "d60391c40178"),
    ("ordereddict", collections.OrderedDict([("b", 1), ("a", 2)]), "92c7000482a16201a16102"),
    ("fraction", fractions.Fraction(-3, 4), "93c70005fd04"),
    ("bigint_pos", 2**64, "c70910010000000000000000"),
    ("bigint_neg", -(2**63) - 1, "c70910ff7fffffffffffffff"),
    ("bytearray", bytearray(b"ab"), "d5116162"),
    ("complex", complex(1.5, -0.0), "d8123ff80000000000008000000000000000"),
    ("decimal", decimal.Decimal("-1.50E+3"), "d7132d312e3530452b33"),
    (
        "datetime_naive",
        dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
        "c70c1407e8021d173b3a0001e24000",
    ),
    (
        "datetime_fixed",
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        "c7151407e80101000000000000000001fffffffbcf1dcc00",
    ),
    (
        "datetime_named",
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
        "c7181407e8010100000000000000000200000000d693a400434554",
    ),
    (
        "datetime_zoneinfo_fold",
        dt.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        "c71d1407e50b07011e00000000000103416d65726963612f4e65775f596f726b",
    ),
    ("date", dt.date(2024, 2, 29), "d61507e8021d"),
    (
        "time_utc",
        dt.time(12, 30, 15, 500, tzinfo=dt.timezone.utc),
        "c711160c1e0f000001f400010000000000000000",
    ),
    (
        "timedelta",
        dt.timedelta(days=-1, seconds=5, microseconds=6),
        "c70c17ffffffff0000000500000006",
    ),
    (
        "uuid",
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "d81812345678123456781234567812345678",
    ),
    ("pureposixpath", pathlib.PurePosixPath("/a/b"), "c70519002f612f62"),
    ("purewindowspath", pathlib.PureWindowsPath("C:/x"), "c7051901433a5c78"),
    ("posixpath", pathlib.PosixPath("rel/p"), "c706190272656c2f70"),
    (
        "ndarray",
        np.arange(4, dtype="<i2").reshape(2, 2),
        # 0xC1, body length 32, body, 7 zero bytes (the region starts 16-aligned), buffer
        "c10000000000000020c71d20033c69320200000000000000020000000000000002000000000000000000"
        "0000000000000000010002000300",
    ),
    (
        "ndarray_empty",
        np.zeros((0, 3), dtype="<f8"),
        "c71d20033c663802000000000000000000000000000000030000000000000000",
    ),
    ("npscalar", np.float32(1.5), "d721033c66340000c03f"),
]


@pytest.mark.parametrize(
    "value,payload_hex",
    [(v, h if h.startswith("c1") or n == "int" else tagged(h)) for n, v, h in GOLDEN_PAYLOADS],
    ids=[n for n, _, _ in GOLDEN_PAYLOADS],
)
def test_golden_payloads_pin_every_ext_code(value: Any, payload_hex: str) -> None:
    """Each extension type has pinned payload bytes, and those bytes decode to the value."""
    serializer = MsgpackSerializer()
    assert serializer.dumps(value).hex() == payload_hex
    assert_same(value, serializer.loads(bytes.fromhex(payload_hex)))


# ------------------------------------------------------------------------------------------------
# Integrity: corruption, truncation, key binding, versions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codec", [Codec(), Codec(PickleSerializer(SECRET))], ids=["msgpack", "pickle"]
)
def test_every_single_byte_flip_is_a_decode_error(codec: Codec) -> None:
    """Flipping any bit pattern in any byte of an entry (header, check, meta, payload) is caught."""
    blob = codec.encode((1, "ab", [2.5]), key=KEY, created=5.0, duration=1.0, meta=b"\x01\x02")
    for i in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(blob)
            bad[i] ^= mask
            with pytest.raises(DecodeError):
                codec.decode(bytes(bad), key=KEY)


@pytest.mark.parametrize(
    "codec", [Codec(), Codec(PickleSerializer(SECRET))], ids=["msgpack", "pickle"]
)
def test_every_truncation_is_a_decode_error(codec: Codec) -> None:
    """Every strict prefix of an entry (including empty) is a DecodeError; so is extra data."""
    blob = codec.encode({"k": (1, 2)}, key=KEY, created=5.0, duration=1.0, meta=b"m")
    for n in range(len(blob)):
        with pytest.raises(DecodeError):
            codec.decode(blob[:n], key=KEY)
    with pytest.raises(DecodeError):
        codec.decode(blob + b"\x00", key=KEY)


def test_truncated_large_value_is_a_decode_error() -> None:
    """A large entry cut short (the torn-file case) is a DecodeError, not a short value."""
    codec = Codec()
    blob = codec.encode(b"x" * 100_000, key=KEY, created=0.0, duration=0.0)
    for n in (10, 100, 50_000, len(blob) - 1):
        with pytest.raises(DecodeError):
            codec.decode(blob[:n], key=KEY)


def test_bit_flip_inside_large_array_is_a_decode_error() -> None:
    """One flipped bit in the middle of a multi-megabyte array buffer is caught."""
    codec = Codec()
    blob = bytearray(codec.encode(np.zeros(300_000), key=KEY, created=0.0, duration=0.0))
    blob[len(blob) // 2] ^= 0x10
    with pytest.raises(DecodeError):
        codec.decode(bytes(blob), key=KEY)


@pytest.mark.parametrize(
    "codec", [Codec(), Codec(PickleSerializer(SECRET))], ids=["msgpack", "pickle"]
)
def test_entry_copied_under_another_key_is_a_decode_error(codec: Codec) -> None:
    """A valid entry moved to another key or namespace (or swapped with another) does not verify."""
    a = codec.encode("value-a", key=KEY, created=0.0, duration=0.0)
    b = codec.encode("value-b", key=OTHER_KEY, created=0.0, duration=0.0)
    for blob, key in ((a, OTHER_KEY), (b, KEY), (a, "pm:t2:v1:" + "0" * 64), (a, KEY + " ")):
        with pytest.raises(DecodeError):
            codec.decode(blob, key=key)
    assert codec.decode(a, key=KEY).value == "value-a"


def test_keys_with_nul_are_refused() -> None:
    """Keys may not contain NUL (it terminates the key in the check), on write and on read."""
    codec = Codec()
    with pytest.raises(SerializationError):
        codec.encode(1, key="a\0b", created=0.0, duration=0.0)
    with pytest.raises(DecodeError):
        codec.decode(codec.encode(1, key="a", created=0.0, duration=0.0), key="a\0b")


def test_future_format_version_is_a_decode_error() -> None:
    """An entry from a newer format version is a DecodeError even with a valid check."""
    blob = forge(MsgpackSerializer().dumps(1), version=3)
    with pytest.raises(DecodeError, match="version"):
        Codec().decode(blob, key=KEY)
    with pytest.raises(DecodeError, match="version"):
        Codec().peek(blob)


@pytest.mark.parametrize(
    "garbage", [b"", b"P", b"PM", b"XX" + bytes(60), pickle.dumps(1), b"\x00" * 100]
)
def test_non_envelopes_are_decode_errors(garbage: bytes) -> None:
    """Bytes that are not an envelope at all are DecodeErrors."""
    with pytest.raises(DecodeError):
        Codec().decode(garbage, key=KEY)


def test_meta_length_beyond_data_is_a_decode_error() -> None:
    """A header whose meta length exceeds the data is a DecodeError (lengths must add up)."""
    blob = bytearray(forge(b"\x01", meta=b"abc"))
    struct.pack_into(">I", blob, 24, 2**32 - 1)
    with pytest.raises(DecodeError):
        Codec().decode(bytes(blob), key=KEY)
    with pytest.raises(DecodeError):
        Codec().peek(bytes(blob))


def test_codec_id_mismatch_is_a_decode_error() -> None:
    """A reader only accepts its own codec id: msgpack entries fail in a pickle reader and back."""
    mp, pk = Codec(), Codec(PickleSerializer(SECRET))
    with pytest.raises(DecodeError, match="codec"):
        pk.decode(mp.encode(1, key=KEY, created=0.0, duration=0.0), key=KEY)
    with pytest.raises(DecodeError, match="codec"):
        mp.decode(pk.encode(1, key=KEY, created=0.0, duration=0.0), key=KEY)


def test_decode_accepts_bytes_like_input() -> None:
    """decode also takes bytearray and memoryview (copied to bytes first)."""
    codec = Codec()
    blob = codec.encode((1,), key=KEY, created=0.0, duration=0.0)
    assert codec.decode(bytearray(blob), key=KEY).value == (1,)  # type: ignore[arg-type]
    assert codec.decode(memoryview(blob), key=KEY).value == (1,)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Planted pickles never run
# ------------------------------------------------------------------------------------------------


def test_canary_works_when_unpickled(canary: tuple[bytes, Path]) -> None:
    """Positive control: unpickling the canary does create the marker file."""
    payload, marker = canary
    pickle.loads(payload)
    assert marker.exists()


def test_planted_raw_pickle_is_never_unpickled(
    canary: tuple[bytes, Path], pickle_spy: list[int]
) -> None:
    """A raw pickle stored under a valid key is a DecodeError for both codecs; nothing runs."""
    payload, marker = canary
    for codec in (Codec(), Codec(PickleSerializer(SECRET))):
        with pytest.raises(DecodeError):
            codec.decode(payload, key=KEY)
    assert not marker.exists() and not pickle_spy


def test_planted_pickle_with_wrong_mac_is_never_unpickled(
    canary: tuple[bytes, Path], pickle_spy: list[int]
) -> None:
    """A well-formed pickle envelope signed with another secret (or unsigned) is rejected."""
    payload, marker = canary
    codec = Codec(PickleSerializer(SECRET, verify_keys=[b"old-secret"]))
    for blob in (
        forge(payload, codec_id=2, secret=b"attacker-secret"),
        forge(payload, codec_id=2, secret=SECRET, key=OTHER_KEY),  # signed, but for another key
        forge(payload, codec_id=2) + bytes(16),  # a BLAKE3 "check" is no signature
        forge(payload, codec_id=2, secret=SECRET)[:-1],
    ):
        with pytest.raises(DecodeError):
            codec.decode(blob, key=KEY)
    assert not marker.exists() and not pickle_spy


def test_pickle_entry_is_never_unpickled_by_msgpack_reader(
    canary: tuple[bytes, Path], pickle_spy: list[int]
) -> None:
    """The default reader refuses codec id 2 even when correctly signed, and never unpickles."""
    payload, marker = canary
    for blob in (forge(payload, codec_id=2, secret=SECRET), forge(payload, codec_id=2)):
        with pytest.raises(DecodeError, match="codec"):
            Codec().decode(blob, key=KEY)
    # A pickle inside a valid msgpack envelope is only ever parsed as msgpack: garbage, not code.
    with pytest.raises(DecodeError):
        Codec().decode(forge(payload, codec_id=1), key=KEY)
    assert not marker.exists() and not pickle_spy


def test_codec_id_flipped_and_resigned_with_other_key_is_rejected(pickle_spy: list[int]) -> None:
    """S2: a msgpack entry relabelled as pickle and re-signed with a foreign key is a miss."""
    payload = MsgpackSerializer().dumps({"a": 1})
    blob = forge(payload, codec_id=2, secret=b"not-our-secret")
    with pytest.raises(DecodeError):
        Codec(PickleSerializer(SECRET)).decode(blob, key=KEY)
    with pytest.raises(DecodeError):
        Codec().decode(blob, key=KEY)
    assert not pickle_spy


def test_peek_reads_header_without_decoding(
    canary: tuple[bytes, Path], pickle_spy: list[int]
) -> None:
    """peek returns header fields and meta, and never touches (or verifies) the payload."""
    payload, marker = canary
    blob = forge(payload, codec_id=2, secret=b"wrong", created=7.0, duration=0.5, meta=b"mm")
    info = Codec().peek(blob)
    assert info == EntryInfo(2, "pickle", 7.0, 0.5, len(blob), b"mm")
    assert Codec().peek(Codec().encode(1, key=KEY, created=1.0, duration=2.0)).codec == "msgpack"
    assert not marker.exists() and not pickle_spy
    with pytest.raises(DecodeError):
        Codec().peek(b"not an entry")


# ------------------------------------------------------------------------------------------------
# Pickle: secrets and rotation
# ------------------------------------------------------------------------------------------------


def test_pickle_key_rotation() -> None:
    """Old entries verify while the old secret is in verify_keys, and fail once it is removed."""
    old = Codec(PickleSerializer(b"old"))
    blob = old.encode({"v": 1}, key=KEY, created=0.0, duration=0.0)
    rotated = Codec(PickleSerializer(b"new", verify_keys=[b"older", "old"]))
    assert rotated.decode(blob, key=KEY).value == {"v": 1}
    new_blob = rotated.encode(2, key=KEY, created=0.0, duration=0.0)
    assert Codec(PickleSerializer("new")).decode(new_blob, key=KEY).value == 2  # signs with new
    with pytest.raises(DecodeError):
        old.decode(new_blob, key=KEY)
    with pytest.raises(DecodeError):
        Codec(PickleSerializer(b"new")).decode(blob, key=KEY)


@settings(max_examples=50, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=40),
    other=st.binary(min_size=1, max_size=40),
    value=VALUES,
)
def test_wrong_secret_only_ever_raises_decode_error(
    secret: bytes, other: bytes, value: Any
) -> None:
    """Reading with a wrong secret is always a DecodeError, never another exception."""
    blob = Codec(PickleSerializer(secret)).encode(value, key=KEY, created=0.0, duration=0.0)
    if other != secret:
        with pytest.raises(DecodeError):
            Codec(PickleSerializer(other)).decode(blob, key=KEY)


def test_pickle_needs_a_secret() -> None:
    """An empty or missing pickle secret is a ConfigurationError that says what to do."""
    for bad in (b"", ""):
        with pytest.raises(ConfigurationError):
            PickleSerializer(bad)
    with pytest.raises(ConfigurationError):
        PickleSerializer(SECRET, verify_keys=[b""])
    with pytest.raises(ConfigurationError):
        PickleSerializer(SECRET, verify_keys=b"one-secret")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="PERSISTMEMO_SECRET"):
        get_serializer("pickle")


def test_secrets_never_appear_in_repr() -> None:
    """repr of the pickle serializer and codec hide the secrets."""
    s = PickleSerializer(b"sup3r-secret", verify_keys=["old-secr3t"])
    for text in (repr(s), repr(Codec(s))):
        assert "sup3r" not in text and "secr3t" not in text


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


class SevenSerializer:
    """A custom serializer (repr-based, for the test only)."""

    name = "seven"
    codec_id = 7

    def dumps(self, value: Any) -> bytes:
        return repr(value).encode()

    def loads(self, data: bytes | memoryview) -> Any:
        return int(bytes(data))


def test_get_serializer_resolves_specs() -> None:
    """None/'msgpack' give msgpack, 'pickle' needs a secret, instances pass through."""
    assert isinstance(get_serializer(), MsgpackSerializer)
    assert isinstance(get_serializer("msgpack"), MsgpackSerializer)
    pk = get_serializer("pickle", secret="s", verify_keys=["t"])
    assert isinstance(pk, PickleSerializer) and pk.codec_id == 2 and pk.name == "pickle"
    custom = SevenSerializer()
    assert get_serializer(custom) is custom
    assert isinstance(custom, Serializer)
    for bad in ("json", "Pickle", 3, object()):
        with pytest.raises(ConfigurationError, match="unknown serializer") as info:
            get_serializer(bad)  # type: ignore[arg-type]
        assert repr(bad) in str(info.value)


def test_custom_serializer_gets_envelope_and_check() -> None:
    """A custom serializer round-trips inside a BLAKE3-checked envelope under its own id."""
    codec = Codec(SevenSerializer())
    blob = codec.encode(41, key=KEY, created=0.0, duration=0.0)
    assert blob[3] == 7 and codec.decode(blob, key=KEY).value == 41
    assert codec.peek(blob).codec == "seven"
    with pytest.raises(DecodeError):
        Codec().decode(blob, key=KEY)
    bad = forge(b"not an int", codec_id=7)
    with pytest.raises(DecodeError):
        codec.decode(bad, key=KEY)


@pytest.mark.parametrize("codec_id", [0, 256, -1, "1", 2])
def test_codec_rejects_bad_codec_ids(codec_id: Any) -> None:
    """codec ids must be ints in 1..255, and 2 is reserved for the signed PickleSerializer."""
    serializer = SevenSerializer()
    serializer.codec_id = codec_id
    with pytest.raises(ConfigurationError):
        Codec(serializer)


# ------------------------------------------------------------------------------------------------
# Hostile payloads that carry a valid check (BLAKE3 is not a signature: anyone can forge it)
# ------------------------------------------------------------------------------------------------


def ext(code: int, data: bytes) -> bytes:
    """Return msgpack bytes for one ext object (any code, including reserved negative ones)."""
    fixext = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if len(data) in fixext:
        return struct.pack(">Bb", fixext[len(data)], code) + data
    if len(data) < 256:
        return struct.pack(">BBb", 0xC7, len(data), code) + data
    return struct.pack(">BIb", 0xC9, len(data), code) + data


def ndarray_ext(dtype: str, shape: tuple[int, ...], offset: int) -> bytes:
    """Return an ndarray ext (code 32) referring to ``offset`` in the out-of-band region."""
    head = bytes((len(dtype),)) + dtype.encode() + bytes((len(shape),))
    return ext(32, head + struct.pack(f">{len(shape)}QQ", *shape, offset))


def oob(body: bytes, region: bytes = b"") -> bytes:
    """Return a payload with out-of-band buffers: 0xC1, u64 body length, body, region."""
    return b"\xc1" + struct.pack(">Q", len(body)) + body + region


HOSTILE_PAYLOADS = {
    "empty": b"",
    "never_used_byte": b"\xc1",
    "extra_data": b"\x01\x02",
    "truncated_body": b"\x92\x01",
    "deep_list_100k": b"\x91" * 100_000 + b"\xc0",
    "deep_map_100k": b"\x81\xc0" * 100_000 + b"\xc0",
    "deep_tuples_100k": b"\x92\xc7\x00\x01" * 100_000 + b"\xc0",
    "invalid_utf8": b"\xa2\xff\xfe",
    "unknown_ext": ext(99, b"x"),
    "timestamp_ext_bad_length": ext(-1, b"\x00\x00\x00"),
    "unknown_negative_ext": ext(-2, b"x"),
    "marker_alone": ext(1, b""),
    "marker_second": b"\x92\x01" + ext(1, b""),
    "marker_in_map": b"\x81\x01" + ext(2, b""),
    "marker_as_key": b"\x81" + ext(1, b"") + b"\x01",
    "marker_in_marker": b"\x92" + ext(1, b"") + ext(1, b""),
    "marker_ext16": b"\x91\xc8\x00\x00\x01",
    "odict_bad": b"\x92" + ext(4, b"") + b"\x01",
    "fraction_bad": b"\x93" + ext(5, b"") + b"\x01\x00",
    "fraction_bool": b"\x93" + ext(5, b"") + b"\xc3\x01",
    "set_unhashable": b"\x92" + ext(2, b"") + b"\x90",
    "compact_tuple_not_array": ext(1, b"\xa3abc"),
    "compact_tuple_with_ext": ext(1, b"\x91" + ext(16, b"\x01")),
    "compact_set_unhashable": ext(2, b"\x91\x90"),
    "bad_complex": ext(18, b"\x00" * 15),
    "bad_uuid": ext(24, b"\x00" * 15),
    "bad_date": ext(21, b"\x07\xe8\x02\x1e"),
    "bad_datetime_tz": ext(20, bytes.fromhex("07e8010100000000000000") + b"\x00\x09"),
    "bad_zoneinfo_key": ext(
        20, bytes.fromhex("07e801010000000000000000") + b"\x03../../etc/passwd"
    ),
    "bad_path_flavour": ext(25, b"\x09abc"),
    "bad_decimal": ext(19, b"1.2.3"),
    "np_object_dtype": ext(33, b"\x02|O" + bytes(8)),
    "np_void_dtype": ext(33, b"\x03|V8" + bytes(8)),
    "np_scalar_short": ext(33, b"\x03<f8" + bytes(7)),
    "np_array_no_buffer": ndarray_ext("<f8", (4,), 0),
    "np_array_huge_shape": oob(ndarray_ext("<f8", (2**60,), 0)),
    "np_array_offset_gap": oob(ndarray_ext("<f8", (1,), 8), bytes(16)),
    "np_array_unused_tail": oob(ndarray_ext("<f8", (1,), 0), bytes(9)),
    "oob_body_too_long": b"\xc1" + struct.pack(">Q", 10**6) + b"\x01",
    "oob_short_header": b"\xc1\x00",
}


@pytest.mark.parametrize("payload", list(HOSTILE_PAYLOADS.values()), ids=list(HOSTILE_PAYLOADS))
def test_hostile_payload_with_valid_check_is_a_decode_error(payload: bytes) -> None:
    """Forged payloads (deep nesting, bad exts, leaked markers, lying lengths) are DecodeErrors."""
    with pytest.raises(DecodeError):
        Codec().decode(forge(payload), key=KEY)


SUPPORTED_TYPES = (
    *(type(None), bool, int, float, complex, str, bytes, bytearray, decimal.Decimal),
    *(fractions.Fraction, dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID),
    *(pathlib.PurePosixPath, pathlib.PureWindowsPath, np.ndarray, np.generic),
)


def assert_plain_data(value: Any, depth: int = 0) -> None:
    """Assert ``value`` is built only from supported types (no marker or ext object leaked)."""
    assert depth < 600
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            assert_plain_data(item, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            assert_plain_data(k, depth + 1)
            assert_plain_data(v, depth + 1)
    else:
        assert isinstance(value, SUPPORTED_TYPES), type(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES, data=st.data())
def test_property_forged_payload_mutations_only_raise_decode_error(value: Any, data: Any) -> None:
    """Mutated payloads with a valid check decode to plain data or raise DecodeError only."""
    payload = bytearray(MsgpackSerializer().dumps(value))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(payload)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip" and pos < len(payload):
            payload[pos] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            payload[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
        else:
            del payload[pos : pos + data.draw(st.integers(1, 3))]
    try:
        out = Codec().decode(forge(bytes(payload)), key=KEY).value
    except DecodeError:
        return
    assert_plain_data(out)


def test_msgpack_timestamp_ext_reads_as_utc_datetime() -> None:
    """Ext -1 (msgpack Timestamp) is never written; forged, it reads as an aware UTC datetime."""
    value = Codec().decode(forge(ext(-1, b"\x00\x00\x00\x01")), key=KEY).value
    assert_same(dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc), value)


def test_huge_valid_numbers_decode_without_str_conversion() -> None:
    """A 100,000-digit int or Decimal is a legitimate value: no int-str limit applies."""
    big = 7 * 10**100_000 + 1
    assert roundtrip(big) == big
    dec = decimal.Decimal("9" * 100_000)
    assert roundtrip(dec) == dec


def test_decoding_is_thread_safe() -> None:
    """Concurrent decodes of marker and array values (per-call state) never mix results."""
    codec = Codec()
    values = [((i, [i]), {i: (np.full(3, i),)}, {(i, (i,))}) for i in range(16)]
    blobs = [codec.encode(v, key=f"k{i}", created=0.0, duration=0.0) for i, v in enumerate(values)]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for n in range(300):
                i = (n + offset) % len(values)
                assert_same(values[i], codec.decode(blobs[i], key=f"k{i}").value)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
