"""Two leaders of one group at once, each committing the same rounds (the soak's split brain).

Real ``GroupMember``s on real channels in this process; their loops are not started: the test
makes each step (a lease lapsing, an election, a commit, a heartbeat) happen in the order the
soak run's logs show, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mycelium_p2p.group.election import ElectionState
from mycelium_p2p.group.member import GroupMember, StepDown
from mycelium_p2p.group.state import ModelSnapshot
from mycelium_p2p.group.transport import Channel, Reply
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import simulated, wait_for
from tests.helpers.groups import FAST, Peer, group_of, roster_of


def model(round_: int) -> ModelSnapshot:
    return ModelSnapshot.of(round_, {"w": round_}, [])


@simulated(timeout=30)
async def test_a_deposed_leader_does_not_win_alone_on_the_roster_it_was_dropped_from(
    streams: SimStreams,
) -> None:
    # soak2, group 56a15276e15a0b6e = {n10, n13}: n10 led term 3 and committed round 143
    # with n13. n10 was slow (load 20): n13's lease lapsed and it won term 4 alone (its
    # electorate is the roster without the old leader: itself), dropping n10 from its roster.
    # n10 learnt of term 4 when n13 refused its commit, and followed n13; its lease on n13
    # lapsed before a heartbeat got through, and it stood on the roster of term 3 without n13:
    # an electorate of itself alone. It won term 5 and both committed rounds 144.. alone.
    async with group_of(streams, 1, FAST) as (founder, peer):
        old, new = founder.group, peer.group
        assert old is not None and new is not None
        both = {old.me, new.me}
        await wait_for(lambda: roster_of(founder) == roster_of(peer) == both, 5, "rosters")
        await wait_for(lambda: all(m.confirmed for m in old.roster.values()), 5, "confirmed")
        assert await old.commit(model(1))  # round 143, acknowledged by both

        new.seat.lease_until = 0.0  # the leader is slow: the member's lease lapses
        await new.elections.elect()
        assert new.is_leader and new.term == 2 and set(new.roster) == {new.me}
        with pytest.raises(StepDown):  # the old leader wakes; the new one proves term 2
            await old.commit(model(2))
        assert (old.is_leader, old.term, old.leader_key) == (False, 2, new.me)

        old.seat.lease_until = 0.0  # its lease on the busy new leader lapses at once
        await old.elections.elect()
        assert not old.is_leader and old.term == 2  # was: leader of term 3, alone
        assert await new.commit(model(2))  # the new leader's roster is itself alone

        await old.following.heartbeat()  # refused as a non-member: it asks to be admitted again
        assert set(new.roster) == both and old.roster_version[0] == 2
        assert old.model.round == 2 and old.leader_key == new.me
        # from now on the new leader commits only with its ack, and may be replaced by it
        old.seat.lease_until = 0.0  # the new leader freezes in turn
        await old.elections.elect()
        assert old.is_leader and old.term == 3
        if new.is_leader:  # unless the winner's announce deposed it already
            with pytest.raises(StepDown):
                await new.commit(model(3))
        assert (new.is_leader, new.term, new.leader_key) == (False, 3, old.me)


def lose(member: GroupMember, methods: set[str]) -> None:
    """Requests of these methods never reach ``member`` (it was cut off when they came)."""
    handle = member.handle

    async def lossy(channel: Channel, method: str, header: dict[str, Any], segs: list) -> Reply:
        if method in methods:
            return Reply.fail("lost", "the test dropped it")
        return await handle(channel, method, header, segs)

    member.handle = lossy  # type: ignore[method-assign]


@simulated(timeout=30)
async def test_a_member_without_its_leaders_roster_cannot_undo_a_committed_round(
    streams: SimStreams,
) -> None:
    # {L, A, B, C}, L frozen: A, B, C elect W in term 2 (votes of all three) and W drops L.
    # X hears W's announce but neither its roster nor its commits (cut off a moment); W
    # commits round 2 with Y: 2 of its roster {W, X, Y}. W freezes in turn. X stood on the
    # roster of term 1 without W, {L, X, Y}, and L (deposed, following W) made its majority:
    # a leader of term 3 holding round 1, and round 2, committed, was lost.
    async with group_of(streams, 3, FAST) as peers:
        groups = [p.group for p in peers]
        assert all(g is not None for g in groups)
        old, *members = groups  # type: ignore[misc]
        everyone = {g.me for g in groups}  # type: ignore[union-attr]
        await wait_for(lambda: all(set(g.roster) == everyone for g in groups), 5, "rosters")
        await wait_for(lambda: all(m.confirmed for m in old.roster.values()), 5, "confirmed")
        assert await old.commit(model(1))
        versions = {g.roster_version for g in groups}
        assert len(versions) == 1, versions

        winner, x, y = sorted(members, key=lambda g: g.me)  # W stands first
        lose(x, {"g.roster", "g.commit"})
        for member in members:
            member.seat.lease_until = 0.0
        await winner.elections.elect()
        assert winner.is_leader and winner.term == 2 and old.me not in winner.roster
        await wait_for(lambda: x.leader_key == y.leader_key == winner.me, 5, "announces")
        assert await winner.commit(model(2))  # acknowledged by W and Y
        assert (x.model.round, y.model.round) == (1, 2)
        with pytest.raises(StepDown):  # L wakes; Y shows it term 2
            await old.commit(model(2))
        assert (old.term, old.leader_key) == (2, winner.me)

        await asyncio.sleep(FAST.lease_timeout)  # W freezes: the votes for it grow old
        x.seat.lease_until = old.seat.lease_until = 0.0
        await x.elections.elect()
        assert not x.is_leader and x.term == 2  # was: leader of term 3 from round 1
        y.seat.lease_until = 0.0
        await y.elections.elect()  # Y holds round 2 and W's roster: X's vote makes its majority
        assert y.is_leader and y.term == 3 and y.model.round == 2


@simulated(timeout=30)
async def test_a_commit_needs_a_majority_of_the_roster_with_the_members_not_yet_confirmed(
    streams: SimStreams,
) -> None:
    # {L, A, B, C, D}; N joins, and of the roster naming N only B hears (A, C, D are cut off
    # from pushes): N's acks do not count yet (Member.confirmed), so L counts 3 of 5 for a
    # commit, and gets L, A, C. But B's roster names N: its electorate is {A, B, C, D, N}, and
    # B, D and N (none of which holds that round) are 3 of those 5. Had the commit counted, B
    # would lead term 2 without the round. A commit needs a majority of both rosters.
    async with group_of(streams, 4, FAST) as peers:
        founder = peers[0]
        groups = [p.group for p in peers]
        assert all(g is not None for g in groups)
        leader, *members = groups  # type: ignore[misc]
        everyone = {g.me for g in groups}  # type: ignore[union-attr]
        await wait_for(lambda: all(set(g.roster) == everyone for g in groups), 5, "rosters")
        await wait_for(lambda: all(m.confirmed for m in leader.roster.values()), 5, "confirmed")
        assert await leader.commit(model(1))
        b, a, c, d = sorted(members, key=lambda g: g.me)
        confirm = leader.upkeep.confirm_quorum

        async def confirm_then_cut() -> bool:  # N is admitted; then A, C, D are cut off
            confirmed = await confirm()
            for member in (a, c, d):
                lose(member, {"g.roster"})
            return confirmed

        leader.upkeep.confirm_quorum = confirm_then_cut  # type: ignore[method-assign]
        for member in leader.roster.values():  # all heard within the lease: it admits
            member.last_seen = leader.seat.now()
        newcomer = await Peer(streams).listen()
        try:
            n = await newcomer.join(founder, FAST)
            await wait_for(lambda: n.me in b.roster, 5, "the roster push to B")
            assert not leader.roster[n.me].confirmed
            for member in (b, d, n):
                lose(member, {"g.commit"})
            assert not await leader.commit(model(2))  # acked by L, A, C: 3 of 6 (was True)

            b.seat.lease_until = d.seat.lease_until = n.seat.lease_until = 0.0  # L freezes
            await b.elections.elect()
            assert b.is_leader and b.term == 2 and b.model.round == 1  # round 2 never counted
        finally:
            if newcomer.group is not None:
                await newcomer.group.close()
            await newcomer.channels.close()


@simulated(timeout=30)
async def test_a_commit_after_dropping_a_member_needs_the_roster_that_still_names_it(
    streams: SimStreams,
) -> None:
    # {L, A, B, D}: D falls silent (cut off) and L drops it; the roster without D reaches A but
    # not B. L commits round 2 with A: 2 of {L, A, B}. L freezes; B still holds the roster with
    # D, so its electorate is {A, B, D}, and D (back, its lease lapsed, round 1) makes B's
    # majority: a leader of term 2 without round 2. Until a majority of the roster that named
    # D holds the one without it, a commit needs a majority of the former too.
    async with group_of(streams, 3, FAST) as peers:
        groups = [p.group for p in peers]
        assert all(g is not None for g in groups)
        leader, *members = groups  # type: ignore[misc]
        everyone = {g.me for g in groups}  # type: ignore[union-attr]
        await wait_for(lambda: all(set(g.roster) == everyone for g in groups), 5, "rosters")
        await wait_for(lambda: all(m.confirmed for m in leader.roster.values()), 5, "confirmed")
        assert await leader.commit(model(1))
        b, a, d = sorted(members, key=lambda g: g.me)
        lose(b, {"g.roster", "g.commit"})
        now = leader.seat.now()
        for member in leader.roster.values():
            member.last_seen = now - 10 * FAST.member_timeout if member.key == d.me else now
        leader.upkeep.drop_silent_members()
        assert d.me not in leader.roster
        await wait_for(lambda: d.me not in a.roster, 5, "the roster push to A")
        assert d.me in b.roster
        assert not await leader.commit(model(2))  # acked by L and A: 2 of 4 (was True)

        b.seat.lease_until = d.seat.lease_until = 0.0  # L freezes
        await b.elections.elect()
        assert b.is_leader and b.term == 2 and b.model.round == 1  # round 2 never counted


@simulated(timeout=30)
async def test_once_the_others_hold_the_roster_without_a_dropped_member_commits_go_on(
    streams: SimStreams,
) -> None:
    async with group_of(streams, 3, FAST) as peers:
        groups = [p.group for p in peers]
        assert all(g is not None for g in groups)
        leader, *members = groups  # type: ignore[misc]
        everyone = {g.me for g in groups}  # type: ignore[union-attr]
        await wait_for(lambda: all(set(g.roster) == everyone for g in groups), 5, "rosters")
        b, a, d = sorted(members, key=lambda g: g.me)
        await peers[[g.me for g in groups].index(d.me)].channels.close()  # D is gone
        lose(b, {"g.commit"})  # and B too slow for this round
        now = leader.seat.now()
        for member in leader.roster.values():
            member.last_seen = now - 10 * FAST.member_timeout if member.key == d.me else now
        leader.upkeep.drop_silent_members()
        await wait_for(lambda: d.me not in a.roster and d.me not in b.roster, 5, "pushes")
        await wait_for(lambda: not leader.upkeep._dropped, 5, "a majority of {L, A, B, D} heard")
        assert await leader.commit(model(1))  # L and A: 2 of {L, A, B}


def test_a_voter_refuses_a_candidate_whose_roster_predates_its_leaders_term() -> None:
    voter = ElectionState(term=2)
    kw = {"candidate_round": 5, "my_round": 5, "lease_lapsed": True, "my_roster": (1, 3)}
    granted, why = voter.grant(3, b"a" * 32, candidate_roster=(1, 3), leader_term=2, **kw)
    assert not granted and "older than my leader's term" in why
    assert voter.grant(3, b"a" * 32, candidate_roster=(2, 1), leader_term=2, **kw)[0]
