"""After a restart (of a node, of a seed, or both) every group is listed again, quickly.

The causes of slow listing this guards against: a seed that restarts knows nobody (and nobody
pings it again once it was evicted), so whoever joins through it sees a corner of the network;
a node that restarts through such a seed publishes its advert into that corner only.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kademlia.node import Node as KNode

from mycelium_p2p.dht import DhtConfig, DhtNode, fetch_adverts
from mycelium_p2p.node import dht_client
from mycelium_p2p.node.contacts import MAX_CONTACTS, load_contacts, save_contacts
from mycelium_p2p.node.node import Node, NodeConfig
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import FAST, crash, swarm
from mycelium_p2p.testing.procs import processes, start_join, start_seed
from mycelium_p2p.testing.records import group_id_of_advert, make_advert


async def restart_seed(seed: DhtNode, hints: list[tuple[str, int]] = ()) -> DhtNode:
    """The same seed (id and address) back with an empty store, bootstrapped from ``hints``."""
    host, port = seed.address
    await seed.close()
    fresh = DhtNode(seed.identity, seed.config)
    await fresh.listen(port, host)
    if hints:
        await fresh.bootstrap([], hints)
    return fresh


def test_contacts_file_round_trip_and_junk_is_ignored(tmp_path: Path) -> None:
    save_contacts(tmp_path, [("127.0.0.1", 9000), ("::1", 9001)])
    assert load_contacts(tmp_path) == [("127.0.0.1", 9000), ("::1", 9001)]
    junk = [["example.com", 1], ["127.0.0.1", 0], ["127.0.0.1", 70000], ["1.2.3.4"], 5, None]
    (tmp_path / "contacts.json").write_text(json.dumps([*junk, ["10.0.0.1", 80]]))
    assert load_contacts(tmp_path) == [("10.0.0.1", 80)]  # names are never kept, nor resolved
    (tmp_path / "contacts.json").write_text("{not json")
    assert load_contacts(tmp_path) == []
    save_contacts(tmp_path, [("127.0.0.1", p) for p in range(1, 1000)])
    assert len(load_contacts(tmp_path)) == MAX_CONTACTS
    assert load_contacts(tmp_path / "missing") == []


@run_async(timeout=60)
async def test_a_listing_is_not_fooled_by_peers_that_restarted_and_hold_part_of_a_shard() -> None:
    async with swarm(14) as nodes:
        honest = make_advert(name="honest")
        assert await nodes[1].put(honest) >= 14
        key = honest.key
        # A restarted peer holds only what was published since: here, another group's advert
        # in the same index shard. The 7 peers closest to the shard are such peers.
        other = next(r for i in range(100) if (r := make_advert(name=f"other-{i}")).key == key)
        target = int.from_bytes(key, "big")
        nearest = sorted(nodes, key=lambda n: n.node.long_id ^ target)[:7]
        for peer in nearest:
            peer.storage._data.clear()
            peer.storage.offer(key, other.blob)
        async with dht_client([nodes[0].address]) as reader:
            listed = {a.group_id for a in await fetch_adverts(reader)}
        assert group_id_of_advert(honest) in listed


@run_async(timeout=60)
async def test_a_node_joining_through_a_seed_that_knows_nobody_rejoins_through_its_contacts() -> (
    None
):
    async with swarm(12) as nodes:
        seed, old = nodes[0], nodes[5]
        hints = old.contacts()
        assert len(hints) >= 10
        seed = nodes[0] = await restart_seed(seed)  # knows nobody now
        host = old.address[0]
        await old.close()
        back = DhtNode(old.identity, FAST)  # the same node, on a new port
        await back.listen(0, host)
        try:
            await back.bootstrap([seed.address], hints)
            assert back.routing_table_size() >= 10
        finally:
            await back.close()


@run_async(timeout=60)
async def test_a_restarted_seed_is_pinged_again_by_the_peers_that_evicted_it() -> None:
    async with swarm(8) as nodes:
        seed = nodes[0]
        address = seed.address
        await seed.close()
        # every peer notices the seed is gone (a request to it times out) and evicts it
        gone = KNode(seed.node.id, *address)
        for n in nodes[1:]:
            n.protocol.handle_call_response((False, None), gone)
        assert all(address not in n.contacts() for n in nodes[1:])
        seed = nodes[0] = await restart_seed(seed)  # no contacts saved: it knows nobody
        await wait_for(lambda: seed.routing_table_size() >= 7, 20, "the seed to know everyone")
        await wait_for(
            lambda: all(address in n.contacts() for n in nodes[1:]), 20, "everyone to know it"
        )


@run_async(timeout=180)
async def test_groups_are_listed_again_after_a_node_and_its_seed_restart(tmp_path: Path) -> None:
    config = DhtConfig(maintenance_interval=0.5)
    compute = ThreadPoolExecutor(1)
    seed = DhtNode(config=config)
    await seed.listen(0, "127.0.0.1")
    peers = [DhtNode(config=config) for _ in range(24)]  # the k closest are not everyone
    nodes: list[Node] = []

    def node_config(i: int, port: int = 0) -> NodeConfig:
        return NodeConfig(
            bootstrap=[seed.address],
            host="127.0.0.1",
            port=port,
            data_dir=tmp_path / f"n{i}",
            task=f"t{i}",  # alone in its task: a restart founds a new group
            heartbeat_interval=0.3,
            round_pause=0.2,
            migrate=False,
            dht=config,
        )

    async def listing() -> set[tuple[str, tuple[str, int]]]:
        async with dht_client([seed.address], timeout=5) as reader:
            adverts = await asyncio.wait_for(fetch_adverts(reader), 10)
        return {(a.group_id, tuple(a.leader)) for a in adverts}

    def wanted() -> set[tuple[str, tuple[str, int]]]:
        return {(n.group.group_id, n.tcp_addr) for n in nodes if n.group is not None}

    try:
        for peer in peers:
            await peer.listen(0, "127.0.0.1")
        await asyncio.gather(*(p.bootstrap([seed.address]) for p in peers))
        for i in range(3):
            nodes.append(Node(node_config(i), on_event=lambda e: None, compute=compute))
            await nodes[-1].start()
        assert wanted() <= await listing()
        for k, old in enumerate(list(nodes)):
            # a node saves its contacts a few seconds after it starts, then every 30 s
            saved = tmp_path / f"n{k}"
            await wait_for(lambda d=saved: bool(load_contacts(d)), 20, "saved contacts")
            save_contacts(tmp_path, seed.contacts())  # the seed's last periodic save
            seed = await restart_seed(seed, load_contacts(tmp_path))
            await crash(old)
            assert old._lock is not None
            old._lock.release()  # what the killed process's exit does
            old.runner.close()
            loop = asyncio.get_running_loop()
            began = loop.time()
            new = nodes[k] = Node(node_config(k), on_event=lambda e: None, compute=compute)
            await new.start()
            while not wanted() <= await listing():
                assert loop.time() - began < 30, "a group not listed 30 s after a restart"
                await asyncio.sleep(0.2)
    finally:
        for node in nodes:
            await node.stop()
        for peer in [*peers, seed]:
            await peer.close()
        compute.shutdown(wait=False)


@run_async(timeout=30)
async def test_a_publication_nobody_accepted_is_tried_again_soon_not_an_interval_later() -> None:
    dht = DhtNode(config=FAST)
    accepted = iter([0, 0, 5, 5])
    calls: list[int] = []

    async def put(record: object) -> int:
        calls.append(1)
        return next(accepted)

    dht.put = put  # type: ignore[method-assign]
    task = dht.keep_published(lambda: make_advert(), interval=60.0, retry=0.05)
    try:
        await wait_for(lambda: len(calls) >= 3, 10, "two retries")
        await asyncio.sleep(0.3)
        assert len(calls) == 3  # accepted: the next one is an interval away
    finally:
        task.cancel()
        await dht.tasks.close()


def test_a_seed_process_keeps_its_contacts_for_its_next_start(tmp_path: Path) -> None:
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        start_join(procs, port, tmp_path / "node", "--create", "g")
        seed = procs[0]
        assert seed.stop() == 0  # SIGTERM: a clean stop saves what it knows
        assert len(load_contacts(tmp_path / "seed")) == 1  # the node
