"""Fail open: a store that is down, paused, refused or corrupt costs a bounded delay, never a
result; caching resumes by itself when the store comes back."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis_fixtures import RedisServer, free_port

from persistmemo import MISSING, BackendError, Cache
from persistmemo.backends.disk import DiskBackend
from persistmemo.errors import ConfigurationError


def _counted(cache: Cache) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cache.memoize(lock_wait=1)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    return square, calls


def test_closed_port_costs_little_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """Redis on a closed port: results are correct, one warning, breaker skips later calls."""
    port = free_port()
    cache = Cache(f"redis://alice:S3cretPw@127.0.0.1:{port}/0", backoff=30)
    square, calls = _counted(cache)
    with caplog.at_level(logging.WARNING, logger="persistmemo"):
        t0 = time.monotonic()
        assert square(3) == 9
        first = time.monotonic() - t0
        t1 = time.monotonic()
        assert [square(i) for i in range(50)] == [i * i for i in range(50)]
        later = (time.monotonic() - t1) / 50
    assert first < 1.0
    assert later < 0.005  # breaker open: the store is skipped entirely
    warnings = [r for r in caplog.records if r.name == "persistmemo"]
    assert len(warnings) == 1
    text = caplog.text + repr(cache) + "".join(str(r.args) for r in caplog.records)
    assert "S3cretPw" not in text
    assert cache.info().errors >= 1


def test_fail_open_false_raises_backend_error() -> None:
    """fail_open=False makes store errors raise BackendError instead."""
    cache = Cache(f"redis://127.0.0.1:{free_port()}/0", fail_open=False)
    square, _ = _counted(cache)
    with pytest.raises(BackendError):
        square(2)


def test_paused_redis_bounded_delay_then_recovery(fresh_redis: RedisServer) -> None:
    """SIGSTOP: the first call pays ~socket_timeout, later calls skip Redis; after SIGCONT and
    the back-off window, hits resume."""
    cache = Cache(fresh_redis.url, backoff=1.0, socket_timeout=0.3)
    square, calls = _counted(cache)
    assert square(4) == 16 and square(4) == 16
    assert calls == [4]
    fresh_redis.pause()
    try:
        t0 = time.monotonic()
        assert square(4) == 16
        first = time.monotonic() - t0
        t1 = time.monotonic()
        assert [square(5) for _ in range(20)] == [25] * 20
        later = time.monotonic() - t1
    finally:
        fresh_redis.resume()
    assert first < 0.3 * 2 + 0.5, first
    assert later < 0.5, later
    deadline = time.monotonic() + 10
    hits_before = square.cache_info().hits
    while square.cache_info().hits == hits_before and time.monotonic() < deadline:
        square(4)
        time.sleep(0.05)
    assert square.cache_info().hits > hits_before  # caching resumed by itself


def test_killed_and_restarted_redis(fresh_redis: RedisServer) -> None:
    """Redis killed mid-run: calls stay correct; after restart (empty) caching resumes."""
    cache = Cache(fresh_redis.url, backoff=0.5)
    square, calls = _counted(cache)
    assert square(2) == 4
    fresh_redis.kill()
    t0 = time.monotonic()
    assert [square(i) for i in range(30)] == [i * i for i in range(30)]
    assert time.monotonic() - t0 < 3
    fresh_redis.restart()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        square(7)
        if square.cache_info().hits and cache.backend.get(square.cache_key(7)) is not MISSING:
            break
        time.sleep(0.1)
    n = len(calls)
    assert square(7) == 49
    assert len(calls) == n  # a hit again


def test_garbage_speaking_server_is_a_backend_error_not_a_crash() -> None:
    """A port that answers HTTP instead of RESP is caught; results are still returned."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        cache = Cache(f"redis://127.0.0.1:{port}/0")
        square, _ = _counted(cache)
        assert [square(i) for i in range(5)] == [0, 1, 4, 9, 16]
        assert cache.info().errors >= 1
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()


def test_unknown_redis_url_parameter_is_configuration_error() -> None:
    """An unknown URL parameter raises ConfigurationError naming it (not silently ignored)."""
    with pytest.raises(ConfigurationError, match="sockettimeout"):
        Cache("redis://127.0.0.1:6379/0?sockettimeout=1")


def test_disk_readonly_directory_still_returns_results(tmp_path: Path) -> None:
    """A cache directory that becomes unwritable: writes fail, results are still returned."""
    d = tmp_path / "ro"
    cache = Cache(d)
    square, _ = _counted(cache)
    assert square(2) == 4
    with _unwritable(d):
        assert [square(i) for i in range(5)] == [0, 1, 4, 9, 16]
    assert cache.info().errors >= 1


