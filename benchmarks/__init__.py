"""persistmemo's benchmarks, side by side with diskcache and peers (see README.md)."""
