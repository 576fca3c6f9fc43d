"""The node's split check: the backoff after a split outlives the leader's stint; a split's
orders (and a merge's) take off the roster only the members that obeyed them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np

from mycelium_p2p.group.member import GroupMember
from mycelium_p2p.group.transport import Channel, Reply
from mycelium_p2p.node.config import NodeConfig
from mycelium_p2p.node.merging import Merger
from mycelium_p2p.node.splitting import Splitter
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import simulated, wait_for
from tests.helpers.groups import FAST, Peer, group_of, in_step, leaders_of_term, lose


def updates(directions: list[int], seed: int) -> dict[bytes, np.ndarray]:
    """Members' updates along the given axes, with a little noise."""
    rng = np.random.default_rng(seed)
    return {
        bytes([i]): np.eye(50)[d] + 0.04 * rng.normal(size=50) for i, d in enumerate(directions)
    }


def test_a_new_stint_as_leader_keeps_the_groups_recent_splits() -> None:
    """A leader that steps down and wins again (or a new leader on this node) must not start
    the split backoff from zero: that would let a ping-pong go on across elections."""
    group = SimpleNamespace(group_id="g" * 16, is_leader=True)
    spawned: list[Any] = []

    def spawn(coro: Any, name: str = "") -> None:
        coro.close()
        spawned.append(name)

    membership = SimpleNamespace(group=group)
    none: Any = None
    splitter = Splitter(
        bytes([0]),
        NodeConfig(),  # splits
        membership,  # type: ignore[arg-type]
        none,
        lambda *a, **k: None,
        SimpleNamespace(spawn=spawn),  # type: ignore[arg-type]
        none,
    )

    def rounds_to_split(stint: Any) -> int:
        before = len(spawned)
        for n in range(1, 50):
            stint(updates([0, 0, 1, 1], seed=n), None)
            if len(spawned) > before:
                return n
        raise AssertionError("never split")

    assert rounds_to_split(splitter.check(group)) == 3
    assert rounds_to_split(splitter.check(group)) == 6  # a new stint
    other = SimpleNamespace(group_id="h" * 16, is_leader=True)
    membership.group = other
    assert rounds_to_split(splitter.check(other)) == 3  # another group


def obey_splits(peer: Peer, *, founds: str | None = None) -> None:
    """``peer`` obeys ``n.split`` as a node does: it leaves its group (and votes in it no
    more), and answers, as founder, where the group it founded is (``founds``: its id)."""
    group = peer.group
    assert group is not None
    handle = group.handle

    async def obeying(channel: Channel, method: str, header: dict[str, Any], segs: list) -> Reply:
        if method != "n.split":
            return await handle(channel, method, header, segs)
        peer.group = None
        await group.close()
        if founds is None:
            return Reply({})
        return Reply({"group_id": founds, "addr": list(peer.addr)})

    group.handle = obeying  # type: ignore[method-assign]


def splitter_of(leader: GroupMember) -> Splitter:
    none: Any = None
    membership: Any = SimpleNamespace(moves=[])
    return Splitter(leader.me, NodeConfig(), membership, none, lambda *a, **k: None, none, none)


@simulated(timeout=30)
async def test_members_the_split_order_did_not_reach_stay_on_the_roster(
    streams: SimStreams,
) -> None:
    # {L, A, F, U, V, W}: a split sends F, U, V and W off. F founds their group (it left);
    # the orders to U, V and W are lost, yet L took all four off its roster: {L, A}, which
    # reaches A. U, V and W never heard of it: they still follow L on {L, A, F, U, V, W}.
    # L freezes: A wins term 2 alone (1 of {A}), and U wins term 2 too with V and W (3 of
    # {A, F, U, V, W}). Four members off at once, and the three that never left still vote:
    # rosters four changes apart. Only the members that obeyed leave the roster.
    async with group_of(streams, 5, FAST) as peers:
        leader, *members = await in_step(peers)
        a, *leaving = sorted(members, key=lambda g: g.me)
        f, *missed = leaving  # the founder is the first of them
        peer_of = {p.identity.public_key: p for p in peers}
        obey_splits(peer_of[f.me], founds="f" * 16)
        for member in missed:
            lose(member, {"n.split"})

        await splitter_of(leader).split(leader, {g.me for g in leaving}, leader.model)
        assert f.me not in leader.roster
        await wait_for(lambda: set(a.roster) == set(leader.roster), 5, "the push to A")

        streams.kill(peers[0].addr[0])  # L freezes: every lease lapses
        for member in (a, *missed):
            member.seat.lease_until = 0.0
        await a.elections.elect()
        await min(missed, key=lambda g: g.me).elections.elect()
        assert len(leaders_of_term([a, *missed], 2)) == 1  # was: A and U
        assert {g.me for g in missed} <= set(leader.roster)


@simulated(timeout=30)
async def test_members_the_merge_order_did_not_reach_elect_a_leader_of_their_own(
    streams: SimStreams,
) -> None:
    # {L, J, K, U}: L merges its group into another; J and K obey, the order to U is lost.
    # L took all three off its roster and left, telling nobody: U, on {L, J, K, U}, could
    # never win (1 of {J, K, U}) and waited out its stall timeout. It stays on the roster
    # instead, and L's leaving hands it the roster of those that stay (``g.resign``).
    async with group_of(streams, 3, FAST) as peers:
        leader, *members = await in_step(peers)
        u, *obeying = members
        peer_of = {p.identity.public_key: p for p in peers}
        for member in obeying:
            obey_splits(peer_of[member.me])
        lose(u, {"n.split"})

        async def move(target: Any, reason: str, *, chosen: bool) -> None:
            await leader.close()  # as Membership.leave does
            await leader.leave()

        none: Any = None
        membership: Any = SimpleNamespace(change=asyncio.Lock(), group=leader)
        mover: Any = SimpleNamespace(move=move)
        merger = Merger(
            leader.me, NodeConfig(), membership, mover, none, none, none, lambda *a, **k: None, none
        )
        target: Any = SimpleNamespace(
            name="t", group_id="t" * 16, leader=("10.9.9.9", 9), leader_key=bytes(32)
        )
        await merger._merge_into(leader, target, "a test")
        assert set(leader.roster) == {leader.me, u.me}  # was: L alone

        u.seat.lease_until = 0.0  # L is gone
        await u.elections.elect()
        assert u.is_leader and u.term == 2  # was: not leader (J and K left)
