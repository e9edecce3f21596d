"""Redis and Redis Cluster backend (redis-py): short timeouts, no client retries, one error map.

Clients get explicit connect/socket timeouts and retries off (redis-py 8 would otherwise retry a
paused server for ~58 s), so an outage costs at most one timeout per call and the engine's
breaker takes over. Every driver error leaves through :class:`_Guard` as a ``BackendError``
whose message never holds the password. Async methods use ``redis.asyncio`` natively: one client
per running event loop, closed by that loop's ``shutdown_asyncgens()`` (as ``asyncio.run`` does).
A lease for entry ``k`` is the key ``k:lock``, so it shares the entry's namespace (ACL key
patterns, ``clear(prefix)``) and is hidden from ``keys()``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import secrets
import threading
import weakref
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    InvalidResponse,
    NoScriptError,
    RedisClusterException,
    RedisError,
)
from redis.retry import Retry

from persistmemo.backends.base import MISSING, BaseBackend, BaseLock, Lock, Missing
from persistmemo.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    PersistmemoError,
)

__all__ = ["LOCK_SUFFIX", "RedisBackend", "RedisLock"]

P = ParamSpec("P")
T = TypeVar("T")
_SCHEMES = {"redis": (False, False), "rediss": (True, False), "unix": (False, False),
            "redis+cluster": (False, True), "rediss+cluster": (True, True)}  # fmt: skip
_PARAMS: dict[str, type] = {"db": int, "socket_timeout": float, "connect_timeout": float,
                            "ssl_ca_certs": str, "ssl_certfile": str, "ssl_keyfile": str,
                            "client_name": str, "max_connections": int, "password": str,
                            "username": str}  # fmt: skip
_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "passwd", "auth", "secret", "token"})
_GLOB = re.compile(r"([*?\[\]\\])")  # SCAN MATCH metacharacters, escaped with a backslash
# InvalidResponse: something that is not Redis answers on the port (an HTTP server...): every
# call would fail the same way, so it trips the breaker like a refused connection.
_DOWN = (redis.ConnectionError, redis.TimeoutError, ClusterDownError, InvalidResponse, OSError)
_MAPPED = (RedisError, RedisClusterException, OSError)
# KEYS[1] = lock key, ARGV[1] = owner token, ARGV[2] = ttl in ms: act only while we own it.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end"
)
LOCK_SUFFIX = ":lock"  # a lease lives next to its entry: same namespace, ACL pattern and clear()
_LOCK_BYTES = LOCK_SUFFIX.encode()
# GET, unless the value is over ARGV[1] bytes (then -1): a planted giant value is refused by the
# server, before a byte of it crosses the network or is allocated here.
_GET_BOUNDED = (
    "if redis.call('strlen', KEYS[1]) > tonumber(ARGV[1]) then return -1 end "
    "return redis.call('get', KEYS[1])"
)
_SHA = {s: hashlib.sha1(s.encode()).hexdigest() for s in (_RELEASE, _RENEW, _GET_BOUNDED)}
_REDIS_MAX_STRING = 512 << 20  # a Redis string is at most 512 MiB: larger limits need no check


def _ms(ttl: float | None) -> int | None:
    """Convert a TTL in seconds to whole milliseconds (at least 1); None means no expiry."""
    return None if ttl is None else max(1, round(ttl * 1000))


def _value(v: bytes | None) -> bytes | Missing:
    """Map redis-py's None (absent) to MISSING."""
    return MISSING if v is None else v


_RESERVED = frozenset("/?#")


