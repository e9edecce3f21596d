"""Optional zstd compression of stored payloads (``compress="zstd"``), read back by any reader.

A compressed payload is one msgpack ext (``EXT_ZSTD``) whose data is a zstd frame holding the
original msgpack payload (with its out-of-band buffers), so readers need no option: whatever
they find, they decode. Only payloads of at least ``threshold`` bytes are compressed, and only
when that saves at least 1/8 of the size: float32 embeddings save ~7% for a load several times
slower, so they are stored plain (nothing is lost but the attempt). ``zstandard`` is imported
lazily.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from persistmemo.errors import ConfigurationError

__all__ = ["Compression", "decompress", "parse_compress"]

DEFAULT_LEVEL = 3
DEFAULT_THRESHOLD = 64 * 1024
_MAX_EXT = 0xFFFFFFFF  # ext32 length limit: bigger payloads are stored plain


class Compression:
    """How payloads are compressed: algorithm (``"zstd"``), level and size threshold."""

    __slots__ = ("level", "name", "threshold")

    def __init__(self, name: str, level: int, threshold: int) -> None:
        self.name, self.level, self.threshold = name, level, threshold

    def __repr__(self) -> str:
        return f"Compression({self.name!r}, level={self.level}, threshold={self.threshold})"

    def apply(self, parts: Sequence[bytes | memoryview], code: int) -> Sequence[bytes | memoryview]:
        """Return ``parts`` compressed into one msgpack ext ``code`` if that pays off."""
        size = sum(len(p) for p in parts)
        if size < self.threshold or size > _MAX_EXT:
            return parts
        import zstandard

        cctx = zstandard.ZstdCompressor(level=self.level, threads=-1, write_content_size=True)
        obj = cctx.compressobj(size=size)
        chunks = [obj.compress(p) for p in parts]
        chunks.append(obj.flush())
        data = b"".join(chunks)
        if len(data) > size - size // 8 or len(data) > _MAX_EXT:
            return parts
        # A tagged payload (0xC1, u64 body length, body) whose body is one msgpack ext32: the
        # reader decodes tagged payloads with its guarded ext hooks (see docs/codec.md).
        ext_head = b"\xc9" + struct.pack(">Ib", len(data), code)
        return [struct.pack(">BQ", 0xC1, len(ext_head) + len(data)), ext_head, data]


def parse_compress(spec: Any, threshold: Any = None) -> Compression | None:
    """Resolve ``compress=`` (``None``, ``"zstd"`` or ``"zstd:<level>"``) and the threshold.

    Raises:
        ConfigurationError: an unknown algorithm, a bad level or threshold, or zstandard
            missing (``pip install 'persistmemo[zstd]'``).
    """
    if spec is None or spec is False:
        return None
    if not isinstance(spec, str):
        raise ConfigurationError(f"compress must be None, 'zstd' or 'zstd:<level>', got {spec!r}")
    name, _, level_text = spec.partition(":")
    if name != "zstd":
        raise ConfigurationError(f"unknown compress={spec!r}: only 'zstd' is supported")
    try:
        level = int(level_text) if level_text else DEFAULT_LEVEL
    except ValueError:
        raise ConfigurationError(f"compress={spec!r}: the level must be an integer") from None
    if not -7 <= level <= 22:
        raise ConfigurationError(f"compress={spec!r}: zstd levels are -7..22")
    limit = DEFAULT_THRESHOLD if threshold is None else threshold
    if type(limit) is not int or limit < 0:
        raise ConfigurationError(f"compress_threshold must be bytes >= 0, got {threshold!r}")
    try:
        import zstandard  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "compress='zstd' needs the zstandard package: pip install 'persistmemo[zstd]'"
        ) from None
    return Compression(name, level, limit)


def decompress(data: bytes, limit: int = _MAX_EXT) -> bytes:
    """Return the payload inside a zstd frame written by :meth:`Compression.apply`.

    ``limit``: the largest content size accepted (the reader's ``max_value_size``).
    """
    import zstandard

    size = zstandard.frame_content_size(data)
    if size < 0 or size > _MAX_EXT:  # apply() writes the size and never more than 4 GiB
        raise ValueError("zstd frame without a plausible content size")
    if size > limit:
        raise ValueError(f"zstd frame expands to {size} bytes, over max_value_size={limit}")
    out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    return out
