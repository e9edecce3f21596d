"""Command line: inspect and manage a persistmemo cache (``persistmemo --help``).

One module per group of subcommands: :mod:`.entries` (ls, show, clear, prune, maintain),
:mod:`.stats` and :mod:`.explain`. Global options (``--url``, ``--namespace``, ``--json``,
``--color``) are accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from persistmemo.cli._common import EXIT_CODES, STORE_ERROR, USAGE, CliError

__all__ = ["build_parser", "main"]

_GLOBAL_DEFAULTS = {"url": None, "namespace": None, "json": False, "color": "auto"}


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every subcommand accepts; SUPPRESS so a later position does not reset them."""
    p = argparse.ArgumentParser(add_help=False)
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    g = p.add_argument_group("global options")
    g.add_argument("--url", default=d(None), metavar="LOCATION",
                   help="cache location: a directory or URL (default: $PERSISTMEMO_URL, else "
                        "[tool.persistmemo] url in the nearest pyproject.toml / "
                        "persistmemo.toml, else the user cache directory)")
    g.add_argument("--namespace", default=d(None), help="only this namespace (default: all)")
    g.add_argument("--json", action="store_true", default=d(False),
                   help="machine-readable output")
    g.add_argument("--color", choices=("auto", "always", "never"), default=d("auto"),
                   help="colour output (auto: only on a terminal and without NO_COLOR)")
    return p


def _version() -> str:
    import persistmemo

    return str(persistmemo.__version__)


def _hint(message: str) -> str:
    """A next step for the store errors people hit most."""
    if any(w in message for w in ("Authentication", "NOAUTH", "WRONGPASS", "HELLO must")):
        return ("\nhint: the server wants a (different) password: redis://:PASSWORD@host:port/db "
                "or redis://USER:PASSWORD@host:port/db in --url or PERSISTMEMO_URL")
    if "Connection refused" in message or "Timeout" in message:
        return "\nhint: is the server running, and are the host and port in the URL right?"
    return ""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``persistmemo`` command."""
    from persistmemo.cli import entries, explain, stats

    parser = argparse.ArgumentParser(
        prog="persistmemo", parents=[_global_options(True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Inspect and manage a persistmemo cache. Read commands (ls, show, stats, "
                    "explain) never create anything.",
        epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"persistmemo {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _global_options(False)
    for module in (entries, stats, explain):
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see ``persistmemo --help``)."""
    from persistmemo.errors import BackendError, PersistmemoError

    args = build_parser().parse_args(argv)
    for name, value in _GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    try:
        return int(args.run(args))
    except CliError as exc:
        print(f"persistmemo: {exc}", file=sys.stderr)
        return exc.code
    except BackendError as exc:
        print(f"persistmemo: the store failed: {exc}{_hint(str(exc))}", file=sys.stderr)
        return STORE_ERROR
    except PersistmemoError as exc:
        print(f"persistmemo: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `persistmemo ls | head`
        return 0
