"""Flower's own log, inside our nodes: a library configures no logging for its host program.

Flower prints through a console handler of its own (on the ``flwr`` logger, at INFO): each
round's banner, each strategy's summary. Run by a node, that is chatter the host program did
not ask for (two nodes started from Python printed 1,108 lines in 20 s). ``keep_flower_quiet``
puts a filter on the ``flwr`` logger that takes every record logged in the threads where our
nodes run Flower's code (``strategy``, ``serverapp``, ``clientapp``: the executors' name
prefixes), and logs it again on ``mycelium_p2p.fl.flower``: INFO and below at DEBUG, warnings
and errors at their level. The host's logging configuration then decides what shows. Flower
used by the host program itself, in its own threads, is left as it is.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["FLOWER_LOG", "OUR_THREADS", "keep_flower_quiet"]

FLOWER_LOG = "mycelium_p2p.fl.flower"  # where Flower's records from our threads go
OUR_THREADS = ("strategy", "serverapp", "clientapp")  # thread names our executors give


class _FromOurThreads(logging.Filter):
    """Takes Flower's records logged in our threads (``prefixes``; None: every thread) off
    Flower's handlers and logs them on ``FLOWER_LOG`` instead."""

    def __init__(self, prefixes: tuple[str, ...] | None) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.forward = logging.getLogger(FLOWER_LOG)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.prefixes is not None and not threading.current_thread().name.startswith(
            self.prefixes
        ):
            return True  # the host's own use of Flower
        level = record.levelno if record.levelno >= logging.WARNING else logging.DEBUG
        if self.forward.isEnabledFor(level):
            copy = logging.makeLogRecord(record.__dict__)
            copy.name, copy.levelno, copy.levelname = FLOWER_LOG, level, logging.getLevelName(level)
            self.forward.handle(copy)
        return False


def keep_flower_quiet(*, every_thread: bool = False) -> None:
    """Install the filter (once per process; idempotent). ``every_thread``: in a process that
    is all ours (a ``ClientProcess`` worker), take Flower's records from every thread."""
    flower = logging.getLogger("flwr")
    prefixes = None if every_thread else OUR_THREADS
    for existing in flower.filters:
        if isinstance(existing, _FromOurThreads):
            if every_thread:
                existing.prefixes = None
            return
    flower.addFilter(_FromOurThreads(prefixes))
