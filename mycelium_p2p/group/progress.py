"""``Progress``: a long frame's progress in the log.

A frame of ``PROGRESS_BYTES`` or more logs its progress, at INFO on this module's logger: a few
lines while it moves, one when it ends (``frames`` and ``noise`` report as bytes move).
"""

from __future__ import annotations

import logging
import time

__all__ = ["PROGRESS_BYTES", "PROGRESS_INTERVAL", "Progress"]

PROGRESS_BYTES = 4 * 2**20  # frames this large log their progress
PROGRESS_INTERVAL = 1.0  # seconds at least between two progress lines of one frame
_MIB = 2**20

log = logging.getLogger(__name__)


class Progress:
    """A long frame's progress in the log (INFO): a line as each further quarter of it is
    through, none within ``PROGRESS_INTERVAL`` of the last (so at most three), and one when it
    ends (``finish``) or breaks off (``fail``). Streams call ``update`` as bytes move, from a
    worker thread too: an int compare until a line is due. ``total`` is what the frame holds,
    already within ``max_frame`` when a peer claims it; nothing is sized by it."""

    __slots__ = ("_due", "_last", "_start", "base", "done", "method", "peer", "receiving", "total")

    def __init__(self, receiving: bool, peer: str, method: str, total: int) -> None:
        self.receiving, self.peer, self.method, self.total = receiving, peer, method, total
        self.base = 0  # bytes of the frame through before the stream's current call
        self.done = 0  # bytes through, as last told
        self._start = self._last = time.monotonic()
        self._due = -(-total // 4)  # the next quarter's end

    def update(self, done: int) -> None:
        """``done`` bytes of the stream's current call (after ``base``) are through."""
        self.done = done = self.base + done
        if done >= self._due:
            self._quarter(done)

    def _quarter(self, done: int) -> None:
        quarters = 4 * done // self.total
        self._due = -(-(quarters + 1) * self.total // 4)
        now = time.monotonic()
        if quarters >= 4 or now - self._last < PROGRESS_INTERVAL:
            return  # all through (``finish`` says so), or too soon after the last line
        self._last = now
        log.info(
            "%s %s %s %s: %.1f of %.1f MiB (%d%%), %.1f MiB/s",
            *self._words(0),
            done / _MIB,
            self.total / _MIB,
            100 * done // self.total,
            done / _MIB / max(now - self._start, 1e-6),
        )

    def finish(self) -> None:
        """The frame is through: its size, time and rate; at INFO once it took
        ``PROGRESS_INTERVAL`` or more, else at DEBUG (a leader sending a 5-MB model to 8
        members on a LAN would log 8 lines a round)."""
        took = time.monotonic() - self._start
        log.log(
            logging.INFO if took >= PROGRESS_INTERVAL else logging.DEBUG,
            "%s %s %s %s: %.1f MiB in %.2f s (%.1f MiB/s)",
            *self._words(1),
            self.total / _MIB,
            took,
            self.total / _MIB / max(took, 1e-6),
        )

    def fail(self) -> None:
        """The frame broke off (a lost connection, a closed channel): how far it got. A
        worker thread still moving its bytes logs no more."""
        self._due = self.total + 1
        log.info(
            "%s %s %s %s broke off at %.1f of %.1f MiB after %.2f s",
            *self._words(0),
            max(self.base, self.done) / _MIB,
            self.total / _MIB,
            time.monotonic() - self._start,
        )

    def _words(self, tense: int) -> tuple[str, str, str, str]:
        """("receiving"/"received", method, "from", peer), or the same for sending."""
        if self.receiving:
            return ("receiving", "received")[tense], self.method, "from", self.peer
        return ("sending", "sent")[tense], self.method, "to", self.peer
