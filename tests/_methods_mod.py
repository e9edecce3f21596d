"""An importable class with memoized methods (pickled to spawn workers by tests)."""

from __future__ import annotations

import persistmemo


class K:
    """Instances key by their ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __persistmemo_key__(self) -> int:
        return self.n

    @persistmemo.memoize
    def m(self, x: int) -> int:
        return self.n * 100 + x

    @persistmemo.memoize
    async def am(self, x: int) -> int:
        return self.n * 100 + x


def call_bound(bound: object, x: int) -> int:
    """Call a (memoized) bound method received from another process."""
    return bound(x)  # type: ignore[operator,no-any-return]
