"""Function identity + bound arguments -> canonical bytes -> BLAKE3 digest -> key string.

This module defines a *persisted format*: a change to any byte it produces silently orphans
every stored entry (or worse, merges two). ``docs/format.md`` documents it and
``tests/test_keys.py`` pins it with golden vectors; bump :data:`KEY_FORMAT` on any change.
The value encoding lives in :mod:`persistmemo._canonical`, the dependency-aware code
fingerprint in :mod:`persistmemo._fingerprint` (resolved by :mod:`persistmemo._deps`).

Key string::

    pm:<KEY_FORMAT>:<namespace>:<module.qualname>:<fingerprint>:<64 hex BLAKE3 digest>

Every field before the digest is percent-encoded to ``[A-Za-z0-9_.~%-]`` so the prefix is
readable, injective, free of ``:`` and of glob metacharacters (safe in Redis ``SCAN MATCH``).
The dependency manifest of each fingerprint is stored once under
``pmm:<KEY_FORMAT>:<namespace>:<module.qualname>:<fingerprint>`` (outside the ``pm:`` prefixes,
so it never counts as an entry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from blake3 import blake3

from persistmemo._canonical import (
    _DISPATCH,
    _SCALARS,
    _enc,
    _key_error,
    _state,
    _u64,
    _Unencodable,
    canonical_bytes,
    register_key_encoder,
)
from persistmemo._fingerprint import Dependency, Fingerprint
from persistmemo._identity import function_identity
from persistmemo.errors import ConfigurationError, KeyEncodingError

__all__ = [
    "KEY_FORMAT",
    "Dependency",
    "KeyBuilder",
    "canonical_bytes",
    "code_fingerprint",
    "function_identity",
    "register_key_encoder",
]

KEY_FORMAT = 2
_MEMO_SIZE = 4096
_CHANGES_WARN = 5  # fingerprint changes in one process before a warning suggests ignore_deps
_MEMO_DEFAULTS = (int, str, bytes, bool, float, type(None))  # immutable: safe for the memo


def code_fingerprint(func: Callable[..., Any]) -> str:
    """Return 16 hex chars over the function's own normalised code only (no dependencies)."""
    from persistmemo._source import code_text

    return blake3(code_text(func).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _escape(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="_.-~") or "_"


# -- per-function key building -------------------------------------------------------------


class KeyBuilder:
    """Build the cache key of calls to one function (signature analysed once, at creation).

    Args:
        func: the function being memoized (wrapper layers included).
        namespace: groups keys (e.g. one per application sharing a Redis).
        version: pins the function's identity instead of its code fingerprint.
        ignore: parameter names left out of the key.
        key: optional ``key(*args, **kwargs) -> encodable`` replacing the arguments in the key.
        ignore_deps: global/closure variable names left out of the fingerprint.
        depends_on: extra objects whose identity joins the fingerprint.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        namespace: str = "default",
        version: str | int | None = None,
        ignore: Iterable[str] = (),
        key: Callable[..., Any] | None = None,
        ignore_deps: Iterable[str] = (),
        depends_on: Iterable[Any] = (),
    ) -> None:
        import inspect

        self.func = func
        self.identity = function_identity(func)
        self.namespace = namespace
        self.version = version
        if isinstance(ignore_deps, str) or not all(isinstance(n, str) for n in ignore_deps):
            raise ConfigurationError(
                f"ignore_deps={ignore_deps!r}: expected a tuple of variable names, "
                f"e.g. ignore_deps=('counter',)")
        if not isinstance(depends_on, (tuple, list, set, frozenset)):
            raise ConfigurationError(
                f"depends_on={depends_on!r}: expected a tuple of objects, e.g. "
                f"depends_on=(CONFIG, helper_module)")
        self.fingerprint_of = Fingerprint(func, ignore_deps=ignore_deps, depends_on=depends_on)
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
        self.manifest_prefix = "pmm" + self.prefix[2:]  # where its manifests are recorded
        self._fingerprint: str | None = None
        self._full: str | None = None  # the fingerprint digest the prefix was built from
        self.version_prefix = ""
        self._head = ("", b"")  # (version_prefix, digest seed), swapped atomically on refresh
        self._manifest_pending = False
        self._last_manifest: dict[str, Dependency] = {}
        self._changes = 0
        # Fast path: plain positional parameters, called positionally, no ignored names.
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self._simple = all(p.kind in positional for p in params) and not self.ignore
        self._n = len(params)
        self._defaults: tuple[Any, ...] = tuple(
            p.default for p in params if p.default is not p.empty
        )
        self._first_default = self._n - len(self._defaults)
        # The memo maps arguments to keys; a default mutated in place (`def f(x, opts=[])`)
        # would make it stale, so it is used only when every default is immutable.
        self._memo_ok = key is None and all(type(d) in _MEMO_DEFAULTS for d in self._defaults)
        self._memo: dict[tuple[Any, ...], str] = {}

    def set_namespace(self, namespace: str) -> None:
        """Move the keys to ``namespace`` (a function on the default cache takes the default
        cache's namespace when it first needs a key, not the one in force when decorated)."""
        if namespace != self.namespace:
            self.namespace = namespace
            self.prefix = f"pm:{KEY_FORMAT}:{_escape(namespace)}:{_escape(self.identity)}:"
            if self._fingerprint is not None:
                self._refresh()

    # -- fingerprint -------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """The key's fingerprint field: 16 hex chars of the code fingerprint, or ``v-<version>``."""
        if self._fingerprint is None:
            self._refresh()
        assert self._fingerprint is not None
        return self._fingerprint

    def _refresh(self) -> None:
        if self.version is not None:
            fp_field = full = "v-" + _escape(str(self.version))
        else:
            full = self.fingerprint_of.digest  # resolves dependencies (may raise)
            fp_field = full[:16]
        seed = (f"pm{KEY_FORMAT}\0{self.namespace}\0{self.identity}\0{full}\0"
                .encode("utf-8", "surrogatepass"))
        self.version_prefix = f"{self.prefix}{fp_field}:"
        self._head = (self.version_prefix, seed)
        self._full = full
        self._memo = {}
        self._fingerprint = fp_field
        self._manifest_pending = self.version is None
        if self.version is None and not self._last_manifest:
            self._last_manifest = dict(self.fingerprint_of.manifest)

    def _check(self) -> None:
        # Hot path: identity checks of the tracked bindings (a few dict lookups).
        if self._fingerprint is None:
            self._refresh()
        elif self.version is None:
            fp = self.fingerprint_of
            fp.revalidate()
            if fp._digest is not self._full:  # rebound (maybe seen first by dependencies())
                old = dict(self._last_manifest)
                self._refresh()
                self._changed(old)

    def _changed(self, old: dict[str, Dependency]) -> None:
        """Log which dependencies changed; warn once when it keeps happening (a counter)."""
        import logging

        new = self._last_manifest = dict(self.fingerprint_of.manifest)
        changed = sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
        self._changes += 1
        log = logging.getLogger("persistmemo")
        log.debug("persistmemo: fingerprint of %s() changed: %s", self.identity, changed)
        if self._changes == _CHANGES_WARN:
            values = tuple(n.rsplit(".", 1)[-1] for n in changed
                           if new.get(n, Dependency("", "")).kind == "value")
            log.warning(
                "persistmemo: the fingerprint of %s() changed %d times in this process (last: "
                "%s were rebound), so results are not reused across those changes. If they "
                "cannot change the result, leave them out with ignore_deps=%r.",
                self.identity, self._changes, ", ".join(changed), values or tuple(changed))

    def dependencies(self) -> dict[str, Dependency]:
        """Return what the fingerprint covers: ``{name: Dependency(kind, digest)}``."""
        self.fingerprint_of.digest  # noqa: B018 - resolves on first use
        self.fingerprint_of.revalidate()
        return dict(sorted(self.fingerprint_of.manifest.items()))

    def take_manifest(self) -> tuple[str, dict[str, Any]] | None:
        """Return ``(key, record)`` of the manifest once per fingerprint, else None."""
        if not self._manifest_pending:
            return None
        self._manifest_pending = False
        fp = self.fingerprint_of
        record = {
            "format": KEY_FORMAT,
            "identity": self.identity,
            "fingerprint": fp.digest,
            "dependencies": {k: [d.kind, d.digest] for k, d in sorted(fp.manifest.items())},
        }
        return f"{self.manifest_prefix}{fp.digest[:16]}", record

    # -- arguments ---------------------------------------------------------------------------
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

    def _encode_call(self, values: tuple[Any, ...], names: Sequence[str], seed: bytes
                     ) -> bytearray:
        out = bytearray(seed)
        out += _u64(len(values))
        for name, v in zip(names, values):
            fn = _DISPATCH.get(type(v))
            mark = len(out)
            try:
                if fn is not None and type(v) in _SCALARS:
                    fn(v, out, 1)
                else:
                    _enc(v, out, 0)
            except _Unencodable:
                del out[mark:]
                try:  # functions and classes (`fn=helper`, a classmethod's cls) by their code
                    _encode_with_code(v, out)
                except _Unencodable as e:
                    raise _key_error(e, name, self.identity) from None
            # A RecursionError is the call stack running out (a value nested too deeply is
            # an _Unencodable, from the encoder's own depth bound): it surfaces as itself.
        return out

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Return the key string of ``func(*args, **kwargs)``."""
        self._check()
        if not kwargs and self._memo_ok:
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
        prefix, seed = self._head
        if self.custom_key is not None:
            self.signature.bind(*args, **kwargs)  # a call that does not bind: Python's error
            try:
                value = self.custom_key(*args, **kwargs)
            except Exception as exc:  # never a silent uncached call (the engine runs those)
                name = getattr(self.custom_key, "__qualname__", repr(self.custom_key))
                raise KeyEncodingError(
                    f"cannot build a cache key: the key= function {name}() of "
                    f"{self.identity}() raised {type(exc).__name__}: {exc}",
                    parameter="key=") from exc
            data = self._encode_call((value,), ("key=",), seed)
        else:
            data = self._encode_call(self.bind(args, kwargs), self.names, seed)
        return prefix + blake3(data).hexdigest()

    def describe(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        """Return a short digest of each argument's canonical encoding (for ``explain``)."""
        values = self.bind(args, kwargs)
        result = {}
        for name, v in zip(self.names, values):
            out = bytearray()
            try:
                _encode_with_code(v, out)
            except _Unencodable as e:
                raise _key_error(e, name, self.identity) from None
            result[name] = blake3(bytes(out)).hexdigest()[:16]
        return result


def _encode_with_code(v: Any, out: bytearray) -> None:
    """Encode an argument value, functions and classes in it by their fingerprint."""
    from persistmemo._callargs import encode_code_argument

    saved = _state.fallback
    _state.fallback = encode_code_argument
    try:
        _enc(v, out, 0)
    finally:
        _state.fallback = saved
