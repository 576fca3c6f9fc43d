"""Many DHT peers in one process: publish, discover, expire, republish, churn.

Most run on ``testing.SimNetwork`` in virtual time (fast, and the same every run); the rest
over real UDP on loopback."""

from __future__ import annotations

import asyncio
import os
import random

from kademlia.network import Server
from kademlia.node import Node as KNode

from mycelium_p2p.dht import DhtConfig, DhtNode, fetch_advert, fetch_adverts, publish_advert
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import record_key
from mycelium_p2p.testing import SimNetwork, run, sim_swarm
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.loopback import FAST, swarm
from mycelium_p2p.testing.records import (
    group_id_of_advert,
    make_advert,
    payload_of,
    resign,
    tampered,
)


@run_async(timeout=120)
async def test_fifty_peers_publish_and_everyone_discovers_every_group() -> None:
    async with swarm(60) as nodes:
        records = [make_advert(name=f"g{i}") for i in range(8)]
        stored = await asyncio.gather(
            *(publish_advert(nodes[i + 1], record) for i, record in enumerate(records))
        )
        assert all(count >= FAST.ksize - 2 for count in stored), stored
        expected = sorted(group_id_of_advert(record) for record in records)
        for reader in random.Random(1).sample(nodes, 10):
            adverts = await fetch_adverts(reader)
            assert sorted(a.group_id for a in adverts) == expected
        one = await fetch_advert(nodes[-1], group_id_of_advert(records[3]))
        assert one is not None and one.name == "g3"
        assert await fetch_advert(nodes[-1], "0" * 16) is None


def test_lookups_succeed_quickly_after_a_third_of_the_peers_die() -> None:
    async def main() -> None:
        network = SimNetwork(seed=7, latency="lan")
        loop = asyncio.get_running_loop()
        async with sim_swarm(60, network, seed=7, config=FAST) as nodes:
            record = make_advert(now=loop.wall_time())
            await nodes[1].put(record)
            rng = random.Random(7)
            dead = rng.sample(nodes[2:], 20)
            for node in dead:
                network.kill(node.address)  # like a crash: it just goes quiet
            live = [n for n in nodes if n not in dead]
            worst = 0.0
            for reader in rng.sample(live, 20):
                start = loop.time()
                records = await reader.get_records(record.key)
                worst = max(worst, loop.time() - start)
                assert records == [record]
            # kademlia would wait 5 s per dead peer; our lookups route around them
            assert worst < 1.0, f"a lookup took {worst:.2f} s"

    run(main())


def test_records_expire_unless_republished_and_newer_versions_win() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with sim_swarm(50, SimNetwork(seed=2), seed=2, config=FAST) as nodes:
            kept, dropped = Identity.generate(), Identity.generate()
            seq = iter(range(1, 1000))
            publisher = nodes[3]
            task = publisher.keep_published(
                lambda: make_advert(
                    kept, seq=next(seq), ttl=2.0, name="kept", now=loop.wall_time()
                ),
                interval=0.5,
            )
            await publish_advert(
                nodes[4], make_advert(dropped, ttl=2.0, name="dropped", now=loop.wall_time())
            )
            names = {a.name for a in await fetch_adverts(nodes[10])}
            assert names == {"kept", "dropped"}
            await asyncio.sleep(2.5)
            adverts = await fetch_adverts(nodes[20])
            assert [a.name for a in adverts] == ["kept"]
            assert adverts[0].seq >= 4  # republished with a fresh seq each time
            task.cancel()
            await asyncio.sleep(2.5)
            assert await fetch_adverts(nodes[30]) == []  # its owner stopped: the group is gone

    run(main())


@run_async(timeout=120)
async def test_readers_correct_peers_that_hold_stale_versions() -> None:
    full_reads = DhtConfig(quorum=20, maintenance_interval=0.5)
    async with swarm(50, full_reads) as nodes:
        group = Identity.generate()
        old, new = make_advert(group, seq=1), make_advert(group, seq=2)
        await nodes[1].put(old)
        holders = [n for n in nodes if n.storage.records(old.key)]
        holders.sort(key=lambda n: n.node.long_id ^ int.from_bytes(old.key, "big"))
        # the new version reaches only one holder directly: the closest (a reader asks the
        # closest peers; the farthest siblings are found only if someone names them)
        holders[0].storage.offer(new.key, new.blob)
        for reader in nodes[10:20]:
            assert [r.seq for r in await reader.get_records(new.key)] == [2]
        await asyncio.sleep(0.2)
        stale = [n for n in holders if n.storage.records(old.key) == [old]]
        assert len(stale) < len(holders) - 1, "readers never corrected stale holders"


def test_a_peer_whose_contacts_all_die_rebootstraps_by_itself() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with sim_swarm(10, SimNetwork(seed=3), seed=3, config=FAST) as nodes:
            seed, lonely = nodes[0], nodes[9]
            for node in nodes[1:9]:
                node.stop()
            lonely.protocol.router.flush()  # as if every contact timed out
            assert lonely.routing_table_size() == 0
            for _ in range(40):
                await asyncio.sleep(0.1)
                if lonely.routing_table_size() > 0:
                    break
            assert lonely.routing_table_size() > 0
            record = make_advert(now=loop.wall_time())
            assert await lonely.put(record) >= 1
            assert await seed.get_records(record.key) == [record]

    run(main())


