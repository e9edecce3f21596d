"""The installed `persistmemo` command, run in subprocesses against real directory caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from persistmemo.backends.disk import DiskBackend
from persistmemo.keys import KEY_FORMAT

BIN = Path(sys.executable).parent / "persistmemo"

JOB = textwrap.dedent('''
    import sys, time
    import persistmemo

    @persistmemo.memoize
    def square(x: int) -> int:
        return x * x

    @persistmemo.memoize(namespace="other")
    def cube(x: int, scale: int = 1) -> int:
        return x ** 3 * scale

    for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        square(i)
    cube(2)
''')


def pm(*args: str, cwd: Path, env: dict[str, str] | None = None, ok: bool = True,
       stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed persistmemo command; assert exit 0 unless ok=False."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    res = subprocess.run([str(BIN), *args], cwd=cwd, env={**base, **(env or {})},
                         capture_output=True, text=True, timeout=60, input=stdin)
    if ok:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def run_py(script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a Python script in a subprocess (no PERSISTMEMO_* inherited); return stdout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PERSISTMEMO_")}
    res = subprocess.run([sys.executable, str(script), *args], cwd=cwd,
                         env={**base, **(env or {})}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A temp project whose pyproject.toml points at .cache/pm, with a job that fills it."""
    (tmp_path / "pyproject.toml").write_text('[tool.persistmemo]\nurl = ".cache/pm"\n')
    (tmp_path / "job.py").write_text(JOB)
    run_py(tmp_path / "job.py", cwd=tmp_path)
    return tmp_path


def as_json(res: subprocess.CompletedProcess[str]) -> Any:
    """Parse a command's --json output."""
    return json.loads(res.stdout)


