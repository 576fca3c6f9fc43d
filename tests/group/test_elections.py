"""Standing for election over the network: a candidate that holds a majority does not wait
for voters that are cut off."""

from __future__ import annotations

import asyncio
from typing import Any

from mycelium_p2p.group import messages as m
from mycelium_p2p.group.member import GroupMember
from mycelium_p2p.group.state import GroupConfig, Member
from mycelium_p2p.identity import Identity
from mycelium_p2p.records.leadership import majority, sign_vote
from mycelium_p2p.testing.aio import run_async
from tests.helpers.groups import info_for


@run_async(timeout=30)
async def test_a_candidate_with_a_majority_does_not_wait_for_cut_off_voters() -> None:
    """The leader is gone and two of the five other members are cut off (their requests hang
    as a dropped SYN does). The three that answer make a majority of six with our own vote:
    we lead at once and drop the two requests, instead of waiting half a request timeout."""
    people = sorted((Identity.generate() for _ in range(7)), key=lambda i: i.public_key)
    me, answering, cut_off, old_leader = people[0], people[1:4], people[4:6], people[6]
    config = GroupConfig(heartbeat_interval=0.2, request_timeout=60.0)  # 30 s per vote asked
    group = GroupMember(me, None, info_for(old_leader), ("127.0.0.1", 1), config)
    for i, person in enumerate(people[1:], start=2):
        group.roster[person.public_key] = Member(person.public_key, ("127.0.0.1", i))
    group.seat.leader_key = old_leader.public_key  # whose lease has lapsed (seat.lease_until = 0)

    by_key = {p.public_key: p for p in people}
    hung: list[bytes] = []
    dropped: list[bytes] = []

    async def request(
        key: bytes, addr: Any, method: str, header: dict[str, Any], *a: Any, **k: Any
    ) -> Any:
        if method != "g.vote":
            return {}, []
        if key in {p.public_key for p in cut_off}:
            hung.append(key)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                dropped.append(key)
                raise
        vote = sign_vote(by_key[key], group.group_id, header["term"], me.public_key)
        return m.wire(m.VoteReply(granted=True, term=header["term"], vote=vote)), []

    group.link.request = request  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(group.elections.elect(), timeout=10.0)
        assert group.is_leader and group.term == 1
        assert group.cert is not None
        voters = {key for key, _ in group.cert.votes}
        assert voters == {me.public_key, *(p.public_key for p in answering)}
        assert len(voters) >= majority(6)
        assert sorted(hung) == sorted(dropped) == sorted(p.public_key for p in cut_off)
    finally:
        await group.tasks.close()


@run_async(timeout=30)
async def test_without_a_majority_a_candidate_still_hears_every_voter_out() -> None:
    """Two of five answer: no majority of six. The candidacy fails once every request has
    ended (here: the cut-off ones time out), not before."""
    people = sorted((Identity.generate() for _ in range(7)), key=lambda i: i.public_key)
    me, answering, old_leader = people[0], people[1:3], people[6]
    config = GroupConfig(heartbeat_interval=0.0, request_timeout=0.6)  # no back-off sleep
    group = GroupMember(me, None, info_for(old_leader), ("127.0.0.1", 1), config)
    for i, person in enumerate(people[1:], start=2):
        group.roster[person.public_key] = Member(person.public_key, ("127.0.0.1", i))
    group.seat.leader_key = old_leader.public_key
    by_key = {p.public_key: p for p in people}
    ended: list[bytes] = []

    async def request(
        key: bytes, addr: Any, method: str, header: dict[str, Any], *a: Any, **k: Any
    ) -> Any:
        try:
            if key not in {p.public_key for p in answering}:
                await asyncio.sleep(k["timeout"])
                raise TimeoutError("no answer")
            vote = sign_vote(by_key[key], group.group_id, header["term"], me.public_key)
            return m.wire(m.VoteReply(granted=True, term=header["term"], vote=vote)), []
        finally:
            ended.append(key)

    group.link.request = request  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(group.elections.elect(), timeout=10.0)
        assert not group.is_leader
        assert len(ended) == 5  # every voter was heard out
    finally:
        await group.tasks.close()
