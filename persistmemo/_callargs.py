"""Functions and classes as argument values (``def f(x, fn=helper)``, a classmethod's ``cls``).

They have no canonical encoding of their own, but the fingerprint knows how to key code: an
argument that is a function, class or bound method of user code is written as its dependency
fingerprint (so editing ``helper`` makes ``f(x)`` miss), a library one by its qualified name
(``np.sum``). Installed by :class:`persistmemo.keys.KeyBuilder` as the encoder's fallback only
when an argument has no plain encoding, so ordinary calls never pay for it.
"""

from __future__ import annotations

import threading
import types
from typing import Any

from persistmemo._canonical import _state, _text
from persistmemo._fingerprint import Dependency, Fingerprint
from persistmemo._identity import is_user_module

__all__ = ["encode_code_argument"]

_MAX = 256
# stateless library callables keyed by their qualified name (np.add, np.sum, str.upper)
_LIBRARY_CALLABLES = frozenset({"numpy.ufunc", "numpy._ArrayFunctionDispatcher",
                                "builtins.method_descriptor", "builtins.wrapper_descriptor",
                                "builtins.classmethod_descriptor"})
_cache: dict[int, tuple[Any, Fingerprint]] = {}  # id -> (object kept alive, its fingerprint)
_lock = threading.Lock()


def _fingerprint(obj: Any) -> str:
    saved = _state.memo  # the walk encodes values of its own: not in this argument's memo
    _state.memo = None
    try:
        return _resolve(obj)
    finally:
        _state.memo = saved


def _resolve(obj: Any) -> str:
    with _lock:
        hit = _cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        fp = hit[1]
        fp.revalidate()  # identity checks only: a rebound global of the helper is noticed
        return fp.digest
    fp = Fingerprint(obj)
    digest = fp.digest  # may raise KeyEncodingError naming what the helper reads
    with _lock:
        if len(_cache) >= _MAX:
            _cache.clear()
        _cache[id(obj)] = (obj, fp)
    return digest


def _library_callable(obj: Any) -> bool:
    """A module-level builtin (``math.sqrt``) or a stateless library callable (``np.add``)."""
    if isinstance(obj, types.BuiltinFunctionType):
        return isinstance(getattr(obj, "__self__", None), (types.ModuleType, type(None)))
    return f"{type(obj).__module__}.{type(obj).__qualname__}" in _LIBRARY_CALLABLES


def code_leaf(obj: Any) -> Dependency | None:
    """The leaf of a function, class or method argument, or None for any other object."""
    from persistmemo._refs import _library_name, _short

    if isinstance(obj, types.MethodType):
        return None  # its __self__ is an object with no encoding
    if isinstance(obj, types.FunctionType):
        user = is_user_module(obj.__module__) or obj.__module__ is None
    elif isinstance(obj, type):
        user = is_user_module(obj.__module__)
    elif _library_callable(obj):
        user = False
    else:
        return None
    if user:
        return Dependency("code", _fingerprint(obj)[:32])
    return Dependency("library", _short(_library_name(obj)))


def encode_code_argument(v: Any, out: bytearray) -> bool:
    """The encoder's fallback for argument values: ``Q + text(kind) + text(digest)``."""
    leaf = code_leaf(v)
    if leaf is None:
        return False
    out += b"Q" + _text(leaf.kind) + _text(leaf.digest)
    return True
