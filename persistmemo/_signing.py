"""The envelope's check: a fast checksum for unsigned stores, a keyed MAC with a secret.

Private to :mod:`persistmemo.codec`.

- Unsigned (no secret): XXH3-128 over key + header + meta + payload. It detects corruption,
  truncation and entries moved between keys at ~30 GB/s, but it is **not** a signature: anyone
  who can write the store can compute it (see SECURITY.md).
- Signed (``secret=`` or ``PERSISTMEMO_SECRET``): keyed BLAKE3 (32-byte tag) with a key derived
  from the secret. Verification accepts the secret and every ``verify_keys`` entry (rotation);
  tags are compared in constant time.
"""

from __future__ import annotations

from collections.abc import Sequence

import blake3 as _blake3
import xxhash as _xxhash

from .errors import ConfigurationError

CHECKSUM_SIZE = 16
MAC_SIZE = 32
_SMALL = 64 * 1024  # below this, one concatenated buffer is faster than piecewise updates
_THREADED = 1 << 20  # BLAKE3 with max_threads=AUTO from here
_KDF_CONTEXT = "persistmemo 2026 entry MAC v2"
_xxh3_128 = _xxhash.xxh3_128
_xxh3_128_digest = _xxhash.xxh3_128_digest


def _secret_bytes(secret: object, what: str) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise ConfigurationError(f"{what} must be a non-empty str or bytes")
    return secret


def checksum(head: bytes, body: Sequence[bytes | memoryview], size: int) -> bytes:
    """XXH3-128 of ``head`` then ``body`` (16 bytes)."""
    if size < _SMALL:
        return _xxh3_128_digest(b"".join((head, *body)))
    h = _xxh3_128(head)
    for part in body:
        h.update(part)
    return h.digest()


def checksum_ok(head: bytes, body: memoryview, check: bytes) -> bool:
    """Whether ``check`` is the XXH3-128 of ``head + body``."""
    if len(body) < _SMALL:
        return _xxh3_128_digest(head + body) == check
    h = _xxh3_128(head)
    h.update(body)
    return h.digest() == check


class Signer:
    """Keyed BLAKE3 tags with the first secret; verification accepts any of them (rotation)."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ConfigurationError("a signer needs at least one secret")
        self._keys = tuple(_blake3.blake3(s, derive_key_context=_KDF_CONTEXT).digest()
                           for s in secrets)

    @staticmethod
    def _tag(key: bytes, head: bytes, body: Sequence[bytes | memoryview], size: int) -> bytes:
        threads = _blake3.blake3.AUTO if size >= _THREADED else 1
        mac = _blake3.blake3(head, key=key, max_threads=threads)
        for part in body:
            mac.update(part)
        digest: bytes = mac.digest(MAC_SIZE)
        return digest

    def sign(self, head: bytes, body: Sequence[bytes | memoryview], size: int) -> bytes:
        """Return the tag of ``head + body`` under the current secret."""
        return self._tag(self._keys[0], head, body, size)

    def verify(self, head: bytes, body: memoryview, check: bytes) -> bool:
        """Whether ``check`` is the tag of ``head + body`` under any accepted secret."""
        import hmac  # lazily: only signed caches pay for hashlib's import

        size = len(body)
        return any(hmac.compare_digest(self._tag(k, head, (body,), size), check)
                   for k in self._keys)

    def __repr__(self) -> str:  # never show the keys
        return f"Signer(<{len(self._keys)} hidden keys>)"
