"""Roster knowledge across a group: members that joined a moment ago, and a leader leaving.

Real ``GroupMember``s on real channels in this process; heartbeats are slowed down so that
anything the members know came from the roster pushes and the leader's resignation.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from mycelium_p2p.group.member import GroupMember, JoinRefused, StepDown
from mycelium_p2p.group.state import GroupConfig, ModelSnapshot
from mycelium_p2p.group.transport import RemoteError
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import run_async, simulated, wait_for
from tests.helpers.groups import FAST, SLOW, Peer, group_of, info_for, roster_of


@simulated(timeout=30)
async def test_members_learn_of_each_other_at_once_not_at_the_next_heartbeat(
    streams: SimStreams,
) -> None:
    async with group_of(streams, 4) as peers:
        everyone = {p.identity.public_key for p in peers}
        assert roster_of(peers[1]) != everyone  # the first joiner heard of nobody after it
        await wait_for(lambda: all(roster_of(p) == everyone for p in peers), 5, "roster pushes")


@simulated(timeout=60)
async def test_a_leader_leaving_right_after_joins_leaves_exactly_one_successor(
    streams: SimStreams,
) -> None:
    async with group_of(streams, 4) as peers:
        founder, members = peers[0], peers[1:]
        for peer in members:
            assert peer.group is not None
            peer.group.start()
        assert founder.group is not None
        await founder.group.leave()  # at once: before any heartbeat
        await founder.group.close()
        founder.group = None

        def leaders() -> list[GroupMember]:
            return [p.group for p in members if p.group is not None and p.group.is_leader]

        await wait_for(lambda: len(leaders()) >= 1, 30, "a new leader")
        await asyncio.sleep(2.0)  # time for a second, rival election to finish
        (leader,) = leaders()
        assert set(leader.roster) == {p.identity.public_key for p in members}
        terms = {p.group.term for p in members if p.group is not None}
        assert terms == {leader.term}


@simulated(timeout=30)
async def test_a_member_closing_as_its_leader_resigns_does_not_stand_for_election(
    streams: SimStreams,
) -> None:
    config = GroupConfig(heartbeat_interval=0.5, request_timeout=1.0)
    async with group_of(streams, 1, config) as (founder, peer):
        member = peer.group
        assert member is not None and founder.group is not None
        member.start()
        await asyncio.sleep(0.3)  # the loop waits for its next heartbeat
        led: list[int] = []
        member.on_leader = led.append
        await founder.group.close()
        await founder.channels.close()  # the leader is gone: an election would be won alone
        member.seat.leader_lost.set()  # its resignation arrives ...
        await member.close()  # ... in the same moment we shut down
        await asyncio.sleep(2.0)
        assert led == [] and not member.is_leader


@simulated(timeout=30)
async def test_a_malformed_redirect_is_refused_and_changes_nothing(streams: SimStreams) -> None:
    async with group_of(streams, 1) as (founder, peer):
        member = peer.group
        assert member is not None and founder.group is not None
        leader_before, term_before = member.leader_key, member.term
        bad = {"term": term_before, "cert": b"", "addr": ["127.0.0.1", 1], "key": b"short"}
        with pytest.raises(RemoteError, match=r"length >= 32 - at `\$\.key`"):
            await founder.group.link.request(member.me, peer.addr, "g.redirect", bad)
        assert (member.leader_key, member.term) == (leader_before, term_before)


@simulated(timeout=30)
async def test_a_newcomer_the_others_have_not_heard_of_does_not_make_a_majority(
    streams: SimStreams,
) -> None:
    # {leader, M}; N joins, and M is cut off right after acknowledging the leader's term for
    # N's admission, before it hears of N (it may be electing itself: its electorate is M
    # alone). Leader + N would be 2 of 3, but M never learnt of N: that "majority" could
    # coexist with M's. Until a majority of the members known before hears of N, N's ack
    # does not count.
    async with group_of(streams, 1) as (founder, cut_off):
        leader = founder.group
        assert leader is not None
        confirm = leader.upkeep.confirm_quorum

        async def confirm_then_cut() -> bool:
            confirmed = await confirm()
            await cut_off.channels.close()
            return confirmed

        leader.upkeep.confirm_quorum = confirm_then_cut  # type: ignore[method-assign]
        newcomer = await Peer(streams).listen()
        try:
            joined = await newcomer.join(founder, SLOW)
            snapshot = ModelSnapshot.of(leader.model.round + 1, {"w": 1}, [])
            assert not await leader.commit(snapshot)  # acked by the newcomer alone
            assert joined.model.round == snapshot.round  # which did store it
        finally:
            if newcomer.group is not None:
                await newcomer.group.close()
            await newcomer.channels.close()


async def depose(founder: Peer, a: Peer, b: Peer) -> GroupMember:
    """Leader ``founder`` of {founder, a, b} is frozen (SIGSTOP): a and b elect one of them in
    term 2 without it, and both follow the winner, whose roster no longer names the founder.
    Returns the winner."""
    ga, gb = a.group, b.group
    assert ga is not None and gb is not None
    everyone = {p.identity.public_key for p in (founder, a, b)}
    await wait_for(lambda: roster_of(a) == roster_of(b) == everyone, 5, "roster pushes")
    ga.seat.lease_until = gb.seat.lease_until = 0.0  # the leader is frozen: their leases lapse
    winner = min((ga, gb), key=lambda g: g.me)  # the first in the candidates' order
    await winner.elections.elect()
    assert winner.is_leader and winner.term == 2
    voter = ga if winner is gb else gb
    await voter.following.find_leader()  # as its loop does: it follows the winner
    assert voter.leader_key == winner.me and founder.identity.public_key not in voter.roster
    return winner


@simulated(timeout=30)
async def test_a_deposed_leader_learns_the_newer_term_from_members_that_dropped_it(
    streams: SimStreams,
) -> None:
    # The members of term 2 hold the new leader's roster, without the old leader: they refuse
    # its requests as a non-member's, not as a stale term's. Had the old leader heeded only
    # "stale-term", it would never have asked them who leads now, and led on (a fork).
    async with group_of(streams, 2, FAST) as (founder, a, b):
        leader = founder.group
        assert leader is not None
        winner = await depose(founder, a, b)
        snapshot = ModelSnapshot.of(leader.model.round + 1, {"w": 1}, [])
        with pytest.raises(StepDown):
            await leader.commit(snapshot)
        assert not leader.is_leader
        assert (leader.term, leader.leader_key) == (2, winner.me)


@simulated(timeout=30)
async def test_a_deposed_leader_does_not_admit_newcomers_into_a_fork_of_its_own(
    streams: SimStreams,
) -> None:
    # The chaos fork: leader L of {L, A, B} is frozen (SIGSTOP); A and B elect A in term 2
    # without it. When L wakes, the heartbeats A and B sent before the election are waiting
    # in its sockets: they make it look as if a majority still answered. Two newcomers find
    # L through its advert (still naming it) and ask to join. Had L admitted them, A's
    # certificate (votes of A and B) would no longer be a majority of L's roster minus L
    # ({A, B, N1, N2}), so nothing A shows could make L step down, and once A and B fell
    # silent L would drop them on the newcomers' heartbeats and commit rounds of term 1 for
    # good: two models per round. A leader admits only when its roster acknowledges its term
    # now; here A proves term 2 instead, and L follows it.
    async with group_of(streams, 2, FAST) as (founder, a, b):
        leader = founder.group
        assert leader is not None
        winner = await depose(founder, a, b)
        for member in leader.roster.values():  # the stale heartbeats, read as L wakes
            member.last_seen = leader.seat.now()
        newcomers = [await Peer(streams).listen() for _ in range(2)]
        try:
            for newcomer in newcomers:
                with contextlib.suppress(JoinRefused):
                    await newcomer.join(founder, FAST)
            assert set(leader.roster) == {p.identity.public_key for p in (founder, a, b)}
            snapshot = ModelSnapshot.of(leader.model.round + 1, {"w": 1}, [])
            if leader.is_leader:
                with pytest.raises(StepDown):
                    await leader.commit(snapshot)
            assert not leader.is_leader
            assert (leader.term, leader.leader_key) == (2, winner.me)
        finally:
            for newcomer in newcomers:
                if newcomer.group is not None:
                    await newcomer.group.close()
                await newcomer.channels.close()


@simulated(timeout=30)
async def test_a_newcomer_sent_to_a_member_is_pointed_to_the_leader_once(
    streams: SimStreams,
) -> None:
    """An advert a term behind names a member, not the leader: the newcomer asks that member
    who leads (``g.leader``) and joins there, as a user would expect; it follows one hop."""
    async with group_of(streams, 2) as peers:
        founder, member = peers[0], peers[1]
        assert founder.group is not None
        newcomer = await Peer(streams).listen()
        try:
            newcomer.group = await GroupMember.join_group(
                newcomer.identity,
                newcomer.channels,
                newcomer.addr,
                group_id=founder.group.group_id,
                leader_addr=member.addr,  # as the stale advert says
                leader_key=member.identity.public_key,
                config=SLOW,
            )
            assert newcomer.group.leader_key == founder.identity.public_key
            assert newcomer.identity.public_key in roster_of(founder)
        finally:
            if newcomer.group is not None:
                await newcomer.group.close()
            await newcomer.channels.close()


@simulated(timeout=30)
async def test_a_member_that_names_no_leader_leaves_the_refusal_as_it_was(
    streams: SimStreams,
) -> None:
    async with group_of(streams, 1) as peers:
        founder, member = peers[0], peers[1]
        assert founder.group is not None and member.group is not None
        member.group.seat.leader_key = member.group.seat.leader_addr = None  # between two leaders
        newcomer = await Peer(streams).listen()
        try:
            with pytest.raises(JoinRefused) as refused:
                await GroupMember.join_group(
                    newcomer.identity,
                    newcomer.channels,
                    newcomer.addr,
                    group_id=founder.group.group_id,
                    leader_addr=member.addr,
                    leader_key=member.identity.public_key,
                    config=SLOW,
                )
            assert refused.value.code == "not-leader"
        finally:
            await newcomer.channels.close()


@run_async(timeout=30)
async def test_a_redirect_needs_a_leader_claiming_the_group_and_keeps_off_our_own_host() -> None:
    from mycelium_p2p.group import messages as m
    from mycelium_p2p.group.joining import leader_named_by
    from mycelium_p2p.records.leadership import founding_cert

    leader = Identity.generate()
    gid = info_for(leader).group_id
    other_gid = info_for(Identity.generate()).group_id
    refusal = JoinRefused("not the leader", code="not-leader")

    def channels(addr: list[Any], cert: bytes | None) -> Any:
        class Fake:
            async def request(self, *a: Any, **k: Any) -> Any:
                reply = m.LeaderReply(term=1, leader=leader.public_key, addr=addr, cert=cert)
                return m.wire(reply), []

        return Fake()

    good = founding_cert(leader, gid).encode()
    elsewhere = ("198.18.0.5", 8470)
    named = await leader_named_by(
        channels(["198.18.0.9", 8470], good), elsewhere, b"m" * 32, gid, 1.0, refusal
    )
    assert named == (leader.public_key, ("198.18.0.9", 8470))
    for addr, cert in [
        (["198.18.0.9", 8470], None),  # no certificate
        (["198.18.0.9", 8470], founding_cert(leader, other_gid).encode()),  # another group's
        (["127.0.0.1", 22], good),  # a member elsewhere naming our own loopback
    ]:
        with pytest.raises(JoinRefused):
            await leader_named_by(channels(addr, cert), elsewhere, b"m" * 32, gid, 1.0, refusal)
    # on one host (a test network, a demo) loopback is where everyone is
    local = ("127.0.0.1", 9000)
    assert await leader_named_by(
        channels(["127.0.0.1", 9001], good), local, b"m" * 32, gid, 1.0, refusal
    )


@simulated(timeout=30)
async def test_a_leader_on_its_way_out_admits_nobody_new(streams: SimStreams) -> None:
    """Seen in the soak: a leader leaving its group alone announced its end, then admitted a
    newcomer while the announcement went out; the newcomer led the group on, and listings
    showed it ending for 7 s."""
    async with group_of(streams, 0) as peers:
        founder = peers[0]
        assert founder.group is not None
        founder.group.closing = True
        newcomer = await Peer(streams).listen()
        try:
            with pytest.raises(JoinRefused) as refused:
                await newcomer.join(founder, SLOW)
            assert refused.value.code == "closing"
        finally:
            await newcomer.channels.close()


@simulated(timeout=30)
async def test_joiners_arriving_together_are_all_admitted_in_turn(streams: SimStreams) -> None:
    # a leader admits one newcomer at a time, once the one before is known to the others
    # (RosterUpkeep.settled): the ones asking meanwhile wait their turn, they are not refused
    peers = [await Peer(streams).listen() for _ in range(8)]
    founder = peers[0]
    info = info_for(founder.identity)
    founder.group = GroupMember(founder.identity, founder.channels, info, founder.addr, FAST)
    founder.group.found()
    try:
        await asyncio.gather(*(peer.join(founder, FAST) for peer in peers[1:]))
        everyone = {p.identity.public_key for p in peers}
        await wait_for(lambda: all(roster_of(p) == everyone for p in peers), 5, "roster pushes")
    finally:
        for peer in peers:
            await peer.close()


@simulated(timeout=60)
async def test_a_dead_member_not_dropped_yet_does_not_hold_admissions(streams: SimStreams) -> None:
    # an admission's round trip ends once a majority answered: waiting for every member, each
    # newcomer (one at a time) waited out a dead member's timeout (a lease: 50 s here)
    async with group_of(streams, 3) as peers:
        founder, dead = peers[0], peers[3]
        streams.kill(dead.channels.streams.host)  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        for _ in range(3):
            newcomer = await Peer(streams).listen()
            peers.append(newcomer)  # closed with the others
            started = loop.time()
            await newcomer.join(founder, SLOW)
            assert loop.time() - started < SLOW.request_timeout
