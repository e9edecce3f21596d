"""Values bigger than a store accepts: one clear warning, the result returned, store kept."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from persistmemo import Cache, UncacheableResultWarning
from persistmemo.backends.redis import RedisBackend


def test_redis_refuses_values_over_its_limit_without_backoff(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over max_value_size: not stored, one warning, the result returned; small ones stored."""
    monkeypatch.setattr(RedisBackend, "max_value_size", 50_000)
    calls = []
    with Cache(redis_url, namespace="bigvalues") as cache:
        cache.clear()

        @cache.memoize
        def make(n: int) -> Any:
            calls.append(n)
            return np.zeros(n, np.uint8)

        with pytest.warns(UncacheableResultWarning, match="more than this store accepts"):
            assert len(make(100_000)) == 100_000
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            assert len(make(100_000)) == 100_000
            make(1_000)
            make(1_000)
        assert calls == [100_000, 100_000, 1_000]
        assert make.cache_info().hits == 1 and make.cache_info().errors == 0


def test_redis_default_limit_is_the_bulk_string_limit() -> None:
    """The default limit is Redis's 512 MB proto-max-bulk-len."""
    assert RedisBackend.max_value_size == 512 * 1024 * 1024
