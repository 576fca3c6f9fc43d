"""Listings: reading every signer under a key many signers share (the group index)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest import mock

from kademlia.node import Node

from mycelium_p2p.dht import DhtNode, Listing, ListingMemory, MyceliumProtocol, fetch_adverts
from mycelium_p2p.dht import node as dht_node
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import Record
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.loopback import FAST, swarm
from mycelium_p2p.testing.records import make_advert


def _advert_under(key: bytes) -> Record:
    """A fresh key's advert that falls in the index shard ``key``."""
    while True:
        advert = make_advert(Identity.generate())
        if advert.key == key:
            return advert


def _read(nodes: list[DhtNode], before: dict[int, int]) -> int:
    """How many of ``nodes`` answered a records query since ``before`` (see ``_served``)."""
    return sum(1 for n in nodes if n.stats.served["find_records"] > before[id(n)])


def _served(nodes: list[DhtNode]) -> dict[int, int]:
    return {id(n): n.stats.served["find_records"] for n in nodes}


@run_async(timeout=120)
async def test_a_listing_under_a_key_whose_holders_disagree_reads_a_quorum_not_everyone() -> None:
    """Under a flood every holder keeps a different part of the flood: their sets never agree.
    The agreement rule then reads every sibling; a listing stops once ``listing_quorum`` peers
    on every path returned records, and still has every signer all of them hold."""
    async with swarm(30) as nodes:
        common = make_advert(name="honest")
        key = common.key
        assert await nodes[1].put(common) >= 20
        for node in nodes:  # each peer holds one flood advert nobody else has
            node.storage.offer(key, _advert_under(key).blob)
        reader = nodes[7]
        others = [n for n in nodes if n is not reader]

        before = _served(others)
        agreed = await reader.get_records(key, quorum=FAST.listing_quorum)
        agreement_peers = _read(others, before)
        before = _served(others)
        listed = await reader.get_records(key, listing=True)
        listing_peers = _read(others, before)

    assert common in agreed and common in listed
    q = FAST.listing_quorum
    # a quorum, plus the queries already in flight when it was reached (alpha per path)
    assert q <= listing_peers <= q + FAST.alpha * FAST.paths, listing_peers
    assert agreement_peers >= 25, f"the agreement rule read only {agreement_peers} peers"
    assert listing_peers < agreement_peers


@run_async(timeout=60)
async def test_a_listing_timeout_bounds_the_lookup_and_fetch_adverts_passes_it_on() -> None:
    deadlines: list[float] = []
    real = dht_node.lookup

    async def spy(*args: object, deadline: float, **kwargs: object) -> object:
        deadlines.append(deadline - asyncio.get_running_loop().time())
        return await real(*args, deadline=deadline, **kwargs)  # type: ignore[arg-type]

    async with swarm(6) as nodes:
        advert = make_advert(name="listed")
        await nodes[1].put(advert)
        with mock.patch.object(dht_node, "lookup", spy):
            listed = await fetch_adverts(nodes[3], timeout=0.7)
            assert [a.name for a in listed] == ["listed"]
            assert len(deadlines) == 4 and all(0.5 < d <= 0.7 for d in deadlines), deadlines
            deadlines.clear()
            await nodes[3].get_records(advert.key, timeout=99)
            assert len(deadlines) == 1 and deadlines[0] <= FAST.lookup_deadline  # capped


@run_async(timeout=60)
async def test_a_listing_corrects_nobody_a_get_does() -> None:
    """Read-repair sends others' records from the reader's host: for a listing under a
    flooded key that would launder the flood into the reader's share."""
    async with swarm(12) as nodes:
        record = make_advert(name="partly-held")
        for node in nodes[:4]:  # held by a few; the rest lack it
            node.storage.offer(record.key, record.blob)
        reader = nodes[8]
        # Count what the reader itself sends under the key: other peers may still be
        # welcoming contacts met while the swarm formed, and their hand-overs are not ours.
        sent: list[bytes] = []
        real_relay = reader.protocol.call_relay

        async def relay(node: object, key: bytes, blob: bytes) -> object:
            if key == record.key:
                sent.append(blob)
            return await real_relay(node, key, blob)  # type: ignore[arg-type]

        reader.protocol.call_relay = relay  # type: ignore[method-assign]
        assert record in await reader.get_records(record.key, listing=True, quorum=4)
        await asyncio.sleep(0.3)  # corrections are sent in the background
        assert sent == []
        assert record in await reader.get_records(record.key)
        await asyncio.sleep(0.3)
        assert record.blob in sent


class _FirstPageOnly(MyceliumProtocol):
    """Answers the first page of a records query and loses every later one (a busy peer)."""

    def _answer(self, msg_id: bytes, name: str, args: list[Any], address: Any) -> None:
        if name == "find_records" and len(args) == 3 and args[2] != b"":
            return
        super()._answer(msg_id, name, args, address)


