"""RedisBackend on real redis-server processes: API, key hygiene, locks, faults, async, fork."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _redis_fixtures
import pytest
import redis
from _redis_fixtures import RedisServer, free_port
from redis.cluster import RedisCluster
from redis.crc import key_slot

from persistmemo.backends.base import MISSING
from persistmemo.backends.redis import RedisBackend
from persistmemo.errors import BackendError, BackendUnavailable, ConfigurationError

pytestmark = pytest.mark.redis
fresh_redis = _redis_fixtures.fresh_redis  # a private server per destructive test
SECRET = "S3cretPw"


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def rb(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    """An emptied RedisBackend on the session server and on the session cluster."""
    name = "redis_url" if request.param == "redis" else "redis_cluster_url"
    backend = RedisBackend(request.getfixturevalue(name))
    backend.clear("")
    yield backend
    backend.close()


def _until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``predicate`` every 10 ms until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _timed(fn: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Run ``fn``; return the elapsed seconds and the exception it raised, if any."""
    start = time.monotonic()
    try:
        fn()
    except BaseException as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def _commandstats(backend: RedisBackend) -> dict[str, int]:
    """Return command name -> calls, summed over every primary of ``backend``."""
    calls: dict[str, int] = {}
    for node in backend._nodes():
        for name, stats in node.info("commandstats").items():
            name = name.removeprefix("cmdstat_")
            calls[name] = calls.get(name, 0) + stats["calls"]
    return calls


# -- URLs and configuration ------------------------------------------------------------------
def test_unknown_url_parameter_is_a_configuration_error() -> None:
    """An unknown query parameter raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match="'retries'"):
        RedisBackend("redis://127.0.0.1:6379/0?retries=3")
    with pytest.raises(ConfigurationError, match="'retries'") as info:
        RedisBackend(f"redis://127.0.0.1:6379/0?password={SECRET}&retries=3")
    assert SECRET not in str(info.value)  # ?password= is accepted, and never echoed


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:6379/notanumber",
        "redis://127.0.0.1:6379/0?socket_timeout=abc",
        "redis://127.0.0.1:6379/0?socket_timeout=0",
        "redis://127.0.0.1:6379/0?ssl_ca_certs=/tmp/ca.pem",
        "redis+cluster://127.0.0.1:7000/2",
        "unix://",
    ],
)
def test_invalid_urls_are_rejected(url: str) -> None:
    """Bad schemes, db numbers, timeouts, ssl_* without TLS and cluster db != 0 are refused."""
    with pytest.raises(ConfigurationError):
        RedisBackend(url)


def test_url_parameters_reach_the_client() -> None:
    """db, timeouts, client_name, max_connections and TLS settings configure the client."""
    b = RedisBackend(
        "redis://u:p@10.1.2.3:6400/3?socket_timeout=0.25&client_name=pm&max_connections=7"
    )
    kw = b._sync().connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"], kw["username"], kw["password"]) == (
        "10.1.2.3", 6400, 3, "u", "p",
    )  # fmt: skip
    assert (kw["socket_timeout"], kw["socket_connect_timeout"], kw["client_name"]) == (
        0.25,
        0.5,
        "pm",
    )
    assert b._sync().connection_pool.max_connections == 7
    assert kw["retry"].get_retries() == 0 and kw["health_check_interval"] == 0
    assert RedisBackend("redis://h/0?db=5")._sync().connection_pool.connection_kwargs["db"] == 5
    tls = RedisBackend("rediss://h:6380?ssl_ca_certs=/ca.pem&connect_timeout=0.2")
    kw = tls._sync().connection_pool.connection_kwargs
    assert (kw["ssl_check_hostname"], kw["ssl_cert_reqs"], kw["ssl_ca_certs"]) == (
        True,
        "required",
        "/ca.pem",
    )
    assert kw["socket_connect_timeout"] == 0.2
    unix = RedisBackend("unix:///run/redis.sock?db=2")
    assert unix._sync().connection_pool.connection_kwargs["path"] == "/run/redis.sock"
    assert (b.name, RedisBackend("redis+cluster://h:7000").name) == ("redis", "redis-cluster")


def test_password_never_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The password is redacted in repr and absent from the error raised against a closed port."""
    port = free_port()
    b = RedisBackend(f"redis://alice:{SECRET}@127.0.0.1:{port}/0")
    c = RedisBackend(f"redis+cluster://alice:{SECRET}@127.0.0.1:{port}")
    assert repr(b) == f"<RedisBackend redis://alice:***@127.0.0.1:{port}/0>"
    with caplog.at_level(logging.DEBUG):
        for backend in (b, c):
            assert SECRET not in repr(backend) and SECRET not in str(backend)
            with pytest.raises(BackendUnavailable) as info:
                backend.get("k")
            assert SECRET not in str(info.value) and SECRET not in repr(info.value)
            assert "***" in str(info.value)
            assert isinstance(info.value.__cause__, (redis.RedisError, Exception))
    assert SECRET not in caplog.text


