"""``ls``, ``show``, ``clear``, ``prune`` and ``maintain``: the stored entries themselves."""

from __future__ import annotations

import argparse
import time
from typing import Any

from persistmemo._inspect import StoredEntry, entry_keys, read_entries, split_key, ttl_left
from persistmemo.cli._common import (
    DECLINED,
    OK,
    USAGE,
    CliError,
    Location,
    confirm,
    emit_json,
    human_duration,
    human_size,
    iso,
    key_prefix,
    match_function,
    open_store,
    parse_age,
    parse_size,
    resolve_function,
    resolve_location,
    shown,
    table,
    use_color,
    when,
)

__all__ = ["register"]


def _entries(backend: Any, args: argparse.Namespace, every_format: bool = False
             ) -> list[StoredEntry]:
    """Entries (current key format unless ``every_format``), newest first, filtered."""
    prefix = "pm:" if every_format else key_prefix(args.namespace)
    keys = entry_keys(backend, prefix)
    if every_format and args.namespace:
        keys = [k for k in keys if split_key(k).namespace == args.namespace]  # type: ignore[union-attr]
    wanted = getattr(args, "function", None)
    if wanted:
        names = match_function(wanted, {split_key(k).function for k in keys})  # type: ignore[union-attr]
        keys = [k for k in keys if split_key(k).function in names]  # type: ignore[union-attr]
    found = list(read_entries(backend, keys))
    found.sort(key=lambda e: e.created, reverse=True)
    return found


def _no_filter(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "function": None})


def _entry_json(e: StoredEntry, ttl: float | None, backend: Any = None) -> dict[str, Any]:
    from persistmemo._inspect import decode_meta, entry_manifest
    from persistmemo.codec import Codec

    meta = decode_meta(e.meta)
    deps = entry_manifest(meta, backend, Codec(), e.key) if backend is not None else None
    return {"key": e.key, "namespace": e.parts.namespace, "function": e.parts.function,
            "version": e.parts.version, "key_format": e.parts.format, "size": e.size,
            "created": iso(e.created), "created_unix": e.created or None,
            "duration_s": e.duration, "ttl_left_s": ttl, "codec": e.codec,
            "readable": e.readable, "arguments": meta.get("args", {}),
            "dependencies": deps if backend is not None else meta.get("deps")}


def _header(loc: Location, backend: Any) -> str:
    return f"cache: {shown(loc.url)}  (from {loc.source}; {backend.name})"


def _cmd_ls(args: argparse.Namespace) -> int:
    loc = resolve_location(args)
    backend = open_store(loc)
    found = _entries(backend, args)
    total, total_bytes = len(found), sum(e.size for e in found)
    if args.limit:
        found = found[:args.limit]
    ttls = ttl_left(backend, [e.key for e in found])
    if args.json:
        emit_json({"location": shown(loc.url), "total": total, "bytes": total_bytes,
                   "entries": [_entry_json(e, ttls[e.key]) for e in found]})
        return OK
    print(_header(loc, backend))
    if not found:
        what = f" of {args.function!r}" if args.function else ""
        print(f"no entries{what} (0 stored)")
        if args.function:
            names = sorted({e.parts.function for e in _entries(backend, _no_filter(args))})
            some = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
            print(f"no stored function matches {args.function!r}; stored: {some or 'none'}")
        return OK
    rows = [[when(e.created), human_size(e.size), human_duration(e.duration),
             human_duration(ttls[e.key]) if ttls[e.key] is not None else "never",
             f"{e.parts.namespace}:{e.parts.function}", e.parts.version, e.parts.digest[:12]]
            for e in found]
    print(table(["CREATED", "SIZE", "COMPUTE", "EXPIRES IN", "FUNCTION", "VERSION", "KEY"],
                rows, right=(1, 2, 3), color=use_color(args)))
    more = f" (showing {len(found)}; --limit 0 for all)" if total > len(found) else ""
    print(f"{total} entries, {human_size(total_bytes)}{more}")
    return OK


def _find_key(backend: Any, wanted: str) -> str:
    if split_key(wanted) is not None:
        return wanted
    if len(wanted) < 6:
        raise CliError(f"{wanted!r}: give a full key or at least 6 characters of its digest",
                       USAGE)
    hits = [k for k in entry_keys(backend, "pm:") if split_key(k).digest.startswith(wanted)]  # type: ignore[union-attr]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise CliError(f"no entry whose digest starts with {wanted!r}", DECLINED)
    raise CliError(f"{wanted!r} is ambiguous ({len(hits)} entries); give more characters",
                   USAGE)


