"""Filesystem safety for the disk store: the directory, value files, and the orphan sweep.

Private to :mod:`persistmemo.backends.disk`. The SQLite index (its ``filename`` column included) is
data anyone who can write the cache directory controls, so a row's file name is never trusted:

- only names of the exact form diskcache generates (``xx/yy/<28 hex>.val``) are ever opened,
  written or deleted, and always relative to an opened directory with ``O_NOFOLLOW`` at every
  level, so neither ``../``, an absolute path, nor a planted symlink leads outside the cache;
- a file is read only if ``fstat`` says it is a regular file of exactly the size the row records
  (a FIFO, a device, or a truncated file is refused at once: no hang, no unbounded read).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the sweep falls back to the grace period alone
    fcntl = None  # type: ignore[assignment]

from persistmemo.errors import StoreDisabled

__all__ = ["UnsafeFile", "check_directory", "read_value", "remove_value", "sweep_orphans",
           "write_value"]

# diskcache's Disk.filename(): 32 random hex digits as "2/2/28.val" (os.path.join separators).
_VALUE_NAME = re.compile(r"\A([0-9a-f]{2})[/\\]([0-9a-f]{2})[/\\]([0-9a-f]{28}\.val)\Z")
_HEX2 = re.compile(r"\A[0-9a-f]{2}\Z")
_FILE_NAME = re.compile(r"\A[0-9a-f]{28}\.val\Z")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC


class UnsafeFile(Exception):
    """A row names a file persistmemo would not have written, or the file is not what it says."""


def _split(filename: object) -> tuple[str, str, str]:
    """Return the (dir, subdir, name) parts of a value file name, or raise :class:`UnsafeFile`."""
    match = _VALUE_NAME.match(filename) if isinstance(filename, str) else None
    if match is None:
        raise UnsafeFile(f"refusing value file name {str(filename)[:80]!r}")
    return match.group(1), match.group(2), match.group(3)


def _open_dirs(root: str, parts: Iterable[str], create: bool = False) -> int:
    """Open ``root/<parts...>`` without following any symlink; return the last directory fd."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_value(root: str, filename: object, size: int | None, *, owned: bool = False
               ) -> bytes | bytearray:
    """Read a value file named by a row; it must be a regular file of exactly ``size`` bytes.

    ``owned``: return a private ``bytearray`` (numpy results may then use it in place), else
    ``bytes``. Either way the data is copied once, from the page cache.

    Raises:
        UnsafeFile: a foreign name, a symlink, a non-regular file or a size mismatch.
        FileNotFoundError: the file vanished (culled or swept meanwhile).
    """
    a, b, name = _split(filename)
    dfd = _open_dirs(root, (a, b))
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(f"value file {filename!r} is a symlink") from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"value file {filename!r} is not a regular file")
        if size is not None and st.st_size != size:
            raise UnsafeFile(f"value file {filename!r} has {st.st_size} bytes, not {size}")
        return _read_owned(fd, st.st_size, filename) if owned else _read_bytes(fd, st.st_size,
                                                                                filename)
    finally:
        os.close(fd)


def _read_owned(fd: int, size: int, filename: object) -> bytearray:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if not n:
            raise UnsafeFile(f"value file {filename!r} shrank while being read")
        got += n
    return buf


def _read_bytes(fd: int, size: int, filename: object) -> bytes:
    chunks = [os.read(fd, size)]  # one read (one copy) for a regular file, as a rule
    got = len(chunks[0])
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            raise UnsafeFile(f"value file {filename!r} shrank while being read")
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def write_value(root: str, filename: str, data: bytes | memoryview) -> int:
    """Create the value file ``filename`` (owner-only, never through a symlink) with ``data``.

    Returns the open file descriptor, holding an exclusive ``flock`` that tells the orphan sweep
    "a live writer owns this file": close it once the row that names the file is committed (or
    rolled back). A failed write (a full disk) removes the partial file: no zero-byte orphans.
    """
    a, b, name = _split(filename)
    dfd = _open_dirs(root, (a, b), create=True)
    try:
        fd = os.open(name, _WRITE_FLAGS, 0o600, dir_fd=dfd)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
            raise
        return fd
    finally:
        os.close(dfd)


