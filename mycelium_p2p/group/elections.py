"""Standing for election, winning and stepping down (part of ``GroupMember``).

The rules are election.py's; this mixin runs them over the network: a candidate asks its
electorate for signed votes, and the votes it wins are its certificate (``LeaderCert``), which
it then sends with every request it makes as leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..addresses import Address
from ..aio import TaskOwner
from ..errors import BadMessage, ChannelError, RemoteError
from ..identity import Identity, verify_signature
from ..records.leadership import LeaderCert, majority, vote_bytes
from . import messages as m
from .election import ElectionState, candidate_rank, electorate, holds_electorate
from .state import GroupConfig, Member, MemberFacts, ModelSnapshot

log = logging.getLogger(__name__)


class Elections(MemberFacts):
    """The election of ``GroupMember``."""

    # state and methods provided by GroupMember
    identity: Identity
    me: bytes
    my_addr: Address
    config: GroupConfig
    election: ElectionState
    roster: dict[bytes, Member]
    roster_version: tuple[int, int]
    model: ModelSnapshot
    tasks: TaskOwner
    role: str
    leader_key: bytes | None
    leader_addr: Address | None
    cert: LeaderCert | None
    on_leader: Callable[[int], None]
    on_follower: Callable[[], None]
    _highest_term: int
    _last_leader: bytes | None
    _lease_until: float
    _voted_until: float
    _quorum_lost_at: float | None
    _dropped: set[bytes]
    _now: Callable[[], float]
    lease_lapsed: Callable[[], bool]
    members: Callable[[], list[Member]]
    roster_changed: Callable[[], None]
    _request: Callable[..., Any]
    proven_round: int
    remember_leader: Callable[[int, bytes], None]

    async def _elect(self) -> None:
        old = self.leader_key
        old_term = self.cert.term if old is not None and self.cert is not None else None
        if not holds_electorate(self.roster_version, old_term):
            # we follow a leader whose roster never reached us (we may be the leader it
            # deposed and dropped): our heartbeat gets it, or a "not-member" that rejoins us
            log.info(
                "group %s: no roster of term %s yet (ours is %s); not standing",
                self.group_id,
                old_term,
                self.roster_version,
            )
            await asyncio.sleep(self.config.heartbeat_interval)
            return
        voters = electorate(self.roster, old) | {self.me}
        rank = candidate_rank(self.me, voters)
        await asyncio.sleep(rank * self.config.stagger)
        if self.leader_key != old or not self.lease_lapsed():
            return  # someone else won meanwhile
        if self._now() < self._voted_until:
            return  # the candidate we voted for may be winning: no rival term yet
        term = max(self.term, self._highest_term) + 1
        if not self.election.stand(term, self.me):
            return
        others = [self.roster[k] for k in voters if k != self.me and k in self.roster]
        votes = await self._collect_votes(term, others, majority(len(voters)))
        if self.leader_key != old and self.term >= term:
            return  # a leader for this term or a newer one announced itself meanwhile
        if len(votes) >= majority(len(voters)) and not self.tasks.closed:
            log.info(
                "group %s: elected leader of term %d (%d/%d votes)",
                self.group_id,
                term,
                len(votes),
                len(voters),
            )
            self.election.won(term)
            if old is not None:
                self.roster.pop(old, None)
            self.cert = LeaderCert(self.group_id, term, self.me, votes)
            self.remember_leader(term, self.me)
            self._become_leader(term)
            return
        await asyncio.sleep((len(voters) + rank) * self.config.stagger)

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
        signed = vote_bytes(self.group_id, term, self.me)
        votes = [(self.me, self.identity.sign(signed))]
        asks = {
            asyncio.ensure_future(
                self._request(
                    mb.key,
                    mb.addr,
                    "g.vote",
                    {
                        "term": term,
                        "round": self.proven_round,
                        "rv": self.roster_version,
                        "addr": list(self.my_addr),
                        "proof": self.model.proof if self.proven_round else b"",
                    },
                    timeout=self.config.request_timeout / 2,
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
                    until = loop.time() + self.config.stagger
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
                    self._highest_term = max(self._highest_term, min(reply.term, term + 64))
                    if (
                        reply.granted
                        and reply.vote
                        and verify_signature(member.key, reply.vote, signed)
                    ):
                        votes.append((member.key, reply.vote))
        finally:
            for ask in pending:
                ask.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return votes

    def _become_leader(self, term: int) -> None:
        self._quorum_lost_at = None
        self.role = "leader"
        self._dropped.clear()  # candidates of the next term hold a roster of this one
        self.leader_key = self._last_leader = self.me
        self.leader_addr = self.my_addr
        now = self._now()
        for member in self.roster.values():
            member.last_seen = now
            member.confirmed = True  # the roster we were elected on
        for member in self.members():
            if member.key != self.me:
                self.tasks.spawn(self._announce(member), name="announce")
        self.roster_changed()  # a roster of this term (without the old leader) outranks any before
        self.on_leader(term)

    async def _announce(self, member: Member) -> None:
        try:
            await self._request(
                member.key,
                member.addr,
                "g.announce",
                {"term": self.term, "addr": list(self.my_addr), "cert": self.cert_blob},
            )
        except (ChannelError, RemoteError) as exc:
            log.debug("announce to %s failed: %s", member.key.hex()[:8], exc)

    def step_down(self, term: int) -> None:
        """A newer term exists: stop leading (the fl layer aborts its round)."""
        self.election.observe(term)
        self._highest_term = max(self._highest_term, term)
        if self.is_leader:
            log.info("group %s: stepping down, term %d is newer", self.group_id, term)
            self._resign()

    def _resign(self) -> None:
        """Stop leading; as a member, find the leader or stand in the next election."""
        self.role = "member"
        self.leader_key = self.leader_addr = None
        self._lease_until = 0.0
        self.on_follower()
