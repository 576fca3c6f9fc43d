"""A leader's rounds reaching the members (part of ``GroupMember``): proven authority, commits
to a majority, and models stored or fetched."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ..addresses import Address
from ..aio import TaskOwner
from ..errors import BadMessage, ChannelError, ProofError, RemoteError, StepDown
from ..identity import Identity
from ..records.leadership import (
    LeaderCert,
    check_cert,
    check_commit,
    decode_cert,
    majority,
    proves_leadership,
    sign_commit,
)
from . import messages as m
from .election import ElectionState
from .state import GroupConfig, GroupInfo, Member, MemberFacts, ModelSnapshot

log = logging.getLogger(__name__)


def may_be_deposed(reply: object) -> bool:
    """Whether a member's answer to a leader's request may mean a newer term deposed it: the
    member refused our term ("stale-term"), or its roster, which a newer leader sent it, no
    longer names us ("not-member"). Either way ``heed_stale_term`` asks for the proof."""
    return isinstance(reply, RemoteError) and reply.code in ("stale-term", "not-member")


class ModelCommits(MemberFacts):
    """The authority and model rules of ``GroupMember``."""

    # state and methods provided by GroupMember
    identity: Identity
    me: bytes
    info: GroupInfo
    config: GroupConfig
    election: ElectionState
    roster: dict[bytes, Member]
    model: ModelSnapshot
    tasks: TaskOwner
    role: str
    cert: LeaderCert | None
    leader_key: bytes | None
    leader_addr: Address | None
    on_model: Callable[[ModelSnapshot], None]
    _lease_until: float
    _last_leader: bytes | None
    _leaders: dict[int, bytes]
    _fetching: bool
    _now: Callable[[], float]
    step_down: Callable[[int], None]
    members: Callable[[], list[Member]]
    former_majority: Callable[[], int]
    _request: Callable[..., Any]

    # -- authority -----------------------------------------------------------------------------

    def proves(self, cert: LeaderCert) -> bool:
        """Whether ``cert`` proves its leader's term to us: votes of a majority of our roster,
        without the leader it replaces (ours until now, or us if we lead)."""
        replacing = self.me if self.is_leader else (self.leader_key or self._last_leader)
        return proves_leadership(
            cert, group_id=self.group_id, roster=self.roster.keys(), replacing=replacing
        )

    def authorize(
        self, sender: bytes, term: int, cert_blob: bytes | None, addr: Address | None = None
    ) -> str | None:
        """Check a leader's request: None if ``sender`` leads ``term`` (adopting it when it is
        new to us and its certificate proves it), else the refusal code."""
        if term < self.term:
            return "stale-term"
        # whom we follow in *this* term (having voted in a term adopts it, with no leader yet)
        known = self.leader_key if self.cert is not None and self.cert.term == term else None
        if known is not None and sender == known and not self.is_leader:
            self._lease_until = self._now() + self.config.lease_timeout
            return None
        if known is not None:
            return "not-leader"  # one leader a term: a second claim proves nothing
        try:
            cert = decode_cert(cert_blob or b"")
            check_cert(cert, group_id=self.group_id, founder=self.info.founder)
        except ProofError as exc:
            log.warning(
                "group %s: %s claims term %d without proof: %s",
                self.group_id,
                sender.hex()[:8],
                term,
                exc,
            )
            return "unproven"
        if cert.leader != sender or cert.term != term or not self.proves(cert):
            log.warning(
                "group %s: %s's certificate for term %d is not a majority of our roster",
                self.group_id,
                sender.hex()[:8],
                term,
            )
            return "unproven"
        self.adopt_leader(cert, addr)
        return None

    def adopt_leader(self, cert: LeaderCert, addr: Address | None = None) -> None:
        """Follow ``cert``'s leader (already proven to us)."""
        if self.is_leader and cert.leader != self.me:
            self.step_down(cert.term)
        self.election.won(cert.term)
        self.remember_leader(cert.term, cert.leader)
        self.role = "leader" if cert.leader == self.me else "member"
        known = self.roster.get(cert.leader)
        self.leader_key = self._last_leader = cert.leader
        self.leader_addr = addr or (known.addr if known else self.leader_addr)
        self.cert = cert
        self._lease_until = self._now() + self.config.lease_timeout

    def remember_leader(self, term: int, leader: bytes) -> None:
        """Note who proved the lead of ``term`` to us (we check commit proofs against it)."""
        self._leaders[term] = leader
        while len(self._leaders) > 64:
            del self._leaders[min(self._leaders)]

    async def heed_stale_term(self, member: Member) -> bool:
        """A member refused us with "stale-term" or "not-member": ask it who leads now. True
        (and we step down) only if it shows a certificate that proves a newer term to us."""
        try:
            header, _ = await self._request(member.key, member.addr, "g.leader", {}, timeout=1.0)
            reply = m.parse(m.LeaderReply, header)
            if reply.cert is None or reply.term <= self.term:
                return False
            cert = decode_cert(reply.cert)
            check_cert(cert, group_id=self.group_id, founder=self.info.founder)
        except (ChannelError, RemoteError, BadMessage, ProofError) as exc:
            log.debug("could not check %s's newer term: %s", member.key.hex()[:8], exc)
            return False
        if cert.term <= self.term or not self.proves(cert):
            return False
        self.adopt_leader(cert, reply.addr)
        return True

    # -- commits -------------------------------------------------------------------------------

    async def commit(self, snapshot: ModelSnapshot) -> bool:
        """Give a new model to the members; True once a majority of the roster holds it.

        Raises ``StepDown`` if a member proves a newer term.
        """
        if not self.is_leader:
            raise StepDown("not the leader")
        term = self.term
        others = [member for member in self.members() if member.key != self.me]
        former = self.former_majority()
        assert self.cert is not None  # a leader holds the certificate of its term
        proof = sign_commit(self.identity, self.cert, snapshot.round, snapshot.digest).encode()
        snapshot = dataclasses.replace(snapshot, proof=proof)
        header = {
            "term": term,
            "cert": self.cert_blob,
            "round": snapshot.round,
            "digest": snapshot.digest,
            "content": snapshot.content,
            "proof": proof,
        }
        replies = await asyncio.gather(
            *(
                self._request(mb.key, mb.addr, "g.commit", header, snapshot.segments)
                for mb in others
            ),
            return_exceptions=True,
        )
        # A majority of the members the others know of (see Member.confirmed), and of the whole
        # roster: a member that missed a join elects on the roster without the newcomer, one
        # that heard of it on the roster with it, and a commit must meet both their majorities
        # (Raft's joint majority while a membership change is under way); the whole roster
        # still names the members we dropped until most of it heard (``former_majority``).
        voting = [member.confirmed for member in others]
        acks = held = 1
        for member, reply, counts in zip(others, replies, voting, strict=True):
            if may_be_deposed(reply) and await self.heed_stale_term(member):
                raise StepDown(f"member {member.key.hex()[:8]} proved a newer term")
            if not isinstance(reply, BaseException):
                acks += counts
                held += 1
                member.round = snapshot.round
        if self.term != term or not self.is_leader:
            raise StepDown("deposed during the commit")
        if acks < majority(1 + sum(voting)) or held < former:
            return False
        self._set_model(snapshot)
        return True

    def _set_model(self, snapshot: ModelSnapshot) -> None:
        if snapshot.round >= self.model.round:
            self.model = snapshot
            self.roster[self.me].round = snapshot.round
            self.on_model(snapshot)

    def adopt_model(self, snapshot: ModelSnapshot) -> None:
        """Take a model that was produced or fetched outside a commit (a new leader's start)."""
        self._set_model(snapshot)

    # -- which round a model is: proven by its leader's signed commit ----------------------------

    @property
    def proven_round(self) -> int:
        """The round of our model that its commit proof shows (0 without one: a model brought
        from another group, or none yet). Elections compare proven rounds only."""
        return self.model.round if self.model.proof else 0

    def _check_proof(self, round_: int, digest: bytes, proof: bytes) -> bool:
        try:
            check_commit(
                proof,
                group_id=self.group_id,
                founder=self.info.founder,
                round_=round_,
                digest=digest,
            )
        except ProofError as exc:
            log.warning("group %s: a model of round %d: %s", self.group_id, round_, exc)
            return False
        return True

    def candidate_round(self, round_: int, proof: bytes) -> int | None:
        """The round a candidate for leader holds, if its ``proof`` shows it to us: a commit
        signed by the leader of that term as we know it (or as our roster's majority voted).
        None if it claims a round it cannot prove."""
        if round_ == 0:
            return 0
        try:
            cert = check_commit(
                proof, group_id=self.group_id, founder=self.info.founder, round_=round_
            ).cert
        except ProofError as exc:
            log.info("group %s: a candidate claims round %d: %s", self.group_id, round_, exc)
            return None
        known = self._leaders.get(cert.term)
        if known == cert.leader or (cert.term == 1 and known is None):
            return round_
        if known is None:  # a term we did not see: its votes must be our majority's
            roster = set(self.roster) | ({self._last_leader} if self._last_leader else set())
            if proves_leadership(cert, group_id=self.group_id, roster=roster, replacing=None):
                return round_
        log.info("group %s: a candidate's round %d has no proof we accept", self.group_id, round_)
        return None

    def _store_model(
        self,
        round_: int,
        digest: bytes,
        content: Any,
        segments: list[bytes],
        proof: bytes = b"",
        *,
        need_proof: bool = False,
    ) -> bool:
        """Keep a model our leader sent. A commit must carry its proof; a model sent on join or
        fetch keeps one when it has it (else it counts as round 0 in elections)."""
        if content is None:
            return False
        if (proof or need_proof) and not self._check_proof(round_, digest, proof):
            if need_proof:
                return False
            proof = b""
        try:
            snapshot = ModelSnapshot.of(round_, content, segments, proof)
        except (TypeError, ValueError) as exc:  # content msgpack cannot encode again
            log.warning("group %s: unreadable model: %s", self.group_id, exc)
            return False
        if snapshot.digest != digest:
            log.warning("group %s: model digest mismatch; ignored", self.group_id)
            return False
        self._set_model(snapshot)
        return True

    def _fetch_model_soon(self, key: bytes, addr: Address) -> None:
        if self._fetching or self.tasks.closed:
            return
        self._fetching = True

        async def fetch() -> None:
            try:
                header, segments = await self._request(key, addr, "g.model", {})
                reply = m.parse(m.ModelReply, header)
                self._store_model(reply.round, reply.digest, reply.content, segments, reply.proof)
            except (ChannelError, RemoteError, BadMessage) as exc:
                log.debug("model fetch failed: %s", exc)
            finally:
                self._fetching = False

        self.tasks.spawn(fetch(), name="fetch-model")
