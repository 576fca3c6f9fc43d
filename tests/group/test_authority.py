"""Who a member follows: a new leader proven by signed votes, never a claim alone."""

from __future__ import annotations

from mycelium_p2p.records.leadership import LeaderCert, sign_vote
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import simulated, wait_for
from tests.helpers.groups import group_of, roster_of


@simulated(timeout=30)
async def test_a_member_that_voted_in_a_term_follows_its_proven_winner(streams: SimStreams) -> None:
    # voting adopts the term with no leader for it yet: the winner's announce must be taken,
    # not refused as a second leader of the term (the old leader is still the one we knew)
    async with group_of(streams, 2) as (founder, voter, winner):
        assert voter.group is not None and winner.group is not None
        await wait_for(lambda: all(len(roster_of(p)) == 3 for p in (voter, winner)), 5, "rosters")
        gid, term = voter.group.group_id, voter.group.term + 1
        candidate = winner.identity.public_key
        granted, why = voter.group.seat.election.grant(
            term, candidate, candidate_round=0, my_round=0, lease_lapsed=True
        )
        assert granted, why
        assert voter.group.term == term and voter.group.leader_key == founder.identity.public_key
        votes = [
            (p.identity.public_key, sign_vote(p.identity, gid, term, candidate))
            for p in (voter, winner)
        ]
        cert = LeaderCert(gid, term, candidate, votes).encode()
        await winner.channels.request(
            voter.addr,
            voter.identity.public_key,
            "g.announce",
            {"gid": gid, "term": term, "addr": list(winner.addr), "cert": cert},
            timeout=5,
        )
        assert voter.group.leader_key == candidate and voter.group.term == term
