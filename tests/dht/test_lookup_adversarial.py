"""Lookups among hostile peers: sybils around a key, liars, forgers, bogus contacts."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from kademlia.node import Node

from mycelium_p2p.dht import DhtConfig, DhtNode, MyceliumProtocol
from mycelium_p2p.dht.replies import parse_contacts
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import Record
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.hostile import (
    HostileCrew,
    closed_udp_ports,
    hostile_dht_node,
    make_hostile,
    shared_prefix,
    sybil_identity,
)
from mycelium_p2p.testing.loopback import FAST, swarm
from mycelium_p2p.testing.records import make_advert

FULL_READS = DhtConfig(maintenance_interval=0.5, quorum=1000)  # gets ask everyone they can


@contextlib.asynccontextmanager
async def with_hostile(
    honest: list[DhtNode], plan: list[tuple[str, Identity | None]], config: DhtConfig = FAST
) -> AsyncIterator[list[DhtNode]]:
    """Hostile peers (behaviour, key pair: ground for sybils) joined to the ``honest`` swarm
    through its seed."""
    crew = HostileCrew(closed_udp_ports(4))
    liars = [hostile_dht_node(identity, config=config) for _, identity in plan]
    try:
        for liar, (behaviour, _) in zip(liars, plan, strict=True):
            await liar.listen(0, "127.0.0.1")
            make_hostile(liar.protocol, behaviour, crew)
            crew.enlist(liar.node.id, liar.address)
        for liar in liars:
            await liar.bootstrap([honest[0].address])
        # honest peers meet them as they would over time (their own lookups pass by)
        for node in honest[1:]:
            await node.find_closest(node.node.id)
        yield liars
    finally:
        for liar in liars:
            await liar.close()


def next_to(node_id: bytes) -> bytes:
    """An id one bit away (a lookup never seeds with its exact target)."""
    return node_id[:-1] + bytes([node_id[-1] ^ 1])


def advert_far_from(nodes: list[DhtNode], bits: int) -> Record:
    """An advert whose key shares fewer than ``bits`` leading bits with every node's id, so
    that sybils ground to ``bits`` or more surround it (random ids would, now and then, not)."""
    while True:
        record = make_advert()
        if all(shared_prefix(n.node.id, record.key) < bits for n in nodes):
            return record


async def holds(reader: DhtNode, record: Record) -> bool:
    return record in await reader.get_records(record.key)


@run_async(timeout=180)
async def test_twenty_sybils_next_to_a_key_do_not_hide_its_record() -> None:
    rng = random.Random(3)
    async with swarm(40) as honest:
        record = advert_far_from(honest, 10)
        plan: list[tuple[str, Identity | None]] = [
            ("sybil", sybil_identity(record.key, 10, seed=i)) for i in range(FAST.ksize)
        ]
        async with with_hostile(honest, plan) as sybils:
            target = Node(record.key)
            everyone = [*honest, *sybils]
            closest = sorted(everyone, key=lambda n: n.node.distance_to(target))[: FAST.ksize]
            assert all(n in sybils for n in closest), "the sybils do not surround the key"
            assert await honest[5].put(record) >= 1
            assert sum(1 for n in honest if n.storage.records(record.key)) >= 5
            readers = rng.sample(honest[1:], 15)
            found = [await holds(reader, record) for reader in readers]
            assert all(found), f"{found.count(False)} of {len(found)} gets missed the record"


@run_async(timeout=180)
async def test_a_mix_of_liars_droppers_and_sybils_does_not_stop_gets() -> None:
    rng = random.Random(4)
    leaders = [Identity.generate() for _ in range(8)]
    versions = [[make_advert(leader, seq=seq) for seq in (1, 2)] for leader in leaders]
    behaviours = ["drop", "empty", "stale", "forged", "bogus", "sybil"] * 2
    plan = [
        (b, sybil_identity(versions[i % 8][0].key, 10, seed=i) if b == "sybil" else None)
        for i, b in enumerate(behaviours)
    ]
    async with swarm(48) as honest, with_hostile(honest, plan):
        for i, (old, new) in enumerate(versions):
            await honest[i + 1].put(old)
            await honest[i + 1].put(new)  # stale liars keep replaying the old one
        for i, (_, new) in enumerate(versions):
            reader = rng.choice(honest[1:])
            got = [r.seq for r in await reader.get_records(new.key) if r.signer == new.signer]
            assert got == [2], f"group {i}: versions {got}"


@run_async(timeout=120)
async def test_a_peer_returning_a_forged_record_is_dropped_and_kept_out() -> None:
    async with (
        swarm(20, FULL_READS) as honest,
        with_hostile(honest, [("forged", None)], FULL_READS) as (forger,),
    ):
        record = make_advert()
        await honest[3].put(record)
        assert forger.protocol.kept.get(record.key) == record.blob, "forger got no copy"
        reader = honest[7]
        assert await reader.get_records(record.key) == [record]
        assert reader.protocol.distrusts(forger.node.id)
        assert reader.protocol.router.is_new_node(forger.node)
        assert reader.stats.liars_dropped >= 1
        await forger.protocol.call_ping(Node(reader.node.id, *reader.address))
        assert reader.protocol.router.is_new_node(forger.node), "it walked back in"


class _HostNameProtocol(MyceliumProtocol):
    """Names a host instead of an address: no honest peer does that."""

    def rpc_find_node(self, sender: Any, nodeid: Any, key: Any) -> list[list[Any]]:
        super().rpc_find_node(sender, nodeid, key)
        return [[bytes(20), "localhost", 4000]]


class _HostNameNode(DhtNode):
    protocol_class = _HostNameProtocol


@run_async(timeout=120)
async def test_a_peer_sending_a_malformed_contact_list_is_dropped() -> None:
    async with swarm(15) as honest:
        odd = _HostNameNode(config=FAST)
        await odd.listen(0, "127.0.0.1")
        try:
            await odd.bootstrap([honest[0].address])
            reader = honest[4]
            assert await reader.protocol.prove(odd.address) is not None  # then it enters
            await reader.find_closest(next_to(odd.node.id))
            assert reader.protocol.distrusts(odd.node.id)
            assert reader.protocol.router.is_new_node(odd.node)
        finally:
            await odd.close()


@run_async(timeout=120)
async def test_a_peer_naming_dead_made_up_contacts_is_blamed_and_its_referrals_skipped() -> None:
    async with swarm(30) as honest, with_hostile(honest, [("bogus", None)]) as (bogus,):
        reader = honest[9]
        assert await reader.protocol.prove(bogus.address) is not None  # then it enters
        dead = set(bogus.protocol.crew.dead_ports)
        asked_dead = 0
        query_nodes = reader.protocol.query_nodes

        async def counting(node: Node, target: bytes) -> Any:
            nonlocal asked_dead
            asked_dead += node.port in dead
            return await query_nodes(node, target)

        reader.protocol.query_nodes = counting  # type: ignore[method-assign]
        target = next_to(bogus.node.id)  # every path meets the bogus peer
        result = await reader._lookup(target, paths=3, width=20)
        assert bogus.node.id in {n.id for n in result.liars}
        # it named 10 made-up contacts closer than anyone: only the first few were tried
        assert 1 <= asked_dead <= FAST.blame_after + FAST.alpha, asked_dead


def test_contact_lists_are_parsed_strictly() -> None:
    me, other = bytes(20), b"\x01" * 20
    parsed = parse_contacts([[other, "127.0.0.1", 5]], exclude=me)
    assert [tuple(n) for n in parsed or []] == [(other, "127.0.0.1", 5)]
    assert parse_contacts([[me, "127.0.0.1", 5]], exclude=me) == []
    assert parse_contacts([[other, "::1", 5]], exclude=me)[0].ip == "::1"
    for bad in (
        "nodes",
        [[other, "example.com", 5]],  # a name, to be resolved: never
        [[other, "127.0.0.1", 0]],
        [[other[:5], "127.0.0.1", 5]],
        [[other, "127.0.0.1", 5], [other, "127.0.0.2", 6]],  # the same id twice
        [[other, "127.0.0.1"]],
        [[bytes([i]) * 20, "127.0.0.1", 5] for i in range(65)],  # more than any reply holds
    ):
        assert parse_contacts(bad, exclude=me) is None, bad
