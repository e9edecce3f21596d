"""Why did this call miss? ``f.explain(*args, **kwargs)`` and ``persistmemo explain FUNCTION``.

Every stored entry carries, in its envelope's meta, a digest per argument (by parameter name)
and, when the key builder provides one, the dependency manifest of the code version (name ->
kind + digest). Explaining a call compares its own digests and manifest with the nearest stored
entries of the same function: same version with other arguments, other code versions, other
namespaces, other key formats, an expired entry, or nothing at all.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

__all__ = ["Explanation", "Nearest", "Reason", "explain_call"]

_MAX_NEAREST = 3


class Reason(NamedTuple):
    """One reason a call missed: ``kind`` is one of ``argument``, ``code``, ``namespace``,
    ``format``, ``expired``, ``unreadable``, ``never``."""

    kind: str
    detail: str


class Nearest(NamedTuple):
    """A stored entry of the same function, and how it differs from the call."""

    key: str
    namespace: str
    version: str
    created: float
    arguments: tuple[str, ...]  # parameters whose digest differs
    code_changed: bool
    dependencies: tuple[str, ...]  # "changed helper", ... from the manifests


class Explanation(NamedTuple):
    """What ``f.explain(...)`` found; ``str()`` is a readable report."""

    function: str
    key: str
    hit: bool
    reasons: tuple[Reason, ...]
    nearest: tuple[Nearest, ...]
    created: float | None = None  # of the entry, on a hit
    duration: float | None = None

    def __str__(self) -> str:
        if self.hit:
            return (f"hit: {self.function} is stored under {self.key} (computed in "
                    f"{self.duration or 0:.3f} s at {time.ctime(self.created or 0)})")
        lines = [f"miss: {self.function} has no entry under {self.key}"]
        lines += [f"  because: {r.detail}" for r in self.reasons]
        if self.nearest:
            lines.append("  nearest stored entries:")
        for n in self.nearest:
            diff = []
            if n.namespace != self.key.split(":")[2]:
                diff.append(f"namespace {n.namespace}")
            if n.code_changed:
                diff.append(f"code version {n.version}"
                            + (f" ({', '.join(n.dependencies)})" if n.dependencies else ""))
            if n.arguments:
                diff.append("argument " + ", ".join(n.arguments)
                            if n.arguments != ("?",) else "arguments not recorded")
            lines.append(f"    {n.key.rpartition(':')[2][:12]}  {time.ctime(n.created)}  "
                         f"differs in: {'; '.join(diff) or 'key format'}")
        return "\n".join(lines)


def _call_digests(memo: Any, args: Any, kwargs: Any) -> dict[str, str]:
    try:
        digests: dict[str, str] = memo.keys.describe(args, kwargs)
        return digests
    except Exception:  # e.g. key= handles arguments that have no canonical encoding
        return {}


def explain_call(memo: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Explanation:
    """Explain whether ``memo(*args, **kwargs)`` would hit, and if not, why."""
    from persistmemo._inspect import (
        decode_meta,
        diff_manifests,
        entry_keys,
        entry_manifest,
        manifest_of,
        read_entries,
    )
    from persistmemo.backends.base import MISSING
    from persistmemo.errors import DecodeError

    engine = memo.engine
    # (a tiered store: its shared tier holds every worker's entries; the local one may lag)
    keys, backend = memo.keys, getattr(engine.backend, "shared", engine.backend)
    key = keys(args, kwargs)
    raw = backend.get(key)
    if raw is not MISSING:
        try:
            entry = engine.codec.decode(raw, key=key)
        except DecodeError as exc:
            return Explanation(keys.identity, key, False, (Reason("unreadable", str(exc)),), ())
        return Explanation(keys.identity, key, True, (), (), entry.created, entry.duration)
    mine = _call_digests(memo, args, kwargs)
    deps = manifest_of(keys)
    stored = [k for k in entry_keys(backend, "pm:")
              if k.split(":")[3:4] == [key.split(":")[3]]]
    nearest = []
    manifests: dict[str, dict[str, str] | None] = {}
    for e in read_entries(backend, stored):
        meta = decode_meta(e.meta)
        theirs_deps = entry_manifest(meta, backend, engine.codec, e.key, manifests)
        theirs = meta.get("args", {})
        differing = tuple(n for n in sorted(mine.keys() | theirs.keys())
                          if mine.get(n) != theirs.get(n)) if theirs else ("?",)
        nearest.append(Nearest(e.key, e.parts.namespace, e.parts.version, e.created, differing,
                               e.parts.version != keys.fingerprint,
                               tuple(diff_manifests(theirs_deps, deps))))
    rank = {n.key: (len(n.arguments), n.code_changed, n.namespace != keys.namespace, -n.created)
            for n in nearest}
    nearest.sort(key=lambda n: rank[n.key])
    top = tuple(nearest[:_MAX_NEAREST])
    reasons = _reasons(memo, key, top, bool(stored))
    return Explanation(keys.identity, key, False, reasons, top)


def _expired(backend: Any, key: str) -> float | None:
    """When ``key`` expired, if the store still holds the expired row (directory stores)."""
    if getattr(backend, "name", "") != "disk":
        return None
    row = backend.cache._sql("SELECT expire_time FROM Cache WHERE raw = 1 AND key = ?",
                             (key,)).fetchone()
    return float(row[0]) if row and row[0] is not None and row[0] <= time.time() else None


def _reasons(memo: Any, key: str, nearest: tuple[Nearest, ...],
             any_stored: bool) -> tuple[Reason, ...]:
    from persistmemo.keys import KEY_FORMAT

    keys = memo.keys
    expired = _expired(getattr(memo.engine.backend, "shared", memo.engine.backend), key)
    if expired is not None:
        return (Reason("expired", f"this call's entry expired at {time.ctime(expired)} "
                                  f"(ttl)"),)
    if not any_stored:
        return (Reason("never", f"never computed: no entry of {keys.identity} is stored "
                                f"(in any namespace or code version)"),)
    out = []
    for n in nearest[:1]:  # the closest entry explains the miss; str() lists the others
        where = "the nearest stored entry"
        if n.key.split(":")[1] != str(KEY_FORMAT):
            out.append(Reason("format", f"{where} was stored under key format "
                                        f"{n.key.split(':')[1]}; this version uses {KEY_FORMAT}"))
            continue
        if n.namespace != keys.namespace:
            out.append(Reason("namespace", f"{where} is in namespace {n.namespace!r}, this call "
                                           f"uses {keys.namespace!r}"))
        if n.code_changed:
            what = ", ".join(n.dependencies) or (
                f"the code of {keys.identity} (no dependency manifest recorded)")
            out.append(Reason("code", f"the code changed since {where} was computed (version "
                                      f"{n.version}, now {keys.fingerprint}): {what}"))
        if n.arguments == ("?",):
            out.append(Reason("argument", f"{where} has no argument digests recorded"))
        elif n.arguments:
            out.append(Reason("argument", f"argument(s) {', '.join(n.arguments)} differ from "
                                          f"{where}"))
    return tuple(out)
