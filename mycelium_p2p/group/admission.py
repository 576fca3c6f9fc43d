"""``Admission``: which TCP connections a ``ChannelServer`` takes, before any work on them.

Per source IP (tables bounded, least recently used dropped; see ``dht.limits.RateLimiter``):

- connects: a token bucket (``connects_per_s``, ``connects_burst``);
- unproven connections: each accepted connection spends one of ``unproven_burst`` tokens, given
  back when its handshake succeeds. A failed or timed-out handshake keeps its token, refilled at
  ``unproven_per_s``. So an IP has at most ``unproven_burst`` handshakes pending at once, and one
  that keeps failing them is refused until it has paid for its failures in time;
- authenticated channels: at most ``channels_per_ip`` at once (each holds buffers and a task).

And over all sources: at most ``max_handshakes`` handshakes pending at once. A refused
connection is closed at once, unread: a handshake (three DH operations) is work done only
within these limits. Pre-authentication input is small and time-limited: handshake messages of
at most ``noise.MAX_HANDSHAKE_MESSAGE`` bytes, read on the event loop, for at most
``handshake_timeout`` seconds in all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..aio import loop_time
from ..dht.limits import RateLimiter

HANDSHAKE_TIMEOUT = 5.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one source IP (and all of them together) may make a channel server hold."""

    handshake_timeout: float = HANDSHAKE_TIMEOUT
    max_handshakes: int = 256
    unproven_burst: int = 16
    unproven_per_s: float = 1.0
    connects_per_s: float = 200.0
    connects_burst: float = 1000.0
    channels_per_ip: int = 128
    max_sources: int = 4096


@dataclass
class AdmissionStats:
    """Counters a test or an operator can read."""

    refused_rate: int = 0
    refused_unproven: int = 0
    refused_busy: int = 0
    refused_channels: int = 0
    failed_handshakes: int = 0


class Admission:
    """Counts what each source IP holds; ``admit`` before a handshake, then exactly one of
    ``proven`` or ``failed``; ``open_channel`` before adopting one, ``close_channel`` after."""

    def __init__(self, limits: ConnectionLimits, clock: Callable[[], float] = loop_time):
        self.limits = limits
        self.stats = AdmissionStats()
        n = limits.max_sources
        self._connects = RateLimiter(
            limits.connects_per_s, limits.connects_burst, max_sources=n, clock=clock
        )
        self._unproven = RateLimiter(
            limits.unproven_per_s, limits.unproven_burst, max_sources=n, clock=clock
        )
        self._channels: Counter[str] = Counter()
        self.pending = 0

    def admit(self, ip: str) -> bool:
        """May a new connection from ``ip`` start a handshake now?"""
        if self.pending >= self.limits.max_handshakes:
            self.stats.refused_busy += 1
            return False
        if not self._connects.allow(ip):
            self.stats.refused_rate += 1
            return False
        if not self._unproven.allow(ip):
            self.stats.refused_unproven += 1
            return False
        self.pending += 1
        return True

    def proven(self, ip: str) -> None:
        self.pending -= 1
        self._unproven.refund(ip)

    def failed(self, ip: str) -> None:
        self.pending -= 1
        self.stats.failed_handshakes += 1

    def open_channel(self, ip: str) -> bool:
        if self._channels[ip] >= self.limits.channels_per_ip:
            self.stats.refused_channels += 1
            return False
        self._channels[ip] += 1
        return True

    def close_channel(self, ip: str) -> None:
        self._channels[ip] -= 1
        if self._channels[ip] <= 0:
            del self._channels[ip]

    def channels(self) -> int:
        """Authenticated channels accepted and not yet closed."""
        return sum(self._channels.values())
