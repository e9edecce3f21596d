"""Real ``redis-server`` processes for the tests: one server, a 3-node cluster, fault controls.

Every server runs as a child on a free loopback port with persistence off, is controlled by pid
(SIGSTOP / SIGCONT / SIGKILL) and is killed at teardown, also when a test fails (and at exit as a
last resort). Without ``redis-server`` on PATH the Redis tests skip locally but FAIL under CI.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "fresh_redis",
    "redis_cluster_url",
    "redis_server",
    "redis_url",
    "require_redis_server",
]

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true")
_LIVE: set[subprocess.Popen[bytes]] = set()  # every child still running, for the atexit net


@atexit.register
def _kill_leftovers() -> None:
    """Kill any server a crashed or interrupted session left behind."""
    for proc in list(_LIVE):
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait(5)


def require_redis_server(*tools: str) -> str:
    """Return the redis-server path; skip (locally) or fail (CI) when it is missing."""
    for tool in ("redis-server", *tools):
        if shutil.which(tool) is None:
            msg = f"{tool} not installed: apt-get install redis-server redis-tools"
            if IN_CI:
                pytest.fail(f"{msg} (CI must not skip the Redis tests)", pytrace=False)
            pytest.skip(msg)
    return str(shutil.which("redis-server"))


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
    """A ``redis-server`` child on a loopback port, controlled by pid."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None) -> None:
        self.binary = require_redis_server()
        self.workdir = workdir
        self.extra = extra
        self.port = port or free_port(cluster_bus="yes" in extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        workdir.mkdir(parents=True, exist_ok=True)
        self.start()

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
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
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


class RedisClusterServers:
    """Three cluster-enabled servers joined into one Redis Cluster (no replicas)."""

    def __init__(self, workdir: Path, nodes: int = 3, timeout: float = 20.0) -> None:
        require_redis_server("redis-cli")
        self.nodes: list[RedisServer] = []
        try:
            for i in range(nodes):
                self.nodes.append(
                    RedisServer(
                        workdir / f"node{i}",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(workdir / f"nodes-{i}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    )
                )
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0",
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while not all(
                b"cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in self.nodes
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL of the first node."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A session-wide redis-server; do not pause or kill it (use ``fresh_redis``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session-wide redis-server."""
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a session-wide 3-node Redis Cluster, started only when a test asks for it."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for destructive fault tests, killed at teardown."""
    server = RedisServer(tmp_path / "fresh-redis")
    try:
        yield server
    finally:
        server.kill()
