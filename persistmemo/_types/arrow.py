"""pyarrow: Tables, RecordBatches, Arrays and ChunkedArrays as keys and as stored results.

Key: the schema (field names, types, nullability, metadata) and, per column, the canonical stream
of its values, independent of chunking and of slice offsets: fixed-width values are hashed from
their buffers in place (nulls zeroed), strings and binaries from their lengths and bytes,
dictionaries decoded, nested types element by element. Results travel as Arrow IPC streams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from persistmemo._types import Carrier, Unsupported
from persistmemo._types._common import canonical, flat_bytes, new_hasher, qualname, seq, text, u64

_OFFSET_TYPES = {"string": np.int32, "binary": np.int32, "large_string": np.int64,
                 "large_binary": np.int64}


class _Column:
    """Hashes one column's value stream, chunk after chunk (chunking does not show)."""

    def __init__(self, size_hint: int, nullable: bool) -> None:
        self.nullable = nullable  # then every chunk feeds the validity stream
        self.valid = new_hasher()
        self.values = new_hasher(size_hint)
        self.lengths = new_hasher()
        self.items: list[bytes] = []

    def add(self, chunk: pa.Array) -> None:
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        t = chunk.type
        if self.nullable:
            self.valid.update(flat_bytes(chunk.is_valid().to_numpy(zero_copy_only=False)))
        if str(t) in _OFFSET_TYPES:
            if chunk.null_count:  # under a null, the offsets may cover arbitrary bytes
                empty = "" if "string" in str(t) else b""
                chunk = chunk.fill_null(pa.scalar(empty, t))
            self._add_binary(chunk, _OFFSET_TYPES[str(t)])
        elif pa.types.is_boolean(t):
            self.values.update(flat_bytes(chunk.fill_null(False).to_numpy(zero_copy_only=False)))
        elif _fixed_width(t):
            self._add_fixed(chunk)
        else:  # nested types, string views: element by element
            self.items.extend(_element(v) for v in chunk.to_pylist())

    def _add_fixed(self, chunk: pa.Array) -> None:
        width = chunk.type.bit_width // 8
        buf = chunk.buffers()[1]
        data = np.frombuffer(buf, np.uint8, count=len(chunk) * width, offset=chunk.offset * width)
        if chunk.null_count:  # the bytes under a null are arbitrary: zero them
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)
            data = data.reshape(len(chunk), width).copy()
            data[~valid] = 0
        self.values.update(flat_bytes(data))

    def _add_binary(self, chunk: pa.Array, off_type: Any) -> None:
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(offsets_buf, off_type, count=len(chunk) + 1,
                                offset=chunk.offset * np.dtype(off_type).itemsize)
        self.lengths.update(flat_bytes(np.diff(offsets).astype(np.int64)))
        if data_buf is not None and len(chunk):
            lo, hi = int(offsets[0]), int(offsets[-1])
            self.values.update(memoryview(data_buf)[lo:hi])

    def digest(self) -> bytes:
        hashes: bytes = self.valid.digest() + self.values.digest() + self.lengths.digest()
        return hashes + seq(self.items)


def _fixed_width(t: pa.DataType) -> bool:
    try:
        return bool(t.bit_width % 8 == 0 and t.num_buffers == 2)
    except ValueError:  # not a fixed-width type
        return False


def _element(v: Any) -> bytes:
    if isinstance(v, dict):  # struct values: fields in schema order
        return b"{" + seq(text(str(k)) + _element(x) for k, x in v.items())
    if isinstance(v, list):
        return b"[" + seq(_element(x) for x in v)
    if isinstance(v, tuple):  # map entries
        return b"(" + seq(_element(x) for x in v)
    return canonical(v)


def _type_body(t: pa.DataType) -> bytes:
    return text(str(t))


def _field_body(f: pa.Field) -> bytes:
    meta = b"" if not f.metadata else seq(text(k.decode() + "=") + v for k, v in
                                          sorted(f.metadata.items()))
    return text(f.name) + _type_body(f.type) + (b"T" if f.nullable else b"F") + meta