def _split_userinfo(url: str) -> tuple[str, str | None, str]:
    """Split ``scheme://userinfo@rest`` at the LAST "@" (a raw "@", "/", "?" or "#" in a
    password is a common mistake); userinfo is None without any "@"."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return scheme, None, rest
    userinfo, _, tail = rest.rpartition("@")
    return scheme, userinfo, tail


def _garbled_userinfo(url: str) -> str | None:
    """The raw userinfo if a raw "/", "?" or "#" in it made urlsplit end the host early (the
    password would then be read as a path, a query or a fragment), else None."""
    userinfo = _split_userinfo(url)[1]
    if userinfo is None or not _RESERVED.intersection(userinfo):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return userinfo
    if "@" in parts.path or "@" in parts.fragment:
        return userinfo
    if "@" not in parts.query:
        return None  # every "@" is in the host part: urlsplit reads the password right
    keys = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return None if all(k in _PARAMS for k in keys) else userinfo  # "@" in a known value: fine


def redact_url(url: str) -> str:
    """Return ``url`` with every password form replaced by ``***``.

    Covers ``user:pw@``, a lone ``pw@`` (redis-py would take it as a user name, but it is often a
    password), and ``?password=`` style query parameters; the rest is kept for diagnostics.
    """
    scheme, _, tail = _split_userinfo(url)
    userinfo = _garbled_userinfo(url)
    if userinfo is not None:
        # A password with a raw "/", "?" or "#" (not percent-encoded) ends urlsplit's netloc
        # early: mask the whole userinfo, up to the last "@", and drop what follows the host.
        user, colon, _ = userinfo.partition(":")
        host = re.split(r"[/?#]", tail, maxsplit=1)[0]
        return f"{scheme}://{user}:***@{host}" if colon and not _RESERVED.intersection(user) \
            else f"{scheme}://***@{host}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_PARAMS else (f"{k}={v}" if v else k)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return parts._replace(netloc=netloc, query=query).geturl()


def secret_forms(url: str) -> list[str]:
    """Every spelling of the URL's secrets that could appear in a message (raw, %-decoded...)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    raw = [parts.password or ""]
    userinfo = _garbled_userinfo(url)
    if userinfo:  # the raw spelling too, when urlsplit misreads it (a raw "/", "?", "#")
        raw += [userinfo, userinfo.partition(":")[2]]
    if parts.username and parts.password is None:
        raw.append(parts.username)
    raw += [v for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() in _SECRET_PARAMS]
    forms: set[str] = set()
    for r in filter(None, raw):
        for f in (r, unquote(r), unquote_plus(r), quote(unquote(r), safe=""),
                  quote_plus(unquote(r))):
            forms.add(f)
    return sorted(filter(None, forms), key=len, reverse=True)


def _bounded(v: Any) -> bytes | Missing:
    """Map the bounded GET script's reply: nil -> MISSING, -1 (too large) -> a refused entry."""
    if v is None:
        return MISSING
    if isinstance(v, int):
        return b""  # not an envelope: the engine counts and logs a miss
    return bytes(v)


def _parse_url(
    url: str, timeout: float, connect_timeout: float
) -> tuple[bool, dict[str, Any], str]:
    """Validate a Redis URL; return (is cluster, client kwargs, URL with the password redacted)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError("malformed Redis URL") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise ConfigurationError(f"Redis URL scheme must be one of {sorted(_SCHEMES)}")
    tls, cluster = _SCHEMES[parts.scheme.lower()]
    safe = redact_url(url)
    if _garbled_userinfo(url) is not None:
        raise ConfigurationError(
            f"the user name or password in Redis URL {safe} contains a raw '/', '?' or '#': "
            "percent-encode it (urllib.parse.quote(password, safe=''))")
    opts: dict[str, Any] = {"socket_timeout": timeout, "connect_timeout": connect_timeout}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _PARAMS or (name.startswith("ssl_") and not tls):
            known = f"known: {sorted(_PARAMS)}; ssl_* need rediss://"
            raise ConfigurationError(f"unknown Redis URL parameter {name!r} in {safe} ({known})")
        try:
            opts[name] = _PARAMS[name](raw)
        except ValueError:
            raise ConfigurationError(f"bad value for Redis URL parameter {name!r}") from None
    kw: dict[str, Any] = {
        "username": opts.pop("username", None)
        or (unquote(parts.username) if parts.username else None),
        "password": opts.pop("password", None)
        or (unquote(parts.password) if parts.password is not None else None),
        "socket_connect_timeout": opts.pop("connect_timeout"), "health_check_interval": 0,
    }  # fmt: skip
    if not (0 < opts["socket_timeout"] < 1e6 and 0 < kw["socket_connect_timeout"] < 1e6):
        raise ConfigurationError(f"Redis timeouts must be > 0 seconds: {safe}")
    db = opts.pop("db", None)
    if parts.scheme.lower() == "unix":
        if not parts.path:
            raise ConfigurationError(f"unix:// Redis URL needs a socket path: {safe}")
        kw["unix_socket_path"] = unquote(parts.path)
    else:
        try:
            kw["host"], kw["port"] = parts.hostname or "localhost", parts.port or 6379
            db = int(parts.path.strip("/") or 0) if db is None else db
        except ValueError:
            raise ConfigurationError(f"bad port or db number in Redis URL {safe}") from None
    if cluster and db:
        raise ConfigurationError(f"Redis Cluster has only db 0: {safe}")
    kw.update(opts, **({} if cluster else {"db": db or 0}))
    if tls:
        kw.update(ssl=True, ssl_cert_reqs="required", ssl_check_hostname=True)
    return cluster, kw, safe


def _from_client(client: redis.Redis) -> dict[str, Any] | None:
    """Return redis.asyncio kwargs matching a sync client's pool, if it is plain TCP or unix."""
    pool = client.connection_pool
    ck = pool.connection_kwargs
    if pool.connection_class not in (redis.Connection, redis.UnixDomainSocketConnection):
        return None
    keep = ("host", "port", "db", "username", "password", "socket_timeout", "client_name",
            "socket_connect_timeout")  # fmt: skip
    kw = {k: ck[k] for k in keep if k in ck}
    if "path" in ck:
        kw["unix_socket_path"] = ck["path"]
    return None if ck.get("credential_provider") else kw


