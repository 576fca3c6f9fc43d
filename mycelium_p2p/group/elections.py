"""Standing for election and taking office (``Elections``).

The rules are election.py's; this part runs them over the network: a candidate asks its
electorate for signed votes, and the votes it wins are its certificate (``LeaderCert``), which
it then sends with every request it makes as leader. (Leaving office is the seat's: any part
may see a newer term.)
"""

from __future__ import annotations

import asyncio
import logging

from ..aio import TaskOwner
from ..errors import BadMessage, ChannelError, RemoteError
from ..identity import verify_signature
from ..records.leadership import LeaderCert, majority, vote_bytes
from . import messages as m
from .authority import Authority
from .channel import peer_text
from .election import MAX_TERM_STEP, candidate_rank, electorate, holds_electorate
from .link import Link
from .roster import RosterUpkeep
from .seat import Seat
from .state import Member

log = logging.getLogger(__name__)


class Elections:
    """A member's candidacy when its lease lapses, and what winning changes."""

    def __init__(
        self, seat: Seat, link: Link, authority: Authority, upkeep: RosterUpkeep, tasks: TaskOwner
    ) -> None:
        self.seat = seat
        self.link = link
        self.authority = authority
        self.upkeep = upkeep
        self.tasks = tasks
        self.last_refusals: list[str] = []  # why voters refused our last candidacy

    async def elect(self) -> None:
        """Stand for the next term once our lease lapsed, in our turn among the candidates."""
        seat = self.seat
        old = seat.leader_key
        old_term = seat.cert.term if old is not None and seat.cert is not None else None
        if not holds_electorate(seat.roster_version, old_term):
            # we follow a leader whose roster never reached us (we may be the leader it
            # deposed and dropped): our heartbeat gets it, or a "not-member" that rejoins us
            log.info(
                "group %s: no roster of term %s yet (ours is %s); not standing",
                seat.group_id,
                old_term,
                seat.roster_version,
            )
            await asyncio.sleep(seat.config.heartbeat_interval)
            return
        voters = electorate(seat.roster, old) | {seat.me}
        rank = candidate_rank(seat.me, voters)
        await asyncio.sleep(rank * seat.config.stagger)
        if seat.leader_key != old or not seat.lease_lapsed():
            return  # someone else won meanwhile
        if seat.now() < seat.voted_until:
            return  # the candidate we voted for may be winning: no rival term yet
        term = seat.election.next_term(seat.me, seat.highest_term)
        if not seat.election.stand(term, seat.me):
            log.info("group %s: cannot stand in term %d (my vote is given)", seat.group_id, term)
            return
        others = [seat.roster[k] for k in voters if k != seat.me and k in seat.roster]
        votes = await self._collect_votes(term, others, majority(len(voters)))
        if seat.leader_key != old and seat.term >= term:
            return  # a leader for this term or a newer one announced itself meanwhile
        if len(votes) >= majority(len(voters)) and not self.tasks.closed:
            log.info(
                "group %s: elected leader of term %d (%d/%d votes)",
                seat.group_id,
                term,
                len(votes),
                len(voters),
            )
            seat.election.won(term)
            if old is not None:
                seat.roster.pop(old, None)
            seat.cert = LeaderCert(seat.group_id, term, seat.me, votes)
            self.authority.remember_leader(term, seat.me)
            self.become_leader(term)
            return
        log.info(
            "group %s: not elected in term %d (%d/%d votes; %s)",
            seat.group_id,
            term,
            len(votes),
            len(voters),
            "; ".join(self.last_refusals) or "no other answer",
        )
        await asyncio.sleep((len(voters) + rank) * seat.config.stagger)

    async def _collect_votes(
        self, term: int, others: list[Member], needed: int
    ) -> list[tuple[bytes, bytes]]:
        """Our own vote and those ``others`` grant us in ``term``, asked all at once.

        Tallied as they come: once ``needed`` votes are in, the answers that arrive within one
        ``stagger`` still count (more votes than a bare majority let members whose roster lags
        ours check the certificate), then the requests still waiting (voters cut off or dead,
        each up to half a request timeout) are cancelled. Waiting for all of them, a group
        whose leader was cut off with a few others elected no one before its members' stall
        timeout (bench_formation's partition arm)."""
        seat = self.seat
        signed = vote_bytes(seat.group_id, term, seat.me)
        votes = [(seat.me, seat.identity.sign(signed))]
        refused: list[str] = []
        asks = {
            asyncio.ensure_future(
                self.link.request(
                    mb.key,
                    mb.addr,
                    "g.vote",
                    {
                        "term": term,
                        "round": seat.proven_round,
                        "rv": seat.roster_version,
                        "addr": list(seat.my_addr),
                        "proof": seat.model.proof if seat.proven_round else b"",
                    },
                    timeout=seat.config.request_timeout / 2,
                )
            ): mb
            for mb in others
        }
        pending = set(asks)
        loop = asyncio.get_running_loop()
        until: float | None = None  # set once we hold a majority
        try:
            while pending:
                if until is None and len(votes) >= needed:
                    until = loop.time() + seat.config.stagger
                left = None if until is None else until - loop.time()
                if left is not None and left <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                for ask in done:
                    if ask.cancelled() or ask.exception() is not None:
                        continue
                    try:
                        reply = m.parse(m.VoteReply, ask.result()[0])
                    except (BadMessage, TypeError, IndexError, KeyError):
                        continue
                    member = asks[ask]
                    # a voter's term only steers our next try, and a liar cannot push it far
                    seat.highest_term = max(
                        seat.highest_term, min(reply.term, term + MAX_TERM_STEP)
                    )
                    if (
                        reply.granted
                        and reply.vote
                        and verify_signature(member.key, reply.vote, signed)
                    ):
                        votes.append((member.key, reply.vote))
                    else:  # why, for the log of a lost election (a voter's words: cleaned)
                        refused.append(f"{member.key.hex()[:8]}: {peer_text(reply.why, 80)}")
        finally:
            self.last_refusals = refused
            for ask in pending:
                ask.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return votes

    def become_leader(self, term: int) -> None:
        """Lead ``term``, for which the seat holds our certificate: tell the members."""
        seat = self.seat
        self.upkeep.took_office()
        seat.role = "leader"
        seat.leader_key = seat.last_leader = seat.me
        seat.leader_addr = seat.my_addr
        now = seat.now()
        for member in seat.roster.values():
            member.last_seen = now
            member.confirmed = True  # the roster we were elected on
        for member in seat.members():
            if member.key != seat.me:
                self.tasks.spawn(self._announce(member), name="announce")
        # a roster of this term (without the old leader) outranks any before
        self.upkeep.roster_changed()
        seat.on_leader(term)

    async def _announce(self, member: Member) -> None:
        seat = self.seat
        try:
            await self.link.request(
                member.key,
                member.addr,
                "g.announce",
                {"term": seat.term, "addr": list(seat.my_addr), "cert": seat.cert_blob},
            )
        except (ChannelError, RemoteError) as exc:
            log.debug("announce to %s failed: %s", member.key.hex()[:8], exc)
