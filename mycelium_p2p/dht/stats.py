"""``ProtocolStats``: what the DHT protocol dropped, refused, timed out and served, as counters
a test, the web view or an operator reads."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import RecordError


@dataclass
class ProtocolStats:
    """Counters a test or an operator can read: what was dropped, refused, or timed out."""

    malformed_datagrams: int = 0
    bad_requests: int = 0
    handler_errors: int = 0
    records_stored: int = 0
    records_rejected: int = 0
    timeouts: int = 0
    late_replies: int = 0
    foreign_replies: int = 0
    proofs_ok: int = 0
    proofs_failed: int = 0
    proofs_throttled: int = 0
    bogus_ids: int = 0  # a contact whose address proved another id
    replies_trimmed: int = 0
    replies_dropped: int = 0
    rate_limited: int = 0
    liars_dropped: int = 0
    bytes_in: int = 0  # every datagram received, malformed ones included
    bytes_out: int = 0  # every datagram sent
    served: Counter[str] = field(default_factory=Counter)  # requests answered, by RPC
    # our requests by RPC and outcome ("answered", "timed_out")
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused_by: Counter[str] = field(default_factory=Counter)  # records refused, by reason


def refusal_reason(exc: RecordError) -> str:
    """A refused record's reason, as a metric label: its error class in snake case (a fixed
    set: ``stale_record``, ``store_full``, ``bad_signature``...)."""
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
