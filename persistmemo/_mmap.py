"""``mmap=True``: big numpy results loaded as read-only views of the directory store's files.

diskcache keeps every value of 32 KiB or more in a file of its own, written once and never
modified in place. With ``mmap=True`` a hit on such an entry maps the file instead of reading
it: numpy arrays in the result are read-only views of the mapping, shared through the page cache
by every process that opens the same entry; torch tensors are zero-copy too (the mapping is
copy-on-write, so an in-place op changes a private copy, never the file). The entry's integrity
is still checked (the same
checksum or MAC as a normal read, over the mapping); a file that verified once is remembered by its
device, inode, size, modification and change times (a write that restores the modification time
with ``os.utime`` still moves the change time, which no user can set back), so later hits in
the process cost milliseconds
whatever the size. Anything else (small entries, other stores, pickle, compressed payloads)
takes the normal path.

The pieces are two small wrappers the memoized function's engine is built with: a backend whose
``get`` returns a mapping for file entries (everything else is forwarded to the DiskBackend),
and :class:`MappedCodec`, which decodes such a mapping without copying.
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
import threading
import time
from typing import Any

from persistmemo.errors import DecodeError

__all__ = ["MappedCodec", "mapped"]

_SELECT = ("SELECT mode, filename FROM Cache"
           " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)")
_MODE_BINARY = 2  # diskcache.core.MODE_BINARY: the value is a file of its own
_verified: dict[tuple[int, int, int, int, int, str], bool] = {}
_verified_lock = threading.Lock()
_warned: set[str] = set()


class _MappedBackend:
    """Forwards to a DiskBackend; ``get`` maps file entries instead of reading them."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def get(self, key: str) -> Any:
        backend = self._backend
        try:
            con = backend.cache._con
            row = con.execute(_SELECT, (key, time.time())).fetchone()
        except Exception:  # any surprise in diskcache's schema: the normal read
            return backend.get(key)
        if row is None or row[0] != _MODE_BINARY or not row[1]:
            return backend.get(key)
        path = os.path.join(str(backend.directory), row[1])
        try:  # like the store's own reads: never through a symlink, only a regular file
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # culled between the SELECT and the open, or a symlink
            return backend.get(key)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                return backend.get(key)
            # Copy-on-write: pages are shared with the page cache until written, and a write
            # (a tensor's in-place op) changes a private copy, never the file.
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        except OSError:  # no address space for it: the normal read
            return backend.get(key)
        finally:
            os.close(fd)
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, key)
        return _Mapping(mm, identity)

    get_owned = get  # the engine's hit path asks for a buffer of its own: a mapping is one


class _Mapping:
    """A mapped entry: the mmap and the file identity its verification is remembered by."""

    __slots__ = ("identity", "mm")

    def __init__(self, mm: mmap.mmap, identity: tuple[int, int, int, int, int, str]) -> None:
        self.mm = mm
        self.identity = identity

    def __bytes__(self) -> bytes:  # a caller that wants bytes (peek, CLI) gets a copy
        return bytes(self.mm)

    def __len__(self) -> int:
        return len(self.mm)


class MappedCodec:
    """Decodes mapped entries without copying arrays; bytes go to the wrapped codec."""

    def __init__(self, codec: Any) -> None:
        self._codec = codec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._codec, name)

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return self._codec.encode(*args, **kwargs)  # type: ignore[no-any-return]

    def decode(self, data: Any, *, key: str) -> Any:
        if type(data) is not _Mapping:
            return self._codec.decode(data, key=key)
        codec = self._codec
        if getattr(codec._loads, "__name__", "") != "_unpack":
            return codec.decode(bytes(data), key=key)  # pickle/custom serializers: normal read
        return _decode_mapped(codec, data, key)


def _decode_mapped(codec: Any, data: _Mapping, key: str) -> Any:
    """Codec.decode over a mapping: the same checks, then arrays as views (no copy)."""
    from persistmemo._msgpack_ext import _unpack
    from persistmemo._signing import checksum_ok
    from persistmemo.codec import _HEADER_TAIL, Entry

    view = memoryview(data.mm)
    start, n = codec._start, len(view)
    if n > codec._max or n < start or bytes(view[:6]) != codec._prefix:
        return codec.decode(bytes(view), key=key)  # let the codec say what is wrong
    if "\0" in key:
        raise DecodeError("cache keys must not contain NUL")
    created, duration, meta_len = _HEADER_TAIL.unpack_from(view, 8)
    payload_start = start + meta_len
    if payload_start > n:
        raise DecodeError("stored entry is truncated (meta length exceeds the data)")
    if not _already_verified(data.identity):
        head = key.encode("utf-8", "surrogatepass") + b"\0" + bytes(view[:32])
        body, check = view[start:], bytes(view[32:start])
        signer = codec._signer
        ok = signer.verify(head, body, check) if signer is not None else checksum_ok(
            head, body, check)
        if not ok:
            raise DecodeError("integrity check failed: corrupt, truncated, forged, or stored "
                              "under another key")
        with _verified_lock:
            _verified[data.identity] = True
    try:
        value = _unpack(view[payload_start:], copy=False)
    except Exception as exc:
        raise DecodeError(f"msgpack payload does not decode: {exc!r}"[:500]) from exc
    return Entry(value, created, duration, bytes(view[start:payload_start]))


def _already_verified(identity: tuple[int, int, int, int, int, str]) -> bool:
    with _verified_lock:
        if len(_verified) > 100_000:  # bounded: forget everything rather than grow forever
            _verified.clear()
        return identity in _verified


def mapped(backend: Any, codec: Any, name: str) -> tuple[Any, Any]:
    """Return the (backend, codec) pair a memoized function uses with ``mmap=True``."""
    if type(backend).__name__ != "DiskBackend":
        if name not in _warned:
            _warned.add(name)
            logging.getLogger("persistmemo").info(
                "persistmemo: mmap=True for %s has no effect: the store is not a directory", name)
        return backend, codec
    return _MappedBackend(backend), MappedCodec(codec)
