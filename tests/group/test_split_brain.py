"""Two leaders of one group at once, each committing the same rounds (the soak's split brain).

Real ``GroupMember``s on real channels in this process; their loops are not started: the test
makes each step (a lease lapsing, an election, a commit, a heartbeat) happen in the order the
soak run's logs show, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mycelium_p2p.group.election import ElectionState
from mycelium_p2p.group.member import JoinRefused, StepDown
from mycelium_p2p.group.state import ModelSnapshot
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import simulated, wait_for
from tests.helpers.groups import (
    FAST,
    Peer,
    group_of,
    in_step,
    leaders_of_term,
    lose,
    roster_of,
)


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


@simulated(timeout=30)
async def test_two_members_dropped_at_once_do_not_make_two_majorities_in_one_term(
    streams: SimStreams,
) -> None:
    # {L, A, B, C, D, E}; D and E are frozen past the member timeout and L, starved, drops
    # them; the roster without them reaches A and B, not C (cut off a moment). A and B lose
    # their lease on L; C still reaches it and refuses A its vote. A wins term 2 with B: 2 of
    # its electorate {A, B, C}. L freezes for good, D and E wake: C, which never heard of the
    # drop, stands on {A, B, C, D, E} and wins term 2 as well, with D and E: 3 of 5. Two
    # leaders in one term, neither of whose certificates proves anything to the other side.
    # The rosters were two changes apart, and their majorities need not meet: a leader drops
    # one member at a time, and only once the last change is known (``RosterUpkeep.settled``).
    async with group_of(streams, 5, FAST) as peers:
        leader, *members = await in_step(peers)
        assert await leader.commit(model(1))
        a, b, c, d, e = sorted(members, key=lambda g: g.me)  # C stands before D and E
        thaw = [lose(d), lose(e)]  # frozen
        lose(c, {"g.roster"})
        now = leader.seat.now()
        for member in leader.roster.values():
            member.last_seen = now
        leader.roster[d.me].last_seen = now - 3 * FAST.member_timeout
        leader.roster[e.me].last_seen = now - 2 * FAST.member_timeout
        leader.upkeep.drop_silent_members()  # was: D and E at once
        await wait_for(lambda: d.me not in a.roster and d.me not in b.roster, 5, "the push")
        leader.upkeep.drop_silent_members()  # the next upkeep: C has not heard of D's drop

        a.seat.lease_until = b.seat.lease_until = 0.0  # L starves: A and B lose their lease
        c.seat.lease_until = c.seat.now() + 10 * FAST.lease_timeout  # C's heartbeats get through
        await a.elections.elect()
        streams.kill(peers[0].addr[0])  # L freezes for good; D and E wake
        for undo in thaw:
            undo()
        c.seat.lease_until = d.seat.lease_until = e.seat.lease_until = 0.0
        await c.elections.elect()
        assert len(leaders_of_term(members, 2)) == 1  # was: A and C
        assert e.me in leader.roster and (c.is_leader, c.term) == (True, 2)


@simulated(timeout=30)
async def test_a_member_is_not_admitted_before_the_last_drop_is_known(
    streams: SimStreams,
) -> None:
    # {L, A, B, D}: L drops D (silent); the roster without it reaches A, not B. N asks to
    # join: L's round trip reaches A only, 2 of {L, A, B}, a majority of the roster after the
    # drop, and it admitted N. A and N hold {L, A, B, N}; B still holds {L, A, B, D}. A wins
    # term 2 with N (2 of {A, B, N}); B, with D (2 of {A, B, D}). Admitting needs the drop
    # known to a majority of the roster that still named D (``RosterUpkeep.settled``).
    async with group_of(streams, 3, FAST) as peers:
        founder = peers[0]
        leader, *members = await in_step(peers)
        assert await leader.commit(model(1))
        a, b, d = sorted(members, key=lambda g: g.me)
        lose(b, {"g.roster"})
        now = leader.seat.now()
        for member in leader.roster.values():
            member.last_seen = now - 10 * FAST.member_timeout if member.key == d.me else now
        leader.upkeep.drop_silent_members()
        await wait_for(lambda: d.me not in a.roster, 5, "the push to A")
        newcomer = await Peer(streams).listen()
        try:
            voters = [a]  # and N, if admitted
            with contextlib.suppress(JoinRefused):  # was: admitted
                n = await newcomer.join(founder, FAST)
                await wait_for(lambda: n.me in a.roster, 5, "the push to A")
                voters.append(n)
            for g in voters:
                g.seat.lease_until = 0.0  # L starves; B still reaches it
            b.seat.lease_until = b.seat.now() + 10 * FAST.lease_timeout
            first = min(voters, key=lambda g: g.me)
            await first.elections.elect()
            streams.kill(founder.addr[0])  # L freezes
            b.seat.lease_until = d.seat.lease_until = 0.0
            await b.elections.elect()
            assert len(leaders_of_term(members + voters[1:], 2)) <= 1  # was: two
            assert newcomer.group is None  # "no-quorum": it tries again later
        finally:
            if newcomer.group is not None:
                await newcomer.group.close()
            await newcomer.channels.close()


@simulated(timeout=30)
async def test_a_member_is_not_dropped_before_the_last_newcomer_is_known(
    streams: SimStreams,
) -> None:
    # {L, A, B, D}: N is admitted, and the roster naming it reaches A, not B or D (cut off
    # right after L's round trip). L then drops D (silent). A and N hold {L, A, B, N}; B and D
    # {L, A, B, D}: A wins term 2 with N, B with D. Dropping needs the newcomer known first.
    async with group_of(streams, 3, FAST) as peers:
        founder = peers[0]
        leader, *members = await in_step(peers)
        assert await leader.commit(model(1))
        a, b, d = sorted(members, key=lambda g: g.me)
        confirm = leader.upkeep.confirm_quorum

        async def confirm_then_cut() -> bool:
            confirmed = await confirm()
            lose(b, {"g.roster"})
            lose(d, {"g.roster"})
            return confirmed

        leader.upkeep.confirm_quorum = confirm_then_cut  # type: ignore[method-assign]
        newcomer = await Peer(streams).listen()
        try:
            n = await newcomer.join(founder, FAST)
            await wait_for(lambda: n.me in a.roster, 5, "the push to A")
            now = leader.seat.now()
            for member in leader.roster.values():
                member.last_seen = now - 10 * FAST.member_timeout if member.key == d.me else now
            leader.upkeep.drop_silent_members()  # was: dropped, though B and D never heard of N
            await wait_for(lambda: set(a.roster) == set(leader.roster), 5, "the push to A")
            a.seat.lease_until = n.seat.lease_until = 0.0  # L starves; B still reaches it
            b.seat.lease_until = b.seat.now() + 10 * FAST.lease_timeout
            first = min(a, n, key=lambda g: g.me)
            await first.elections.elect()
            streams.kill(founder.addr[0])  # L freezes
            b.seat.lease_until = d.seat.lease_until = 0.0
            await b.elections.elect()
            assert len(leaders_of_term([*members, n], 2)) <= 1  # was: two
            assert d.me in leader.roster
        finally:
            if newcomer.group is not None:
                await newcomer.group.close()
            await newcomer.channels.close()
