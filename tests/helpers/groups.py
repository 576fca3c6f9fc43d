"""Groups for tests: a charter founded by a given identity; peers with a group each on a
simulated network (``Peer``, ``group_of``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mycelium_p2p.group.member import GroupMember
from mycelium_p2p.group.state import GroupConfig, GroupInfo
from mycelium_p2p.group.transport import Channel, ChannelServer, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.records.charter import GroupCharter
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import wait_for

SLOW = GroupConfig(heartbeat_interval=20.0, request_timeout=2.0)  # no heartbeat in a test
FAST = GroupConfig(heartbeat_interval=0.2, request_timeout=1.0)


def info_for(
    founder: Identity, name: str = "g", policy: str = "open", capacity: int = 10
) -> GroupInfo:
    """A new group's facts, founded by ``founder`` (who alone may ``found()`` it)."""
    charter = GroupCharter.found(
        founder, name=name, task="digits", policy=policy, capacity=capacity, now=time.time()
    )
    return GroupInfo(charter)


class Peer:
    """One node's channel server on its own simulated host, routing ``g.*`` requests to its
    group."""

    def __init__(self, streams: SimStreams) -> None:
        # keys from the network's seed: a seed makes the same candidates' order again
        self.identity = Identity.from_seed(streams.network.rng.randbytes(32))
        self.group: GroupMember | None = None
        self.channels = ChannelServer(self.identity, self._handle, streams=streams.host())
        self.addr = ("0.0.0.0", 0)

    async def _handle(
        self, channel: Channel, method: str, header: dict[str, Any], segments: list[bytes]
    ) -> Reply:
        if self.group is None:
            return Reply.fail("no-group", "not in a group")
        return await self.group.handle(channel, method, header, segments)

    async def listen(self) -> Peer:
        self.addr = await self.channels.listen("0.0.0.0", 0)
        return self

    async def join(self, founder: Peer, config: GroupConfig) -> GroupMember:
        assert founder.group is not None
        self.group = await GroupMember.join_group(
            self.identity,
            self.channels,
            self.addr,
            group_id=founder.group.group_id,
            leader_addr=founder.addr,
            leader_key=founder.identity.public_key,
            config=config,
        )
        return self.group

    async def close(self) -> None:
        if self.group is not None:
            await self.group.close()
        await self.channels.close()


@asynccontextmanager
async def group_of(
    streams: SimStreams, members: int, config: GroupConfig = SLOW
) -> AsyncIterator[list[Peer]]:
    """A founder and ``members`` joiners, all admitted within a few simulated milliseconds."""
    peers = [await Peer(streams).listen() for _ in range(members + 1)]
    founder = peers[0]
    info = info_for(founder.identity)
    founder.group = GroupMember(founder.identity, founder.channels, info, founder.addr, config)
    founder.group.found()
    try:
        for peer in peers[1:]:
            await peer.join(founder, config)
        yield peers
    finally:
        for peer in peers:
            await peer.close()


def roster_of(peer: Peer) -> set[bytes]:
    assert peer.group is not None
    return set(peer.group.roster)


def lose(member: GroupMember, methods: set[str] | None = None) -> Callable[[], None]:
    """Requests of these methods (None: all) never reach ``member`` (it was cut off, or frozen,
    when they came), until the function returned is called."""
    handle = member.handle

    async def lossy(channel: Channel, method: str, header: dict[str, Any], segs: list) -> Reply:
        if methods is None or method in methods:
            return Reply.fail("lost", "the test dropped it")
        return await handle(channel, method, header, segs)

    member.handle = lossy  # type: ignore[method-assign]
    return lambda: setattr(member, "handle", handle)


async def in_step(peers: list[Peer]) -> list[GroupMember]:
    """The peers' groups, once every member holds the whole roster and the leader (the first)
    counts every member's acknowledgement."""
    groups = [p.group for p in peers if p.group is not None]
    assert len(groups) == len(peers)
    everyone = {g.me for g in groups}
    await wait_for(lambda: all(set(g.roster) == everyone for g in groups), 5, "rosters")
    await wait_for(lambda: all(m.confirmed for m in groups[0].roster.values()), 5, "confirmed")
    return groups


def leaders_of_term(groups: list[GroupMember], term: int) -> list[GroupMember]:
    return [g for g in groups if g.is_leader and g.term == term]
