"""The command line: --help, ls, stats, clear and maintain on a real cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from persistmemo import Cache
from persistmemo.cli import main


def _fill(location: str) -> None:
    cache = Cache(location)

    @cache.memoize
    def alpha(x: int) -> int:
        return x

    @cache.memoize(namespace="other")
    def beta(x: int) -> list[int]:
        return [x] * 3

    for i in range(3):
        alpha(i)
    beta(1)
    cache.close()


def test_help_via_entry_point_and_module() -> None:
    """`persistmemo --help` and `python -m persistmemo --help` both work."""
    for cmd in (["persistmemo", "--help"], [sys.executable, "-m", "persistmemo", "--help"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        assert "stats" in res.stdout and "ls" in res.stdout


def test_ls_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ls lists entries with sizes; stats counts entries per namespace:function."""
    loc = str(tmp_path / "c")
    _fill(loc)
    assert main(["--url", loc, "ls"]) == 0
    out = capsys.readouterr().out
    assert out.count("pm:2:") == 4
    assert main(["--url", loc, "ls", "--namespace", "other"]) == 0
    assert capsys.readouterr().out.count("pm:2:other:") == 1
    assert main(["--url", loc, "stats"]) == 0
    out = capsys.readouterr().out
    assert "default:test_cli._fill.<locals>.alpha" in out
    assert "      4 " in out  # the total line


def test_clear_needs_yes_and_is_scoped(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    """clear refuses without --yes, and deletes only the chosen namespace / function."""
    loc = str(tmp_path / "c")
    _fill(loc)
    assert main(["--url", loc, "clear", "--namespace", "other"]) == 1
    assert main(["--url", loc, "clear", "--namespace", "other", "--yes"]) == 0
    assert "deleted 1 entries" in capsys.readouterr().out
    fn = "test_cli._fill.<locals>.alpha"
    assert main(["--url", loc, "clear", "--namespace", "default", "--function", fn,
                 "--yes"]) == 0
    assert "deleted 3 entries" in capsys.readouterr().out


def test_maintain_and_env_default(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """maintain checks a directory cache; without --url the CLI uses PERSISTMEMO_URL."""
    loc = str(tmp_path / "env-cache")
    _fill(loc)
    monkeypatch.setenv("PERSISTMEMO_URL", loc)
    assert main(["maintain"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["ls"]) == 0
    assert capsys.readouterr().out.count("pm:2:") == 4


def test_bad_url_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown scheme prints an error and exits 2 (no traceback)."""
    assert main(["--url", "ftp://nowhere", "stats"]) == 2
    assert "unknown cache URL scheme" in capsys.readouterr().err


def test_cli_on_redis(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """ls/stats/clear work against a real Redis."""
    Cache(redis_url).backend.clear("")
    _fill(redis_url)
    assert main(["--url", redis_url, "stats"]) == 0
    assert "other:test_cli._fill.<locals>.beta" in capsys.readouterr().out
    assert main(["--url", redis_url, "clear", "--namespace", "default", "--yes"]) == 0
    assert "deleted 3 entries" in capsys.readouterr().out
