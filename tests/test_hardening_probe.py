"""Regressions for defects found by probing the hardened store as an attacker and on a broken
machine (issue 10, second pass): each test failed before its fix."""

from __future__ import annotations

import io
import struct
import time
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest

from persistmemo import Cache
from persistmemo.backends.redis import redact_url
from persistmemo.codec import HEADER, Codec
from persistmemo.errors import ConfigurationError, DecodeError


def _forge_unsigned(payload: bytes, key: str = "k") -> bytes:
    """An envelope around ``payload`` with a valid (unkeyed) checksum, as any store writer can."""
    from persistmemo._signing import checksum

    header = HEADER.pack(b"PM", 2, 1, 1, 0, 0, 0.0, 0.0, 0, 0)
    return header + checksum(key.encode() + b"\0" + header, (payload,), len(payload)) + payload


@pytest.mark.parametrize("code_point", [0x110000, 0xF2000000, 0xFFFFFFFF])
def test_forged_str_array_with_invalid_code_points_is_a_miss(code_point: int) -> None:
    """A numpy str array holding code points above U+10FFFF is refused, not returned broken."""
    codec = Codec()
    blob = codec.encode(np.zeros((3, 4), dtype="<U3"), key="k", created=0, duration=0)
    payload = bytearray(blob[48:])
    payload[-4:] = struct.pack("<I", code_point)
    with pytest.raises(DecodeError, match="code points"):
        codec.decode(_forge_unsigned(bytes(payload)), key="k")


def test_valid_str_arrays_still_round_trip() -> None:
    """The code-point check keeps every legal str array, astral and surrogate-free included."""
    codec = Codec()
    arr = np.array([["a", "\U0010ffff"], ["\u00e9t\u00e9", ""]], dtype="<U3")
    out = codec.decode(codec.encode(arr, key="k", created=0, duration=0), key="k").value
    assert out.dtype == arr.dtype and out.tolist() == arr.tolist()


@pytest.mark.parametrize("url", [
    "redis://alice:S3CRETp/w@127.0.0.1:6379/0",
    "redis://alice:S3CRETp?w@127.0.0.1:6379",
    "redis://alice:S3CRETp#w@127.0.0.1:6379",
    "redis://S3CRETp/w@127.0.0.1:6379/0",
    "redis://alice:S3CRET@p/w@127.0.0.1:6379/0",
    "rediss://alice:S3/CRET?p#w@127.0.0.1:6379/0",
])
def test_raw_reserved_characters_in_a_password_are_never_echoed(url: str) -> None:
    """A password with a raw '/', '?' or '#' is refused with a clear error that hides it."""
    assert "S3" not in redact_url(url) and "p/w" not in redact_url(url)
    with pytest.raises(ConfigurationError, match="percent-encode") as info:
        Cache(url)
    assert "S3" not in str(info.value) and "w@" not in str(info.value)


def test_at_sign_in_a_known_query_value_is_not_mistaken_for_a_password() -> None:
    """``?client_name=a@b`` is a legal URL: kept as is, and no host is masked."""
    url = "redis://127.0.0.1:6379/0?client_name=a@b"
    assert redact_url(url) == url


@pytest.mark.parametrize("args", [
    ["stats", "redis://alice:S3CRETpw@127.0.0.1:1/0"],
    ["ls", "--bogus=redis://:S3CRETpw@127.0.0.1:1"],
    ["clear", "redis://127.0.0.1:1/0?password=S3CRETpw"],
    ["maintain", "redis://alice:S3CRET pw@127.0.0.1:1/0"],
    ["stats", "--color", "redis://alice:S3CRETpw@127.0.0.1:1/0"],
])
def test_cli_usage_errors_do_not_echo_passwords(args: list[str]) -> None:
    """argparse repeats bad arguments in its error: the password is redacted there too."""
    from persistmemo.cli import main

    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "error:" in err.getvalue()
    assert "S3CRET" not in err.getvalue() and "pw@" not in err.getvalue()


def test_wrong_password_trips_the_back_off(tmp_path: Path) -> None:
    """A wrong password fails every call the same way: one connection per back-off window, not
    three per call (each failed AUTH closes the connection), and every result is returned."""
    import redis
    from _redis_fixtures import RedisServer

    server = RedisServer(tmp_path / "auth")
    try:
        redis.Redis(port=server.port).config_set("requirepass", "right-pw")
        admin = redis.Redis(port=server.port, password="right-pw")
        before = admin.info("stats")["total_connections_received"]
        cache = Cache(f"redis://:wrong-pw@127.0.0.1:{server.port}/0", backoff=30)
        calls: list[int] = []

        @cache.memoize
        def f(x: int) -> int:
            calls.append(x)
            return x + 1

        started = time.monotonic()
        assert [f(i) for i in range(30)] == [i + 1 for i in range(30)]
        assert time.monotonic() - started < 5
        opened = admin.info("stats")["total_connections_received"] - before - 1  # minus admin
        assert opened <= 2, opened
        assert f.cache_info().errors >= 1 and len(calls) == 30
        assert "wrong-pw" not in repr(cache)
    finally:
        server.kill()


