"""The embedded default store: a local directory managed by :mod:`diskcache` (SQLite + files).

Keys are ``str`` and values ``bytes``, so diskcache never pickles either. Reading is hardened
further by :class:`_BytesOnlyDisk`: the ``mode`` column of a row is attacker-controlled data for
anyone who can write the directory, and diskcache would unpickle a row marked ``MODE_PICKLE``
(CVE-2025-69872); we refuse every mode except raw bytes and binary files.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW

from persistmemo.backends.base import MISSING, BaseBackend, BaseLock, Lock, Missing
from persistmemo.errors import BackendError, BackendUnavailable, ConfigurationError

__all__ = ["DiskBackend", "DiskLock"]

_LOCK_PREFIX = "lock:"
_SELECT_MANY = (
    "SELECT key, mode, filename, value FROM Cache"
    " WHERE raw = 1 AND key IN ({}) AND (expire_time IS NULL OR expire_time > ?)"
)
_FILE_THRESHOLD = 1 << 15  # diskcache's default disk_min_file_size: larger values are files
_SELECT = (
    "SELECT mode, filename, value FROM Cache"
    " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
)


class _Refused(Exception):
    """A stored row uses a representation persistmemo never writes (e.g. pickle)."""


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache ``Disk`` that only ever returns bytes and never unpickles anything."""

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise _Refused("non-raw key")
        return bytes(key) if isinstance(key, (bytes, memoryview)) else key

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW and isinstance(value, (bytes, memoryview)):
            return bytes(value)
        if mode == MODE_BINARY and filename and not read:
            with open(os.path.join(self._directory, filename), "rb") as reader:
                return reader.read()
        raise _Refused(f"stored mode {mode}")


def _prepare_directory(path: Path) -> None:
    """Create ``path`` owner-only, or refuse a directory another user could tamper with."""
    if path.is_symlink():
        raise ConfigurationError(f"refusing cache directory {str(path)!r}: it is a symlink")
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"cache location {str(path)!r} exists and is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigurationError(
            f"refusing cache directory {str(path)!r}: owned by uid {st.st_uid}, not by you"
        )
    if st.st_mode & stat.S_IWOTH:
        raise ConfigurationError(
            f"refusing cache directory {str(path)!r}: it is world-writable (chmod 700 it)"
        )


