"""The normalised text of one function's or class's own code (the leaf of a fingerprint).

The source (``linecache``, so notebook cells and IPython work too) is parsed with :mod:`ast`:
a function's ``def`` alone (its lines found by indentation from its first line; when that does
not parse, e.g. a string at column 0, the whole file), else the file once per file, a function
found by its first line and name, a class by its qualified name, a lambda by its line and
compiled code. Either way the node, and so the text, is the same. The node is serialised by
a version-tolerant walker: node type names and non-empty fields only, no line numbers, no
comments, no docstrings, no decorators of the outermost definition. String literals are kept
exactly as written (nothing is dedented). Keys must not change across Python versions, so
bytecode is never hashed when the source is available.

Only code without source (built with ``exec``) falls back to a bytecode text, marked with the
Python version because bytecode changes between versions; its constants are encoded
canonically, so set literals do not depend on ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

__all__ = ["code_text", "dump_ast"]

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_Index = tuple[dict[tuple[int, str], list[ast.AST]], dict[str, list[ast.AST]],
               dict[int, list[ast.Lambda]]]
_TREES: dict[str, tuple[list[str], _Index]] = {}


def _body(node: ast.AST, body: list[ast.stmt]) -> list[ast.stmt]:
    """A body without its docstring (a def/class/module docstring is documentation)."""
    if (isinstance(node, (*_DEFS, ast.Module)) and body and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
        return body[1:] or [ast.Pass()]
    return body


def dump_ast(node: Any, top: bool = False) -> str:
    """Serialise an AST: type names and non-empty fields (fields new Pythons add stay empty)."""
    if isinstance(node, ast.AST):
        parts = [type(node).__name__]
        for name in node._fields:
            if top and name == "decorator_list":
                continue
            value = getattr(node, name, None)
            if name == "body" and isinstance(value, list):
                value = _body(node, value)
            if value is None or value == []:
                continue
            parts.append(f"{name}={dump_ast(value)}")
        return "(" + ",".join(parts) + ")"
    if isinstance(node, list):
        return "[" + ",".join(dump_ast(x) for x in node) + "]"
    return repr(node)


def _build_index(tree: ast.Module) -> _Index:
    # Statements only: defs and classes are statements, so expressions are never walked here
    # (lambdas are indexed on demand, see _lambdas).
    funcs: dict[tuple[int, str], list[ast.AST]] = {}
    classes: dict[str, list[ast.AST]] = {}
    stack: list[tuple[list[ast.stmt], str]] = [(tree.body, "")]
    while stack:
        stmts, prefix = stack.pop()
        for st in stmts:
            inner = prefix
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([st.lineno] + [d.lineno for d in st.decorator_list])
                funcs.setdefault((first, st.name), []).append(st)
                if first != st.lineno:
                    funcs.setdefault((st.lineno, st.name), []).append(st)
                inner = f"{prefix}{st.name}.<locals>."
            elif isinstance(st, ast.ClassDef):
                classes.setdefault(prefix + st.name, []).append(st)
                inner = f"{prefix}{st.name}."
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(st, field, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    stack.append((sub, inner))
            for part in (*getattr(st, "handlers", ()), *getattr(st, "cases", ())):
                stack.append((part.body, inner))
    return funcs, classes, {}


def _lambdas(index: _Index, tree_lines: list[str], line: int) -> list[ast.Lambda]:
    lambdas = index[2]
    if not lambdas:  # first lambda of this file: one full walk
        tree = ast.parse("".join(tree_lines))
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda):
                lambdas.setdefault(node.lineno, []).append(node)
        lambdas.setdefault(-1, [])
    return lambdas.get(line, [])


def _lines(filename: str, module_globals: Any) -> list[str]:
    """The file's current lines: a cached copy whose file changed on disk (``importlib.reload``,
    IPython's autoreload) is dropped first. Notebook cells have no file and stay cached."""
    import linecache

    linecache.checkcache(filename)
    return linecache.getlines(filename, module_globals)


def _index(filename: str, module_globals: Any) -> _Index | None:
    lines = _lines(filename, module_globals)
    if not lines:
        return None
    cached = _TREES.get(filename)
    if cached is not None and cached[0] is lines:
        return cached[1]
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    index = _build_index(tree)
    _TREES[filename] = (lines, index)
    return index


_BLOCKS: dict[tuple[str, int, str], tuple[list[str], ast.AST | None]] = {}


def _block(code: Any, module_globals: Any) -> ast.AST | None:
    """The ``def`` starting at the code's first line, parsed alone (no whole-file parse: a
    big module costs milliseconds to parse); None when that is not clear-cut."""
    lines = _lines(code.co_filename, module_globals)
    first = code.co_firstlineno
    if not lines or first < 1 or first > len(lines):
        return None
    key = (code.co_filename, first, code.co_name)
    cached = _BLOCKS.get(key)
    if cached is not None and cached[0] is lines:
        return cached[1]
    node: ast.AST | None = None
    block = _lines_of_def(lines, first - 1)
    if block:
        text = "".join(block)
        if block[0][:1] in (" ", "\t"):  # a nested def or a method: parse it inside an `if`
            text = "if 1:\n" + text
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):  # cut inside a string or brackets: the whole file
            tree = None
        if tree is not None and len(tree.body) == 1:
            stmt = tree.body[0]
            if isinstance(stmt, ast.If):
                stmt = stmt.body[0]
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    stmt.name == code.co_name:
                node = stmt
    if len(_BLOCKS) > 4096:
        _BLOCKS.clear()
    _BLOCKS[key] = (lines, node)
    return node


