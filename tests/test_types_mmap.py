"""mmap=True: big numpy results are read-only views of the stored file, still verified."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persistmemo import Cache


def value_files(directory: Path) -> list[Path]:
    """diskcache's value files (entries of 32 KiB and more)."""
    return sorted(directory.rglob("*.val"))


def test_hits_are_read_only_views_of_the_file(tmp_path: Path) -> None:
    """A big array comes back equal, read-only, without copying; small values are normal."""
    with Cache(tmp_path / "c") as cache:

        @cache.memoize(mmap=True)
        def make(n: int) -> Any:
            return {"a": np.arange(n, dtype=np.float32).reshape(-1, 4), "tag": ("t", n)}

        first = make(100_000)
        assert first["a"].flags.writeable  # the computed value is the user's own
        hit = make(100_000)
        assert hit["tag"] == ("t", 100_000)
        assert np.array_equal(hit["a"], first["a"]) and hit["a"].dtype == np.float32
        assert not hit["a"].flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            hit["a"][0, 0] = 1
        assert make.cache_info().hits == 1


def test_corrupt_file_is_a_miss_and_recomputed(tmp_path: Path) -> None:
    """A flipped byte in the stored file is detected: the call recomputes, never wrong data."""
    import persistmemo._mmap as pm_mmap

    calls = []
    with Cache(tmp_path / "c", mmap=True) as cache:

        @cache.memoize
        def make(n: int) -> Any:
            calls.append(n)
            return np.full(n, 7, dtype=np.int64)

        make(10_000)
        (path,) = value_files(tmp_path / "c")
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        pm_mmap._verified.clear()
        again = make(10_000)  # logged as a decode failure, recomputed, stored again
        assert (again == 7).all() and calls == [10_000, 10_000]
        assert make.cache_info().decode_failures == 1


def test_other_processes_map_the_same_file(tmp_path: Path) -> None:
    """Another process gets the stored array as a read-only mapped view (no recompute)."""
    code = (
        "import sys, numpy as np, persistmemo\n"
        f"c = persistmemo.Cache({str(tmp_path / 'c')!r}, mmap=True)\n"
        "@c.memoize(version=1)\n"
        "def make(n):\n"
        "    print('computed')\n"
        "    return np.ones(n)\n"
        "a = make(50_000)\n"
        "print(a.flags.writeable, float(a.sum()), make.cache_info().hits)\n")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True).stdout.split() for _ in range(2)]
    assert outs[0] == ["computed", "True", "50000.0", "0"]
    assert outs[1] == ["False", "50000.0", "1"]


def test_mmap_is_ignored_on_other_stores_and_with_compression(tmp_path: Path) -> None:
    """On memory:// and for compressed entries, results are ordinary writable arrays."""
    with Cache("memory://", mmap=True) as cache:
        f = cache.memoize(lambda n: np.zeros(n))
        f(10_000)
        assert f(10_000).flags.writeable and f.cache_info().hits == 1
    pytest.importorskip("zstandard")
    with Cache(tmp_path / "z", mmap=True, compress="zstd") as cache:
        g = cache.memoize(lambda n: np.zeros(n))
        g(100_000)
        hit = g(100_000)
        assert hit.flags.writeable and not hit.any() and g.cache_info().hits == 1


def test_tensor_hits_are_zero_copy_and_writes_stay_private(tmp_path: Path) -> None:
    """A tensor hit maps the file copy-on-write: in-place ops never reach the stored entry."""
    torch = pytest.importorskip("torch")
    with Cache(tmp_path / "c", mmap=True) as cache:

        @cache.memoize
        def make(n: int) -> Any:
            return torch.arange(n, dtype=torch.bfloat16)

        make(50_000)
        hit = make(50_000)
        assert hit.dtype == torch.bfloat16 and torch.equal(hit, make.__wrapped__(50_000))
        hit.add_(1)  # a private copy of the touched pages
        again = make(50_000)
        assert torch.equal(again, make.__wrapped__(50_000)) and make.cache_info().hits == 2
