"""``stats``: what each function stores, and the hits, compute time and time saved of every
process and machine that used the cache, with time saved drawn as a bar chart."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from persistmemo._inspect import entry_keys, sizes, split_key
from persistmemo._usage import read_usage
from persistmemo.cli._common import (
    DECLINED,
    OK,
    confirm,
    emit_json,
    human_duration,
    human_size,
    key_prefix,
    match_function,
    open_store,
    paint,
    resolve_location,
    shown,
    table,
    use_color,
)

__all__ = ["register"]

_BAR = 24


def _collect(backend: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(ns: str, fn: str) -> dict[str, Any]:
        return rows.setdefault((ns, fn), {
            "namespace": ns, "function": fn, "entries": 0, "bytes": 0, "hits": 0,
            "misses": 0, "hit_rate": None, "compute_s": 0.0, "saved_s": 0.0})

    keys = entry_keys(backend, key_prefix(args.namespace))
    for key, size in sizes(backend, keys).items():
        parts = split_key(key)
        if parts is not None:
            r = row(parts.namespace, parts.function)
            r["entries"] += 1
            r["bytes"] += size
    for u in read_usage(backend, args.namespace):
        r = row(u.namespace, u.function)
        r.update(hits=u.hits, misses=u.misses, compute_s=u.compute_s, saved_s=u.saved_s)
    out = list(rows.values())
    if args.function:
        names = set(match_function(args.function, {r["function"] for r in out}))
        out = [r for r in out if r["function"] in names]
    for r in out:
        calls = r["hits"] + r["misses"]
        r["hit_rate"] = round(r["hits"] / calls, 4) if calls else None
    out.sort(key=lambda r: (-r["saved_s"], r["namespace"], r["function"]))
    return out


def _bar(value: float, top: float, color: bool) -> str:
    full = "\u2588" if (sys.stdout.encoding or "").lower().startswith("utf") else "#"
    n = 0 if top <= 0 else round(_BAR * value / top)
    if value > 0 and n == 0:
        n = 1
    return paint(full * n, "32", color) if n else ""


def _reset(backend: Any, args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    from persistmemo._usage import stat_key

    keys = [stat_key(r["namespace"], r["function"]) for r in rows if r["hits"] + r["misses"]]
    if not keys:
        print("no recorded calls to reset")
        return OK
    if not confirm(f"Reset the recorded calls of {len(keys)} function(s)?", args.yes):
        return DECLINED
    deleted = sum(bool(backend.delete(k)) for k in keys)
    print(f"reset the statistics of {deleted} function(s) (entries are kept)")
    return OK


def _cmd_stats(args: argparse.Namespace) -> int:
    loc = resolve_location(args)
    backend = open_store(loc)
    rows = _collect(backend, args)
    if args.reset:
        return _reset(backend, args, rows)
    total = {k: sum(r[k] for r in rows)
             for k in ("entries", "bytes", "hits", "misses", "compute_s", "saved_s")}
    if args.json:
        emit_json({"location": shown(loc.url), "functions": rows, "total": total})
        return OK
    color = use_color(args)
    print(f"cache: {shown(loc.url)}  (from {loc.source}; {backend.name})")
    if not rows:
        print("no entries and no recorded calls yet")
        return OK
    top = max(r["saved_s"] for r in rows)
    body = [[f"{r['namespace']}:{r['function']}", str(r["entries"]), human_size(r["bytes"]),
             str(r["hits"]), str(r["misses"]),
             "-" if r["hit_rate"] is None else f"{100 * r['hit_rate']:.0f}%",
             human_duration(r["compute_s"]), human_duration(r["saved_s"]),
             _bar(r["saved_s"], top, color)] for r in rows]
    body.append(["total", str(total["entries"]), human_size(total["bytes"]), str(total["hits"]),
                 str(total["misses"]), "", human_duration(total["compute_s"]),
                 human_duration(total["saved_s"]), ""])
    print(table(["FUNCTION", "ENTRIES", "SIZE", "HITS", "MISSES", "HIT%", "COMPUTE",
                 "SAVED", "TIME SAVED"], body, right=range(1, 8), color=color))
    print("COMPUTE: self time of the computations (nested memoized calls counted once). "
          "SAVED: compute time the hits avoided (inside a computation, the entry's own work). "
          "All processes and machines.")
    return OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``stats`` to the parser."""
    stats = sub.add_parser("stats", parents=[common],
                           help="entries, hits, compute time and time saved per function")
    stats.add_argument("--function", help="module.qualname, or an unambiguous suffix (fib)")
    stats.add_argument("--reset", action="store_true",
                       help="forget the recorded calls (of --function / --namespace)")
    stats.add_argument("--yes", "-y", action="store_true", help="with --reset: do not ask")
    stats.set_defaults(run=_cmd_stats)
