"""Keys: canonical encoding, signature binding, identity, fingerprints, golden vectors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import math
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import uuid
import zoneinfo
from typing import Any, NamedTuple

import numpy as np
import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from persistmemo import KeyEncodingError, register_key_encoder
from persistmemo.errors import ConfigurationError
from persistmemo.keys import KeyBuilder, canonical_bytes, code_fingerprint, function_identity

KEY_RE = re.compile(r"^pm:2:[A-Za-z0-9_.~%-]+:[A-Za-z0-9_.~%-]+:[A-Za-z0-9_.~%-]+:[0-9a-f]{64}$")


def f3(a, b=0, c=None):
    return (a, b, c)


def key_of(func: Any, *args: Any, **kwargs: Any) -> str:
    return KeyBuilder(func)(args, kwargs)


def test_key_format_is_readable_and_fixed() -> None:
    """A key is pm:2:<namespace>:<module.qualname>:<fingerprint>:<64 hex>."""
    k = key_of(f3, 1)
    assert KEY_RE.match(k), k
    assert k.startswith("pm:2:default:test_keys.f3:")
    assert len(k) < 140


def test_binding_makes_equivalent_calls_one_key() -> None:
    """f(1), f(a=1), f(1, 0), f(1, b=0, c=None), f(c=None, a=1) are one call."""
    kb = KeyBuilder(f3)
    keys = {kb((1,), {}), kb((), {"a": 1}), kb((1, 0), {}), kb((1,), {"b": 0, "c": None}),
            kb((), {"c": None, "a": 1}), kb((1, 0, None), {})}
    assert len(keys) == 1


def test_defaults_distinguished_from_explicit_values() -> None:
    """f(1) with default b=0 differs from f(1, None) and f(1, False)."""
    kb = KeyBuilder(f3)
    assert len({kb((1,), {}), kb((1, None), {}), kb((1, False), {}), kb((1, 0.0), {})}) == 4


COLLISION_CORPUS: list[Any] = [
    1, 1.0, True, "1", b"1", bytearray(b"1"), [1], (1,), {1}, frozenset({1}), {1: None},
    0, 0.0, -0.0, False, None, "", b"", (), [], {}, set(), frozenset(),
    ("a_b", "c"), ("a", "b_c"), (1, 23), (12, 3), (123,), [1, 2], (1, 2),
    "é", "e\u0301", 2**64, -(2**64), 2**63, -(2**63) - 1, 1 + 2j, complex(1, 0),
    decimal.Decimal("1.0"), decimal.Decimal("1.00"), fractions.Fraction(1, 2), 0.5,
    dt.date(2024, 1, 1), dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.time(1, 2), dt.timedelta(seconds=1), uuid.UUID(int=1),
    pathlib.PurePosixPath("a/b"), pathlib.PureWindowsPath("a/b"), "a/b",
    float("nan"), float("inf"), float("-inf"), [[1]], [(1,)], ((1,),), {"a": 1}, {"a": "1"},
]


def test_collision_corpus_all_distinct() -> None:
    """Every value of the corpus (1, 1.0, True, "1", b"1", (1,), [1], ...) gets its own key."""
    encs = [canonical_bytes(v) for v in COLLISION_CORPUS]
    assert len(set(encs)) == len(encs)


def test_kwargs_equals_sign_ambiguity() -> None:
    """f(a='b=1') and f(**{'a=b': '1'}) differ."""

    def f(**kw):
        return kw

    assert key_of(f, a="b=1") != key_of(f, **{"a=b": "1"})


def test_dict_and_set_order_never_matters() -> None:
    """Insertion order of dicts and sets does not change the key."""
    d1 = {"x": 1, "y": [1, 2], 3: "z"}
    d2 = {3: "z", "y": [1, 2], "x": 1}
    assert canonical_bytes(d1) == canonical_bytes(d2)
    assert canonical_bytes({"b", "a", "c"}) == canonical_bytes({"c", "b", "a"})
    assert canonical_bytes(frozenset(range(50))) == canonical_bytes(frozenset(reversed(range(50))))


def test_nan_is_canonical() -> None:
    """All NaNs encode alike; -0.0 and 0.0 differ (they can give different results)."""
    assert canonical_bytes(float("nan")) == canonical_bytes(-float("nan"))
    assert canonical_bytes(math.copysign(0.0, -1)) != canonical_bytes(0.0)


def test_numpy_arrays_by_dtype_shape_and_contents() -> None:
    """One differing element, dtype or shape changes the key; a view equals its copy."""
    a = np.arange(2000, dtype=np.float64)
    b = a.copy()
    b[1000] += 1
    assert canonical_bytes(a) != canonical_bytes(b)
    assert canonical_bytes(a) != canonical_bytes(a.astype(np.float32))
    assert canonical_bytes(a) != canonical_bytes(a.reshape(40, 50))
    m = np.arange(100).reshape(10, 10)
    view = m[:, ::2]
    assert not view.flags.c_contiguous
    assert canonical_bytes(view) == canonical_bytes(np.ascontiguousarray(view))
    assert canonical_bytes(m.T) == canonical_bytes(np.ascontiguousarray(m.T))
    big1 = np.zeros(10_000)
    big2 = big1.copy()
    big2[5000] = 1
    assert canonical_bytes(big1) != canonical_bytes(big2)


def test_numpy_scalars_differ_from_python_numbers() -> None:
    """np.float64(1) differs from 1.0, np.int32(1) from np.int64(1)."""
    assert canonical_bytes(np.float64(1.0)) != canonical_bytes(1.0)
    assert canonical_bytes(np.int32(1)) != canonical_bytes(np.int64(1))


def test_object_arrays_refused() -> None:
    """numpy object arrays have no canonical encoding."""
    with pytest.raises(KeyEncodingError):
        canonical_bytes(np.array([object()], dtype=object))


class Plain:
    def __init__(self, x: int) -> None:
        self.x = x


def test_unsupported_type_names_parameter_and_type() -> None:
    """KeyEncodingError (a TypeError) names the parameter, the path inside it and the type."""

    def g(config, n=1):
        return n

    kb = KeyBuilder(g)
    with pytest.raises(KeyEncodingError) as info:
        kb(({"opts": [1, Plain(2)]},), {})
    err = info.value
    assert isinstance(err, TypeError)
    assert "config" in str(err) and "Plain" in str(err)
    assert err.parameter == "config['opts'][1]"
    assert err.type_name.endswith("test_keys.Plain")
    assert "__persistmemo_key__" in str(err) and "ignore=" in str(err)


def test_never_keyed_by_identity() -> None:
    """2,000 short-lived default-repr objects are refused, never keyed by id()."""
    kb = KeyBuilder(lambda o: o)
    for i in range(2000):
        with pytest.raises(KeyEncodingError):
            kb((Plain(i),), {})


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Pair(NamedTuple):
    a: int
    b: int


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Hooked:
    def __init__(self, state: int, noise: int) -> None:
        self.state, self.noise = state, noise

    def __persistmemo_key__(self) -> Any:
        return self.state


def test_dataclass_namedtuple_enum_and_hook() -> None:
    """Dataclasses, NamedTuples, Enums and __persistmemo_key__ objects are keyed by state."""
    assert canonical_bytes(Point(1, 2)) == canonical_bytes(Point(1, 2))
    assert canonical_bytes(Point(1, 2)) != canonical_bytes(Point(2, 1))
    assert canonical_bytes(Point(1, 2)) != canonical_bytes((1, 2))
    assert canonical_bytes(Pair(1, 2)) != canonical_bytes((1, 2))
    assert canonical_bytes(Color.RED) != canonical_bytes(1)
    assert canonical_bytes(Color.RED) != canonical_bytes(Color.BLUE)
    assert canonical_bytes(Hooked(1, 5)) == canonical_bytes(Hooked(1, 9))
    assert canonical_bytes(Hooked(1, 5)) != canonical_bytes(Hooked(2, 5))


def test_register_key_encoder() -> None:
    """A registered encoder makes a foreign type keyable."""

    class Vec:
        def __init__(self, *xs: float) -> None:
            self.xs = xs

    with pytest.raises(KeyEncodingError):
        canonical_bytes(Vec(1.0))
    register_key_encoder(Vec, lambda v: v.xs)
    assert canonical_bytes(Vec(1.0, 2.0)) != canonical_bytes(Vec(2.0, 1.0))


def test_self_referencing_list_is_refused_not_recursion_error() -> None:
    """A list that contains itself raises KeyEncodingError, not RecursionError."""
    x: list[Any] = []
    x.append(x)
    with pytest.raises(KeyEncodingError, match="contains itself"):
        canonical_bytes(x)


def test_ignore_drops_parameters_and_rejects_typos() -> None:
    """ignore= leaves names out of the key; an unknown name is a ConfigurationError."""

    def h(x, verbose=False):
        return x

    kb = KeyBuilder(h, ignore=["verbose"])
    assert kb((1,), {"verbose": True}) == kb((1,), {})
    with pytest.raises(ConfigurationError, match="verbos"):
        KeyBuilder(h, ignore=["verbos"])


def test_varargs_and_kwargs() -> None:
    """*args and **kwargs are part of the key; kwargs order does not matter."""

    def v(a, *rest, **kw):
        return a

    kb = KeyBuilder(v)
    assert kb((1, 2, 3), {}) != kb((1, 2), {})
    assert kb((1,), {"x": 1, "y": 2}) == kb((1,), {"y": 2, "x": 1})
    assert kb((1, 2), {}) != kb((1,), {"rest": 2})


def test_namespace_and_version_in_key() -> None:
    """Namespace and version change the key; version pins the fingerprint."""
    a = KeyBuilder(f3)((1,), {})
    assert KeyBuilder(f3, namespace="other")((1,), {}) != a
    v1 = KeyBuilder(f3, version=1)((1,), {})
    v2 = KeyBuilder(f3, version=2)((1,), {})
    assert len({a, v1, v2}) == 3
    assert ":v-1:" in v1


def test_same_named_functions_in_two_modules() -> None:
    """mod_a.compute and mod_b.compute never share keys."""
    from keymods import mod_a, mod_b

    assert key_of(mod_a.compute, 1) != key_of(mod_b.compute, 1)
    assert function_identity(mod_a.compute) == "keymods.mod_a.compute"


def _fp(src: str) -> str:
    ns: dict[str, Any] = {}
    path = pathlib.Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"fp_{abs(hash(src))}.py"
    path.write_text(textwrap.dedent(src))
    code = compile(path.read_text(), str(path), "exec")
    exec(code, ns)
    return code_fingerprint(ns["f"])


def test_fingerprint_ignores_comments_docstrings_formatting() -> None:
    """Comments, docstrings, blank lines and spacing keep the fingerprint; code edits change it."""
    base = _fp("def f(x):\n    return x + 1\n")
    same = _fp('def f( x ):\n    """Doc."""\n    # a comment\n\n    return (x+1)  # trailing\n')
    changed = _fp("def f(x):\n    return x + 2\n")
    assert base == same
    assert base != changed


def test_fingerprint_ignores_decorator_arguments() -> None:
    """Changing @memoize(ttl=...) does not invalidate entries."""
    a = _fp("import functools\n@functools.lru_cache(maxsize=1)\ndef f(x):\n    return x\n")
    b = _fp("import functools\n@functools.lru_cache(maxsize=2)\ndef f(x):\n    return x\n")
    assert a == b


def golden_builder() -> KeyBuilder:
    def golden(x):
        return x

    return KeyBuilder(golden, version="golden")


GOLDEN_VALUES: list[tuple[Any, str]] = [  # (value, note)
    (1, ""),
    ("1", ""),
    (1.0, ""),
    (True, ""),
    (None, ""),
    ((1, "a", b"b", [2.5]), ""),
    ({"b": 1, "a": {2, 3}}, ""),
    (2**100, ""),
    (dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc), ""),
    (decimal.Decimal("3.14"), ""),
    (np.arange(6, dtype="<i8").reshape(2, 3), ""),
]


def test_golden_canonical_bytes() -> None:
    """The canonical encoding of simple values is pinned byte for byte (persisted format)."""
    assert canonical_bytes(1) == b"i" + (1).to_bytes(8, "big")
    assert canonical_bytes("ab") == b"s" + (2).to_bytes(8, "big") + b"ab"
    assert canonical_bytes((None, True)) == b"(" + (2).to_bytes(8, "big") + b"NT"
    assert canonical_bytes(1.5) == b"f" + bytes.fromhex("3ff8000000000000")


@pytest.mark.parametrize("index", range(len(GOLDEN_VALUES)))
def test_golden_keys(index: int) -> None:
    """Keys of fixed calls are pinned: a change here orphans every stored entry."""
    value, _ = GOLDEN_VALUES[index]
    key = golden_builder()((value,), {})
    assert key.startswith("pm:2:default:test_keys.golden_builder.%3Clocals%3E.golden:v-golden:")
    assert key.rsplit(":", 1)[1] == GOLDEN_DIGESTS[index]


GOLDEN_DIGESTS = [
    "93f252d68dd7728585752e70703b7f36929bc41a14b01d129a18a6934fb60d09",
    "961e668b85e53e922357b40eaa9f6e9e7b956ca58e9a9e62dda1d75646fb5aab",
    "fff3a2da1771559fc87831ab6185a7f22ab92825f6fa6a317206da443b9bdff6",
    "9d2daf332f9c9e620c9a351568a2ee722c1bc8750e2e1421b89b528a40f45dd7",
    "d73f96177e3866aed10ef640758170281a82165f86d708b272d2b1c03964f4f7",
    "e12427860600db69e7207c922a512be53e999a877b876e1c57d52152a9071d5c",
    "57c2a7da318766f950c1331621fa40b4021e14668a883a941b99807de9205afb",
    "dcaa63d3f9e0c0dad585ef7e0dac8d1e4bcff9f1b335e6ed9ab91332d5dfecdb",
    "883db2d1b2741ee09c3145dfa2e77b32d5a470c66babded83ebfd637293daf56",
    "f5626dee797d8be7c2c15768ea00fee9f4e510f7bf19916ab0948e7669874767",
    "30b4c5bef6baf2ddcc6d819655bfc059e0b06c72bc4b418fd5591aab275d048d",
]

# -- hypothesis -------------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.binary(max_size=8) | st.complex_numbers()
    | st.decimals(allow_nan=False) | st.fractions() | st.uuids()
    | st.datetimes() | st.dates() | st.timedeltas()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.frozensets(st.integers() | st.text(max_size=4), max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4),
    max_leaves=12,
)


def _same_value(a: Any, b: Any) -> bool:
    """Strict equality: same types all the way down (NaN equal to NaN, -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a != a and b != b) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return _same_value(a.real, b.real) and _same_value(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return canonical_bytes(a) == canonical_bytes(b) if a.keys() == b.keys() else False
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_injective_distinct_values_distinct_encodings(a: Any, b: Any) -> None:
    """Different values (by type and value) never share an encoding; equal ones always do."""
    ea, eb = canonical_bytes(a), canonical_bytes(b)
    if _same_value(a, b):
        assert ea == eb
    else:
        assert ea != eb


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=8), st.randoms())
def test_dict_order_property(d: dict[str, int], rnd: Any) -> None:
    """Any permutation of a dict's insertion order gives the same encoding."""
    items = list(d.items())
    rnd.shuffle(items)
    assert canonical_bytes(dict(items)) == canonical_bytes(d)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=4))
