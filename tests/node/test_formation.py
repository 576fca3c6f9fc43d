"""Groups that form and consolidate: nodes started together end in one group; groups of one
task merge into the larger one only where its model serves them as well."""

from __future__ import annotations

from typing import Any
from unittest import mock

from mycelium_p2p.migration.consolidation import MergePolicy
from tests.conftest import learning_network, run_async, wait_for


def groups_of(nodes: list[Any]) -> set[str]:
    return {n.group.group_id for n in nodes if n.group is not None}


@run_async(timeout=180)
async def test_nodes_started_together_end_in_one_group() -> None:
    """Four nodes of one task and one domain, started at the same moment, with room for all
    in one group: founders that raced each other merge into the larger group."""
    configs = [
        {"data_shard": f"{i}/4", "migrate": False, "split": False, "capacity": 10} for i in range(4)
    ]
    async with learning_network(configs, together=True) as (_, *nodes):
        await wait_for(lambda: len(groups_of(nodes)) == 1, 120, "one group")
        assert len(groups_of(nodes)) == 1
        leaders = [n for n in nodes if n.group.is_leader]
        assert len(leaders) == 1
        await wait_for(lambda: len(leaders[0].group.roster) == 4, 30, "a roster of four")


@run_async(timeout=180)
async def test_a_smaller_group_merges_into_a_larger_one_with_the_same_data() -> None:
    configs = [
        {"create": "big", "data_shard": "0/3", "migrate": False, "split": False},
        {"group": "big", "data_shard": "1/3", "migrate": False, "split": False},
        {"create": "small", "data_shard": "2/3", "migrate": False, "split": False},
    ]
    events: list[Any] = []
    async with learning_network(configs) as (_, big, _member, small):
        small.on_event = events.append
        # between leaving its group and joining the big one, `small.group` is briefly None
        await wait_for(
            lambda: small.group is not None and small.group.group_id == big.group.group_id,
            120,
            "the merge",
        )
        assert [e for e in events if e.kind == "merge"], "the small group's leader merged it"
        await wait_for(lambda: len(big.group.roster) == 3, 30, "all three in the big group")


@run_async(timeout=240)
async def test_groups_whose_data_differ_do_not_merge() -> None:
    """A group of upright digits and one of digits rotated 90 degrees: each model serves the
    other group's data badly, so neither merges however long they train side by side."""
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "upright", "domain": 0, "data_shard": "0/2", **common},
        {"group": "upright", "domain": 0, "data_shard": "1/2", **common},
        {"create": "rotated", "domain": 1, "data_shard": "0/1", **common},
    ]
    events: list[Any] = []
    decisions: list[tuple[bool, str]] = []

    class Watched(MergePolicy):
        def decide(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
            decisions.append(super().decide(*args, **kwargs))
            return decisions[-1]

    with mock.patch("mycelium_p2p.node.merging.MergePolicy", Watched):
        async with learning_network(configs) as (_, a, b, rotated):
            for node in (a, b, rotated):
                node.on_event = events.append
            # the rotated group (1 member) checks whether to merge into the upright one (2)
            await wait_for(
                lambda: sum("worse" in why for _, why in decisions) >= 5, 150, "5 measured checks"
            )
            assert len(groups_of([a, b, rotated])) == 2
    assert not [e for e in events if e.kind == "merge"]
    assert not any(merge for merge, _ in decisions), decisions