def remove_value(root: str, filename: object) -> bool:
    """Delete a value file (and its emptied subdirectories); refuse any foreign name."""
    try:
        a, b, name = _split(filename)
    except UnsafeFile:
        return False
    try:
        rfd = os.open(root, _DIR_FLAGS)
    except OSError:
        return False
    try:
        afd = os.open(a, _DIR_FLAGS, dir_fd=rfd)
        try:
            bfd = os.open(b, _DIR_FLAGS, dir_fd=afd)
            try:
                os.unlink(name, dir_fd=bfd)
            finally:
                os.close(bfd)
            with contextlib.suppress(OSError):  # not empty: another value lives there
                os.rmdir(b, dir_fd=afd)
        finally:
            os.close(afd)
        with contextlib.suppress(OSError):
            os.rmdir(a, dir_fd=rfd)
        return True
    except OSError:
        return False
    finally:
        os.close(rfd)


def _entries(root: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Yield (``xx/yy/name``, entry) for files named as persistmemo names value files."""
    try:
        tops = sorted(e.name for e in os.scandir(root)
                      if _HEX2.match(e.name) and e.is_dir(follow_symlinks=False))
    except OSError:
        return
    if tops:  # start anywhere: bounded sweeps of a big cache cover all of it over time
        start = random.randrange(len(tops))
        tops = tops[start:] + tops[:start]
    for a in tops:
        try:
            subs = [e.name for e in os.scandir(os.path.join(root, a))
                    if _HEX2.match(e.name) and e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for b in subs:
            with contextlib.suppress(OSError):
                for entry in list(os.scandir(os.path.join(root, a, b))):
                    if _FILE_NAME.match(entry.name):
                        yield f"{a}/{b}/{entry.name}", entry


def _writer_alive(root: str, name: str) -> bool:
    """Whether a live writer holds the file's flock (a killed writer's lock is gone)."""
    if fcntl is None:
        return False
    try:
        a, b, leaf = _split(name)
        dfd = _open_dirs(root, (a, b))
        try:
            fd = os.open(leaf, _READ_FLAGS, dir_fd=dfd)
        finally:
            os.close(dfd)
    except OSError:
        return False  # a symlink or FIFO named like ours: not a writer's, remove it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def sweep_orphans(root: str, referenced: set[str], *, grace: float, budget: float,
                  max_files: int = 20_000, recheck: Callable[[str], bool] | None = None) -> int:
    """Delete value files no row references and no live writer holds.

    A writer holds an ``flock`` on its file until its row commits, so files of killed writers
    (the kernel dropped their locks) go at once; ``grace`` only covers the microseconds between
    a file's creation and its lock. Bounded: stops after ``max_files`` files, or after
    ``budget`` seconds once 2,000 files were examined (the next sweep goes on). Only names
    persistmemo gives, never through symlinks.
    ``recheck(name)``: whether a row references the file now (a writer may have committed and
    unlocked since ``referenced`` was read).
    """
    deadline = time.monotonic() + budget
    cutoff = time.time() - grace
    removed = 0
    for seen, (name, entry) in enumerate(_entries(root)):
        # The first 2,000 files are always examined (a small cache is swept completely even on
        # a starved machine); beyond them the time budget applies.
        if seen >= max_files or (seen >= 2000 and time.monotonic() > deadline):
            break
        if name in referenced or name.replace("/", "\\") in referenced:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
        except OSError:
            continue
        if _writer_alive(root, name) or (recheck is not None and recheck(name)):
            continue
        removed += remove_value(root, name)
    return removed


def _fix_hint() -> str:
    return ("pass another location (Cache('/some/dir') or PERSISTMEMO_URL), "
            "or set XDG_CACHE_HOME to a directory you own")


def check_directory(path: Path) -> bool:
    """Create ``path`` owner-only, or check an existing one; return whether it is writable.

    Raises:
        StoreDisabled: the directory must not be used (a symlink, not a directory, another
            user's, world-writable) or cannot be created; the message names the reason and fix.
    """
    where = str(path)
    if path.is_symlink():
        raise StoreDisabled(f"refusing cache directory {where!r}: it is a symlink (another user "
                            f"could redirect it); use the real directory, or {_fix_hint()}")
    if not path.exists():
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreDisabled(f"cannot create cache directory {where!r} "
                                f"({type(exc).__name__}: {exc.strerror or exc}); "
                                f"{_fix_hint()}") from exc
        return True
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise StoreDisabled(f"cache location {where!r} exists and is not a directory; "
                            f"{_fix_hint()}")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise StoreDisabled(f"refusing cache directory {where!r}: owned by uid {st.st_uid}, "
                            f"not by you (uid {os.getuid()}); chown it, or {_fix_hint()}")
    if st.st_mode & stat.S_IWOTH:
        raise StoreDisabled(f"refusing cache directory {where!r}: it is world-writable (anyone "
                            f"could plant entries); chmod 700 it, or {_fix_hint()}")
    return os.access(path, os.W_OK | os.X_OK)
