"""What a fuzz target is, and running one input of it with a hang bound and a verdict.

A target is a hypothesis strategy of inputs and a ``check`` that feeds one input to a parser.
``check`` lets the parser's documented errors pass (``allowed``), raises ``InvalidStored`` when
an invalid record got stored, and lets anything else escape: that is a crash. Both the test
suite (``tests/fuzz/test_fuzz.py``, a few hundred inputs each) and ``scripts/fuzz.py`` (the long
runs) go through ``run_one``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

HANG_SECONDS = 10.0  # one input taking this long is a hang (they take well under 50 ms)


class Hang(Exception):
    """One input ran over ``HANG_SECONDS``."""


class InvalidStored(AssertionError):
    """A record that is not valid was stored, or would have been."""


class Context:
    """What checks share across inputs: an event loop and a scratch directory."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._tmp = tempfile.TemporaryDirectory(prefix="myc-fuzz-")
        self.tmp = Path(self._tmp.name)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = HANG_SECONDS) -> Any:
        """Run ``coro`` to completion on the shared loop; ``Hang`` after ``timeout``."""

        async def bounded() -> Any:
            try:
                return await asyncio.wait_for(coro, timeout)
            except asyncio.TimeoutError:
                raise Hang(f"async input ran over {timeout} s") from None

        return self.loop.run_until_complete(bounded())

    def close(self) -> None:
        self.loop.close()
        self._tmp.cleanup()


@dataclass(frozen=True)
class Target:
    """A parser a peer (or a user's file) reaches, and how to fuzz it."""

    name: str
    what: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    check: Callable[[Any, Context], str]  # returns an outcome label ("refused", "accepted")
    allowed: tuple[type[BaseException], ...] = field(default=())


@dataclass
class Verdict:
    outcome: str  # "accepted", "refused", a target's own label, "crash", "hang", "invalid"
    seconds: float
    error: BaseException | None = None


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt synchronous code that runs over ``seconds`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(_signum: int, _frame: Any) -> None:
        raise Hang(f"input ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_one(target: Target, value: Any, ctx: Context) -> Verdict:
    """Feed ``value`` to ``target`` and classify what happened."""
    start = time.perf_counter()
    try:
        with _alarm(HANG_SECONDS * 1.5):
            outcome = target.check(value, ctx)
    except Hang as exc:
        return Verdict("hang", time.perf_counter() - start, exc)
    except InvalidStored as exc:
        return Verdict("invalid", time.perf_counter() - start, exc)
    except target.allowed:
        outcome = "refused"
    except Exception as exc:
        return Verdict("crash", time.perf_counter() - start, exc)
    seconds = time.perf_counter() - start
    if seconds > HANG_SECONDS:
        return Verdict("hang", seconds, Hang(f"input took {seconds:.1f} s"))
    return Verdict(outcome, seconds)