def test_an_idle_network_refreshes_each_bucket_once_per_refresh_interval() -> None:
    """Buckets were stamped only when made: once older than ``refresh_interval`` every one of
    them was looked up again at every maintenance pass (~450 datagrams a minute a peer)."""

    async def main() -> None:
        network = SimNetwork(seed=4)
        config = DhtConfig(refresh_interval=300.0)
        async with sim_swarm(40, network, seed=4, config=config):
            sent = []
            for _ in range(12):
                before = network.stats.sent
                await asyncio.sleep(60)
                sent.append(network.stats.sent - before)
        assert sent[5] > 0  # the refresh, five minutes in
        assert sent[6:10] == [0, 0, 0, 0], sent  # and quiet until the next one

    run(main())


@run_async(timeout=60)
async def test_a_read_with_an_empty_table_ends_by_its_timeout_while_a_rebootstrap_goes_on() -> None:
    """A bootstrap also looks up every empty bucket and can take many seconds; a read that
    needs contacts waits for the first one, or its own timeout, not for all of that."""
    async with swarm(4) as nodes:
        lonely = nodes[3]
        started = asyncio.Event()

        async def slow_bootstrap(seeds: object) -> None:
            started.set()
            await asyncio.sleep(3600)  # a seed that answers, then lookups that crawl

        lonely.bootstrap = slow_bootstrap  # type: ignore[method-assign]
        lonely.protocol.router.flush()
        assert lonely.routing_table_size() == 0
        records = await asyncio.wait_for(
            lonely.get_records(make_advert().key, timeout=0.5), timeout=10
        )
        assert records == [] and started.is_set()
        assert lonely.rejoin.running is not None and not lonely.rejoin.running.done()  # goes on


@run_async(timeout=60)
async def test_a_read_with_an_empty_table_goes_on_at_the_first_contact_a_rebootstrap_finds() -> (
    None
):
    async with swarm(4) as nodes:
        seed, lonely = nodes[0], nodes[3]
        record = make_advert()
        await seed.put(record)

        async def crawling_bootstrap(seeds: object) -> None:
            lonely.protocol.router.add_contact(seed.node)  # the seed answered...
            await asyncio.sleep(3600)  # ...and the bucket lookups crawl

        lonely.bootstrap = crawling_bootstrap  # type: ignore[method-assign]
        lonely.protocol.router.flush()
        # the upkeep loop and the read share one re-bootstrap
        first = lonely.rejoin.task()
        assert first is not None and lonely.rejoin.task() is first
        records = await asyncio.wait_for(lonely.get_records(record.key, timeout=30), timeout=10)
        assert record in records


def test_a_read_ends_by_its_timeout_though_a_silent_peer_stalls_later() -> None:
    """The lookup waits for the earliest stall among its silent peers; one whose estimated
    round trip is long (up to 5 s after a seed restart) stalled the read past its deadline."""

    async def main() -> None:
        network = SimNetwork(seed=5)
        loop = asyncio.get_running_loop()
        # receives and never answers, as a peer behind a cut link
        hole, _ = await network.create_endpoint(asyncio.DatagramProtocol, ("0.0.0.0", 0))
        async with sim_swarm(2, network, seed=5, config=FAST) as nodes:
            reader = nodes[1]
            reader.protocol.router.flush()
            reader.protocol.router.add_contact(KNode(os.urandom(20), *hole.address))
            reader.protocol.rtt.stall_after = lambda peer=None: 3600.0  # type: ignore[method-assign]
            reader.protocol.rtt.give_up_after = lambda peer=None: 3600.0  # type: ignore[method-assign]
            start = loop.time()
            assert await reader.get_records(make_advert().key, timeout=0.5) == []
            assert loop.time() - start < 0.6

    run(main())


@run_async(timeout=120)
async def test_a_stock_kademlia_peer_cannot_plant_a_forged_advert() -> None:
    async with swarm(50) as nodes:
        stock = Server()
        await stock.listen(0, "127.0.0.1")
        try:
            await stock.bootstrap([nodes[0].address])
            victim = Identity.generate()
            genuine = make_advert(victim, seq=1, accuracy=0.2)
            await nodes[5].put(genuine)
            # 1: the genuine advert claiming 99%, with the group's signature kept
            await stock.set_digest(genuine.key, tampered(genuine, 0.99))
            # 2: the same claim signed by the forger's own key in the group's name
            payload = payload_of(genuine.blob)
            payload["body"]["metrics"]["accuracy"] = 0.99
            payload["signer"] = Identity.generate().public_key
            await stock.set_digest(genuine.key, resign(Identity.generate(), payload))
            # 3 and 4: what stock kademlia stores: plain values and garbage
            await stock.set_digest(genuine.key, "plain text where an advert should be")
            await stock.set_digest(record_key("groups/0"), b"\x92\xc4\x01x\xc4\x40" + bytes(64))
            # offered to many of us (a stock peer is not proven, so our replies to it stay within
            # 3x what it sent: it learns fewer contacts than among its own kind) and refused
            rejected = sum(n.stats.records_rejected for n in nodes)
            assert rejected >= 2 * FAST.ksize, rejected
            for node in nodes:
                for blob in (r.blob for r in node.storage.records(genuine.key)):
                    assert blob == genuine.blob
            adverts = await fetch_adverts(nodes[40])
            assert [a.metrics.accuracy for a in adverts] == [0.2]
        finally:
            stock.stop()


@run_async(timeout=60)
async def test_many_peers_share_one_process_without_shared_state() -> None:
    config = DhtConfig(ksize=8, maintenance_interval=0.5)
    async with swarm(20, config) as first, swarm(20, config) as second:
        record = make_advert()
        await first[1].put(record)
        assert await first[-1].get_records(record.key) == [record]
        assert await second[-1].get_records(record.key) == []  # two networks, one process
        assert all(isinstance(n, DhtNode) for n in first + second)
