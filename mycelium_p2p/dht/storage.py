"""``RecordStore``: what one DHT node holds: verified records, one per (key, signer), with expiry.

Quotas keep one source from crowding out the rest (``StoreQuotas``). Each entry counts against
the *source network* that stored its current version (``limits.source_network``: a /24 or /48;
``LOCAL`` for the node's own). Under one key, room is shared max-min fairly: when a key is full
(entries or bytes), a newcomer from network N evicts the *newest* entries of the network holding
the most bytes there, as long as that network still holds more than N will; else, within N,
the newest entries of the *host* holding the most, as long as it holds more than the newcomer's
host will (a stranger on the honest nodes' own LAN subnet gets one host's share); else the
newcomer may only replace its own host's soonest-expiring entry with a longer-lived one. A
flood arrives after what it floods, so newest-first spares a network's older (honest) entries;
an entry's age is its *signer's* here (when its first version came), so an owner that
republishes (a new seq every ``advert_ttl / 3``) stays old instead of becoming the newest.
Copies that peers pass on (kademlia's replication to a new neighbour, read-repair) arrive
*relayed*: they count as nobody's share, go first (newest first) when room is needed, and never
displace a publication; otherwise every flood advert an honest peer relays would be charged to
that honest host and crowd out its own adverts.
Across the store, a network holds at most ``network_entries`` entries and a signer writes at
most ``signer_keys`` keys. Quotas are decided on the record's claimed signer, expiry and size
*before* its signature is checked: a refused flood costs a decode, not a signature check.

It also speaks kademlia's ``IStorage`` interface, so the library's own code paths (replicating
to newly seen nodes, ``Server.set``) go through the same validation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from kademlia.storage import IStorage

from ..errors import RecordError, StaleRecord, StoreFull
from ..records import DEFAULT_CLOCK_SKEW, Record, verify_record
from .limits import LOCAL, source_network

Clock = Callable[[], float]


@dataclass(frozen=True)
class StoreQuotas:
    """Per-key, per-network and per-signer limits (on top of ``max_keys`` and
    ``max_entries_per_key``). ``fair=False`` restores the rules without them (a baseline).

    ``key_bytes`` bounds what one key holds so that a reader's ``max_pages`` pages read it all
    (32 pages of 6000 bytes, each at least 6000 - 4096 bytes full, hold 60,928 bytes).
    """

    key_bytes: int = 56 * 1024
    network_entries: int = 4096
    signer_keys: int = 32
    fair: bool = True


@dataclass
class _Slot:
    record: Record
    network: str
    order: int  # when this signer's first version was stored here: eviction takes the newest
    host: str = LOCAL  # the address that stored it: shares are fair between hosts of a network
    relayed: bool = False  # a copy another peer passed on (replication, read-repair)

    @property
    def size(self) -> int:
        return len(self.record.blob)


class _Claim(msgspec.Struct):
    """What a record says of itself, read before its signature is checked."""

    signer: bytes
    exp: float


_ENVELOPE = msgspec.msgpack.Decoder(tuple[bytes, bytes])
_CLAIM = msgspec.msgpack.Decoder(_Claim)


def _claim(blob: Any) -> _Claim | None:
    try:
        return _CLAIM.decode(_ENVELOPE.decode(blob)[0])
    except (msgspec.DecodeError, TypeError):
        return None  # ``verify_record`` says what is wrong


class RecordStore(IStorage):
    """Verified records keyed by DHT key, then by signer. Every write is validated."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        skew: float = DEFAULT_CLOCK_SKEW,
        max_keys: int = 50_000,
        max_entries_per_key: int = 256,
        quotas: StoreQuotas | None = None,
    ) -> None:
        self._clock = clock
        self._skew = skew
        self._max_keys = max_keys
        self._max_entries = max_entries_per_key
        self.quotas = quotas or StoreQuotas()
        self._data: dict[bytes, dict[bytes, _Slot]] = {}
        self._per_network: Counter[str] = Counter()
        self._per_signer: Counter[bytes] = Counter()
        self._stored = 0

    # -- our interface ---------------------------------------------------------------------

    def offer(
        self, key: bytes, blob: bytes, source: str | None = None, *, relayed: bool = False
    ) -> Record:
        """Validate ``blob`` for ``key`` and keep it; raise ``RecordError`` and change nothing.

        ``source`` is the IP address it came from (None: this node's own). Per signer: a higher
        seq replaces, the same bytes refresh, anything else is stale. ``relayed``: a copy of
        another's record; it is evicted before any publication and never displaces one. The
        same record published later (an owner republishing) becomes a publication of its host.
        """
        now = self._clock()
        network = source_network(source)
        host = source or LOCAL
        entries = self._live_entries(key, now)
        if entries:
            for slot in entries.values():
                if slot.record.blob == blob:
                    if slot.relayed and not relayed:
                        self._republish(slot, network, host)
                    return slot.record  # the same bytes: a refresh of a record already verified
        claim = _claim(blob)
        victims: list[bytes] = []
        if claim is not None and isinstance(blob, bytes):
            victims = self._make_room(
                key, entries or {}, claim, len(blob), network, host, relayed=relayed
            )
        record = verify_record(blob, now=now, key=key, skew=self._skew)
        current = entries.get(record.signer) if entries else None
        if current is not None and record.seq <= current.record.seq:
            raise StaleRecord(
                f"seq {record.seq} is not newer than the stored seq {current.record.seq}"
            )
        if entries is None:
            if len(self._data) >= self._max_keys:
                self.cull()
                if len(self._data) >= self._max_keys:
                    raise StoreFull(f"this node holds its limit of {self._max_keys} keys")
            entries = self._data[key] = {}
        for signer in victims:
            self._remove(entries, signer)
        if current is not None:
            self._remove(entries, record.signer)
        self._stored += 1
        # a signer keeps its age across versions: an owner's republish is not a newcomer
        order = current.order if current is not None else self._stored
        if current is not None and relayed and not current.relayed:
            network, host, relayed = current.network, current.host, False  # still a publication
        entries[record.signer] = _Slot(record, network, order, host, relayed)
        self._per_network[network] += 1
        self._per_signer[record.signer] += 1
        return record

    def _republish(self, slot: _Slot, network: str, host: str) -> None:
        """A relayed copy was published by ``host``: it counts as that host's now."""
        self._per_network[slot.network] -= 1
        if self._per_network[slot.network] <= 0:
            del self._per_network[slot.network]
        self._per_network[network] += 1
        slot.network, slot.host, slot.relayed = network, host, False

    def _make_room(
        self,
        key: bytes,
        entries: dict[bytes, _Slot],
        claim: _Claim,
        size: int,
        network: str,
        host: str,
        *,
        relayed: bool = False,
    ) -> list[bytes]:
        """The signers whose entries must go for this record to fit; StoreFull if none can."""
        q = self.quotas
        current = entries.get(claim.signer)
        if q.fair:
            if (current is None or current.network != network) and self._per_network[
                network
            ] >= q.network_entries:
                raise StoreFull(f"network {network} holds its quota of {q.network_entries}")
            if current is None and self._per_signer[claim.signer] >= q.signer_keys:
                raise StoreFull(f"signer holds its quota of {q.signer_keys} keys")
        others = {s: slot for s, slot in entries.items() if s != claim.signer}
        count = len(others) + 1
        used = sum(slot.size for slot in others.values()) + size
        victims: list[bytes] = []

        def over() -> bool:
            return count > self._max_entries or (q.fair and used > q.key_bytes)

        while over():
            copies = [slot for slot in others.values() if slot.relayed]
            if q.fair and copies:  # relayed copies go first, newest first
                copy = max(copies, key=lambda s: s.order).record.signer
                victims.append(copy)
                count -= 1
                used -= others.pop(copy).size
                continue
            if q.fair and relayed:
                raise StoreFull(f"key {key.hex()[:12]} is full: a relayed copy displaces nothing")
            victim = self._fair_victim(others, network, host, size) if q.fair else None
            if victim is None:  # nobody holds more than we will: we may only replace our own
                own = [s for s in others.values() if q.fair is False or s.host == host]
                soonest = min(own, key=lambda s: s.record.expires_at, default=None)
                if soonest is None or soonest.record.expires_at >= claim.exp:
                    raise StoreFull(
                        f"key {key.hex()[:12]} is full ({self._max_entries} entries, "
                        f"{q.key_bytes} bytes) and {network} holds its share"
                    )
                victim = soonest.record.signer
            victims.append(victim)
            count -= 1
            used -= others.pop(victim).size
        return victims

    @staticmethod
    def _fair_victim(
        others: dict[bytes, _Slot], network: str, host: str, size: int
    ) -> bytes | None:
        """Max-min fairness in two levels: the newest entry of the network holding the most
        bytes, if it holds more than ``network`` will once this record is in; else, within
        our own network, the newest entry of the host holding the most, if it holds more than
        ``host`` will (a stranger on the honest nodes' own subnet gets a host's share)."""
        for level, mine_id, pool in (
            ("network", network, list(others.values())),
            ("host", host, [s for s in others.values() if s.network == network]),
        ):
            held: Counter[str] = Counter()
            for slot in pool:
                held[getattr(slot, level)] += slot.size
            mine = held.pop(mine_id, 0) + size
            if not held:
                continue
            top, top_bytes = held.most_common(1)[0]
            if top_bytes <= mine:
                continue
            newest = max((s for s in pool if getattr(s, level) == top), key=lambda s: s.order)
            return newest.record.signer
        return None

    def _remove(self, entries: dict[bytes, _Slot], signer: bytes) -> None:
        slot = entries.pop(signer)
        self._per_network[slot.network] -= 1
        if self._per_network[slot.network] <= 0:
            del self._per_network[slot.network]
        self._per_signer[signer] -= 1
        if self._per_signer[signer] <= 0:
            del self._per_signer[signer]

    def records(self, key: bytes) -> list[Record]:
        """The live records under ``key``, ordered by signer."""
        entries = self._live_entries(key, self._clock())
        if not entries:
            return []
        return [entries[s].record for s in sorted(entries)]

    def is_relayed(self, key: bytes, signer: bytes) -> bool | None:
        """Whether ``signer``'s entry under ``key`` is a relayed copy (None if none)."""
        slot = self._data.get(key, {}).get(signer)
        return slot.relayed if slot is not None else None

    def network_of(self, key: bytes, signer: bytes) -> str | None:
        """The source network that stored ``signer``'s entry under ``key`` (None if none)."""
        slot = self._data.get(key, {}).get(signer)
        return slot.network if slot is not None else None

    def held_by(self, network: str) -> int:
        """How many entries ``network`` holds in this store."""
        return self._per_network[network]

    def page(self, key: bytes, after: bytes, budget: int) -> tuple[list[bytes], bool]:
        """Blobs under ``key`` from signers after ``after``, up to ``budget`` bytes; more left?"""
        out: list[bytes] = []
        used = 0
        for record in self.records(key):
            if record.signer <= after:
                continue
            if out and used + len(record.blob) > budget:
                return out, True
            out.append(record.blob)
            used += len(record.blob)
        return out, False

    def stored_keys(self) -> list[bytes]:
        return list(self._data)

    def cull(self) -> int:
        """Drop every expired record; return how many went."""
        now = self._clock()
        dropped = 0
        for key in list(self._data):
            before = len(self._data[key])
            entries = self._live_entries(key, now)
            dropped += before - (len(entries) if entries else 0)
        return dropped

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._data.values())

    def _live_entries(self, key: bytes, now: float) -> dict[bytes, _Slot] | None:
        entries = self._data.get(key)
        if entries is None:
            return None
        for signer in [s for s, slot in entries.items() if slot.record.expired(now)]:
            self._remove(entries, signer)
        if not entries:
            del self._data[key]
            return None
        return entries

    # -- kademlia's IStorage -----------------------------------------------------------------

    def __setitem__(self, key: bytes, value: Any) -> None:
        if not isinstance(value, bytes):
            raise RecordError(f"only signed records are stored, not {type(value).__name__}")
        self.offer(key, value)

    def __getitem__(self, key: bytes) -> bytes:
        records = self.records(key)
        if not records:
            raise KeyError(key)
        return max(records, key=lambda r: r.rank).blob

    def get(self, key: bytes, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        # Owners republish their own records; storing nodes never re-sign or re-announce.
        return []

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, blob) for every live entry, as kademlia's replication expects."""
        for key in list(self._data):
            for record in self.records(key):
                yield key, record.blob
