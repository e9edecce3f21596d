"""``explain FUNCTION``: a function's stored code versions and what changed between them."""

from __future__ import annotations

import argparse
from typing import Any

from persistmemo._inspect import (
    StoredEntry,
    decode_meta,
    diff_manifests,
    entry_keys,
    entry_manifest,
    read_entries,
    split_key,
)
from persistmemo.cli._common import (
    OK,
    emit_json,
    human_size,
    iso,
    open_store,
    resolve_function,
    resolve_location,
    shown,
    table,
    use_color,
    when,
)

__all__ = ["register"]


def _codec() -> Any:
    from persistmemo.codec import Codec

    return Codec()


def _versions(found: list[StoredEntry], backend: Any) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[StoredEntry]] = {}
    for e in found:
        groups.setdefault((e.parts.namespace, e.parts.format, e.parts.version), []).append(e)
    out: list[dict[str, Any]] = []
    for (ns, fmt, version), entries in groups.items():
        newest = max(entries, key=lambda e: e.created)
        deps = entry_manifest(decode_meta(newest.meta), backend, _codec(), newest.key)
        params = sorted({n for e in entries for n in decode_meta(e.meta).get("args", {})})
        out.append({"namespace": ns, "key_format": fmt, "version": version,
                    "entries": len(entries), "bytes": sum(e.size for e in entries),
                    "first": min(e.created for e in entries), "last": newest.created,
                    "parameters": params, "dependencies": deps})
    out.sort(key=lambda v: v["last"])
    previous: dict[str, dict[str, Any]] = {}
    for v in out:  # what changed since the previous version in the same namespace
        before = previous.get(v["namespace"])
        v["changes"] = None if before is None else _changes(before, v)
        previous[v["namespace"]] = v
    return out


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    if old["key_format"] != new["key_format"]:
        return [f"key format {old['key_format']} -> {new['key_format']}"]
    changes = diff_manifests(old["dependencies"], new["dependencies"])
    if old["parameters"] != new["parameters"]:
        changes.append(f"parameters {', '.join(old['parameters']) or '-'} -> "
                       f"{', '.join(new['parameters']) or '-'}")
    if not changes:
        changes.append("the function's code" if new["dependencies"] is None
                       else "the function's own code (no dependency changed)")
    return changes


def _cmd_explain(args: argparse.Namespace) -> int:
    loc = resolve_location(args)
    backend = open_store(loc)
    keys = entry_keys(backend, "pm:")
    if args.namespace:
        keys = [k for k in keys if split_key(k).namespace == args.namespace]  # type: ignore[union-attr]
    func = resolve_function(args.function, {split_key(k).function for k in keys})  # type: ignore[union-attr]
    found = list(read_entries(backend, [k for k in keys if split_key(k).function == func]))  # type: ignore[union-attr]
    versions = _versions(found, backend)
    if args.json:
        for v in versions:
            v["first"], v["last"] = iso(v["first"]), iso(v["last"])
        emit_json({"location": shown(loc.url), "function": func, "versions": versions})
        return OK
    print(f"{func}: {len(versions)} stored code version(s), {len(found)} entries "
          f"in {shown(loc.url)}")
    rows = [[v["namespace"], v["version"], str(v["entries"]), human_size(v["bytes"]),
             when(v["first"]), when(v["last"]),
             "(oldest)" if v["changes"] is None else "; ".join(v["changes"])]
            for v in versions]
    print(table(["NAMESPACE", "VERSION", "ENTRIES", "SIZE", "FIRST", "LAST",
                 "CHANGED SINCE THE PREVIOUS VERSION"], rows, right=(2, 3),
                color=use_color(args)))
    if len(versions) > 1:
        print("older versions are never hit again: `persistmemo prune --old-versions` "
              "removes them")
    return OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``explain`` to the parser."""
    p = sub.add_parser("explain", parents=[common],
                       help="a function's stored code versions and what changed between them")
    p.add_argument("function", help="module.qualname, or an unambiguous suffix (fib)")
    p.set_defaults(run=_cmd_explain)
