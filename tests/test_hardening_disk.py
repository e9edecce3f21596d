"""Hardening of the disk store: faults and attacks on the directory, the database and its files.

Each test pins one finding of issue 10 (each failed on 0.1): truncation under a running process,
unsafe or unusable directories, planted ``filename`` rows, read-only and full stores, orphans.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from persistmemo import Cache
from persistmemo.backends.base import MISSING as MISSING_SENTINEL
from persistmemo.backends.disk import DiskBackend
from persistmemo.errors import BackendError, StoreDisabled

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534


def _counted(cache: Cache) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cache.memoize(lock_wait=1)
    def square(x: int) -> bytes:
        calls.append(x)
        return bytes([x % 256]) * (x * 1000)  # large x: a value file, small x: a row

    return square, calls


def _want(x: int) -> bytes:
    return bytes([x % 256]) * (x * 1000)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "persistmemo" and r.levelno >= logging.WARNING]


def _run(code: str, *, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)


# -- mmap and truncation ------------------------------------------------------------------------
def test_every_connection_has_mmap_off_even_if_settings_say_otherwise(tmp_path: Path) -> None:
    """A Settings row planting sqlite_mmap_size cannot turn memory-mapped I/O back on."""
    d = tmp_path / "c"
    b = DiskBackend(d)
    b.set("k", b"v")
    b.close()
    with sqlite3.connect(d / "cache.db") as con:
        con.execute("UPDATE Settings SET value = ? WHERE key = 'sqlite_mmap_size'", (2**26,))
    b2 = DiskBackend(d)
    assert b2.get("k") == b"v"
    assert b2.cache._con.execute("PRAGMA mmap_size").fetchone()[0] == 0
    import threading

    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(
        b2.cache._con.execute("PRAGMA mmap_size").fetchone()[0]))
    t.start()
    t.join()
    assert seen == [0]


@pytest.mark.parametrize("victim", ["cache.db", "cache.db-wal"])
def test_truncated_database_under_a_running_process_is_not_a_signal(tmp_path: Path,
                                                                    victim: str) -> None:
    """Truncating the database while a process has it open: exit 0 and right results."""
    code = f"""
        import os, sys
        from persistmemo import Cache
        d = {str(tmp_path / 'c')!r}
        cache = Cache(d)
        @cache.memoize
        def f(x):
            return [x] * 50
        for i in range(300):
            assert f(i) == [i] * 50
        for i in range(300):
            assert f(i) == [i] * 50
        with open(os.path.join(d, {victim!r}), "r+b") as fh:
            fh.truncate(0 if {victim!r} == "cache.db" else 100)
        for _ in range(3):
            for i in range(300):
                assert f(i) == [i] * 50, i
        print("ok", f.cache_info())
    """
    res = _run(code)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.startswith("ok")


def test_replaced_database_is_a_miss_or_rebuild(tmp_path: Path) -> None:
    """A database replaced by junk under a running process: right results, no exception."""
    d = tmp_path / "c"
    cache = Cache(d)
    square, calls = _counted(cache)
    assert [square(i) for i in range(5)] == [_want(i) for i in range(5)]
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(8192))
    os.replace(junk, d / "cache.db")
    assert [square(i) for i in range(5)] == [_want(i) for i in range(5)]
    cache2 = Cache(d)
    square2, _ = _counted(cache2)
    assert [square2(i) for i in range(5)] == [_want(i) for i in range(5)]


# -- unsafe and unusable directories -------------------------------------------------------------
def _unsafe_dir(kind: str, tmp_path: Path) -> Path:
    if kind == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        link = tmp_path / "link"
        link.symlink_to(real)
        return link
    d = tmp_path / kind
    d.mkdir(mode=0o700)
    if kind == "world-writable":
        d.chmod(0o777)
    elif kind == "other-owner":
        if not ROOT:
            pytest.skip("needs root to chown a directory to another user")
        os.chown(d, NOBODY, NOBODY)
    elif kind == "not-a-directory":
        d.rmdir()
        d.write_text("x")
    return d


@pytest.mark.parametrize("kind", ["symlink", "world-writable", "other-owner", "not-a-directory"])
def test_unsafe_directory_fails_open_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """An unsafe directory: results returned, one warning naming reason and fix, counted."""
    d = _unsafe_dir(kind, tmp_path)
    before = sorted(p.name for p in (d.resolve().iterdir() if d.resolve().is_dir() else []))
    cache = Cache(d)
    square, calls = _counted(cache)
    with caplog.at_level(logging.WARNING, logger="persistmemo"):
        assert [square(i) for i in (1, 2, 1, 2)] == [_want(i) for i in (1, 2, 1, 2)]
    msgs = _warnings(caplog)
    assert len(msgs) == 1, msgs
    assert str(d) in msgs[0]
    assert any(w in msgs[0] for w in ("chmod", "chown", "another location", "real directory"))
    assert calls == [1, 2, 1, 2]  # the store was never used
    assert cache.info().errors >= 1 and square.cache_info().errors >= 1
    after = sorted(p.name for p in (d.resolve().iterdir() if d.resolve().is_dir() else []))
    assert after == before  # nothing was written there


@pytest.mark.parametrize("kind", ["symlink", "world-writable"])
def test_unsafe_directory_raises_without_fail_open(tmp_path: Path, kind: str) -> None:
    """fail_open=False keeps raising (StoreDisabled, also a ConfigurationError)."""
    d = _unsafe_dir(kind, tmp_path)
    square, _ = _counted(Cache(d, fail_open=False))
    with pytest.raises(StoreDisabled, match=kind):
        square(1)
    with pytest.raises(StoreDisabled):  # decided once, raised again without a retry storm
        DiskBackend(d).get("k")


def test_bare_memoize_with_unwritable_home_returns_results(tmp_path: Path) -> None:
    """Bare @memoize with a HOME where no cache can be created: results, exit 0, one warning."""
    if ROOT:  # root ignores permissions: make the cache path impossible instead (ENOTDIR)
        (tmp_path / "afile").write_text("x")
        home = tmp_path / "afile" / "home"
    else:  # EACCES, as in containers whose HOME belongs to another user
        home = tmp_path / "home"
        home.mkdir(mode=0o555)
    code = """
        import logging
        logging.basicConfig(level=logging.WARNING)
        from persistmemo import memoize
        @memoize
        def f(x):
            return x * 2
        assert [f(i) for i in range(5)] == [0, 2, 4, 6, 8]
        print("ok", f.cache_info().errors)
    """
    env = {"HOME": str(home), "XDG_CACHE_HOME": ""}
    res = _run(code, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("ok")
    assert int(res.stdout.split()[1]) >= 1
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("WARNING:persistmemo")]
    assert len(lines) == 1, res.stderr
    assert "XDG_CACHE_HOME" in lines[0] or "PERSISTMEMO_URL" in lines[0]


# -- planted filename rows -----------------------------------------------------------------------
def _plant(d: Path, key: str, filename: str, size: int = 40000) -> None:
    with sqlite3.connect(d / "cache.db") as con:
        con.execute("UPDATE Cache SET mode = 2, filename = ?, value = NULL, size = ? "
                    "WHERE key = ?", (filename, size, key))


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file outside the cache that a planted row points at; it must survive."""
    outside = tmp_path / "outside" / "deep"
    outside.mkdir(parents=True)
    target = outside / "precious.txt"
    target.write_text("keep me")
    yield target
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "fifo", "devzero",
                                 "wrong-size", "directory"])