def test_concatenation_is_unambiguous(parts: list[Any]) -> None:
    """The encoding of a tuple is its parts, self-delimiting (a long one: their digest)."""
    full = b"(" + len(parts).to_bytes(8, "big") + b"".join(canonical_bytes(p) for p in parts)
    expected = full if len(full) <= 64 or not parts else b"H" + blake3(full).digest()
    assert canonical_bytes(tuple(parts)) == expected


STABILITY_SCRIPT = """
import datetime, decimal, sys, zoneinfo
import numpy as np
sys.path.insert(0, {tests!r})
from persistmemo.keys import KeyBuilder
from keymods.mod_a import compute
kb = KeyBuilder(compute)
vals = [frozenset({{'a', 'b', 'c', 1, 2.5}}), {{'x', 'y', 'z'}}, {{'b': 1, 'a': 2}},
        [({{'k': frozenset({{1, 2}})}}, (1.5, None))], np.arange(12.0).reshape(3, 4),
        decimal.Decimal('1.10'),
        datetime.datetime(2024, 3, 1, 8, tzinfo=zoneinfo.ZoneInfo('America/New_York'))]
print('|'.join(kb((v,), {{}}) for v in vals))
"""


def test_keys_stable_across_processes_and_hash_seeds() -> None:
    """Ten processes with PYTHONHASHSEED=0..9 compute identical keys for sets and dicts."""
    tests = os.path.dirname(__file__)
    script = STABILITY_SCRIPT.format(tests=tests)
    outs = set()
    for seed in range(10):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=60, check=True)
        outs.add(res.stdout.strip())
    assert len(outs) == 1
    assert outs.pop().count("pm:2:") == 7


