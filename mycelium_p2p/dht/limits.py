"""Per-source limits: token buckets in bounded tables, and the source network of an address.

A *source network* is where quotas and aggregate rates are counted: an IPv4 address's /24 and
an IPv6 address's /48 (one host, or one small site, usually holds a whole /24 or /48, so fresh
addresses from it buy nothing). Loopback is counted the same way, so ``127.0.5.1`` and
``127.0.6.1`` are two networks: tests emulate several networks on one machine.

``RateLimiter`` keeps one token bucket per key (an address or a network) in a table bounded by
``max_sources``, dropping the least recently used: a peer cannot grow it by using fresh
addresses, and a dropped entry comes back full, which costs at most one burst.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..aio import loop_time

Clock = Callable[[], float]

#: The network of records stored by the node itself (not received from any peer).
LOCAL = "local"


def source_network(host: str | None) -> str:
    """The network ``host`` counts against: ``a.b.c.0/24``, ``x:y:z::/48``, or ``LOCAL``."""
    if host is None:
        return LOCAL
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return f"?{host[:64]}"  # not an IP (never sent by a socket): its own network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; ``take`` spends them if there."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


class RateLimiter:
    """One ``TokenBucket`` per key, in an LRU table of at most ``max_sources`` keys."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_sources: int = 4096,
        clock: Clock = loop_time,
    ) -> None:
        if not (0 < rate < math.inf and 1 <= burst < math.inf and max_sources >= 1):
            raise ValueError(
                f"a rate limit needs rate > 0, burst >= 1, max_sources >= 1; got "
                f"{rate}, {burst}, {max_sources}"
            )
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def allow(self, source: Hashable, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``source``'s bucket; False (nothing spent) if too few."""
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, self.burst, now)
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(now, cost)

    def refund(self, source: Hashable, cost: float = 1.0) -> None:
        """Give back tokens spent on work that turned out well (never above the burst)."""
        bucket = self._buckets.get(source)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + cost)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class RpcLimits:
    """How much DHT work a source may cause. Requests over a limit are dropped unanswered.

    Every RPC costs one token of its source address's bucket; a ``store`` (a signature check)
    also costs one of its address's and one of its network's store buckets. ``enabled=False``
    turns every limit off (for baselines in benchmarks).
    """

    requests_per_s: float = 200.0
    requests_burst: float = 400.0
    # a burst covers replicating a few hundred records to a new neighbour at once
    stores_per_s: float = 100.0
    stores_burst: float = 1000.0
    network_stores_per_s: float = 500.0
    network_stores_burst: float = 2000.0
    max_sources: int = 4096
    enabled: bool = True


class RpcGate:
    """Decides, before any work, whether a request from an address is served."""

    #: RPCs whose work is a signature check (or more) per request.
    EXPENSIVE = frozenset({"store"})

    def __init__(self, limits: RpcLimits, clock: Clock = loop_time) -> None:
        self.limits = limits
        n = limits.max_sources
        self._requests = RateLimiter(
            limits.requests_per_s, limits.requests_burst, max_sources=n, clock=clock
        )
        self._stores = RateLimiter(
            limits.stores_per_s, limits.stores_burst, max_sources=n, clock=clock
        )
        self._network_stores = RateLimiter(
            limits.network_stores_per_s, limits.network_stores_burst, max_sources=n, clock=clock
        )

    def allow(self, address: tuple[str, int], rpc: str) -> bool:
        """True if ``address`` may have ``rpc`` served now (its tokens are then spent)."""
        if not self.limits.enabled:
            return True
        if not self._requests.allow(address):
            return False
        if rpc not in self.EXPENSIVE:
            return True
        return self._stores.allow(address) and self._network_stores.allow(
            source_network(address[0])
        )
