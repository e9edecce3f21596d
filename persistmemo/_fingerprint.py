"""The dependency-aware code fingerprint of a memoized function (key format 2).

A fingerprint is a flat Merkle tree: a *manifest* maps a readable name to a leaf
``Dependency(kind, digest)``, and the fingerprint is BLAKE3 over the manifest sorted by name.
Leaves (resolved lazily, at the first call, by :mod:`persistmemo._deps`):

- ``code``: a function or class of user code (its normalised AST, see
  :mod:`persistmemo._source`), reached from the memoized function through global names,
  attribute chains on user modules (``helpers.normalize``), closure cells, default values of
  helpers, ``__wrapped__`` layers and recursively from every function reached; a user module
  used as a whole by the hash of its source file.
- ``value``: the canonical digest of a module-level global or closure cell value.
- ``library``: an object of the standard library or an installed package, by qualified name (a
  module named in ``depends_on`` by its distribution's version).
- ``missing``: a global name that is not bound (yet).
- ``effect``: a variable the code only uses for side effects (``calls.append(x)``,
  ``COUNTER += 1``), keyed by its type (see :func:`persistmemo._source.effect_only_names`).

API for the engine (all cheap after the first call)::

    fp = Fingerprint(func, ignore_deps=("counter",), depends_on=(CONFIG,))
    fp.digest       # 64 hex chars; computed at the first access (may raise KeyEncodingError)
    fp.manifest     # {name: Dependency(kind, digest)}
    fp.revalidate() # identity checks of every tracked binding; True when a rebinding changed
                    # the digest (only the rebound objects are hashed again)

Rebinding a tracked global, module attribute or closure cell, or replacing a function's
``__code__`` in place (IPython's autoreload), is noticed by ``revalidate()``;
mutating a mutable value in place is noticed in the next process only (values are digested
once per object identity).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from blake3 import blake3

__all__ = ["Dependency", "Fingerprint", "FrozenFingerprint"]


class Dependency(NamedTuple):
    """One leaf of a fingerprint: its kind (code/value/library/effect/missing), a short digest."""

    kind: str
    digest: str


class Fingerprint:
    """The fingerprint of ``func`` and everything it depends on (see the module docstring).

    Args:
        func: the function as passed to ``memoize`` (wrapper layers included).
        ignore_deps: global or closure variable names (or dotted names such as
            ``helpers.counter``) left out of the fingerprint.
        depends_on: extra objects whose identity joins the fingerprint (values, functions,
            classes, modules).
    """

    def __init__(self, func: Callable[..., Any], *, ignore_deps: Iterable[str] = (),
                 depends_on: Iterable[Any] = ()) -> None:
        self.func = func
        self.ignore_deps = frozenset(ignore_deps)
        self.depends_on = tuple(depends_on)
        self._digest: str | None = None
        self.manifest: dict[str, Dependency] = {}
        self._memo: dict[int, tuple[Any, Dependency, Any]] = {}  # id -> leaf (kept alive)
        self._dict_checks: tuple[tuple[Mapping[str, Any], str, Any], ...] = ()
        self._cell_checks: tuple[tuple[Any, Any], ...] = ()
        self._code_checks: tuple[tuple[Any, Any], ...] = ()
        self._lock = threading.Lock()

    @property
    def digest(self) -> str:
        """64 hex chars over the manifest (resolved at the first access)."""
        d = self._digest
        if d is None:
            with self._lock:
                if self._digest is None:
                    self._compute()
                d = self._digest
        assert d is not None
        return d

    def _compute(self) -> None:
        from persistmemo._deps import Resolver

        r = Resolver(self.func, self.ignore_deps, self._memo)
        r.resolve(self.depends_on)
        for stale in self._memo.keys() - r.used:  # objects no longer bound: let them go
            del self._memo[stale]
        self.manifest = r.manifest
        self._dict_checks = tuple(r.dict_checks)
        self._cell_checks = tuple(r.cell_checks)
        self._code_checks = tuple(r.code_checks)
        self._digest = manifest_digest(self.manifest)

    def revalidate(self) -> bool:
        """Return True when a tracked binding was rebound and the digest changed."""
        for d, name, obj in self._dict_checks:
            if d.get(name, _ABSENT) is not obj:
                break
        else:
            for cell, obj in self._cell_checks:
                try:
                    if cell.cell_contents is not obj:
                        break
                except ValueError:  # an empty cell
                    if obj is not _ABSENT:
                        break
            else:
                for fn, code in self._code_checks:
                    if fn.__code__ is not code:  # patched in place (IPython's autoreload)
                        break
                else:
                    return False
                with self._lock:
                    self._memo.clear()  # code leaves are cached per object: read them again
        with self._lock:
            old = self._digest
            self._compute()
            return self._digest != old


    def __reduce__(self) -> tuple[Any, ...]:
        # Sent by value (cloudpickle: dask, ray...): resolved here, where the source and the
        # globals are, and frozen; the receiver may have neither.
        return (FrozenFingerprint, (self.digest, dict(self.manifest)))


class FrozenFingerprint(Fingerprint):
    """A fingerprint resolved in another process: fixed, never re-resolved or re-validated."""

    def __init__(self, digest: str, manifest: dict[str, Dependency]) -> None:
        super().__init__(_frozen_placeholder)
        self._digest = digest
        self.manifest = manifest

    def _compute(self) -> None:  # pragma: no cover - the digest is always set
        raise AssertionError("a frozen fingerprint is never resolved again")

    def revalidate(self) -> bool:
        """Return False: the bindings it was resolved from live in the sending process."""
        return False


def _frozen_placeholder() -> None:  # pragma: no cover - never called
    """The function slot of a frozen fingerprint."""


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


def manifest_digest(manifest: dict[str, Dependency]) -> str:
    """BLAKE3 over the manifest sorted by name (each field length-prefixed)."""
    from persistmemo._canonical import _text

    h = blake3(b"pm-fingerprint-2\0")
    for name in sorted(manifest):
        kind, digest = manifest[name]
        h.update(_text(name) + _text(kind) + _text(digest))
    return h.hexdigest()
