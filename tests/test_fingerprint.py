"""The dependency-aware code fingerprint (in one process): what it covers and what it ignores."""

from __future__ import annotations

import functools
import logging
import sys
import types
from typing import Any

import numpy as np
import pytest
from keymods import fp_helpers, fp_other

import persistmemo
from persistmemo import Cache, KeyEncodingError
from persistmemo.errors import ConfigurationError
from persistmemo.keys import code_fingerprint

SCALE = 2
RATES = (0.1, 0.2)
log = logging.getLogger("test-fingerprint")


def mem() -> Cache:
    return Cache("memory://")


def uses_globals(x: float) -> float:
    log.debug("computing")
    return fp_helpers.normalize(x) * SCALE + np.sum(RATES)


def test_dependencies_lists_code_values_and_libraries() -> None:
    """f.dependencies() names helpers, constants and library objects with their kinds."""
    f = mem().memoize(uses_globals)
    deps = f.dependencies()
    assert deps["fp_helpers.normalize"].kind == "code"
    assert deps["keymods.fp_helpers.EPS"].kind == "value"
    assert deps["SCALE"].kind == "value" and deps["RATES"].kind == "value"
    assert deps["log"].kind == "library" and deps["np"].kind == "library"
    assert deps["uses_globals"].kind == "code"
    assert all(len(d.digest) >= 16 and isinstance(d, persistmemo.Dependency) for d in deps.values())
    assert f(1.0) == f(1.0) and f.cache_info().hits == 1


def test_rebinding_a_global_is_noticed_on_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-running `SCALE = 3` makes the next call miss; restoring it hits the old entry."""
    c = mem()
    f = c.memoize(uses_globals)
    first = f(1.0)
    key = f.cache_key(1.0)
    monkeypatch.setitem(globals(), "SCALE", 3)
    assert f(1.0) != first
    assert f.cache_key(1.0) != key
    assert f.dependencies()["SCALE"] != mem().memoize(uses_globals).dependencies()["RATES"]
    monkeypatch.setitem(globals(), "SCALE", 2)
    assert f.cache_key(1.0) == key
    assert f(1.0) == first and f.cache_info().hits == 1


def test_helper_in_other_module_rebound_changes_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing helpers.normalize (an attribute chain on a user module) changes the key."""
    f = mem().memoize(uses_globals)
    key = f.cache_key(1.0)

    def normalize(x: float) -> float:
        return x

    monkeypatch.setattr(fp_helpers, "normalize", normalize)
    assert f.cache_key(1.0) != key
    monkeypatch.setattr(fp_helpers, "EPS", 1e-3)
    assert "keymods.fp_helpers.EPS" not in f.dependencies()  # the new normalize reads no EPS


def test_transitive_dependencies_across_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """A constant read by a helper of a helper (another module) is covered."""

    def g(x: float) -> float:
        return fp_other.shift(x)

    f = mem().memoize(g)
    key = f.cache_key(1.0)
    deps = f.dependencies()
    assert {"fp_other.shift", "keymods.fp_other.OFFSET", "keymods.fp_other.fp_helpers.normalize",
            "keymods.fp_helpers.EPS"} <= set(deps)
    monkeypatch.setattr(fp_helpers, "EPS", 1e-3)
    assert f.cache_key(1.0) != key


def test_mutual_recursion_is_cycle_safe() -> None:
    """ping/pong calling each other resolve once each."""

    def g(n: int) -> int:
        return fp_helpers.ping(n)

    deps = mem().memoize(g).dependencies()
    assert deps["fp_helpers.ping"].kind == "code"
    assert deps["keymods.fp_helpers.pong"].kind == "code"


def test_user_class_dependency_covers_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user class read as a global is covered by its code and its methods' dependencies."""

    def g(x: float) -> float:
        return fp_helpers.Scaler().apply(x)

    f = mem().memoize(g)
    deps = f.dependencies()
    assert deps["fp_helpers.Scaler"].kind == "code"
    key = f.cache_key(1.0)
    monkeypatch.setattr(fp_helpers, "EPS", 0.5)  # read by Scaler.apply through normalize
    assert f.cache_key(1.0) != key


