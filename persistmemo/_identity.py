"""Stable names for code: function identities, class tags, and what counts as *user code*.

- :func:`module_name` maps a module name to the name used in keys: a script run as
  ``__main__`` (or ``__mp_main__`` in its spawn workers) is named after its file stem, or its
  ``__spec__.name`` under ``python -m``; a notebook kernel's ``__main__`` after the notebook
  (ipykernel's ``__session__`` global, else the ``JPY_SESSION_NAME`` variable), else
  ``__main__``. Function identities and the type tags of argument classes both use it, so a
  class defined in a script is tagged the same in the script, its spawn workers and an import.
- :func:`is_user_module` decides whether code is the user's (fingerprinted by content) or a
  library's (recorded by qualified name): user code is ``__main__``, notebook cells and every
  module whose file lies outside the standard library and ``site-``/``dist-packages`` (so a
  project installed in editable mode is user code).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["function_identity", "is_persistmemo", "is_user_module", "module_name"]

_MAIN = ("__main__", "__mp_main__")
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _stem(path: str) -> str:
    base = os.path.basename(str(path).replace("\\", "/").rstrip("/"))
    return base.rsplit(".", 1)[0] if "." in base else base


def module_name(module: str) -> str:
    """Return the name under which objects of ``module`` are keyed (see the module docstring)."""
    if module not in _MAIN:
        return module
    main = sys.modules.get(module)
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        return str(spec.name)  # python -m package.module (and its spawn workers)
    file = getattr(main, "__file__", None)
    if file:
        return _stem(file)
    session = getattr(main, "__session__", None) or os.environ.get("JPY_SESSION_NAME")
    if isinstance(session, str) and session.strip():
        return _stem(session.strip())  # a notebook: its file stem (portable across machines)
    return "__main__"


def function_identity(func: Callable[..., Any]) -> str:
    """Return ``module.qualname``, the module named by :func:`module_name`."""
    module = getattr(func, "__module__", None) or "__unknown__"
    return f"{module_name(module)}.{getattr(func, '__qualname__', getattr(func, '__name__', '?'))}"


def _library_dirs() -> tuple[str, ...]:
    # The standard library is the directory of `os` (lib-dynload lies inside it); installed
    # packages are recognised by their site-/dist-packages path component. (sysconfig would
    # cost ~5 ms at the first call.)
    stdlib = os.path.dirname(os.path.realpath(os.__file__))
    return (stdlib.rstrip(os.sep) + os.sep,)


_LIB_DIRS: tuple[str, ...] | None = None
_USER_FILES: dict[str, bool] = {}


def is_user_file(path: str) -> bool:
    """Whether a source file is user code (outside the stdlib and site-/dist-packages)."""
    global _LIB_DIRS
    known = _USER_FILES.get(path)
    if known is not None:
        return known
    if _LIB_DIRS is None:
        _LIB_DIRS = _library_dirs()
    real = os.path.realpath(path)
    parts = real.replace("\\", "/").split("/")
    user = not (
        "site-packages" in parts or "dist-packages" in parts
        or any(real.startswith(d) for d in _LIB_DIRS)
    )
    _USER_FILES[path] = user
    return user


def is_user_module(module: str | None) -> bool:
    """Whether the module named ``module`` holds user code (``__main__`` always does)."""
    if not module:
        return False
    if module in _MAIN:
        return True
    if module == "persistmemo" or module.startswith("persistmemo."):
        return False
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    if not isinstance(file, str):
        return False  # builtins, frozen and namespace-less modules
    return is_user_file(file)


def is_persistmemo(obj: Any) -> bool:
    """Whether ``obj`` is one of persistmemo's own objects (never a dependency)."""
    mod = getattr(type(obj), "__module__", "") or ""
    if mod == "persistmemo" or mod.startswith("persistmemo."):
        return True
    code = getattr(obj, "__code__", None)
    return code is not None and str(code.co_filename).startswith(_PKG_DIR)
