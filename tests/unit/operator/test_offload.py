"""Blocking calls run off the event loop, at most two per loop at a time, in threads that are not asyncio's
default pool (which carries the Kubernetes API calls)."""

from __future__ import annotations

import asyncio
import threading
import time

from sil_operator.kube.offload import Offload


def test_a_hung_loop_holds_its_own_slots_only_and_the_event_loop_keeps_running() -> None:
    async def scenario() -> None:
        offload = Offload(workers=4, per_key=2)
        release = threading.Event()
        hung = [asyncio.ensure_future(offload.run("hung", release.wait, 30)) for _ in range(3)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await offload.run("healthy", lambda: "answered") == "answered"
        assert await asyncio.to_thread(lambda: "api call") == "api call"
        assert time.monotonic() - started < 1.0
        assert not any(task.done() for task in hung)
        release.set()
        assert await asyncio.gather(*hung) == [True, True, True]
        offload.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_no_more_than_two_calls_of_one_loop_run_at_once() -> None:
    async def scenario() -> int:
        offload = Offload(workers=8, per_key=2)
        lock = threading.Lock()
        running = peak = 0

        def work() -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.05)
            with lock:
                running -= 1

        await asyncio.gather(*(offload.run("loop", work) for _ in range(6)))
        offload.shutdown()
        return peak

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == 2


def test_a_cancelled_caller_frees_its_slot_only_when_its_thread_is_done() -> None:
    async def scenario() -> None:
        offload = Offload(workers=4, per_key=1)
        release = threading.Event()
        first = asyncio.ensure_future(offload.run("loop", release.wait, 30))
        await asyncio.sleep(0.05)
        first.cancel()
        second = asyncio.ensure_future(offload.run("loop", lambda: "second"))
        await asyncio.sleep(0.2)
        assert not second.done(), "the cancelled call still holds its thread"
        release.set()
        assert await second == "second"
        offload.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 10))