def test_helper_defaults_are_covered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper's default values are part of the fingerprint."""

    def g(x: float) -> float:
        return fp_helpers.scale(x)

    f = mem().memoize(g)
    key = f.cache_key(1.0)
    monkeypatch.setattr(fp_helpers.scale, "__defaults__", (5,))
    monkeypatch.setattr(fp_helpers, "scale", types.FunctionType(
        fp_helpers.scale.__code__, fp_helpers.scale.__globals__, "scale", (5,)))
    assert f.cache_key(1.0) != key


# -- decorators and closures -----------------------------------------------------------------


def twice(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any) -> Any:
        return fn(fn(*a))

    return wrapper


def thrice(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any) -> Any:
        return fn(fn(fn(*a)))

    return wrapper


def test_swapping_decorator_under_memoize_changes_key() -> None:
    """@twice -> @thrice under @memoize gives a new key (and the right result)."""
    c = mem()

    def inc(x: int) -> int:
        return x + 1

    a, b = c.memoize(twice(inc)), c.memoize(thrice(inc))
    assert (a(1), b(1)) == (3, 4)
    assert a.cache_key(1) != b.cache_key(1)


def test_wraps_decorator_does_not_hide_closure() -> None:
    """A functools.wraps layer under @memoize keeps the factory's closure in the key."""
    c = mem()

    def make(k: int) -> Any:
        @c.memoize
        @twice
        def add(x: int) -> int:
            return x + k

        return add

    assert make(1)(0) == 2 and make(5)(0) == 10


def test_memoized_callee_counts_by_wrapped_function() -> None:
    """A memoized helper is a dependency through its function; persistmemo objects never are."""
    c = mem()

    @c.memoize
    def inner(x: int) -> int:
        return x * 2

    cache_obj = c

    @c.memoize
    def outer(x: int) -> int:
        cache_obj.info()
        return inner(x) + 1

    deps = outer.dependencies()
    assert deps["inner"].kind == "code"
    assert deps["inner"] == inner.dependencies()["test_memoized_callee_counts_by_wrapped_function"
                                                  ".<locals>.inner"]
    assert "cache_obj" not in deps
    assert outer(2) == 5 and outer(2) == 5


def test_recursive_memoized_function() -> None:
    """A memoized function calling itself resolves (cycle) and memoizes."""
    c = mem()

    @c.memoize
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(30) == 832040
    assert fib.dependencies()["fib"].kind == "code"


# -- values -------------------------------------------------------------------------------------


class Unkeyable:
    def __init__(self) -> None:
        self.w = 2


MODEL = Unkeyable()


def reads_model(x: int) -> int:
    return MODEL.w * x


def test_unencodable_user_instance_global_is_an_error_naming_it() -> None:
    """A global user-class instance with no encoding raises at the first call, with fixes."""
    f = mem().memoize(reads_model)
    with pytest.raises(KeyEncodingError) as info:
        f(1)
    msg = str(info.value)
    assert "'MODEL'" in msg and "Unkeyable" in msg
    assert "ignore_deps=('MODEL',)" in msg and "__persistmemo_key__" in msg
    assert "register_key_encoder" in msg


def test_ignore_deps_leaves_globals_out() -> None:
    """ignore_deps=('MODEL',) makes it memoize; changing the ignored global keeps the key."""
    f = mem().memoize(ignore_deps=("MODEL",))(reads_model)
    assert f(2) == 4 and f(2) == 4 and f.cache_info().hits == 1
    assert "MODEL" not in f.dependencies()


