"""Memoized RNN hidden states: every prefix of every sequence is computed once, ever.

A small recurrent network reads token sequences of a few thousand steps. The hidden state after
each prefix is ``step(model, previous_state, token)``, memoized: its key is the model (class,
code and weights), the previous state's contents and the token, so sequences that share a
prefix share those states, and a second run reuses every one of them::

    python examples/rnn_hidden_states.py            # computes, stores
    python examples/rnn_hidden_states.py            # reuses: "computed 0 new hidden states"
    python examples/rnn_hidden_states.py --seed 1   # other weights: everything is new

torch is used when installed (an ``nn.Module`` and tensors as arguments and results), numpy
otherwise. The cache is ``$PERSISTMEMO_URL`` if set (a directory or a ``redis://`` URL), else
the directory ``.persistmemo-cache`` next to this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import time
from pathlib import Path
from typing import Any

import persistmemo

CACHE_DIR = Path(__file__).resolve().parent / ".persistmemo-cache"
LOCATION = os.environ.get("PERSISTMEMO_URL", "").strip() or str(CACHE_DIR)
VOCAB, DIM = 32, 16
# PERSISTMEMO_EXAMPLE_NUMPY=1 runs the numpy version even where torch is installed.
HAVE_TORCH = (importlib.util.find_spec("torch") is not None
              and os.environ.get("PERSISTMEMO_EXAMPLE_NUMPY") != "1")

cache = persistmemo.Cache(LOCATION, namespace="rnn-example")
computed = [0]  # how many times the step body ran in this process

if HAVE_TORCH:
    import torch

    class TinyRNN(torch.nn.Module):
        """An embedding and a tanh RNN cell: one step maps (state, token) to the next state."""

        def __init__(self, seed: int) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.embed = torch.nn.Embedding(VOCAB, DIM)
            self.cell = torch.nn.RNNCell(DIM, DIM)
            self.eval()

        def forward(self, state: Any, token: int) -> Any:
            return self.cell(self.embed(torch.tensor([token])), state)

    def make_model(seed: int) -> Any:
        """Return the frozen model for ``seed``."""
        return TinyRNN(seed)

    def initial_state() -> Any:
        """The state before the first token."""
        return torch.zeros(1, DIM)

    @cache.memoize
    def step(model: Any, state: Any, token: int) -> Any:
        """Return the hidden state after reading ``token`` in ``state``."""
        computed[0] += 1
        with torch.no_grad():
            return model(state, token)

else:
    import numpy as np

    def make_model(seed: int) -> Any:
        """Return the weights for ``seed`` (a dict of arrays is a valid key)."""
        rng = np.random.default_rng(seed)
        return {name: rng.normal(0, 0.3, shape) for name, shape in
                (("embed", (VOCAB, DIM)), ("w_in", (DIM, DIM)), ("w_rec", (DIM, DIM)),
                 ("bias", (DIM,)))}

    def initial_state() -> Any:
        """The state before the first token."""
        return np.zeros(DIM)

    @cache.memoize
    def step(model: Any, state: Any, token: int) -> Any:
        """Return the hidden state after reading ``token`` in ``state``."""
        computed[0] += 1
        x = model["embed"][token]
        return np.tanh(x @ model["w_in"] + state @ model["w_rec"] + model["bias"])


def sequences(length: int) -> dict[str, list[int]]:
    """Three token sequences of ``length`` steps that share prefixes (deterministic)."""
    rng = random.Random(42)
    base = [rng.randrange(VOCAB) for _ in range(length)]
    other = [rng.randrange(VOCAB) for _ in range(length)]
    return {"A": base, "B": base[: length * 3 // 4] + other[: length - length * 3 // 4],
            "C": base[: length // 2] + other[length // 2 :]}


def run(model: Any, tokens: list[int]) -> tuple[Any, int, int]:
    """Read ``tokens``; return the final state, states computed and states reused."""
    before_computed, before_hits = computed[0], step.cache_info().hits
    state = initial_state()
    for token in tokens:
        state = step(model, state, token)
    return state, computed[0] - before_computed, step.cache_info().hits - before_hits


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(description="Memoized RNN hidden states (run it twice).")
    parser.add_argument("--length", type=int, default=2000, help="steps per sequence")
    parser.add_argument("--seed", type=int, default=0, help="model weights seed")
    parser.add_argument("--clear", action="store_true", help="forget stored states first")
    args = parser.parse_args(argv)
    print(f"cache: {LOCATION}  backend: {'torch' if HAVE_TORCH else 'numpy'}")
    if args.clear:
        print(f"cleared {step.cache_clear()} stored states")
    model = make_model(args.seed)
    total_computed = total_reused = 0
    start = time.perf_counter()
    for name, tokens in sequences(args.length).items():
        state, new, reused = run(model, tokens)
        total_computed += new
        total_reused += reused
        norm = float((state * state).sum()) ** 0.5
        print(f"sequence {name} ({len(tokens)} steps): computed {new} states, reused {reused}"
              f"  |h| = {norm:.6f}")
    elapsed = time.perf_counter() - start
    print(f"This run computed {total_computed} new hidden states and reused {total_reused} "
          f"from the cache [{elapsed:.2f} s]")
    if total_computed == 0:
        print("Nothing was recomputed: every prefix's state came from the cache.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
