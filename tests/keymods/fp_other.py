"""A second helper module (dependencies spread over several modules)."""

from keymods import fp_helpers

OFFSET = 5


def shift(x):
    return fp_helpers.normalize(x) + OFFSET
