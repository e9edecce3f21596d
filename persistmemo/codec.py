"""Value <-> bytes: a versioned, verified envelope around msgpack (default) or signed pickle.

Every stored value is one ``bytes`` object (the byte-by-byte layout is in ``docs/codec.md``)::

    header  32 bytes, struct ">2sBBBBHddII": b"PM", format version (2), codec id, check kind,
            flags (0; reserved for compression), 0, created, duration, meta length, 0
    check   16-byte XXH3-128 checksum (no secret) or 32-byte keyed-BLAKE3 MAC (with a secret)
            over key (UTF-8) + b"\\0" + header + meta + payload
    meta    opaque bytes for the caller (not decoded on the hit path)
    payload the serializer's bytes (starts 8-byte aligned when meta is empty)

The reader trusts nothing it reads: the codec id must equal the configured serializer's id, the
check kind must be the one this cache uses (a cache with a secret accepts only entries signed with
it or a ``verify_keys`` secret), the entry must be at most ``max_value_size`` bytes, and the check
must verify *before* any byte of the payload reaches a decoder, so a planted pickle is never
unpickled. Anything that does not verify or decode raises :class:`DecodeError`.

Example::

    >>> codec = Codec()
    >>> blob = codec.encode((1, "a"), key="pm:demo", created=0.0, duration=0.5)
    >>> codec.decode(blob, key="pm:demo").value
    (1, 'a')
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ._msgpack_ext import _MAX_DEPTH, _pack, _prepare, _qualname, _unpack

# The persisted ext codes (docs/codec.md) live next to their encoders; re-exported from here.
from ._msgpack_ext import EXT_BIGINT as EXT_BIGINT
from ._msgpack_ext import EXT_BYTEARRAY as EXT_BYTEARRAY
from ._msgpack_ext import EXT_COMPLEX as EXT_COMPLEX
from ._msgpack_ext import EXT_DATE as EXT_DATE
from ._msgpack_ext import EXT_DATETIME as EXT_DATETIME
from ._msgpack_ext import EXT_DECIMAL as EXT_DECIMAL
from ._msgpack_ext import EXT_FRACTION as EXT_FRACTION
from ._msgpack_ext import EXT_FROZENSET as EXT_FROZENSET
from ._msgpack_ext import EXT_NDARRAY as EXT_NDARRAY
from ._msgpack_ext import EXT_NPSCALAR as EXT_NPSCALAR
from ._msgpack_ext import EXT_ORDEREDDICT as EXT_ORDEREDDICT
from ._msgpack_ext import EXT_PATH as EXT_PATH
from ._msgpack_ext import EXT_SET as EXT_SET
from ._msgpack_ext import EXT_TIME as EXT_TIME
from ._msgpack_ext import EXT_TIMEDELTA as EXT_TIMEDELTA
from ._msgpack_ext import EXT_TUPLE as EXT_TUPLE
from ._msgpack_ext import EXT_UUID as EXT_UUID
from ._msgpack_ext import EXT_ZSTD as _EXT_ZSTD
from ._msgpack_ext import UNPACKED_LIMIT as _UNPACKED_LIMIT
from ._signing import (
    CHECKSUM_SIZE,
    MAC_SIZE,
    Signer,
    _secret_bytes,
    _xxh3_128_digest,
    checksum,
    checksum_ok,
)
from .errors import ConfigurationError, DecodeError, SerializationError

__all__ = [
    "Codec",
    "Entry",
    "EntryInfo",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "get_serializer",
]

MAGIC = b"PM"
FORMAT_VERSION = 2
MSGPACK_CODEC_ID = 1
PICKLE_CODEC_ID = 2
PICKLE_PROTOCOL = 5  # pinned, not HIGHEST_PROTOCOL: the bytes must not change with Python
CHECK_XXH3 = 1  # XXH3-128 checksum: integrity, not authenticity
CHECK_MAC = 2  # keyed BLAKE3: nothing without the secret verifies
CHECK_SIZES = {CHECK_XXH3: CHECKSUM_SIZE, CHECK_MAC: MAC_SIZE}
KNOWN_FLAGS = 0  # no flag is defined yet: an entry with any flag set is from a newer writer
DEFAULT_MAX_VALUE_SIZE = 1 << 30

# magic, version, codec id, check kind, flags, reserved, created, duration, meta length, reserved
HEADER = struct.Struct(">2sBBBBHddII")  # 32 bytes: the check and payload start 8-aligned
_HEADER_TAIL = struct.Struct(">ddI")  # created, duration, meta length (at offset 8)


class Entry(NamedTuple):
    """A decoded, verified cache entry."""

    value: Any
    created: float  # unix time when stored
    duration: float  # seconds the function took
    meta: bytes  # opaque caller metadata, returned undecoded


class EntryInfo(NamedTuple):
    """What :meth:`Codec.peek` reads from a header, without verifying or decoding the payload."""

    format_version: int
    codec: str
    created: float
    duration: float
    size: int  # length of the whole stored blob
    meta: bytes


@runtime_checkable
class Serializer(Protocol):
    """Turns a value into payload bytes and back; the :class:`Codec` adds envelope and check."""

    name: str
    codec_id: int

    def dumps(self, value: Any) -> bytes:
        """Return the payload for ``value``; raise :class:`SerializationError` if unsupported."""
        ...

    def loads(self, data: bytes | memoryview) -> Any:
        """Rebuild a value; any exception is turned into :class:`DecodeError` by the codec."""
        ...


class MsgpackSerializer:
    """The default serializer: data only (it never executes code), with exact types.

    Round-trips None, bool, int (any size), float, str, bytes, bytearray, list, tuple, dict (any
    supported hashable keys), set, frozenset, OrderedDict, complex, Decimal, Fraction, the datetime
    family (with ``timezone`` or ``ZoneInfo``), UUID, pathlib paths, and numpy arrays and scalars.
    """

    name: str = "msgpack"
    codec_id: int = MSGPACK_CODEC_ID

    def dumps_parts(self, value: Any) -> list[bytes | memoryview]:
        """Return buffers whose concatenation is ``dumps(value)`` (arrays are not copied)."""
        try:
            prepared = _prepare(value)
            try:
                return _pack(prepared, None, prepared is not value)
            except UnicodeEncodeError:  # lone surrogates: legal in str, illegal in strict UTF-8
                return _pack(prepared, "surrogatepass", prepared is not value)
        except SerializationError:
            raise
        except (ValueError, RecursionError, OverflowError, TypeError) as exc:
            if "recursion" in str(exc) or isinstance(exc, RecursionError):
                msg = f"value is nested deeper than {_MAX_DEPTH} levels"
            else:
                msg = f"cannot encode value of type {_qualname(type(value))}: {exc}"
            raise SerializationError(msg) from exc

    def dumps(self, value: Any) -> bytes:
        """Return the msgpack payload for ``value``.

        Raises:
            SerializationError: a type outside the supported set, or nesting beyond 511 levels.
        """
        return b"".join(self.dumps_parts(value))

    def loads(self, data: bytes | memoryview) -> Any:
        """Rebuild a value from a payload produced by :meth:`dumps`."""
        return _unpack(data)

    def __repr__(self) -> str:
        return "MsgpackSerializer()"


# ------------------------------------------------------------------------------------------------
# pickle, signed
# ------------------------------------------------------------------------------------------------


class PickleSerializer:
    """Opt-in pickle: any picklable value, HMAC-SHA256 signed with ``secret``.

    Only use it when everyone who can write to the store is trusted with code execution in every
    reader; the signature makes sure nobody else's bytes are ever unpickled.

    Args:
        secret: signs new entries (and verifies them).
        verify_keys: older secrets still accepted when reading, for key rotation.

    Raises:
        ConfigurationError: an empty or missing secret.
    """

    name: str = "pickle"
    codec_id: int = PICKLE_CODEC_ID

    def __init__(self, secret: bytes | str, *, verify_keys: Sequence[bytes | str] = ()) -> None:
        if isinstance(verify_keys, (str, bytes)):
            raise ConfigurationError("verify_keys must be a sequence of secrets, not one secret")
        keys = [_secret_bytes(secret, "the pickle secret")]
        keys += [_secret_bytes(k, "each verify key") for k in verify_keys]
        self._keys: tuple[bytes, ...] = tuple(keys)

    def dumps(self, value: Any) -> bytes:
        """Return ``pickle.dumps(value, protocol=5)``.

        Raises:
            SerializationError: the value cannot be pickled.
        """
        import pickle  # lazily, like hashlib/hmac: only pickle users pay for the imports

        try:
            return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
        except Exception as exc:  # PicklingError, TypeError, AttributeError, RecursionError...
            raise SerializationError(
                f"cannot pickle a value of type {_qualname(type(value))}: {exc}"
            ) from exc

    def loads(self, data: bytes | memoryview) -> Any:
        """Unpickle ``data``; the codec calls this only after the HMAC verified."""
        import pickle

        return pickle.loads(data)

    def __repr__(self) -> str:  # never show the secrets
        return f"PickleSerializer(secret=<hidden>, verify_keys=<{len(self._keys) - 1} hidden>)"


def get_serializer(
    spec: str | Serializer | None = None,
    *,
    secret: bytes | str | None = None,
    verify_keys: Sequence[bytes | str] = (),
) -> Serializer:
    """Resolve a ``serializer=`` option.

    Args:
        spec: ``None`` or ``"msgpack"`` (default), ``"pickle"``, or a :class:`Serializer`.
        secret: required for ``"pickle"``; signs entries.
        verify_keys: older pickle secrets still accepted when reading.

    Raises:
        ConfigurationError: ``"pickle"`` without a secret, or an unknown ``spec``.

    Example::

        >>> get_serializer().name
        'msgpack'
    """
    if spec is None or spec == "msgpack":
        return MsgpackSerializer()
    if spec == "pickle":
        if not secret:
            raise ConfigurationError(
                "serializer='pickle' needs a secret (pass secret=... or set PERSISTMEMO_SECRET): "
                "entries are HMAC-signed so that bytes planted in the store are never unpickled"
            )
        return PickleSerializer(secret, verify_keys=verify_keys)
    if not isinstance(spec, str) and isinstance(spec, Serializer):
        return spec
    raise ConfigurationError(
        f"unknown serializer {spec!r}: expected 'msgpack', 'pickle' or a Serializer instance"
    )


# ------------------------------------------------------------------------------------------------
# The envelope
# ------------------------------------------------------------------------------------------------


class Codec:
    """Encode results into verified envelopes and decode them back.

    Args:
        serializer: a :class:`Serializer` (default :class:`MsgpackSerializer`). The reader uses
            only this serializer: entries written with another codec id are a :class:`DecodeError`.
        secret: sign every entry (keyed BLAKE3) and accept only entries signed with it or with a
            ``verify_keys`` secret. Default: the pickle serializer's secret, if any.
        verify_keys: older secrets still accepted when reading (key rotation).
        max_value_size: the largest entry in bytes: bigger results are not stored
            (:class:`SerializationError`), bigger stored entries are misses.
        compress: a ``persistmemo._compress.Compression`` (``compress="zstd"``): msgpack
            payloads above its threshold are stored zstd-compressed (every reader decodes them).

    Raises:
        ConfigurationError: a serializer whose ``codec_id`` is not in 1-255, a custom
            serializer claiming the pickle id 2, an empty secret, or a bad ``max_value_size``.
    """

    __slots__ = ("_id", "_kind", "_loads", "_max", "_name", "_parts", "_prefix", "_signer",
                 "_start")

    def __init__(
        self,
        serializer: Serializer | None = None,
        *,
        secret: bytes | str | None = None,
        verify_keys: Sequence[bytes | str] = (),
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        compress: Any = None,
    ) -> None:
        s: Serializer = MsgpackSerializer() if serializer is None else serializer
        cid = getattr(s, "codec_id", None)
        if type(cid) is not int or not 1 <= cid <= 255:
            raise ConfigurationError(f"serializer codec_id must be an int in 1-255, got {cid!r}")
        if cid == PICKLE_CODEC_ID and not isinstance(s, PickleSerializer):
            raise ConfigurationError("codec_id 2 is reserved for PickleSerializer")
        if isinstance(verify_keys, (str, bytes)):
            raise ConfigurationError("verify_keys must be a sequence of secrets, not one secret")
        keys: list[bytes] = []
        if secret is not None:
            keys = [_secret_bytes(secret, "the secret")]
            keys += [_secret_bytes(k, "each verify key") for k in verify_keys]
        elif isinstance(s, PickleSerializer):
            keys = list(s._keys)
        if isinstance(max_value_size, bool) or not isinstance(max_value_size, int) or \
                max_value_size < HEADER.size + MAC_SIZE:
            raise ConfigurationError(
                f"max_value_size must be an int of bytes >= 64, got {max_value_size!r}")
        self._signer = Signer(keys) if keys else None
        self._kind = CHECK_MAC if keys else CHECK_XXH3
        self._id = cid
        self._max = max_value_size
        self._name = str(s.name)
        self._start = HEADER.size + CHECK_SIZES[self._kind]
        self._prefix = bytes((*MAGIC, FORMAT_VERSION, cid, self._kind, 0))
        self._loads: Callable[[bytes | memoryview], Any] = s.loads
        if type(s) is MsgpackSerializer:  # exactly: a subclass may override dumps/loads
            self._loads = _unpack  # one Python call less on the hit path
            if max_value_size != _UNPACKED_LIMIT:  # compressed payloads expand at most to it
                self._loads = functools.partial(_unpack, limit=max_value_size)
            self._parts: Callable[[Any], Sequence[bytes | memoryview]] = s.dumps_parts
            if compress is not None:  # a persistmemo._compress.Compression: big payloads
                parts = s.dumps_parts
                self._parts = lambda value: compress.apply(
                    self._within_limit(parts(value)), _EXT_ZSTD)
        else:
            dumps = s.dumps
            self._parts = lambda value: (dumps(value),)

    def _within_limit(self, parts: Sequence[bytes | memoryview]) -> Sequence[bytes | memoryview]:
        """Refuse a payload whose uncompressed size is over max_value_size: readers refuse to
        expand a frame beyond it, so the stored entry would never be a hit."""
        size = sum(map(len, parts))
        if self._start + size > self._max:
            raise SerializationError(
                f"the result is {self._start + size} bytes uncompressed, over max_value_size="
                f"{self._max}: it is returned but not cached (raise max_value_size to store it)")
        return parts

    @property
    def serializer_name(self) -> str:
        """The configured serializer's name (``"msgpack"``, ``"pickle"``, ...)."""
        return self._name

    @property
    def signed(self) -> bool:
        """Whether entries are signed (and only signed entries are accepted)."""
        return self._signer is not None

    @property
    def max_value_size(self) -> int:
        """The largest entry, in bytes, that is stored or read."""
        return self._max

    def encode(
        self, value: Any, *, key: str, created: float, duration: float, meta: bytes = b""
    ) -> bytes:
        """Return the stored form of ``value`` under ``key``.

        Raises:
            SerializationError: the serializer cannot encode ``value``, the entry would exceed
                ``max_value_size``, or ``key`` contains NUL.
        """
        key_head = _key_bytes(key, SerializationError)
        parts = self._parts(value)
        meta = bytes(meta)
        if len(meta) > 0xFFFFFFFF:
            raise SerializationError("meta is larger than 4 GiB")
        size = len(meta) + sum(map(len, parts))  # memoryview parts are 1-D bytes
        if self._start + size > self._max:
            raise SerializationError(
                f"the result is {self._start + size} bytes stored, over max_value_size="
                f"{self._max}: it is returned but not cached (raise max_value_size to store it)")
        header = HEADER.pack(MAGIC, FORMAT_VERSION, self._id, self._kind, 0, 0, created,
                             duration, len(meta), 0)
        body = (meta, *parts)
        head = key_head + header
        if self._signer is not None:
            check = self._signer.sign(head, body, size)
        else:
            check = checksum(head, body, size)
        return b"".join((header, check, *body))

    def decode(self, data: bytes | bytearray, *, key: str) -> Entry:
        """Verify ``data`` stored under ``key`` and return the :class:`Entry`.

        Raises:
            DecodeError: too large, wrong magic, version, codec or check kind, bad lengths, a
                failed check, or a payload the serializer cannot decode. The payload reaches the
                serializer only after the check verified.
        """
        # This is the cache-hit path: keep it flat.
        if type(data) is not bytes and type(data) is not bytearray:
            data = bytes(data)  # a bytearray is kept: arrays may then use it without a copy
        if "\0" in key:
            raise DecodeError("cache keys must not contain NUL")
        start = self._start
        n = len(data)
        if n > self._max:
            raise DecodeError(f"stored entry of {n} bytes exceeds max_value_size={self._max}")
        if n < start or data[:6] != self._prefix:
            raise self._bad_prefix(data)
        created, duration, meta_len = _HEADER_TAIL.unpack_from(data, 8)
        payload_start = start + meta_len
        if payload_start > n:
            raise DecodeError("stored entry is truncated (meta length exceeds the data)")
        head = key.encode("utf-8", "surrogatepass") + b"\0" + bytes(data[:32])
        check = bytes(data[32:start])
        payload: bytes | memoryview
        if self._signer is None and type(data) is bytes and n < 65536:
            # The common small hit: one slice, one hash call, bytes handed to msgpack as is.
            payload = data[start:]
            ok = _xxh3_128_digest(head + payload) == check
            if meta_len:
                payload = payload[meta_len:]
        else:  # large, signed or a bytearray: no copies (arrays may be decoded in place)
            body = memoryview(data)[start:]
            if self._signer is not None:
                ok = self._signer.verify(head, body, check)
            else:
                ok = checksum_ok(head, body, check)
            payload = body[meta_len:]
        if not ok:
            raise DecodeError(
                "integrity check failed: corrupt, truncated, forged, or stored under another key"
            )
        try:
            value = self._loads(payload)
        except Exception as exc:  # StackError, ExtraData, ValueError, RecursionError, ...
            raise DecodeError(f"{self._name} payload does not decode: {_describe(exc)}") from exc
        return _new_entry(Entry, (value, created, duration, bytes(data[start:payload_start])))

    def peek(self, data: bytes) -> EntryInfo:
        """Read the header and meta of ``data`` without verifying or decoding the payload.

        Raises:
            DecodeError: not an envelope, an unknown format version or check kind, or truncated
                before the meta.
        """
        n = len(data)
        if n < HEADER.size or bytes(data[:2]) != MAGIC:
            raise DecodeError("not a persistmemo entry")
        _, version, cid, kind, _flags, _, created, duration, meta_len, _ = HEADER.unpack_from(data)
        if version != FORMAT_VERSION:
            raise DecodeError(f"unsupported format version {version}")
        if kind not in CHECK_SIZES:
            raise DecodeError(f"unknown check kind {kind}")
        start = HEADER.size + CHECK_SIZES[kind]
        if start + meta_len > n:
            raise DecodeError("stored entry is truncated")
        names = {MSGPACK_CODEC_ID: "msgpack", PICKLE_CODEC_ID: "pickle", self._id: self._name}
        codec = names.get(cid, f"codec-{cid}")
        return EntryInfo(
            version, codec, created, duration, n, bytes(data[start : start + meta_len])
        )

    def _bad_prefix(self, data: bytes | bytearray) -> DecodeError:
        if len(data) < 6 or data[:2] != MAGIC:
            return DecodeError("not a persistmemo entry (bad magic or too short)")
        if data[2] != FORMAT_VERSION:
            return DecodeError(f"unsupported format version {data[2]}")
        if data[3] != self._id:
            return DecodeError(
                f"entry was written with codec id {data[3]}, this reader only accepts "
                f"{self._id} ({self._name})"
            )
        if data[4] != self._kind:
            if self._signer is not None:
                return DecodeError("unsigned entry: this cache has a secret and accepts only "
                                   "entries signed with it")
            return DecodeError("signed entry: this cache has no secret to verify it "
                               "(pass secret= or set PERSISTMEMO_SECRET)")
        if data[5] & ~KNOWN_FLAGS:
            return DecodeError(f"unsupported entry flags {data[5]:#x} (a newer writer?)")
        return DecodeError("stored entry is truncated")

    def __repr__(self) -> str:
        signed = ", signed" if self._signer is not None else ""
        return f"Codec({self._name}{signed})"


_new_entry = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hit path


def _describe(exc: BaseException) -> str:
    """``repr(exc)`` cut to 500 characters; never raises (a forged payload may put objects
    whose repr fails into the message)."""
    try:
        return repr(exc)[:500]
    except Exception:
        return type(exc).__name__


def _key_bytes(key: str, error: type[Exception]) -> bytes:
    """Return the key as hashed: UTF-8 (surrogates passed through) and a NUL terminator."""
    if "\0" in key:  # keeps key + b"\0" + header unambiguous
        raise error("cache keys must not contain NUL")
    return key.encode("utf-8", "surrogatepass") + b"\0"
