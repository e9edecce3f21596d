"""Resolve what a memoized function depends on into a manifest of leaves (see _fingerprint).

The walk starts at the function passed to ``memoize`` and follows, cycle-safe and bounded:

- global names its code loads (``LOAD_GLOBAL``/``LOAD_NAME`` in the code object and every
  nested code object), followed along attribute chains while they go through user modules
  (``helpers.normalize``); builtins are not dependencies;
- closure cells, the defaults of helper functions, ``__wrapped__`` layers;
- for a user class: its normalised source, its user-code bases and the functions in its body.

Bytecode is only *read* here to find names (never hashed): the leaves hash the AST.
Names in the manifest are readable: the memoized function's own globals and closure cells by
their bare name (``SCALE``, ``k``), a global of another module as ``module.NAME``, a closure
cell of a helper as ``helper_name.cell``.
"""

from __future__ import annotations

import builtins
import types
from collections.abc import Mapping
from typing import Any

from persistmemo._canonical import _enc, _qualname, _state, _text, _Unencodable
from persistmemo._fingerprint import _ABSENT, Dependency
from persistmemo._identity import function_identity, is_persistmemo, is_user_module, module_name
from persistmemo._refs import (
    _file_digest,
    _functions_of,
    _is_sink,
    _library_name,
    _module_version,
    _owner_class,
    _plain_attribute,
    _short,
    as_data,
    global_chains,
)
from persistmemo._source import code_text, effect_only_names
from persistmemo.errors import ConfigurationError, KeyEncodingError

__all__ = ["Resolver"]

_MAX_DEPTH = 40  # code reached through more helpers than this is recorded without descending
_MAX_OBJECTS = 5000