class _Guard:
    """Context manager mapping redis-py and OS errors to BackendError, password scrubbed."""

    __slots__ = ("label", "secrets")

    def __init__(self, label: str, password: str | None, url: str = "") -> None:
        self.label = label
        forms = set(secret_forms(url)) if url else set()
        if password:
            forms.update((password, quote(password, safe=""), quote_plus(password)))
        self.secrets = sorted(forms, key=len, reverse=True)  # longest first: no partial leaks

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, PersistmemoError):
            return False  # cancellation, KeyboardInterrupt, our own errors: as they are
        garbage = not isinstance(exc, _MAPPED)
        message = f"{self.label}: {type(exc).__name__}: {exc}"
        if garbage:
            # redis-py itself failed (AttributeError, TypeError, ...): a non-Redis server's
            # reply parsed as RESP of the wrong shape. Every call would fail alike: trip the
            # back-off, never let it reach the caller.
            message = f"{self.label}: not a Redis reply ({type(exc).__name__}: {exc})"[:500]
        for secret in self.secrets:
            message = message.replace(secret, "***")
        if garbage:
            raise BackendUnavailable(message) from exc
        if isinstance(exc, AuthenticationError):  # the server closed the connection after it
            message += " (check the user name and password)"
        down, cause = False, exc  # type: bool, BaseException | None
        while cause is not None and not down:
            # A wrong password fails every call the same way, each on a new connection: it
            # trips the back-off like a refused connection (no connection storm).
            down = isinstance(cause, _DOWN)
            cause = cause.__cause__
        raise (BackendUnavailable if down else BackendError)(message) from exc


