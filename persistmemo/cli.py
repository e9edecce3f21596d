"""Command line: inspect and manage a persistmemo cache (``persistmemo --help``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _split(key: str) -> tuple[str, str, str]:
    """Return (namespace, function, fingerprint) of a ``pm:2:ns:func:fp:digest`` key."""
    from urllib.parse import unquote

    parts = key.split(":")
    if len(parts) != 6 or parts[0] != "pm":
        return ("?", key, "?")
    return (unquote(parts[2]), unquote(parts[3]), parts[4])


def _open(url: str | None) -> Any:
    from persistmemo.config import resolve_backend

    return resolve_backend(url)


def _prefix(namespace: str | None) -> str:
    from persistmemo.keys import KEY_FORMAT, _escape

    return f"pm:{KEY_FORMAT}:" + (f"{_escape(namespace)}:" if namespace else "")


def _cmd_ls(args: argparse.Namespace) -> int:
    from persistmemo.codec import Codec

    backend = _open(args.url)
    codec = Codec()
    shown = 0
    for key in backend.keys(_prefix(args.namespace)):
        _, func, _ = _split(key)
        if args.function and args.function not in func:
            continue
        raw = backend.get(key)
        if not isinstance(raw, bytes):
            continue
        try:
            info = codec.peek(raw)
            detail = f"{info.size:>10} B  {info.duration * 1000:10.1f} ms  {info.codec}"
        except Exception:
            detail = f"{len(raw):>10} B  (unreadable entry)"
        print(f"{detail}  {key}")
        shown += 1
        if args.limit and shown >= args.limit:
            break
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from persistmemo.codec import Codec

    backend = _open(args.url)
    codec = Codec()
    count: dict[tuple[str, str], int] = defaultdict(int)
    size: dict[tuple[str, str], int] = defaultdict(int)
    saved: dict[tuple[str, str], float] = defaultdict(float)
    for key in backend.keys(_prefix(args.namespace)):
        ns, func, _ = _split(key)
        raw = backend.get(key)
        if not isinstance(raw, bytes):
            continue
        count[ns, func] += 1
        size[ns, func] += len(raw)
        with contextlib.suppress(Exception):
            saved[ns, func] += codec.peek(raw).duration
    print(f"store: {backend!r}")
    print(f"{'entries':>8} {'bytes':>12} {'compute s':>10}  namespace:function")
    for ns, func in sorted(count):
        print(f"{count[ns, func]:>8} {size[ns, func]:>12} {saved[ns, func]:>10.3f}  {ns}:{func}")
    print(f"{sum(count.values()):>8} {sum(size.values()):>12} {sum(saved.values()):>10.3f}  total")
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    from persistmemo.keys import _escape

    backend = _open(args.url)
    prefix = _prefix(args.namespace)
    if args.function:
        if not args.namespace:
            print("--function needs --namespace (e.g. --namespace default)", file=sys.stderr)
            return 2
        prefix += _escape(args.function) + ":"
    if not args.yes:
        print(f"would delete every entry under {prefix!r}; add --yes to do it", file=sys.stderr)
        return 1
    print(f"deleted {backend.clear(prefix)} entries")
    return 0


def _cmd_maintain(args: argparse.Namespace) -> int:
    backend = _open(args.url)
    maintain = getattr(backend, "maintain", None)
    if maintain is None:
        print(f"{backend!r} needs no maintenance")
        return 0
    for line in maintain():
        print(line)
    print("ok")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse echoes bad arguments in its errors: redact any URL among them (passwords)."""

    argv: Sequence[str] = ()  # the arguments being parsed, set by main()

    def error(self, message: str) -> Any:  # -> NoReturn in typeshed
        from persistmemo.backends.redis import redact_url

        for arg in sorted(self.argv, key=len, reverse=True):
            value = arg.partition("=")[2] if arg.startswith("--") else arg
            if "://" in value or "@" in value:
                message = message.replace(value, redact_url(value) if "://" in value else "***")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``persistmemo`` command."""
    parser = _Parser(
        prog="persistmemo",
        description="Inspect and manage a persistmemo cache (a directory or a redis:// URL; "
        "default: $PERSISTMEMO_URL, else the user cache directory).",
    )
    parser.add_argument("--url", help="cache location: a directory path or a URL")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list stored entries (size, compute time, key)")
    ls.add_argument("--namespace")
    ls.add_argument("--function", help="substring of module.qualname")
    ls.add_argument("--limit", type=int, default=0)
    ls.set_defaults(run=_cmd_ls)
    stats = sub.add_parser("stats", help="entries, bytes and compute time saved per function")
    stats.add_argument("--namespace")
    stats.set_defaults(run=_cmd_stats)
    clear = sub.add_parser("clear", help="delete entries (a namespace, or one function)")
    clear.add_argument("--namespace")
    clear.add_argument("--function", help="exact module.qualname")
    clear.add_argument("--yes", action="store_true", help="really delete")
    clear.set_defaults(run=_cmd_clear)
    maintain = sub.add_parser("maintain", help="check the disk cache and remove orphaned files")
    maintain.set_defaults(run=_cmd_maintain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    from persistmemo.errors import PersistmemoError

    _Parser.argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PersistmemoError as exc:
        print(f"persistmemo: {exc}", file=sys.stderr)
        return 2
