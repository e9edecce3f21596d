"""Storage backends: small, bytes-only stores behind one :class:`Backend` protocol."""

from __future__ import annotations

from persistmemo.backends.base import MISSING, Backend, BaseBackend, Lock, Missing, adapt

__all__ = ["MISSING", "Backend", "BaseBackend", "DiskBackend", "Lock", "MemoryBackend", "Missing",
           "RedisBackend", "TieredBackend", "adapt"]


def __getattr__(name: str) -> object:
    # DiskBackend and RedisBackend import their drivers lazily (redis alone costs ~100 ms).
    if name == "MemoryBackend":
        from persistmemo.backends.memory import MemoryBackend

        return MemoryBackend
    if name == "DiskBackend":
        from persistmemo.backends.disk import DiskBackend

        return DiskBackend
    if name == "TieredBackend":
        from persistmemo.backends.tiered import TieredBackend

        return TieredBackend
    if name == "RedisBackend":
        from persistmemo.backends.redis import RedisBackend

        return RedisBackend
    raise AttributeError(name)
