"""``PendingCalls``: our requests awaiting their replies, matched by message id.

Each request has a timer (its timeout comes from the caller, from measured round trips); a reply
is accepted only from the address the request went to. An expired request is remembered
(bounded), so that its late reply still tells the round trip and that the peer is alive.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .rtt import Address
from .stats import ProtocolStats

RpcResult = tuple[bool, Any]
_MAX_EXPIRED = 1024  # expired requests remembered, for their late replies


@dataclass
class _Pending:
    future: asyncio.Future[RpcResult]
    timer: asyncio.TimerHandle
    address: Address
    sent_at: float
    name: str


@dataclass(frozen=True)
class Settled:
    """A reply matched to our request: its round trip (s); ``late``: after the request expired."""

    round_trip: float
    late: bool


class PendingCalls:
    """Open requests by message id; their futures give (True, reply) or (False, None)."""

    def __init__(self, stats: ProtocolStats) -> None:
        self.stats = stats
        self._outstanding: dict[bytes, _Pending] = {}
        self._expired: OrderedDict[bytes, tuple[Address, float]] = OrderedDict()

    def open(
        self,
        loop: asyncio.AbstractEventLoop,
        msg_id: bytes,
        address: Address,
        name: str,
        timeout: float,
        future: asyncio.Future[RpcResult],
    ) -> None:
        """Wait for the reply to request ``msg_id`` (RPC ``name``, sent to ``address``) for
        ``timeout`` s, then settle ``future`` with (False, None)."""
        timer = loop.call_later(timeout, self._expire, msg_id)
        self._outstanding[msg_id] = _Pending(future, timer, address, loop.time(), name)

    def settle(self, msg_id: bytes, data: Any, address: Address, now: float) -> Settled | None:
        """Match a reply from ``address``; None if it answers nothing we asked it (a foreign
        reply). A late reply settles nothing (its future already gave up) but is returned."""
        pending = self._outstanding.get(msg_id)
        if pending is None:
            expired = self._expired.pop(msg_id, None)
            if expired is not None and expired[0] == address:
                self.stats.late_replies += 1
                return Settled(now - expired[1], late=True)
            self.stats.foreign_replies += 1
            return None
        if pending.address != address:
            self.stats.foreign_replies += 1
            return None
        del self._outstanding[msg_id]
        pending.timer.cancel()
        self.stats.calls[pending.name, "answered"] += 1
        if not pending.future.done():
            pending.future.set_result((True, data))
        return Settled(now - pending.sent_at, late=False)

    def _expire(self, msg_id: bytes) -> None:
        pending = self._outstanding.pop(msg_id, None)
        if pending is None:
            return
        self.stats.timeouts += 1
        self.stats.calls[pending.name, "timed_out"] += 1
        self._expired[msg_id] = (pending.address, pending.sent_at)
        while len(self._expired) > _MAX_EXPIRED:
            self._expired.popitem(last=False)
        if not pending.future.done():
            pending.future.set_result((False, None))

    def cancel_all(self) -> None:
        """Fail every open request (on shutdown)."""
        for msg_id in list(self._outstanding):
            pending = self._outstanding.pop(msg_id)
            pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result((False, None))
