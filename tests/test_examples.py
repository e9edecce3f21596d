"""The examples, docker-compose.yml and the README's set-up commands stay true."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"
COMPOSE = ROOT / "docker-compose.yml"
REDIS_URL = "redis://redis:6379/0"
WORKER_SCRIPT = "examples/shared_workers.py"
MAIN_COMMAND = "python examples/fibonacci.py"
TEST_COMMAND = "pip install 'torch==2.13.0' -e '.[test]' && python -m pytest"
SUMMARY = re.compile(r"This run computed (\d+) new results and reused (\d+) from the cache")
TOTAL = re.compile(r"total: (\d+) workers, (\d+) calls, (\d+) distinct inputs, "
                   r"computed (\d+), reused (\d+)")


def run_example(script: str, args: list[str], tmp_path: Path, url: str) -> str:
    """Run an example in a subprocess with an isolated cache and home; return its stdout."""
    env = {**os.environ, "PERSISTMEMO_URL": url, "HOME": str(tmp_path / "home"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_fibonacci_second_run_is_served_from_the_cache(tmp_path: Path) -> None:
    """The second run of fibonacci.py computes nothing and reuses the stored results."""
    cache_dir = tmp_path / "cache"
    first = run_example("fibonacci.py", [], tmp_path, str(cache_dir))
    assert f"cache: {cache_dir}" in first
    assert "fib(30) = 832040" in first
    assert "fib(300) = 2222322446" in first
    computed, _ = map(int, SUMMARY.findall(first)[0])
    assert computed == 301  # fib(0) .. fib(300), each exactly once

    second = run_example("fibonacci.py", [], tmp_path, str(cache_dir))
    computed, reused = map(int, SUMMARY.findall(second)[0])
    assert (computed, reused) == (0, 2)  # fib(30) and fib(300), each one hit
    assert "Nothing was recomputed" in second
    assert "misses=0" in second


def test_fibonacci_clear_forgets_stored_results(tmp_path: Path) -> None:
    """fibonacci.py --clear deletes its stored results, so everything is computed again."""
    cache_dir = str(tmp_path / "cache")
    run_example("fibonacci.py", ["--n", "20", "--big", "60"], tmp_path, cache_dir)
    out = run_example("fibonacci.py", ["--n", "20", "--big", "60", "--clear"], tmp_path, cache_dir)
    assert "cleared 61 stored results" in out
    assert SUMMARY.findall(out)[0][0] == "61"


def check_totals(out: str) -> tuple[int, int, int]:
    """Return (calls, distinct inputs, computed) from the launcher's total line."""
    _workers, calls, distinct, computed, reused = map(int, TOTAL.findall(out)[0])
    assert computed + reused == calls
    return calls, distinct, computed


def test_shared_workers_compute_each_distinct_input_once(tmp_path: Path) -> None:
    """Worker processes on one directory cache compute each distinct input exactly once."""
    url = str(tmp_path / "shared")
    args = ["--url", url, "--workers", "2", "--size", "8", "--overlap", "4", "--cost", "0.05"]
    out = run_example("shared_workers.py", args, tmp_path, "")
    calls, distinct, computed = check_totals(out)
    assert (calls, distinct, computed) == (16, 12, 12)
    assert "computed exactly once" in out
    assert re.search(r"worker-a: computed \d+, reused \d+", out)
    assert re.search(r"worker-b: computed \d+, reused \d+", out)

    again = run_example("shared_workers.py", [*args, "--keep"], tmp_path, "")
    assert check_totals(again) == (16, 12, 0)


def test_shared_worker_mode_reports_computed_and_reused(tmp_path: Path) -> None:
    """--worker (the docker compose mode) reads PERSISTMEMO_URL and reports in JSON."""
    url = str(tmp_path / "shared")
    args = ["--worker", "--name", "worker-a", "--inputs", "0-3,10", "--cost", "0"]
    reports = []
    for _ in range(2):
        out = run_example("shared_workers.py", args, tmp_path, url)
        reports.append(json.loads(out.splitlines()[-1].removeprefix("RESULT ")))
    assert [(r["worker"], r["inputs"], r["computed"], r["reused"]) for r in reports] == [
        ("worker-a", 5, 5, 0), ("worker-a", 5, 0, 5)]


def test_shared_workers_on_redis(tmp_path: Path, redis_url: str) -> None:
    """Worker processes sharing a real Redis compute each distinct input exactly once."""
    args = ["--url", redis_url, "--workers", "3", "--size", "6", "--overlap", "3",
            "--cost", "0.05"]
    out = run_example("shared_workers.py", args, tmp_path, "")
    assert check_totals(out) == (18, 12, 12)


def load_compose() -> dict[str, Any]:
    """Parse docker-compose.yml with PyYAML (skip the structural checks without it)."""
    if importlib.util.find_spec("yaml") is None:
        pytest.skip("PyYAML not installed (the text checks still ran)")
    import yaml

    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_file_text() -> None:
    """docker-compose.yml names redis, both workers, the Redis URL and the worker script."""
    text = COMPOSE.read_text()
    for needle in ("redis:", "worker-a:", "worker-b:", "image: redis:7", "--appendonly",
                   REDIS_URL, WORKER_SCRIPT, "--worker", "examples/Dockerfile"):
        assert needle in text, needle
    dockerfile = (EXAMPLES / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install ." in dockerfile


def test_compose_file_structure() -> None:
    """Both workers build the example image, wait for Redis and share it by URL."""
    compose = load_compose()
    services = compose["services"]
    assert {"redis", "worker-a", "worker-b"} <= set(services)
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    for name in ("worker-a", "worker-b"):
        worker = services[name]
        assert worker["environment"]["PERSISTMEMO_URL"] == REDIS_URL
        assert worker["command"][:3] == ["python", WORKER_SCRIPT, "--worker"]
        assert "redis" in worker["depends_on"]
        assert (ROOT / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()


def test_readme_names_the_two_setup_commands() -> None:
    """The README's set-up block holds exactly the example and the test commands."""
    text = README.read_text()
    block = re.search(r"<!-- setup-commands -->\s*```(?:sh|bash|console)?\n(.*?)```", text,
                      re.DOTALL)
    assert block is not None, "README lacks the marked set-up block"
    commands = [line for line in block.group(1).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands == [TEST_COMMAND, MAIN_COMMAND]  # install first: works on a fresh machine
    assert WORKER_SCRIPT in text and "docker compose up" in text
    assert ".ci/run" in text
