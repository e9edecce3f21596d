"""Keys v2 across processes: edited helpers miss, unchanged code hits, hash seeds, spawn workers,
``python -m``, and notebooks executed in fresh kernels (nbclient)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true")

HELPERS = '''
EPS = 1e-9

def normalize(x):
    # a comment
    return x / (1 + EPS)
'''

JOB = '''
import sys
import persistmemo
import helpers

SCALE = 2
cache = persistmemo.Cache(sys.argv[1])

@cache.memoize
def compute(x):
    return helpers.normalize(x) * SCALE

compute(3)
print(compute.cache_info().misses, compute.cache_key(3))
'''


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(args: list[str], cwd: Path, **env: str) -> str:
    res = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(**env), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_editing_a_helper_or_constant_between_runs_misses(tmp_path: Path) -> None:
    """Unchanged code hits in a new process; an edited helper or constant misses."""
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "job.py").write_text(JOB)
    store = str(tmp_path / "store")

    def run() -> tuple[str, str]:
        misses, key = _run(["job.py", store], tmp_path).split()
        return misses, key

    first = run()
    assert first[0] == "1"
    assert run() == ("0", first[1])  # unchanged: a hit, same key
    (tmp_path / "helpers.py").write_text(HELPERS.replace("# a comment", "# another comment"))
    assert run() == ("0", first[1])  # comments do not count
    (tmp_path / "helpers.py").write_text(HELPERS.replace("1 + EPS", "2 + EPS"))
    edited = run()
    assert edited[0] == "1" and edited[1] != first[1]  # helper body edited: miss
    (tmp_path / "helpers.py").write_text(HELPERS.replace("EPS = 1e-9", "EPS = 1e-6"))
    assert run()[0] == "1"  # a helper module's constant edited: miss
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "job.py").write_text(JOB.replace("SCALE = 2", "SCALE = 3"))
    assert run()[0] == "1"  # the script's constant edited: miss
    (tmp_path / "job.py").write_text(JOB)
    assert run() == ("0", first[1])  # everything back: the first entry hits again


SEEDS_SCRIPT = '''
import persistmemo

cache = persistmemo.Cache("memory://")
WORDS = {"alpha", "beta", "gamma", "delta"}

@cache.memoize
def tagged(x):
    return x in {"a", "b", "c", "d", "e"} or x in WORDS

square = cache.memoize(lambda x: x in {"p", "q", "r", "s"})
ns = {}
exec("def dyn(x):\\n    return x in {'u', 'v', 'w', 'x'}\\n", ns)
dyn = cache.memoize(ns["dyn"])
print(tagged.cache_key("a"), square.cache_key("p"), dyn.cache_key("u"))
'''


def test_one_key_under_four_hash_seeds(tmp_path: Path) -> None:
    """Set literals in functions, lambdas and exec'd code give one key whatever the seed."""
    (tmp_path / "seeds.py").write_text(SEEDS_SCRIPT)
    outs = {_run(["seeds.py"], tmp_path, PYTHONHASHSEED=str(seed)) for seed in (0, 1, 2, 12345)}
    assert len(outs) == 1
    assert outs.pop().count("pm:2:default:") == 3


LIB = '''
import persistmemo

cache = persistmemo.Cache("memory://")

@cache.memoize
def run(params):
    return params
'''

PARAMS_JOB = '''
import dataclasses
import multiprocessing

import sharedlib

@dataclasses.dataclass(frozen=True)
class Params:
    lr: float

def key_of(p):
    return sharedlib.run.cache_key(p)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        worker = pool.apply(key_of, (Params(0.1),))
    print(key_of(Params(0.1)), worker)
'''


def test_script_classes_tagged_by_script_in_workers_and_python_m(tmp_path: Path) -> None:
    """A script's argument class keys alike in the script, its spawn workers and python -m;
    two scripts' same-named classes stay apart."""
    (tmp_path / "sharedlib.py").write_text(LIB)
    (tmp_path / "job_a.py").write_text(PARAMS_JOB)
    (tmp_path / "job_b.py").write_text(PARAMS_JOB)
    main_key, worker_key = _run(["job_a.py"], tmp_path).split()
    assert main_key == worker_key
    module_key, module_worker = _run(["-m", "job_a"], tmp_path).split()
    assert module_key == main_key == module_worker
    other, _ = _run(["job_b.py"], tmp_path).split()
    assert other != main_key


# -- notebooks --------------------------------------------------------------------------------


def _require(*modules: str) -> None:
    """Skip locally when a notebook package is missing; fail under CI=true."""
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            msg = f"{name} not installed: pip install 'persistmemo[test]'"
            if IN_CI:
                pytest.fail(f"{msg} (CI must not skip the notebook tests)", pytrace=False)
            pytest.skip(msg)


def _notebook(cells: list[str]) -> Any:
    _require("nbformat")
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    return nb


def _execute(nb: Any, cwd: Path, session: str | None) -> list[str]:
    _require("nbclient")
    from nbclient import NotebookClient

    env = _env()
    env.pop("JPY_SESSION_NAME", None)
    if session is not None:
        env["JPY_SESSION_NAME"] = session
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"].strip())
    return out


def _slow_notebook(store: str, body: str) -> Any:
    return _notebook([
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport persistmemo\n"
        f"cache = persistmemo.Cache({store!r})",
        f"FACTOR = 2\n\n@cache.memoize\ndef slow(x):\n    return {body}",
        "slow(2)\nprint(slow.cache_info().misses, slow.cache_key(2))",
        "FACTOR = 3",  # re-running a cell that rebinds a global: the next call misses
        "slow(2)\nprint(slow.cache_info().misses)",
    ])


def test_notebook_hits_in_fresh_kernels_and_notebooks_stay_apart(tmp_path: Path) -> None:
    """A notebook run twice in fresh kernels hits; same-named functions of two notebooks are
    apart (their own names and cache_clear)."""
    _require("ipykernel", "nbclient", "nbformat")
    store = str(tmp_path / "store")
    a1 = _execute(_slow_notebook(store, "x * FACTOR"), tmp_path, str(tmp_path / "first.ipynb"))
    a2 = _execute(_slow_notebook(store, "x * FACTOR"), tmp_path, str(tmp_path / "first.ipynb"))
    misses1, key1 = a1[0].split()
    misses2, key2 = a2[0].split()
    assert (misses1, misses2) == ("1", "0") and key1 == key2
    assert (a1[1], a2[1]) == ("2", "0")  # FACTOR = 3 missed in the first kernel only
    assert ":first.slow:" in key1
    nb_b = _slow_notebook(store, "x * FACTOR + 1")
    nb_b.cells.append(_notebook(["print(slow.cache_clear())"]).cells[0])
    b = _execute(nb_b, tmp_path, str(tmp_path / "second.ipynb"))
    assert ":second.slow:" in b[0] and b[-1] == "2"  # cleared only its own two entries
    a3 = _execute(_slow_notebook(store, "x * FACTOR"), tmp_path, str(tmp_path / "first.ipynb"))
    assert a3[0].split()[0] == "0"  # the first notebook's entries survived
