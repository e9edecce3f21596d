"""The third-party registry: lazy imports, no pickle anywhere, end-to-end on a disk cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _types_helpers import need

from persistmemo import Cache, KeyEncodingError
from persistmemo.keys import canonical_bytes

HEAVY = ("torch", "pandas", "pyarrow", "polars", "scipy")


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter; return its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_persistmemo_imports_no_optional_library() -> None:
    """``import persistmemo`` imports none of torch, pandas, pyarrow, polars, scipy."""
    out = run_python(
        "import sys, persistmemo\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}"
        " or m.startswith('persistmemo._types')))")
    assert out == "[]"


def test_plain_values_never_import_optional_libraries(tmp_path: Path) -> None:
    """Keying and storing builtins and numpy arrays imports no optional library."""
    out = run_python(
        "import sys, numpy as np, persistmemo\n"
        f"c = persistmemo.Cache({str(tmp_path / 'c')!r})\n"
        "f = c.memoize(lambda x, y: (x, y))\n"
        "f(np.arange(3), {'a': (1, 2.5)}); f(np.arange(3), {'a': (1, 2.5)})\n"
        "import dataclasses\n"
        "@dataclasses.dataclass\nclass P:\n    x: int\n"
        "persistmemo.keys.canonical_bytes(P(1))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    assert out == "[]"


def test_registry_module_imports_fast() -> None:
    """The registry itself imports no library: it is a dict of names."""
    out = run_python(
        "import sys, time, persistmemo\nt = time.perf_counter()\nimport persistmemo._types\n"
        "print(time.perf_counter() - t)\n"
        f"assert not [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]")
    assert float(out) < 0.01


def test_user_classes_are_untouched_by_the_registry() -> None:
    """A user class named like a library class (DataFrame, Tensor) is still refused."""

    class DataFrame:
        pass

    class Tensor:
        pass

    for cls in (DataFrame, Tensor):
        with pytest.raises(KeyEncodingError, match=cls.__qualname__):
            canonical_bytes(cls())


def test_register_key_encoder_overrides_the_builtin_rule() -> None:
    """A user-registered encoder wins over the built-in rule for that library type."""
    import persistmemo

    pd = need("pandas")

    class Frame(pd.DataFrame):
        pass

    before = canonical_bytes(Frame({"a": [1]}))
    persistmemo.register_key_encoder(Frame, lambda f: "constant")
    try:
        assert canonical_bytes(Frame({"a": [1]})) != before
        assert canonical_bytes(Frame({"a": [2]})) == canonical_bytes(Frame({"a": [1]}))
    finally:
        from persistmemo._canonical import _encoders

        _encoders.pop(Frame, None)


def test_every_type_on_a_disk_cache_without_pickle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every supported type as argument and result, through a disk cache, never unpickles."""
    import pickle

    torch, pd, pa, pl = need("torch"), need("pandas"), need("pyarrow"), need("polars")
    sp = need("scipy.sparse")

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("pickle.loads / torch.load must not be called")

    for mod, name in [(pickle, "loads"), (pickle, "load"), (torch, "load")]:
        monkeypatch.setattr(mod, name, boom)
    values = [torch.randn(3, dtype=torch.bfloat16), pd.DataFrame({"a": [1, 2]}),
              pd.Series(["x"]), pd.Index([1.5]), pa.table({"a": [1]}), pl.DataFrame({"a": [1]}),
              sp.csr_matrix(np.eye(2)), np.zeros(2, [("a", "i4"), ("b", "f4")])]
    calls = []

    with Cache(tmp_path / "cache") as cache:

        @cache.memoize
        def same(i: int, v: Any) -> Any:
            calls.append(i)
            return v

        for i, v in enumerate(values):
            same(i, v)
        for i, v in enumerate(values):
            got = same(i, v)
            assert type(got) is type(v)
    assert calls == list(range(len(values)))


def test_keys_are_identical_across_processes_and_hash_seeds() -> None:
    """Keys of tensors, modules, frames, tables and sparse matrices do not vary by process."""
    for lib in ("torch", "pandas", "pyarrow", "polars", "scipy"):
        need(lib)
    code = (
        "import numpy as np, torch, pandas as pd, pyarrow as pa, polars as pl\n"
        "import scipy.sparse as sp\n"
        "from blake3 import blake3\n"
        "from persistmemo.keys import canonical_bytes\n"
        "torch.manual_seed(0)\n"
        "values = [torch.arange(6.0).reshape(2, 3), torch.nn.Sequential(torch.nn.Linear(2, 2),"
        " torch.nn.ReLU()), pd.DataFrame({'a': [1, 2], 's': ['x', None], 'c': pd.Categorical("
        "['u', 'v'])}), pa.table({'a': [1, None]}), pl.DataFrame({'a': ['x']}),"
        " sp.csr_matrix(np.eye(3)), {frozenset({1, 2}): pd.Timestamp('2024', tz='UTC')}]\n"
        "print(blake3(b''.join(canonical_bytes(v) for v in values)).hexdigest())\n")
    outs = set()
    for seed in ("1", "2"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        outs.add(proc.stdout.strip())
    assert len(outs) == 1


GOLDEN = {  # blake3(canonical_bytes(value))[:32]: the persisted key format of these types
    "tensor": "dfd7da3f233b5ea9f37233a4281f807c",
    "bf16": "e45c1545f8ad01036f0d9f5f7e5b8eb1",
    "series": "4e2e52b1480cd9cd760d947145a2fd87",
    "table": "53eafafdfb796b44008a6c6f52d92ce2",
    "sparse": "12418fc409106a7bfbb35ae5507af062",
}


def test_golden_keys_of_third_party_types() -> None:
    """The key bytes of fixed tensors, a Series, a Table and a sparse matrix never change."""
    from blake3 import blake3

    torch, pd, pa, sp = need("torch"), need("pandas"), need("pyarrow"), need("scipy.sparse")
    values = {
        "tensor": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "series": pd.Series([1.0, 2.0], name="x"),
        "table": pa.table({"a": pa.array([1, None], pa.int64()), "s": ["p", "q"]}),
        "sparse": sp.csr_matrix(np.eye(2)),
    }
    got = {k: blake3(canonical_bytes(v)).hexdigest()[:32] for k, v in values.items()}
    assert got == GOLDEN
