"""The backend contract suite, reusable by third-party backends.

Subclass :class:`BackendContract` in a pytest module and provide a ``backend`` fixture that
yields a fresh, empty store; every test below then runs against it::

    import pytest
    from persistmemo.testing import BackendContract

    class TestMyStore(BackendContract):
        @pytest.fixture
        def backend(self):
            store = MyStore(...)
            yield store
            store.close()
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from persistmemo.backends.base import MISSING, adapt

__all__ = ["BackendContract", "RedisServer", "command", "free_port"]


def _wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


class BackendContract:
    """Behaviour every :class:`~persistmemo.backends.Backend` must have (bytes in, bytes out)."""

    def test_missing_key_is_missing(self, backend: Any) -> None:
        """A key never set reads as MISSING (not None)."""
        backend = adapt(backend)
        assert backend.get("pm:1:t:f:x:absent") is MISSING

    def test_set_get_roundtrip_bytes(self, backend: Any) -> None:
        """Values come back byte for byte, including empty and binary values."""
        backend = adapt(backend)
        for i, value in enumerate([b"", b"\x00\xff" * 10, b"x" * 100_000, bytes(range(256))]):
            backend.set(f"pm:1:t:f:x:{i}", value, ttl=None)
            got = backend.get(f"pm:1:t:f:x:{i}")
            assert type(got) is bytes and got == value

    def test_overwrite(self, backend: Any) -> None:
        """A second set replaces the value."""
        backend = adapt(backend)
        backend.set("pm:1:t:f:x:k", b"one", ttl=None)
        backend.set("pm:1:t:f:x:k", b"two", ttl=None)
        assert backend.get("pm:1:t:f:x:k") == b"two"

    def test_ttl_expires(self, backend: Any) -> None:
        """An entry with a TTL disappears after it (and not before)."""
        backend = adapt(backend)
        backend.set("pm:1:t:f:x:ttl", b"v", ttl=0.3)
        assert backend.get("pm:1:t:f:x:ttl") == b"v"
        assert _wait_until(lambda: backend.get("pm:1:t:f:x:ttl") is MISSING, timeout=5)

    def test_delete(self, backend: Any) -> None:
        """delete returns whether something was deleted."""
        backend = adapt(backend)
        backend.set("pm:1:t:f:x:d", b"v", ttl=None)
        assert backend.delete("pm:1:t:f:x:d") is True
        assert backend.get("pm:1:t:f:x:d") is MISSING
        assert backend.delete("pm:1:t:f:x:d") is False

    def test_get_many_and_set_many_aligned(self, backend: Any) -> None:
        """get_many returns values aligned with the keys, MISSING where absent."""
        backend = adapt(backend)
        items = [(f"pm:1:t:f:x:m{i}", f"v{i}".encode()) for i in range(50)]
        backend.set_many(items, ttl=None)
        keys = [k for k, _ in items] + ["pm:1:t:f:x:none"]
        got = backend.get_many(keys)
        assert got[:-1] == [v for _, v in items]
        assert got[-1] is MISSING

    def test_get_many_large_batch(self, backend: Any) -> None:
        """A batch larger than any internal chunk (1,200 keys, some absent) stays aligned."""
        backend = adapt(backend)
        items = [(f"pm:1:t:big:x:{i}", str(i).encode()) for i in range(0, 1200, 2)]
        backend.set_many(items, ttl=None)
        keys = [f"pm:1:t:big:x:{i}" for i in range(1200)]
        got = backend.get_many(keys)
        assert got == [str(i).encode() if i % 2 == 0 else MISSING for i in range(1200)]

    def test_clear_prefix_only(self, backend: Any) -> None:
        """clear(prefix) deletes exactly the keys under the prefix, never its neighbours."""
        backend = adapt(backend)
        keys = ["pm:1:tenant:f:1", "pm:1:tenant:f:2", "pm:1:tenantB:f:1", "pm:1:tenan:f:1",
                "pm:1:tenant*:f:1", "pm:1:a[1]:f:1"]
        for k in keys:
            backend.set(k, b"v", ttl=None)
        assert backend.clear("pm:1:tenant:") == 2
        assert backend.get("pm:1:tenant:f:1") is MISSING
        for k in keys[2:]:
            assert backend.get(k) == b"v", k
        assert backend.clear("pm:1:tenant*:") == 1
        assert backend.clear("pm:1:a[1]:") == 1
        assert backend.get("pm:1:tenantB:f:1") == b"v"

    def test_keys_lists_prefix(self, backend: Any) -> None:
        """keys(prefix) lists live keys under the prefix."""
        backend = adapt(backend)
        for i in range(5):
            backend.set(f"pm:1:ls:f:{i}", b"v", ttl=None)
        backend.set("pm:1:other:f:0", b"v", ttl=None)
        assert sorted(backend.keys("pm:1:ls:")) == [f"pm:1:ls:f:{i}" for i in range(5)]

    def test_lock_is_exclusive_and_token_checked(self, backend: Any) -> None:
        """One holder at a time; a stale token neither releases nor renews the lease."""
        backend = adapt(backend)
        a = backend.lock("pm:1:t:f:x:L", ttl=5)
        b = backend.lock("pm:1:t:f:x:L", ttl=5)
        assert a.acquire() is True
        assert b.acquire() is False
        assert b.release() is False  # not the owner: deletes nothing
        assert b.renew() is False
        assert a.renew() is True
        assert a.release() is True
        assert b.acquire() is True
        assert a.release() is False  # a's lease is gone; b's stays intact
        assert backend.lock("pm:1:t:f:x:L", ttl=5).acquire() is False
        assert b.release() is True

    def test_lock_expires(self, backend: Any) -> None:
        """A lease that is not renewed lapses after its TTL (a dead holder never blocks forever)."""
        backend = adapt(backend)
        a = backend.lock("pm:1:t:f:x:E", ttl=0.3)
        assert a.acquire()
        b = backend.lock("pm:1:t:f:x:E", ttl=5)
        assert _wait_until(b.acquire, timeout=5)
        assert b.release()

    def test_lock_does_not_touch_entry(self, backend: Any) -> None:
        """A lock on a key never hides or replaces the key's value."""
        backend = adapt(backend)
        backend.set("pm:1:t:f:x:V", b"value", ttl=None)
        lk = backend.lock("pm:1:t:f:x:V", ttl=5)
        assert lk.acquire()
        assert backend.get("pm:1:t:f:x:V") == b"value"
        lk.release()
        assert backend.get("pm:1:t:f:x:V") == b"value"

    def test_acquire_and_get_then_set_and_release(self, backend: Any) -> None:
        """The miss-path composites: acquire+re-check, then store+release."""
        backend = adapt(backend)
        lk = backend.lock("pm:1:t:f:x:C", ttl=5)
        acquired, value = backend.acquire_and_get(lk, "pm:1:t:f:x:C")
        assert acquired is True and value is MISSING
        other = backend.lock("pm:1:t:f:x:C", ttl=5)
        assert backend.acquire_and_get(other, "pm:1:t:f:x:C") == (False, MISSING)
        backend.set_and_release("pm:1:t:f:x:C", b"done", ttl=None, lock=lk)
        assert backend.get("pm:1:t:f:x:C") == b"done"
        acquired, value = backend.acquire_and_get(other, "pm:1:t:f:x:C")
        assert value == b"done"  # a store may skip taking the lease once the value exists
        assert other.release() is acquired

    def test_async_twins(self, backend: Any) -> None:
        """The async methods see the same data as the sync ones."""
        backend = adapt(backend)

        async def scenario() -> None:
            await backend.aset("pm:1:t:f:x:A", b"async", ttl=None)
            assert backend.get("pm:1:t:f:x:A") == b"async"
            assert await backend.aget("pm:1:t:f:x:A") == b"async"
            assert await backend.aget_many(["pm:1:t:f:x:A", "pm:1:t:f:x:no"]) == [
                b"async", MISSING]
            lk = backend.lock("pm:1:t:f:x:AL", ttl=5)
            acquired, value = await backend.aacquire_and_get(lk, "pm:1:t:f:x:AL")
            assert acquired and value is MISSING
            await backend.aset_and_release("pm:1:t:f:x:AL", b"v", ttl=None, lock=lk)
            assert backend.lock("pm:1:t:f:x:AL", ttl=5).acquire()
            assert await backend.adelete("pm:1:t:f:x:A") is True

        asyncio.run(scenario())


