"""Embeddings of a text dataset by a frozen encoder, memoized per batch with ``f.map``.

The dataset is a pandas DataFrame of texts (a plain list of dicts without pandas); the encoder
is a small frozen network (torch when installed, numpy otherwise). ``embed.map(batches)``
looks every batch up in one round trip and computes only the missing ones. A batch's key is the
encoder (class, code and weights) plus the batch's rows, so::

    python examples/embeddings.py                 # computes every batch, stores
    python examples/embeddings.py                 # reuses every batch
    python examples/embeddings.py --rows 1200     # reuses the old batches, computes the new
    python examples/embeddings.py --seed 1        # changed weights: computes everything

The cache is ``$PERSISTMEMO_URL`` if set (a directory or a ``redis://`` URL), else the
directory ``.persistmemo-cache`` next to this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import time
import zlib
from pathlib import Path
from typing import Any

import persistmemo

CACHE_DIR = Path(__file__).resolve().parent / ".persistmemo-cache"
LOCATION = os.environ.get("PERSISTMEMO_URL", "").strip() or str(CACHE_DIR)
BUCKETS, DIM = 4096, 32
# PERSISTMEMO_EXAMPLE_NUMPY=1: numpy only (no torch, no pandas), even where they are installed.
HAVE_TORCH = (importlib.util.find_spec("torch") is not None
              and os.environ.get("PERSISTMEMO_EXAMPLE_NUMPY") != "1")
HAVE_PANDAS = HAVE_TORCH and importlib.util.find_spec("pandas") is not None and \
    importlib.util.find_spec("pyarrow") is not None
WORDS = ("cache", "key", "value", "tensor", "frame", "model", "memo", "store", "batch",
         "vector", "token", "layer", "weight", "shared", "prefix", "result", "fast", "exact")

cache = persistmemo.Cache(LOCATION, namespace="embeddings-example")
computed = [0]  # batches whose embedding body ran in this process


def trigrams(text: str) -> list[int]:
    """Hashed character trigrams of a text (crc32: stable across processes, unlike hash())."""
    padded = f"  {text}  "
    return [zlib.crc32(padded[i : i + 3].encode()) % BUCKETS for i in range(len(padded) - 2)]


if HAVE_TORCH:
    import torch

    class Encoder(torch.nn.Module):
        """Mean of hashed-trigram embeddings, then a linear projection; frozen."""

        def __init__(self, seed: int) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.bag = torch.nn.EmbeddingBag(BUCKETS, DIM, mode="mean")
            self.proj = torch.nn.Linear(DIM, DIM)
            self.eval()

        def forward(self, texts: list[str]) -> Any:
            ids = [trigrams(t) for t in texts]
            offsets = torch.tensor([0, *[len(i) for i in ids[:-1]]]).cumsum(0)
            flat = torch.tensor([x for i in ids for x in i])
            return torch.nn.functional.normalize(self.proj(self.bag(flat, offsets)), dim=1)

    def make_encoder(seed: int) -> Any:
        """Return the frozen encoder for ``seed``."""
        return Encoder(seed)

    def encode(encoder: Any, texts: list[str]) -> Any:
        """Embed ``texts`` into a (len, DIM) float32 tensor."""
        with torch.no_grad():
            return encoder(texts)

else:
    import numpy as np

    def make_encoder(seed: int) -> Any:
        """Return the frozen encoder's weights for ``seed``."""
        rng = np.random.default_rng(seed)
        return {"table": rng.normal(0, 1, (BUCKETS, DIM)).astype(np.float32),
                "proj": rng.normal(0, 0.2, (DIM, DIM)).astype(np.float32)}

    def encode(encoder: Any, texts: list[str]) -> Any:
        """Embed ``texts`` into a (len, DIM) float32 array."""
        rows = np.stack([encoder["table"][trigrams(t)].mean(axis=0) for t in texts])
        out = rows @ encoder["proj"]
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@cache.memoize
def embed(encoder: Any, batch: Any) -> Any:
    """Return the embeddings of one batch (a DataFrame slice or a tuple of texts)."""
    computed[0] += 1
    texts = list(batch["text"]) if HAVE_PANDAS else list(batch)
    return encode(encoder, texts)


def dataset(rows: int) -> Any:
    """A deterministic dataset of short texts: the first rows never depend on ``rows``."""
    rng = random.Random(7)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(rows)]
    if HAVE_PANDAS:
        import pandas as pd

        return pd.DataFrame({"id": range(rows), "text": texts})
    return texts


def batches(data: Any, size: int) -> list[Any]:
    """Consecutive batches of ``size`` rows."""
    n = len(data)
    if HAVE_PANDAS:
        return [data.iloc[i : i + size] for i in range(0, n, size)]
    return [tuple(data[i : i + size]) for i in range(0, n, size)]


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(description="Memoized embeddings with f.map (run twice).")
    parser.add_argument("--rows", type=int, default=1000, help="rows in the dataset")
    parser.add_argument("--batch", type=int, default=100, help="rows per batch")
    parser.add_argument("--seed", type=int, default=0, help="encoder weights seed")
    parser.add_argument("--clear", action="store_true", help="forget stored embeddings first")
    args = parser.parse_args(argv)
    print(f"cache: {LOCATION}  encoder: {'torch' if HAVE_TORCH else 'numpy'}  "
          f"dataset: {'pandas DataFrame' if HAVE_PANDAS else 'list of texts'}")
    if args.clear:
        print(f"cleared {embed.cache_clear()} stored batches")
    encoder = make_encoder(args.seed)
    parts = batches(dataset(args.rows), args.batch)
    start = time.perf_counter()
    before_hits = embed.cache_info().hits
    results = embed.map([(encoder, part) for part in parts])
    elapsed = time.perf_counter() - start
    reused = embed.cache_info().hits - before_hits
    shape = (sum(len(r) for r in results), len(results[0][0]) if results else 0)
    print(f"embedded {shape[0]} rows into {shape[1]} dimensions in {len(parts)} batches "
          f"[{elapsed:.2f} s]")
    print(f"This run computed {computed[0]} new batches and reused {reused} from the cache")
    if computed[0] == 0:
        print("Nothing was recomputed: every batch came from the cache.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
