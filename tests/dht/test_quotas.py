"""Storage quotas: per-key fair shares by source network, per-network and per-signer quotas."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from kademlia.node import Node

from mycelium_p2p.dht import DhtConfig, DhtNode, RecordStore
from mycelium_p2p.dht.limits import LOCAL, source_network
from mycelium_p2p.dht.storage import StoreQuotas
from mycelium_p2p.errors import StoreFull
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import Record, record_key, roster_topic, sign_record, signer_of
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.flood import flood_adverts
from mycelium_p2p.testing.hostile import sybil_identity
from mycelium_p2p.testing.loopback import FAST, swarm
from mycelium_p2p.testing.records import make_advert

NOW = 1_800_000_000.0
FLOODER = "127.0.9.1"


def _honest(n: int) -> list[tuple[Record, str]]:
    """``n`` honest groups' adverts, each published from a network of its own."""
    return [
        (make_advert(Identity.generate(), now=NOW, ttl=60, name=f"g{i}"), f"127.0.{i + 1}.7")
        for i in range(n)
    ]


def _heartbeat(identity: Identity, group_id: str, seq: int = 1) -> Record:
    body = {
        "group_id": group_id,
        "addr": ["127.0.0.1", 9000],
        "role": "member",
        "round": 1,
        "model_hash": b"\x00" * 32,
    }
    return sign_record(
        identity, "heartbeat", roster_topic(group_id), body, seq=seq, now=NOW, ttl=60
    )


@pytest.fixture(scope="module")
def flood() -> list[tuple[bytes, bytes]]:
    """10,000 valid adverts from 10,000 fresh keys, as ``(key, blob)``."""
    return [(record_key(t), b) for t, b in flood_adverts(10_000, now=NOW, ttl=600)]


def _flooded(store: RecordStore, flood: list[tuple[bytes, bytes]]) -> tuple[list[Record], int]:
    """Half the honest adverts stored before the flood, half after; returns them and the
    flooder's accepted count."""
    honest = _honest(8)
    for record, source in honest[:4]:
        store.offer(record.key, record.blob, source)
    accepted = 0
    for key, blob in flood:
        try:
            store.offer(key, blob, FLOODER)
            accepted += 1
        except StoreFull:
            pass
    for record, source in honest[4:]:
        with contextlib.suppress(StoreFull):  # the baseline refuses newcomers to a full key
            store.offer(record.key, record.blob, source)
    return [r for r, _ in honest], accepted


