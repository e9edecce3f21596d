"""What the engine observes of each call: statistics, DEBUG records, the meta of entries.

A mixin of :class:`~persistmemo._engine.Engine`, kept apart so the get-or-compute protocol
stays readable: persisted usage statistics (:mod:`persistmemo._usage`: hits, misses, self
time, time saved), one DEBUG record per hit / miss / store on the ``persistmemo`` logger, and
what each stored entry records for ``explain`` (argument digests, self time).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from persistmemo import _usage

if TYPE_CHECKING:
    from persistmemo._usage import Recorder
    from persistmemo.codec import Codec
    from persistmemo.keys import KeyBuilder

__all__ = ["Observer"]


class Observer:
    """Statistics, logging and entry meta for one memoized function (an Engine mixin)."""

    keys: KeyBuilder
    codec: Codec
    usage: Recorder | None
    urow: list[float]
    _logger: Any

    def digests(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        """A digest per argument, recorded with the entry for ``explain``."""
        try:
            return self.keys.describe(args, kwargs)
        except Exception:  # key= covers arguments without a canonical encoding
            return {}

    def meta(self, digests: dict[str, str], self_time: float) -> bytes:
        """What an entry records: argument digests, self time (and the dependency manifest,
        unless the key builder records it once per code version itself)."""
        from persistmemo._inspect import encode_meta, manifest_of

        deps = None if hasattr(self.keys, "take_manifest") else manifest_of(self.keys)
        return encode_meta(digests, deps, self_time)

    def used(self, key: str, saved: float | None = None, raw: Any = None,
             meta: bytes | None = None) -> None:
        """Record a reused result for the persisted statistics (and a DEBUG record).

        Time saved: at top level, the entry's compute time (all of it was avoided). Inside a
        running computation, only the entry's self time: recomputing it would have found its
        own memoized callees stored, and counting their time again at every level of a
        recursion would add up overlapping subtrees (seconds "saved" by milliseconds of work).
        """
        row = self.urow
        hits = row[0] = row[0] + 1
        if raw is not None and meta is None:
            peeked = self._peek(raw)
            saved, meta = peeked if peeked is not None else (0.0, None)
        if saved is None:
            saved = 0.0
        if meta and _usage._frame.get() is not None:
            from persistmemo._inspect import decode_meta

            own = decode_meta(meta).get("self")
            if isinstance(own, float):
                saved = min(saved, own)
        row[3] += saved
        usage = self.usage
        if not hits % 32 and usage is not None and time.monotonic() >= usage.due:
            usage.flush()  # (the clock is read every 32 hits only: hits are the hot path)
        if self._logger.isEnabledFor(10):
            self._debug("hit", key, saved)

    def _peek(self, raw: Any) -> tuple[float, bytes] | None:
        """The compute time and meta recorded in an entry's header (None if unreadable)."""
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            return None
        try:
            info = self.codec.peek(bytes(raw))
        except Exception:
            return None
        return float(info.duration), info.meta

    def _debug(self, event: str, key: str, duration: float, size: int = -1) -> None:
        """One DEBUG record per hit / miss / store (function, key prefix, duration)."""
        short = key.rpartition(":")[2][:12] if key else "?"
        what = {"hit": "saved", "miss": "computed in", "store": "stored in"}[event]
        extra = f" ({size} bytes)" if size >= 0 else ""
        self._logger.debug(
            "persistmemo: %s %s [%s] %s %.6f s%s", event, self.keys.identity, short, what,
            duration, extra, extra={"pm_event": event, "pm_function": self.keys.identity,
                                    "pm_key": key, "pm_duration": duration})

    def _computed(self, frame: tuple[Any, list[float]], start: float, key: str) -> float:
        """Record a computation's self time (nested memoized computations excluded)."""
        inclusive = time.perf_counter() - start
        self_time = _usage.leave(frame[0], frame[1], inclusive)
        if self.usage is not None:
            self.usage.computed(self.urow, self_time)
        if self._logger.isEnabledFor(10):
            self._debug("miss", key, inclusive)
        return self_time
