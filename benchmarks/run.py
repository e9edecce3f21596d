#!/usr/bin/env python
"""persistmemo benchmarks: ``python benchmarks/run.py [--quick] [--only 1,11] [--out -]``.

A thin launcher for the ``benchmarks`` package (``python -m benchmarks`` does the same):
``harness.py`` (timing, machine, report), ``targets.py`` (every target), one module per
scenario under ``scenarios/``, ``main.py`` (the command line). See benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark this checkout

from benchmarks.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