def test_a_flood_from_one_network_leaves_every_honest_advert_stored(flood) -> None:
    store = RecordStore(clock=lambda: NOW)
    honest, accepted = _flooded(store, flood)
    for record in honest:
        assert record in store.records(record.key), "an honest advert was evicted"
    # the flooder holds at most the four shard keys' worth of bytes, not 10,000 entries
    assert accepted < 10_000
    assert store.held_by(source_network(FLOODER)) <= 4 * (56 * 1024 // 500)


def test_without_quotas_the_same_flood_evicts_honest_adverts(flood) -> None:
    store = RecordStore(clock=lambda: NOW, quotas=StoreQuotas(fair=False))
    honest, _ = _flooded(store, flood)
    kept = [r for r in honest if r in store.records(r.key)]
    assert len(kept) < len(honest)  # the baseline the quotas fix


def test_the_largest_holder_gives_up_its_newest_entries_first(flood) -> None:
    store = RecordStore(clock=lambda: NOW, max_entries_per_key=10)
    key = flood[0][0]
    mine = [blob for k, blob in flood if k == key][:12]
    for blob in mine[:10]:
        store.offer(key, blob, FLOODER)
    newcomer = [make_advert(now=NOW, name=f"n{i}") for i in range(40)]
    newcomer = [r for r in newcomer if r.key == key][:1]
    assert newcomer, "no advert of 40 landed on the flooded key"
    store.offer(key, newcomer[0].blob, "127.0.3.1")
    signers = {r.signer for r in store.records(key)}
    assert signer_of(mine[9]) not in signers  # the newest of the flood went
    assert all(signer_of(b) in signers for b in mine[:9])
    with pytest.raises(StoreFull):  # the full key takes no more from the largest holder
        store.offer(key, mine[10], FLOODER)


def test_an_owner_that_republishes_keeps_its_age(flood) -> None:
    """Eviction takes a host's newest *signers*: an honest owner republishing (a new seq)
    is not the newest, the flood's adverts relayed through its host after it are."""
    store = RecordStore(clock=lambda: NOW, max_entries_per_key=10)
    owner = Identity.generate()
    honest = make_advert(owner, now=NOW, ttl=60, name="kept")
    key = honest.key
    theirs = [blob for k, blob in flood if k == key][:10]
    store.offer(key, honest.blob, "127.0.0.1")
    for blob in theirs[:5]:  # relayed by the honest host (replication, read-repair)
        store.offer(key, blob, "127.0.0.1")
    for blob in theirs[5:9]:  # the flooder's own host, same /24
        store.offer(key, blob, "127.0.0.66")
    republished = make_advert(owner, seq=2, now=NOW, ttl=60, name="kept")
    store.offer(key, republished.blob, "127.0.0.1")
    store.offer(key, theirs[9], "127.0.0.66")  # full: the honest host holds the most
    held = store.records(key)
    assert republished in held, "the republished honest advert was evicted"
    assert signer_of(theirs[4]) not in {r.signer for r in held}  # the newest relayed one went


def test_relayed_copies_go_first_and_never_displace_a_publication(flood) -> None:
    """An honest peer relays what it holds (a flood included) to a new neighbour: those copies
    must not count as the honest host's share, or its own adverts are what the flood evicts."""
    store = RecordStore(clock=lambda: NOW, max_entries_per_key=10)
    honest = make_advert(Identity.generate(), now=NOW, ttl=60, name="own")
    key = honest.key
    theirs = [blob for k, blob in flood if k == key][:12]
    store.offer(key, honest.blob, "127.0.0.1")
    for blob in theirs[:6]:  # the flood, relayed by the honest host to this (new) peer
        store.offer(key, blob, "127.0.0.1", relayed=True)
    for blob in theirs[6:9]:  # the flooder's own publications
        store.offer(key, blob, "127.0.0.66")
    assert len(store.records(key)) == 10
    newcomer = next(
        r
        for r in (make_advert(Identity.generate(), now=NOW, ttl=30) for _ in range(200))
        if r.key == key
    )
    store.offer(key, newcomer.blob, "127.0.0.1")  # an honest publication, short-lived
    signers = {r.signer for r in store.records(key)}
    assert {honest.signer, newcomer.signer} <= signers
    assert signer_of(theirs[5]) not in signers  # the newest relayed copy made room
    published = RecordStore(clock=lambda: NOW, max_entries_per_key=3)
    for blob in theirs[:3]:
        published.offer(key, blob, "127.0.0.66")
    with pytest.raises(StoreFull):  # full of publications: a copy takes no room
        published.offer(key, honest.blob, "127.0.0.1", relayed=True)
    published.offer(key, honest.blob, "127.0.0.1")  # its publication does (a fair share)


def test_a_relayed_copy_published_by_its_owner_becomes_a_publication() -> None:
    store = RecordStore(clock=lambda: NOW)
    record = make_advert(now=NOW, ttl=60)
    store.offer(record.key, record.blob, "127.0.0.1", relayed=True)
    assert store.is_relayed(record.key, record.signer) is True
    store.offer(record.key, record.blob, "127.0.5.9")  # the owner's republish, same bytes
    assert store.is_relayed(record.key, record.signer) is False
    assert store.network_of(record.key, record.signer) == "127.0.5.0/24"
    leader = Identity.generate()
    first = make_advert(leader, now=NOW, ttl=60, name="p")
    store.offer(first.key, first.blob, "127.0.5.9")
    second = make_advert(leader, seq=2, now=NOW, ttl=60, name="p")
    store.offer(second.key, second.blob, "127.0.0.1", relayed=True)  # read-repair of a newer one
    assert second in store.records(second.key)
    assert store.is_relayed(second.key, leader.public_key) is False  # a publication stays one


def test_a_refused_flood_costs_no_signature_check(flood) -> None:
    store = RecordStore(clock=lambda: NOW)
    key = flood[0][0]
    for k, blob in flood:
        if k == key:
            try:
                store.offer(key, blob, FLOODER)
            except StoreFull:
                break
    else:
        pytest.fail("the key never filled")
    forged = next(b for k, b in reversed(flood) if k == key)
    forged = forged[:-1] + bytes([forged[-1] ^ 1])  # a bad signature
    with pytest.raises(StoreFull):  # refused on quota, before the signature is looked at
        store.offer(key, forged, FLOODER)


def test_one_signer_writes_a_bounded_number_of_keys() -> None:
    store = RecordStore(clock=lambda: NOW, quotas=StoreQuotas(signer_keys=5))
    member = Identity.generate()
    records = [_heartbeat(member, f"{i:016x}") for i in range(6)]
    for record in records[:5]:
        store.offer(record.key, record.blob, "127.0.1.1")
    with pytest.raises(StoreFull, match="signer"):
        store.offer(records[5].key, records[5].blob, "127.0.1.1")
    newer = _heartbeat(member, f"{0:016x}", seq=2)  # updating a key it holds is fine
    store.offer(newer.key, newer.blob, "127.0.1.1")
    assert store.records(newer.key) == [newer]


def test_one_network_holds_a_bounded_number_of_entries() -> None:
    store = RecordStore(clock=lambda: NOW, quotas=StoreQuotas(network_entries=20))
    flood = [_heartbeat(Identity.generate(), os.urandom(8).hex()) for _ in range(21)]
    for record in flood[:20]:
        store.offer(record.key, record.blob, "127.0.9.1")
    with pytest.raises(StoreFull, match=r"127\.0\.9\.0/24"):
        store.offer(flood[20].key, flood[20].blob, "127.0.9.200")  # same /24, other host
    store.offer(flood[20].key, flood[20].blob, "127.0.10.1")  # another network has room
    assert store.held_by("127.0.9.0/24") == 20 and store.held_by("127.0.10.0/24") == 1


def test_a_roster_key_flooded_from_one_network_keeps_the_members() -> None:
    """Presence records prove no membership (anyone may join an open group), so the roster
    key is protected by the fair share, not by restricting signers."""
    store = RecordStore(clock=lambda: NOW, max_entries_per_key=64)
    gid = "0123456789abcdef"
    members = [_heartbeat(Identity.generate(), gid) for _ in range(5)]
    for i, record in enumerate(members[:2]):
        store.offer(record.key, record.blob, f"127.0.{i + 1}.1")
    for _ in range(300):
        record = _heartbeat(Identity.generate(), gid)
        with contextlib.suppress(StoreFull):
            store.offer(record.key, record.blob, FLOODER)
    for i, record in enumerate(members[2:]):
        store.offer(record.key, record.blob, f"127.0.{i + 3}.1")
    kept = store.records(members[0].key)
    assert all(m in kept for m in members) and len(kept) == 64


def test_source_networks() -> None:
    assert source_network("127.0.5.1") == source_network("127.0.5.200") == "127.0.5.0/24"
    assert source_network("127.0.6.1") != source_network("127.0.5.1")
    assert source_network("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert source_network("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert source_network(None) == LOCAL


@run_async(60)
async def test_stores_count_against_the_network_the_datagram_came_from() -> None:
    """A socket bound to 127.0.5.1 sends from 127.0.5.1: loopback emulates networks."""
    node = DhtNode(config=FAST)
    writer = DhtNode(config=DhtConfig(maintenance_interval=0.5, ksize=4))
    try:
        await node.listen(0, "127.0.0.1")
        await writer.listen(0, "127.0.5.1")
        await writer.bootstrap([node.address])
        record = make_advert(now=time.time())
        assert await writer.put(record) >= 1
        await wait_for(lambda: bool(node.storage.records(record.key)), 10, "the store")
        assert node.storage.network_of(record.key, record.signer) == "127.0.5.0/24"
    finally:
        await asyncio.gather(node.close(), writer.close())


def _slow_later_pages(protocol: Any) -> Callable[..., Any]:
    """``rpc_find_records`` whose pages after the first take 20 ms (a busy peer)."""
    answer = protocol.rpc_find_records

    def slow(sender: Any, nodeid: Any, key: Any, after: Any) -> Any:
        if after:
            time.sleep(0.02)  # blocks the loop, as a busy peer would
        return answer(sender, nodeid, key, after)

    return slow


@run_async(120)
async def test_a_reader_gets_every_page_of_a_full_key() -> None:
    """A key filled to its byte quota takes several pages; a peer still paging its answer is
    answering, not stalled, and the lookup waits for it (within its deadline)."""
    flood = [(record_key(t), b) for t, b in flood_adverts(400, now=time.time())]
    key = flood[0][0]
    blobs = [blob for k, blob in flood if k == key]
    # 20 pages of 20 ms outlast the stall time (0.2 s); a first page within it is likely
    config = DhtConfig(maintenance_interval=0.5, min_stall=0.2, page_bytes=3000)
    async with swarm(12, config) as nodes:
        for node in nodes[::3]:  # a third hold the key; the others answer at once, empty
            for blob in blobs:
                with contextlib.suppress(StoreFull):
                    node.storage.offer(key, blob, FLOODER)
            node.protocol._handlers["find_records"] = _slow_later_pages(node.protocol)
        held = {r.signer for r in nodes[0].storage.records(key)}
        assert len(held) > 60  # dozens of pages
        reader = DhtNode(config=config, read_only=True)
        await reader.listen(0, "127.0.8.1")
        try:
            await reader.bootstrap([nodes[0].address])
            for _ in range(2):
                assert {r.signer for r in await reader.get_records(key)} == held
        finally:
            await reader.close()


def test_a_flood_from_the_honest_nodes_own_subnet_leaves_every_honest_advert_stored(
    flood,
) -> None:
    """A stranger on the LAN shares the honest hosts' /24: within a network, shares are fair
    between hosts, so its fresh keys get one host's share, not the honest hosts' entries."""
    store = RecordStore(clock=lambda: NOW)
    honest = [
        (make_advert(Identity.generate(), now=NOW, ttl=60, name=f"lan{i}"), f"127.0.0.{i + 1}")
        for i in range(8)
    ]
    for record, source in honest[:4]:
        store.offer(record.key, record.blob, source)
    for key, blob in flood:
        with contextlib.suppress(StoreFull):
            store.offer(key, blob, "127.0.0.200")  # one host of the same /24
    for record, source in honest[4:]:
        store.offer(record.key, record.blob, source)
    for record, _ in honest:
        assert record in store.records(record.key), "an honest advert was evicted"


@run_async(timeout=60)
async def test_replication_to_a_new_neighbour_sends_relayed_copies() -> None:
    async with swarm(4) as nodes:
        record = make_advert(now=time.time())
        assert await nodes[1].put(record) >= 3
        # its id next to the key: closer than any peer there, so the closest one hands it over
        newcomer = DhtNode(sybil_identity(record.key, 12, seed=1), config=FAST)
        await newcomer.listen(0, "127.0.0.1")
        try:
            await newcomer.bootstrap([nodes[0].address])
            for node in nodes:  # every peer meets it (and proves its id) now, not by chance
                await node.protocol.call_ping(Node(newcomer.node.id, *newcomer.address))
            await wait_for(lambda: bool(newcomer.storage.records(record.key)), 10, "a copy")
            assert newcomer.storage.is_relayed(record.key, record.signer) is True
        finally:
            await newcomer.close()
