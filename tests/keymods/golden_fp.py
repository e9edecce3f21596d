"""Fixed code for the golden fingerprint vectors: do not edit (the digests are pinned)."""

RATE = 0.5


def helper(x):
    return x * RATE


def golden(x, y=2):
    """A docstring (not part of the fingerprint)."""
    return helper(x) + y
