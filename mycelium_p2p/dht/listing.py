"""What a reader of a shared key (the group index) read, and what it remembers between reads.

A listing reads a key until ``listing_quorum`` peers have answered in full, or until its time
is up. On a busy machine, or under a flood that makes every shard large, time runs out first
now and then, and a shard is read only in part: a reader that lists again and again
(``groups --watch``, a node looking for groups) would see groups blink out and back. A
``ListingMemory`` keeps each key's last read: a whole read replaces it, a read cut short is
merged into it (newest per signer), and what it holds is dropped as it expires. Everything
in it was verified when read and is still within its signed lifetime, so it is what a whole
read would have found unless the peers evicted it since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..records import Record, best_per_signer


@dataclass(frozen=True)
class Listing:
    """The records read under a key, newest per signer; ``whole``: the read ended because
    enough peers answered in full (or nobody was left to ask), not because its time ran out."""

    records: list[Record]
    whole: bool


@dataclass
class ListingMemory:
    """Each key's last read, for a reader that lists the same keys again and again.

    Bounded: at most ``max_keys`` keys (the least recently read go first) and ``per_key``
    records a key (the signers seen longest go last: a flood arrives after what it floods).
    Not shared between readers; one per node or per ``groups --watch``.
    """

    max_keys: int = 64
    per_key: int = 1024
    _held: dict[bytes, dict[bytes, Record]] = field(default_factory=dict, repr=False)

    def recall(self, key: bytes, listing: Listing, now: float) -> list[Record]:
        """What to show for ``key`` after ``listing``: the listing itself when it was whole,
        else the listing merged with what earlier reads found and has not expired."""
        earlier = self._held.pop(key, {})  # in the order its signers were first seen
        fresh = best_per_signer(listing.records)
        if listing.whole:  # what the peers no longer hold is gone
            earlier = {s: r for s, r in earlier.items() if s in fresh}
        held = {s: r for s, r in earlier.items() if not r.expired(now)}
        for signer, record in fresh.items():
            if signer not in held or record.rank > held[signer].rank:
                held[signer] = record
        self._held[key] = dict(list(held.items())[: self.per_key])
        while len(self._held) > self.max_keys:
            del self._held[next(iter(self._held))]
        return sorted(self._held[key].values(), key=lambda r: r.signer)
