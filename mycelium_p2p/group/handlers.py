"""How a group member answers its peers' ``g.*`` requests (part of ``GroupMember``).

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

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..addresses import Address
from ..errors import BadMessage, ChannelError, InviteError, RemoteError
from ..identity import Identity
from ..records.leadership import LeaderCert, sign_vote
from . import messages as m
from .election import ElectionState
from .invite import verify_invite
from .state import GroupConfig, GroupInfo, Member, MemberFacts, ModelSnapshot
from .transport import Channel, Reply

log = logging.getLogger(__name__)

_ANYONE = frozenset({"g.join", "g.model", "g.leader"})


class MemberRequests(MemberFacts):
    """The ``g.*`` request handlers of ``GroupMember``."""

    # state and methods provided by GroupMember
    identity: Identity
    me: bytes
    info: GroupInfo
    config: GroupConfig
    election: ElectionState
    roster: dict[bytes, Member]
    model: ModelSnapshot
    leader_key: bytes | None
    leader_addr: Address | None
    cert: LeaderCert | None
    my_addr: Address
    closing: bool
    _lease_until: float
    _voted_until: float
    members: Callable[[], list[Member]]
    has_quorum: Callable[[], bool]
    roster_changed: Callable[[], None]
    lease_lapsed: Callable[[], bool]
    authorize: Callable[..., str | None]
    _now: Callable[[], float]
    _request: Callable[..., Awaitable[tuple[dict[str, Any], list[bytes]]]]
    _adopt_roster: Callable[[list[Any], tuple[int, int]], None]
    roster_version: tuple[int, int]
    _store_model: Callable[..., bool]
    candidate_round: Callable[[int, bytes], int | None]
    proven_round: int
    _follow: Callable[[Address, bytes], Awaitable[None]]
    _leader_lost: Any
    tasks: Any

    if TYPE_CHECKING:  # provided by GroupMember

        async def confirm_quorum(self) -> bool: ...

    async def handle(
        self, channel: Channel, method: str, header: dict[str, Any], segments: list[bytes]
    ) -> Reply:
        """Answer a ``g.*`` request. Malformed requests get an error reply, never an exception."""
        if header.get("gid") != self.group_id:
            return Reply.fail("wrong-group", f"this node is in group {self.group_id}")
        if method not in _ANYONE and channel.peer_key not in self.roster:
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
        hint = list(self.leader_addr) if self.leader_addr else None
        return Reply.fail("not-leader", f"the leader is at {hint}" if hint else "no leader now")

    def _roster_wire(self) -> list[list[Any]]:
        return [member.wire() for member in self.members()]

    @property
    def cert_blob(self) -> bytes:
        """This node's leadership certificate, as it travels (empty when not leading)."""
        return self.cert.encode() if self.is_leader and self.cert is not None else b""

    async def _on_join(self, peer: bytes, req: m.Join, _: list[bytes]) -> Reply:
        if not self.is_leader:
            return self._not_leader()
        if self.closing and peer not in self.roster:
            return Reply.fail("closing", f"group {self.info.name} is closing (its leader left)")
        if peer not in self.roster:
            if self.info.policy == "invite-only":
                try:
                    verify_invite(
                        req.invite,
                        group_id=self.group_id,
                        member_key=peer,
                        inviters={self.info.founder},
                        now=time.time(),
                    )
                except InviteError as exc:
                    return Reply.fail("invite", f"group {self.info.name} is invite-only: {exc}")
            # admitting while cut off or deposed could build a second majority, on which the
            # other side's certificate proves nothing: the roster must acknowledge us now
            if not self.has_quorum() or not await self.confirm_quorum():
                if not self.is_leader:  # a member proved a newer term meanwhile
                    return self._not_leader()
                return Reply.fail("no-quorum", f"group {self.info.name} is regrouping; try later")
            if len(self.roster) >= self.info.capacity:
                return Reply.fail(
                    "full",
                    f"group {self.info.name} is full ({len(self.roster)}/{self.info.capacity})",
                )
        known = self.roster.get(peer)
        if known is None:
            log.info("group %s: %s joined", self.group_id, peer.hex()[:8])
        confirmed = known.confirmed if known else len(self.roster) == 1  # alone: nobody to tell
        self.roster[peer] = Member(peer, req.addr, 0, self._now(), confirmed)
        self.roster_changed()
        reply = m.JoinReply(
            charter=self.info.charter.blob,
            term=self.term,
            cert=self.cert_blob,
            roster=self._roster_wire(),  # type: ignore[arg-type]
            rv=self.roster_version,
            round=self.model.round,
            digest=self.model.digest,
            content=self.model.content,
            proof=self.model.proof,
        )
        return Reply(m.wire(reply), self.model.segments)

    async def _on_heartbeat(self, peer: bytes, req: m.Heartbeat, _: list[bytes]) -> Reply:
        # a member's term is not proof of anything: it never makes a leader step down
        if not self.is_leader:
            return self._not_leader()
        member = self.roster[peer]
        member.addr = req.addr
        member.round = req.round
        member.last_seen = self._now()  # a member's round is for show: models flow down only
        reply = m.HeartbeatReply(
            term=self.term,
            cert=self.cert_blob,
            roster=self._roster_wire(),  # type: ignore[arg-type]
            rv=self.roster_version,
            round=self.model.round,
        )
        return Reply(m.wire(reply))

    async def _on_vote(self, peer: bytes, req: m.VoteRequest, _: list[bytes]) -> Reply:
        lapsed = self.lease_lapsed()
        if not lapsed and not self.is_leader and self.leader_key not in (None, peer):
            lapsed = not await self._probe_leader()
        shown = self.candidate_round(req.round, req.proof)
        if shown is None:
            reply = m.VoteReply(granted=False, term=self.term, why=f"round {req.round} unproven")
            return Reply(m.wire(reply))
        granted, why = self.election.grant(
            req.term,
            peer,
            candidate_round=shown,
            my_round=self.proven_round,
            candidate_roster=req.rv,
            my_roster=self.roster_version,
            leader_term=self.cert.term if self.cert is not None else None,
            lease_lapsed=lapsed and not self.is_leader,
        )
        vote = None
        if granted:
            vote = sign_vote(self.identity, self.group_id, req.term, peer)
            # as Raft resets its election timer on a vote: give that candidate a lease's time
            # to win and announce itself before we stand against it in the next term
            self._voted_until = self._now() + self.config.lease_timeout
        reply = m.VoteReply(granted=granted, term=self.term, why=why[:200], vote=vote)
        return Reply(m.wire(reply))

    async def _probe_leader(self) -> bool:
        if self.leader_key is None or self.leader_addr is None:
            return False
        try:
            await self._request(
                self.leader_key,
                self.leader_addr,
                "g.heartbeat",
                {"term": self.term, "round": self.model.round, "addr": list(self.my_addr)},
                timeout=0.5,
            )
        except (ChannelError, RemoteError):
            self._lease_until = 0.0
            return False
        return True

    async def _on_announce(self, peer: bytes, req: m.Announce, _: list[bytes]) -> Reply:
        refusal = self.authorize(peer, req.term, req.cert, req.addr)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.term}")
        self._leader_lost.set()  # wake the loop: heartbeat the new leader now
        return Reply({"term": self.term})

    async def _on_commit(self, peer: bytes, req: m.Commit, segments: list[bytes]) -> Reply:
        refusal = self.authorize(peer, req.term, req.cert)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.term}")
        if not self._store_model(
            req.round, req.digest, req.content, segments, req.proof, need_proof=True
        ):
            return Reply.fail("bad-model", "digest or commit proof does not match")
        return Reply(m.wire(m.RoundReply(round=self.model.round)))

    async def _on_model(self, peer: bytes, req: m.Empty, _: list[bytes]) -> Reply:
        if peer not in self.roster and self.info.policy != "open":
            return Reply.fail("not-member", "the model goes to members only")
        model = self.model
        reply = m.ModelReply(
            round=model.round, digest=model.digest, content=model.content, proof=model.proof
        )
        return Reply(m.wire(reply), self.model.segments)

    async def _on_leave(self, peer: bytes, req: m.Empty, _: list[bytes]) -> Reply:
        if self.is_leader and peer != self.me:
            del self.roster[peer]
            log.info("group %s: %s left", self.group_id, peer.hex()[:8])
            self.roster_changed()
        return Reply({})

    async def _on_leader_query(self, peer: bytes, req: m.Empty, _: list[bytes]) -> Reply:
        cert = self.cert if self.leader_key is not None else None
        reply = m.LeaderReply(
            term=self.term,
            leader=self.leader_key,
            addr=self.leader_addr,
            cert=cert.encode() if cert is not None else None,
        )
        return Reply(m.wire(reply))

    def _from_my_leader(self, peer: bytes, term: int) -> bool:
        return not self.is_leader and peer == self.leader_key and term == self.term

    async def _on_resign(self, peer: bytes, req: m.Resign, _: list[bytes]) -> Reply:
        if self._from_my_leader(peer, req.term):
            if req.roster is not None:  # elect among the members the leader knew
                self._adopt_roster(req.roster, req.rv)
            self._lease_until = 0.0
            self._leader_lost.set()
        return Reply({})

    async def _on_redirect(self, peer: bytes, req: m.Redirect, _: list[bytes]) -> Reply:
        refusal = self.authorize(peer, req.term, req.cert)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.term}")
        if not self.is_leader:
            self.tasks.spawn(self._follow(req.addr, req.key), name="redirect")
        return Reply({})

    async def _on_roster(self, peer: bytes, req: m.RosterPush, _: list[bytes]) -> Reply:
        refusal = self.authorize(peer, req.term, req.cert)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.term}")
        if not self.is_leader:
            self._adopt_roster(req.roster, req.rv)
        return Reply({})
