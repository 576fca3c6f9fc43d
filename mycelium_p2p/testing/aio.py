"""Running async tests: ``run_async`` (a fresh event loop, a deadline), ``simulated`` (the same
in virtual time, with a simulated network) and ``wait_for``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from .clock import run
from .network import SimNetwork
from .streams import SimStreams

__all__ = ["run_async", "simulated", "wait_for"]


def run_async(timeout: float = 60.0) -> Callable[..., Callable[..., None]]:
    """Run an ``async def`` test in a fresh event loop, failing it after ``timeout`` s."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout))

        return wrapper

    return decorate


def simulated(
    timeout: float = 60.0, *, seed: int = 0, latency: str | float = "lan"
) -> Callable[..., Callable[..., None]]:
    """Run ``async def test(streams)`` on a fresh ``VirtualClockLoop``: ``streams`` is a new
    ``SimStreams`` on a ``SimNetwork(seed=seed, latency=latency)``, closed afterwards. The
    test fails after ``timeout`` simulated seconds."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        def wrapper(*args: Any, **kwargs: Any) -> None:
            async def main() -> None:
                streams = SimStreams(SimNetwork(seed=seed, latency=latency))
                try:
                    await asyncio.wait_for(fn(streams, *args, **kwargs), timeout)
                finally:
                    await streams.close()

            run(main())

        # the test's name and docstring, not its signature: ``streams`` is no pytest fixture
        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(wrapper, name, getattr(fn, name))
        return wrapper

    return decorate


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms; return the seconds it took, fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start
