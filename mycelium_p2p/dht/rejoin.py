"""``Rejoin``: a node whose routing table emptied bootstraps again from its seeds, one
re-bootstrap at a time.

The upkeep loop and the lookups that find the table empty share that one re-bootstrap; a lookup
waits for its first contact (or its end, or the lookup's deadline), not for the whole of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..aio import TaskOwner
from ..errors import BootstrapError
from .rtt import Address

log = logging.getLogger(__name__)


class Rejoin:
    """Re-bootstraps through ``bootstrap(seeds)`` (``seeds``: the list the node keeps) in
    ``tasks``; ``table_size()`` tells whether the routing table is empty."""

    def __init__(
        self,
        bootstrap: Callable[[list[Address]], Awaitable[Any]],
        seeds: list[Address],
        tasks: TaskOwner,
        table_size: Callable[[], int],
    ) -> None:
        self._bootstrap = bootstrap
        self._seeds = seeds
        self._tasks = tasks
        self._table_size = table_size
        self._lock = asyncio.Lock()
        self.running: asyncio.Task[None] | None = None  # a re-bootstrap a lookup started

    async def _rebootstrap(self) -> None:
        if not self._seeds or self._lock.locked():
            return
        async with self._lock:
            try:
                await self._bootstrap(self._seeds)
                log.info("routing table was empty; re-bootstrapped")
            except BootstrapError:
                log.debug("re-bootstrap found no seed yet")

    def task(self) -> asyncio.Task[None] | None:
        """The one re-bootstrap under way (started if none is), shared by the upkeep loop and
        lookups that found the table empty; None once the node is closing."""
        if self._tasks.closed:
            return None
        if self.running is None or self.running.done():
            self.running = self._tasks.spawn(self._rebootstrap(), name="rebootstrap")
        return self.running

    async def await_contacts(self, deadline: float) -> None:
        """With an empty routing table: re-bootstrap in the background and wait until it
        finds a contact, ends, or ``deadline`` passes. A bootstrap also looks up every empty
        bucket, which can outlast the lookup that needs it (a ``groups --watch`` listing
        printed nothing for 5 s after a seed was killed in the soak)."""
        rebooting = self.task()
        if rebooting is None:
            return
        loop = asyncio.get_running_loop()
        while self._table_size() == 0 and not rebooting.done() and loop.time() < deadline:
            await asyncio.sleep(0.05)