GOLDEN_FINGERPRINT = "8a7a2e06750d769ed8d515965ca6cd6fecb15e6c303e071d992a25ca3adfda43"
GOLDEN_MANIFEST = {
    "golden": ("code", "623057ee529060e3cc02df7109d58ee7"),
    "RATE": ("value", "af3cbd8f8960312e16b5ed0c51875c73"),
    "helper": ("code", "3b558bfd01a097ab64d4e0ce6a0bce9d"),
}


def test_golden_fingerprint() -> None:
    """The fingerprint of a fixed function (helper + constant) and its key are pinned, and
    the fingerprint is the documented digest of its manifest (docs/format.md)."""
    from keymods.golden_fp import golden

    from persistmemo._canonical import _text
    from persistmemo._source import code_text

    kb = KeyBuilder(golden)
    assert kb((1,), {}) == ("pm:2:default:keymods.golden_fp.golden:8a7a2e06750d769e:"
                            "46cbd1608b2383d211f655e29b87d67eea775a387265fe0343bbb9011aa5ddfe")
    manifest = {k: tuple(v) for k, v in kb.dependencies().items()}
    assert manifest == GOLDEN_MANIFEST
    h = blake3(b"pm-fingerprint-2\0")
    for name in sorted(manifest):
        kind, digest = manifest[name]
        h.update(_text(name) + _text(kind) + _text(digest))
    assert h.hexdigest() == GOLDEN_FINGERPRINT
    assert blake3(code_text(golden).encode()).hexdigest()[:32] == GOLDEN_MANIFEST["golden"][1]
    assert blake3(canonical_bytes(0.5)).hexdigest()[:32] == GOLDEN_MANIFEST["RATE"][1]
    assert code_text(golden).startswith("ast:(FunctionDef,name='golden',args=(arguments,")
    assert "docstring" not in code_text(golden)


