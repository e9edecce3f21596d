"""Real ``redis-server`` processes for the tests: one server, a 3-node cluster, fault controls.

Every server runs as a child on a free loopback port with persistence off, is controlled by pid
(SIGSTOP / SIGCONT / SIGKILL) and is killed at teardown, also when a test fails (and at exit as a
last resort). Without ``redis-server`` on PATH the Redis tests skip locally but FAIL under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from persistmemo.testing import RedisServer as _RedisServer
from persistmemo.testing import command, free_port

__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "command",
    "free_port",
    "fresh_redis",
    "redis_cluster_url",
    "redis_server",
    "redis_url",
    "require_redis_server",
]

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true")
def require_redis_server(*tools: str) -> str:
    """Return the redis-server path; skip (locally) or fail (CI) when it is missing."""
    for tool in ("redis-server", *tools):
        if shutil.which(tool) is None:
            msg = f"{tool} not installed: apt-get install redis-server redis-tools"
            if IN_CI:
                pytest.fail(f"{msg} (CI must not skip the Redis tests)", pytrace=False)
            pytest.skip(msg)
    return str(shutil.which("redis-server"))


class RedisServer(_RedisServer):
    """A ``redis-server`` child for the tests (skips locally / fails in CI without one)."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None) -> None:
        super().__init__(require_redis_server(), workdir, *extra, port=port)


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
