"""Helpers for fingerprint tests: functions, constants, a class, mutual recursion."""

import logging

EPS = 1e-9
TABLE = {"a": 1, "b": 2}
log = logging.getLogger("keymods")


def normalize(x):
    return x / (1 + EPS)


def scale(x, factor=2):
    return x * factor


def ping(n):
    return 0 if n <= 0 else pong(n - 1)


def pong(n):
    return 1 if n <= 0 else ping(n - 1)


class Scaler:
    factor = 3

    def apply(self, x):
        return normalize(x) * self.factor
