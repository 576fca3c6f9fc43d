"""A newcomer caps the model a leader's join reply may carry (its own model's size, in a node:
``membership.model_cap``): a stranger it joins cannot make it read more."""

from __future__ import annotations

import pytest

from mycelium_p2p.group.member import GroupMember, JoinRefused
from mycelium_p2p.group.state import ModelSnapshot
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import simulated
from tests.helpers.groups import SLOW, Peer, group_of


async def _join(newcomer: Peer, founder: Peer, max_model: int) -> GroupMember:
    assert founder.group is not None
    return await GroupMember.join_group(
        newcomer.identity,
        newcomer.channels,
        newcomer.addr,
        group_id=founder.group.group_id,
        leader_addr=founder.addr,
        leader_key=founder.identity.public_key,
        config=SLOW,
        max_model=max_model,
    )


@simulated(timeout=30)
async def test_a_join_reply_over_the_newcomers_cap_is_refused_unread(streams: SimStreams) -> None:
    async with group_of(streams, 0) as (founder,):
        leader = founder.group
        assert leader is not None
        assert await leader.commit(ModelSnapshot.of(1, {"w": 1}, [bytes(200_000)]))
        newcomer = await Peer(streams).listen()
        try:
            with pytest.raises(JoinRefused, match="cannot reach the group's leader"):
                await _join(newcomer, founder, max_model=100_000)
            joined = await _join(newcomer, founder, max_model=300_000)
            assert joined.model.round == 1 and joined.max_model == 300_000
        finally:
            await newcomer.close()