def test_planted_filename_rows_touch_nothing_and_never_hang(
    tmp_path: Path, victim: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A planted row's filename is never followed: no file outside touched, bounded time."""
    d = tmp_path / "c"
    cache = Cache(d)
    square, calls = _counted(cache)
    assert square(40) == _want(40)
    key = square.cache_key(40)
    name = "ab/cd/" + "e" * 28 + ".val"
    (d / "ab" / "cd").mkdir(parents=True, exist_ok=True)
    if how == "absolute":
        name = str(victim)
    elif how == "dotdot":
        name = os.path.relpath(victim, d)
    elif how == "symlink":
        (d / name).symlink_to(victim)
    elif how == "fifo":
        os.mkfifo(d / name)
    elif how == "devzero":
        (d / name).symlink_to("/dev/zero")
    elif how == "wrong-size":
        (d / name).write_bytes(b"x" * 10)
    elif how == "directory":
        (d / name).mkdir()
    _plant(d, key, name, size=len(victim.read_bytes()) if how != "wrong-size" else 40000)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="persistmemo"):
        assert square(40) == _want(40)  # a miss: recomputed, stored over the planted row
        assert square(40) == _want(40)
        cache.clear()
        cache.backend.maintain()  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 5
    assert calls == [40, 40]
    assert square.cache_info().decode_failures == 1  # refused: counted, logged, a miss
    assert any("refused a stored row" in m for m in _warnings(caplog))
    if how in ("symlink", "devzero"):
        assert victim.exists()


