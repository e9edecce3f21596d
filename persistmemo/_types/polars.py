"""polars: DataFrame and Series as keys (through their Arrow form) and as results (polars IPC).

Key: the polars schema (column names and polars dtypes) plus the chunking-independent Arrow
encoding of the data (``to_arrow()`` shares polars' buffers). Results: polars' own Arrow IPC
writer and reader, so polars dtypes (categoricals, enums, decimals, nested) come back as such.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import polars as pl

from persistmemo._types import Carrier, Unsupported
from persistmemo._types._common import canonical, seq, text


def _schema(schema: Any) -> bytes:
    return seq(text(str(name)) + text(str(dtype)) for name, dtype in schema.items())


def _frame_body(df: pl.DataFrame) -> bytes:
    from persistmemo._types.arrow import chunked_body

    out = text("polars.DataFrame") + _schema(df.schema)
    if any("Object" in str(dtype) for dtype in df.schema.values()):
        # polars hands Object columns to Arrow as pointers: never a key
        raise Unsupported("polars Object columns hold arbitrary Python objects")
    try:
        table = df.to_arrow()
    except Exception as exc:  # Object columns have no Arrow form
        raise Unsupported(f"polars frame has no Arrow form ({exc})") from None
    for col in table.columns:
        out += chunked_body(col.chunks, len(col), col.nbytes)
    return out


def _series_body(s: pl.Series) -> bytes:
    return text("polars.Series") + canonical(s.name) + _frame_body(s.to_frame())


def key_encoder(cls: type) -> Callable[[Any], bytes]:
    """Return the key encoder of a polars class."""
    if issubclass(cls, pl.DataFrame):
        return _frame_body
    if issubclass(cls, pl.Series):
        return _series_body
    raise Unsupported(f"{cls.__qualname__} is not supported")


def _ipc(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_ipc(buf, compression="uncompressed")
    return buf.getbuffer()  # type: ignore[return-value]


def value_encoder(cls: type) -> Callable[[Any], Carrier] | None:
    """Return the result encoder of a polars class, or None."""
    if issubclass(cls, pl.DataFrame):
        return lambda df: Carrier("polars:frame", None, [_ipc(df)])
    if issubclass(cls, pl.Series):
        return lambda s: Carrier("polars:series", None, [_ipc(s.to_frame())])
    return None


def decode(name: str, meta: Any, buffers: list[memoryview]) -> Any:
    """Rebuild a stored polars value."""
    df = pl.read_ipc(io.BytesIO(buffers[0]))
    if name == "frame":
        return df
    if name == "series":
        return df.to_series(0)
    raise ValueError(f"unknown polars carrier {name!r}")
