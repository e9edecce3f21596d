"""Function identity + bound arguments -> canonical bytes -> BLAKE3 digest -> key string.

This module defines a *persisted format*: a change to any byte it produces silently orphans
every stored entry (or worse, merges two). ``docs/format.md`` documents it and
``tests/test_keys.py`` pins it with golden vectors; bump :data:`KEY_FORMAT` on any change.
The value encoding itself lives in :mod:`persistmemo._canonical`.

Key string::

    pm:<KEY_FORMAT>:<namespace>:<module.qualname>:<fingerprint>:<64 hex BLAKE3 digest>

Every field before the digest is percent-encoded to ``[A-Za-z0-9_.~%-]`` so the prefix is
readable, injective, free of ``:`` and of glob metacharacters (safe in Redis ``SCAN MATCH``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from blake3 import blake3

from persistmemo._canonical import (
    _DISPATCH,
    _SCALARS,
    _enc,
    _key_error,
    _text,
    _u64,
    _Unencodable,
    canonical_bytes,
    register_key_encoder,
)
from persistmemo.errors import ConfigurationError, KeyEncodingError

__all__ = [
    "KEY_FORMAT",
    "KeyBuilder",
    "canonical_bytes",
    "code_fingerprint",
    "function_identity",
    "register_key_encoder",
]

KEY_FORMAT = 1


# -- function identity ----------------------------------------------------------------------


def function_identity(func: Callable[..., Any]) -> str:
    """Return ``module.qualname``; a script run as ``__main__`` is named after its file."""
    import pathlib

    module = getattr(func, "__module__", None) or "__unknown__"
    if module in ("__main__", "__mp_main__"):  # __mp_main__: the script in a spawn worker
        main = sys.modules.get(module)
        spec = getattr(main, "__spec__", None)
        file = getattr(main, "__file__", None)
        if spec is not None and getattr(spec, "name", None):
            module = str(spec.name)  # python -m package.module
        elif file:
            module = pathlib.Path(file).stem
    return f"{module}.{getattr(func, '__qualname__', getattr(func, '__name__', '?'))}"


def _dump_ast(node: Any) -> str:
    # A version-tolerant dump: empty/None fields (which new Python versions add) are skipped.
    import ast

    if isinstance(node, ast.AST):
        parts = [type(node).__name__]
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == []:
                continue
            parts.append(f"{name}={_dump_ast(value)}")
        return "(" + ",".join(parts) + ")"
    if isinstance(node, list):
        return "[" + ",".join(_dump_ast(x) for x in node) + "]"
    return repr(node)


def _strip_docstrings(tree: Any) -> None:
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]


def _code_dump(code: Any) -> str:
    # Fallback when the source is unavailable (exec, some REPLs): the bytecode and constants.
    import inspect

    consts = ",".join(_code_dump(c) if inspect.iscode(c) else repr(c) for c in code.co_consts)
    return f"{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"


def code_fingerprint(func: Callable[..., Any]) -> str:
    """Return 16 hex chars that change with the function's code but not its comments,
    docstrings, decorators or formatting."""
    import ast
    import inspect
    import textwrap

    target = inspect.unwrap(func)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(target)))
        fdef = tree.body[0]
        if isinstance(fdef, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            fdef.decorator_list = []
        _strip_docstrings(tree)
        text = "ast:" + _dump_ast(tree)
    except (OSError, TypeError, SyntaxError, IndexError):
        code = getattr(target, "__code__", None)
        if code is None:
            return "nocode"
        doc = target.__doc__
        text = "code:" + _code_dump(code) + "|doc" * (doc is not None)
    if getattr(target, "__name__", "") == "<lambda>" and hasattr(target, "__code__"):
        # getsource() returns whole lines: two lambdas on one line must still differ.
        text += "|" + _code_dump(target.__code__)
    return blake3(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _escape(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="_.-~") or "_"


# -- per-function key building -------------------------------------------------------------


class KeyBuilder:
    """Build the cache key of calls to one function (signature analysed once, at creation).

    Args:
        func: the function being memoized.
        namespace: groups keys (e.g. one per application sharing a Redis).
        version: pins the function's identity instead of its code fingerprint.
        ignore: parameter names left out of the key.
        key: optional ``key(*args, **kwargs) -> encodable`` replacing the arguments in the key.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        namespace: str = "default",
        version: str | int | None = None,
        ignore: Iterable[str] = (),
        key: Callable[..., Any] | None = None,
    ) -> None:
        import inspect

        self.func = func
        self.identity = function_identity(func)
        self.namespace = namespace
        self.version = version
        self.fingerprint = (
            "v-" + _escape(str(version)) if version is not None else code_fingerprint(func)
        )
        self.custom_key = key
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        self.ignore = frozenset(ignore)
        unknown = self.ignore - {p.name for p in params}
        if unknown:
            raise ConfigurationError(
                f"ignore={sorted(unknown)!r}: {self.identity}() has no such parameter(s); "
                f"it takes {[p.name for p in params]!r}"
            )
        self.names = tuple(p.name for p in params if p.name not in self.ignore)
        self.prefix = f"pm:{KEY_FORMAT}:{_escape(namespace)}:{_escape(self.identity)}:"
        self.version_prefix = f"{self.prefix}{self.fingerprint}:"
        self._seed = (f"pm{KEY_FORMAT}\0{namespace}\0{self.identity}\0{self.fingerprint}\0"
                      .encode("utf-8", "surrogatepass"))
        # Fast path: plain positional parameters, called positionally, no ignored names.
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self._simple = all(p.kind in positional for p in params) and not self.ignore
        self._n = len(params)
        self._defaults: tuple[Any, ...] = tuple(
            p.default for p in params if p.default is not p.empty
        )
        self._first_default = self._n - len(self._defaults)
        self._memo: dict[tuple[Any, ...], str] = {}
        # Closure cells holding plain scalars (a factory's parameters: `def make(k): @memoize
        # def f(x): return x * k`) can change results, so they join the key; other cells
        # (functions, the memoized function itself, mutable objects) are left out.
        code = getattr(func, "__code__", None)
        closure = getattr(func, "__closure__", None) or ()
        self._cells = tuple(zip(code.co_freevars, closure)) if code is not None else ()

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Return the key-relevant argument values in signature order (defaults applied).

        Raises TypeError exactly as calling the function would when the call does not bind.
        """
        if self._simple and not kwargs:
            n = len(args)
            if n == self._n:
                return args
            if self._first_default <= n < self._n:
                return args + self._defaults[n - self._first_default:]
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        return tuple(values[name] for name in self.names)

    def _encode_call(self, values: tuple[Any, ...], names: Sequence[str]) -> bytearray:
        out = bytearray(self._seed)
        out += _u64(len(values))
        for name, v in zip(names, values):
            fn = _DISPATCH.get(type(v))
            try:
                if fn is not None and type(v) in _SCALARS:
                    fn(v, out, 1)
                else:
                    _enc(v, out, 0)
            except _Unencodable as e:
                raise _key_error(e, name, self.identity) from None
        if self._cells:
            out += b"<"
            for name, cell in self._cells:
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if type(value) in _SCALARS:
                    out += _text(name)
                    _DISPATCH[type(value)](value, out, 1)
            out += b">"
        return out

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Return the key string of ``func(*args, **kwargs)``."""
        if not kwargs and self.custom_key is None and not self._cells:
            # Memo of recent keys for calls whose arguments are all immutable scalars of exact
            # types whose equality is identity of value (no float: -0.0 == 0.0; types are part
            # of the memo key: 1, True differ). Same arguments -> same key, so this is exact.
            for a in args:
                t = type(a)
                if t is int:
                    if a.bit_length() > 64:
                        break
                elif t is str or t is bytes:
                    if len(a) > 128:  # the memo must stay small: no big arguments in it
                        break
                elif t is not bool and a is not None:
                    break
            else:
                mk = (*map(type, args), *args)
                cached = self._memo.get(mk)
                if cached is None:
                    if len(self._memo) >= _MEMO_SIZE:
                        self._memo.clear()
                    cached = self._memo[mk] = self._key(args, kwargs)
                return cached
        return self._key(args, kwargs)

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.custom_key is not None:
            data = self._encode_call((self.custom_key(*args, **kwargs),), ("key=",))
        else:
            data = self._encode_call(self.bind(args, kwargs), self.names)
        return self.version_prefix + blake3(data).hexdigest()

    def describe(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        """Return a short digest of each argument's canonical encoding (for ``explain``)."""
        values = self.bind(args, kwargs)
        result = {}
        for name, v in zip(self.names, values):
            try:
                result[name] = blake3(canonical_bytes(v)).hexdigest()[:16]
            except KeyEncodingError as e:
                raise KeyEncodingError(
                    str(e).replace("argument 'value'", f"argument {name!r}"),
                    parameter=name, type_name=e.type_name) from None
        return result


_MEMO_SIZE = 4096