def test_wrong_target_or_option_is_rejected() -> None:
    """A target that is not a URL or sync client, or an unknown option, is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="sync redis-py client"):
        RedisBackend(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="sync redis-py client"):
        RedisBackend(redis.asyncio.Redis())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'sockettimeout'"):
        RedisBackend("redis://127.0.0.1:6379/0", sockettimeout=1)


# -- basic operations (server and cluster) ---------------------------------------------------
def test_get_set_delete_roundtrip(rb: RedisBackend) -> None:
    """Values round-trip as bytes; absent keys are MISSING; delete reports existence."""
    assert rb.get("pm:t:a") is MISSING
    rb.set("pm:t:a", b"\x00value\xff")
    rb.set("pm:t:empty", b"")
    assert rb.get("pm:t:a") == b"\x00value\xff" and rb.get("pm:t:empty") == b""
    assert rb.delete("pm:t:a") is True and rb.delete("pm:t:a") is False
    assert rb.get("pm:t:a") is MISSING


def test_ttl_expiry_and_px_rounding(rb: RedisBackend) -> None:
    """A TTL becomes SET PX in ms (at least 1 ms) and the entry expires."""
    raw = rb._sync()
    rb.set("pm:t:long", b"v", ttl=10)
    assert 9000 < raw.pttl("pm:t:long") <= 10000
    rb.set("pm:t:none", b"v", ttl=None)
    assert raw.pttl("pm:t:none") == -1
    rb.set("pm:t:short", b"v", ttl=0.05)
    assert _until(lambda: rb.get("pm:t:short") is MISSING, timeout=2.0)
    rb.set("pm:t:tiny", b"v", ttl=0.0001)  # rounds up to 1 ms, never to "no expiry"
    assert _until(lambda: rb.get("pm:t:tiny") is MISSING, timeout=2.0)


def test_get_many_set_many_across_slots(rb: RedisBackend) -> None:
    """set_many/get_many over keys in many hash slots keep order and report MISSING."""
    keys = [f"pm:t:{i}" for i in range(300)]
    assert len({key_slot(k.encode()) for k in keys}) > 250
    rb.set_many([(k, k.encode()) for k in keys[::2]], ttl=30)
    got = rb.get_many(keys)
    assert got == [k.encode() if i % 2 == 0 else MISSING for i, k in enumerate(keys)]
    rb.set_many([])  # no round trip, no error
    assert rb.get_many([]) == []
    assert 0 < rb._sync().pttl(keys[0]) <= 30000


def test_keys_and_clear_respect_prefix_with_glob_characters(rb: RedisBackend) -> None:
    """clear('pm:1:tenant*') touches only that literal prefix: glob characters are escaped."""
    tricky = ["pm:1:tenant*", "pm:1:tenantB", "pm:1:tenant?", "pm:1:tenant[A]", "a[1]", "b\\x"]
    for prefix in tricky:
        rb.set_many([(f"{prefix}:{i}", b"v") for i in range(20)])
    assert sorted(rb.keys("pm:1:tenant*")) == sorted(f"pm:1:tenant*:{i}" for i in range(20))
    assert rb.clear("pm:1:tenant*") == 20
    for prefix in tricky[1:]:
        assert len(list(rb.keys(prefix))) == 20, prefix
        assert rb.clear(prefix) == 20, prefix
    assert list(rb.keys("")) == []


def test_clear_many_keys_in_batches_and_empty_prefix(rb: RedisBackend) -> None:
    """clear() handles more keys than one UNLINK batch; clear('') empties the keyspace."""
    rb.set_many([(f"pm:big:{i}", b"v") for i in range(2500)])
    rb.set_many([(f"other:{i}", b"v") for i in range(10)])
    assert rb.clear("pm:big:") == 2500
    assert rb.clear("pm:big:") == 0
    assert sorted(rb.keys("")) == sorted(f"other:{i}" for i in range(10))
    assert rb.clear("") == 10


# -- locks ------------------------------------------------------------------------------------
def test_lock_semantics(rb: RedisBackend) -> None:
    """Acquire is exclusive, release by a stale token deletes nothing, renew extends."""
    raw = rb._sync()
    first = rb.lock("pm:lock:a", ttl=5)
    assert first.key == "pm:lock:a:lock" and len(first.token) == 32
    assert first.acquire() is True
    assert rb.lock("pm:lock:a", ttl=5).acquire() is False
    assert raw.get(first.key) == first.token.encode()
    raw.pexpire(first.key, 100)  # time passes...
    assert first.renew() is True and raw.pttl(first.key) > 4000
    raw.delete(first.key)  # ...the lease expires and someone else takes it
    second = rb.lock("pm:lock:a", ttl=5)
    assert second.acquire() is True
    assert first.release() is False and first.renew() is False
    assert raw.get(first.key) == second.token.encode()
    assert second.release() is True and raw.get(first.key) is None
    with pytest.raises(ValueError):
        rb.lock("pm:lock:b", ttl=0)


def test_lock_lives_beside_its_entry(rb: RedisBackend) -> None:
    """A lease never touches its entry, is hidden from keys() and removed by clear(prefix)."""
    rb.set("pm:ns:v1:abc", b"value")
    lock = rb.lock("pm:ns:v1:abc", ttl=5)
    assert lock.acquire() and rb.get("pm:ns:v1:abc") == b"value"
    assert list(rb.keys("pm:ns:")) == ["pm:ns:v1:abc"]
    assert rb.clear("pm:ns:") == 2 and rb.get(lock.key) is MISSING


def test_acquire_and_get_and_set_and_release(rb: RedisBackend) -> None:
    """acquire_and_get reports (acquired, value); set_and_release stores and frees the lease."""
    lock = rb.lock("pm:val:c", ttl=5)
    assert rb.acquire_and_get(lock, "pm:val:c") == (True, MISSING)
    other = rb.lock("pm:val:c", ttl=5)
    assert rb.acquire_and_get(other, "pm:val:c") == (False, MISSING)
    rb.set_and_release("pm:val:c", b"result", ttl=30, lock=lock)
    assert rb.get("pm:val:c") == b"result" and rb.get(lock.key) is MISSING
    assert 0 < rb._sync().pttl("pm:val:c") <= 30000
    assert rb.acquire_and_get(other, "pm:val:c") == (True, b"result")
    rb.set_and_release("pm:val:c", b"stale", ttl=None, lock=lock)  # stale token: lease kept
    assert rb.get(other.key) == other.token.encode()
    rb.set_and_release("pm:val:d", b"nolock", ttl=None, lock=None)
    assert rb.get("pm:val:d") == b"nolock"


def test_release_script_reloaded_after_script_flush(fresh_redis: RedisServer) -> None:
    """EVALSHA falls back to EVAL when the server's script cache was flushed."""
    b = RedisBackend(fresh_redis.url)
    try:
        for step in range(2):
            lock = b.lock("pm:lock:s", ttl=5)
            assert lock.acquire()
            b._sync().script_flush()
            if step == 0:
                assert lock.release() is True
            else:
                b.set_and_release("pm:val:s", b"v", ttl=None, lock=lock)
            assert b.get(lock.key) is MISSING
    finally:
        b.close()