# -- a private redis-server, shared by the test suite and the benchmarks -----------------------
# Every server runs as a child on a free loopback port with persistence off, is controlled by pid
# (SIGSTOP / SIGCONT / SIGKILL), and is killed at exit as a last resort.

_LIVE: set[subprocess.Popen[bytes]] = set()  # every child still running, for the atexit net


@atexit.register
def _kill_leftovers() -> None:
    """Kill any server a crashed or interrupted session left behind."""
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait(5)


def _port_free(port: int) -> bool:
    """Tell whether a loopback TCP port can be bound right now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster_bus: bool = False) -> int:
    """Pick a free loopback port (and port + 10000 too, for a cluster node's bus)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_free(port) and (not cluster_bus or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


def command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one command over a raw socket and return the raw reply (b"" on failure)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload)
            reply = s.recv(65536)
            if reply.startswith(b"$"):  # bulk string: read until its announced length
                size = int(reply[1 : reply.index(b"\r\n")])
                while len(reply) < reply.index(b"\r\n") + 2 + size + 2:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            return reply
    except OSError:
        return b""


class RedisServer:
    """A ``redis-server`` child on a free loopback port, persistence off, controlled by pid."""

    def __init__(self, binary: str, workdir: Path, *extra: str, port: int | None = None,
                 cpus: set[int] | None = None) -> None:
        self.binary = binary
        self.cpus = cpus  # pin the server to these CPUs (benchmarks share one core with it)
        self.workdir = workdir
        self.extra = extra
        self.port = port or free_port(cluster_bus="yes" in extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        workdir.mkdir(parents=True, exist_ok=True)
        self.start()

    def _pin(self) -> None:  # in the child, before exec
        if self.cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self.cpus)

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server (db 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None, "server not running"
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait (bounded) until PING answers."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), *self.extra]  # fmt: skip
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        with log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=self._pin if self.cpus else None)
        _LIVE.add(self.proc)
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                return
            time.sleep(0.02)
        tail = (self.workdir / f"redis-{self.port}.log").read_text(errors="replace")[-2000:]
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Unfreeze the server (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait(10)
            _LIVE.discard(self.proc)
        self.paused = False

    def restart(self) -> None:
        """Kill the server and start a fresh, empty one on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL if it lingers)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.kill()
        with contextlib.suppress(OSError):
            if self.paused:
                self.resume()
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.kill()