def chunked_body(chunks: list[pa.Array], length: int, nbytes: int) -> bytes:
    """The chunking-independent body of one column made of ``chunks``."""
    col = _Column(nbytes, any(c.null_count for c in chunks))
    for chunk in chunks:
        if len(chunk):
            col.add(chunk)
    return u64(length) + col.digest()


def _table_body(kind: str, t: Any) -> bytes:
    schema = t.schema
    out = text(kind) + seq(_field_body(f) for f in schema)
    if schema.metadata:
        out += seq(k + b"=" + v for k, v in sorted(schema.metadata.items()))
    for col in t.columns:
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        out += chunked_body(chunks, len(col), col.nbytes)
    return out


def _array_body(kind: str, a: Any) -> bytes:
    chunks = a.chunks if isinstance(a, pa.ChunkedArray) else [a]
    return text(kind) + _type_body(a.type) + chunked_body(chunks, len(a), a.nbytes)


def key_encoder(cls: type) -> Callable[[Any], bytes]:
    """Return the key encoder of a pyarrow class."""
    if issubclass(cls, pa.Table):
        return lambda v: _table_body("pyarrow.Table", v)
    if issubclass(cls, pa.RecordBatch):
        return lambda v: _table_body("pyarrow.RecordBatch", v)
    if issubclass(cls, pa.ChunkedArray):
        return lambda v: _array_body("pyarrow.ChunkedArray", v)
    if issubclass(cls, pa.Array):
        return lambda v: _array_body("pyarrow.Array", v)
    return _refuse


def _refuse(v: Any) -> bytes:
    raise Unsupported(f"{qualname(type(v))} is not supported")


# -- results: Arrow IPC ------------------------------------------------------------------------


def ipc_bytes(table: pa.Table | pa.RecordBatch) -> pa.Buffer:
    """Serialize to one Arrow IPC stream (data only: no pickled extension types)."""
    sink = pa.BufferOutputStream()
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    if not batches and table.num_columns and all(c.num_chunks for c in table.columns):
        # An empty table writes no batch, and its dictionaries (pandas categories) would be
        # lost: write its empty chunks as one batch.
        batches = [pa.RecordBatch.from_arrays([c.chunk(0) for c in table.columns],
                                              schema=table.schema)]
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


def read_ipc(buf: memoryview) -> pa.Table:
    """Read an IPC stream written by :func:`ipc_bytes` (zero-copy over ``buf``)."""
    with pa.ipc.open_stream(pa.py_buffer(buf)) as reader:
        table = reader.read_all()
    # The IPC reader trusts offsets and lengths: a forged stream gave a string column with
    # offsets far outside its buffer (reads out of bounds, a hang on repr). Full validation is
    # linear in the data.
    table.validate(full=True)
    return table


def value_encoder(cls: type) -> Callable[[Any], Carrier] | None:
    """Return the result encoder of a pyarrow class, or None."""
    if issubclass(cls, pa.Table):
        return lambda t: Carrier("arrow:table", None, [ipc_bytes(t)])
    if issubclass(cls, pa.RecordBatch):
        return lambda b: Carrier("arrow:batch", None, [ipc_bytes(b)])
    if issubclass(cls, pa.ChunkedArray):
        return lambda a: Carrier("arrow:chunked", None, [ipc_bytes(pa.table({"a": a}))])
    if issubclass(cls, pa.Array):
        return lambda a: Carrier("arrow:array", None, [ipc_bytes(pa.table({"a": a}))])
    return None


def decode(name: str, meta: Any, buffers: list[memoryview]) -> Any:
    """Rebuild a stored pyarrow value."""
    table = read_ipc(buffers[0])
    if name == "table":
        return table
    if name == "batch":
        return table.combine_chunks().to_batches()[0] if table.num_rows else \
            pa.RecordBatch.from_pylist([], schema=table.schema)
    if name == "chunked":
        return table.column(0)
    if name == "array":
        col = table.column(0)
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    raise ValueError(f"unknown arrow carrier {name!r}")
