"""Helpers of the third-party type tests: optional imports that skip locally but fail in CI."""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

from persistmemo.codec import Codec
from persistmemo.keys import canonical_bytes

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
_CODEC = Codec()


def need(module: str) -> Any:
    """Import an optional library; skip without it locally, fail under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed ({exc}); pip install -e '.[all,test]'"
        if IN_CI:
            pytest.fail(f"{msg} (CI must not skip these tests)", pytrace=False)
        pytest.skip(msg)


def key(value: Any) -> bytes:
    """The canonical key bytes of one argument value."""
    return canonical_bytes(value)


def roundtrip(value: Any) -> Any:
    """Encode ``value`` into a stored entry with the default codec and decode it back."""
    blob = _CODEC.encode(value, key="pm:test", created=0.0, duration=0.0)
    return _CODEC.decode(blob, key="pm:test").value