class Resolver:
    """One walk over a function's dependencies (see the module docstring)."""

    def __init__(self, func: Any, ignore: frozenset[str],
                 memo: dict[int, tuple[Any, Dependency, Any]]) -> None:
        self.func = func
        self.ignore = ignore
        self.memo = memo  # id -> (obj, leaf, from source): shared by the walks of one function
        self.manifest: dict[str, Dependency] = {}
        self.dict_checks: list[tuple[Mapping[str, Any], str, Any]] = []
        self.cell_checks: list[tuple[Any, Any]] = []
        self.code_checks: list[tuple[Any, Any]] = []  # (function, its __code__): autoreload
        self._bindings: set[tuple[int, str]] = set()
        self._seen: dict[int, Dependency] = {}
        self._keep: list[Any] = []
        self._ignored_hits: set[str] = set()
        self._top_module = getattr(func, "__module__", None)
        self._where = function_identity(func)
        self._depth = 0
        self._active: set[int] = set()
        self.used: set[int] = set()  # memo entries this walk used (the rest can be dropped)

    # -- entry ---------------------------------------------------------------------------------
    def resolve(self, depends_on: tuple[Any, ...]) -> None:
        """Walk from the function, then add ``depends_on`` objects."""
        top = self._unwrap_memoized(self.func)
        if isinstance(top, type):  # a class passed as an argument (see _callargs)
            self._visit(top, top.__qualname__)
        else:
            self._visit_function(top, getattr(top, "__qualname__", "<function>"), top=True)
            owner = _owner_class(top)
            if owner is not None:  # a memoized method: self.helper() is its class's code
                self._visit(owner, owner.__qualname__)
        for i, obj in enumerate(depends_on):
            self._depends_on(i, obj)
        unknown = self.ignore - self._ignored_hits
        if unknown:
            raise ConfigurationError(
                f"ignore_deps={sorted(unknown)!r}: {self._where}() reads no such global or "
                f"closure variable; its dependencies are {sorted(self.manifest)!r}")

    def _depends_on(self, i: int, obj: Any) -> None:
        if isinstance(obj, types.ModuleType):
            if is_user_module(obj.__name__):
                self._record(f"depends_on:{obj.__name__}", Dependency("code", _file_digest(obj)))
            else:
                self._record(f"depends_on:{obj.__name__}",
                             Dependency("library", _short(_module_version(obj))))
            return
        name = getattr(obj, "__qualname__", None)
        label = f"depends_on:{name}" if isinstance(name, str) else f"depends_on[{i}]"
        self._visit(obj, label)

    # -- recording -----------------------------------------------------------------------------
    def _record(self, name: str, dep: Dependency) -> None:
        old = self.manifest.get(name)
        if old is not None and "effect" in (old.kind, dep.kind) and old.kind != dep.kind:
            if dep.kind != "effect":  # read somewhere after all: the contents count
                self.manifest[name] = dep
            return
        base, n = name, 2
        while name in self.manifest and self.manifest[name] != dep:
            name, n = f"{base}#{n}", n + 1
        self.manifest[name] = dep

    def _skip(self, *names: str) -> bool:
        hit = [n for n in names if n in self.ignore]
        self._ignored_hits.update(hit)
        return bool(hit)

    # -- objects -------------------------------------------------------------------------------
    @staticmethod
    def _unwrap_memoized(obj: Any) -> Any:
        for _ in range(10):  # a memoized callee counts by the function it wraps
            if not is_persistmemo(obj):
                return obj
            wrapped = getattr(obj, "__wrapped__", None)
            if wrapped is None:
                return None
            obj = wrapped
        return obj

    def _visit(self, obj: Any, name: str) -> None:
        if obj is _ABSENT:
            self._record(name, Dependency("missing", _short("missing")))
            return
        obj = self._unwrap_memoized(obj)
        if obj is None:
            return  # persistmemo's own objects are never dependencies
        known = self._seen.get(id(obj))
        if known is not None:
            self._record(name, known)
            return
        if len(self._seen) > _MAX_OBJECTS:
            raise ConfigurationError(
                f"{self._where}() reaches more than {_MAX_OBJECTS} objects; pin its identity "
                f"with version= or leave large globals out with ignore_deps=")
        self._active.add(id(obj))
        try:
            dep = self._leaf(obj, name)
        finally:
            self._active.discard(id(obj))
        self._seen[id(obj)] = dep
        self._keep.append(obj)
        self._record(name, dep)

    def _leaf(self, obj: Any, name: str) -> Dependency:
        if isinstance(obj, types.MethodType):
            self._visit(obj.__self__, f"{name}.__self__")
            obj = obj.__func__
        elif isinstance(obj, types.BuiltinMethodType) and not isinstance(
                obj.__self__, (types.ModuleType, type(None), type)):
            self._visit(obj.__self__, f"{name}.__self__")  # RATES.get, rng.normal: the owner
        if isinstance(obj, types.FunctionType):
            if is_user_module(obj.__module__) or obj.__module__ is None:
                return self._visit_function(obj, name)
        elif isinstance(obj, type):
            if is_user_module(obj.__module__):
                return self._visit_class(obj, name)
        elif isinstance(obj, types.ModuleType):
            if is_user_module(obj.__name__):
                return Dependency("code", _file_digest(obj))
        elif not isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            return self._value(obj, name)
        return Dependency("library", _short(_library_name(obj)))

    def _value(self, obj: Any, name: str) -> Dependency:
        self.used.add(id(obj))
        cached = self.memo.get(id(obj))
        if cached is not None and cached[0] is obj:
            dep: Dependency = cached[1]
            self._value_classes(cached[2])
            return dep
        found: set[type] = set()
        try:
            dep = Dependency("value", _short(self._encode(obj, name, found)))
        except _Unencodable as e:
            # A library object with no encoding at all (a logger, a client, a session) is
            # keyed by its type's name; a user-class instance, or a value refused for a reason
            # (an object array), is an error naming the variable.
            if e.path or e.reason or is_user_module(type(obj).__module__) or \
                    e.type_name != _qualname(type(obj)):
                raise self._error(name, e) from None
            dep = Dependency("library", _short(_library_name(obj)))
        classes = tuple(sorted((c for c in found if is_user_module(c.__module__)),
                               key=lambda c: (c.__module__, c.__qualname__)))
        self.memo[id(obj)] = (obj, dep, classes)
        self._value_classes(classes)
        return dep

    def _value_classes(self, classes: tuple[type, ...]) -> None:
        """The user classes of dataclass/enum/hooked values in a global: their code counts
        (an edited method of a global `SCORER = Scorer(2)` must change the key)."""
        for cls in classes:
            self._visit(cls, f"{module_name(cls.__module__)}.{cls.__qualname__}")

    def _encode(self, obj: Any, name: str, found: set[type]) -> bytes:
        out = bytearray()
        saved, saved_types = _state.fallback, _state.types
        _state.fallback = lambda v, o: self._fallback(v, o, name)
        _state.types = found
        try:
            _enc(obj, out, 0)
        except RecursionError:
            raise KeyEncodingError(f"cannot fingerprint {self._where}(): {name!r} is nested too "
                                   f"deeply; leave it out with ignore_deps=") from None
        finally:
            _state.fallback, _state.types = saved, saved_types
        return bytes(out)

    def _fallback(self, v: Any, out: bytearray, name: str) -> bool:
        # Inside a global's value: functions/classes/modules by fingerprint, library objects by
        # name; instances of user classes without an encoding stay an error.
        if not isinstance(v, (types.FunctionType, type, types.ModuleType, types.MethodType,
                              types.BuiltinFunctionType)) and is_user_module(type(v).__module__):
            return False
        data = as_data(v)  # a regex, a partial, an OrderedDict...: by contents
        if data is not None:
            out += b"V"
            _enc(data, out, 0)
            return True
        if id(v) in self._active:
            return False
        label = getattr(v, "__qualname__", None) or getattr(v, "__name__", None) or "?"
        self._visit(v, f"{name}<{label}>")
        dep = self._seen.get(id(self._unwrap_memoized(v)), Dependency("persistmemo", ""))
        out += b"Q" + _text(dep.kind) + _text(dep.digest)
        return True

    def _error(self, name: str, e: _Unencodable) -> KeyEncodingError:
        short = e.type_name.rsplit(".", 1)[-1]
        var = name.split(".")[-1].split("<")[0]
        if var.endswith("=)"):  # a helper's default value: helper(param=)
            var = var[var.index("(") + 1:-2]
        detail = f" ({e.reason})" if e.reason else ""
        where = name + "".join(reversed(e.path))
        return KeyEncodingError(
            f"cannot fingerprint {self._where}(): it reads {where!r}, a {e.type_name}, which has "
            f"no canonical encoding{detail}, so a change to it could not invalidate stored "
            f"results. Fix: if it cannot change the result, leave it out with "
            f"ignore_deps=({var!r},); else give {short} a __persistmemo_key__(self) method or "
            f"call persistmemo.register_key_encoder({short}, fn), make it a dataclass, or pass "
            f"it as an argument.",
            parameter=where, type_name=e.type_name)

    # -- code ----------------------------------------------------------------------------------
    def _code_dep(self, obj: Any) -> tuple[Dependency, bool]:
        """The code leaf of a function/class and whether it came from source (not bytecode)."""
        self.used.add(id(obj))
        cached = self.memo.get(id(obj))
        if cached is not None and cached[0] is obj:
            return cached[1], cached[2]
        text = code_text(obj)
        dep = Dependency("code", _short(text))
        self.memo[id(obj)] = (obj, dep, text.startswith(("ast:", "lambda:")))
        return dep, text.startswith(("ast:", "lambda:"))

    def _visit_function(self, fn: Any, name: str, top: bool = False) -> Dependency:
        self.code_checks.append((fn, fn.__code__))
        dep = self._code_dep(fn)[0]
        self._seen[id(fn)] = dep  # before descending: recursion reaches it again
        if top:
            self._record(name, dep)
        if self._depth >= _MAX_DEPTH:
            return dep
        self._depth += 1
        try:
            self._references(fn, "" if top else name, top)
        finally:
            self._depth -= 1
        return dep

    def _scope(self, fn: Any) -> str:
        mod = getattr(fn, "__module__", None)
        return "" if mod == self._top_module else f"{module_name(mod or '?')}."

    def _references(self, fn: Any, label: str, top: bool) -> None:
        code = fn.__code__
        scope = self._scope(fn)
        effects = effect_only_names(fn)
        for chain in global_chains(code):
            self._global(fn.__globals__, chain, scope, chain[0] in effects)
        for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
            full = f"{label}.{var}" if label else var
            if self._skip(var, full):
                continue
            try:
                value = cell.cell_contents
            except ValueError:
                value = _ABSENT
            self.cell_checks.append((cell, value))
            if var in effects:
                self._effect(value, full)
            else:
                self._visit(value, full)
        if not top:  # the memoized function's own defaults are bound into the arguments
            self._defaults(fn, code, label)
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            self._visit(wrapped, f"{label or fn.__qualname__}.__wrapped__")

    def _defaults(self, fn: Any, code: Any, label: str) -> None:
        defaults = fn.__defaults__ or ()
        names = code.co_varnames[code.co_argcount - len(defaults):code.co_argcount]
        items = list(zip(names, defaults)) + sorted((fn.__kwdefaults__ or {}).items())
        for pname, value in items:
            full = f"{label}({pname}=)"
            if not self._skip(pname, full):
                self._visit(value, full)

    def _effect(self, obj: Any, name: str) -> None:
        """A variable used only for side effects: keyed by its type (not in the seen memo, so
        a helper that reads it still records its contents)."""
        obj = self._unwrap_memoized(obj)
        if obj is None or obj is _ABSENT or isinstance(obj, (types.FunctionType, type,
                                                             types.ModuleType)):
            if obj is not None:
                self._visit(obj, name)
            return
        self._active.add(id(obj))  # (the top object itself is not a nested library object)
        try:
            dep: Dependency | None = self._value(obj, name)
        except KeyEncodingError:  # a user object with no encoding: fine, it is only a sink
            dep = None
        finally:
            self._active.discard(id(obj))
        if dep is not None and dep.kind == "value" and not _is_sink(obj):
            # a dataclass, a random generator, an array...: a method call on it can shape the
            # result (`SCALER.apply_inplace(data)`, `rng.shuffle(idx)`): its contents count
            self._record(name, dep)
            return
        if dep is None or dep.kind != "library":  # (a logger stays a library object)
            cls = type(obj)
            dep = Dependency("effect", _short(f"effect:{cls.__module__}.{cls.__qualname__}"))
        self._record(name, dep)

    def _global(self, g: dict[str, Any], chain: tuple[str, ...], scope: str,
                effect: bool = False) -> None:
        root = chain[0]
        if root not in g and hasattr(builtins, root):
            return  # a builtin (len, print...): never a dependency
        if self._skip(root, scope + root):
            return
        obj = g.get(root, _ABSENT)
        self._bind(g, root, obj)
        name = scope + root
        for attr in chain[1:]:
            if not (isinstance(obj, types.ModuleType) and is_user_module(obj.__name__)):
                break
            d = vars(obj)
            if attr not in d and "__getattr__" in d:
                break  # provided lazily by the module's __getattr__: the module as a whole
            name = f"{name}.{attr}"  # the chain as written: helpers.normalize
            if self._skip(attr, name):
                return
            obj = d.get(attr, _ABSENT)
            self._bind(d, attr, obj)
        if effect:
            self._effect(obj, name)
        else:
            self._visit(obj, name)

    def _bind(self, d: Mapping[str, Any], name: str, obj: Any) -> None:
        key = (id(d), name)
        if key not in self._bindings:
            self._bindings.add(key)
            self.dict_checks.append((d, name, obj))

    def _class_value(self, cls: type, attr: str, value: Any, name: str) -> None:
        """A class attribute's value (``Model.factor = 7`` in a notebook is noticed); one with
        no encoding is recorded by its type, as before (the class source covers its code)."""
        if self._skip(attr, name):
            return
        self._bind(cls.__dict__, attr, value)
        try:
            self._visit(value, name)
        except KeyEncodingError:
            t = type(value)
            self._record(name, Dependency("effect",
                                          _short(f"effect:{t.__module__}.{t.__qualname__}")))

    def _visit_class(self, cls: type, name: str) -> Dependency:
        dep, has_source = self._code_dep(cls)
        self._seen[id(cls)] = dep
        if self._depth >= _MAX_DEPTH:
            return dep
        self._depth += 1
        try:
            for base in cls.__mro__[1:]:
                if is_user_module(base.__module__):
                    self._visit(base, f"{module_name(base.__module__)}.{base.__qualname__}")
            for attr, value in sorted(vars(cls).items()):
                if _plain_attribute(attr, value):
                    self._class_value(cls, attr, value, f"{name}.{attr}")
                    continue
                for fn in _functions_of(value):
                    if not is_user_module(fn.__module__):
                        continue  # inherited machinery (enum, dataclasses...)
                    if has_source and str(fn.__code__.co_filename).startswith("<"):
                        continue  # generated (dataclass __init__...): the class source covers it
                    self._visit(fn, f"{name}.{attr}")
        finally:
            self._depth -= 1
        return dep