def test_huge_fraction_decodes_in_linear_time() -> None:
    """A Fraction with 200 KB terms decodes without the quadratic gcd (was 5.5 s per hit)."""
    import os
    from fractions import Fraction

    from persistmemo._msgpack_ext import _coprime_fraction

    a = int.from_bytes(os.urandom(200_000), "big") | 1
    b = int.from_bytes(os.urandom(200_000), "big") | 1
    codec = Codec()
    blob = codec.encode(_coprime_fraction(a, b), key="k", created=0, duration=0)
    started = time.perf_counter()
    value = codec.decode(blob, key="k").value
    assert time.perf_counter() - started < 0.5
    assert type(value) is Fraction and (value.numerator, value.denominator) == (a, b)


@pytest.mark.parametrize("value", ["1/3", "-7/2", "0", "1000000000000000000000000000001/7"])
def test_fractions_round_trip_equal_hashable_and_usable(value: str) -> None:
    """Decoded Fractions equal, hash like and compute like the originals."""
    from fractions import Fraction

    codec = Codec()
    f = Fraction(value)
    got = codec.decode(codec.encode({f: [f]}, key="k", created=0, duration=0), key="k").value
    (k, v), = got.items()
    assert k == f and hash(k) == hash(f) and v[0] + 1 == f + 1 and type(k) is Fraction


def test_forged_fraction_with_a_non_positive_denominator_is_a_miss() -> None:
    """A Fraction whose stored denominator is 0 or negative is refused (forged)."""
    from fractions import Fraction

    codec = Codec()
    blob = codec.encode(Fraction(5, 3), key="k", created=0, duration=0)
    payload = bytes(blob[48:])
    assert payload.endswith(b"\x05\x03")
    for bad in (b"\x05\x00", b"\x05\xff"):  # positive fixints: 0 and -1
        with pytest.raises(DecodeError, match="Fraction"):
            codec.decode(_forge_unsigned(payload[:-2] + bad), key="k")


def test_sqlite_files_are_owner_only_under_a_permissive_umask(tmp_path: Path) -> None:
    """cache.db and its WAL/SHM (small values live inline there) are 0600, like value files,
    even in a directory the user made 0755 and under umask 022 (SQLite's default is 0644)."""
    import os
    import stat

    from persistmemo.backends.disk import DiskBackend

    d = tmp_path / "c"
    d.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        b = DiskBackend(d)
        b.set("k", b"small inline value")
        assert b.get("k") == b"small inline value"
        b.close()
        b2 = DiskBackend(d)  # a reopen keeps them private too
        assert b2.get("k") == b"small inline value"
    finally:
        os.umask(old)
    files = [d / n for n in ("cache.db", "cache.db-wal", "cache.db-shm") if (d / n).exists()]
    assert d / "cache.db" in files
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o600"}, modes


def test_planted_giant_inline_row_is_refused_without_loading_it(tmp_path: Path) -> None:
    """An inline (SQLite) value over max_value_size is refused from its length: never loaded."""
    import sqlite3
    import tracemalloc

    d = tmp_path / "c"
    cache = Cache(d, max_value_size=64 * 1024)
    calls: list[int] = []

    @cache.memoize
    def f(x: int) -> int:
        calls.append(x)
        return x * 7

    assert f(3) == 21
    key = f.cache_key(3)
    with sqlite3.connect(d / "cache.db") as con:
        n = con.execute("UPDATE Cache SET mode = 1, filename = NULL, value = zeroblob(?), "
                        "size = 0 WHERE key = ?", (40 << 20, key)).rowcount
    assert n == 1
    tracemalloc.start()
    try:
        assert f(3) == 21  # refused: a miss, recomputed
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert calls == [3, 3] and f.cache_info().decode_failures == 1
    assert f(3) == 21 and calls == [3, 3]  # the recomputed result was stored over it


@pytest.mark.parametrize("spec", [b"|S0", b"<U0"])
def test_forged_zero_itemsize_array_does_not_allocate(spec: bytes) -> None:
    """An array header with dtype S0/U0 and 2**33 items is refused: numpy would allocate it as
    S1/U1 (8-32 GiB) although no byte of the entry backs it."""
    codec = Codec()
    payload = bytes(codec.encode(np.zeros(3, dtype="S2"), key="k", created=0, duration=0)[48:])
    forged = payload.replace(b"|S2", spec).replace(struct.pack(">Q", 3), struct.pack(">Q", 2**33))
    assert forged != payload
    with pytest.raises(DecodeError, match="zero-size"):
        codec.decode(_forge_unsigned(forged), key="k")


