"""Attacks by someone who can write the store: forged, copied, flooding and expanding entries,
and leaked credentials. Each runs against the disk store and a real Redis."""

from __future__ import annotations

import logging
import pickle
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from _redis_fixtures import free_port

from persistmemo import Cache, UncacheableResultWarning
from persistmemo.backends.redis import RedisBackend
from persistmemo.codec import Codec, MsgpackSerializer
from persistmemo.errors import BackendError, DecodeError

SECRET = b"s3cret-for-tests"
M61 = 2**61 - 1  # CPython's int hash modulus: k * M61 + 1 all hash to 1


class _Raw:
    """A serializer that stores given bytes under the msgpack codec id (to forge payloads)."""

    name = "msgpack"
    codec_id = 1

    def dumps(self, value: Any) -> bytes:
        return bytes(value)

    def loads(self, data: bytes | memoryview) -> Any:
        raise AssertionError("never used")


def forge(payload: bytes, key: str) -> bytes:
    """A valid unsigned envelope (XXH3 checksum) around any payload: what an attacker writes."""
    return Codec(_Raw()).encode(payload, key=key, created=0.0, duration=0.0)


def tag(body: bytes) -> bytes:
    return b"\xc1" + struct.pack(">Q", len(body)) + body


@pytest.fixture(params=["disk", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store location: a directory, or a real Redis emptied first."""
    if request.param == "disk":
        yield str(tmp_path / "store")
        return
    url = request.getfixturevalue("redis_url")
    RedisBackend(url).clear("")
    yield url


def _fn(cache: Cache, calls: list[Any]) -> Callable[[int], Any]:
    @cache.memoize(lock=False)
    def f(x: int) -> Any:
        calls.append(x)
        return {"x": x, "sq": x * x}

    return f


def _want(x: int) -> Any:
    return {"x": x, "sq": x * x}


# -- signatures ------------------------------------------------------------------------------
def test_without_a_secret_a_forged_entry_is_believed(location: str) -> None:
    """The documented threat (SECURITY.md): unsigned stores trust whoever can write them."""
    cache = Cache(location)
    f = _fn(cache, [])
    key = f.cache_key(1)  # type: ignore[attr-defined]
    cache.backend.set(key, Codec().encode({"x": 666}, key=key, created=0.0, duration=0.0))
    assert f(1) == {"x": 666}


@pytest.mark.parametrize("serializer", ["msgpack", "pickle"])
def test_with_a_secret_unsigned_and_forged_entries_are_misses(location: str,
                                                             serializer: str) -> None:
    """With secret=, every serializer's entries are signed; unsigned or foreign-signed are
    misses (recomputed, counted), never returned."""
    cache = Cache(location, secret=SECRET, serializer=serializer)
    calls: list[Any] = []
    f = _fn(cache, calls)
    key = f.cache_key(1)  # type: ignore[attr-defined]
    forged = [
        Codec().encode({"x": 666}, key=key, created=0.0, duration=0.0),  # unsigned
        Codec(secret=b"attacker").encode({"x": 666}, key=key, created=0.0, duration=0.0),
        forge(msgpack.packb({"x": 666}), key),
    ]
    for n, blob in enumerate(forged, 1):
        cache.backend.set(key, blob)
        assert f(1) == _want(1)
        assert len(calls) == n
        assert f.cache_info().decode_failures == n  # type: ignore[attr-defined]
    assert f(1) == _want(1) and len(calls) == 3  # our own signed entry is a hit
    assert cache.backend.get(key)[4] == 2  # type: ignore[index]  # check kind: MAC


def test_signed_entries_are_bound_to_their_key(location: str) -> None:
    """A validly signed entry copied under another key (or namespace) is a miss."""
    cache = Cache(location, secret=SECRET)
    other = Cache(location, secret=SECRET, namespace="tenant2")
    calls: list[Any] = []
    f, g = _fn(cache, calls), _fn(other, calls)
    for x in range(50):
        f(x)
    b = cache.backend
    blobs = [b.get(f.cache_key(x)) for x in range(50)]  # type: ignore[attr-defined]
    for x, src in enumerate(blobs):
        b.set(f.cache_key((x + 1) % 50), src)  # type: ignore[attr-defined, arg-type]
        b.set(g.cache_key(x), src)  # type: ignore[attr-defined, arg-type]
    calls.clear()
    assert [f(x) for x in range(50)] == [_want(x) for x in range(50)]
    assert [g(x) for x in range(50)] == [_want(x) for x in range(50)]
    assert len(calls) == 100


def test_key_rotation_with_verify_keys(location: str) -> None:
    """Entries signed with an old secret are hits while it is in verify_keys, misses after."""
    calls: list[Any] = []
    f = _fn(Cache(location, secret=b"old"), calls)
    f(1)
    f2 = _fn(Cache(location, secret=b"new", verify_keys=[b"old"]), calls)
    assert f2(1) == _want(1) and calls == [1]
    f3 = _fn(Cache(location, secret=b"new"), calls)
    assert f3(1) == _want(1) and calls == [1, 1]


def test_persistmemo_secret_env_signs_every_entry(location: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """PERSISTMEMO_SECRET alone makes a cache sign (and require signatures)."""
    monkeypatch.setenv("PERSISTMEMO_SECRET", "from-the-env")
    cache = Cache(location)
    f = _fn(cache, [])
    f(3)
    raw = cache.backend.get(f.cache_key(3))  # type: ignore[attr-defined]
    assert isinstance(raw, bytes) and raw[4] == 2
    assert Cache(location, secret="from-the-env").codec.decode(
        raw, key=f.cache_key(3)).value == _want(3)  # type: ignore[attr-defined]


def test_planted_pickle_never_runs(location: str, tmp_path: Path) -> None:
    """A pickle (raw, or in an envelope with a wrong MAC) planted under the real key never
    runs, with the default codec or serializer='pickle' with a secret."""
    marker = tmp_path / "pwned"

    class Canary:
        def __reduce__(self) -> Any:
            return (Path.touch, (marker,))

    blob = pickle.dumps(Canary())
    for serializer in (None, "pickle"):
        cache = Cache(location, serializer=serializer, secret=SECRET if serializer else None)
        f = _fn(cache, [])
        key = f.cache_key(5)  # type: ignore[attr-defined]
        for planted in (blob, Codec(secret=b"wrong", serializer=None).encode(
                0, key=key, created=0.0, duration=0.0)[:64] + blob):
            cache.backend.set(key, planted)
            assert f(5) == _want(5)
    assert not marker.exists()


# -- bounded decoding --------------------------------------------------------------------------
def _flood_set(n: int) -> bytes:
    """A set of n distinct big ints that all share one hash (quadratic to build naively)."""
    ints = [k * M61 + 1 for k in range(2**4, 2**4 + n)]
    parts = MsgpackSerializer().dumps_parts(tuple(ints))  # general tuple form: marker first
    payload = b"".join(bytes(p) for p in parts)
    return payload.replace(b"\xc7\x00\x01", b"\xc7\x00\x02", 1)  # tuple marker -> set marker


def _flood_dict(n: int) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    body = packer.pack_map_header(n)
    for k in range(2**4, 2**4 + n):
        v = k * M61 + 1
        body += packer.pack(msgpack.ExtType(16, v.to_bytes((v.bit_length() + 8) // 8, "big",
                                                            signed=True)))
        body += packer.pack(0)
    return tag(body)


@pytest.mark.parametrize("make", [_flood_set, _flood_dict], ids=["set", "dict"])
def test_hash_flooding_payload_is_refused_in_linear_time(location: str,
                                                         make: Callable[[int], bytes]) -> None:
    """A ~0.5 MB set/dict of colliding ints (16.6 s per hit on 0.1) is a fast miss."""
    cache = Cache(location)
    calls: list[Any] = []
    f = _fn(cache, calls)
    key = f.cache_key(7)  # type: ignore[attr-defined]
    payload = make(40_000)
    assert len(payload) > 400_000
    cache.backend.set(key, forge(payload, key))
    t0 = time.perf_counter()
    assert f(7) == _want(7)
    assert time.perf_counter() - t0 < 2.0  # 0.1: 16.6 s
    assert calls == [7] and f.cache_info().decode_failures == 1  # type: ignore[attr-defined]


def test_legitimate_sets_and_int_keyed_dicts_round_trip() -> None:
    """The flood check does not refuse real data (ints, tuples, bigints, -1/-2 collisions)."""
    codec = Codec()
    for value in ({(i, -i) for i in range(5000)}, {i: str(i) for i in range(-5000, 5000)},
                  frozenset(2**70 + i for i in range(3000)), {-1, -2, 1.0, 2**64}):
        blob = codec.encode(value, key="k", created=0.0, duration=0.0)
        assert codec.decode(blob, key="k").value == value


def test_expansion_payload_is_refused_in_bounded_memory() -> None:
    """4 MB of empty maps (72x as Python objects on 0.1) is refused before memory balloons."""
    n = 4 << 20
    payload = b"\xdd" + struct.pack(">I", n) + b"\x80" * n
    blob = forge(payload, "k")
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="exceed"):
            Codec().decode(blob, key="k")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * len(blob) + (16 << 20), peak


def test_array_header_claiming_gigabytes_is_refused() -> None:
    """A 64-byte ndarray header declaring an 8 GiB array is a DecodeError, nothing allocated."""
    head = bytes((3,)) + b"<f8" + bytes((1,)) + struct.pack(">QQ", 2**30, 0)
    payload = tag(msgpack.packb(msgpack.ExtType(32, head)))
    import numpy  # noqa: F401  (imported lazily by the decoder: not what is timed here)

    t0 = time.perf_counter()
    with pytest.raises(DecodeError):
        Codec().decode(forge(payload, "k"), key="k")
    assert time.perf_counter() - t0 < 0.5


def test_deep_nesting_and_huge_numbers_are_fast_misses() -> None:
    """100,000-deep lists and a 100,000-digit Decimal: DecodeError or value, in bounded time."""
    deep = b"\x91" * 100_000 + b"\x90"
    t0 = time.perf_counter()
    with pytest.raises(DecodeError):
        Codec().decode(forge(deep, "k"), key="k")
    digits = tag(msgpack.packb(msgpack.ExtType(19, b"1" * 100_000)))
    Codec().decode(forge(digits, "k"), key="k")
    assert time.perf_counter() - t0 < 1.0


def test_max_value_size_results_returned_not_stored(location: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A result over max_value_size is returned, not stored, with one warning; a stored entry
    over the reader's limit is a miss."""
    cache = Cache(location, max_value_size=10_000)
    calls: list[int] = []

    @cache.memoize(lock=False)
    def big(n: int) -> bytes:
        calls.append(n)
        return b"x" * n

    with pytest.warns(UncacheableResultWarning, match="max_value_size"):
        assert big(50_000) == b"x" * 50_000
    assert big(50_000) == b"x" * 50_000 and big(60_000) == b"x" * 60_000
    assert calls == [50_000, 50_000, 60_000]
    assert big(100) == b"x" * 100 and big(100) == b"x" * 100 and calls[-1] == 100
    writer = Cache(location)
    key = big.cache_key(20_000)
    writer.backend.set(key, writer.codec.encode(b"y" * 20_000, key=key, created=0.0,
                                                duration=0.0))
    assert big(20_000) == b"x" * 20_000  # the 20 KB entry is a miss for this reader
    assert big.cache_info().decode_failures == 1


# -- credentials and garbage responders --------------------------------------------------------
PASSWORD = "Pa$$:w@rd/1"
ENCODED = "Pa%24%24%3Aw%40rd%2F1"


@pytest.mark.parametrize("url", [
    f"redis://alice:{ENCODED}@127.0.0.1:{{port}}/0",
    f"redis://:{ENCODED}@127.0.0.1:{{port}}/0",
    f"redis://{ENCODED}@127.0.0.1:{{port}}/0",
    f"redis://127.0.0.1:{{port}}/0?password={ENCODED}",
    f"redis://127.0.0.1:{{port}}/0?username=bob&password={ENCODED}",
    f"rediss://alice:{ENCODED}@127.0.0.1:{{port}}/0",
    f"redis+cluster://alice:{ENCODED}@127.0.0.1:{{port}}",
])
def test_password_is_scrubbed_in_every_url_form(url: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """No spelling of the password appears in repr, errors or logs, whatever the URL form."""
    url = url.format(port=free_port())
    cache = Cache(url, backoff=30)
    f = _fn(cache, [])
    with caplog.at_level(logging.DEBUG, logger="persistmemo"):
        assert f(2) == _want(2)
    with pytest.raises(BackendError) as info:
        Cache(url, fail_open=False).backend.get("k")
    text = " ".join([caplog.text, repr(cache), repr(cache.backend), str(info.value),
                     repr(info.value)])
    for form in (PASSWORD, ENCODED, "w@rd", "w%40rd"):
        assert form not in text, form


def test_garbage_responder_trips_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    """An HTTP server on the port: results correct, one connection per back-off window."""
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
            try:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        cache = Cache(f"redis://127.0.0.1:{srv.getsockname()[1]}/0", backoff=30)
        calls: list[Any] = []
        f = _fn(cache, calls)
        with caplog.at_level(logging.WARNING, logger="persistmemo"):
            assert [f(i % 5) for i in range(30)] == [_want(i % 5) for i in range(30)]
        assert accepted[0] <= 2
        assert cache.info().errors >= 1 and f.cache_info().errors >= 1  # type: ignore[attr-defined]
        assert len([r for r in caplog.records if r.name == "persistmemo"]) == 1
    finally:
        srv.close()


def test_oversized_stored_values_are_refused_before_reading(location: str,
                                                            tmp_path: Path) -> None:
    """A planted entry far over max_value_size is refused by the store (row size on disk, a
    server-side STRLEN on Redis) before it is read: fast, no allocation, a counted miss."""
    cache = Cache(location, max_value_size=1 << 20)
    calls: list[Any] = []
    f = _fn(cache, calls)
    key = f.cache_key(9)  # type: ignore[attr-defined]
    if location.startswith("redis"):
        import redis

        with redis.Redis.from_url(location) as raw:  # no short timeout: a loaded machine
            raw.set(key, b"\0" * (24 << 20))
    else:
        f(9)  # a row to hijack: point it at a 1 GiB sparse value file
        import sqlite3

        name = "ab/cd/" + "e" * 28 + ".val"
        path = Path(location) / name
        path.parent.mkdir(parents=True)
        with open(path, "wb") as fh:
            fh.truncate(1 << 30)
        with sqlite3.connect(Path(location) / "cache.db") as con:
            con.execute("UPDATE Cache SET mode = 2, filename = ?, value = NULL, size = ? "
                        "WHERE key = ?", (name, 1 << 30, key))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        assert f(9) == _want(9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 8 << 20, peak
    assert f.cache_info().decode_failures == 1  # type: ignore[attr-defined]
    assert f(9) == _want(9) and f.cache_info().hits == 1  # type: ignore[attr-defined]
