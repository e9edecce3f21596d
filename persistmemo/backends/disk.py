"""The embedded default store: a local directory managed by :mod:`diskcache` (SQLite + files).

Keys are ``str`` and values ``bytes``, so diskcache never pickles either. Everything diskcache
reads back is treated as data an attacker may have written:

- ``_diskstore._BytesOnlyDisk`` refuses every row ``mode`` except raw bytes and binary files
  (diskcache would unpickle a row marked ``MODE_PICKLE``, CVE-2025-69872), and opens, writes
  and deletes only files named as diskcache names them, inside the directory, never through a
  symlink (:mod:`._diskfs`);
- SQLite's memory-mapped I/O is off on every connection (``_diskstore._SafeCache``): with it on, a
  database truncated under a running process kills the process with SIGBUS; with it off, that
  is an I/O error, turned into a miss or a quarantine-and-rebuild.

The directory fails open: an unsafe one (symlink, another owner, world-writable) or one that
cannot be created disables the store with :class:`~persistmemo.errors.StoreDisabled` (the cache
logs one warning and keeps returning results); an existing store that cannot be written (a
read-only mount, a full disk) is opened read-only and still serves its entries. Value files left
by killed writers or failed writes are swept at open and after a failed write, in bounded time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW

from persistmemo.backends import _diskfs, _diskstore
from persistmemo.backends._diskfs import UnsafeFile
from persistmemo.backends.base import MISSING, BaseBackend, BaseLock, Lock, Missing
from persistmemo.errors import BackendError, BackendUnavailable, StoreDisabled

__all__ = ["DiskBackend", "DiskLock"]

_LOCK_PREFIX = "lock:"
_WHERE = " raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
# An inline value over max_value_size is never loaded (SQLite reads a blob's length from the
# record header): a planted giant row costs no memory; it reads as NULL and is refused.
_VALUE = "CASE WHEN length(value) > ? THEN NULL ELSE value END"
_SELECT_MANY = f"SELECT key, mode, filename, {_VALUE}, size FROM Cache WHERE key IN ({{}}) AND" \
    + _WHERE
_SELECT = f"SELECT mode, filename, {_VALUE}, size FROM Cache WHERE key = ? AND" + _WHERE
_ORPHAN_GRACE = 0.05  # seconds: covers a writer between creating its file and locking it
_SWEEP_BUDGET = 0.25  # seconds per automatic sweep (at open, after a failed write)
_SWEEP_EVERY = 10.0  # seconds between sweeps after failed writes
_REFUSED = b""  # what a refused row reads as: not an envelope, so a counted, logged miss


class DiskBackend(BaseBackend):
    """Store entries in a local directory (SQLite index + value files), shared by processes.

    Args:
        directory: the cache directory (created owner-only, ``0700``).
        size_limit: bytes kept before least-recently-stored entries are culled (default 1 GiB).
        busy_timeout: seconds a call may wait on SQLite's lock before failing (fail-open above).

    A directory that must not be used raises :class:`~persistmemo.errors.StoreDisabled` from
    every operation; one that cannot be written is served read-only (:attr:`read_only`).
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
        self._ro: sqlite3.Connection | None = None
        self._ro_pid = 0
        self._ro_reason = ""
        self._disabled: StoreDisabled | None = None
        self._open_lock = threading.Lock()
        self._last_sweep = 0.0
        self._warned: set[str] = set()
        self._owned = threading.local()  # set while get_owned() runs in this thread
        self._max_read = 1 << 62  # limit_reads()

    def __repr__(self) -> str:
        return f"<DiskBackend {str(self.directory)!r}>"

    @property
    def read_only(self) -> bool:
        """Whether the store was opened read-only (entries served, results not stored)."""
        if self._cache is None and self._ro is None:
            with contextlib.suppress(BackendError):
                self._ensure_open()
        return self._ro is not None

    @property
    def cache(self) -> diskcache.Cache:
        """The underlying ``diskcache.Cache``, opened on first use.

        Raises:
            StoreDisabled: the directory must not or cannot be used.
            BackendError: the store is read-only (writes are impossible).
        """
        c = self._cache
        if c is None:
            self._ensure_open()
            c = self._cache
            if c is None:
                raise BackendError(f"disk cache {str(self.directory)!r} is read-only "
                                   f"({self._ro_reason}): entries are served, not stored")
        return c

    def _ensure_open(self) -> None:
        with self._open_lock:
            if self._cache is not None or self._ro is not None:
                return
            if self._disabled is not None:
                raise self._disabled
            try:
                self._open_any()
            except StoreDisabled as exc:
                self._disabled = exc  # decided once per process: no retry storm
                raise

    def _open_any(self) -> None:
        try:
            writable = _diskfs.check_directory(self.directory)
        except OSError as exc:  # stat() itself failed (EACCES on a parent...)
            raise StoreDisabled(f"cannot use cache directory {str(self.directory)!r}: "
                                f"{type(exc).__name__}: {exc}") from exc
        reason = "the directory is not writable"
        if writable:
            try:
                self._cache = self._open_cache()
            except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
                if _diskstore.busy(exc):
                    raise BackendUnavailable(
                        f"disk cache {self.directory} is busy: {exc}") from exc
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self.sweep(budget=_SWEEP_BUDGET)
                return
        self._ro = self._open_read_only(reason)
        self._ro_pid, self._ro_reason = os.getpid(), reason

    def _open_cache(self) -> diskcache.Cache:
        try:
            return self._new_cache()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            return self._quarantine_and_reopen(exc)

    def _new_cache(self) -> diskcache.Cache:
        return _diskstore.new_cache(self.directory, self.busy_timeout, self.size_limit)

    def _open_read_only(self, reason: str) -> sqlite3.Connection:
        return _diskstore.open_read_only(self.directory, self.busy_timeout, reason)

    def _quarantine_and_reopen(self, exc: BaseException) -> diskcache.Cache:
        _diskstore.quarantine(self.directory, exc)
        try:
            return self._new_cache()
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc2:
            raise BackendError(f"cannot reopen disk cache {self.directory}: {exc2}") from exc2

    def _reader(self) -> sqlite3.Connection:
        """The connection reads go through: diskcache's, or the read-only one."""
        c = self._cache
        if c is None:
            self._ensure_open()
            c = self._cache
            if c is None:
                if self._ro_pid != os.getpid():  # forked: never share a SQLite connection
                    with self._open_lock:
                        if self._ro is not None and self._ro_pid != os.getpid():
                            self._ro = self._open_read_only(self._ro_reason)
                            self._ro_pid = os.getpid()
                assert self._ro is not None
                return self._ro
        con: sqlite3.Connection = c._con
        return con

    def _fail(self, exc: BaseException, what: str) -> BackendError:
        if _diskstore.busy(exc):
            # Busy beyond busy_timeout: the breaker should stop every call paying it again.
            return BackendUnavailable(f"disk cache {what} timed out: {exc}")
        if _diskstore.corrupt(exc):
            # Corruption (or a database truncated under us) found while running: quarantine
            # so the next call starts clean.
            with self._open_lock:
                old, self._cache = self._cache, None
                if old is not None:
                    with contextlib.suppress(Exception):
                        old.close()
                    with contextlib.suppress(BackendError):
                        self._cache = self._quarantine_and_reopen(exc)
        return BackendError(f"disk cache {what} failed: {type(exc).__name__}: {exc}")

    def _refused(self, reason: str) -> bytes:
        """Log (once per reason) a stored row that is refused; it reads as a corrupt entry."""
        tag = reason.split(" ", 2)[-1][:40]
        if tag not in self._warned:
            self._warned.add(tag)
            _diskstore.log().warning("persistmemo: disk cache %s: refused a stored row (%s)",
                           self.directory, reason)
        return _REFUSED

    # -- primitives ------------------------------------------------------------------------
    def get(self, key: str) -> bytes | Missing:
        # The hit path. One indexed SELECT on diskcache's own per-thread, pid-checked
        # connection: the same query diskcache.Cache.get runs for this eviction policy (hits
        # never write), minus ~2 us of its generic per-call work (key pickling checks, option
        # handling).
        cache = self._cache
        try:
            con = cache._con if cache is not None else self._reader()
            row = con.execute(_SELECT, (self._max_read, key, time.time())).fetchone()
            if row is None:
                return MISSING
            mode, filename, value, size = row
            if mode == MODE_RAW and type(value) is bytes:
                return value
            return self._fetch(mode, filename, value, size)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "get") from exc

    def get_many(self, keys: Sequence[str]) -> list[bytes | Missing]:
        """Look up many keys with one indexed SELECT per 500 keys (for ``f.map``)."""
        found: dict[str, bytes | Missing] = {}
        try:
            con, now = self._reader(), time.time()
            for i in range(0, len(keys), 500):
                part = list(keys[i:i + 500])
                marks = ",".join("?" * len(part))
                rows = con.execute(_SELECT_MANY.format(marks),
                                   (self._max_read, *part, now)).fetchall()
                for key, mode, filename, value, size in rows:
                    if mode == MODE_RAW and type(value) is bytes:
                        found[key] = value
                    else:
                        found[key] = self._fetch(mode, filename, value, size)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "get_many") from exc
        return [found.get(k, MISSING) for k in keys]

    def limit_reads(self, max_size: int) -> None:
        """Refuse stored values over ``max_size`` bytes from their row, without reading them."""
        self._max_read = min(self._max_read, max_size)  # shared backend: the smallest wins

    def get_owned(self, key: str) -> bytes | bytearray | Missing:
        """Like :meth:`get`, but a large value comes back as a private ``bytearray``.

        The caller owns it: the codec decodes numpy arrays in it in place (no copy), which is
        what makes a 10 MB array hit as fast as reading the file.
        """
        self._owned.on = True
        try:
            return self.get(key)
        finally:
            self._owned.on = False

    async def aget_owned(self, key: str) -> bytes | bytearray | Missing:
        """Async twin of :meth:`get_owned` (a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.get_owned, key)

    def _fetch(self, mode: int, filename: Any, value: Any, size: Any) -> bytes | Missing:
        if mode == MODE_RAW and isinstance(value, (bytes, memoryview)):
            return bytes(value)
        if mode == MODE_RAW and value is None:
            return self._refused(f"inline entry over max_value_size={self._max_read}")
        if mode != MODE_BINARY or value is not None or type(size) is not int:
            return self._refused(f"stored mode {mode}")
        if size > self._max_read:
            return self._refused(f"entry of {size} bytes over max_value_size={self._max_read}")
        try:
            owned = getattr(self._owned, "on", False)  # get_owned(): a private bytearray
            return _diskfs.read_value(str(self.directory), filename, size,  # type: ignore[return-value]
                                      owned=owned)
        except FileNotFoundError:
            return MISSING  # the row's file was culled or swept between our SELECT and the read
        except UnsafeFile as exc:
            return self._refused(str(exc))

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        cache = self.cache
        disk = cache.disk
        disk.written.name = None
        try:
            cache.set(key, value if type(value) is bytes else bytes(value), expire=ttl)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            self._after_failed_write(disk)
            raise self._fail(exc, "set") from exc
        if cache._txn_id != threading.get_ident():  # committed: the sweep may judge the file
            _diskstore.release_written(disk)

    def _after_failed_write(self, disk: Any) -> None:
        """Remove the value file a failed store left behind, then sweep (rate-limited)."""
        name = getattr(disk.written, "name", None)
        if name is not None:  # its row was rolled back: nobody references the file
            _diskfs.remove_value(str(self.directory), name)
            disk.written.name = None
        _diskstore.release_written(disk)
        if time.monotonic() - self._last_sweep >= _SWEEP_EVERY:
            with contextlib.suppress(BackendError):
                self.sweep(budget=_SWEEP_BUDGET)

    def sweep(self, *, grace: float = _ORPHAN_GRACE, budget: float = 5.0) -> int:
        """Delete value files that no row references (left by killed or failed writers).

        A file a live writer still holds (its row not yet committed) is kept; so are files
        younger than ``grace`` seconds. Bounded by ``budget`` seconds. Returns the number of
        files removed.
        """
        self._last_sweep = time.monotonic()
        cache = self._cache
        if cache is None:
            return 0
        try:
            rows = cache._con.execute("SELECT filename FROM Cache WHERE filename IS NOT NULL")
            referenced = {r[0] for r in rows}
        except (sqlite3.Error, diskcache.Timeout):
            return 0
        con = cache._con

        def referenced_now(name: str) -> bool:  # committed since the snapshot above?
            row = con.execute("SELECT 1 FROM Cache WHERE filename = ? LIMIT 1", (name,))
            return row.fetchone() is not None

        return _diskfs.sweep_orphans(str(self.directory), referenced, grace=grace,
                                     budget=budget, recheck=referenced_now)

    def delete(self, key: str) -> bool:
        try:
            return bool(self.cache.delete(key, retry=True))
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "delete") from exc

    def _keys_in_range(self, prefix: str, live: bool = False) -> list[str]:
        # The (key, raw) unique index makes a range scan cheap: no full-table iteration.
        con = self._reader()
        where = " AND (expire_time IS NULL OR expire_time > ?)" if live else ""
        args: tuple[Any, ...] = (time.time(),) if live else ()
        if prefix:
            rows = con.execute("SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND key < ?"
                               + where, (prefix, prefix + "\U0010ffff", *args)).fetchall()
        else:
            rows = con.execute("SELECT key FROM Cache WHERE raw = 1" + where, args).fetchall()
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
            found = self._keys_in_range(prefix, live=True)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "keys") from exc
        for key in found:
            if not key.startswith(_LOCK_PREFIX):
                yield key

    def acquire_and_get(self, lock: Lock, key: str) -> tuple[bool, bytes | Missing]:
        """Try the lease and re-read ``key`` in one SQLite transaction (one commit)."""
        if not isinstance(lock, DiskLock):
            return super().acquire_and_get(lock, key)
        cache = self.cache
        try:
            # Waiters call this in a polling loop: while a live lease exists, only read (no
            # write transaction per poll); otherwise take the lease and re-read atomically.
            row = cache._con.execute(_SELECT, (self._max_read, lock.key, time.time())
                                     ).fetchone()
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
            _diskstore.release_written(cache.disk)  # committed
        except (sqlite3.Error, OSError, diskcache.Timeout, BackendError) as exc:
            self._after_failed_write(cache.disk)  # rolled back: its value file is an orphan
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
        """Check the database, drop rows naming foreign files, remove orphaned value files.

        Returns what was found and done, one line each. A read-only store is only checked.
        """
        try:
            con = self._reader()
            found = [f"integrity: {r[0]}" for r in con.execute("PRAGMA quick_check")
                     if r[0] != "ok"]
            bad = [(rowid, name) for rowid, name in
                   con.execute("SELECT rowid, filename FROM Cache WHERE filename IS NOT NULL")
                   if _diskfs._VALUE_NAME.match(str(name)) is None]
            if self._cache is None:
                found.append(f"read-only store ({self._ro_reason}): checked, nothing changed")
                found += [f"row {rowid} names a foreign file {name!r}" for rowid, name in bad]
                return found
            with self._cache.transact(retry=True):
                for rowid, name in bad:  # the row goes; the file it names is never touched
                    con.execute("DELETE FROM Cache WHERE rowid = ?", (rowid,))
                    found.append(f"removed row {rowid} naming a foreign file {name!r}")
            removed = self.sweep(budget=60.0)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise self._fail(exc, "check") from exc
        if removed:
            found.append(f"removed {removed} orphaned value files")
        return found

    def volume(self) -> int:
        """Bytes used on disk by the database and value files."""
        if self._cache is not None or not self.read_only:
            return int(self.cache.volume())
        con = self._reader()
        (pages,) = con.execute("PRAGMA page_count").fetchone()
        (page_size,) = con.execute("PRAGMA page_size").fetchone()
        row = con.execute("SELECT value FROM Settings WHERE key = 'size'").fetchone()
        return int(pages) * int(page_size) + int(row[0] if row else 0)

    def close(self) -> None:
        with self._open_lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None
            if self._ro is not None:
                if self._ro_pid == os.getpid():
                    self._ro.close()
                self._ro = None


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
        except _diskstore.Refused:
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
