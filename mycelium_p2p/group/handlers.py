"""How a group member answers its peers' ``g.*`` requests (``Handlers``).

Who may send what, checked before anything changes (the channel proves the sender's key):

==============  ========================================================================
``g.join``      anyone (invite-only: with a member's invite); answered by the leader only
``g.model``     a roster member; anyone when the group is open (migration measures it)
``g.leader``    anyone: it tells what the group's advert publishes (term, leader, its address
                and certificate), so that a deposed leader can learn why it was
``g.heartbeat`` a roster member, to the leader
``g.vote``      a roster member standing for election
``g.leave``     a roster member, about itself
``g.announce``  a roster member proving leadership of a term with a certificate
``g.commit``    the proven leader of the current term (or of a newer one, with its
``g.roster``    certificate); nobody else, whatever term it claims
``g.redirect``
``g.resign``    the proven leader of the current term
==============  ========================================================================

Every header is decoded into a typed structure first (``messages.parse``): a malformed
request gets an error reply and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..aio import TaskOwner
from ..errors import BadMessage, ChannelError, InviteError, RemoteError
from ..records.leadership import sign_vote
from . import messages as m
from .authority import Authority
from .commits import Commits
from .following import Following
from .invite import verify_invite
from .link import Link
from .roster import RosterUpkeep
from .seat import Seat
from .state import Member
from .transport import Channel, Reply

log = logging.getLogger(__name__)

_ANYONE = frozenset({"g.join", "g.model", "g.leader"})


class Handlers:
    """The ``g.*`` request handlers: each checks who asks, then asks the other parts."""

    def __init__(
        self,
        seat: Seat,
        link: Link,
        authority: Authority,
        upkeep: RosterUpkeep,
        commits: Commits,
        following: Following,
        tasks: TaskOwner,
    ) -> None:
        self.seat = seat
        self.link = link
        self.authority = authority
        self.upkeep = upkeep
        self.commits = commits
        self.following = following
        self.tasks = tasks
        self._admitting = asyncio.Lock()  # newcomers are admitted one at a time

    async def handle(
        self, channel: Channel, method: str, header: dict[str, Any], segments: list[bytes]
    ) -> Reply:
        """Answer a ``g.*`` request. Malformed requests get an error reply, never an exception."""
        seat = self.seat
        if header.get("gid") != seat.group_id:
            return Reply.fail("wrong-group", f"this node is in group {seat.group_id}")
        if method not in _ANYONE and channel.peer_key not in seat.roster:
            return Reply.fail("not-member", "not in this group's roster")
        try:
            kind, handler = self._handlers()[method]
        except KeyError:
            return Reply.fail("bad-request", f"unknown method {method}")
        try:
            request = m.parse(kind, header)
        except BadMessage as exc:
            return Reply.fail("bad-request", str(exc))
        return await handler(channel.peer_key, request, segments)

    def _handlers(self) -> dict[str, tuple[type[Any], Callable[..., Awaitable[Reply]]]]:
        return {
            "g.join": (m.Join, self._on_join),
            "g.heartbeat": (m.Heartbeat, self._on_heartbeat),
            "g.vote": (m.VoteRequest, self._on_vote),
            "g.announce": (m.Announce, self._on_announce),
            "g.commit": (m.Commit, self._on_commit),
            "g.model": (m.Empty, self._on_model),
            "g.leave": (m.Empty, self._on_leave),
            "g.resign": (m.Resign, self._on_resign),
            "g.roster": (m.RosterPush, self._on_roster),
            "g.redirect": (m.Redirect, self._on_redirect),
            "g.leader": (m.Empty, self._on_leader_query),
        }

    def _not_leader(self) -> Reply:
        hint = list(self.seat.leader_addr) if self.seat.leader_addr else None
        return Reply.fail("not-leader", f"the leader is at {hint}" if hint else "no leader now")

    async def _on_join(self, peer: bytes, req: m.Join, _: list[bytes]) -> Reply:
        seat = self.seat
        if not seat.is_leader:
            return self._not_leader()
        if peer in seat.roster:  # back after a restart, say: the roster keeps its members
            return self._admit(peer, req)
        if seat.closing:
            return Reply.fail("closing", f"group {seat.info.name} is closing (its leader left)")
        if seat.info.policy == "invite-only":
            try:
                verify_invite(
                    req.invite,
                    group_id=seat.group_id,
                    member_key=peer,
                    inviters={seat.info.founder},
                    now=time.time(),
                )
            except InviteError as exc:
                return Reply.fail("invite", f"group {seat.info.name} is invite-only: {exc}")
        # one newcomer at a time: each one's round trip (below) also makes the one before it
        # known, so that joiners arriving together are admitted in turn, not refused
        async with self._admitting:
            refusal = await self._may_admit(peer)
            return refusal or self._admit(peer, req)

    async def _may_admit(self, peer: bytes) -> Reply | None:
        """Why a newcomer cannot be admitted now (None: it can)."""
        seat = self.seat
        if peer in seat.roster:  # admitted while it waited for its turn
            return None
        if not seat.is_leader:
            return self._not_leader()
        if seat.closing:  # since it asked
            return Reply.fail("closing", f"group {seat.info.name} is closing (its leader left)")
        # admitting while cut off or deposed could build a second majority, on which the
        # other side's certificate proves nothing: the roster must acknowledge us now; and the
        # last roster change must be known (RosterUpkeep.settled): a majority of a roster two
        # changes old need not meet one of the roster with the newcomer
        if (
            not self.upkeep.has_quorum()
            or not await self.upkeep.confirm_quorum()
            or not self.upkeep.settled()
        ):
            if not seat.is_leader:  # a member proved a newer term meanwhile
                return self._not_leader()
            return Reply.fail("no-quorum", f"group {seat.info.name} is regrouping; try later")
        if len(seat.roster) >= seat.info.capacity:
            return Reply.fail(
                "full",
                f"group {seat.info.name} is full ({len(seat.roster)}/{seat.info.capacity})",
            )
        return None

    def _admit(self, peer: bytes, req: m.Join) -> Reply:
        """Put ``peer`` on the roster (again) and hand it what a member holds."""
        seat = self.seat
        known = seat.roster.get(peer)
        if known is None:
            log.info("group %s: %s joined", seat.group_id, peer.hex()[:8])
        confirmed = known.confirmed if known else len(seat.roster) == 1  # alone: nobody to tell
        seat.roster[peer] = Member(peer, req.addr, 0, seat.now(), confirmed)
        self.upkeep.roster_changed()
        reply = m.JoinReply(
            charter=seat.info.charter.blob,
            term=seat.term,
            cert=seat.cert_blob,
            roster=seat.roster_wire(),  # type: ignore[arg-type]
            rv=seat.roster_version,
            round=seat.model.round,
            digest=seat.model.digest,
            content=seat.model.content,
            proof=seat.model.proof,
        )
        return Reply(m.wire(reply), seat.model.segments)

    async def _on_heartbeat(self, peer: bytes, req: m.Heartbeat, _: list[bytes]) -> Reply:
        # a member's term is not proof of anything: it never makes a leader step down
        seat = self.seat
        if not seat.is_leader:
            return self._not_leader()
        member = seat.roster[peer]
        member.addr = req.addr
        member.round = req.round
        member.last_seen = seat.now()  # a member's round is for show: models flow down only
        reply = m.HeartbeatReply(
            term=seat.term,
            cert=seat.cert_blob,
            roster=seat.roster_wire(),  # type: ignore[arg-type]
            rv=seat.roster_version,
            round=seat.model.round,
        )
        return Reply(m.wire(reply))

    async def _on_vote(self, peer: bytes, req: m.VoteRequest, _: list[bytes]) -> Reply:
        seat = self.seat
        lapsed = seat.lease_lapsed()
        if not lapsed and not seat.is_leader and seat.leader_key not in (None, peer):
            lapsed = not await self._probe_leader()
        shown = self.authority.candidate_round(req.round, req.proof)
        if shown is None:
            reply = m.VoteReply(granted=False, term=seat.term, why=f"round {req.round} unproven")
            return Reply(m.wire(reply))
        granted, why = seat.election.grant(
            req.term,
            peer,
            candidate_round=shown,
            my_round=seat.proven_round,
            candidate_roster=req.rv,
            my_roster=seat.roster_version,
            leader_term=seat.cert.term if seat.cert is not None else None,
            lease_lapsed=lapsed and not seat.is_leader,
        )
        vote = None
        if granted:
            vote = sign_vote(seat.identity, seat.group_id, req.term, peer)
            # as Raft resets its election timer on a vote: give that candidate a lease's time
            # to win and announce itself before we stand against it in the next term
            seat.voted_until = seat.now() + seat.config.lease_timeout
        reply = m.VoteReply(granted=granted, term=seat.term, why=why[:200], vote=vote)
        return Reply(m.wire(reply))

    async def _probe_leader(self) -> bool:
        seat = self.seat
        if seat.leader_key is None or seat.leader_addr is None:
            return False
        try:
            await self.link.request(
                seat.leader_key,
                seat.leader_addr,
                "g.heartbeat",
                {"term": seat.term, "round": seat.model.round, "addr": list(seat.my_addr)},
                timeout=0.5,
            )
        except (ChannelError, RemoteError):
            seat.lease_until = 0.0
            return False
        return True

    async def _on_announce(self, peer: bytes, req: m.Announce, _: list[bytes]) -> Reply:
        seat = self.seat
        refusal = self.authority.authorize(peer, req.term, req.cert, req.addr)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {seat.term}")
        seat.leader_lost.set()  # wake the loop: heartbeat the new leader now
        return Reply({"term": seat.term})

    async def _on_commit(self, peer: bytes, req: m.Commit, segments: list[bytes]) -> Reply:
        refusal = self.authority.authorize(peer, req.term, req.cert)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.seat.term}")
        if not self.commits.store_model(
            req.round, req.digest, req.content, segments, req.proof, need_proof=True
        ):
            return Reply.fail("bad-model", "digest or commit proof does not match")
        return Reply(m.wire(m.RoundReply(round=self.seat.model.round)))

    async def _on_model(self, peer: bytes, req: m.Empty, _: list[bytes]) -> Reply:
        seat = self.seat
        if peer not in seat.roster and seat.info.policy != "open":
            return Reply.fail("not-member", "the model goes to members only")
        model = seat.model
        reply = m.ModelReply(
            round=model.round, digest=model.digest, content=model.content, proof=model.proof
        )
        return Reply(m.wire(reply), seat.model.segments)

    async def _on_leave(self, peer: bytes, req: m.Empty, _: list[bytes]) -> Reply:
        seat = self.seat
        if seat.is_leader and peer != seat.me:
            del seat.roster[peer]
            log.info("group %s: %s left", seat.group_id, peer.hex()[:8])
            self.upkeep.roster_changed()
        return Reply({})

    async def _on_leader_query(self, peer: bytes, req: m.Empty, _: list[bytes]) -> Reply:
        seat = self.seat
        cert = seat.cert if seat.leader_key is not None else None
        reply = m.LeaderReply(
            term=seat.term,
            leader=seat.leader_key,
            addr=seat.leader_addr,
            cert=cert.encode() if cert is not None else None,
        )
        return Reply(m.wire(reply))

    def _from_my_leader(self, peer: bytes, term: int) -> bool:
        seat = self.seat
        return not seat.is_leader and peer == seat.leader_key and term == seat.term

    async def _on_resign(self, peer: bytes, req: m.Resign, _: list[bytes]) -> Reply:
        if self._from_my_leader(peer, req.term):
            if req.roster is not None:  # elect among the members the leader knew
                self.upkeep.adopt_roster(req.roster, req.rv)
            self.seat.lease_until = 0.0
            self.seat.leader_lost.set()
        return Reply({})

    async def _on_redirect(self, peer: bytes, req: m.Redirect, _: list[bytes]) -> Reply:
        refusal = self.authority.authorize(peer, req.term, req.cert)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.seat.term}")
        if not self.seat.is_leader:
            self.tasks.spawn(self.following.follow(req.addr, req.key), name="redirect")
        return Reply({})

    async def _on_roster(self, peer: bytes, req: m.RosterPush, _: list[bytes]) -> Reply:
        refusal = self.authority.authorize(peer, req.term, req.cert)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.seat.term}")
        if not self.seat.is_leader:
            self.upkeep.adopt_roster(req.roster, req.rv)
        return Reply({})
