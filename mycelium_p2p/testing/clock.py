"""Virtual time for asyncio: simulated seconds that cost no wall time.

``VirtualClockLoop`` is asyncio's selector loop with two changes: ``time()`` reads a virtual
clock, and when nothing is ready to run, the loop does not sleep until its next timer: it moves
the clock there at once. Every ``asyncio.sleep``, ``wait_for`` and ``call_later`` (and the DHT's
timeouts, rate limits and ages, which read ``loop.time()``) then follows virtual time, and a run
is as fast as its callbacks. ``run`` is ``asyncio.run`` on such a loop.

The clock moves only when the loop is idle, so time never passes while a callback runs. Work
done in threads or behind real sockets sees time jump: use it with in-memory networks
(``SimNetwork``) only. With nothing scheduled at all, the loop waits for real I/O as asyncio's
does (a thread's ``call_soon_threadsafe`` still wakes it).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Wall-clock seconds at virtual time 0 (2023-11-14): records signed in a simulation carry
#: plausible dates.
DEFAULT_EPOCH = 1.7e9


class _SkippingSelector(selectors.DefaultSelector):
    """Polls without blocking; when asked to wait for ``timeout`` s, advances the clock."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # nothing scheduled: only real I/O (a thread) can wake us
            return super().select(None)
        self._loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is virtual and jumps to the next timer when idle."""

    def __init__(self, *, start: float = 0.0, epoch: float = DEFAULT_EPOCH) -> None:
        self._now = float(start)
        self.epoch = epoch
        super().__init__(selector=_SkippingSelector(self))

    def time(self) -> float:
        return self._now

    def wall_time(self) -> float:
        """Seconds since the Unix epoch in the simulation (``epoch + time()``): pass it where a
        wall clock is wanted (``DhtNode(clock=loop.wall_time)``, a record's ``now``)."""
        return self.epoch + self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0); timers now due run next."""
        if seconds < 0:
            raise ValueError(f"time only moves forward; got {seconds} s")
        self._now += seconds


def run(main: Coroutine[Any, Any, T], *, start: float = 0.0, epoch: float = DEFAULT_EPOCH) -> T:
    """Run ``main`` to completion on a fresh ``VirtualClockLoop``, as ``asyncio.run`` does:
    then cancel the tasks left and close the loop."""
    loop = VirtualClockLoop(start=start, epoch=epoch)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