def test_hit_path_and_composites_are_single_commands(fresh_redis: RedisServer) -> None:
    """get is one GET; acquire_and_get is SET+GET; nothing else is sent (no KEYS/FLUSH*)."""
    b = RedisBackend(fresh_redis.url)
    try:
        b.set("pm:k", b"v")
        b._sync().config_resetstat()
        assert b.get("pm:k") == b"v"
        assert b.acquire_and_get(b.lock("pm:l", ttl=5), "pm:k") == (True, b"v")
        calls = {k: v for k, v in _commandstats(b).items() if k not in ("config|resetstat", "info")}
        assert calls == {"get": 2, "set": 1}
    finally:
        b.close()


# -- async ----------------------------------------------------------------------------------
def test_async_api(rb: RedisBackend) -> None:
    """The async twins match the sync API on server and cluster."""

    async def main() -> None:
        await rb.aset("pm:a:1", b"one", ttl=30)
        assert await rb.aget("pm:a:1") == b"one" and await rb.aget("pm:a:2") is MISSING
        assert await rb.aget_many(["pm:a:1", "pm:a:2"]) == [b"one", MISSING]
        assert await rb.aget_many([]) == []
        lock = rb.lock("pm:a:lock", ttl=5)
        assert await rb.aacquire_and_get(lock, "pm:a:1") == (True, b"one")
        assert await rb.aacquire_and_get(rb.lock("pm:a:lock", ttl=5), "pm:a:1") == (False, b"one")
        await rb.aset_and_release("pm:a:1", b"two", ttl=None, lock=lock)
        assert await rb.aget("pm:a:1") == b"two" and await rb.aget(lock.key) is MISSING
        lock2 = rb.lock("pm:a:lock", ttl=5)
        assert lock2.acquire() and await rb.arelease(lock2) is True
        assert await rb.adelete("pm:a:1") is True and await rb.adelete("pm:a:1") is False

    asyncio.run(main())