def _cmd_show(args: argparse.Namespace) -> int:
    loc = resolve_location(args)
    backend = open_store(loc)
    key = _find_key(backend, args.key)
    found = list(read_entries(backend, [key]))
    if not found:
        raise CliError(f"no entry under {key}", DECLINED)
    data = _entry_json(found[0], ttl_left(backend, [key])[key], backend)
    if args.json:
        emit_json(data)
        return OK
    ttl = data["ttl_left_s"]
    lines = [("key", key), ("function", data["function"]), ("namespace", data["namespace"]),
             ("code version", data["version"]), ("key format", data["key_format"]),
             ("created", when(found[0].created)), ("compute time", human_duration(
                 found[0].duration)), ("size", f"{human_size(found[0].size)} "
                                               f"({found[0].size} bytes, {found[0].codec})"),
             ("expires in", "never" if ttl is None else human_duration(ttl))]
    width = max(len(k) for k, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}")
    print("arguments (digest per parameter):")
    for name, digest in (data["arguments"] or {}).items():
        print(f"  {name:<{width}}{digest}")
    if not data["arguments"]:
        print("  (not recorded)")
    deps = data["dependencies"]
    print("code dependencies:" + ("" if deps else " (no manifest recorded: the function's "
                                                  "own code only)"))
    for name, leaf in sorted((deps or {}).items()):
        print(f"  {name:<{width}}{leaf}")
    return OK


def _drop_manifests(backend: Any, deleted: list[str]) -> int:
    """Delete the dependency manifests (``pmm:``) of code versions left without entries."""
    versions = {":".join(k.split(":")[1:5]) for k in deleted}
    left = {":".join(k.split(":")[1:5]) for k in entry_keys(backend, "pm:")}
    return sum(bool(backend.delete("pmm:" + v)) for v in versions - left)


def _cmd_clear(args: argparse.Namespace) -> int:
    loc = resolve_location(args)
    backend = open_store(loc)
    if not (args.function or args.namespace or args.all):
        raise CliError("say what to clear: --function NAME, --namespace NS, or --all", USAGE)
    keys = entry_keys(backend, "pm:")
    if args.namespace:
        keys = [k for k in keys if split_key(k).namespace == args.namespace]  # type: ignore[union-attr]
    scope = f"namespace {args.namespace!r}" if args.namespace else "every namespace"
    if args.function:
        func = resolve_function(args.function, {split_key(k).function for k in keys})  # type: ignore[union-attr]
        keys = [k for k in keys if split_key(k).function == func]  # type: ignore[union-attr]
        scope = f"{func} in {scope}"
    found = list(read_entries(backend, keys))
    size = sum(e.size for e in found)
    if args.json and not args.yes:
        emit_json({"would_delete": len(keys), "bytes": size, "scope": scope, "deleted": 0})
        return DECLINED if keys else OK
    if not keys:
        print(f"nothing to delete: no entries of {scope}")
        return OK
    versions = len({(e.parts.namespace, e.parts.version) for e in found})
    print(f"{len(keys)} entries of {scope} ({human_size(size)}, {versions} code version(s)), "
          f"newest {when(max((e.created for e in found), default=0))}")
    if not confirm(f"Delete these {len(keys)} entries?", args.yes):
        return DECLINED
    deleted = sum(bool(backend.delete(k)) for k in keys)
    _drop_manifests(backend, keys)
    if args.json:
        emit_json({"deleted": deleted, "bytes": size, "scope": scope})
    else:
        print(f"deleted {deleted} entries ({human_size(size)})")
    return OK


def _older_format(fmt: str, current: int) -> bool:
    """Whether a key format is earlier than ours (a newer persistmemo's entries are kept)."""
    try:
        return int(fmt) < current
    except ValueError:
        return False


