"""``DhtConfig``: the tuning of one DHT node."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..records import DEFAULT_CLOCK_SKEW
from .limits import RpcLimits
from .storage import StoreQuotas

__all__ = ["DhtConfig"]


@dataclass(frozen=True)
class DhtConfig:
    """Tuning of one DHT node. The defaults suit a LAN and loopback alike."""

    ksize: int = 20
    alpha: int = 3  # queries in flight per path
    paths: int = 3  # disjoint lookup paths for puts and gets (S/Kademlia's d)
    siblings: int = 30  # a put stores at this many closest peers; a get searches as wide
    quorum: int = 3  # a get stops once this many peers, reached by every path, agree on the newest
    blame_after: int = 3  # failed referrals before their sender counts as a liar
    listing_quorum: int = 8  # ... and listings (every signer under a key, fetch_adverts) this many
    min_timeout: float = 0.25  # a request fails no sooner than this ...
    max_timeout: float = 5.0  # ... and no later than this, whatever the measured RTT
    min_stall: float = 0.02  # a lookup waits at least this long before asking around a peer
    lookup_deadline: float = 10.0
    maintenance_interval: float = 5.0
    refresh_interval: float = 300.0  # look up a random id in buckets idle this long
    clock_skew: float = DEFAULT_CLOCK_SKEW
    max_keys: int = 50_000
    max_entries_per_key: int = 256
    page_bytes: int = 6000
    max_pages: int = 32
    max_corrections: int = 32  # stale peers corrected after one lookup, at most
    verified_blobs: int = 4096  # records read whose checks are not repeated (VerifiedBlobs)
    quotas: StoreQuotas = field(default_factory=StoreQuotas)  # fair shares; network, signer quotas
    rpc_limits: RpcLimits = field(default_factory=RpcLimits)  # per-source limits on RPCs we answer
    max_hints: int = 64  # contacts from an earlier run pinged at bootstrap, at most
