"""Pickle secrets and the HMAC-SHA256 check of signed entries; private to :mod:`persistmemo.codec`.

``hashlib`` and ``hmac`` are imported on first use only: ``import persistmemo.codec`` must not pay
for them, only users of the pickle serializer do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError


def _secret_bytes(secret: object, what: str) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise ConfigurationError(f"{what} must be a non-empty str or bytes")
    return secret


class _HmacCheck:
    """HMAC-SHA256 with the first key; verification accepts any key (rotation)."""

    __slots__ = ("_templates",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        import hashlib
        import hmac

        # Keyed templates, copied per call: skips re-deriving the padded keys every time.
        self._templates = [hmac.new(k, digestmod=hashlib.sha256) for k in keys]

    def _mac(self, template: Any, head: bytes, body: Sequence[bytes | memoryview]) -> bytes:
        mac = template.copy()
        mac.update(head)
        for part in body:
            mac.update(part)
        digest: bytes = mac.digest()
        return digest

    def sign(self, head: bytes, body: Sequence[bytes | memoryview], size: int) -> bytes:
        return self._mac(self._templates[0], head, body)

    def verify(self, head: bytes, body: memoryview, check: bytes) -> bool:
        import hmac

        return any(hmac.compare_digest(self._mac(t, head, (body,)), check) for t in self._templates)
