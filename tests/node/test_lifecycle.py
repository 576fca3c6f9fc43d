"""SIGINT/SIGTERM handling of a node process, exercised in this process."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from mycelium_p2p.errors import StoppedAbruptly
from mycelium_p2p.node import run_until_signalled
from mycelium_p2p.testing.aio import run_async


@run_async(timeout=10)
async def test_one_signal_lets_the_shutdown_finish() -> None:
    finished = []

    async def main(stop: asyncio.Event) -> None:
        await stop.wait()
        await asyncio.sleep(0.05)  # a clean shutdown takes a moment
        finished.append(True)

    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    await run_until_signalled(main)
    assert finished == [True]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers removed afterwards


@run_async(timeout=10)
async def test_a_second_signal_cuts_the_shutdown_short_with_a_clear_error() -> None:
    stopping = asyncio.Event()

    async def main(stop: asyncio.Event) -> None:
        await stop.wait()
        stopping.set()
        await asyncio.sleep(30)  # a shutdown that hangs

    async def signal_twice() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await stopping.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: loop.create_task(signal_twice()))
    with pytest.raises(StoppedAbruptly, match="second signal"):
        await run_until_signalled(main)
    task = asyncio.current_task()
    assert task is not None and not task.cancelling()  # the cancellation does not leak to us
