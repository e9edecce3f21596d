"""Project configuration: [tool.persistmemo] / persistmemo.toml, precedence, the off switch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import persistmemo
from persistmemo._project import find_project_file, load_settings
from persistmemo.errors import ConfigurationError


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp project with a [tool.persistmemo] table; the cwd is a subdirectory of it."""
    monkeypatch.delenv("PERSISTMEMO_CONFIG", raising=False)
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "demo"
        [tool.persistmemo]
        url = ".cache/pm"
        namespace = "demo"
        ttl = 60
    """))
    monkeypatch.chdir(root / "src" / "pkg")
    return root


def test_nearest_pyproject_table_is_found_and_relative_url_is_anchored(project: Path) -> None:
    """The table is found from a subdirectory; a relative url is relative to the file."""
    s = load_settings()
    assert s.project is not None and s.project.path == project / "pyproject.toml"
    assert s.values == {"url": str(project / ".cache" / "pm"), "namespace": "demo", "ttl": 60.0}
    assert s.sources["namespace"] == str(project / "pyproject.toml")


def test_environment_beats_project_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PERSISTMEMO_* variables override the project file, option by option."""
    monkeypatch.setenv("PERSISTMEMO_NAMESPACE", "fromenv")
    monkeypatch.setenv("PERSISTMEMO_TTL", "none")
    s = load_settings()
    assert s.values["namespace"] == "fromenv" and s.values["ttl"] is None
    assert s.sources["namespace"] == "env PERSISTMEMO_NAMESPACE"
    assert s.values["url"] == str(project / ".cache" / "pm")


def test_persistmemo_toml_wins_and_table_less_pyproject_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """persistmemo.toml beats pyproject.toml; a pyproject without the table is skipped."""
    monkeypatch.delenv("PERSISTMEMO_CONFIG", raising=False)
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "inner"
    inner.mkdir(parents=True)
    (outer / "persistmemo.toml").write_text('namespace = "outer"\n')
    (outer / "pyproject.toml").write_text('[tool.persistmemo]\nnamespace = "ignored"\n')
    (inner / "pyproject.toml").write_text('[project]\nname = "x"\n')
    found = find_project_file(inner)
    assert found is not None and found.path == outer / "persistmemo.toml"
    monkeypatch.setenv("PERSISTMEMO_CONFIG", "none")
    assert find_project_file(inner) is None


@pytest.mark.parametrize(("table", "needle"), [
    ('nmespace = "x"', "unknown persistmemo option 'nmespace'"),
    ('secret = "hunter2"', "PERSISTMEMO_SECRET"),
    ('ttl = "soon"', "ttl must be a number"),
    ('lock = "maybe"', "lock must be true or false"),
])
def test_bad_project_file_names_file_and_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                table: str, needle: str) -> None:
    """Typos, secrets and wrong types in the file raise ConfigurationError naming the file."""
    monkeypatch.delenv("PERSISTMEMO_CONFIG", raising=False)
    (tmp_path / "persistmemo.toml").write_text(table + "\n")
    with pytest.raises(ConfigurationError) as err:
        load_settings(start=tmp_path)
    assert needle in str(err.value) and "persistmemo.toml" in str(err.value)


def test_default_cache_follows_project_file(project: Path) -> None:
    """Bare @memoize stores into the project's cache, with its namespace and ttl."""
    @persistmemo.memoize
    def triple(x: int) -> int:
        return 3 * x

    assert triple(2) == 6 and triple(2) == 6
    cache = persistmemo.default_cache()
    assert cache.namespace == "demo" and cache.ttl == 60.0
    assert (project / ".cache" / "pm").is_dir()
    assert triple.cache_key(2).split(":")[2] == "demo"


def test_explicit_argument_beats_everything(project: Path, tmp_path: Path) -> None:
    """A Cache with an explicit location ignores the project's url."""
    cache = persistmemo.Cache(str(tmp_path / "explicit"))

    @cache.memoize
    def one() -> int:
        return 1

    assert one() == 1
    assert (tmp_path / "explicit").is_dir() and not (project / ".cache").exists()


