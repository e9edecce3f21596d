"""Shared pieces of the command line: exit codes, opening a store read-only, output helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from persistmemo.errors import PersistmemoError

#: Exit codes (documented in ``persistmemo --help`` and docs/cli.md).
OK, DECLINED, USAGE, NO_CACHE, STORE_ERROR = 0, 1, 2, 3, 4
EXIT_CODES = """exit codes:
  0  success
  1  nothing done: not found, or a deletion was declined / not confirmed (--yes)
  2  usage or configuration error (bad option, ambiguous function name)
  3  the location holds no persistmemo cache (nothing was created)
  4  the store failed (unreachable, corrupt, permission denied)"""


class CliError(Exception):
    """An error reported as ``persistmemo: <message>`` with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Location(NamedTuple):
    """The store the command works on, and where that choice came from."""

    url: str
    source: str  # "--url", "env PERSISTMEMO_URL", a project file path, or "default"


def resolve_location(args: argparse.Namespace) -> Location:
    """``--url`` > ``PERSISTMEMO_URL`` > project file > user cache directory."""
    if getattr(args, "url", None):
        return Location(args.url, "--url")
    from persistmemo._project import load_settings

    try:
        settings = load_settings()
    except PersistmemoError as exc:
        raise CliError(str(exc), USAGE) from exc
    return Location(str(settings.values["url"]), settings.sources["url"])


def shown(url: str) -> str:
    """A location for printing, without any password it may contain."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if "://" not in url or parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _disk_path(url: str) -> Path | None:
    from urllib.parse import unquote, urlsplit

    if "://" not in url:
        return Path(url).expanduser()
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme.lower() == "file" else None


def open_store(loc: Location) -> Any:
    """Open an existing store; never create one (exit 3 when the location holds no cache)."""
    from persistmemo.config import resolve_backend

    where = f"{shown(loc.url)} (location from {loc.source})"
    if loc.url.lower().startswith("memory:"):
        raise CliError(f"memory:// lives inside one process: there is no cache to inspect at "
                       f"{where}", NO_CACHE)
    path = _disk_path(loc.url)
    if path is not None and not (path / "cache.db").is_file():
        hint = ("set --url, PERSISTMEMO_URL or `url` in [tool.persistmemo] of pyproject.toml "
                "to the cache your code uses")
        state = "does not exist" if not path.exists() else "holds no persistmemo cache"
        raise CliError(f"no cache at {where}: the location {state}; nothing was created. "
                       f"{hint}", NO_CACHE)
    try:
        return resolve_backend(loc.url)
    except PersistmemoError as exc:
        raise CliError(str(exc), USAGE) from exc


def key_prefix(namespace: str | None, fmt: int | None = None) -> str:
    """The key prefix of the current key format (or ``fmt``), optionally of one namespace."""
    from persistmemo.keys import KEY_FORMAT, _escape

    prefix = f"pm:{KEY_FORMAT if fmt is None else fmt}:"
    return prefix + (f"{_escape(namespace)}:" if namespace else "")


def match_function(wanted: str, names: Iterable[str]) -> list[str]:
    """Functions named ``wanted``: an exact ``module.qualname``, else a dotted-suffix match."""
    names = sorted(set(names))
    if wanted in names:
        return [wanted]
    return [n for n in names if n.endswith("." + wanted)]


def resolve_function(wanted: str, names: Iterable[str]) -> str:
    """The one function ``wanted`` names; raise CliError if none or several match."""
    names = sorted(set(names))
    found = match_function(wanted, names)
    if len(found) == 1:
        return found[0]
    if not found:
        some = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        raise CliError(f"no stored function matches {wanted!r}; stored: {some or 'none'}",
                       DECLINED)
    raise CliError(f"{wanted!r} is ambiguous: it matches " + ", ".join(found) +
                   "; give more of the module path", USAGE)


# -- output ---------------------------------------------------------------------------------
def use_color(args: argparse.Namespace) -> bool:
    """Colour only on a terminal, never with ``NO_COLOR`` set (``--color`` overrides)."""
    mode = getattr(args, "color", "auto") or "auto"
    if mode != "auto":
        return bool(mode == "always")
    if os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


def paint(text: str, code: str, on: bool) -> str:
    """Wrap ``text`` in an ANSI colour (``code`` like ``"32"``) when ``on``."""
    return f"\033[{code}m{text}\033[0m" if on else text


def human_size(n: float) -> str:
    """1536 -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def human_duration(s: float | None) -> str:
    """Seconds for people: ``850 us``, ``12.3 ms``, ``4.20 s``, ``3m05s``, ``2h07m``."""
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 60:
        return f"{s:.2f} s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def when(ts: float) -> str:
    """A unix time as local ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts > 0 else "-"


def iso(ts: float) -> str | None:
    """A unix time as ISO 8601 UTC (for --json)."""
    import datetime as dt

    if ts <= 0:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = (),
          color: bool = False) -> str:
    """Align rows under a header (columns in ``right`` right-aligned)."""
    right = set(right)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w)
               for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    head = paint(line(headers), "1", color)
    return "\n".join([head, *(line(r) for r in rows)])


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, sort_keys=False))


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``10k``, ``12345`` -> bytes (binary units)."""
    units = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
             "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
             "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = t[len(num):].strip()
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or value < 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G, 100000)")
    return int(value * units[unit])


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``15m``, ``90s``, ``3600`` -> seconds."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    t = text.strip().lower()
    unit = t[-1:] if t[-1:].isalpha() else ""
    try:
        value = float(t[:-1] if unit else t)
    except ValueError:
        value = -1.0
    if unit not in units or value < 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30d, 12h, 15m, 90s)")
    return value * units[unit]


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask on a terminal; without one, only ``--yes`` confirms."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} Not confirmed: add --yes to do it without a terminal.",
              file=sys.stderr)
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
