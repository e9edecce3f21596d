"""Distributed workers: a memoized function from __main__ or a notebook runs on dask
(LocalCluster, processes) and on a ProcessPoolExecutor, all sharing one Redis cache."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import IN_CI


def _require(*modules: str) -> None:
    for name in modules:
        if importlib.util.find_spec(name) is None:
            msg = f"{name} not installed: pip install 'persistmemo[test]'"
            if IN_CI:
                pytest.fail(f"{msg} (CI must not skip the dask tests)", pytrace=False)
            pytest.skip(msg)


JOB = """
import os
import persistmemo
cache = persistmemo.Cache({url!r})

@cache.memoize
def square(x):
    return (x * x, os.getpid())
"""

RUN = """
from dask.distributed import Client, LocalCluster
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                  dashboard_address=None) as cluster, Client(cluster) as client:
    on_dask = client.gather(client.map(square, range(6)), asynchronous=False)
print("dask", [v for v, _ in on_dask])
"""


def test_script_functions_run_on_dask_and_process_pool(redis_url: str, tmp_path: Path) -> None:
    """A __main__ function runs on dask workers and a process pool; one shared cache."""
    _require("dask", "distributed", "cloudpickle")
    script = tmp_path / "job.py"
    script.write_text(JOB.format(url=redis_url) + "if __name__ == '__main__':\n"
                      + textwrap.indent(RUN + textwrap.dedent("""
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2) as pool:
            in_pool = list(pool.map(square, range(6)))
        print("shared", in_pool == on_dask, square(3) == on_dask[3])
    """), "    "))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert "dask [0, 1, 4, 9, 16, 25]" in lines
    assert "shared True True" in lines  # the pool and this process hit the workers' entries


def test_notebook_functions_run_on_dask(redis_url: str, tmp_path: Path) -> None:
    """A function memoized in a notebook is sent to dask workers by value; no hang."""
    _require("dask", "distributed", "cloudpickle", "nbclient", "nbformat", "ipykernel")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(JOB.format(url=redis_url)),
                nbformat.v4.new_code_cell(RUN),
                nbformat.v4.new_code_cell("print(square(4) == on_dask[4], "
                                          "square.cache_info().hits)")]
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = ["".join(o.get("text", "") for o in cell.get("outputs", [])) for cell in nb.cells]
    assert "dask [0, 1, 4, 9, 16, 25]" in texts[1]
    assert texts[2].split() == ["True", "1"]
