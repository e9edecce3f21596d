"""Defects found by probing the tools as a new user (issue 11b): one regression test each."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._redis_fixtures import RedisServer, command

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


BIN = Path(sys.executable).parent / "persistmemo"


def _pm(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return _run(cwd, str(BIN), *argv)


def _fill(tmp_path: Path) -> str:
    url = str(tmp_path / "c")
    (tmp_path / "job.py").write_text("import persistmemo\n@persistmemo.memoize\ndef f(x):\n"
                                     "    return x\nf(1)\n")
    res = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, capture_output=True,
                         env={**_ENV, "PERSISTMEMO_URL": url}, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return url


def test_version_option(tmp_path: Path) -> None:
    """`persistmemo --version` prints the installed version and exits 0."""
    import persistmemo

    res = _pm(tmp_path, "--version")
    assert res.returncode == 0 and persistmemo.__version__ in res.stdout


def test_prune_old_formats_spares_entries_of_a_newer_format(tmp_path: Path) -> None:
    """--old-formats deletes earlier key formats only, never a newer persistmemo's entries."""
    import json

    from persistmemo.backends.disk import DiskBackend
    from persistmemo.keys import KEY_FORMAT

    url = _fill(tmp_path)
    disk = DiskBackend(url)
    old, new = (f"pm:{n}:default:job.f:0123:" + "ab" * 32 for n in (KEY_FORMAT - 1,
                                                                    KEY_FORMAT + 1))
    disk.set(old, b"old")
    disk.set(new, b"new")
    disk.close()
    res = _pm(tmp_path, "prune", "--old-formats", "--url", url, "--json")
    assert res.returncode == 0, res.stderr
    assert [e["key"] for e in json.loads(res.stdout)["entries"]] == [old]
    disk = DiskBackend(url)
    left = set(disk.keys("pm:"))
    assert new in left and old not in left
    disk.close()


def test_ls_unknown_function_names_the_stored_ones(tmp_path: Path) -> None:
    """`ls --function typo` says no function matches and lists the stored ones."""
    url = _fill(tmp_path)
    res = _pm(tmp_path, "ls", "--function", "nosuch", "--url", url)
    assert res.returncode == 0 and "no stored function matches 'nosuch'" in res.stdout
    assert "job.f" in res.stdout


def test_redis_password_errors_hint_and_never_print_the_password(tmp_path: Path) -> None:
    """A wrong or missing Redis password: exit 4, a hint, and the password never printed."""
    server = RedisServer(tmp_path / "redis")
    port = server.port
    try:
        command(port, "CONFIG", "SET", "requirepass", "s3cretpw")
        for url in (f"redis://:wrongpw@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
            res = _pm(tmp_path, "ls", "--url", url)
            assert res.returncode == 4 and "hint: the server wants a" in res.stderr
            assert "wrongpw" not in res.stdout + res.stderr
        res = _pm(tmp_path, "stats", "--json", "--url", f"redis://:s3cretpw@127.0.0.1:{port}/0")
        assert res.returncode == 0 and "s3cretpw" not in res.stdout + res.stderr
    finally:
        server.kill()
