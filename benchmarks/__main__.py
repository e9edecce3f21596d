"""``python -m benchmarks``: run every scenario and report every target."""

import sys

from benchmarks.main import main

sys.exit(main())
