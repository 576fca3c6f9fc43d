"""Running a node as a process: one data directory per node, clean exit on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from ..errors import ConfigError, StoppedAbruptly

LOCK_FILE = "node.lock"


class DataDirLock:
    """An exclusive lock on a data directory: two nodes sharing a key would share a node id."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the node's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ConfigError(
                f"data dir {self.path.parent} is in use by pid {holder}; "
                "give each node its own --data-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


async def run_until_signalled(
    main: Callable[[asyncio.Event], Awaitable[None]],
) -> None:
    """Run ``main(stop)``; SIGINT or SIGTERM sets ``stop`` so ``main`` can shut down cleanly.

    ``main`` should return soon after ``stop`` is set. A second signal cancels it outright:
    ``StoppedAbruptly`` is raised then (the CLI's exit code 130), never a bare cancellation.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()
    forced = False

    def on_signal() -> None:
        nonlocal forced
        if stop.is_set() and task is not None and not forced:
            forced = True
            task.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await main(stop)
    except asyncio.CancelledError:
        if not forced or task is None:
            raise
        if sys.version_info >= (3, 11):
            task.uncancel()  # the cancellation was ours and ends here, as an error
        raise StoppedAbruptly(
            "a second signal: stopped without finishing the clean shutdown"
        ) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
