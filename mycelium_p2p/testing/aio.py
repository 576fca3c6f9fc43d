"""Running async tests: ``run_async`` (a fresh event loop, a deadline) and ``wait_for``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

__all__ = ["run_async", "wait_for"]


def run_async(timeout: float = 60.0) -> Callable[..., Callable[..., None]]:
    """Run an ``async def`` test in a fresh event loop, failing it after ``timeout`` s."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout))

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
