"""The backend contract suite, run on every store (memory, disk, redis, cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _duck import DuckStore

from persistmemo.testing import BackendContract


class TestEveryBackend(BackendContract):
    """Runs persistmemo.testing.BackendContract with conftest's parametrized ``backend``."""


class TestDuckTypedBackend(BackendContract):
    """The contract suite passes for a store with only the seven primitives (no base class)."""

    @pytest.fixture
    def backend(self) -> Iterator[DuckStore]:
        """A fresh duck-typed store."""
        store = DuckStore()
        yield store
        store.close()