def test_reply_of_the_wrong_shape_never_reaches_the_caller() -> None:
    """A non-Redis server whose reply parses as RESP of the wrong type (redis-py then raised
    AttributeError into the call) is a counted fault that trips the back-off."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(50)
    accepted = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted[0] += 1
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"$5\r\nhello\r\n" * 4)
                    conn.recv(4096)  # until the client gives up and closes
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        cache = Cache(f"redis://127.0.0.1:{srv.getsockname()[1]}/0", backoff=30)
        calls: list[int] = []

        @cache.memoize
        def f(x: int) -> int:
            calls.append(x)
            return -x

        assert [f(i) for i in range(10)] == [-i for i in range(10)]
        assert calls == list(range(10)) and f.cache_info().errors >= 1
        assert accepted[0] <= 2, accepted[0]
    finally:
        srv.close()


def _zstd_bomb(content: int) -> bytes:
    """A tagged payload holding one zstd frame of ``content`` zero bytes (a few KB)."""
    zstandard = pytest.importorskip("zstandard")
    from persistmemo._msgpack_ext import EXT_ZSTD

    obj = zstandard.ZstdCompressor(level=3, write_content_size=True).compressobj(size=content)
    zeros = b"\0" * (1 << 20)
    frame = b"".join([*(obj.compress(zeros) for _ in range(content >> 20)), obj.flush()])
    ext_head = b"\xc9" + struct.pack(">Ib", len(frame), EXT_ZSTD)
    return struct.pack(">BQ", 0xC1, len(ext_head) + len(frame)) + ext_head + frame


def test_zstd_bomb_is_refused_before_it_expands() -> None:
    """A 4 KB forged frame declaring 128 MiB is refused by a reader whose max_value_size is
    1 MiB, before any allocation (zstd expands zeros ~32,000x)."""
    import tracemalloc

    payload = _zstd_bomb(128 << 20)
    assert len(payload) < 16 << 10
    codec = Codec(max_value_size=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="max_value_size"):
            codec.decode(_forge_unsigned(payload), key="k")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_compressed_values_within_the_limit_still_decode() -> None:
    """The limit applies to the expanded size: compressed entries under it decode as before."""
    pytest.importorskip("zstandard")
    from persistmemo._compress import parse_compress

    codec = Codec(max_value_size=4 << 20, compress=parse_compress("zstd"))
    value = np.zeros(300_000, dtype=np.int64)  # 2.4 MB, compresses to a few KB
    blob = codec.encode(value, key="k", created=0, duration=0)
    assert len(blob) < 100_000
    assert np.array_equal(codec.decode(blob, key="k").value, value)


def test_writer_refuses_what_readers_would_not_expand() -> None:
    """A result over max_value_size uncompressed is not stored even if it compresses well
    (readers refuse to expand it: it would be a miss forever)."""
    pytest.importorskip("zstandard")
    from persistmemo._compress import parse_compress
    from persistmemo.errors import SerializationError

    codec = Codec(max_value_size=1 << 20, compress=parse_compress("zstd"))
    with pytest.raises(SerializationError, match="uncompressed, over max_value_size"):
        codec.encode(np.zeros(300_000), key="k", created=0, duration=0)


def test_forged_arrow_offsets_are_refused() -> None:
    """A pandas string column whose Arrow offsets point outside their buffer (one byte changed
    in a real entry) is a miss; it decoded before, and reading it read out of bounds / hung."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    codec = Codec()
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    payload = bytearray(codec.encode(frame, key="k", created=0, duration=0)[48:])
    assert codec.decode(_forge_unsigned(bytes(payload)), key="k").value.equals(frame)
    refused = 0
    for i in range(len(payload) - 48, len(payload)):  # the string column's offsets and data
        forged = bytearray(payload)
        forged[i] ^= 0xA8
        try:
            value = codec.decode(_forge_unsigned(bytes(forged)), key="k").value
        except DecodeError:
            refused += 1
            continue
        repr(value)  # whatever decodes is a well-formed frame: repr neither hangs nor crashes
    assert refused >= 1


def test_forged_sparse_indices_outside_the_shape_are_refused() -> None:
    """A CSR matrix whose stored column index exceeds its shape is a miss (toarray() would
    write out of bounds in C++)."""
    sparse = pytest.importorskip("scipy.sparse")
    codec = Codec()
    m = sparse.csr_matrix(np.eye(4, dtype=np.float64)[[3, 0, 2, 1]])
    payload = bytes(codec.encode(m, key="k", created=0, duration=0)[48:])
    indices = np.array([3, 0, 2, 1], dtype=m.indices.dtype).tobytes()
    assert payload.count(indices) == 1
    forged = payload.replace(indices, np.array([3, 0, 2, 1 << 20], m.indices.dtype).tobytes())
    with pytest.raises(DecodeError):
        codec.decode(_forge_unsigned(forged), key="k")
