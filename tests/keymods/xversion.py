# ruff: noqa  (deliberately varied syntax: the fixture of a cross-version golden vector)
"""Fixed code for the cross-version golden vectors: do not edit (the digests are pinned)."""

import functools, math
SCALE = 2
TABLE = {"a": 1}
def helper(x, k=3):
    """doc"""
    return x * k + SCALE
class Model:
    rate = 0.5
    def run(self, x):
        return helper(x) * self.rate
def deco(f):
    @functools.wraps(f)
    def w(*a, **kw):
        return f(*a, **kw)
    return w
@deco
def top(x, y=2):
    """Top doc."""
    s = {1, 2, 3}
    t = f"{x!r:>10}"
    z = [i * SCALE for i in range(x) if i in s]
    async def inner(): return 1
    try:
        v = Model().run(x) + math.sqrt(y) + TABLE["a"]
    except (ValueError, KeyError) as e:
        v = 0
    match x:
        case 1: v += 1
        case _: pass
    lam = lambda q: q + 1
    return v, t, z, lam(1), (w := 5), x if x else y, {**TABLE}, [*z], x @ y if False else 0
