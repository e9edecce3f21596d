"""The disk store's kernel lock: no SQLite writes for the lease, freed at once when its holder
dies, the SQLite lease where the kernel lock is unavailable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from persistmemo import Cache
from persistmemo.backends import _flock
from persistmemo.backends.disk import DiskBackend, DiskLock

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="open file description locks are Linux-only")


def test_disk_lock_is_a_kernel_lock_and_writes_no_lease_row(tmp_path: Path) -> None:
    """A locked miss on disk takes an OFD lock, never a lease row in SQLite."""
    backend = DiskBackend(tmp_path / "c")
    cache = Cache(backend)
    seen: list[list[str]] = []

    @cache.memoize
    def f(x: int) -> int:
        seen.append([k for k in backend.cache.iterkeys() if str(k).startswith("lock:")])
        return x

    assert f(1) == 1 and seen == [[]]
    assert isinstance(backend.lock("k", ttl=5), _flock.FlockLock)


def test_holder_killed_is_replaced_at_once(tmp_path: Path) -> None:
    """A SIGKILLed holder's kernel lock is free at once, long before its 30 s lease ends."""
    directory = tmp_path / "c"
    DiskBackend(directory).cache  # noqa: B018 (create the store)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from persistmemo.backends.disk import DiskBackend
        lock = DiskBackend({str(directory)!r}).lock("pm:k", ttl=30)
        assert lock.acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        other = DiskBackend(directory).lock("pm:k", ttl=30)
        assert other.acquire() is False
        holder.kill()
        holder.wait(10)
        t0 = time.monotonic()
        assert other.acquire() is True
        assert time.monotonic() - t0 < 0.5
        assert other.release() is True
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_fallback_to_the_sqlite_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel lock is unavailable the disk store uses its lease rows."""
    backend = DiskBackend(tmp_path / "c")
    backend.cache  # noqa: B018
    monkeypatch.setitem(_flock._paths, backend.directory, None)
    assert isinstance(backend.lock("k", ttl=5), DiskLock)
    cache = Cache(backend)

    @cache.memoize
    def f(x: int) -> int:
        return x + 1

    assert f(1) == 2 and f(1) == 2 and f.cache_info().hits == 1


def test_keys_sharing_a_slot_never_wait_for_each_other(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With every key in one slot, a recursion (nested holds) still completes at once."""
    monkeypatch.setattr(_flock, "SLOTS", 1)
    cache = Cache(tmp_path / "c", lock_wait=30)

    @cache.memoize
    def depth(n: int) -> int:
        return 0 if n == 0 else 1 + depth(n - 1)

    t0 = time.monotonic()
    assert depth(50) == 50
    assert time.monotonic() - t0 < 10
    assert depth.cache_info().lock_waits == 0


def test_a_forked_child_does_not_keep_the_parents_lock(tmp_path: Path) -> None:
    """A child forked while a lock is held does not hold it once the parent releases."""
    import os

    backend = DiskBackend(tmp_path / "c")
    lock = backend.lock("pm:fork", ttl=30)
    assert lock.acquire()
    with warnings.catch_warnings():  # 3.12+ warns about fork() with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: outlive the parent's release
        time.sleep(3)
        os._exit(0)
    try:
        assert lock.release() is True
        other = backend.lock("pm:fork", ttl=30)
        assert other.acquire() is True and other.release() is True
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
