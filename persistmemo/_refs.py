"""Small pieces of the dependency walk: global-name chains from bytecode, leaf digests.

Bytecode is only *read* here, to find the names a function loads; it is never hashed (the
fingerprint's code leaves hash the AST, see :mod:`persistmemo._source`).
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from typing import Any

from blake3 import blake3

from persistmemo._identity import is_user_module

__all__ = ["global_chains"]


def _short(data: bytes | str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return blake3(raw).hexdigest()[:32]


def _opcodes() -> tuple[int, ...]:
    import dis

    op = dis.opmap
    return (op["LOAD_GLOBAL"], op["LOAD_NAME"], op["LOAD_ATTR"], op.get("LOAD_METHOD", -1),
            op["EXTENDED_ARG"], op.get("CACHE", -1))


_OPS: tuple[int, ...] | None = None
# How the name index is packed in the oparg (3.11+: LOAD_GLOBAL; 3.12+: LOAD_ATTR too).
_GLOBAL_SHIFT = 1 if sys.version_info >= (3, 11) else 0
_ATTR_SHIFT = 1 if sys.version_info >= (3, 12) else 0


def global_chains(code: Any) -> list[tuple[str, ...]]:
    """Dotted name chains the code loads from globals (``("helpers", "normalize")``).

    A scan of ``co_code`` (2-byte instructions since 3.6; inline CACHE entries skipped), in the
    code object and every nested one. Only names are read from the bytecode, never hashed.
    """
    global _OPS
    if _OPS is None:
        _OPS = _opcodes()
    load_global, load_name, load_attr, load_method, extended, cache = _OPS
    chains: list[tuple[str, ...]] = []
    stack = [code]
    while stack:
        co = stack.pop()
        names, raw = co.co_names, co.co_code
        cur: list[str] | None = None
        ext = 0
        for i in range(0, len(raw), 2):
            op, arg = raw[i], raw[i + 1] | ext
            if op == extended:
                ext = arg << 8
                continue
            ext = 0
            if op == cache:
                continue
            if op in (load_global, load_name):
                if cur is not None:
                    chains.append(tuple(cur))
                cur = [names[arg >> _GLOBAL_SHIFT if op == load_global else arg]]
            elif cur is not None and op in (load_attr, load_method):
                cur.append(names[arg >> _ATTR_SHIFT if op == load_attr else arg])
            elif cur is not None:
                chains.append(tuple(cur))
                cur = None
        if cur is not None:
            chains.append(tuple(cur))
        stack.extend(c for c in reversed(co.co_consts) if inspect.iscode(c))
    return chains


def _library_name(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', '?')}"
    cls = type(obj)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(name, str) and callable(obj):
        # a library callable that is not a plain function (np.sum, a ufunc such as np.add, a
        # Cython function): by its own qualified name, else np.sum and np.mean would agree
        module = getattr(obj, "__module__", None)
        return f"{module if isinstance(module, str) else cls.__module__}.{name}"
    return f"instance of {cls.__module__}.{cls.__qualname__}"


def _module_version(mod: types.ModuleType) -> str:
    import importlib.metadata as md

    top = mod.__name__.split(".")[0]
    for dist in md.packages_distributions().get(top, []):
        try:
            return f"{dist}=={md.version(dist)}"
        except md.PackageNotFoundError:
            continue
    version = getattr(mod, "__version__", None)
    return f"{top}=={version}" if isinstance(version, str) else top


def _file_digest(mod: types.ModuleType) -> str:
    file = getattr(mod, "__file__", None)
    try:
        with open(str(file), "rb") as f:
            return _short(f.read())
    except OSError:
        return _short("nosource:" + mod.__name__)


def _functions_of(value: Any) -> list[Any]:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        found = (value.fget, value.fset, value.fdel)
        return [f for f in found if isinstance(f, types.FunctionType)]
    return [value] if isinstance(value, types.FunctionType) else []


def as_data(obj: Any) -> Any:
    """A key-encodable surrogate for common library objects that hold data, else None.

    Used for the values of globals only (never for arguments): a compiled regex, a
    ``functools.partial``, mappings and sequences of the standard library (``OrderedDict``,
    ``defaultdict``, ``Counter``, ``deque``, ``MappingProxyType``...), ``SimpleNamespace`` and
    ``argparse.Namespace`` would otherwise be keyed by their type's name only, and an edit to
    their contents would go unnoticed.
    """
    import collections.abc as abc

    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    re = sys.modules.get("re")
    if re is not None and isinstance(obj, re.Pattern):
        return (name, obj.pattern, obj.flags)
    if isinstance(obj, functools.partial):
        return (name, obj.func, obj.args, obj.keywords)
    if isinstance(obj, abc.Mapping):
        return (name, dict(obj), getattr(obj, "default_factory", None))
    if isinstance(obj, (abc.Sequence, abc.Set)) and not isinstance(obj, (str, bytes)):
        return (name, list(obj) if isinstance(obj, abc.Sequence) else frozenset(obj))
    if isinstance(obj, range):
        return (name, obj.start, obj.stop, obj.step)
    if name in ("types.SimpleNamespace", "argparse.Namespace"):
        return (name, vars(obj))
    return _state_of(obj, name)


def _state_of(obj: Any, name: str) -> Any:
    """More data-holding library objects: slices, operator getters, random generators..."""
    if isinstance(obj, slice):
        return (name, obj.start, obj.stop, obj.step)
    if name in ("operator.itemgetter", "operator.attrgetter", "operator.methodcaller"):
        return (name, obj.__reduce__())  # (class or partial(class, name, **kw), args)
    if name == "random.Random" or name == "random.SystemRandom":
        return (name, obj.getstate()) if name == "random.Random" else (name,)
    if name == "numpy.random._generator.Generator":
        return (name, obj.bit_generator.state)
    if name == "numpy.random.mtrand.RandomState":
        return (name, obj.get_state(legacy=False))
    if name == "numpy.poly1d":
        return (name, obj.coeffs, obj.variable)
    if name == "numpy.vectorize":
        return (name, obj.pyfunc, obj.otypes, sorted(obj.excluded), obj.signature)
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and callable(obj):  # functools.lru_cache and other wrappers
        return (name, wrapped)
    return None


def _owner_class(fn: Any) -> type | None:
    """The user class a method was defined in (``Model.score`` -> ``Model``), if reachable."""
    parts = str(getattr(fn, "__qualname__", "")).split(".")
    if len(parts) < 2 or "<locals>" in parts:
        return None
    obj = getattr(fn, "__globals__", {}).get(parts[0])
    for attr in parts[1:-1]:
        obj = getattr(obj, attr, None)
    if isinstance(obj, type) and is_user_module(obj.__module__):
        return obj
    return None


def _plain_attribute(attr: str, value: Any) -> bool:
    """A class attribute holding data (not a dunder/sunder, method, descriptor or class)."""
    if attr.startswith("_") and attr.endswith("_"):
        return False  # dunder and enum's _sunder_ machinery
    return not (isinstance(value, (types.FunctionType, staticmethod, classmethod, property, type))
                or hasattr(type(value), "__get__"))


_SINK_TYPES = frozenset({"builtins.int", "builtins.float", "builtins.complex", "builtins.list",
                         "builtins.dict", "builtins.set", "builtins.bytearray",
                         "collections.deque", "collections.Counter", "collections.defaultdict",
                         "collections.OrderedDict"})


def _is_sink(obj: Any) -> bool:
    """An accumulator whose contents a method-call statement cannot feed into the result."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" in _SINK_TYPES
