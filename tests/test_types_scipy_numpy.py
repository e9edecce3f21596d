"""scipy.sparse and numpy beyond plain arrays (structured dtypes, subclasses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _types_helpers import key, need, roundtrip
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from persistmemo.errors import SerializationError

FORMATS = [f"{f}_{k}" for f in ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")
           for k in ("matrix", "array")]


@pytest.mark.parametrize("cls", FORMATS)
def test_every_sparse_class_round_trips(cls: str) -> None:
    """Each scipy.sparse class comes back as itself, with equal shape, dtype and values."""
    sp = need("scipy.sparse")
    m = getattr(sp, cls)(sp.random(6, 5, density=0.4, format="csr", random_state=1))
    back = roundtrip(m)
    assert type(back) is type(m) and back.shape == m.shape and back.dtype == m.dtype
    assert np.array_equal(back.toarray(), m.toarray())


def test_sparse_keys_are_canonical_within_a_class() -> None:
    """Duplicates summed and entry order do not matter; class, values and shape do."""
    sp = need("scipy.sparse")
    a = sp.coo_matrix(([1.0, 2.0, 3.0], ([0, 1, 0], [0, 1, 0])), shape=(2, 2))
    b = sp.coo_matrix(([2.0, 4.0], ([1, 0], [1, 0])), shape=(2, 2))
    assert key(a) == key(b)
    assert key(a) != key(sp.csr_matrix(a))  # another class, other semantics
    assert key(a) != key(sp.coo_matrix(([4.0, 2.5], ([0, 1], [0, 1])), shape=(2, 2)))
    assert key(a) != key(sp.coo_matrix(([4.0, 2.0], ([0, 1], [0, 1])), shape=(3, 2)))
    assert key(sp.csr_array(a)) == key(sp.csr_array(b))


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  elements=st.sampled_from([0.0, 1.0, -2.5])))
def test_property_sparse_round_trip_and_key(dense: Any) -> None:
    """Any small matrix: CSR round-trips; CSR built twice shares a key; a change does not."""
    sp = need("scipy.sparse")
    m = sp.csr_matrix(dense)
    assert (roundtrip(m) != m).nnz == 0
    assert key(m) == key(sp.csr_matrix(dense.copy()))
    changed = dense.copy()
    changed[0, 0] += 1
    assert key(sp.csr_matrix(changed)) != key(m)


STRUCT = np.dtype([("a", "<i4"), ("b", "<f8", (2,)), ("c", [("x", "u1"), ("y", "S3")])],
                  align=True)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(STRUCT, hnp.array_shapes(min_dims=0, max_dims=2, max_side=4)))
def test_property_structured_arrays_round_trip(arr: Any) -> None:
    """Structured arrays (nested records, sub-arrays, alignment) come back bytewise equal."""
    back = roundtrip(arr)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes() and back.flags.writeable


def test_plain_data_subclasses(tmp_path: Path) -> None:
    """A memmap comes back as an ndarray, a recarray as a recarray, np.matrix is refused."""
    m = np.memmap(tmp_path / "m.bin", "float32", "w+", shape=(3, 2))
    m[:] = 1.5
    back = roundtrip(m)
    assert type(back) is np.ndarray and back.dtype == m.dtype and (back == 1.5).all()
    rec = np.zeros(2, [("a", "i4")]).view(np.recarray)
    assert type(roundtrip(rec)) is np.recarray
    with pytest.raises(SerializationError, match=r"np\.asarray"):
        roundtrip(np.asarray([[1]]).view(np.matrix))
    with pytest.raises(SerializationError):
        roundtrip(np.zeros(2, [("o", object)]))
    assert key(m) == key(np.memmap(tmp_path / "m.bin", "float32", "r", shape=(3, 2)))
