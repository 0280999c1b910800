"""Blocking store and HTTP calls, off the event loop and bounded per loop.

kopf serves every watch, every loop's daemon and the health endpoint from one event loop, so a boto3 or
Prometheus call made inside a handler would stall them all for as long as the slowest endpoint takes. Every such
call goes through `Offload.run` instead:

- a thread pool of its own (`WORKERS`), not asyncio's default pool: that one is small (min(32, cpus + 4)) and
  carries the Kubernetes API calls (`client.py`), which must keep flowing while a store hangs;
- at most `PER_LOOP` calls of one loop in flight at once, counted until the thread really finishes (a cancelled
  caller does not free its slot early), so a loop whose store never answers holds `PER_LOOP` threads and the
  other loops keep the rest.

The store's own timeouts (`OPERATOR_STORE_TIMEOUTS`) bound how long one call can hold its thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sil_stages.core.store import StoreTimeouts

_T = TypeVar("_T")

WORKERS = 32
"""Threads for store and HTTP calls, shared by all loops."""
PER_LOOP = 2
"""Calls of one loop in flight at once: a hung store holds at most this many threads."""
OPERATOR_STORE_TIMEOUTS = StoreTimeouts(connect_seconds=5.0, read_seconds=10.0, attempts=3, transfer_attempts=1)
"""The operator reads manifests, HEADs files and writes champion.json, all small: a blackholed endpoint gives up
after about 3 x 10 s per call instead of the stages' minutes, and the reconcile's own backoff retries it."""


class Offload:
    def __init__(self, workers: int = WORKERS, per_key: int = PER_LOOP) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sil-io")
        self._per_key = per_key
        self._slots: dict[Hashable, asyncio.Semaphore] = {}

    async def run(self, key: Hashable, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """`function(*args, **kwargs)` in the pool, at most `per_key` of `key`'s calls at a time."""
        slots = self._slots.setdefault(key, asyncio.Semaphore(self._per_key))
        await slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            future: Future[_T] = self._pool.submit(functools.partial(function, *args, **kwargs))
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(slots.release))
        return await asyncio.wrap_future(future)

    def forget(self, key: Hashable) -> None:
        """Drops a deleted loop's counter (calls still running release a semaphore no one waits on)."""
        self._slots.pop(key, None)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
