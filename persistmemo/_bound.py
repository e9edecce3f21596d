"""A memoized method bound to an instance (``obj.method``): as deep and as portable as a method.

``obj.method`` is a plain ``functools.partial`` of the driver function, with the instance as its
first argument: CPython calls a plain partial without a frame or a unit of the recursion limit
of its own (a subclass of it would cost one on Python 3.11), so a memoized method recursion
costs what a memoized function's does. Its attributes are the function's, with every helper
that takes call arguments (``cache_key``, ``invalidate``, ``refresh``, ``map`` ...) bound to
the instance like the call itself; it pickles like a bound method (``getattr(obj, name)``).
"""

from __future__ import annotations

from functools import partial
from types import MethodType
from typing import Any

__all__ = ["Binder"]

# Helpers that take a call's arguments: the instance goes first, as for the call itself.
_TAKE_ARGS = ("cache_key", "explain_key", "explain", "invalidate", "refresh")


class Binder:
    """Builds ``obj.method`` for one memoized method (``entry``: its driver function)."""

    __slots__ = ("attrs", "entry", "helpers")

    def __init__(self, entry: Any, name: str) -> None:
        self.entry = entry
        attrs = dict(vars(entry))
        for special in ("__name__", "__qualname__", "__module__", "__doc__"):
            attrs[special] = getattr(entry, special)
        self.attrs = attrs
        helpers = [(n, getattr(entry, n)) for n in _TAKE_ARGS if hasattr(entry, n)]
        entry_map = getattr(entry, "map", None)
        if entry_map is not None:
            helpers.append(("map", _map_binder(entry_map)))

        def reduce_ex(obj: Any, protocol: int = 2) -> Any:
            return getattr, (obj, name)  # like a bound method: the receiver looks it up

        helpers.append(("__reduce_ex__", reduce_ex))
        self.helpers = tuple(helpers)

    def bind(self, obj: Any) -> Any:
        """Return ``obj.method``."""
        bound = partial(self.entry, obj)
        attrs = self.attrs.copy()
        for name, helper in self.helpers:
            attrs[name] = MethodType(helper, obj)
        bound.__dict__ = attrs
        return bound


def _map_binder(entry_map: Any) -> Any:
    def bound_map(obj: Any, calls: Any, /, **options: Any) -> Any:
        """``[obj.method(*c) for c in calls]`` (a tuple is positional arguments)."""
        return entry_map([(obj, *c) if type(c) is tuple else (obj, c) for c in calls],
                         **options)

    return bound_map
