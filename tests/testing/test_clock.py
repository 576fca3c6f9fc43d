"""``VirtualClockLoop``: virtual time moves only when the loop is idle, and costs no wall time."""

from __future__ import annotations

import asyncio
import time

import pytest

from mycelium_p2p.aio import loop_time
from mycelium_p2p.testing import DEFAULT_EPOCH, VirtualClockLoop, run


def test_an_hour_of_sleep_takes_no_wall_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    began = time.perf_counter()
    assert run(main()) == 3600
    assert time.perf_counter() - began < 0.5


def test_timers_fire_in_virtual_order_at_their_virtual_times() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
            loop.call_later(delay, lambda n=name: fired.append((n, loop.time())))
        await asyncio.sleep(5)
        return fired

    assert run(main(), start=100.0) == [("a", 101.0), ("b", 102.0), ("c", 103.0)]


def test_timeouts_follow_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(60), timeout=2.5)
        return loop.time() - start

    assert run(main()) == 2.5


def test_time_stands_still_while_callbacks_run() -> None:
    async def main() -> tuple[float, float]:
        before = loop_time()
        time.sleep(0.05)  # real work, however long, takes no virtual time
        return before, loop_time()

    before, after = run(main())
    assert before == after == 0.0


def test_wall_time_is_the_epoch_plus_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop)
        await asyncio.sleep(10)
        return loop.wall_time()

    assert run(main()) == DEFAULT_EPOCH + 10


def test_threads_still_wake_an_idle_loop() -> None:
    async def main() -> int:
        return await asyncio.to_thread(lambda: 7)

    assert run(main()) == 7


def test_time_never_goes_back() -> None:
    loop = VirtualClockLoop()
    try:
        with pytest.raises(ValueError, match="forward"):
            loop.advance(-1)
    finally:
        loop.close()