def test_ignore_deps_typo_is_a_configuration_error() -> None:
    """A name in ignore_deps that the function never reads raises ConfigurationError."""
    f = mem().memoize(ignore_deps=("SCALLE",))(uses_globals)
    with pytest.raises(ConfigurationError, match="SCALLE"):
        f(1)
    with pytest.raises(ConfigurationError):
        mem().memoize(ignore_deps="MODEL")(reads_model)  # a bare string, not a tuple
    with pytest.raises(ConfigurationError, match="depends_on"):
        mem().memoize(depends_on=np)(reads_model)  # a bare module, not a tuple


def test_logger_and_http_session_globals_still_memoize() -> None:
    """Library objects (a logger, an HTTP session) are dependencies by name only."""
    import http.client

    session = http.client.HTTPSConnection("example.invalid", timeout=1)  # never connects
    c = mem()

    @c.memoize
    def fetch(x: int) -> int:
        log.info("fetching %s", x)
        assert session is not None
        return x

    assert fetch(1) == 1 and fetch(1) == 1 and fetch.cache_info().hits == 1
    assert fetch.dependencies()["session"].kind == "library"


def test_values_in_containers_include_functions() -> None:
    """A dispatch dict of helpers is covered by the helpers' code; rebinding it is noticed."""
    c = mem()
    table = {"n": fp_helpers.normalize, "k": 3}

    @c.memoize
    def f(x: float) -> float:
        return table["n"](x) * table["k"]

    key = f.cache_key(1.0)
    before = f.dependencies()["table"]
    assert before.kind == "value"
    table = {"n": fp_helpers.scale, "k": 3}  # rebinding a closure variable
    assert f.dependencies()["table"] != before
    assert f.cache_key(1.0) != key
    assert f(1.0) == 6.0


def test_depends_on_values_functions_and_modules() -> None:
    """depends_on adds values, functions and modules (installed: by version) to the key."""
    c = mem()

    def g(x: int) -> int:
        return x

    plain = c.memoize(g)
    with_value = c.memoize(depends_on=({"model": "v2"},))(g)
    with_fn = c.memoize(depends_on=(fp_helpers.normalize,))(g)
    with_mods = c.memoize(depends_on=(np, fp_helpers))(g)
    keys = {plain.cache_key(1), with_value.cache_key(1), with_fn.cache_key(1),
            with_mods.cache_key(1)}
    assert len(keys) == 4
    deps = with_mods.dependencies()
    assert deps["depends_on:numpy"].kind == "library"
    assert deps["depends_on:keymods.fp_helpers"].kind == "code"
    assert with_fn.dependencies()["depends_on:normalize"].kind == "code"


def test_version_pins_and_skips_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    """With version=, rebinding a global keeps the key (the user pinned identity)."""
    f = mem().memoize(version=3)(uses_globals)
    key = f.cache_key(1.0)
    monkeypatch.setitem(globals(), "SCALE", 7)
    assert f.cache_key(1.0) == key
    assert ":v-3:" in key


# -- normalisation ------------------------------------------------------------------------------


def _factory_a() -> Any:
    def render() -> str:
        return """x
  y"""

    return render


def _factory_b() -> Any:
    def render() -> str:
        return """x
   y"""

    return render


def test_dedent_keeps_whitespace_inside_string_literals() -> None:
    """Two same-named functions whose templates differ only in inner indentation differ."""
    a, b = _factory_a(), _factory_b()
    assert a() != b()
    assert code_fingerprint(a) != code_fingerprint(b)
    c = mem()
    assert c.memoize(a)() != c.memoize(b)()


def test_fingerprint_ignores_comments_and_docstrings_but_not_code() -> None:
    """Formatting and comments keep the fingerprint; a changed constant changes it."""
    ns: dict[str, Any] = {}
    exec(compile("def h(x):\n    return x + 1\n", "<a>", "exec"), ns)
    ns2: dict[str, Any] = {}
    exec(compile("def h(x):\n    return x + 2\n", "<b>", "exec"), ns2)
    assert code_fingerprint(ns["h"]) != code_fingerprint(ns2["h"])