def _lines_of_def(lines: list[str], start: int) -> list[str]:
    """The lines of the decorators and ``def`` at ``start`` by indentation, a cheap guess that
    the caller checks by parsing it (a cut inside a string or brackets does not parse)."""
    head = lines[start]
    indent = len(head) - len(head.lstrip())
    i = start
    while i < len(lines) and not lines[i].lstrip().startswith(("def ", "async def ")):
        i += 1  # decorator lines
        if i - start > 50:
            return []
    end = i + 1
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and len(line) - len(line.lstrip()) <= indent:
            break
        end += 1
    return lines[start:end]


def _same_lambda(lam: ast.Lambda, code: Any) -> bool:
    import inspect

    expr = ast.Expression(body=lam)
    try:
        compiled = compile(expr, "<lambda>", "eval")
    except (SyntaxError, ValueError):
        return False
    inner = next((c for c in compiled.co_consts if inspect.iscode(c)), None)
    return inner is not None and inner.co_code == code.co_code and \
        inner.co_names == code.co_names and inner.co_varnames == code.co_varnames and \
        _plain_consts(inner) == _plain_consts(code)


def _plain_consts(code: Any) -> list[Any]:
    import inspect

    return [(type(c), c) for c in code.co_consts if not inspect.iscode(c)]


def _find(obj: Any) -> ast.AST | None:
    code = getattr(obj, "__code__", None)
    if code is not None and code.co_name != "<lambda>":
        block = _block(code, getattr(obj, "__globals__", None))
        if block is not None:
            return block
    if code is not None:
        index = _index(code.co_filename, getattr(obj, "__globals__", None))
        if index is None:
            return None
        if code.co_name == "<lambda>":
            found = _lambdas(index, _TREES[code.co_filename][0], code.co_firstlineno)
            if len(found) > 1:  # several lambdas on one line: the one whose code matches
                exact = [lam for lam in found if _same_lambda(lam, code)]
                args = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
                found = exact or [lam for lam in found
                                  if tuple(a.arg for a in (*lam.args.args, *lam.args.kwonlyargs))
                                  == args]
                if len(found) > 1 and not exact:
                    return None  # ambiguous: the bytecode fallback keeps them apart
            return found[0] if found else None
        funcs = index[0].get((code.co_firstlineno, code.co_name), [])
        return funcs[0] if len(funcs) == 1 else None
    if isinstance(obj, type):
        module = sys.modules.get(obj.__module__)
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):  # a notebook or REPL class: the file of its methods
            codes = [v.__code__ for v in vars(obj).values() if hasattr(v, "__code__")]
            file = codes[0].co_filename if codes else None
        if not isinstance(file, str):
            return None
        index = _index(file, vars(module) if module is not None else None)
        classes = index[1].get(obj.__qualname__, []) if index is not None else []
        return classes[0] if len(classes) == 1 else None
    return None


def _const_text(c: Any) -> str:
    import inspect

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
    node = _find(obj)
    if node is not None:
        return ("lambda:" if isinstance(node, ast.Lambda) else "ast:") + dump_ast(node, top=True)
    code = getattr(obj, "__code__", None)
    if code is None:
        return "nocode:" + getattr(obj, "__qualname__", type(obj).__qualname__)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    doc = "|doc" if getattr(obj, "__doc__", None) is not None else ""
    return f"bytecode{version}:{getattr(obj, '__qualname__', '?')}:{_bytecode_text(code)}{doc}"


_EFFECTS: dict[int, tuple[Any, frozenset[str], Any]] = {}  # id -> (func, names, its code)


def effect_only_names(func: Any) -> frozenset[str]:
    """Names the function uses only for side effects, never as a value it reads.

    A name is effect-only when every load of it in the function's source (nested functions and
    lambdas included) is the receiver of a method call whose result is discarded
    (``calls.append(x)``, ``log.info(...)``, ``progress.update(1)`` as statements), and it is
    otherwise only assigned (``COUNTER += 1``). Such a variable cannot flow into the result, so
    the fingerprint keys it by its type, not by its contents (an accumulator list, a counter, a
    metrics object). Without source, nothing is effect-only.
    """
    cached = _EFFECTS.get(id(func))
    if cached is not None and cached[0] is func and cached[2] is getattr(func, "__code__", None):
        return cached[1]
    node = _find(func)
    names: frozenset[str] = frozenset()
    if node is not None:
        sinks: set[int] = set()
        touched: set[str] = set()
        reads: set[str] = set()
        for n in ast.walk(node):  # breadth-first: a statement comes before its names
            if isinstance(n, ast.Name):
                if isinstance(n.ctx, ast.Load):
                    (touched if id(n) in sinks else reads).add(n.id)
            elif (isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                    and isinstance(n.value.func, ast.Attribute)
                    and isinstance(n.value.func.value, ast.Name)):
                sinks.add(id(n.value.func.value))
            elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
                touched.add(n.target.id)
        names = frozenset(touched - reads)
    if len(_EFFECTS) > 4096:
        _EFFECTS.clear()
    _EFFECTS[id(func)] = (func, names, getattr(func, "__code__", None))
    return names
