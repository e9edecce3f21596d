"""A module defining ``compute`` (same name as in mod_b) for identity tests."""


def compute(x):
    return x + 1
