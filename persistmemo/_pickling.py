"""How a memoized function travels to other processes (multiprocessing, dask, ray ...).

Like a plain function: by reference (module + qualified name) when the receiving process can
import it, by value when the pickler would send the function itself by value. Plain ``pickle``
always pickles functions by reference; ``cloudpickle`` (dask, ray, loky) pickles functions of
``__main__``, of a notebook, or of a module registered with ``register_pickle_by_value`` by
value. We cannot ask the pickler what it would do with our object, so we look at who is
pickling: under cloudpickle a function it would ship by value is rebuilt on the other side from
the function (sent by value by cloudpickle) and the options; the cache is re-created from its
location there (a ``Cache`` pickles as its constructor arguments).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["reduce_memoized"]


def _under_cloudpickle() -> bool:
    frame = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return False
        if "cloudpickle" in frame.f_globals.get("__name__", ""):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _by_value_in_cloudpickle(func: Any) -> bool:
    module = getattr(func, "__module__", None)
    if module in (None, "__main__") or module not in sys.modules:
        return True
    cloudpickle = sys.modules.get("cloudpickle")  # loaded: it is the one pickling
    registry = getattr(cloudpickle, "list_registry_pickle_by_value", None)
    return registry is not None and module in registry()


def reduce_memoized(memo: Any) -> Any:
    """``__reduce__`` of a memoized function: by reference, or by value under cloudpickle."""
    func = memo.__wrapped__
    if _under_cloudpickle() and _by_value_in_cloudpickle(func):
        # The key builder travels as built here: the function's identity and fingerprint
        # must not be recomputed where there is no source file (and no same __main__).
        state = {k: v for k, v in vars(memo).items() if k not in ("_engine", "_entry", "_binder")}
        return _rebuild, (type(memo), state)
    return str(memo.__qualname__)  # by reference: the receiver imports the module


def _rebuild(cls: Any, state: dict[str, Any]) -> Any:
    memo = cls.__new__(cls)
    vars(memo).update(state)
    memo._engine = None
    return memo


_caches: dict[Any, Any] = {}


def rebuild_cache(cls: type, location: Any, options: tuple[tuple[str, Any], ...]) -> Any:
    """Re-create a cache from its constructor arguments, once per process and arguments."""
    try:
        return _caches[(cls, location, options)]
    except TypeError:  # unhashable arguments: a fresh cache
        return cls(location, **dict(options))
    except KeyError:
        cache = _caches[(cls, location, options)] = cls(location, **dict(options))
        return cache