def test_async_client_per_loop_closed_with_loop(redis_url: str) -> None:
    """Each event loop gets its own client, closed at loop shutdown without ResourceWarning."""
    b = RedisBackend(redis_url)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        for i in range(3):
            asyncio.run(b.aset(f"pm:loop:{i}", b"v"))
            assert b._aclients == {}  # the loop's shutdown closed and dropped its client
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(b.aget("pm:loop:0")) == b"v"
        b.close()  # an idle, open loop: close() closes its client right there
        loop.close()
        gc.collect()
    assert b.get("pm:loop:1") == b"v"  # still usable after close(): reconnects lazily
    b.close()


def test_async_cancellation_does_not_desync(fresh_redis: RedisServer) -> None:
    """A GET cancelled on a paused server leaves no stale reply: 200 reads get their own value."""
    b = RedisBackend(fresh_redis.url, socket_timeout=5)  # the cancel, not the timeout, fires
    b.set_many([(f"pm:c:{i}", f"value-{i}".encode()) for i in range(200)])

    async def main() -> None:
        assert await b.aget("pm:c:0") == b"value-0"  # warm connection
        fresh_redis.pause()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(b.aget("pm:c:1"), 0.3)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(b.aacquire_and_get(b.lock("pm:c:l", ttl=1), "pm:c:2"), 0.3)
        finally:
            fresh_redis.resume()
        results = await asyncio.gather(*(b.aget(f"pm:c:{i}") for i in range(200)))
        assert results == [f"value-{i}".encode() for i in range(200)]
        for i in range(200):
            assert await b.aget(f"pm:c:{i}") == f"value-{i}".encode()

    asyncio.run(main())
    b.close()


