"""``TaskOwner``: every background task belongs to someone who cancels it on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import OwnerClosed

log = logging.getLogger(__name__)
T = TypeVar("T")


def loop_time() -> float:
    """Monotonic seconds from the running event loop's clock, else ``time.monotonic()``.

    asyncio's own loops read ``time.monotonic()``, so under them this is that clock; under a
    virtual-time loop (``mycelium_p2p.testing``) it is the simulated time, so the timeouts,
    rate limits and ages of the code that reads it follow the loop's clock.
    """
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class TaskOwner:
    """Spawns tasks, keeps them referenced, logs their failures, and cancels them on ``close``."""

    def __init__(self, name: str = "tasks") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise OwnerClosed(f"{self.name} is closed; no new tasks")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s: background task %s failed",
                self.name,
                task.get_name(),
                exc_info=task.exception(),
            )

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def cancel(self) -> None:
        """Cancel every task now, without waiting (for crash-like stops)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()

    async def close(self, timeout: float = 5.0) -> None:
        """Cancel every task and wait (at most ``timeout`` s) for them to finish."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
