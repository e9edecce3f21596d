"""pytest plugin (registered through the ``pytest11`` entry point): the ``persistmemo_cache``
fixture for users' own test suites.

Example::

    def test_report(persistmemo_cache):
        assert build_report(2024) == build_report(2024)   # computed once, in a fresh store
        assert persistmemo_cache.info().hits == 1

Imported by pytest only; ``import persistmemo`` never imports pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persistmemo._cache import Cache, set_default_cache

__all__ = ["persistmemo_cache"]


@pytest.fixture
def persistmemo_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    """Point the default cache at a fresh, empty directory store for one test.

    Every function decorated with bare ``@persistmemo.memoize`` (or without ``cache=``) uses
    it, including functions already called by earlier tests; afterwards the default cache
    goes back to the configuration (``PERSISTMEMO_*`` / project file / user directory).
    """
    directory: Path = tmp_path_factory.mktemp("persistmemo") / "cache"
    cache = Cache(str(directory))
    set_default_cache(cache)
    try:
        yield cache
    finally:
        set_default_cache(None)
        cache.close()