class _FirstPageOnlyNode(DhtNode):
    protocol_class = _FirstPageOnly


@run_async(timeout=60)
async def test_a_read_whose_later_pages_are_lost_is_marked_incomplete() -> None:
    """A listing must not count a peer it read in part as a holder: the signers past the
    lost page would be missed (seen in soak runs under load)."""
    async with swarm(3) as nodes:
        busy = _FirstPageOnlyNode(config=FAST)
        await busy.listen(0, "127.0.0.1")
        try:
            key = make_advert().key
            adverts = [_advert_under(key) for _ in range(40)]  # several pages
            for holder in (nodes[1], busy):
                for advert in adverts:
                    holder.storage.offer(key, advert.blob)
            reader = nodes[2].protocol
            whole = await reader.query_records(Node(nodes[1].node.id, *nodes[1].address), key, 32)
            part = await reader.query_records(Node(busy.node.id, *busy.address), key, 32)
            capped = await reader.query_records(Node(nodes[1].node.id, *nodes[1].address), key, 1)
        finally:
            await busy.close()
    assert whole is not None and whole.complete and len(whole.blobs) == 40
    assert part is not None and not part.complete and 0 < len(part.blobs) < 40
    assert capped is not None and not capped.complete


# -- what a reader that lists again and again remembers ---------------------------------------


def test_a_read_cut_short_is_filled_in_from_earlier_reads() -> None:
    memory = ListingMemory()
    key = b"k" * 20
    now = time.time()
    a, b = make_advert(name="a", now=now), make_advert(name="b", now=now)
    assert set(memory.recall(key, Listing([a, b], whole=True), now)) == {a, b}
    shown = memory.recall(key, Listing([a], whole=False), now + 1)  # time ran out before b
    assert set(shown) == {a, b}
    leader = Identity.generate()
    old, new = make_advert(leader, name="c", seq=1, now=now), make_advert(leader, name="c", seq=2)
    memory.recall(key, Listing([old], whole=False), now + 2)
    assert new in memory.recall(key, Listing([new], whole=False), now + 3)
    assert old not in memory.recall(key, Listing([old], whole=False), now + 4)  # newest kept


def test_a_whole_read_forgets_what_the_peers_no_longer_hold_and_expiry_forgets_the_rest() -> None:
    memory = ListingMemory()
    key = b"k" * 20
    now = time.time()
    a, b = make_advert(name="a", now=now, ttl=60), make_advert(name="b", now=now, ttl=10)
    memory.recall(key, Listing([a, b], whole=True), now)
    assert memory.recall(key, Listing([a], whole=True), now + 1) == [a]
    memory.recall(key, Listing([a, b], whole=True), now + 2)
    assert memory.recall(key, Listing([], whole=False), now + 11) == [a]  # b expired
    assert memory.recall(key, Listing([], whole=False), now + 61) == []


def test_the_memory_is_bounded_and_keeps_the_signers_seen_longest() -> None:
    memory = ListingMemory(max_keys=2, per_key=3)
    now = time.time()
    first = [make_advert(name=f"old{i}", now=now) for i in range(3)]
    memory.recall(b"1" * 20, Listing(first, whole=False), now)
    flood = [make_advert(name=f"new{i}", now=now) for i in range(5)]
    shown = memory.recall(b"1" * 20, Listing(flood, whole=False), now)
    assert set(shown) == set(first)  # a flood arrives after what it floods
    memory.recall(b"2" * 20, Listing(flood, whole=False), now)
    memory.recall(b"3" * 20, Listing(flood, whole=False), now)
    assert memory.recall(b"1" * 20, Listing([], whole=False), now) == []  # least recent key went


@run_async(timeout=60)
async def test_read_listing_says_whether_its_time_ran_out() -> None:
    async with swarm(12) as nodes:
        record = make_advert(name="listed")
        assert await nodes[1].put(record) >= 1
        whole = await nodes[5].read_listing(record.key)
        cut = await nodes[6].read_listing(record.key, timeout=0.0)
    assert whole.whole and record in whole.records
    assert not cut.whole


@run_async(timeout=60)
async def test_fetch_adverts_with_a_memory_keeps_a_group_whose_shard_read_was_cut_short() -> None:
    async with swarm(6) as nodes:
        advert = make_advert(name="kept")
        await nodes[1].put(advert)
        reader = nodes[3]
        memory = ListingMemory()
        assert [a.name for a in await fetch_adverts(reader, memory=memory)] == ["kept"]

        async def nothing_in_time(key: bytes, **_: object) -> Listing:
            return Listing([], whole=False)

        with mock.patch.object(reader, "read_listing", nothing_in_time):
            assert [a.name for a in await fetch_adverts(reader, memory=memory)] == ["kept"]
            assert await fetch_adverts(reader) == []  # without a memory: what was read