GOLDEN_V2 = [  # (name, expression, BLAKE3 of its canonical bytes): the encodings new in v2
    ("nested_shared", "[[list(range(20))] * 2] * 2",
     "36febef0bc829e846ae20aa5e8f0beaa07ca05d86ec795e02a847b0335777c82"),
    ("datetime64", "np.array(['2024-01-01', '2024-06-30'], dtype='datetime64[D]')",
     "7bd717b53addffd8820408348f0c2dbc8522fcad36278bdde2373ec09b744f08"),
    ("aligned_struct", "np.zeros(2, np.dtype([('a', 'u1'), ('b', '<f8')], align=True))",
     "be3a5ec0f9054548b3a57da8460cab6d0f20342973cfac3893bd9396859c7d03"),
    ("masked", "np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])",
     "52598a4be566a71df495d741859cc6387bef746c1ed77181dbb6f4e9b58a95dc"),
    ("tz_micro", "dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, "
     "microseconds=7), 'X'))",
     "a4f923c6c2850a8c6f1ec7760bfcd8cd823490d2b9263144d723c9d9ec06c248"),
]


@pytest.mark.parametrize(("name", "expr", "digest"), GOLDEN_V2)
def test_golden_v2_encodings(name: str, expr: str, digest: str) -> None:
    """The v2 encodings (H digests of long parts, numpy masks, exact tz) are pinned."""
    value = eval(expr, {"np": np, "dt": dt})  # fixed test expressions
    assert blake3(canonical_bytes(value)).hexdigest() == digest, name