def _prune_plan(backend: Any, args: argparse.Namespace) -> list[tuple[StoredEntry, str]]:
    from persistmemo.keys import KEY_FORMAT

    found = _entries(backend, args, every_format=True)
    plan: dict[str, tuple[StoredEntry, str]] = {}
    if args.old_formats:
        for e in found:
            if _older_format(e.parts.format, KEY_FORMAT) or (
                    e.parts.format == str(KEY_FORMAT) and not e.readable):
                plan.setdefault(e.key, (e, "old format"))
    if args.old_versions:
        newest: dict[tuple[str, str], tuple[float, str]] = {}
        for e in found:
            if e.parts.format == str(KEY_FORMAT):
                fn = (e.parts.namespace, e.parts.function)
                newest[fn] = max(newest.get(fn, (0.0, "")), (e.created, e.parts.version))
        for e in found:
            fn = (e.parts.namespace, e.parts.function)
            if (e.parts.format == str(KEY_FORMAT) and fn in newest
                    and e.parts.version != newest[fn][1]):
                plan.setdefault(e.key, (e, "old code version"))
    if args.older_than is not None:
        cutoff = time.time() - args.older_than
        for e in found:
            if e.created < cutoff:
                plan.setdefault(e.key, (e, "older than --older-than"))
    if args.max_bytes is not None:
        kept = [e for e in found if e.key not in plan]  # newest first
        total = sum(e.size for e in kept)
        for e in reversed(kept):
            if total <= args.max_bytes:
                break
            plan[e.key] = (e, "over --max-bytes")
            total -= e.size
    return list(plan.values())


def _cmd_prune(args: argparse.Namespace) -> int:
    if not (args.old_formats or args.old_versions or args.older_than is not None
            or args.max_bytes is not None):
        raise CliError("say what to prune: --older-than, --max-bytes, --old-versions or "
                       "--old-formats", USAGE)
    loc = resolve_location(args)
    backend = open_store(loc)
    plan = _prune_plan(backend, args)
    deleted = 0 if args.dry_run else sum(bool(backend.delete(e.key)) for e, _ in plan)
    if not args.dry_run:
        _drop_manifests(backend, [e.key for e, _ in plan])
    size = sum(e.size for e, _ in plan)
    if args.json:
        emit_json({"dry_run": args.dry_run, "deleted": deleted, "bytes": size,
                   "entries": [{"key": e.key, "reason": why, "size": e.size} for e, why in plan]})
        return OK
    verb = "would delete" if args.dry_run else "deleted"
    for e, why in plan:
        print(f"{verb} {e.parts.namespace}:{e.parts.function} {e.parts.version} "
              f"{e.parts.digest[:12]}  {human_size(e.size)}  ({why})")
    count = len(plan) if args.dry_run else deleted
    print(f"{verb} {count} entries ({human_size(size)})")
    return OK


def _cmd_maintain(args: argparse.Namespace) -> int:
    loc = resolve_location(args)
    backend = open_store(loc)
    maintain = getattr(backend, "maintain", None)
    if maintain is None:
        print(f"{shown(loc.url)}: nothing to maintain ({backend.name} expires entries itself)")
        return OK
    problems = maintain()
    expired = int(backend.cache.expire(retry=True)) if backend.name == "disk" else 0
    for line in problems:
        print(line)
    print(f"ok: checked {shown(loc.url)}, fixed {len(problems)} problem(s), "
          f"removed {expired} expired entries")
    return OK


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (0 or more)")
    return n


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's subcommands to the parser."""
    ls = sub.add_parser("ls", parents=[common], help="list entries, newest first")
    ls.add_argument("--function", help="module.qualname, or an unambiguous suffix (fib)")
    ls.add_argument("--limit", type=_count, default=50, help="at most N rows (0: all; default 50)")
    ls.set_defaults(run=_cmd_ls)
    show = sub.add_parser("show", parents=[common], help="one entry in detail")
    show.add_argument("key", help="a key, or the start of its digest (the KEY column of ls)")
    show.set_defaults(run=_cmd_show)
    clear = sub.add_parser("clear", parents=[common],
                           help="delete a function's entries (with a preview and confirmation)")
    clear.add_argument("--function", help="module.qualname, or an unambiguous suffix (fib)")
    clear.add_argument("--all", action="store_true", help="every entry of the store")
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    clear.set_defaults(run=_cmd_clear)
    prune = sub.add_parser("prune", parents=[common], help="delete old or surplus entries")
    prune.add_argument("--older-than", type=parse_age, metavar="AGE",
                       help="created longer ago than AGE (30d, 12h, 15m, 90s)")
    prune.add_argument("--max-bytes", type=parse_size, metavar="SIZE",
                       help="delete the oldest entries until the rest fit in SIZE (500M, 2G)")
    prune.add_argument("--old-versions", action="store_true",
                       help="code versions other than the newest of each function")
    prune.add_argument("--old-formats", action="store_true",
                       help="entries of earlier key or envelope formats")
    prune.add_argument("--dry-run", action="store_true", help="only show what would go")
    prune.set_defaults(run=_cmd_prune)
    maintain = sub.add_parser("maintain", parents=[common],
                              help="check a directory cache, remove orphans and expired rows")
    maintain.set_defaults(run=_cmd_maintain)
