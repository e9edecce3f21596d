"""Defects found by probing the tools as a new user (issue 11b): one regression test each."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, env=_ENV, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("bad", ["[tool.persistmemo\nurl = 'c'\n",
                                 "[tool.persistmemo]\nurl = 'c'\nttl = 'abc'\n",
                                 "[tool.persistmemo]\nurl = 'c'\nbogus = 1\n"])
def test_broken_project_file_does_not_crash_the_users_program(tmp_path: Path, bad: str) -> None:
    """A malformed or invalid project file: the function still runs (uncached), one warning."""
    (tmp_path / "pyproject.toml").write_text(bad)
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import persistmemo
        calls = []
        @persistmemo.memoize
        def sq(x):
            calls.append(x)
            return x * x
        print(sq(3), sq(3), len(calls))
    """))
    res = _run(tmp_path, sys.executable, "app.py")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["9", "9", "2"]  # called straight through: nothing cached
    assert res.stderr.count("pyproject.toml") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "c").exists()
