"""Groups with their loops running on a simulated LAN, cut apart and healed, in virtual time:
the minutes a partition takes cost milliseconds, and a seed makes the same run."""

from __future__ import annotations

import asyncio

from mycelium_p2p.group.state import GroupConfig
from mycelium_p2p.testing import SimNetwork, SimStreams, run
from mycelium_p2p.testing.aio import simulated, wait_for
from tests.helpers.groups import Peer, group_of

LIVE = GroupConfig(heartbeat_interval=1.0, request_timeout=2.0)  # as nodes run (the default)


def leaders(peers: list[Peer]) -> list[Peer]:
    return [p for p in peers if p.group is not None and p.group.is_leader]


async def _cut_and_heal(streams: SimStreams, cut_for: float) -> list[tuple[str, int]]:
    """A group of five whose leader and one member are cut off from the other three for
    ``cut_for`` s; what happened, as (who leads, term) at each step."""
    async with group_of(streams, 4, LIVE) as peers:
        for peer in peers[1:]:
            assert peer.group is not None
            peer.group.start()
        founder = peers[0]
        assert founder.group is not None
        founder.group.start()
        await asyncio.sleep(5)
        steps = [(leaders(peers)[0].identity.public_key.hex()[:8], founder.group.term)]
        minority, majority = peers[:2], peers[2:]
        streams.network.partition([p.addr[0] for p in minority])

        # the three elect one of them; the old leader, with one of five, steps down
        took = await wait_for(lambda: len(leaders(majority)) == 1, 30, "a leader of the three")
        await wait_for(lambda: not leaders(minority), 30, "the cut-off leader stepping down")
        (new,) = leaders(majority)
        assert new.group is not None and new.group.term == 2 and took < 10
        steps.append((new.identity.public_key.hex()[:8], new.group.term))
        await asyncio.sleep(max(0.0, cut_for - took))

        streams.network.heal()
        everyone = {p.identity.public_key for p in peers}

        def one_group() -> bool:
            groups = [p.group for p in peers if p.group is not None]
            return (
                len(leaders(peers)) == 1
                and all(
                    g.leader_key == new.identity.public_key for g in groups if g is not new.group
                )
                and all(set(g.roster) == everyone for g in groups)
            )

        await wait_for(one_group, 30, "one group again, with all five")
        steps.append(
            (new.identity.public_key.hex()[:8], max(p.group.term for p in peers if p.group))
        )
        return steps


@simulated(timeout=300, seed=5)
async def test_a_cut_off_leader_gives_way_and_its_side_rejoins_after_the_heal(
    streams: SimStreams,
) -> None:
    steps = await _cut_and_heal(streams, 60.0)
    assert [term for _, term in steps] == [1, 2, 2]  # one election, no term after the heal
    assert streams.stats.connected >= 4


def test_the_three_elect_once_not_twice() -> None:
    """Found on this seam: a member that granted a candidate its vote went on to stand itself
    when its own turn came, in the next term, while that candidate was still counting the
    answers; in 18 of 30 seeds the three elected a leader of term 2 and then of term 3 (each
    new term aborts a round). A vote now holds its voter back a lease's time, as Raft's
    election timer does."""

    async def once(seed: int) -> list[int]:
        streams = SimStreams(SimNetwork(seed=seed))
        try:
            return [term for _, term in await _cut_and_heal(streams, 10.0)]
        finally:
            await streams.close()

    for seed in range(1, 9):
        assert run(once(seed)) == [1, 2, 2], f"seed {seed}"


def test_a_seed_makes_the_same_run() -> None:
    async def once(seed: int) -> tuple[list[tuple[str, int]], float, int]:
        streams = SimStreams(SimNetwork(seed=seed))
        try:
            steps = await _cut_and_heal(streams, 20.0)
            return steps, asyncio.get_running_loop().time(), streams.stats.bytes_relayed
        finally:
            await streams.close()

    first, again, other = run(once(8)), run(once(8)), run(once(9))
    assert first == again
    assert other != first
