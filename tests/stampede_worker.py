"""A worker process for the stampede tests: calls one slow memoized function and reports.

Usage: python stampede_worker.py URL LOG SECONDS LOCK_TTL START_AT [ARG]
Each execution of the function body appends one line to LOG (O_APPEND: atomic lines).
The worker waits until the wall clock reaches START_AT so that all workers call at once.
"""

from __future__ import annotations

import os
import sys
import time

import persistmemo


def main() -> None:
    url, log, seconds, lock_ttl, start_at = sys.argv[1:6]
    arg = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    cache = persistmemo.Cache(url, namespace="stampede")

    @cache.memoize(lock_ttl=float(lock_ttl), lock_wait=60)
    def slow(x: int) -> dict[str, int]:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{os.getpid()} start {time.time()}\n".encode())
        os.close(fd)
        time.sleep(float(seconds))
        return {"x": x, "pid": os.getpid()}

    delay = float(start_at) - time.time()
    if delay > 0:
        time.sleep(delay)
    t0 = time.time()
    value = slow(arg)
    assert value["x"] == arg, value
    print(f"{os.getpid()} got {value['pid']} after {time.time() - t0:.3f}", flush=True)


if __name__ == "__main__":
    main()
