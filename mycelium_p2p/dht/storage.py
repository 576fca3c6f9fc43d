"""``RecordStore``: what one DHT node holds: verified records, one per (key, signer), with expiry.

It also speaks kademlia's ``IStorage`` interface, so the library's own code paths (replicating
to newly seen nodes, ``Server.set``) go through the same validation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from kademlia.storage import IStorage

from ..errors import RecordError, StaleRecord, StoreFull
from ..records import DEFAULT_CLOCK_SKEW, Record, verify_record

Clock = Callable[[], float]


class RecordStore(IStorage):
    """Verified records keyed by DHT key, then by signer. Every write is validated."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        skew: float = DEFAULT_CLOCK_SKEW,
        max_keys: int = 50_000,
        max_entries_per_key: int = 256,
    ) -> None:
        self._clock = clock
        self._skew = skew
        self._max_keys = max_keys
        self._max_entries = max_entries_per_key
        self._data: dict[bytes, dict[bytes, Record]] = {}

    # -- our interface ---------------------------------------------------------------------

    def offer(self, key: bytes, blob: bytes) -> Record:
        """Validate ``blob`` for ``key`` and keep it; raise ``RecordError`` and change nothing.

        Per signer: a higher seq replaces, the same bytes refresh, anything else is stale.
        """
        now = self._clock()
        entries = self._live_entries(key, now)
        if entries:
            for current in entries.values():
                if current.blob == blob:
                    return current  # the same bytes: a refresh of a record already verified
        record = verify_record(blob, now=now, key=key, skew=self._skew)
        current = entries.get(record.signer) if entries else None
        if current is not None and record.seq <= current.seq:
            raise StaleRecord(f"seq {record.seq} is not newer than the stored seq {current.seq}")
        if entries is None:
            if len(self._data) >= self._max_keys:
                self.cull()
                if len(self._data) >= self._max_keys:
                    raise StoreFull(f"this node holds its limit of {self._max_keys} keys")
            entries = self._data[key] = {}
        if current is None and len(entries) >= self._max_entries:
            soonest = min(entries.values(), key=lambda r: r.expires_at)
            if soonest.expires_at >= record.expires_at:
                raise StoreFull(f"key holds its limit of {self._max_entries} entries")
            del entries[soonest.signer]
        entries[record.signer] = record
        return record

    def records(self, key: bytes) -> list[Record]:
        """The live records under ``key``, ordered by signer."""
        entries = self._live_entries(key, self._clock())
        if not entries:
            return []
        return [entries[s] for s in sorted(entries)]

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

    def _live_entries(self, key: bytes, now: float) -> dict[bytes, Record] | None:
        entries = self._data.get(key)
        if entries is None:
            return None
        for signer in [s for s, r in entries.items() if r.expired(now)]:
            del entries[signer]
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
