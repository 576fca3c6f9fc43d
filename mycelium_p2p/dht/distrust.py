"""``Distrust``: node ids kept out of the routing table for a while, after a proven lie.

A peer that sent a malformed reply or a forged record stays out for ``period`` s, whatever it
sends meanwhile. The table is bounded, the oldest entry dropped first: a liar with many ids
cannot grow it.
"""

from __future__ import annotations

from collections import OrderedDict

from ..aio import loop_time

_MAX_DISTRUSTED = 1024


class Distrust:
    """Ids distrusted until a time (loop time); an expired entry is forgotten when read."""

    def __init__(self, period: float = 600.0) -> None:
        self.period = period
        self._until: OrderedDict[bytes, float] = OrderedDict()

    def add(self, node_id: bytes) -> None:
        """Distrust ``node_id`` for ``period`` s from now."""
        self._until[node_id] = loop_time() + self.period
        self._until.move_to_end(node_id)
        while len(self._until) > _MAX_DISTRUSTED:
            self._until.popitem(last=False)

    def __contains__(self, node_id: bytes) -> bool:
        until = self._until.get(node_id)
        if until is None:
            return False
        if until > loop_time():
            return True
        del self._until[node_id]
        return False
