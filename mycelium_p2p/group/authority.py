"""Whom a member follows, and why: a leader's authority is proven, never claimed.

A leader proves its term with a certificate of its members' signed votes (``LeaderCert``); a
member follows it only when those votes are a majority of its own roster. A model round is
proven by the signed commit of that term's leader. ``Authority`` checks both, and adopts a
proven leader into the seat.
"""

from __future__ import annotations

import logging

from ..addresses import Address
from ..errors import BadMessage, ChannelError, ProofError, RemoteError
from ..records.leadership import (
    LeaderCert,
    check_cert,
    check_commit,
    decode_cert,
    proves_leadership,
)
from . import messages as m
from .link import Link
from .seat import Seat
from .state import Member

log = logging.getLogger(__name__)


def may_be_deposed(reply: object) -> bool:
    """Whether a member's answer to a leader's request may mean a newer term deposed it: the
    member refused our term ("stale-term"), or its roster, which a newer leader sent it, no
    longer names us ("not-member"). Either way ``heed_stale_term`` asks for the proof."""
    return isinstance(reply, RemoteError) and reply.code in ("stale-term", "not-member")


class Authority:
    """Proofs of leadership and of rounds, checked against the seat's roster."""

    def __init__(self, seat: Seat, link: Link) -> None:
        self.seat = seat
        self.link = link
        self._leaders: dict[int, bytes] = {}  # term -> the leader that proved it to us

    def proves(self, cert: LeaderCert) -> bool:
        """Whether ``cert`` proves its leader's term to us: votes of a majority of our roster,
        without the leader it replaces (ours until now, or us if we lead)."""
        seat = self.seat
        replacing = seat.me if seat.is_leader else (seat.leader_key or seat.last_leader)
        return proves_leadership(
            cert, group_id=seat.group_id, roster=seat.roster.keys(), replacing=replacing
        )

    def authorize(
        self, sender: bytes, term: int, cert_blob: bytes | None, addr: Address | None = None
    ) -> str | None:
        """Check a leader's request: None if ``sender`` leads ``term`` (adopting it when it is
        new to us and its certificate proves it), else the refusal code."""
        seat = self.seat
        if term < seat.term:
            return "stale-term"
        # whom we follow in *this* term (having voted in a term adopts it, with no leader yet)
        known = seat.leader_key if seat.cert is not None and seat.cert.term == term else None
        if known is not None and sender == known and not seat.is_leader:
            seat.lease_until = seat.now() + seat.config.lease_timeout
            return None
        if known is not None:
            return "not-leader"  # one leader a term: a second claim proves nothing
        try:
            cert = decode_cert(cert_blob or b"")
            check_cert(cert, group_id=seat.group_id, founder=seat.info.founder)
        except ProofError as exc:
            log.warning(
                "group %s: %s claims term %d without proof: %s",
                seat.group_id,
                sender.hex()[:8],
                term,
                exc,
            )
            return "unproven"
        if cert.leader != sender or cert.term != term or not self.proves(cert):
            log.warning(
                "group %s: %s's certificate for term %d is not a majority of our roster",
                seat.group_id,
                sender.hex()[:8],
                term,
            )
            return "unproven"
        self.adopt_leader(cert, addr)
        return None

    def adopt_leader(self, cert: LeaderCert, addr: Address | None = None) -> None:
        """Follow ``cert``'s leader (already proven to us)."""
        seat = self.seat
        if seat.is_leader and cert.leader != seat.me:
            seat.step_down(cert.term)
        seat.election.won(cert.term)
        self.remember_leader(cert.term, cert.leader)
        seat.role = "leader" if cert.leader == seat.me else "member"
        known = seat.roster.get(cert.leader)
        seat.leader_key = seat.last_leader = cert.leader
        seat.leader_addr = addr or (known.addr if known else seat.leader_addr)
        seat.cert = cert
        seat.lease_until = seat.now() + seat.config.lease_timeout

    def remember_leader(self, term: int, leader: bytes) -> None:
        """Note who proved the lead of ``term`` to us (we check commit proofs against it)."""
        self._leaders[term] = leader
        while len(self._leaders) > 64:
            del self._leaders[min(self._leaders)]

    async def heed_stale_term(self, member: Member) -> bool:
        """A member refused us with "stale-term" or "not-member": ask it who leads now. True
        (and we step down) only if it shows a certificate that proves a newer term to us."""
        seat = self.seat
        try:
            header, _ = await self.link.request(
                member.key, member.addr, "g.leader", {}, timeout=1.0
            )
            reply = m.parse(m.LeaderReply, header)
            if reply.cert is None or reply.term <= seat.term:
                return False
            cert = decode_cert(reply.cert)
            check_cert(cert, group_id=seat.group_id, founder=seat.info.founder)
        except (ChannelError, RemoteError, BadMessage, ProofError) as exc:
            log.debug("could not check %s's newer term: %s", member.key.hex()[:8], exc)
            return False
        if cert.term <= seat.term or not self.proves(cert):
            return False
        self.adopt_leader(cert, reply.addr)
        return True

    def candidate_round(self, round_: int, proof: bytes) -> int | None:
        """The round a candidate for leader holds, if its ``proof`` shows it to us: a commit
        signed by the leader of that term as we know it (or as our roster's majority voted).
        None if it claims a round it cannot prove."""
        seat = self.seat
        if round_ == 0:
            return 0
        try:
            cert = check_commit(
                proof, group_id=seat.group_id, founder=seat.info.founder, round_=round_
            ).cert
        except ProofError as exc:
            log.info("group %s: a candidate claims round %d: %s", seat.group_id, round_, exc)
            return None
        known = self._leaders.get(cert.term)
        if known == cert.leader or (cert.term == 1 and known is None):
            return round_
        if known is None:  # a term we did not see: its votes must be our majority's
            roster = set(seat.roster) | ({seat.last_leader} if seat.last_leader else set())
            if proves_leadership(cert, group_id=seat.group_id, roster=roster, replacing=None):
                return round_
        log.info("group %s: a candidate's round %d has no proof we accept", seat.group_id, round_)
        return None
