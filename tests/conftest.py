"""Shared fixtures: one backend-parametrized fixture runs the contract suite on every store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Real redis-server / Redis Cluster processes on free loopback ports (see _redis_fixtures.py).
from _redis_fixtures import (  # noqa: F401  (re-exported fixtures)
    fresh_redis,
    redis_cluster_url,
    redis_server,
    redis_url,
)

from persistmemo.backends.base import BaseBackend

BACKENDS = ["memory", "disk", "redis", "cluster"]


@pytest.fixture(autouse=True)
def _isolated_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every test away from the user's real cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PERSISTMEMO_URL", raising=False)
    # The repository's own [tool.persistmemo] (for the examples) must not reach the tests.
    monkeypatch.setenv("PERSISTMEMO_CONFIG", "none")
    for var in ("NAMESPACE", "TTL", "DISABLE", "LOCAL"):
        monkeypatch.delenv("PERSISTMEMO_" + var, raising=False)
    yield
    from persistmemo._cache import set_default_cache

    set_default_cache(None)


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> BaseBackend:
    """Build a fresh, empty backend of the given kind."""
    if kind == "memory":
        from persistmemo.backends.memory import MemoryBackend

        return MemoryBackend()
    if kind == "disk":
        from persistmemo.backends.disk import DiskBackend

        return DiskBackend(tmp_path / "disk-cache")
    if kind == "redis":
        from persistmemo.backends.redis import RedisBackend

        url = request.getfixturevalue("redis_url")
        return RedisBackend(url)
    if kind == "cluster":
        from persistmemo.backends.redis import RedisBackend

        url = request.getfixturevalue("redis_cluster_url")
        return RedisBackend(url)
    raise AssertionError(kind)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return str(request.param)


@pytest.fixture
def backend(
    backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[BaseBackend]:
    """A fresh backend of every kind (memory, disk, redis, cluster)."""
    b = make_backend(backend_kind, request, tmp_path)
    if backend_kind in ("redis", "cluster"):
        # Each test starts from an empty server: delete what earlier tests left.
        b.clear("")
    yield b
    b.close()


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def empty_cache(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Yield a persistmemo.Cache on a fresh, empty backend of the given kind."""
    from persistmemo import Cache

    backend = make_backend(kind, request, tmp_path)
    backend.clear("")
    c = Cache(backend)
    yield c
    c.close()
