"""A module defining ``compute`` (same name as in mod_a) for identity tests."""


def compute(x):
    return x + 1
