"""Keys v2 probed as a hostile user: each test pins a wrong result or crash found by probing."""

from __future__ import annotations

import dataclasses
import functools
import operator
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from persistmemo import Cache
from persistmemo.keys import canonical_bytes


def mem() -> Cache:
    return Cache("memory://")


def closure_keys(values: list[Any]) -> list[str]:
    """The key of f(1) for a memoized factory closing over each value."""
    c = mem()

    def factory(v: Any) -> Any:
        @c.memoize
        def f(x: int) -> Any:
            return (v, x)

        return f

    return [factory(v).cache_key(1) for v in values]


@dataclasses.dataclass
class Node:
    left: Any
    right: Any


class Hooked:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __persistmemo_key__(self) -> Any:
        return [self.inner, self.inner]


@pytest.mark.parametrize("build", [lambda n: Node(n, n), Hooked])
def test_shared_tagged_objects_encode_in_linear_time(build: Any) -> None:
    """Dataclasses and hooked objects shared 40 deep encode fast (was 2**n: 33 s at 18)."""
    x: Any = Node(1, 2)
    for _ in range(40):
        x = build(x)
    t = time.perf_counter()
    canonical_bytes(x)
    assert time.perf_counter() - t < 1.0


def test_shared_tagged_objects_same_bytes_as_unshared() -> None:
    """The memo of tagged objects never changes the bytes: shared and rebuilt values agree."""
    leaf = Node(list(range(30)), "x")
    shared = Node(leaf, leaf)
    unshared = Node(Node(list(range(30)), "x"), Node(list(range(30)), "x"))
    assert canonical_bytes(shared) == canonical_bytes(unshared)


@pytest.mark.parametrize(("a", "b"), [
    (np.sum, np.mean),
    (np.add, np.multiply),
    (slice(1, 2), slice(1, 3)),
    (operator.itemgetter(0), operator.itemgetter(1)),
    (operator.attrgetter("real"), operator.attrgetter("imag")),
    (operator.methodcaller("upper"), operator.methodcaller("lower")),
    (functools.lru_cache(abs), functools.lru_cache(round)),
    (random.Random(1), random.Random(2)),
    (np.random.default_rng(1), np.random.default_rng(2)),
    (np.random.RandomState(1), np.random.RandomState(2)),
    (np.poly1d([1, 2]), np.poly1d([1, 3])),
    (np.vectorize(abs), np.vectorize(round)),
])
def test_library_objects_that_behave_differently_get_different_keys(a: Any, b: Any) -> None:
    """A closure over np.sum vs np.mean, two slices, getters, seeds... never shares a key."""
    ka, kb = closure_keys([a, b])
    assert ka != kb


def test_library_callable_global_rebound_in_notebook_misses() -> None:
    """AGG = np.sum then AGG = np.mean (a re-run cell) makes the next call miss."""
    c = mem()
    g: dict[str, Any] = {"__name__": "__main__", "c": c, "np": np}
    exec("AGG = np.sum\n@c.memoize\ndef f(x):\n    return AGG(x)\n", g)  # a notebook cell
    assert g["f"]([1, 2]) == 3
    exec("AGG = np.mean", g)
    assert g["f"]([1, 2]) == 1.5


def test_same_rng_seed_same_key() -> None:
    """Two generators with the same seed (two runs of a script) share a key."""
    ka, kb = closure_keys([np.random.default_rng(7), np.random.default_rng(7)])
    assert ka == kb


def test_masked_fill_value_is_part_of_the_key() -> None:
    """Masked arrays differing only in fill_value (filled() differs) get different keys."""
    a = np.ma.array([1, 2], mask=[0, 1], fill_value=9)
    b = np.ma.array([1, 2], mask=[0, 1], fill_value=7)
    assert a.filled().tolist() != b.filled().tolist()
    assert canonical_bytes(a) != canonical_bytes(b)
    assert canonical_bytes(a) == canonical_bytes(np.ma.array([1, 2], mask=[0, 1], fill_value=9))


def test_dtype_with_out_of_order_fields_is_keyed() -> None:
    """A dtype whose descr raises ValueError (out-of-order offsets) is keyed, not a crash."""
    ab = np.dtype({"names": ["a", "b"], "formats": ["u1", "u1"], "offsets": [0, 1]})
    ba = np.dtype({"names": ["b", "a"], "formats": ["u1", "u1"], "offsets": [1, 0]})
    ov = np.dtype({"names": ["a", "b"], "formats": ["u1", "u2"], "offsets": [0, 0]})
    keys = {canonical_bytes(np.zeros(2, dtype=d)) for d in (ab, ba, ov)}
    assert len(keys) == 3
    assert canonical_bytes(np.zeros(2, dtype=ba)) == canonical_bytes(np.zeros(2, dtype=ba))
    assert canonical_bytes(np.zeros(2, dtype=ba)[0]).startswith(b"g")


