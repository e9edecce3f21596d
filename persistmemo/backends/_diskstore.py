"""The diskcache pieces of the disk store: a bytes-only ``Disk``, mmap off, opening and repair.

Private to :mod:`persistmemo.backends.disk` (see its docstring for the threat model).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import diskcache
from diskcache.core import ENOVAL, MODE_BINARY, MODE_RAW, UNKNOWN

from persistmemo.backends import _diskfs
from persistmemo.backends._diskfs import UnsafeFile
from persistmemo.errors import StoreDisabled

__all__ = ["Refused", "busy", "corrupt", "log", "new_cache", "open_read_only", "quarantine",
           "release_written"]


def log() -> Any:
    import logging  # lazily: only the rare paths log here

    return logging.getLogger("persistmemo")


class Refused(Exception):
    """A stored row uses a representation persistmemo never writes (e.g. pickle)."""


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache ``Disk`` that only ever returns bytes and never unpickles anything."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.written = threading.local()  # the value file this thread's last store() created

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise Refused("non-raw key")
        return bytes(key) if isinstance(key, (bytes, memoryview)) else key

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW and isinstance(value, (bytes, memoryview)):
            return bytes(value)
        if mode == MODE_BINARY and not read:
            try:
                return _diskfs.read_value(self._directory, filename, None)
            except UnsafeFile as exc:
                raise Refused(str(exc)) from None
        raise Refused(f"stored mode {mode}")

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, Any, Any]:
        if read:
            value = value.read()
        if type(value) is not bytes:
            raise Refused("the disk store only stores bytes")
        if len(value) < self.min_file_size:
            return 0, MODE_RAW, None, sqlite3.Binary(value)
        filename, _ = self.filename(key, value)
        release_written(self)  # a previous store of this thread in the same transaction
        self.written.fd = _diskfs.write_value(self._directory, filename, value)
        self.written.name = filename
        return len(value), MODE_BINARY, filename, None

    def remove(self, file_path: str) -> None:
        # Rows name the files diskcache deletes on overwrite, delete and cull: foreign names
        # (absolute, ``../``, symlinks) are refused, so no file outside the cache is touched.
        _diskfs.remove_value(self._directory, file_path)


def release_written(disk: Any) -> None:
    """Close this thread's last written value file: its row is committed or rolled back."""
    fd = getattr(disk.written, "fd", None)
    if fd is not None:
        disk.written.fd = None
        os.close(fd)


class _SafeCache(diskcache.Cache):  # type: ignore[misc]
    """``diskcache.Cache`` with SQLite's memory-mapped I/O forced off on every connection.

    diskcache re-applies the ``sqlite_*`` settings stored in the database to each new
    connection, so the Settings table (writable by anyone who can write the directory) could
    turn mmap back on: every setting of ``mmap_size`` goes through here and becomes 0.
    """

    def reset(self, key: str, value: Any = ENOVAL, update: bool = True) -> Any:
        if key == "sqlite_mmap_size" and value is not ENOVAL:
            value = 0
        return super().reset(key, value, update)


def busy(exc: BaseException) -> bool:
    """Whether ``exc`` means "another process holds the database" (try again later)."""
    return isinstance(exc, diskcache.Timeout) or (
        isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc))


def corrupt(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is damaged (or was truncated under us)."""
    if isinstance(exc, sqlite3.OperationalError):
        return "disk I/O" in str(exc)
    return isinstance(exc, sqlite3.DatabaseError)


def new_cache(directory: Path, busy_timeout: float, size_limit: int) -> diskcache.Cache:
    """Open (or create) the diskcache store: bytes only, mmap off, hits never write."""
    cache = _SafeCache(
        str(directory),
        timeout=busy_timeout,
        disk=_BytesOnlyDisk,
        size_limit=size_limit,
        eviction_policy="least-recently-stored",  # hits never write
        statistics=False,
        sqlite_mmap_size=0,
    )
    owner_only(directory)
    return cache


def owner_only(directory: Path) -> None:
    """Make the SQLite files (which hold small values inline) 0600, like the value files.

    SQLite creates them 0644 under the usual umask, and its WAL and shared-memory files copy the
    database's mode: in a directory that is not 0700 every local user could read every result.
    By path, never by opening them: closing any descriptor of a SQLite file drops every POSIX
    lock this process holds on it (SQLite's own included).
    """
    for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
        path = directory / name
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
        except OSError:
            continue  # absent (no WAL yet), replaced meanwhile, ...


def open_read_only(directory: Path, busy_timeout: float, reason: str) -> sqlite3.Connection:
    """Open the existing index read-only, or raise StoreDisabled naming reason and fix."""
    db = directory / "cache.db"
    fix = ("make it writable (or free space), or pass another location "
           "(Cache('/some/dir') or PERSISTMEMO_URL)")
    if not db.is_file() or db.is_symlink():
        raise StoreDisabled(f"cache directory {str(directory)!r} cannot be used "
                            f"({reason}) and holds no cache to read; {fix}")
    uris = [f"file:{quote(str(db))}?mode=ro"]
    if not os.access(directory, os.W_OK):  # nobody can write it: no locking needed
        uris.append(f"file:{quote(str(db))}?immutable=1")
    for uri in uris:
        con = None
        try:
            con = sqlite3.connect(uri, uri=True, timeout=busy_timeout,
                                  isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA mmap_size = 0")
            con.execute("SELECT key FROM Cache LIMIT 1").fetchall()
        except sqlite3.Error:
            if con is not None:
                con.close()
            continue
        log().warning("persistmemo: disk cache %s cannot be written (%s); its entries are "
                       "served read-only and new results are not stored; %s",
                       directory, reason, fix)
        return con
    raise StoreDisabled(f"cache directory {str(directory)!r} cannot be written "
                        f"({reason}) nor read; {fix}")


def quarantine(directory: Path, exc: BaseException) -> None:
    """Move a corrupt database aside (kept for inspection); the caller starts an empty one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log().error("persistmemo: disk cache %s is corrupt (%s); moved aside, starting empty",
                 directory, exc)
    for suffix in ("", "-wal", "-shm"):
        db = directory / f"cache.db{suffix}"
        if db.exists():
            db.rename(directory / f"cache.db{suffix}.corrupt-{stamp}-{os.getpid()}")