def test_help_lists_commands_and_exit_codes(tmp_path: Path) -> None:
    """`persistmemo --help` and `python -m persistmemo --help` show commands and exit codes."""
    for cmd in ([str(BIN), "--help"], [sys.executable, "-m", "persistmemo", "--help"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        for word in ("ls", "show", "stats", "explain", "clear", "prune", "maintain",
                     "exit codes", "holds no persistmemo cache"):
            assert word in res.stdout


def test_project_config_is_picked_up_from_a_subdirectory(project: Path) -> None:
    """Without --url, the CLI uses [tool.persistmemo] of the nearest pyproject.toml."""
    sub = project / "src" / "deep"
    sub.mkdir(parents=True)
    out = pm("ls", cwd=sub).stdout
    assert f"cache: {project / '.cache' / 'pm'}" in out and "pyproject.toml" in out
    assert "default:job.square" in out and "other:job.cube" in out
    assert "4 entries" in out


def test_ls_table_is_newest_first_with_header_and_human_sizes(project: Path) -> None:
    """ls prints a header row, human-readable sizes, and the newest entry first."""
    lines = pm("ls", cwd=project).stdout.splitlines()
    assert lines[1].split()[:3] == ["CREATED", "SIZE", "COMPUTE"]
    assert all(" B " in line or "KiB" in line for line in lines[2:6])
    data = as_json(pm("ls", "--json", cwd=project))
    created = [e["created_unix"] for e in data["entries"]]
    assert created == sorted(created, reverse=True) and data["total"] == 4
    assert "other:job.cube" in lines[2]  # cube(2) ran last


def test_ls_json_fields_and_function_filter(project: Path) -> None:
    """ls --json has one object per entry; --function takes a qualname suffix."""
    data = as_json(pm("ls", "--function", "square", "--json", cwd=project))
    assert data["total"] == 3
    e = data["entries"][0]
    assert e["function"] == "job.square" and e["namespace"] == "default"
    assert set(e["arguments"]) == {"x"} and e["ttl_left_s"] is None and e["size"] > 0
    assert e["key"].startswith(f"pm:{KEY_FORMAT}:default:job.square:")


def test_global_options_before_or_after_the_subcommand(project: Path) -> None:
    """--url/--namespace/--json work on either side of the subcommand."""
    url = str(project / ".cache" / "pm")
    before = as_json(pm("--url", url, "--namespace", "other", "--json", "ls", cwd=project.parent))
    after = as_json(pm("ls", "--url", url, "--namespace", "other", "--json", cwd=project.parent))
    assert before["total"] == after["total"] == 1


@pytest.mark.parametrize("command", [["ls"], ["stats"], ["show", "abcdef12"],
                                     ["explain", "square"], ["clear", "--all", "--yes"],
                                     ["prune", "--old-versions"], ["maintain"]])
def test_commands_never_create_a_cache(tmp_path: Path, command: list[str]) -> None:
    """A typo'd --url: exit 3, a clear message, and no directory created."""
    missing = tmp_path / "typo"
    res = pm("--url", str(missing), *command, cwd=tmp_path, ok=False)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "no cache at" in res.stderr and "nothing was created" in res.stderr
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = pm("--url", str(empty), *command, cwd=tmp_path, ok=False)
    assert res.returncode == 3 and os.listdir(empty) == []


def test_show_entry_by_digest_prefix(project: Path) -> None:
    """show accepts the KEY column of ls and prints function, size, TTL and digests."""
    key = as_json(pm("ls", "--function", "cube", "--json", cwd=project))["entries"][0]["key"]
    digest = key.rpartition(":")[2]
    out = pm("show", digest[:12], cwd=project).stdout
    for needle in ("job.cube", "created", "compute time", "expires in", "never", "scale", "x"):
        assert needle in out
    data = as_json(pm("show", key, "--json", cwd=project))
    assert data["key"] == key and set(data["arguments"]) == {"x", "scale"}
    assert pm("show", "ffffffffffff", cwd=project, ok=False).returncode == 1


def test_clear_by_suffix_previews_and_needs_confirmation(project: Path) -> None:
    """clear --function SUFFIX previews; without a terminal it needs --yes (exit 1)."""
    res = pm("clear", "--function", "square", cwd=project, ok=False)
    assert res.returncode == 1 and "3 entries of job.square" in res.stdout
    assert "--yes" in res.stderr
    assert as_json(pm("ls", "--json", cwd=project))["total"] == 4
    out = pm("clear", "--function", "square", "--yes", cwd=project).stdout
    assert "deleted 3 entries" in out
    assert as_json(pm("ls", "--json", cwd=project))["total"] == 1


def test_clear_unknown_or_ambiguous_function_is_an_error(project: Path) -> None:
    """A name matching nothing exits 1 naming the stored functions; an ambiguous one exits 2."""
    (project / "job2.py").write_text(JOB.replace("def square", "def other_square")
                                     .replace("square(i)", "other_square(i)"))
    (project / "pkg").mkdir()
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "job.py").write_text(JOB)
    run_py(project / "pkg" / "job.py", cwd=project)
    res = pm("clear", "--function", "fib", "--yes", cwd=project, ok=False)
    assert res.returncode == 1 and "job.square" in res.stderr
    assert as_json(pm("stats", "--json", cwd=project))["total"]["entries"] >= 4


def test_prune_old_versions_and_old_formats(tmp_path: Path) -> None:
    """prune --old-versions keeps the newest code version; --old-formats drops pm:0 keys."""
    url = str(tmp_path / "c")
    script = tmp_path / "v.py"
    for body in ("x + 1", "x + 2"):
        script.write_text(f"import persistmemo\n@persistmemo.memoize\ndef f(x):\n"
                          f"    return {body}\nf(1); f(2)\n")
        run_py(script, cwd=tmp_path, env={"PERSISTMEMO_URL": url})
    disk = DiskBackend(url)
    disk.set("pm:0:default:v.f:0123:" + "ab" * 32, b"old format entry")
    disk.close()
    res = as_json(pm("--url", url, "prune", "--old-versions", "--dry-run", "--json",
                     cwd=tmp_path))
    assert res["deleted"] == 0 and len(res["entries"]) == 2
    out = pm("--url", url, "prune", "--old-versions", "--old-formats", cwd=tmp_path).stdout
    assert "deleted 3 entries" in out
    left = as_json(pm("--url", url, "ls", "--json", cwd=tmp_path))["entries"]
    assert len(left) == 2 and len({e["version"] for e in left}) == 1
    disk = DiskBackend(url)
    manifests = list(disk.keys("pmm:"))  # the pruned version's manifest went with it
    disk.close()
    assert len(manifests) <= 1 and all(left[0]["version"] in m for m in manifests)


def test_prune_max_bytes_and_older_than(tmp_path: Path) -> None:
    """--max-bytes deletes the oldest entries until the rest fit; --older-than 0 deletes all."""
    url = str(tmp_path / "c")
    (tmp_path / "job.py").write_text(JOB)
    run_py(tmp_path / "job.py", "5", cwd=tmp_path, env={"PERSISTMEMO_URL": url})
    sizes = [e["size"] for e in as_json(pm("--url", url, "ls", "--json",
                                           cwd=tmp_path))["entries"]]
    res = as_json(pm("--url", url, "prune", "--max-bytes", str(sum(sizes[:2])), "--json",
                     cwd=tmp_path))
    assert res["deleted"] == len(sizes) - 2
    pm("--url", url, "prune", "--older-than", "0s", cwd=tmp_path)
    assert as_json(pm("--url", url, "ls", "--json", cwd=tmp_path))["total"] == 0


def test_explain_lists_code_versions_and_changes(tmp_path: Path) -> None:
    """explain FUNCTION lists stored code versions, oldest first, and what changed: a helper
    by name, then the function's own code."""
    url = str(tmp_path / "c")
    script = tmp_path / "e.py"
    for helper, body in (("x + 1", "helper(x)"), ("x + 2", "helper(x)"),
                         ("x + 2", "helper(x) * 2")):
        script.write_text(f"import persistmemo\ndef helper(x):\n    return {helper}\n"
                          f"@persistmemo.memoize\ndef f(x):\n    return {body}\nf(1)\n")
        run_py(script, cwd=tmp_path, env={"PERSISTMEMO_URL": url})
    data = as_json(pm("--url", url, "explain", "f", "--json", cwd=tmp_path))
    assert data["function"] == "e.f" and len(data["versions"]) == 3
    changes = [v["changes"] for v in data["versions"]]
    assert changes[0] is None and changes[1] == ["changed helper"]
    assert changes[2] == ["changed f"]
    assert set(data["versions"][0]["dependencies"]) >= {"helper", "f"}
    out = pm("--url", url, "explain", "e.f", cwd=tmp_path).stdout
    assert "3 stored code version(s)" in out and "changed helper" in out
    assert "prune --old-versions" in out


def test_maintain_on_a_directory_cache(project: Path) -> None:
    """maintain checks the directory cache and reports ok."""
    assert "ok: checked" in pm("maintain", cwd=project).stdout


def test_bad_url_is_a_clean_error(tmp_path: Path) -> None:
    """An unknown scheme prints an error and exits 2 (no traceback)."""
    res = pm("--url", "ftp://nowhere", "stats", cwd=tmp_path, ok=False)
    assert res.returncode == 2 and "unknown cache URL scheme" in res.stderr
    assert "Traceback" not in res.stderr


def test_memory_location_is_refused_clearly(tmp_path: Path) -> None:
    """memory:// has nothing to inspect from another process: exit 3 with a reason."""
    res = pm("--url", "memory://", "ls", cwd=tmp_path, ok=False)
    assert res.returncode == 3 and "one process" in res.stderr


@pytest.mark.redis
def test_ls_stats_clear_on_redis(tmp_path: Path, redis_url: str) -> None:
    """ls, stats and clear work on a real Redis, with --url after the subcommand."""
    from persistmemo.backends.redis import RedisBackend

    redis_url = redis_url.rpartition("/")[0] + "/7"  # a database of our own, emptied
    RedisBackend(redis_url).clear("")  # (SCAN + UNLINK: another test bans FLUSHDB)
    (tmp_path / "job.py").write_text(JOB)
    run_py(tmp_path / "job.py", cwd=tmp_path, env={"PERSISTMEMO_URL": redis_url})
    data = as_json(pm("ls", "--url", redis_url, "--json", cwd=tmp_path))
    assert data["total"] == 4 and data["entries"][0]["ttl_left_s"] is None
    stats = as_json(pm("stats", "--url", redis_url, "--json", cwd=tmp_path))
    square = next(r for r in stats["functions"] if r["function"] == "job.square")
    assert square["entries"] == 3 and square["misses"] == 3 and square["bytes"] > 0
    out = pm("clear", "--url", redis_url, "--function", "square", "--yes", cwd=tmp_path).stdout
    assert "deleted 3 entries" in out
    res = pm("ls", "--url", "redis://127.0.0.1:1/0", cwd=tmp_path, ok=False)
    assert res.returncode == 4 and "store failed" in res.stderr


def test_broken_project_file_and_bad_options_exit_2(tmp_path: Path) -> None:
    """A broken [tool.persistmemo] or a bad option value: exit 2 with the reason."""
    (tmp_path / "pyproject.toml").write_text('[tool.persistmemo]\nurl = ".c"\nttl = "x"\n')
    res = pm("ls", cwd=tmp_path, ok=False)
    assert res.returncode == 2 and "pyproject.toml: ttl must be a number" in res.stderr
    res = pm("--url", str(tmp_path), "ls", "--limit", "-1", cwd=tmp_path, ok=False)
    assert res.returncode == 2 and "not a count" in res.stderr
    res = pm("--url", str(tmp_path), "prune", "--max-bytes", "lots", cwd=tmp_path, ok=False)
    assert res.returncode == 2 and "not a size" in res.stderr
    assert not (tmp_path / ".c").exists()


def test_clear_namespace_and_password_masked(project: Path) -> None:
    """clear --namespace deletes one namespace; passwords never appear in output."""
    out = pm("clear", "--namespace", "other", "--yes", cwd=project).stdout
    assert "deleted 1 entries" in out
    assert as_json(pm("ls", "--json", cwd=project))["total"] == 3
    res = pm("--url", "redis://u:hunter2@127.0.0.1:1/0", "stats", cwd=project, ok=False)
    assert res.returncode == 4 and "hunter2" not in res.stderr + res.stdout


@pytest.mark.parametrize("store", ["disk", "redis"])
def test_entries_are_read_by_their_head_only(tmp_path: Path, store: str,
                                             request: pytest.FixtureRequest) -> None:
    """Listing a large entry reads its first 64 KiB, yet reports its full size."""
    from persistmemo import Cache
    from persistmemo._inspect import _heads, read_entries

    url = str(tmp_path / "c") if store == "disk" else request.getfixturevalue("redis_url")
    cache = Cache(url, namespace=tmp_path.name[-60:])

    @cache.memoize
    def big(n: int) -> bytes:
        return b"x" * n

    big(3_000_000)
    key = big.cache_key(3_000_000)
    ((head, size),) = _heads(cache.backend, [key])
    assert len(head) <= 1 << 16 and size > 3_000_000
    (entry,) = read_entries(cache.backend, [key])
    assert entry.readable and entry.size == size and "n" in entry.meta.decode("latin-1")
    cache.close()