def test_async_falls_back_to_threads_for_cluster_client(redis_cluster_url: str) -> None:
    """An existing RedisCluster object works; its async twins run in worker threads."""
    port = int(redis_cluster_url.rsplit(":", 1)[1])
    client = RedisCluster(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        b = RedisBackend(client)
        assert b.name == "redis-cluster"
        b.set("pm:obj:1", b"v")

        async def main() -> None:
            assert await b.aget("pm:obj:1") == b"v"
            assert await b.aget_many(["pm:obj:1", "pm:obj:2"]) == [b"v", MISSING]

        asyncio.run(main())
        b.close()
        assert client.get("pm:obj:1") == b"v"  # close() leaves a client it does not own alone
        b.delete("pm:obj:1")
    finally:
        client.close()


def test_existing_sync_client_gets_native_async_twin(redis_server: RedisServer) -> None:
    """An existing redis.Redis works and its async twin is built from the same pool kwargs."""
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=1)
    try:
        b = RedisBackend(client)
        assert b._kw is not None and b._kw["port"] == redis_server.port
        b.set("pm:obj:2", b"v")
        assert asyncio.run(b.aget("pm:obj:2")) == b"v"
        b.close()
        assert client.get("pm:obj:2") == b"v"
        client.delete("pm:obj:2")
    finally:
        client.close()


# -- faults -----------------------------------------------------------------------------------
def test_wrong_port_is_unavailable_quickly() -> None:
    """A closed port raises BackendUnavailable well within the connect timeout."""
    b = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    elapsed, exc = _timed(lambda: b.get("k"))
    assert isinstance(exc, BackendUnavailable) and elapsed < 2.0
    elapsed, exc = _timed(lambda: asyncio.run(b.aget("k")))
    assert isinstance(exc, BackendUnavailable) and elapsed < 2.0


def test_paused_server_times_out_then_recovers(fresh_redis: RedisServer) -> None:
    """Against SIGSTOP, get fails within socket_timeout (no retries) and works after SIGCONT."""
    b = RedisBackend(fresh_redis.url, socket_timeout=0.5)
    b.set_many([(f"pm:p:{i}", str(i).encode()) for i in range(200)])
    fresh_redis.pause()
    try:
        for op in (lambda: b.get("pm:p:1"), lambda: b.set("pm:p:x", b"v")):
            elapsed, exc = _timed(op)
            assert isinstance(exc, BackendError) and elapsed < 1.5, (elapsed, exc)
        elapsed, exc = _timed(lambda: asyncio.run(b.aget("pm:p:1")))
        assert isinstance(exc, BackendError) and elapsed < 1.5, (elapsed, exc)
    finally:
        fresh_redis.resume()
    assert [b.get(f"pm:p:{i}") for i in range(200)] == [str(i).encode() for i in range(200)]
    b.close()


def test_killed_and_restarted_server(fresh_redis: RedisServer) -> None:
    """After SIGKILL calls fail fast; after a restart on the same port they work again."""
    b = RedisBackend(fresh_redis.url)
    b.set("pm:k", b"v")
    fresh_redis.kill()
    elapsed, exc = _timed(lambda: b.get("pm:k"))
    assert isinstance(exc, BackendUnavailable) and elapsed < 1.5
    fresh_redis.restart()
    assert b.get("pm:k") is MISSING  # a fresh, empty server: a miss, not an error
    b.set("pm:k", b"w")
    assert b.get("pm:k") == b"w"
    b.close()


def test_fork_child_uses_its_own_connection(redis_url: str) -> None:
    """A forked child opens its own socket; the parent's connection keeps working."""
    b = RedisBackend(redis_url)
    b.set("pm:fork:parent", b"p")
    parent_id = b._sync().client_id()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            ok = b.get("pm:fork:parent") == b"p" and b._sync().client_id() != parent_id
            b.set("pm:fork:child", str(os.getpid()).encode())
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.get("pm:fork:child") == str(pid).encode()
    assert b._sync().client_id() == parent_id
    b.delete("pm:fork:child")
    b.close()


