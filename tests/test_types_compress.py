"""compress="zstd": big payloads stored compressed, read back by any reader, exact values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _types_helpers import need

from persistmemo import Cache, ConfigurationError
from persistmemo.codec import Codec


def stored_size(cache: Cache, func: Any, *args: Any) -> int:
    """Bytes of the stored entry of ``func(*args)``."""
    raw = cache.backend.get(func.cache_key(*args))
    assert isinstance(raw, bytes)
    return len(raw)


def test_compressible_results_are_stored_smaller_and_round_trip(tmp_path: Path) -> None:
    """A compressible array is stored compressed and comes back equal, dtype and all."""
    need("zstandard")
    with Cache(tmp_path / "c", compress="zstd") as cache:

        @cache.memoize
        def ramp(n: int) -> Any:
            return {"x": np.arange(n, dtype=np.int64) % 10, "name": "ramp"}

        first = ramp(200_000)
        assert stored_size(cache, ramp, 200_000) < 200_000 * 8 // 4
        second = ramp(200_000)
        assert second["name"] == "ramp" and second["x"].dtype == np.int64
        assert np.array_equal(first["x"], second["x"]) and ramp.cache_info().hits == 1


def test_threshold_level_and_incompressible_data(tmp_path: Path) -> None:
    """Small payloads and random data are stored plain; the level option is honoured."""
    need("zstandard")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 400_000, dtype=np.uint8)  # incompressible
    with Cache(tmp_path / "c", compress="zstd:19", compress_threshold=1 << 20) as cache:

        @cache.memoize
        def make(kind: str) -> Any:
            return noise if kind == "noise" else np.zeros(100_000, np.float32)

        make("zeros")  # 400 KB < 1 MiB threshold: plain
        assert stored_size(cache, make, "zeros") > 400_000
    with Cache(tmp_path / "d", compress="zstd") as cache:

        @cache.memoize
        def make2(kind: str) -> Any:
            return noise

        make2("noise")  # random bytes do not compress: stored plain
        assert stored_size(cache, make2, "noise") > 400_000
        assert np.array_equal(make2("noise"), noise)


def test_readers_without_the_option_decode_compressed_entries(tmp_path: Path) -> None:
    """Compression is visible in the payload only: a reader without compress= decodes it."""
    need("zstandard")
    from persistmemo._compress import parse_compress

    value = {"a": np.zeros(100_000), "t": (1, "x")}
    blob = Codec(compress=parse_compress("zstd")).encode(value, key="k", created=0,
                                                            duration=0)
    assert len(blob) < 50_000
    back = Codec().decode(blob, key="k").value
    assert back["t"] == (1, "x") and np.array_equal(back["a"], value["a"])


def test_frames_and_tensors_compress(tmp_path: Path) -> None:
    """Third-party carriers (DataFrame via Arrow IPC) are compressed like any payload."""
    need("zstandard")
    pd = need("pandas")
    need("pyarrow")
    df = pd.DataFrame({"k": np.arange(100_000) % 3, "s": ["abc"] * 100_000})
    with Cache(tmp_path / "c") as cache:

        @cache.memoize(compress="zstd")
        def frame(n: int) -> Any:
            return df

        @cache.memoize
        def plain(n: int) -> Any:
            return df

        pd.testing.assert_frame_equal(frame(1), df)
        plain(1)
        assert stored_size(cache, frame, 1) * 4 < stored_size(cache, plain, 1)
        pd.testing.assert_frame_equal(frame(1), df, check_exact=True)


@pytest.mark.parametrize("bad", ["gzip", "zstd:x", "zstd:99", 3])
def test_bad_compress_options_raise(bad: Any) -> None:
    """An unknown algorithm or level is a ConfigurationError at construction."""
    with pytest.raises(ConfigurationError, match="compress"):
        Cache("memory://", compress=bad)
    with pytest.raises(ConfigurationError, match="compress"):
        Cache("memory://").memoize(compress=bad)(lambda: 1)


def test_function_can_turn_the_caches_compression_off(tmp_path: Path) -> None:
    """memoize(compress=False) stores plain entries in a compressing cache."""
    need("zstandard")
    with Cache(tmp_path / "c", compress="zstd") as cache:

        @cache.memoize(compress=False)
        def zeros(n: int) -> Any:
            return np.zeros(n)

        zeros(100_000)
        assert stored_size(cache, zeros, 100_000) > 800_000
        assert not zeros(100_000).any()
