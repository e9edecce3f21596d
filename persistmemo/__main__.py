"""``python -m persistmemo``: the command line."""

from persistmemo.cli import main

raise SystemExit(main())