class Scaler:
    factor = 3
    registry = object()  # no encoding: recorded by type, not an error

    def apply(self, x: int) -> int:
        return x * self.factor


def test_class_attribute_rebinding_is_noticed() -> None:
    """Scaler.factor = 7 (a notebook cell) changes the key of a function using Scaler."""
    c = mem()

    @c.memoize
    def f(x: int) -> int:
        return Scaler().apply(x)

    assert f(2) == 6
    assert f.dependencies()["Scaler.factor"].kind == "value"
    old = Scaler.factor
    try:
        Scaler.factor = 7
        assert f(2) == 14
    finally:
        Scaler.factor = old
    assert f(2) == 6


@dataclasses.dataclass
class Params:
    scale: int

    def apply_inplace(self, data: list[int]) -> None:
        data[:] = [d * self.scale for d in data]


def test_effect_only_receiver_with_contents_counts() -> None:
    """PARAMS.apply_inplace(data) / rng.shuffle(idx) as statements: their contents count."""
    c = mem()
    g: dict[str, Any] = {"__name__": "__main__", "c": c, "Params": Params, "np": np}
    exec("P = Params(2)\nRNG = np.random.default_rng(1)\n"
         "@c.memoize\ndef f(x):\n    data = [x]\n    P.apply_inplace(data)\n"
         "    idx = list(range(5))\n    RNG.shuffle(idx)\n    return data[0]\n", g)
    assert g["f"](3) == 6
    assert g["f"].dependencies()["P"].kind == "value"
    assert g["f"].dependencies()["RNG"].kind == "value"
    exec("P = Params(5)", g)
    assert g["f"](3) == 15


def test_function_default_argument_is_keyed_by_its_code() -> None:
    """def f(x, fn=helper): no KeyEncodingError; f(1) == f(1, helper); SCALE rebound misses."""
    c = mem()
    g: dict[str, Any] = {"__name__": "__main__", "c": c}
    exec("SCALE = 2\ndef helper(x):\n    return x * SCALE\ndef other(x):\n    return -x\n"
         "@c.memoize\ndef f(x, fn=helper):\n    return fn(x)\n", g)
    f = g["f"]
    assert f(1) == 2
    assert f.cache_key(1) == f.cache_key(1, g["helper"]) != f.cache_key(1, g["other"])
    assert f(1, g["other"]) == -1
    exec("SCALE = 3", g)
    assert f(1) == 3
    assert f.cache_key(1, np.negative) != f.cache_key(1, np.positive)


def test_classmethod_under_memoize_keys_cls_by_its_code() -> None:
    """@classmethod over @memoize: the cls argument is keyed by the class's code."""
    c = mem()

    class Base:
        k = 1

        @classmethod
        @c.memoize
        def make(cls, x: int) -> int:
            return cls.k * x

    class Sub(Base):
        k = 5

    assert Base.make(2) == 2
    assert Sub.make(2) == 10


def test_function_argument_reading_unencodable_global_names_it() -> None:
    """A function argument whose helper reads an unencodable object: a clear error."""
    c = mem()
    g: dict[str, Any] = {"__name__": "__main__", "c": c}
    exec("class U: pass\nOBJ = U()\ndef uses(x):\n    return (OBJ, x)\n"
         "@c.memoize\ndef f(x, fn):\n    return 1\n", g)
    from persistmemo import KeyEncodingError

    with pytest.raises(KeyEncodingError, match="OBJ"):
        g["f"](1, g["uses"])


TRICKY = '''
def deco(*a):
    return lambda f: f


def with_string(x):
    s = """
not indented
"""
    return s + x


class K:
    @staticmethod
    @deco(
  1)
    def m(x): return x

    async def am(self):
        # a comment
        return 1


def one(x): return x


def cont(x):
    return (x +
1)


def outer():
    def inner(y):

        return y
    return inner


@deco(1)
def decorated(x):
    """Doc."""
    return x
'''