def _native(
    method: Callable[Concatenate[RedisBackend, Any, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RedisBackend, P], Coroutine[Any, Any, T]]:
    """Run an async twin on this loop's redis.asyncio client, else BaseBackend's thread version."""
    fallback: Callable[..., Coroutine[Any, Any, T]] = getattr(BaseBackend, method.__name__)

    @functools.wraps(method)
    async def twin(self: RedisBackend, /, *args: P.args, **kwargs: P.kwargs) -> T:
        conn = await self._aclient()
        if conn is None:
            return await fallback(self, *args, **kwargs)
        async with conn.slots:  # wait for a pooled connection instead of MaxConnectionsError
            with self._guard:
                return await method(self, conn.client, *args, **kwargs)

    return twin


class _AsyncConn:
    """One event loop's redis.asyncio client, its closer, and a pool-sized semaphore."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, size: int) -> None:
        self.loop = weakref.ref(loop)
        self.client = client
        self.slots = asyncio.Semaphore(size)
        self.keeper: AsyncGenerator[None, None]


class RedisLock(BaseLock):
    """A lease on ``<key>:lock``: SET NX PX with a random token; Lua compare-and-delete/renew."""

    def __init__(self, backend: RedisBackend, key: str, ttl: float) -> None:
        super().__init__(key + LOCK_SUFFIX, secrets.token_hex(16), ttl)
        self._backend = backend

    def acquire(self) -> bool:
        """Try once, without waiting, to take the lease."""
        with self._backend._guard:
            return bool(self._backend._sync().set(self.key, self.token, nx=True, px=_ms(self.ttl)))

    def release(self) -> bool:
        """Delete the lease only if this token still holds it."""
        return bool(self._backend._eval(_RELEASE, self.key, self.token))

    def renew(self) -> bool:
        """Reset the lease's TTL only if this token still holds it."""
        return bool(self._backend._eval(_RENEW, self.key, self.token, _ms(self.ttl)))


class RedisBackend(BaseBackend):
    """Bytes store on Redis or Redis Cluster, given a URL or an existing sync client.

    The timeouts (seconds) apply to clients built from a URL; an existing client keeps its own
    settings. Whether errors fail open is the engine's decision (``Cache(fail_open=...)``).
    """

    # Redis refuses bulk strings above proto-max-bulk-len (512 MB by default): the engine does
    # not store bigger entries (one warning, the result is returned, the store stays in use).
    max_value_size: int | None = 512 * 1024 * 1024

    def __init__(
        self,
        target: str | redis.Redis | RedisCluster,
        *,
        socket_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        **unknown: Any,
    ) -> None:
        if unknown:
            known = "socket_timeout, connect_timeout"
            raise ConfigurationError(f"unknown Redis backend option(s) {sorted(unknown)} ({known})")
        self._lock, self._pid = threading.Lock(), os.getpid()
        self._aclients: dict[int, _AsyncConn] = {}
        self._max_read: int | None = None  # limit_reads(): refuse larger values server-side
        self._client: Any = None
        self._kw: dict[str, Any] | None  # client kwargs, sync and async; None: async via threads
        self._owned = isinstance(target, str)
        if isinstance(target, str):
            self._cluster, self._kw, label = _parse_url(target, socket_timeout, connect_timeout)
            password = self._kw["password"]
        elif isinstance(target, redis.Redis):
            self._cluster, self._client, self._kw = False, target, _from_client(target)
            ck = target.connection_pool.connection_kwargs
            label = f"redis://{ck.get('host', ck.get('path'))}:{ck.get('port', '')}"
            password = ck.get("password")
        elif isinstance(target, RedisCluster):  # async falls back to worker threads
            self._cluster, self._client, self._kw, label = True, target, None, "RedisCluster"
            password = None
        else:
            kind = f"{type(target).__module__}.{type(target).__qualname__}"
            raise ConfigurationError(f"expected a Redis URL or a sync redis-py client, got {kind}")
        self.name = "redis-cluster" if self._cluster else "redis"
        self._guard = _Guard(label, password, target if isinstance(target, str) else "")

    def __repr__(self) -> str:
        return f"<RedisBackend {self._guard.label}>"

    # -- clients ---------------------------------------------------------------------------
    def _sync(self) -> Any:
        """Return the sync client, built on first use (a cluster connects when built)."""
        client = self._client
        if client is None:
            with self._lock, self._guard:
                if self._client is None:
                    cls = RedisCluster if self._cluster else redis.Redis
                    self._client = cls(retry=Retry(NoBackoff(), 0), **(self._kw or {}))
                client = self._client
        return client

    async def _aclient(self) -> _AsyncConn | None:
        """Return this event loop's async client (None: use worker threads instead)."""
        if self._kw is None:
            return None
        if self._pid != os.getpid():  # forked: never touch the parent's sockets
            self._aclients, self._pid = {}, os.getpid()
        loop = asyncio.get_running_loop()
        conn = self._aclients.get(id(loop))
        if conn is not None and conn.loop() is loop:
            return conn
        cls = aioredis.RedisCluster if self._cluster else aioredis.Redis
        client = cls(retry=AsyncRetry(NoBackoff(), 0), **self._kw)
        conn = _AsyncConn(loop, client, self._kw.get("max_connections") or 100)
        conn.keeper = self._keeper(id(loop), conn)
        await conn.keeper.__anext__()  # now tracked by the loop: its shutdown_asyncgens() closes it
        self._aclients[id(loop)] = conn
        return conn

    async def _keeper(self, key: int, conn: _AsyncConn) -> AsyncGenerator[None, None]:
        """Keep an async client until its event loop shuts down, then close it."""
        try:
            yield
        finally:
            if self._aclients.get(key) is conn:
                del self._aclients[key]
            await conn.client.aclose()

    def _nodes(self) -> list[Any]:
        """Return a sync client per primary (just the client unless clustered)."""
        c = self._sync()
        return [c.get_redis_connection(n) for n in c.get_primaries()] if self._cluster else [c]

    def _eval(self, script: str, key: str, *args: Any) -> Any:
        """Run a one-key Lua script by SHA, sending its text if the server lacks it."""
        with self._guard:
            try:
                return self._sync().evalsha(_SHA[script], 1, key, *args)
            except NoScriptError:
                return self._sync().eval(script, 1, key, *args)

    async def _aeval(self, c: Any, script: str, key: str, *args: Any) -> Any:
        """Run a one-key Lua script by SHA on an async client, sending its text if needed."""
        try:
            return await c.evalsha(_SHA[script], 1, key, *args)
        except NoScriptError:
            return await c.eval(script, 1, key, *args)

    # -- primitives ------------------------------------------------------------------------
    def limit_reads(self, max_size: int) -> None:
        """Refuse (server-side) stored values over ``max_size`` bytes on the hit path."""
        if max_size < min(self._max_read or _REDIS_MAX_STRING, _REDIS_MAX_STRING):
            self._max_read = max_size  # caches sharing this backend: the smallest limit wins

    def get(self, key: str) -> bytes | Missing:
        """Return the value under ``key`` (one GET, or a bounded GET script with a limit)."""
        if self._max_read is not None:
            return _bounded(self._eval(_GET_BOUNDED, key, self._max_read))
        with self._guard:
            value: bytes | None = self._sync().get(key)
        return MISSING if value is None else value

    def get_many(self, keys: Sequence[str]) -> list[bytes | Missing]:
        """Return values aligned with ``keys`` (MGET per node and slot: never CROSSSLOT)."""
        if not keys:
            return []
        with self._guard:
            c = self._sync()
            return [_value(v) for v in (c.mget_nonatomic if self._cluster else c.mget)(list(keys))]

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` (SET, with PX when ``ttl`` is given)."""
        with self._guard:
            self._sync().set(key, value, px=_ms(ttl))

    def set_many(self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None) -> None:
        """Store several entries in one non-transactional pipeline."""
        with self._guard:
            pipe = self._sync().pipeline(transaction=False)
            for key, value in items:
                pipe.set(key, value, px=_ms(ttl))
            pipe.execute()

    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        with self._guard:
            return bool(self._sync().unlink(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the entry keys starting with ``prefix`` (SCAN each primary; leases skipped)."""
        with self._guard:
            for node in self._nodes():
                for key in node.scan_iter(match=_GLOB.sub(r"\\\1", prefix) + "*", count=1000):
                    if not key.endswith(_LOCK_BYTES):
                        yield key.decode("utf-8", "replace")

    def clear(self, prefix: str = "") -> int:
        """Delete keys starting with ``prefix``, leases too (SCAN + UNLINK); return the count."""
        removed, pattern = 0, _GLOB.sub(r"\\\1", prefix) + "*"
        with self._guard:
            for node in self._nodes():
                batch: list[bytes] = []
                for key in node.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        removed, batch = removed + self._unlink(node, batch), []
                removed += self._unlink(node, batch) if batch else 0
        return removed

    def _unlink(self, node: Any, keys: list[bytes]) -> int:
        """UNLINK ``keys`` on one node: one command per hash slot on a cluster."""
        if not self._cluster:
            return int(node.unlink(*keys))
        by_slot: defaultdict[int, list[bytes]] = defaultdict(list)
        for key in keys:
            by_slot[key_slot(key)].append(key)
        pipe = node.pipeline(transaction=False)
        for group in by_slot.values():
            pipe.unlink(*group)
        return sum(pipe.execute())

    def lock(self, key: str, *, ttl: float) -> RedisLock:
        """Return an unacquired lease for ``key`` (stored at ``key + ':lock'``), fresh token."""
        return RedisLock(self, key, ttl)

    # -- composites: one round trip each ---------------------------------------------------
    @staticmethod
    def _queue_acquire(pipe: Any, lock: Lock, key: str) -> Any:
        """Queue SET lock-key token NX PX + GET key on a pipeline."""
        return pipe.set(lock.key, lock.token, nx=True, px=_ms(lock.ttl)).get(key)

    @staticmethod
    def _queue_store(
        pipe: Any, key: str, value: bytes, ttl: float | None, lock: Lock | None
    ) -> Any:
        """Queue SET key value [PX] + the lock's release script (if any) on a pipeline."""
        pipe.set(key, value, px=_ms(ttl))
        if lock is not None:  # execute_command: cluster pipelines block the evalsha() method
            pipe.execute_command("EVALSHA", _SHA[_RELEASE], 1, lock.key, lock.token)
        return pipe

    @staticmethod
    def _check(res: list[Any]) -> list[Any]:
        """Raise the first error among pipeline results, else return them."""
        for item in res:
            if isinstance(item, Exception):
                raise item
        return res

    def acquire_and_get(self, lock: Lock, key: str) -> tuple[bool, bytes | Missing]:
        """Try the lock and read ``key`` in one pipeline."""
        with self._guard:
            res = self._queue_acquire(self._sync().pipeline(transaction=False), lock, key)
            res = res.execute(raise_on_error=False)
            if res[0] is True and isinstance(res[1], Exception):
                lock.release()
            return bool(self._check(res)[0]), _value(res[1])

    def set_and_release(
        self, key: str, value: bytes, *, ttl: float | None, lock: Lock | None
    ) -> None:
        """Store ``value`` and release ``lock`` in one pipeline."""
        with self._guard:
            pipe = self._queue_store(
                self._sync().pipeline(transaction=False), key, value, ttl, lock
            )
            res = pipe.execute(raise_on_error=False)
            if lock is not None and isinstance(res[1], NoScriptError):
                res[1] = self._eval(_RELEASE, lock.key, lock.token)
            self._check(res)

    def close(self) -> None:
        """Close owned clients; async ones close on their loop (right now if it is idle)."""
        conns, self._aclients = list(self._aclients.values()), {}
        for conn in conns:
            loop = conn.loop()
            if loop is not None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(conn.keeper.aclose())
        with self._lock:
            client, self._client = self._client, (None if self._owned else self._client)
        if self._owned and client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this loop's async client now, then everything else as :meth:`close` does."""
        conn = self._aclients.pop(id(asyncio.get_running_loop()), None)
        if conn is not None:
            await conn.keeper.aclose()
        self.close()

    # -- async twins: redis.asyncio on the running loop ------------------------------------
    @_native
    async def aget(self, c: Any, key: str) -> bytes | Missing:
        """Return the value under ``key``."""
        if self._max_read is not None:
            return _bounded(await self._aeval(c, _GET_BOUNDED, key, self._max_read))
        return _value(await c.get(key))

    @_native
    async def aget_many(self, c: Any, keys: Sequence[str]) -> list[bytes | Missing]:
        """Return values aligned with ``keys``."""
        values = await (c.mget_nonatomic if self._cluster else c.mget)(list(keys)) if keys else []
        return [_value(v) for v in values]

    @_native
    async def aset(self, c: Any, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``."""
        await c.set(key, value, px=_ms(ttl))

    @_native
    async def adelete(self, c: Any, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        return bool(await c.unlink(key))

    @_native
    async def aacquire_and_get(self, c: Any, lock: Lock, key: str) -> tuple[bool, bytes | Missing]:
        """Try the lock and read ``key`` in one pipeline."""
        res = await self._queue_acquire(c.pipeline(transaction=False), lock, key).execute(
            raise_on_error=False
        )
        if res[0] is True and isinstance(res[1], Exception):
            await self._aeval(c, _RELEASE, lock.key, lock.token)
        return bool(self._check(res)[0]), _value(res[1])

    @_native
    async def aset_and_release(
        self, c: Any, key: str, value: bytes, *, ttl: float | None, lock: Lock | None
    ) -> None:
        """Store ``value`` and release ``lock`` in one pipeline."""
        pipe = self._queue_store(c.pipeline(transaction=False), key, value, ttl, lock)
        res = await pipe.execute(raise_on_error=False)
        if lock is not None and isinstance(res[1], NoScriptError):
            res[1] = await self._aeval(c, _RELEASE, lock.key, lock.token)
        self._check(res)

    @_native
    async def arelease(self, c: Any, lock: Lock) -> bool:
        """Release ``lock`` if its token still holds it."""
        return bool(await self._aeval(c, _RELEASE, lock.key, lock.token))