class DiskBackend(BaseBackend):
    """Store entries in a local directory (SQLite index + value files), shared by processes.

    Args:
        directory: the cache directory (created owner-only, ``0700``).
        size_limit: bytes kept before least-recently-stored entries are culled (default 1 GiB).
        busy_timeout: seconds a call may wait on SQLite's lock before failing (fail-open above).
    """

    name = "disk"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        size_limit: int = 2**30,
        busy_timeout: float = 5.0,
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.size_limit = int(size_limit)
        self.busy_timeout = float(busy_timeout)
        self._cache: diskcache.Cache | None = None
        self._open_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DiskBackend {str(self.directory)!r}>"

    @property
    def cache(self) -> diskcache.Cache:
        """The underlying ``diskcache.Cache``, opened on first use."""
        c = self._cache
        if c is None:
            with self._open_lock:
                c = self._cache
                if c is None:
                    c = self._cache = self._open()
        return c

    def _open(self) -> diskcache.Cache:
        _prepare_directory(self.directory)
        try:
            return diskcache.Cache(
                str(self.directory),
                timeout=self.busy_timeout,
                disk=_BytesOnlyDisk,
                size_limit=self.size_limit,
                eviction_policy="least-recently-stored",  # hits never write
                statistics=False,
            )
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise BackendError(f"cannot open disk cache {self.directory}: {exc}") from exc
            return self._quarantine_and_reopen(exc)
        except (OSError, diskcache.Timeout) as exc:
            raise BackendError(f"cannot open disk cache {self.directory}: {exc}") from exc

    def _quarantine_and_reopen(self, exc: Exception) -> diskcache.Cache:
        """Move a corrupt database aside (kept for inspection) and start an empty one."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        import logging  # lazily: only this rare path logs here

        logging.getLogger("persistmemo").error(
            "persistmemo: disk cache %s is corrupt (%s); moved aside, starting empty",
            self.directory, exc)
        for suffix in ("", "-wal", "-shm"):
            db = self.directory / f"cache.db{suffix}"
            if db.exists():
                db.rename(self.directory / f"cache.db{suffix}.corrupt-{stamp}")
        try:
            return diskcache.Cache(str(self.directory), timeout=self.busy_timeout,
                                   disk=_BytesOnlyDisk, size_limit=self.size_limit,
                                   eviction_policy="least-recently-stored", statistics=False)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc2:
            raise BackendError(f"cannot reopen disk cache {self.directory}: {exc2}") from exc2

    def _fail(self, exc: BaseException, what: str) -> BackendError:
        if isinstance(exc, diskcache.Timeout) or (
            isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        ):
            # Busy beyond busy_timeout: the breaker should stop every call paying it again.
            return BackendUnavailable(f"disk cache {what} timed out: {exc}")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.OperationalError
        ):
            # Corruption found while running: quarantine so the next call starts clean.
            with self._open_lock:
                old, self._cache = self._cache, None
                if old is not None:
                    old.close()
                    with contextlib.suppress(BackendError):
                        self._cache = self._quarantine_and_reopen(exc)
        return BackendError(f"disk cache {what} failed: {type(exc).__name__}: {exc}")

    # -- primitives ------------------------------------------------------------------------
    def get(self, key: str) -> bytes | Missing:
        # The hit path. One indexed SELECT on diskcache's own per-thread, pid-checked
        # connection: the same query diskcache.Cache.get runs for this eviction policy (hits
        # never write), minus ~2 us of its generic per-call work (key pickling checks, option
        # handling). The schema is diskcache 5's; any surprise falls back to Cache.get.
        cache = self._cache
        if cache is None:  # (not `or`: a diskcache.Cache's truth value runs a COUNT query)
            cache = self.cache
        try:
            row = cache._con.execute(_SELECT, (key, time.time())).fetchone()
            if row is None:
                return MISSING
            mode, filename, value = row
            if mode == MODE_RAW and type(value) is bytes:
                return value
            return self._disk_fetch(mode, filename, value)
        except _Refused:
            return MISSING
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "get") from exc

    def get_many(self, keys: Sequence[str]) -> list[bytes | Missing]:
        """Look up many keys with one indexed SELECT per 500 keys (for ``f.map``)."""
        cache = self._cache
        if cache is None:
            cache = self.cache
        found: dict[str, bytes] = {}
        try:
            con, now = cache._con, time.time()
            for i in range(0, len(keys), 500):
                part = list(keys[i:i + 500])
                marks = ",".join("?" * len(part))
                rows = con.execute(_SELECT_MANY.format(marks), (*part, now)).fetchall()
                for key, mode, filename, value in rows:
                    if mode == MODE_RAW and type(value) is bytes:
                        found[key] = value
                    else:
                        with contextlib.suppress(_Refused):
                            found[key] = self._disk_fetch(mode, filename, value)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "get_many") from exc
        return [found.get(k, MISSING) for k in keys]

    def _disk_fetch(self, mode: int, filename: str | None, value: Any) -> bytes:
        try:
            return self.cache.disk.fetch(mode, filename, value, False)  # type: ignore[no-any-return]
        except FileNotFoundError:
            # The row's file was culled or swept between our SELECT and the read.
            raise _Refused("value file vanished") from None

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        try:
            if len(value) >= _FILE_THRESHOLD:
                # diskcache writes a bytes value by iterating it line by line (~29,000 write()
                # calls per 10 MB); as a file object it is copied in large chunks instead.
                self.cache.set(key, io.BytesIO(value), expire=ttl, read=True)
            else:
                self.cache.set(key, bytes(value), expire=ttl)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "set") from exc

    def delete(self, key: str) -> bool:
        try:
            return bool(self.cache.delete(key, retry=True))
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "delete") from exc

    def _keys_in_range(self, prefix: str) -> list[str]:
        # The (key, raw) unique index makes a range scan cheap: no full-table iteration.
        sql = self.cache._sql
        if prefix:
            rows = sql("SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND key < ?",
                       (prefix, prefix + "\U0010ffff")).fetchall()
        else:
            rows = sql("SELECT key FROM Cache").fetchall()
        return [r[0] for r in rows if isinstance(r[0], str)]

    def clear(self, prefix: str = "") -> int:
        try:
            if not prefix:
                return int(self.cache.clear(retry=True))
            count = 0
            for key in self._keys_in_range(prefix):
                count += bool(self.cache.delete(key, retry=True))
            return count
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "clear") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        try:
            found = self._keys_in_range(prefix)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "keys") from exc
        now = time.time()
        for key in found:
            if key.startswith(_LOCK_PREFIX):
                continue
            try:
                _, expire = self.cache.get(key, MISSING, expire_time=True)
            except (_Refused, sqlite3.Error, OSError, diskcache.Timeout):
                continue
            if expire is None or expire > now:
                yield key

    def acquire_and_get(self, lock: Lock, key: str) -> tuple[bool, bytes | Missing]:
        """Try the lease and re-read ``key`` in one SQLite transaction (one commit)."""
        if not isinstance(lock, DiskLock):
            return super().acquire_and_get(lock, key)
        cache = self.cache
        try:
            # Waiters call this in a polling loop: while a live lease exists, only read (no
            # write transaction per poll); otherwise take the lease and re-read atomically.
            row = cache._con.execute(_SELECT, (lock.key, time.time())).fetchone()
            if row is not None:
                return False, self.get(key)
            with cache.transact(retry=True):
                acquired = bool(cache.add(lock.key, lock._value, expire=lock.ttl))
                return acquired, self.get(key)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "lock") from exc

    def set_and_release(
        self, key: str, value: bytes, *, ttl: float | None, lock: Lock | None
    ) -> None:
        """Store ``value`` and release ``lock`` in one SQLite transaction (one commit)."""
        if lock is not None and not isinstance(lock, DiskLock):
            return super().set_and_release(key, value, ttl=ttl, lock=lock)
        cache = self.cache
        try:
            with cache.transact(retry=True):
                self.set(key, value, ttl=ttl)
                if lock is not None:
                    lock._release_in_txn(cache)
        except (sqlite3.Error, OSError, diskcache.Timeout, BackendError) as exc:
            if lock is not None:  # the store failed (e.g. disk full): still free the waiters
                with contextlib.suppress(BackendError):
                    lock.release()
            if isinstance(exc, BackendError):
                raise
            raise self._fail(exc, "set") from exc
        return None

    def lock(self, key: str, *, ttl: float) -> Lock:
        from persistmemo.backends._flock import kernel_lock  # the lease row is the fallback

        self.cache  # noqa: B018 (open first: the directory must exist to pick the lock kind)
        def lease() -> DiskLock:
            return DiskLock(self, _LOCK_PREFIX + key, os.urandom(16).hex(), ttl)

        return kernel_lock(self.directory, key, ttl, lease) or lease()

    def maintain(self) -> list[str]:
        """Check the database and remove orphaned value files; return the warnings found."""
        try:
            found = self.cache.check(fix=True, retry=True)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "check") from exc
        return [str(w.message) for w in found]

    def volume(self) -> int:
        """Bytes used on disk by the database and value files."""
        return int(self.cache.volume())

    def close(self) -> None:
        with self._open_lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None


class DiskLock(BaseLock):
    """A lease row (``lock:<key>``) holding the owner token, expiring after ``ttl``.

    ``Cache.add`` is atomic and treats an expired row as absent, so a holder killed with
    SIGKILL blocks others for at most ``ttl``; release and renew compare the token inside one
    transaction, so a stale holder never deletes or extends its successor's lease.
    """

    def __init__(self, store: DiskBackend, key: str, token: str, ttl: float) -> None:
        super().__init__(key, token, ttl)
        self._store = store
        self._value = token.encode()

    def acquire(self) -> bool:
        try:
            return bool(self._store.cache.add(self.key, self._value, expire=self.ttl, retry=True))
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._store._fail(exc, "lock") from exc

    def _owned(self, cache: diskcache.Cache) -> bool:
        """Whether this token holds the lease (call inside a transaction)."""
        try:
            return bool(cache.get(self.key, MISSING) == self._value)
        except _Refused:
            return False

    def _release_in_txn(self, cache: diskcache.Cache) -> bool:
        if not self._owned(cache):
            return False
        cache.delete(self.key)
        return True

    def _if_owner(self, action: str) -> bool:
        cache = self._store.cache
        try:
            with cache.transact(retry=True):
                if action == "release":
                    return self._release_in_txn(cache)
                if not self._owned(cache):
                    return False
                cache.set(self.key, self._value, expire=self.ttl)
                return True
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._store._fail(exc, action) from exc

    def release(self) -> bool:
        return self._if_owner("release")

    def renew(self) -> bool:
        return self._if_owner("renew")
