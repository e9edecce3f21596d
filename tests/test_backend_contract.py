"""The backend contract suite, run on every store (memory, disk, redis, cluster)."""

from __future__ import annotations

from persistmemo.testing import BackendContract


class TestEveryBackend(BackendContract):
    """Runs persistmemo.testing.BackendContract with conftest's parametrized ``backend``."""
