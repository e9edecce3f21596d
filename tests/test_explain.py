"""f.explain(): hit, or miss with the reason against the nearest stored entries."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import persistmemo
from persistmemo import Explanation


def make(cache: persistmemo.Cache, version: int, helper: str, **options: Any) -> Any:
    """A memoized f whose dependency manifest names a helper with the given digest."""
    @cache.memoize(version=version, **options)
    def f(x: int, scale: int = 1) -> int:
        return x * scale

    f.keys.manifest = {"helper": ("function", helper), "np": ("module", "numpy")}
    return f


def test_hit_is_reported_with_its_entry(tmp_path: Path) -> None:
    """A stored call explains as a hit with the entry's creation time and duration."""
    cache = persistmemo.Cache(str(tmp_path / "c"))
    f = make(cache, 1, "aaa")
    f(2, scale=3)
    e = f.explain(2, 3)
    assert isinstance(e, Explanation) and e.hit and e.reasons == ()
    assert e.key == f.cache_key(2, scale=3) and e.created is not None
    assert str(e).startswith("hit:")


def test_miss_names_the_differing_parameter(tmp_path: Path) -> None:
    """A miss next to a stored call names the parameter that differs."""
    cache = persistmemo.Cache(str(tmp_path / "c"))
    f = make(cache, 1, "aaa")
    f(2, scale=3)
    e = f.explain(2, scale=4)
    assert not e.hit
    assert [r.kind for r in e.reasons] == ["argument"]
    assert e.nearest[0].arguments == ("scale",)
    assert "scale" in str(e) and str(e).startswith("miss:")


def test_miss_names_the_changed_dependency(tmp_path: Path) -> None:
    """After a helper's code changed (between runs), the miss names the helper."""
    script = tmp_path / "job.py"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")},
           "PERSISTMEMO_URL": str(tmp_path / "c")}
    out = ""
    for body in ("x + 1", "x + 2"):
        script.write_text(
            "import persistmemo\n"
            f"def helper(x):\n    return {body}\n"
            "@persistmemo.memoize\ndef f(x, scale=1):\n    return helper(x) * scale\n"
            "e = f.explain(1)\nprint(e)\nprint('KINDS', [r.kind for r in e.reasons])\n"
            "print('DEPS', e.nearest[0].dependencies if e.nearest else None)\nf(1)\n")
        res = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        out = res.stdout
    assert "KINDS ['code']" in out and "DEPS ('changed helper',)" in out, out
    assert "changed helper" in out.splitlines()[1]


def test_miss_in_another_namespace(tmp_path: Path) -> None:
    """The same call stored under another namespace is reported as such."""
    cache = persistmemo.Cache(str(tmp_path / "c"))
    make(cache, 1, "aaa", namespace="team-a")(2)
    e = make(cache, 1, "aaa", namespace="team-b").explain(2)
    assert [r.kind for r in e.reasons] == ["namespace"]
    assert "team-a" in e.reasons[0].detail and "team-b" in e.reasons[0].detail


def test_miss_because_expired(tmp_path: Path) -> None:
    """An entry whose TTL ran out is reported as expired (directory stores keep the row)."""
    cache = persistmemo.Cache(str(tmp_path / "c"))
    f = make(cache, 1, "aaa", ttl=0.05)
    f(2)
    time.sleep(0.1)
    e = f.explain(2)
    assert [r.kind for r in e.reasons] == ["expired"]


def test_never_computed(tmp_path: Path) -> None:
    """A function with nothing stored says so."""
    cache = persistmemo.Cache(str(tmp_path / "c"))
    e = make(cache, 1, "aaa").explain(1)
    assert [r.kind for r in e.reasons] == ["never"] and e.nearest == ()
    assert "never computed" in str(e)


def test_explain_on_async_function_and_method(tmp_path: Path) -> None:
    """explain works on async functions and bound methods too."""
    cache = persistmemo.Cache(str(tmp_path / "c"))

    @cache.memoize
    async def double(x: int) -> int:
        return 2 * x

    class Model:
        def __persistmemo_key__(self) -> str:
            return "m"

        @cache.memoize
        def predict(self, x: int) -> int:
            return x

    asyncio.run(double(1))
    assert double.explain(1).hit and not double.explain(2).hit
    m = Model()
    m.predict(1)
    assert m.predict.explain(1).hit and m.predict.explain(2).nearest[0].arguments == ("x",)


def test_code_edit_between_processes_is_explained(tmp_path: Path) -> None:
    """Editing the function body between runs: the miss says the code changed."""
    script = tmp_path / "job.py"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")},
           "PERSISTMEMO_URL": str(tmp_path / "c")}
    out = ""
    for body in ("x + 1", "x + 2"):
        script.write_text("import persistmemo\n@persistmemo.memoize\ndef f(x):\n"
                          f"    return {body}\nprint(f.explain(1)); f(1)\n")
        res = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        out = res.stdout
    assert "the code changed" in out and "job.f" in out