XVERSION_CODE = {  # sha256 of code_text: identical on CPython 3.10, 3.11, 3.12 and 3.13
    "wrapper": "42e2381bdf97efe3", "top": "6279593af836a5b7", "helper": "63771adebbd564d2",
    "Model": "a7b57fe5ff138039", "Model.run": "c92c016f93b0dd55", "deco": "f99ccf811757147d",
}
XVERSION_FINGERPRINT = "97453577a171ccf325459c51b3d7cf88570737ce12920102d4411623e6e901a3"


def test_fingerprint_identical_across_python_versions() -> None:
    """Code texts (AST: f-strings, match, walrus, lambdas, set literals, async, classes) and
    the fingerprint of a decorated function are pinned; they were checked equal on 3.10-3.13."""
    import hashlib

    from keymods import xversion as s

    from persistmemo._fingerprint import Fingerprint
    from persistmemo._source import code_text

    objs = {"wrapper": s.top, "top": s.top.__wrapped__, "helper": s.helper, "Model": s.Model,
            "Model.run": s.Model.run, "deco": s.deco}
    got = {k: hashlib.sha256(code_text(o).encode()).hexdigest()[:16] for k, o in objs.items()}
    assert got == XVERSION_CODE
    assert Fingerprint(s.top).digest == XVERSION_FINGERPRINT