def test_revalidate_is_identity_only_when_nothing_changed(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Calls after the first do not resolve dependencies again unless a binding changed."""
    from persistmemo import _deps

    walks: list[int] = []
    real = _deps.Resolver.resolve

    def counting(self: Any, depends_on: Any) -> None:
        walks.append(1)
        real(self, depends_on)

    monkeypatch.setattr(_deps.Resolver, "resolve", counting)
    f = mem().memoize(uses_globals)
    for _ in range(50):
        f(1.0)
    assert len(walks) == 1
    monkeypatch.setitem(globals(), "SCALE", 9)
    f(1.0)
    f(1.0)
    assert len(walks) == 2


def test_manifest_recorded_once_per_fingerprint() -> None:
    """The dependency manifest is stored once, outside the pm: entry prefixes."""
    c = mem()
    f = c.memoize(uses_globals)
    f(1.0)
    f(2.0)
    backend = c.backend
    manifests = [k for k in backend.keys("pmm:") if "uses_globals" in k]  # type: ignore[attr-defined]
    assert len(manifests) == 1
    record = c.codec.decode(backend.get(manifests[0]), key=manifests[0]).value
    assert record["dependencies"]["SCALE"][0] == "value"
    assert f.cache_clear() == 2  # entries counted; the manifest goes with them
    assert [k for k in backend.keys("pmm:") if "uses_globals" in k] == []  # type: ignore[attr-defined]
    f(1.0)
    assert c.clear() == 1 and list(backend.keys("pmm:")) == []  # type: ignore[attr-defined]


def test_dependency_names_stable_across_import_paths() -> None:
    """Script and module names resolve through persistmemo's module naming."""
    from persistmemo._identity import is_user_module

    assert is_user_module("keymods.fp_helpers")
    assert is_user_module("__main__")
    assert not is_user_module("numpy") and not is_user_module("logging")
    assert not is_user_module("persistmemo.keys")
    assert sys.modules["keymods.fp_helpers"] is fp_helpers


def test_two_lambdas_on_one_line_differ() -> None:
    """Lambdas sharing a source line keep separate fingerprints (their own AST)."""
    c = mem()
    g = c.memoize(lambda x: x + 1); h = c.memoize(lambda x: x + 2)  # noqa: E702
    assert g.cache_key(1) != h.cache_key(1)
    assert (g(1), h(1)) == (2, 3)


def test_partial_global_covers_function_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """A functools.partial global is keyed by its function's code and its arguments."""
    monkeypatch.setitem(globals(), "PARTIAL", functools.partial(fp_helpers.scale, factor=2))

    def g(x: float) -> float:
        return PARTIAL(x)  # type: ignore[name-defined]  # noqa: F821

    f = mem().memoize(g)
    key = f.cache_key(1.0)
    assert f.dependencies()["PARTIAL<scale>"].kind == "code"
    monkeypatch.setitem(globals(), "PARTIAL", functools.partial(fp_helpers.scale, factor=3))
    assert f.cache_key(1.0) != key


def test_helper_default_user_instance_needs_ignore_deps() -> None:
    """A helper's unencodable default is an error naming the parameter; ignore_deps fixes it."""

    def helper(x: int, m: Unkeyable = MODEL) -> int:
        return x

    def g(x: int) -> int:
        return helper(x)

    with pytest.raises(KeyEncodingError, match=r"ignore_deps=\('m',\)"):
        mem().memoize(g)(1)
    assert mem().memoize(ignore_deps=("m",))(g)(1) == 1


def test_library_objects_without_encoding_keyed_by_name() -> None:
    """A lock or a logger global is a library dependency; an object array is an error."""
    import threading

    lock = threading.Lock()
    objects = np.array([1, "a"], dtype=object)
    c = mem()

    @c.memoize
    def locked(x: int) -> int:
        with lock:
            return x

    @c.memoize
    def reads_objects(x: int) -> Any:
        return objects[0] + x

    assert locked(1) == 1 and locked.dependencies()["lock"].kind == "library"
    with pytest.raises(KeyEncodingError, match="dtype=object"):
        reads_objects(1)


def test_rebinding_many_times_keeps_memory_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-running `SCALE = ...` many times does not keep every old value alive."""
    f = mem().memoize(uses_globals)
    keys = set()
    for i in range(60):
        monkeypatch.setitem(globals(), "SCALE", [i] * 100)
        keys.add(f.cache_key(1.0))
    assert len(keys) == 60
    assert len(f.keys.fingerprint_of._memo) < 10


def test_library_data_globals_keyed_by_contents(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled regex, an OrderedDict, a deque or a Namespace global is keyed by contents."""
    import argparse
    import collections
    import re

    c = mem()
    cases = [
        (re.compile(r"a+"), re.compile(r"b+")),
        (collections.OrderedDict(a=1), collections.OrderedDict(a=2)),
        (collections.deque([1, 2]), collections.deque([1, 3])),
        (argparse.Namespace(lr=0.1), argparse.Namespace(lr=0.2)),
        (collections.Counter("aab"), collections.Counter("abb")),
    ]
    for before, after in cases:
        monkeypatch.setitem(globals(), "DATA", before)

        @c.memoize
        def f(x: int) -> str:
            return repr(DATA) + str(x)  # type: ignore[name-defined]  # noqa: F821

        key = f.cache_key(1)
        assert f.dependencies()["DATA"].kind == "value"
        monkeypatch.setitem(globals(), "DATA", after)
        assert f.cache_key(1) != key, before


COUNTER = 0


STAMP = 0.0
CALLS: list[int] = []


def test_effect_only_variables_keyed_by_type() -> None:
    """A counter bumped with +=, or a list only appended to, does not change the key; a
    helper that reads the same global still covers its contents."""
    c = mem()
    runs: list[int] = []

    @c.memoize
    def counted(x: int) -> int:
        global COUNTER
        COUNTER += 1
        runs.append(x)
        CALLS.append(x)
        log.debug("x=%s", x)
        return x

    for _ in range(3):
        counted(1)
    assert counted.cache_info().hits == 2 and runs == [1]
    deps = counted.dependencies()
    assert deps["COUNTER"].kind == deps["runs"].kind == deps["CALLS"].kind == "effect"
    assert deps["log"].kind == "library"

    def reads_calls() -> int:
        return len(CALLS)

    @c.memoize
    def appends_and_reads(x: int) -> int:
        CALLS.append(x)
        return reads_calls()

    assert appends_and_reads.dependencies()["CALLS"].kind == "value"


def test_global_rebound_on_every_call_warns_to_ignore_it(caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A global read by the function and rebound before every call (a timestamp) misses every
    time; a warning names the ignore_deps fix, which then makes calls hit."""
    c = mem()

    @c.memoize
    def stamped(x: int) -> tuple[int, float]:
        return x, STAMP

    with caplog.at_level("WARNING", logger="persistmemo"):
        for i in range(8):
            monkeypatch.setitem(globals(), "STAMP", float(i))
            stamped(1)
    assert stamped.cache_info().hits == 0
    assert "ignore_deps=('STAMP',)" in caplog.text

    @c.memoize(ignore_deps=("STAMP",))
    def stamped2(x: int) -> tuple[int, float]:
        return x, STAMP

    for i in range(3):
        monkeypatch.setitem(globals(), "STAMP", float(i))
        stamped2(1)
    assert stamped2.cache_info().hits == 2


def test_fingerprint_travels_resolved_and_frozen() -> None:
    """A key builder sent by value (dask, ray) carries its resolved fingerprint, frozen."""
    import pickle

    f = mem().memoize(uses_globals)
    kb = f.keys
    clone = pickle.loads(pickle.dumps(kb))
    assert clone((1.0,), {}) == kb((1.0,), {})
    assert clone.fingerprint_of.revalidate() is False
    assert clone.dependencies() == kb.dependencies()
    assert pickle.dumps(kb) == pickle.dumps(kb)  # deterministic (dask tokenizes by pickling)