def test_value_files_and_directories_are_owner_only(tmp_path: Path) -> None:
    """New value files are 0600 and their subdirectories 0700."""
    b = DiskBackend(tmp_path / "c")
    b.set("k", b"x" * 100_000)
    files = [p for p in (tmp_path / "c").rglob("*.val")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700


# -- read-only and full stores, orphans ----------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[bool]:
    """Mount a small tmpfs at ``path`` if the machine allows it (root); yield whether it did."""
    path.mkdir(exist_ok=True)
    ok = ROOT and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                                  "tmpfs", str(path)], capture_output=True,
                                 check=False).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _need_mount(ok: bool) -> None:
    if not ok:  # not a missing tool but a missing privilege: the shim tests below always run
        pytest.skip("needs root and permission to mount a tmpfs; the shim tests cover the code")


def test_read_only_store_serves_reads_in_a_fresh_process(tmp_path: Path) -> None:
    """A store on a read-only mount: a fresh process gets hits; writes are counted, not raised."""
    with _tmpfs(tmp_path / "mnt", "8m") as ok:
        _need_mount(ok)
        d = tmp_path / "mnt" / "c"
        cache = Cache(d)
        square, _ = _counted(cache)
        assert [square(i) for i in range(1, 60, 7)] == [_want(i) for i in range(1, 60, 7)]
        cache.close()
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "mnt")], check=True)
        b = DiskBackend(d)
        assert b.read_only
        raw = b.get(square.cache_key(8))
        assert isinstance(raw, bytes) and len(raw) > 8000
        with pytest.raises(BackendError):
            b.set("k", b"v")
        cache3 = Cache(d)
        sq3, calls3 = _counted(cache3)
        assert [sq3(i) for i in range(1, 60, 7)] == [_want(i) for i in range(1, 60, 7)]
        assert calls3 == []  # every one a hit from the read-only store
        assert [sq3(i) for i in (2, 3)] == [_want(2), _want(3)]  # misses: computed, not stored
        assert sq3.cache_info().errors >= 1
        assert b.volume() > 0 and b.maintain()
        b.close()


def test_full_filesystem_keeps_serving_and_leaves_no_zero_byte_files(tmp_path: Path) -> None:
    """A full tmpfs: every call returns f(x), old entries still hit (also in a fresh process),
    failed writes leave no partial or zero-byte value files."""
    with _tmpfs(tmp_path / "mnt", "3m") as ok:
        _need_mount(ok)
        d = tmp_path / "mnt" / "c"
        cache = Cache(d)
        square, calls = _counted(cache)
        assert [square(i) for i in range(40, 45)] == [_want(i) for i in range(40, 45)]
        for i in range(100, 200):  # fill the disk: 100 KB values until writes fail
            assert square(i) == _want(i)
        assert square.cache_info().errors >= 1
        calls.clear()
        assert [square(i) for i in range(40, 45)] == [_want(i) for i in range(40, 45)]
        assert calls == []
        fresh = Cache(d)
        sq2, calls2 = _counted(fresh)
        assert [sq2(i) for i in range(40, 45)] == [_want(i) for i in range(40, 45)]
        assert calls2 == []
        assert sq2(250) == _want(250)
        assert not [p for p in d.rglob("*.val") if p.stat().st_size == 0]
        referenced = {r[0] for r in sqlite3.connect(f"file:{d}/cache.db?mode=ro", uri=True)
                      .execute("SELECT filename FROM Cache WHERE filename IS NOT NULL")}
        on_disk = {str(p.relative_to(d)) for p in d.rglob("*.val")}
        assert on_disk <= referenced  # no orphans from the failed writes