def test_script_in_project_uses_its_cache(project: Path) -> None:
    """A script run anywhere inside the project uses the project's cache directory."""
    script = project / "src" / "pkg" / "job.py"
    script.write_text("import persistmemo\n@persistmemo.memoize\ndef f(x):\n    return x\n"
                      "print(f(1), f(1), f.cache_info().hits)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    out = subprocess.run([sys.executable, str(script)], cwd=project / "src", env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]
    assert (project / ".cache" / "pm" / "cache.db").is_file()


def test_disabled_context_manager_and_decorator(tmp_path: Path) -> None:
    """disabled() makes memoized functions call straight through, as a block or decorator."""
    runs: list[int] = []

    @persistmemo.memoize(cache=persistmemo.Cache(str(tmp_path / "c")))
    def f(x: int) -> int:
        runs.append(x)
        return x

    with persistmemo.disabled():
        assert f(1) == 1 and f(1) == 1

    @persistmemo.disabled()
    def twice() -> None:
        f(2)
        f(2)

    twice()
    assert runs == [1, 1, 2, 2]
    assert f.cache_info().misses == 0 and f.cache_info().stores == 0
    f(3)
    f(3)
    assert runs[-1:] == [3] and f.cache_info().hits == 1


def test_disable_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PERSISTMEMO_DISABLE=1 turns memoization off for functions first called after it."""
    monkeypatch.setenv("PERSISTMEMO_DISABLE", "1")
    runs: list[int] = []

    @persistmemo.memoize(cache=persistmemo.Cache(str(tmp_path / "c")))
    def f(x: int) -> int:
        runs.append(x)
        return x

    f(1)
    f(1)
    assert runs == [1, 1] and f.cache_info().stores == 0


def test_replacing_default_cache_moves_started_functions(tmp_path: Path) -> None:
    """set_default_cache() applies to functions already called (their next call)."""
    @persistmemo.memoize
    def f(x: int) -> int:
        return x

    first = persistmemo.set_default_cache(str(tmp_path / "a"))
    f(1)
    second = persistmemo.set_default_cache(str(tmp_path / "b"))
    assert first is not None and second is not None
    f(1)
    assert f.cache_info().misses == 2
    assert list(second.backend.keys()) == [f.cache_key(1)]


def test_pytest_plugin_fixture_gives_each_test_a_fresh_store(tmp_path: Path) -> None:
    """The registered plugin's persistmemo_cache fixture isolates each test's default cache."""
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import persistmemo

        runs = []

        @persistmemo.memoize
        def square(x):
            runs.append(x)
            return x * x

        def test_one(persistmemo_cache):
            assert square(3) == 9 and square(3) == 9
            assert persistmemo_cache.info().hits == 1 and runs == [3]

        def test_two(persistmemo_cache):
            assert square(3) == 9          # a fresh store: computed again
            assert runs == [3, 3] and len(list(persistmemo_cache.backend.keys())) == 1
    """))
    env = {**os.environ, "PERSISTMEMO_CONFIG": "none", "XDG_CACHE_HOME": str(tmp_path / "x")}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path / "test_user.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert "2 passed" in res.stdout, res.stdout + res.stderr
    assert not (tmp_path / "x").exists()  # the user's cache directory was never touched


def test_disabled_map_and_async(tmp_path: Path) -> None:
    """disabled() covers f.map and async functions too."""
    cache = persistmemo.Cache(str(tmp_path / "c"))
    runs: list[int] = []

    @cache.memoize
    def f(x: int) -> int:
        runs.append(x)
        return x

    @cache.memoize
    async def g(x: int) -> int:
        runs.append(-x)
        return x

    import asyncio

    with persistmemo.disabled():
        assert f.map([1, 1]) == [1, 1]
        assert asyncio.run(g(2)) == 2 and asyncio.run(g(2)) == 2
    assert runs == [1, 1, -2, -2] and list(cache.backend.keys()) == []


def test_local_tier_from_project_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`local = "memory"` in the project file puts a memory tier in front of the default cache."""
    monkeypatch.delenv("PERSISTMEMO_CONFIG", raising=False)
    (tmp_path / "persistmemo.toml").write_text(
        'url = "c"\nlocal = "memory"\nlocal_ttl = 30\nsize_limit = 100000000\n')
    monkeypatch.chdir(tmp_path)

    @persistmemo.memoize
    def f(x: int) -> int:
        return x

    assert f(1) == 1 and f(1) == 1
    backend = persistmemo.default_cache().backend
    assert getattr(backend, "shared", None) is not None and (tmp_path / "c" / "cache.db").exists()
