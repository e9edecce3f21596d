"""The normalised text of one function's or class's own code (the leaf of a fingerprint).

The source (``inspect.getsource``) is parsed with :mod:`ast` and serialised by a
version-tolerant walker: node type names and non-empty fields only, no line numbers, no
comments, no docstrings, no decorators of the outermost definition. Keys must not change across
Python versions, so bytecode is never hashed when the source is available. Indented source
(methods, nested functions) is parsed inside an ``if 1:`` block instead of being dedented, so
whitespace inside string literals is kept exactly. A lambda is located among the lambdas of its
source lines by matching its code.

Only code built with ``exec`` (no source) falls back to a bytecode text, marked with the Python
version because bytecode changes between versions; its constants are encoded canonically, so
set literals do not depend on ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import ast
import inspect
import sys
from typing import Any

__all__ = ["code_text"]


def dump_ast(node: Any) -> str:
    """Serialise an AST: type names and non-empty fields (fields new Pythons add stay empty)."""
    if isinstance(node, ast.AST):
        parts = [type(node).__name__]
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == []:
                continue
            parts.append(f"{name}={dump_ast(value)}")
        return "(" + ",".join(parts) + ")"
    if isinstance(node, list):
        return "[" + ",".join(dump_ast(x) for x in node) + "]"
    return repr(node)


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]


def parse_block(source: str) -> list[ast.stmt]:
    """Parse a block of source lines that may be indented, without touching string literals."""
    first = next((line for line in source.splitlines() if line.strip()), "")
    if first[:1] in (" ", "\t"):
        tree = ast.parse("if 1:\n" + source)
        node = tree.body[0]
        assert isinstance(node, ast.If)
        return node.body
    return ast.parse(source).body


def _find_lambda(stmts: list[ast.stmt], code: Any) -> ast.Lambda | None:
    lambdas = [n for s in stmts for n in ast.walk(s) if isinstance(n, ast.Lambda)]
    if len(lambdas) > 1:  # several on these lines: the one whose compiled code matches
        matches = []
        for lam in lambdas:
            expr = ast.Expression(body=lam)
            ast.fix_missing_locations(expr)
            try:
                compiled = compile(expr, "<lambda>", "eval")
            except SyntaxError:  # e.g. a lambda using names of an enclosing class scope
                continue
            inner = next((c for c in compiled.co_consts if inspect.iscode(c)), None)
            if inner is not None and inner.co_code == code.co_code and \
                    inner.co_names == code.co_names and inner.co_varnames == code.co_varnames:
                matches.append(lam)
        lambdas = matches
    return lambdas[0] if lambdas else None


def _source_text(obj: Any) -> str | None:
    code = getattr(obj, "__code__", None)
    try:
        # From the code object: getsource(function) follows __wrapped__ to another function.
        source = inspect.getsource(code if code is not None else obj)
        stmts = parse_block(source)
    except (OSError, TypeError, SyntaxError, IndentationError, IndexError):
        return None
    if getattr(obj, "__name__", "") == "<lambda>" and code is not None:
        lam = _find_lambda(stmts, code)
        return None if lam is None else "lambda:" + dump_ast(lam)
    if not stmts:
        return None
    node = stmts[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return None  # getsource found something else (a re-bound name, an exec'd string)
    node.decorator_list = []
    _strip_docstrings(node)
    return "ast:" + dump_ast(node)


def _const_text(c: Any) -> str:
    from persistmemo._canonical import canonical_bytes

    if inspect.iscode(c):
        return _bytecode_text(c)
    if c is Ellipsis:
        return "..."
    try:
        return canonical_bytes(c).hex()
    except TypeError:
        return type(c).__qualname__


def _bytecode_text(code: Any) -> str:
    consts = ",".join(_const_text(c) for c in code.co_consts)
    return f"{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"


def code_text(obj: Any) -> str:
    """Return the normalised text of a function's or class's own code (see module docstring)."""
    text = _source_text(obj)
    if text is not None:
        return text
    code = getattr(obj, "__code__", None)
    if code is None:
        return "nocode:" + getattr(obj, "__qualname__", type(obj).__qualname__)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    doc = "|doc" if getattr(obj, "__doc__", None) is not None else ""
    return f"bytecode{version}:{getattr(obj, '__qualname__', '?')}:{_bytecode_text(code)}{doc}"
