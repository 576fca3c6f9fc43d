"""Round-trip-time estimates that set every RPC's timeouts (RFC 6298 style).

A fixed timeout is wrong somewhere: 5 s stalls lookups behind dead peers on a LAN, 50 ms evicts
live peers on a busy host. Each peer gets ``srtt + 4 * rttvar`` from its own replies; peers we
have never heard from get the same from all replies seen. Two deadlines come out of it:

- ``stall_after``: when a lookup stops *waiting* for a query and asks someone else (the query
  stays open, and a late answer is still used);
- ``give_up_after``: when the query fails and the peer leaves the routing table.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

Address = tuple[str, int]


@dataclass
class _Estimate:
    srtt: float
    rttvar: float

    def update(self, sample: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample

    @property
    def rto(self) -> float:
        return self.srtt + 4.0 * self.rttvar


class RttEstimator:
    """Per-peer and overall RTT estimates; bounded memory (least recently used peers go)."""

    def __init__(
        self,
        *,
        min_timeout: float = 0.25,
        max_timeout: float = 5.0,
        min_stall: float = 0.02,
        initial_rtt: float = 0.5,
        max_peers: int = 4096,
    ) -> None:
        if not 0 < min_stall <= min_timeout <= max_timeout:
            raise ValueError("need 0 < min_stall <= min_timeout <= max_timeout")
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.min_stall = min_stall
        self._initial_rtt = initial_rtt
        self._overall: _Estimate | None = None
        self._peers: OrderedDict[Address, _Estimate] = OrderedDict()
        self._max_peers = max_peers

    def observe(self, peer: Address, rtt: float) -> None:
        """Record one measured round trip to ``peer``."""
        rtt = max(rtt, 0.0)
        est = self._peers.get(peer)
        if est is None:
            est = _Estimate(rtt, rtt / 2)
            self._peers[peer] = est
            if len(self._peers) > self._max_peers:
                self._peers.popitem(last=False)
        else:
            est.update(rtt)
            self._peers.move_to_end(peer)
        if self._overall is None:
            self._overall = _Estimate(rtt, rtt / 2)
        else:
            self._overall.update(rtt)

    def _rto(self, peer: Address | None) -> float:
        est = self._peers.get(peer) if peer is not None else None
        if est is None:
            est = self._overall
        if est is None:
            return 3.0 * self._initial_rtt
        return est.rto

    def give_up_after(self, peer: Address | None = None) -> float:
        """Seconds after which a request to ``peer`` has failed."""
        return min(self.max_timeout, max(self.min_timeout, 2.0 * self._rto(peer)))

    def stall_after(self, peer: Address | None = None) -> float:
        """Seconds after which a lookup should stop waiting for ``peer`` and ask another."""
        return min(self.give_up_after(peer), max(self.min_stall, self._rto(peer)))
