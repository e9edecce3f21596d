"""A kernel advisory lock per key for the disk store, with the SQLite lease as its fallback.

Why: the lease of :class:`~persistmemo.backends.disk.DiskLock` is a SQLite row, so a locked miss
costs two extra write transactions (take, release). A kernel lock costs a few system calls, and
the kernel releases it the instant its holder dies (no waiting out a TTL).

How: one file next to the database, ``cache.db.locks``, of ``SLOTS`` 32-byte slots (sparse, so
~nothing on disk). A key hashes to a slot; the lock is a Linux *open file description* record
lock (``F_OFD_SETLK``) on the slot's bytes: exclusive between file descriptions (so between
threads too, unlike POSIX ``lockf`` locks), dropped when the description closes or its process
dies. A slot records which key holds it: a key finding its slot held by another key (a hash
collision, rare with 65,536 slots) takes the SQLite lease instead, so keys never wait for each
other (a recursion holding one slot can need another key of the same slot). (One file, not one
per key: every miss is a new key, and creating plus unlinking a file costs as much as the
SQLite writes it replaces.)

The lease semantics stay: the slot holds ``token, deadline, mode``. A holder renews the deadline
(the engine's renewer does); a waiter that finds the deadline passed while the holder still
holds the kernel lock (alive but hung) takes the lease over without it (mode ``S``), exactly as
an expired lease row would let it. A new kernel-lock holder finding mode ``F`` left by an earlier
holder knows that holder is gone.

Where OFD locks are missing or refused (not Linux, some network filesystems)
:func:`kernel_lock` returns None and the disk store keeps its SQLite lease.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persistmemo.backends.base import BaseLock, Lock
from persistmemo.errors import BackendError

__all__ = ["FlockLock", "kernel_lock"]

# Named so that diskcache's check(fix=True) skips it (it ignores paths containing its database
# name) instead of deleting it as an "unknown file".
LOCK_FILE = "cache.db.locks"
SLOTS = 1 << 16
_SLOT = 48
# token, deadline (unix time), mode (F: kernel lock, S: taken-over lease), key digest
_RECORD = struct.Struct("<16sdc8s7x")
_FLOCK = struct.Struct("hhqqi4x")  # Linux x86-64/aarch64 struct flock
_paths: dict[Path, str | None] = {}  # store directory -> its lock file (None: unsupported)


def _lock_op(fd: int, kind: int, start: int) -> None:
    import fcntl

    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, start, _SLOT, 0))


# Never through a planted symlink: records are written into this file (issue 10).
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _probe(path: Path) -> bool:
    try:
        import fcntl

        wrlck, unlck = fcntl.F_WRLCK, fcntl.F_UNLCK
        fcntl.F_OFD_SETLK  # noqa: B018 (Linux only)
    except (ImportError, AttributeError):
        return False
    if struct.calcsize("l") != 8:  # the struct flock layout above is the 64-bit one
        return False
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
        try:
            _lock_op(fd, wrlck, 0)
            _lock_op(fd, unlck, 0)
        finally:
            os.close(fd)
    except OSError:  # ENOLCK, EOPNOTSUPP, EINVAL, a read-only directory ...: use the lease
        return False
    return True


def kernel_lock(store_dir: Path, key: str, ttl: float, fallback: Callable[[], Lock]
                ) -> FlockLock | None:
    """A :class:`FlockLock` on ``key`` in ``store_dir`` (which must exist), or None.

    ``fallback`` makes the lease used when the key's slot is held by another key.
    """
    path = _paths.get(store_dir, "")
    if path == "":  # first lock in this directory: can it take kernel locks?
        lock_file = store_dir / LOCK_FILE
        path = _paths[store_dir] = str(lock_file) if _probe(lock_file) else None
    return None if path is None else FlockLock(path, key, ttl, fallback)


class FlockLock(BaseLock):
    """A lease on one key: an OFD record lock on the key's slot of the lock file."""

    def __init__(self, path: str, key: str, ttl: float, fallback: Callable[[], Lock]) -> None:
        from blake3 import blake3

        token = os.urandom(16)
        super().__init__(key, token.hex(), ttl)
        self._token = token
        self.path = path
        digest = blake3(key.encode("utf-8", "surrogatepass")).digest(16)
        self.offset = int.from_bytes(digest[:8], "little") % SLOTS * _SLOT
        self._digest = digest[8:]
        self._fd: int | None = None  # open while we hold the kernel lock
        self._make_fallback = fallback
        self._fallback: Lock | None = None  # the lease, when the slot is another key's

    def _read(self, fd: int) -> tuple[bytes, float, bytes, bytes]:
        data = os.pread(fd, _SLOT, self.offset)
        if len(data) < _RECORD.size:
            return b"", 0.0, b"", b""
        token, deadline, mode, digest = _RECORD.unpack_from(data)
        return token, deadline, mode, digest

    def _write(self, fd: int, mode: bytes) -> None:
        record = _RECORD.pack(self._token, time.time() + self.ttl, mode, self._digest)
        os.pwrite(fd, record, self.offset)

    def _guard(self, action: Any) -> bool:
        try:
            return bool(action())
        except OSError as exc:
            raise BackendError(f"disk lock {self.path} failed: {exc}") from exc

    def acquire(self) -> bool:
        if self._fallback is not None:
            return self._fallback.acquire()
        return self._guard(self._acquire)

    def _acquire(self) -> bool:
        import fcntl

        if self._fd is not None:
            return False
        fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        try:
            _lock_op(fd, fcntl.F_WRLCK, self.offset)
        except OSError:  # EAGAIN/EACCES: held by another description
            try:
                token, deadline, _, digest = self._read(fd)
                if digest != self._digest and token.strip(b"\0"):  # another key's slot
                    self._fallback = self._make_fallback()
                    return self._fallback.acquire()
                # Lapsed (holder alive but not renewing), or released while a forked child
                # still holds a copy of the holder's descriptor (see _forget_in_child).
                if not token.strip(b"\0") or deadline < time.time():
                    self._write(fd, b"S")
                    return True
                return False
            finally:
                os.close(fd)
        token, deadline, mode, digest = self._read(fd)
        if mode == b"S" and deadline > time.time() and token != self._token:
            os.close(fd)  # a live taken-over lease, held without the kernel lock
            if digest != self._digest:  # ... of another key
                self._fallback = self._make_fallback()
                return self._fallback.acquire()
            return False
        self._write(fd, b"F")
        self._fd = fd
        _held.add(self)
        return True

    def _mine(self, fd: int) -> bool:
        token, deadline, _, _ = self._read(fd)
        return token == self._token and deadline > 0

    def _with_fd(self, action: Any) -> bool:
        fd = self._fd
        if fd is not None:
            return bool(action(fd))
        fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        try:
            return bool(action(fd))
        finally:
            os.close(fd)

    def release(self) -> bool:
        if self._fallback is not None:
            return self._fallback.release()

        def clear(fd: int) -> bool:
            mine = self._mine(fd)
            if mine:
                os.pwrite(fd, bytes(_SLOT), self.offset)
            if fd == self._fd:
                self._fd = None
                _held.discard(self)
                os.close(fd)  # drops the kernel lock
            return mine

        return self._guard(lambda: self._with_fd(clear))

    def renew(self) -> bool:
        if self._fallback is not None:
            return self._fallback.renew()

        def extend(fd: int) -> bool:
            if not self._mine(fd):
                return False
            _, _, mode, _ = self._read(fd)
            self._write(fd, mode)
            return True

        return self._guard(lambda: self._with_fd(extend))

    def __del__(self) -> None:  # a lock object dropped while held: let the kernel free it
        fd: Any = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


# A forked child inherits the descriptors of the parent's held locks, and an OFD lock lives as
# long as any copy of its descriptor: close the child's copies so the parent's release frees it.
_held: weakref.WeakSet[FlockLock] = weakref.WeakSet()


def _forget_in_child() -> None:
    for lock in list(_held):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