def test_failed_value_write_is_cleaned_up_by_shim(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault-injection shim (no mount needed): ENOSPC mid-write leaves no partial file."""
    import errno

    from persistmemo.backends import _diskfs

    d = tmp_path / "c"
    cache = Cache(d)
    square, _ = _counted(cache)
    assert square(40) == _want(40)
    real_write = os.write

    def failing_write(fd: int, data: Any) -> int:
        if len(data) > 10_000:
            real_write(fd, bytes(data[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(_diskfs.os, "write", failing_write)
    assert square(41) == _want(41)
    monkeypatch.undo()
    assert square.cache_info().errors == 1
    files = list(d.rglob("*.val"))
    assert len(files) == 1 and files[0].stat().st_size > 40_000  # the old entry only
    assert square(40) == _want(40) and square.cache_info().hits == 1


def test_orphans_are_swept_at_open(tmp_path: Path) -> None:
    """Unreferenced value files (killed writers) are removed by the next open; others kept."""
    d = tmp_path / "c"
    b = DiskBackend(d)
    b.set("k", b"y" * 50_000)
    b.close()
    orphan = d / "aa" / "bb" / ("c" * 28 + ".val")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"")
    zero = d / "aa" / "bb" / ("d" * 28 + ".val")
    zero.write_bytes(b"z" * 50_000)
    other = d / "aa" / "notes.txt"
    other.write_text("not ours")
    old = time.time() - 60
    for p in (orphan, zero):
        os.utime(p, (old, old))
    b2 = DiskBackend(d)
    assert b2.get("k") == b"y" * 50_000
    assert not orphan.exists() and not zero.exists()
    assert other.exists()


def test_disk_array_hits_are_private_aligned_and_writable(tmp_path: Path) -> None:
    """A numpy result read from a value file is decoded in place: aligned, writable, and each
    hit gets its own buffer (mutating one never changes the next)."""
    import numpy as np

    cache = Cache(tmp_path / "c")
    base = np.arange(100_000, dtype=np.float64)

    @cache.memoize
    def arrays(n: int) -> tuple[Any, Any]:
        return base[:n].copy(), base[:n].astype(np.int16)

    arrays(50_000)
    a, b = arrays(50_000)
    assert a.flags.aligned and a.flags.writeable and b.flags.aligned
    a[:] = -1
    b[:] = -1
    c, d = arrays(50_000)
    assert (c == base[:50_000]).all() and (d == base[:50_000].astype(np.int16)).all()
    assert arrays.cache_info().hits == 2


def test_wal_deleted_under_a_writer_then_killed(tmp_path: Path) -> None:
    """-wal/-shm deleted while a writer runs, then SIGKILL: every later read is right (torn
    rows fail the checksum; a malformed database is quarantined), no exception escapes."""
    import signal

    d = tmp_path / "c"
    worker = tmp_path / "walworker.py"
    worker.write_text(textwrap.dedent(f"""
        import random, sys
        from persistmemo import Cache
        cache = Cache({str(d)!r})
        @cache.memoize(lock=False)
        def f(i):
            return [i] * (i % 7) + [str(i)] * 3
        if sys.argv[1] == "write":
            print("READY", flush=True)
            import time
            end = time.monotonic() + 20  # never outlive the test by much
            while time.monotonic() < end:
                i = random.randrange(500)
                f.invalidate(i)
                f(i)
        bad = sum(f(i) != f.__wrapped__(i) for i in range(500))
        print("bad", bad, f.cache_info().hits)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(2):
        w = subprocess.Popen([sys.executable, str(worker), "write"], env=env,
                             stdout=subprocess.PIPE, text=True)
        try:
            assert w.stdout is not None and w.stdout.readline().strip() == "READY"
            time.sleep(0.5)
            for name in ("cache.db-wal", "cache.db-shm"):
                with contextlib.suppress(FileNotFoundError):
                    (d / name).unlink()
            time.sleep(0.2)
        finally:
            w.send_signal(signal.SIGKILL)
            w.wait()
            if w.stdout is not None:
                w.stdout.close()
        res = subprocess.run([sys.executable, str(worker), "read"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.split()[:2] == ["bad", "0"], res.stdout


def test_unwritable_directory_opens_read_only_by_shim(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault-injection shim (no mount, works as root): a directory reported unwritable opens
    read-only; entries are hits, misses are computed, write failures counted, not raised."""
    from persistmemo.backends import _diskfs

    d = tmp_path / "c"
    cache = Cache(d)
    square, _ = _counted(cache)
    assert [square(i) for i in (1, 40)] == [_want(1), _want(40)]
    cache.close()
    monkeypatch.setattr(_diskfs.os, "access", lambda *a, **k: False)
    b = DiskBackend(d)
    assert b.read_only
    assert b.get(square.cache_key(40)) is not MISSING_SENTINEL
    with pytest.raises(BackendError, match="read-only"):
        b.set("k", b"v")
    sq2, calls2 = _counted(Cache(d))
    assert [sq2(i) for i in (1, 40, 2)] == [_want(1), _want(40), _want(2)]
    assert calls2 == [2] and sq2.cache_info().errors >= 1


def test_sweep_spares_a_live_writers_file_but_not_a_dead_ones(tmp_path: Path) -> None:
    """An unreferenced value file whose writer still holds its flock (row not yet committed)
    survives a sweep; once the writer is gone (lock released) the next sweep removes it."""
    from persistmemo.backends import _diskfs

    d = tmp_path / "c"
    b = DiskBackend(d)
    b.set("k", b"x" * 50_000)
    name = "aa/bb/" + "c" * 28 + ".val"
    fd = _diskfs.write_value(str(d), name, b"y" * 50_000)  # a writer, lock held
    old = time.time() - 60
    os.utime(d / name, (old, old))
    assert b.sweep() == 0 and (d / name).exists()
    os.close(fd)  # the writer died: the kernel drops its lock
    assert b.sweep() == 1 and not (d / name).exists()
    assert b.get("k") == b"x" * 50_000