def test_single_def_parse_matches_whole_file_parse(tmp_path: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast per-def parse gives exactly the whole-file parse's code text (tricky layouts)."""
    import importlib.util

    from persistmemo import _source

    path = tmp_path / "tricky_mod.py"
    path.write_text(TRICKY)
    spec = importlib.util.spec_from_file_location("tricky_mod", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    objs = [mod.with_string, mod.K.m, mod.K.am, mod.one, mod.cont, mod.outer, mod.outer(),
            mod.decorated]
    fast = [_source.code_text(o) for o in objs]
    monkeypatch.setattr(_source, "_block", lambda code, g: None)
    slow = [_source.code_text(o) for o in objs]
    assert fast == slow
    assert all(t.startswith("ast:") for t in fast)


def test_builtin_bound_method_global_covers_its_owner() -> None:
    """get_rate = RATES.get; sample = rng.normal: the owner's contents join the fingerprint."""
    keys = closure_keys([{"a": 1}.get, {"a": 2}.get, "abc".upper, "xyz".upper,
                         np.random.default_rng(1).normal, np.random.default_rng(2).normal])
    assert len(set(keys)) == 6
    assert closure_keys([[1].append, [1].append])[0] == closure_keys([[1].append])[0]


def test_reloaded_and_autoreloaded_helper_misses(tmp_path: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """importlib.reload of an edited helper module, or an in-place __code__ swap (IPython's
    autoreload), changes the key in the same process (was: the stale result)."""
    import importlib
    import os
    import sys

    path = tmp_path / "reload_helper_mod.py"
    path.write_text("def normalize(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("reload_helper_mod")
    try:
        g: dict[str, Any] = {"__name__": "__main__", "c": mem(), "mod": mod}
        exec("@c.memoize\ndef f(x):\n    return mod.normalize(x)\n", g)  # a notebook cell
        f = g["f"]
        assert f(1) == 2
        path.write_text("def normalize(x):\n    return x * 3 + 0\n")
        os.utime(path, (1, 1))  # a different mtime, even within one clock tick
        importlib.reload(mod)
        assert f(1) == 3
        src = "def normalize(x):\n    return x * 4 + 0 + 0\n"
        path.write_text(src)
        ns: dict[str, Any] = {}
        exec(compile(src, str(path), "exec"), ns)  # what autoreload does
        mod.normalize.__code__ = ns["normalize"].__code__
        assert f(1) == 4
    finally:
        sys.modules.pop("reload_helper_mod", None)


def test_global_instance_covers_its_class_code(tmp_path: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """SCORER = Scorer(2) global (a dataclass), method edited in the file: a new key in a new
    process (was: same key, stale result); a list of enum members covers the enum's code."""
    import subprocess
    import sys

    mod = tmp_path / "scorer_mod.py"
    script = tmp_path / "use_scorer.py"
    body = ("import dataclasses, enum\n@dataclasses.dataclass\nclass Scorer:\n    k: int\n"
            "    def score(self, x):\n        return x * self.k\n"
            "class Mode(enum.Enum):\n    A = 1\n    def f(self):\n        return 1\n")
    mod.write_text(body)
    script.write_text(
        "import sys\nsys.path[:0] = [sys.argv[1], sys.argv[2]]\nfrom persistmemo import Cache\n"
        "from scorer_mod import Scorer, Mode\nSCORER = Scorer(2)\nMODES = [Mode.A]\n"
        "c = Cache('memory://')\n@c.memoize\ndef f(x):\n    return SCORER.score(x)\n"
        "@c.memoize\ndef g(x):\n    return MODES[0].f()\n"
        "print(f.cache_key(1), g.cache_key(1))\n")
    root = str(Path(__file__).resolve().parents[1])

    def keys() -> list[str]:
        out = subprocess.run([sys.executable, str(script), root, str(tmp_path)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        return out.split()

    first = keys()
    assert keys() == first
    mod.write_text(body.replace("x * self.k", "x * self.k + 1"))
    second = keys()
    assert second[0] != first[0] and second[1] == first[1]
    mod.write_text(body.replace("return 1", "return 2"))
    assert keys()[1] != first[1]


def test_memoized_method_covers_its_class() -> None:
    """@memoize on a method: a helper method it calls through self, and class attributes,
    are in the fingerprint (Model.scale rebound -> miss)."""
    c = mem()
    g: dict[str, Any] = {"__name__": "__main__", "c": c, "dataclasses": dataclasses}
    exec("@dataclasses.dataclass(frozen=True)\nclass Model:\n    k: int\n    scale = 2\n"
         "    def _prep(self, x):\n        return x * self.scale\n"
         "    @c.memoize\n    def score(self, x):\n        return self._prep(x) + self.k\n", g)
    m = g["Model"](1)
    assert m.score(2) == 5
    deps = g["Model"].score.dependencies()
    assert "Model._prep" in deps and "Model.scale" in deps
    g["Model"].scale = 3
    assert m.score(2) == 7
