"""Reading stored entries (CLI, explain): headers, sizes, TTLs, without decoding any payload;
and the meta every entry records for ``explain`` (argument digests, dependency manifest)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

__all__ = ["KeyParts", "StoredEntry", "decode_meta", "diff_manifests", "encode_meta",
           "entry_keys", "entry_manifest", "manifest_of", "read_entries", "sizes", "split_key",
           "stored_manifest", "ttl_left"]


_BATCH = 500


class KeyParts(NamedTuple):
    """The fields of a key string ``pm:<format>:<namespace>:<function>:<version>:<digest>``."""

    format: str
    namespace: str
    function: str
    version: str
    digest: str


def split_key(key: str) -> KeyParts | None:
    """Parse a key; None if it is not a persistmemo entry key."""
    from urllib.parse import unquote

    parts = key.split(":")
    if len(parts) < 6 or parts[0] != "pm":
        return None
    return KeyParts(parts[1], unquote(parts[2]), unquote(parts[3]), parts[4], parts[-1])


class StoredEntry(NamedTuple):
    """One stored entry as the CLI shows it."""

    key: str
    parts: KeyParts
    size: int
    created: float  # 0.0 if the header is unreadable
    duration: float
    codec: str  # "?" if the header is unreadable (another envelope format)
    meta: bytes
    readable: bool


def entry_keys(backend: Any, prefix: str = "pm:") -> list[str]:
    """Keys of stored entries (leases and statistics excluded) under ``prefix``."""
    return [k for k in backend.keys(prefix) if split_key(k) is not None]


_HEAD = 1 << 16  # the header and meta of an entry fit in its first 64 KiB


def _heads(backend: Any, part: list[str]) -> list[tuple[Any, int]]:
    """(the first bytes, the full size) of each key: never reads a large value whole."""
    name = getattr(backend, "name", "")
    if name == "disk":
        import os

        marks = ",".join("?" * len(part))
        rows = backend.cache._sql(
            f"SELECT key, filename, value, size FROM Cache WHERE raw = 1 AND key IN ({marks})",
            part).fetchall()
        found: dict[str, tuple[Any, int]] = {}
        for key, filename, value, size in rows:
            if filename:  # a value file: read its head only
                try:
                    with open(os.path.join(backend.cache.directory, filename), "rb") as f:
                        found[key] = (f.read(_HEAD), int(size))
                except OSError:
                    continue
            elif isinstance(value, bytes):
                found[key] = (value, len(value))
        return [found.get(k, (None, 0)) for k in part]
    if name in ("redis", "redis-cluster"):
        with backend._guard:
            pipe = backend._sync().pipeline(transaction=False)
            for key in part:
                pipe.getrange(key, 0, _HEAD - 1)
                pipe.strlen(key)
            out = pipe.execute()
        return [(h or None, int(n)) for h, n in zip(out[::2], out[1::2])]
    return [(raw, len(raw)) if isinstance(raw, bytes) else (None, 0)
            for raw in backend.get_many(part)]


def read_entries(backend: Any, keys: Sequence[str]) -> Iterator[StoredEntry]:
    """Peek at the header of each entry (batched; only the first 64 KiB of large values are
    read; a vanished entry is skipped)."""
    from persistmemo.codec import Codec
    from persistmemo.errors import DecodeError

    codec = Codec()
    for i in range(0, len(keys), _BATCH):
        part = list(keys[i:i + _BATCH])
        for key, (head, size) in zip(part, _heads(backend, part)):
            parts = split_key(key)
            if head is None or parts is None:
                continue
            try:
                info = codec.peek(bytes(head))
            except DecodeError:
                yield StoredEntry(key, parts, size, 0.0, 0.0, "?", b"", False)
                continue
            yield StoredEntry(key, parts, size, info.created, info.duration, info.codec,
                              info.meta, True)


def ttl_left(backend: Any, keys: Sequence[str]) -> dict[str, float | None]:
    """Seconds each key has left (None: no expiry, or unknown for this store)."""
    name = getattr(backend, "name", "")
    out: dict[str, float | None] = dict.fromkeys(keys)
    if not keys:
        return out
    now = time.time()
    if name == "disk":
        sql = backend.cache._sql
        for i in range(0, len(keys), _BATCH):
            part = list(keys[i:i + _BATCH])
            marks = ",".join("?" * len(part))
            rows = sql(f"SELECT key, expire_time FROM Cache WHERE raw = 1 AND key IN ({marks})",
                       part).fetchall()
            for key, expire in rows:
                out[key] = None if expire is None else max(0.0, expire - now)
    elif name in ("redis", "redis-cluster"):
        with backend._guard:
            pipe = backend._sync().pipeline(transaction=False)
            for key in keys:
                pipe.pttl(key)
            for key, ms in zip(keys, pipe.execute()):
                out[key] = None if ms is None or ms < 0 else ms / 1000
    return out


def sizes(backend: Any, keys: Sequence[str]) -> dict[str, int]:
    """Stored size of each key, without reading the values where the store can tell."""
    name = getattr(backend, "name", "")
    out: dict[str, int] = {}
    for i in range(0, len(keys), _BATCH):
        part = list(keys[i:i + _BATCH])
        if name == "disk":
            marks = ",".join("?" * len(part))
            rows = backend.cache._sql(
                f"SELECT key, size, value FROM Cache WHERE raw = 1 AND key IN ({marks})",
                part).fetchall()
            # diskcache records the size of values kept in files; inline ones are the blob.
            out.update((k, int(s) if s else len(v or b"")) for k, s, v in rows)
        elif name in ("redis", "redis-cluster"):
            with backend._guard:
                pipe = backend._sync().pipeline(transaction=False)
                for key in part:
                    pipe.strlen(key)
                out.update((k, int(n)) for k, n in zip(part, pipe.execute()) if n)
        else:
            out.update((k, len(v)) for k, v in zip(part, backend.get_many(part))
                       if isinstance(v, bytes))
    return out


# -- what entries record for explain ------------------------------------------------------
def manifest_of(keys: Any) -> dict[str, str] | None:
    """The code dependency manifest of a key builder, as ``name -> "kind:digest"`` (or None).

    Reads ``keys.manifest`` if set, else ``keys.dependencies()`` (keys v2).
    """
    manifest = getattr(keys, "manifest", None)
    if manifest is None and callable(getattr(keys, "dependencies", None)):
        try:
            manifest = keys.dependencies()
        except Exception:
            manifest = None
    return _normalise(manifest)


def _normalise(manifest: Any) -> dict[str, str] | None:
    if not isinstance(manifest, dict):
        return None
    out = {}
    for name, leaf in manifest.items():
        if isinstance(leaf, (tuple, list)):
            leaf = ":".join(str(x) for x in leaf)
        elif hasattr(leaf, "kind") and hasattr(leaf, "digest"):
            leaf = f"{leaf.kind}:{leaf.digest}"
        out[str(name)] = str(leaf)
    return out


def stored_manifest(backend: Any, codec: Any, entry_key: str) -> dict[str, str] | None:
    """The manifest keys v2 records once per code version (``pmm:<format>:<ns>:<fn>:<fp>``)."""
    parts = entry_key.split(":")
    if len(parts) < 6:
        return None
    key = "pmm:" + ":".join(parts[1:5])
    try:
        raw = backend.get(key)
        if not isinstance(raw, (bytes, bytearray)):
            return None
        record = codec.decode(bytes(raw), key=key).value
    except Exception:
        return None
    return _normalise(record.get("dependencies") if isinstance(record, dict) else None)


def entry_manifest(meta: dict[str, Any], backend: Any, codec: Any, key: str,
                   memo: dict[str, dict[str, str] | None] | None = None
                   ) -> dict[str, str] | None:
    """An entry's manifest: from its meta, else the store's record for its code version."""
    deps = _normalise(meta.get("deps"))
    if deps is not None:
        return deps
    version = ":".join(key.split(":")[:5])
    if memo is not None and version in memo:
        return memo[version]
    found = stored_manifest(backend, codec, key)
    if memo is not None:
        memo[version] = found
    return found


def encode_meta(args: dict[str, str], deps: dict[str, str] | None,
                self_time: float | None = None) -> bytes:
    """The meta stored with an entry: argument digests, the dependency manifest and the
    computation's self time (its duration minus nested memoized computations)."""
    import msgpack

    data: dict[str, Any] = {"args": args}
    if self_time is not None:
        data["self"] = float(self_time)
    if deps is not None:
        data["deps"] = deps
    return bytes(msgpack.packb(data))


def decode_meta(meta: bytes) -> dict[str, Any]:
    """Read :func:`encode_meta`'s output; anything else gives ``{}``."""
    if not meta:
        return {}
    import msgpack

    try:
        data = msgpack.unpackb(meta)
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def diff_manifests(old: dict[str, str] | None, new: dict[str, str] | None) -> list[str]:
    """Names whose leaf differs: ``changed x``, ``added y``, ``removed z``."""
    if old is None or new is None:
        return []
    out = [f"changed {n}" for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
    out += [f"added {n}" for n in sorted(new.keys() - old.keys())]
    out += [f"removed {n}" for n in sorted(old.keys() - new.keys())]
    return out
