"""The record store: seq rules, refreshes, expiry, limits, pagination."""

from __future__ import annotations

import pytest

from mycelium_p2p.dht import RecordStore
from mycelium_p2p.errors import (
    BadSignature,
    KeyBindingError,
    RecordError,
    RecordExpired,
    StaleRecord,
    StoreFull,
)
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import record_key
from mycelium_p2p.testing.records import make_advert


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock, **kwargs) -> RecordStore:
    return RecordStore(clock=clock, **kwargs)


def test_higher_seq_replaces_lower_and_equal_seq_is_refused() -> None:
    clock = Clock()
    store = _store(clock)
    group = Identity.generate()
    v1, v2 = (make_advert(group, seq=s, now=clock.now) for s in (1, 2))
    store.offer(v2.key, v2.blob)
    with pytest.raises(StaleRecord):
        store.offer(v1.key, v1.blob)  # replayed lower seq
    other_v2 = make_advert(group, seq=2, now=clock.now, accuracy=0.9)
    with pytest.raises(StaleRecord):
        store.offer(other_v2.key, other_v2.blob)  # same seq, other bytes
    assert store.offer(v2.key, v2.blob) == v2  # same bytes: refresh
    assert store.records(v2.key) == [v2]


def test_rejections_leave_the_store_unchanged() -> None:
    clock = Clock()
    store = _store(clock)
    group = Identity.generate()
    good = make_advert(group, seq=5, now=clock.now)
    store.offer(good.key, good.blob)
    before = store.records(good.key)
    bad = [
        (good.key, good.blob[:-1] + bytes([good.blob[-1] ^ 1]), BadSignature),
        (record_key("groups/0", b"k" * 32), good.blob, KeyBindingError),
        (good.key, make_advert(group, seq=9, now=clock.now - 120, ttl=60).blob, RecordExpired),
        (good.key, make_advert(group, seq=4, now=clock.now).blob, StaleRecord),
        (good.key, b"\x00garbage", RecordError),
    ]
    for key, blob, error in bad:
        with pytest.raises(error):
            store.offer(key, blob)
    assert store.records(good.key) == before
    assert len(store) == 1


def test_entries_of_many_signers_share_a_key_and_expire_one_by_one() -> None:
    clock = Clock()
    store = _store(clock)
    short, long = _adverts_on_one_key(2, clock, ttl=10)
    long = make_advert(Identity.from_seed((2).to_bytes(32, "big")), now=clock.now, ttl=100)
    assert long.key == short.key
    store.offer(short.key, short.blob)
    store.offer(long.key, long.blob)
    assert len(store) == 2
    clock.now += 11
    assert store.records(short.key) == [long]
    assert store.cull() == 0  # records() already dropped it lazily
    clock.now += 100
    store.cull()
    assert len(store) == 0 and store.stored_keys() == []


def _adverts_on_one_key(n: int, clock: Clock, ttl: float = 60) -> list:
    out, i = [], 0
    key = None
    while len(out) < n:
        i += 1
        record = make_advert(Identity.from_seed(i.to_bytes(32, "big")), now=clock.now, ttl=ttl)
        if key is None or record.key == key:
            key = record.key
            out.append(record)
    return out


def test_a_full_key_evicts_the_soonest_expiring_entry_or_refuses() -> None:
    clock = Clock()
    store = _store(clock, max_entries_per_key=2)
    a, b = _adverts_on_one_key(2, clock, ttl=30)
    store.offer(a.key, a.blob)
    store.offer(b.key, b.blob)
    (c,) = [r for r in _adverts_on_one_key(3, clock, ttl=60)[2:]]
    store.offer(c.key, c.blob)  # outlives a and b: evicts one of them
    assert len(store.records(c.key)) == 2 and c in store.records(c.key)
    (d,) = _adverts_on_one_key(4, clock, ttl=5)[3:]
    with pytest.raises(StoreFull):
        store.offer(d.key, d.blob)


def test_pages_cover_every_entry_once_within_the_budget() -> None:
    clock = Clock()
    store = _store(clock)
    records = _adverts_on_one_key(12, clock)
    for r in records:
        store.offer(r.key, r.blob)
    seen, after, pages = [], b"", 0
    while True:
        blobs, more = store.page(records[0].key, after, budget=1000)
        pages += 1
        assert sum(map(len, blobs)) <= 1000 or len(blobs) == 1
        seen += blobs
        if not more:
            break
        from mycelium_p2p.records import signer_of

        after = signer_of(blobs[-1])
    assert sorted(seen) == sorted(r.blob for r in records)
    assert pages > 1


def test_kademlia_storage_interface_validates_too() -> None:
    clock = Clock()
    store = _store(clock)
    record = make_advert(now=clock.now)
    store[record.key] = record.blob
    assert store.get(record.key) == record.blob
    assert list(store) == [(record.key, record.blob)]
    with pytest.raises(RecordError):
        store[record.key] = "a plain string, as kademlia's Server.set would store"
    assert store.get(b"\x00" * 20) is None