@contextlib.contextmanager
def _unwritable(d: Path) -> Iterator[None]:
    """Make ``d`` unwritable: chmod for a user; for root (whom permissions do not stop) a
    read-only bind mount of the directory onto itself."""
    if os.geteuid() != 0:
        d.chmod(0o500)
        try:
            yield
        finally:
            d.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True).returncode
    if mounted != 0:
        if os.environ.get("CI"):
            pytest.fail("root needs permission to bind-mount a directory read-only for this test")
        pytest.skip("root ignores directory permissions and bind mounts are not permitted")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(d)], check=True,
                       capture_output=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)


def test_disk_corrupt_database_is_quarantined(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A cache.db overwritten with junk: the call returns f(x), the db is moved aside, and
    the cache works again."""
    d = tmp_path / "corrupt"
    cache = Cache(d)
    square, calls = _counted(cache)
    assert square(3) == 9
    cache.close()
    with open(d / "cache.db", "r+b") as fh:
        fh.write(os.urandom(4096))
    cache2 = Cache(d)
    square2, calls2 = _counted(cache2)
    with caplog.at_level(logging.ERROR, logger="persistmemo"):
        assert square2(3) == 9
    assert any(p.name.startswith("cache.db.corrupt-") for p in d.iterdir())
    assert square2(3) == 9
    assert square2.cache_info().hits >= 1


def test_disk_refuses_symlink_and_world_writable(tmp_path: Path) -> None:
    """The disk store refuses a symlinked or world-writable directory with a clear error."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigurationError, match="symlink"):
        DiskBackend(link).get("k")
    ww = tmp_path / "ww"
    ww.mkdir()
    ww.chmod(0o777)
    with pytest.raises(ConfigurationError, match="world-writable"):
        DiskBackend(ww).get("k")


def test_disk_fresh_directory_is_owner_only(tmp_path: Path) -> None:
    """A new cache directory is created with mode 0700."""
    b = DiskBackend(tmp_path / "fresh")
    b.set("k", b"v")
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700
    b.close()


CANARY = b"\x80\x04\x95"  # start of a pickle


def test_disk_planted_pickle_row_is_never_unpickled(tmp_path: Path) -> None:
    """A row whose mode column says 'pickle' (diskcache CVE-2025-69872) is refused: a miss."""
    import pickle

    marker = tmp_path / "pwned"

    class Canary:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    d = tmp_path / "planted"
    cache = Cache(d)
    square, calls = _counted(cache)
    assert square(42) == 1764
    key = square.cache_key(42)
    cache.close()
    con = sqlite3.connect(d / "cache.db")
    con.execute("UPDATE Cache SET mode = 4, value = ? WHERE key = ?",
                (pickle.dumps(Canary()), key))
    con.commit()
    con.close()
    cache2 = Cache(d)
    square2, calls2 = _counted(cache2)
    assert square2(42) == 1764
    assert calls2 == [42]
    assert not marker.exists()


def test_redis_out_of_memory_writes_fail_reads_still_served(fresh_redis: RedisServer) -> None:
    """maxmemory + noeviction: SET errors are swallowed (counted), earlier entries still hit."""
    import redis as redis_py

    cache = Cache(fresh_redis.url)

    @cache.memoize(lock=False)
    def blob(i: int) -> bytes:
        return bytes([i % 256]) * 50_000

    assert blob(0) == bytes(50_000)
    client = redis_py.Redis.from_url(fresh_redis.url)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used + 400_000))
    client.config_set("maxmemory-policy", "noeviction")
    for i in range(1, 40):
        assert blob(i) == bytes([i % 256]) * 50_000
    assert cache.info().errors > 0
    hits = blob.cache_info().hits
    assert blob(0) == bytes(50_000)
    assert blob.cache_info().hits == hits + 1  # reads still served: no breaker for OOM
    client.close()


def test_truncated_value_file_is_a_miss(tmp_path: Path) -> None:
    """A large value's file truncated to 10 bytes is detected: recomputed, not returned short."""
    cache = Cache(tmp_path / "trunc")
    calls = []

    @cache.memoize
    def big(i: int) -> bytes:
        calls.append(i)
        return b"z" * 100_000

    assert len(big(1)) == 100_000
    files = [p for p in (tmp_path / "trunc").rglob("*.val")]
    assert len(files) == 1
    files[0].write_bytes(files[0].read_bytes()[:10])
    assert big(1) == b"z" * 100_000
    assert calls == [1, 1]
    assert big.cache_info().decode_failures == 1
