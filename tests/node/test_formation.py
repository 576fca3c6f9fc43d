"""Groups that form and consolidate: nodes started together end in one group; groups of one
task merge into the larger one only where its model serves them as well."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from mycelium_p2p.dht import fetch_advert
from mycelium_p2p.migration.consolidation import MergeConfig, MergePolicy
from mycelium_p2p.node import merging
from mycelium_p2p.node.membership import Membership, Origin
from mycelium_p2p.records import index_topic
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network


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
        # every node in a group (one that is moving has none for a moment), and one group
        await wait_for(
            lambda: all(n.group is not None for n in nodes) and len(groups_of(nodes)) == 1,
            120,
            "one group",
        )
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
        ended = (small.group.group_id, small.group.cert.term)
        # between leaving its group and joining the big one, `small.group` is briefly None
        await wait_for(
            lambda: small.group is not None and small.group.group_id == big.group.group_id,
            120,
            "the merge",
        )
        assert [e for e in events if e.kind == "merge"], "the small group's leader merged it"
        await wait_for(lambda: len(big.group.roster) == 3, 30, "all three in the big group")
        # it led its group alone and left it: adverts it signs in that shard say so
        same_shard = next(
            gid
            for gid in (f"{i:016x}" for i in range(1000))
            if index_topic(gid) == index_topic(ended[0])
        )
        assert small.publisher.ended_in_shard(same_shard) == [ended]
        assert small.publisher.ended_in_shard(ended[0]) == []  # never about the group advertised


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

    @dataclass
    class Watched(MergePolicy):  # measures the upright group at every check
        config: MergeConfig = field(default_factory=lambda: MergeConfig(recheck_after=0.0))

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


@run_async(timeout=240)
async def test_a_larger_group_of_other_data_does_not_hide_a_smaller_one_of_ours() -> None:
    """Two rotated groups of one node each and an upright group of two, all with room: the
    upright group outranks both, serves them badly, and is measured first; the rotated group
    that is outranked still merges into the other rotated one (found by measuring on)."""
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "upright", "domain": 0, "data_shard": "0/2", **common},
        {"group": "upright", "domain": 0, "data_shard": "1/2", **common},
        {"create": "rotated-a", "domain": 1, "data_shard": "0/2", **common},
        {"create": "rotated-b", "domain": 1, "data_shard": "1/2", **common},
    ]
    events: list[Any] = []
    async with learning_network(configs) as (_, a, b, ra, rb):
        upright = a.group.group_id
        for node in (a, b, ra, rb):
            node.on_event = events.append
        await wait_for(
            lambda: (
                ra.group is not None
                and rb.group is not None
                and ra.group.group_id == rb.group.group_id
            ),
            180,
            "the rotated groups merged",
        )
        assert a.group.group_id == b.group.group_id == upright
        assert len(a.group.roster) == 2  # nobody merged into the group of other data
    merges = [e for e in events if e.kind == "merge"]
    assert merges and all("rotated" in e.text.split(" into ")[1] for e in merges), merges


class NeverMerge(MergePolicy):
    """Measurements that never allow a merge: only a return to the group left can move."""

    def decide(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return False, "never (test)"


@run_async(timeout=180)
async def test_a_group_founded_after_a_regroup_goes_back_to_the_group_it_left() -> None:
    """A node that could reach no leader of its group founded one of its own (as on the small
    side of a partition); once the group it left answers again, its group goes back into it,
    without the measurements a merge with a stranger waits for (here they never allow one)."""
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "home", "data_shard": "0/3", **common},
        {"group": "home", "data_shard": "1/3", **common},
        {"create": "cut-off", "data_shard": "2/3", **common},
    ]
    events: list[Any] = []
    with mock.patch("mycelium_p2p.node.merging.MergePolicy", NeverMerge):
        async with learning_network(configs) as (_, home, _member, cut):
            cut.on_event = events.append
            await wait_for(lambda: len(home.group.roster) == 2, 60, "a home group of two")
            home_id = home.group.group_id
            cut.membership.origin = Origin(
                cut.group.group_id, home_id, time.monotonic(), frozenset(home.group.roster)
            )
            await wait_for(
                lambda: cut.group is not None and cut.group.group_id == home_id, 60, "the return"
            )
            merges = [e for e in events if e.kind == "merge"]
            assert merges and "back to home" in merges[0].text, merges


@run_async(timeout=180)
async def test_a_return_refused_by_a_full_group_keeps_the_model_and_the_way_back() -> None:
    """Adverts lag: the group a founder goes back to may be full by the time it asks.
    Refused, it founds again with the model its group had (not from round 0) and still goes
    back once that group has room."""
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "home", "data_shard": "0/4", "capacity": 3, **common},
        {"group": "home", "data_shard": "1/4", **common},
        {"group": "home", "data_shard": "2/4", **common},
        {"create": "cut-off", "data_shard": "3/4", **common},
    ]
    with mock.patch("mycelium_p2p.node.merging.MergePolicy", NeverMerge):
        async with learning_network(configs) as (_, home, member, _other, cut):
            await wait_for(lambda: len(home.group.roster) == 3, 60, "a full home group")
            await wait_for(lambda: cut.group.model.round >= 3, 60, "rounds while cut off")
            home_id = home.group.group_id
            advert = await fetch_advert(cut.dht, home_id)
            assert advert is not None
            cut.membership.origin = Origin(
                cut.group.group_id, home_id, time.monotonic(), frozenset(home.group.roster)
            )
            rounds = cut.group.model.round
            await cut.mover.move_to(advert, "back to home", chosen=False)
            assert cut.group is not None and cut.group.group_id != home_id
            assert cut.group.model.round >= rounds  # founded with its model, not afresh
            origin = cut.membership.origin
            assert origin is not None
            assert (origin.entered, origin.left) == (cut.group.group_id, home_id)
            await member.stop()  # room at home again, and it still outranks the group of one
            await wait_for(
                lambda: cut.group is not None and cut.group.group_id == home_id, 90, "the return"
            )


@run_async(timeout=180)
async def test_a_group_that_refused_a_return_is_not_asked_again_at_once() -> None:
    """Its advert said it had room (adverts lag) and it refused: the founder does not ask
    again every merge check (re-founding a group each time) before ``REFUSED_BACKOFF``."""
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "home", "data_shard": "0/3", "capacity": 2, **common},
        {"group": "home", "data_shard": "1/3", **common},
        {"create": "cut-off", "data_shard": "2/3", **common},
    ]
    events: list[Any] = []
    with mock.patch("mycelium_p2p.node.merging.MergePolicy", NeverMerge):
        async with learning_network(configs) as (_, home, _member, cut):
            await wait_for(lambda: len(home.group.roster) == 2, 60, "a full home group")
            home_id = home.group.group_id
            real = merging.fetch_advert

            async def lagging(dht: Any, group_id: str) -> Any:  # room for one more, it says
                advert = await real(dht, group_id)
                if advert is None or group_id != home_id:
                    return advert
                metrics = dataclasses.replace(advert.metrics, capacity=3)
                return dataclasses.replace(advert, metrics=metrics)

            cut.on_event = events.append
            with mock.patch.object(merging, "fetch_advert", lagging):
                cut.membership.origin = Origin(
                    cut.group.group_id, home_id, time.monotonic(), frozenset(home.group.roster)
                )
                await asyncio.sleep(0.8 * merging.REFUSED_BACKOFF)
            refused = [e for e in events if "home refused us" in e.text]
            assert len(refused) == 1, [e.text for e in events]
            assert cut.membership.origin is not None  # still on its way back


@run_async(timeout=120)
async def test_a_group_whose_origin_is_gone_stays_where_it_is() -> None:
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "home", "data_shard": "0/2", **common},
        {"create": "cut-off", "data_shard": "1/2", **common},
    ]
    with mock.patch("mycelium_p2p.node.merging.MergePolicy", NeverMerge):
        async with learning_network(configs) as (_, home, cut):
            own = cut.group.group_id
            unadvertised = Origin(own, "0" * 16, time.monotonic(), frozenset())
            cut.membership.origin = unadvertised
            await asyncio.sleep(6 * cut.config.group.merge_interval)
            assert cut.group is not None and cut.group.group_id == own
            assert home.group is not None and len(home.group.roster) == 1


@run_async(timeout=180)
async def test_a_member_that_regrouped_into_another_group_goes_back_alone() -> None:
    """A node that regrouped and joined a group founded on its side of the cut (maybe another
    domain's) goes back to the group it left on its own once that group answers; the group it
    sat in stays (its leader left nothing)."""
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "home", "data_shard": "0/3", **common},
        {"create": "elsewhere", "data_shard": "1/3", **common},
        {"group": "elsewhere", "data_shard": "2/3", **common},
    ]
    events: list[Any] = []
    with mock.patch("mycelium_p2p.node.merging.MergePolicy", NeverMerge):
        async with learning_network(configs) as (_, home, other, member):
            member.on_event = events.append
            await wait_for(lambda: len(other.group.roster) == 2, 60, "a group of two elsewhere")
            home_id, other_id = home.group.group_id, other.group.group_id
            member.membership.origin = Origin(
                other_id, home_id, time.monotonic(), frozenset(home.group.roster)
            )
            await wait_for(
                lambda: member.group is not None and member.group.group_id == home_id,
                60,
                "the return",
            )
            moves = [e for e in events if e.kind == "moving"]
            assert moves and "back to home" in moves[0].text, moves
            assert other.group is not None and other.group.group_id == other_id
            assert member.membership.origin is None


@run_async(timeout=180)
async def test_a_return_follows_only_a_leader_from_the_roster_it_left() -> None:
    """An advert of a newer term with a made-up certificate is anyone's to publish: a node
    goes back only to a leader that was a member of the group when it left."""
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "home", "data_shard": "0/3", **common},
        {"create": "elsewhere", "data_shard": "1/3", **common},
        {"group": "elsewhere", "data_shard": "2/3", **common},
    ]
    with mock.patch("mycelium_p2p.node.merging.MergePolicy", NeverMerge):
        async with learning_network(configs) as (_, home, other, member):
            await wait_for(lambda: len(other.group.roster) == 2, 60, "a group of two elsewhere")
            other_id = other.group.group_id
            strangers = frozenset({bytes(32)})  # home's leader was never in it
            member.membership.origin = Origin(
                other_id, home.group.group_id, time.monotonic(), strangers
            )
            await asyncio.sleep(6 * member.config.group.merge_interval)
            assert member.group is not None and member.group.group_id == other_id


def test_a_regroup_remembers_the_group_left_unless_it_went_back_into_it() -> None:
    import random
    from types import SimpleNamespace

    from mycelium_p2p.node.config import NodeConfig
    from mycelium_p2p.node.membership import GroupHooks

    none: Any = None
    membership = Membership(
        none, NodeConfig(), none, none, none, lambda *a, **k: None, GroupHooks(), random.Random(0)
    )
    membership.group = SimpleNamespace(group_id="b" * 16)  # type: ignore[assignment]
    roster = frozenset({b"k" * 32})
    membership.remember_origin(("a" * 16, roster))
    origin = membership.origin
    assert origin is not None
    assert (origin.entered, origin.left, origin.roster) == ("b" * 16, "a" * 16, roster)
    membership.remember_origin(("b" * 16, roster))  # joined the very group it left
    assert membership.origin is None
    membership.remember_origin(None)
    assert membership.origin is None


def test_a_split_or_merge_order_takes_the_way_back_along_a_chosen_move_drops_it() -> None:
    """Split off the group we regrouped into (or merged on with it), we still go back to the
    group we left when cut off; a move we chose ourselves ends that."""
    import random
    from types import SimpleNamespace

    from mycelium_p2p.node.config import NodeConfig
    from mycelium_p2p.node.membership import GroupHooks

    none: Any = None
    membership = Membership(
        none, NodeConfig(), none, none, none, lambda *a, **k: None, GroupHooks(), random.Random(0)
    )
    membership.group = SimpleNamespace(group_id="b" * 16)  # type: ignore[assignment]
    roster = frozenset({b"k" * 32})
    membership.remember_origin(("a" * 16, roster))
    membership.moved("b" * 16, "c" * 16, chosen=False)  # split off into a new group
    origin = membership.origin
    assert origin is not None and (origin.entered, origin.left) == ("c" * 16, "a" * 16)
    membership.moved("x" * 16, "d" * 16, chosen=False)  # not from where the way back starts
    assert membership.origin is origin
    membership.moved("c" * 16, "d" * 16, chosen=True)
    assert membership.origin is None
    membership.remember_origin(("a" * 16, roster))
    membership.moved("b" * 16, "a" * 16, chosen=False)  # a merge order took us back home
    assert membership.origin is None  # nothing left to go back to (no move from a to a)
    assert [m[1:] for m in membership.moves] == [
        ("b" * 16, "c" * 16),
        ("x" * 16, "d" * 16),
        ("c" * 16, "d" * 16),
        ("b" * 16, "a" * 16),
    ]


def test_a_measured_group_that_serves_our_data_clearly_worse_goes_last() -> None:
    from mycelium_p2p.node.choosing import rank_measured
    from mycelium_p2p.records import GroupAdvert, GroupMetrics

    def advert(gid: str) -> GroupAdvert:
        return GroupAdvert(
            gid, gid, "digits", ("127.0.0.1", 1), bytes(32), 1, "open", GroupMetrics()
        )

    big, mid, small = advert("b" * 16), advert("m" * 16), advert("s" * 16)
    ranked = [big, mid, small]  # the neutral order: most members first
    assert rank_measured(ranked, {}, 0.05) == ranked  # nothing measured
    # big serves us clearly worse than small; mid was not measured: it keeps its place
    assert rank_measured(ranked, {big.group_id: 0.3, small.group_id: 0.9}, 0.05) == [
        mid,
        small,
        big,
    ]
    # within the threshold of the best: the order stays (an unmeasured group keeps its place)
    assert rank_measured(ranked, {big.group_id: 0.88, small.group_id: 0.9}, 0.05) == ranked
    # after a regroup, against the model we bring along (0.9): what serves us clearly worse
    # is left out, what comes within the threshold and what was not measured stay
    scores = {big.group_id: 0.3, small.group_id: 0.86}
    assert rank_measured(ranked, scores, 0.05, own=0.9) == [mid, small]
    assert rank_measured(ranked, scores, 0.05, own=0.95) == [mid]
    assert rank_measured(ranked, {}, 0.05, own=0.9) == ranked


@run_async(timeout=180)
async def test_a_new_node_joins_the_smaller_group_whose_model_serves_its_data() -> None:
    """Entering, a node measures the candidates' models on its own data and passes over a
    larger group that serves it clearly worse (rotated digits against upright ones)."""
    quiet = {"migrate": False, "split": False, "merge": False}
    configs = [
        {"create": "upright", "domain": 0, "data_shard": "0/4", **quiet},
        {"group": "upright", "domain": 0, "data_shard": "1/4", **quiet},
        {"create": "sideways", "domain": 1, "data_shard": "0/4", **quiet},
    ]
    async with learning_network(configs) as (seed, *nodes):
        await wait_for(lambda: all(len(n.rounds) >= 15 for n in (nodes[0], nodes[2])), 90, "rounds")
        from mycelium_p2p.node.node import Node, NodeConfig
        from mycelium_p2p.testing.loopback import FAST

        config = NodeConfig.from_flat(
            bootstrap=[seed.address],
            host="127.0.0.1",
            dht=FAST,
            heartbeat_interval=0.3,
            domain=1,
            data_shard="1/4",
            **quiet,
        )
        newcomer = Node(config)
        await newcomer.start()
        try:
            assert newcomer.group is not None and newcomer.group.info.name == "sideways"
        finally:
            await newcomer.stop()


@run_async(timeout=180)
async def test_a_regrouping_node_founds_with_its_model_rather_than_join_a_worse_group() -> None:
    """A node whose group is gone (a regroup: it brings the group's model along) does not
    join a group that serves its data clearly worse than that model (rotated digits against
    upright ones): it founds one with its model, where others of its data can find it,
    rather than fill a slot of another data domain's group."""
    quiet = {"migrate": False, "split": False, "merge": False}
    configs = [
        {"create": "upright", "domain": 0, "data_shard": "0/4", **quiet},
        {"group": "upright", "domain": 0, "data_shard": "1/4", **quiet},
        {"create": "sideways", "domain": 1, "data_shard": "0/4", **quiet},
    ]
    async with learning_network(configs) as (_, upright, _member, sideways):
        await wait_for(lambda: all(len(n.rounds) >= 15 for n in (upright, sideways)), 90, "rounds")
        old = sideways.group
        model = old.model
        async with sideways.membership.change:  # as a regroup does (moving.watch_group)
            await sideways.membership.leave()
            await sideways.membership.enter(
                as_configured=False, model=model, origin=(old.group_id, frozenset(old.roster))
            )
        group = sideways.group
        assert group is not None and group.group_id not in (old.group_id, upright.group.group_id)
        assert group.is_leader and group.model.digest == model.digest  # founded with its model


@run_async(timeout=180)
async def test_a_group_found_on_looking_again_is_measured_against_the_model_we_bring() -> None:
    """A regrouping node that could reach none of the groups it knew waits a moment and looks
    again; a group that appeared meanwhile is measured like the others were, and one that
    serves its data clearly worse than its model is not joined (it was, unmeasured)."""
    from mycelium_p2p.dht import fetch_adverts
    from mycelium_p2p.records import GroupAdvert, GroupMetrics

    quiet = {"migrate": False, "split": False, "merge": False}
    configs = [
        {"create": "upright", "domain": 0, "data_shard": "0/4", **quiet},
        {"group": "upright", "domain": 0, "data_shard": "1/4", **quiet},
        {"create": "sideways", "domain": 1, "data_shard": "0/4", **quiet},
    ]
    async with learning_network(configs) as (_, upright, _member, sideways):
        await wait_for(lambda: all(len(n.rounds) >= 15 for n in (upright, sideways)), 90, "rounds")
        task = sideways.config.task
        real = [a for a in await fetch_adverts(sideways.dht, task) if a.name == "upright"]
        assert real
        gone = GroupAdvert(  # a group out of reach (its leader's port is closed)
            "d" * 16, "gone", task, ("127.0.0.1", 9), bytes(32), 1, "open",
            GroupMetrics(members=2, capacity=10),
        )  # fmt: skip
        looks: list[str] = []

        async def adverts(dht: Any, topic: str) -> list[GroupAdvert]:
            looks.append(topic)
            return [gone] if len(looks) == 1 else [gone, *real]

        old = sideways.group
        model = old.model
        with mock.patch("mycelium_p2p.node.membership.fetch_adverts", adverts):
            async with sideways.membership.change:  # as a regroup does (moving.watch_group)
                await sideways.membership.leave()
                await sideways.membership.enter(
                    as_configured=False, model=model, origin=(old.group_id, frozenset(old.roster))
                )
        assert len(looks) >= 2, "it looked again after the refusal"
        group = sideways.group
        assert group is not None and group.group_id != real[0].group_id
        assert group.is_leader and group.model.digest == model.digest  # founded with its model


def test_a_candidates_model_may_hold_twice_our_own_and_a_mebibyte() -> None:
    import numpy as np
    from flwr.app import Array, ArrayRecord

    from mycelium_p2p.node.choosing import model_cap

    ours = ArrayRecord({"w": Array(np.zeros((64, 10), np.float32)), "b": Array(np.zeros(10))})
    raw = 64 * 10 * 4 + 10 * 8  # the arrays' bytes; each also carries a small .npy header
    assert 2 * raw + 2**20 <= model_cap(ours) <= 2 * (raw + 2 * 256) + 2**20
