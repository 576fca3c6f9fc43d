"""Nodes move to the group that serves their data; lies attract nobody; merged groups split."""

from __future__ import annotations

import time

from mycelium_p2p.dht import fetch_adverts, publish_advert
from mycelium_p2p.fl.leader import snapshot_of
from mycelium_p2p.fl.task import initial_arrays
from mycelium_p2p.records import GroupMetrics, sign_advert
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network

NO_AUTO = {"migrate": False, "split": False, "merge": False}  # moves only when a test asks


def by_name(nodes, name):
    return [n for n in nodes if n.group is not None and n.group.info.name == name]


@run_async(timeout=150)
async def test_a_node_moves_to_the_group_that_serves_its_domain_and_ignores_a_liar() -> None:
    configs = [
        {"create": "upright", "domain": 0, "data_shard": "0/4", **NO_AUTO},
        {"group": "upright", "domain": 0, "data_shard": "1/4", **NO_AUTO},
        {"create": "sideways", "domain": 1, "data_shard": "0/4", **NO_AUTO},
        {"group": "sideways", "domain": 1, "data_shard": "1/4", **NO_AUTO},
        {"create": "liar", "domain": 0, "data_shard": "2/4", **NO_AUTO},
        # the node under test: sideways data, starting in the upright group
        {"group": "upright", "domain": 1, "data_shard": "2/4", **NO_AUTO},
    ]
    async with learning_network(configs) as (seed, *nodes):
        liar, mover = nodes[4], nodes[5]
        # the liar serves an untrained model and claims 99% accuracy in a validly signed advert
        liar.leading.stop()
        liar.group.adopt_model(snapshot_of(1, initial_arrays()))
        info = liar.group.info
        lie = sign_advert(
            liar.identity,
            charter=info.charter,
            cert=liar.group.cert,
            address=liar.tcp_addr,
            metrics=GroupMetrics(0.99, 0.01, 500, 1, 10),
            seq=2**50,
            now=time.time(),
            ttl=120,
        )
        await publish_advert(seed, lie)
        assert {a.name: a.metrics.accuracy for a in await fetch_adverts(seed)}["liar"] == 0.99
        for leader in (nodes[0], nodes[2]):
            await wait_for(lambda leader=leader: len(leader.rounds) >= 15, 60, "15 rounds")
        mover.migration.config = type(mover.migration.config)(
            performance_threshold=0.05, confirmations=2, cooldown=0.0, max_candidates=4
        )
        reasons = [await mover.evaluate_groups() for _ in range(2)]
        assert mover.group.info.name == "sideways", reasons
        assert mover.moves and "serves our data better" in reasons[-1]
        # the liar attracted nobody, though it claims the best accuracy of all
        assert by_name(nodes, "liar") == [liar] and liar.group.roster.keys() == {
            liar.identity.public_key
        }


@run_async(timeout=120)
async def test_equal_groups_do_not_make_nodes_flap() -> None:
    configs = [
        {"create": "a", "data_shard": "0/4", **NO_AUTO},
        {"group": "a", "data_shard": "1/4", **NO_AUTO},
        {"create": "b", "data_shard": "2/4", **NO_AUTO},
        {"group": "b", "data_shard": "3/4", **NO_AUTO},
    ]
    async with learning_network(configs) as (_, *nodes):
        for leader in (nodes[0], nodes[2]):
            await wait_for(lambda leader=leader: len(leader.rounds) >= 15, 60, "15 rounds")
        for node in (nodes[1], nodes[3]):
            start = node.group.group_id
            for _ in range(4):
                await node.evaluate_groups()
            # scores of equal groups jitter; threshold, confirmation and cooldown keep nodes
            # from following the jitter back and forth
            assert len(node.moves) <= 1
            assert all(to != start for _, _, to in node.moves)


@run_async(timeout=150)
async def test_a_group_holding_two_domains_splits_them_apart() -> None:
    configs = [
        {"create": "merged", "domain": 0, "shift": "labels", "data_shard": "0/3"},
        {"group": "merged", "domain": 0, "shift": "labels", "data_shard": "1/3"},
        {"group": "merged", "domain": 1, "shift": "labels", "data_shard": "0/3"},
        {"group": "merged", "domain": 1, "shift": "labels", "data_shard": "1/3"},
    ]
    settings = {"group_evaluation_interval": 3600.0}  # splitting alone, no migration moves
    async with learning_network([{**c, **settings} for c in configs]) as (_, *nodes):
        await wait_for(
            lambda: len({n.group.group_id for n in nodes if n.group}) == 2, 60, "the split"
        )

        def domains_by_group() -> list[list[int]]:
            groups: dict[str, set[int]] = {}
            for n in nodes:
                if n.group is not None:
                    groups.setdefault(n.group.group_id, set()).add(n.config.domain)
            return sorted(map(sorted, groups.values()))

        # the followers move right after the founder: wait for every move to land
        await wait_for(
            lambda: domains_by_group() == [[0], [1]] and all(n.group for n in nodes),
            20,
            "two pure groups",
        )