def test_acl_user_limited_to_namespace(fresh_redis: RedisServer) -> None:
    """Every operation works for an ACL user limited to ~pm:app1:* without @dangerous."""
    admin = redis.Redis(port=fresh_redis.port)
    admin.acl_setuser("app1", enabled=True, passwords=[f"+{SECRET}"], keys=["pm:app1:*"],
                      commands=["+@all", "-@dangerous"])  # fmt: skip
    admin.close()
    b = RedisBackend(f"redis://app1:{SECRET}@127.0.0.1:{fresh_redis.port}/0")
    b.set_many([(f"pm:app1:{i}", b"v") for i in range(10)], ttl=30)
    assert b.get_many(["pm:app1:0", "pm:app1:x"]) == [b"v", MISSING]
    lock = b.lock("pm:app1:0", ttl=5)
    assert b.acquire_and_get(lock, "pm:app1:0") == (True, b"v") and lock.renew()
    b.set_and_release("pm:app1:0", b"w", ttl=None, lock=lock)
    assert len(list(b.keys("pm:app1:"))) == 10 and b.clear("pm:app1:") == 10
    with pytest.raises(BackendError) as info:
        b.set("pm:app2:0", b"v")
    assert isinstance(info.value.__cause__, redis.exceptions.NoPermissionError)
    assert not isinstance(info.value, BackendUnavailable)
    assert SECRET not in str(info.value)

    async def main() -> None:
        await b.aset("pm:app1:a", b"v")
        assert await b.aget("pm:app1:a") == b"v"

    asyncio.run(main())
    b.close()


def _openssl(*args: str, cwd: Path) -> None:
    """Run one openssl command quietly."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def test_tls_hostname_is_checked(tmp_path: Path) -> None:
    """rediss:// verifies the certificate's hostname: a cert for another name is refused."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=persistmemo test CA", cwd=tmp_path)  # fmt: skip
    servers = []
    try:
        for name, san in (("wrong", "DNS:wrong.example"), ("right", "IP:127.0.0.1")):
            (tmp_path / f"{name}.ext").write_text(f"subjectAltName={san}\n")
            _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                     "-subj", f"/CN={san.split(':')[1]}", cwd=tmp_path)  # fmt: skip
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                     "-extfile", f"{name}.ext", cwd=tmp_path)  # fmt: skip
            tls_port = free_port()
            server = RedisServer(tmp_path / name, "--tls-port", str(tls_port),
                                 "--tls-cert-file", str(tmp_path / f"{name}.crt"),
                                 "--tls-key-file", str(tmp_path / f"{name}.key"),
                                 "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
                                 "--tls-auth-clients", "no")  # fmt: skip
            servers.append(server)
            url = f"rediss://:{SECRET}@127.0.0.1:{tls_port}/0?ssl_ca_certs={tmp_path}/ca.crt"
            b = RedisBackend(url, connect_timeout=2, socket_timeout=2)
            if name == "wrong":
                with pytest.raises(BackendUnavailable) as info:
                    b.get("k")
                assert "hostname" in str(info.value).lower() or "certificate" in str(info.value)
                assert SECRET not in str(info.value)
            else:  # the same client settings succeed when the name matches
                b.set("k", b"v")
                assert b.get("k") == b"v"
            b.close()
    finally:
        for server in servers:
            server.kill()


# -- keep last: evidence from everything above --------------------------------------------------
def test_no_keys_or_flush_commands_were_ever_sent(rb: RedisBackend) -> None:
    """INFO commandstats shows no KEYS, FLUSHDB or FLUSHALL after the suite's operations."""
    rb.set_many([(f"pm:z:{i}", b"v") for i in range(50)])
    assert len(list(rb.keys("pm:z:"))) == 50 and rb.clear("pm:z:") == 50 and rb.clear("") >= 0
    calls = _commandstats(rb)
    assert calls.get("scan", 0) > 0 and calls.get("unlink", 0) > 0
    assert not {"keys", "flushdb", "flushall"} & set(calls), calls
