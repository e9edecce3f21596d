"""The deep-learning examples: a second run is served from the cache, changed weights are not."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from _types_helpers import need
from test_examples import run_example

RNN = re.compile(r"This run computed (\d+) new hidden states and reused (\d+) from the cache")
EMB = re.compile(r"This run computed (\d+) new batches and reused (\d+) from the cache")


@pytest.fixture(params=["torch", "numpy"])
def flavour(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the examples with torch (and pandas) or with numpy only."""
    if request.param == "torch":
        need("torch")
        need("pandas")
        need("pyarrow")
        monkeypatch.delenv("PERSISTMEMO_EXAMPLE_NUMPY", raising=False)
    else:
        monkeypatch.setenv("PERSISTMEMO_EXAMPLE_NUMPY", "1")
    return str(request.param)


def counts(pattern: re.Pattern[str], out: str) -> tuple[int, int]:
    """(computed, reused) from an example's summary line."""
    found = pattern.findall(out)
    assert found, out
    computed, reused = map(int, found[-1])
    return computed, reused


def test_rnn_states_are_computed_once_across_runs(tmp_path: Path, flavour: str) -> None:
    """2,000-step sequences sharing prefixes: shared states once; the second run reuses all."""
    url = str(tmp_path / "cache")
    first = run_example("rnn_hidden_states.py", [], tmp_path, url)
    assert f"backend: {flavour}" in first
    # A: 2000 new; B shares 1500 steps with A; C shares 1000 steps with A.
    assert counts(RNN, first) == (3500, 2500)
    second = run_example("rnn_hidden_states.py", [], tmp_path, url)
    assert counts(RNN, second) == (0, 6000)
    norms = [re.findall(r"\|h\| = ([\d.]+)", out) for out in (first, second)]
    assert norms[0] == norms[1] and len(norms[0]) == 3  # the very same final states
    assert "Nothing was recomputed" in second


def test_rnn_changed_weights_recompute(tmp_path: Path, flavour: str) -> None:
    """Other model weights are other keys: nothing is reused."""
    url = str(tmp_path / "cache")
    run_example("rnn_hidden_states.py", ["--length", "300"], tmp_path, url)
    other = run_example("rnn_hidden_states.py", ["--length", "300", "--seed", "1"], tmp_path, url)
    assert counts(RNN, other)[1] == 150 + 225  # only the prefixes shared inside this run


def test_embeddings_map_reuses_batches(tmp_path: Path, flavour: str) -> None:
    """f.map over batches: second run reuses all, more rows compute only new batches,
    changed weights compute everything."""
    url = str(tmp_path / "cache")
    assert counts(EMB, run_example("embeddings.py", [], tmp_path, url)) == (10, 0)
    assert counts(EMB, run_example("embeddings.py", [], tmp_path, url)) == (0, 10)
    more = run_example("embeddings.py", ["--rows", "1250"], tmp_path, url)
    assert counts(EMB, more) == (3, 10)
    assert counts(EMB, run_example("embeddings.py", ["--seed", "1"], tmp_path, url)) == (10, 0)


def test_examples_honour_persistmemo_url_on_redis(tmp_path: Path, redis_url: str) -> None:
    """With PERSISTMEMO_URL=redis://..., the second run is served from Redis."""
    os.environ.pop("PERSISTMEMO_EXAMPLE_NUMPY", None)
    assert counts(EMB, run_example("embeddings.py", ["--rows", "300"], tmp_path, redis_url)) \
        == (3, 0)
    assert counts(EMB, run_example("embeddings.py", ["--rows", "300"], tmp_path, redis_url)) \
        == (0, 3)
