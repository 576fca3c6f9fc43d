"""A member's side of its leader (``Following``): joining it, the heartbeats that renew our
lease, finding who leads after an election, and leaving; as a leader of a fork, yielding to
the other leader.

A leader of a newer term is followed only on proof: a certificate that is a majority of our
roster, or a majority of our electorate naming it.
"""

from __future__ import annotations

import asyncio
import logging

from ..addresses import Address
from ..errors import BadMessage, ChannelError, JoinRefused, ProofError, RemoteError
from ..records.leadership import LeaderCert, decode_cert, majority
from . import messages as m
from .authority import Authority
from .commits import Commits
from .election import electorate
from .joining import ask_to_join
from .link import Link
from .roster import RosterUpkeep
from .seat import Seat

log = logging.getLogger(__name__)


class Following:
    """Keeping a proven leader, and finding the next one."""

    def __init__(
        self, seat: Seat, link: Link, authority: Authority, upkeep: RosterUpkeep, commits: Commits
    ) -> None:
        self.seat = seat
        self.link = link
        self.authority = authority
        self.upkeep = upkeep
        self.commits = commits
        self.max_model: int | None = None  # the most a join reply's model may hold

    async def join(
        self,
        leader_addr: Address,
        leader_key: bytes,
        invite: str | None = None,
        *,
        trusted: bool = False,
    ) -> None:
        """Ask the leader at ``leader_addr`` to (re)admit us; raises ``JoinRefused``. Unless
        ``trusted`` (our own proven leader sent us, or a majority of our roster named it), a
        leader of a newer term must prove it to our roster first."""
        seat = self.seat
        reply, _, cert, segments = await ask_to_join(
            self.link.channels,
            leader_addr,
            leader_key,
            seat.group_id,
            seat.my_addr,
            invite,
            seat.config.request_timeout,
            self.max_model,
        )
        if not trusted:
            if cert.term < seat.term:
                raise JoinRefused(f"it leads term {cert.term}, behind our term {seat.term}")
            same = cert.term == seat.term and leader_key == seat.leader_key
            if not same and not self.authority.proves(cert):
                raise JoinRefused(f"its certificate for term {cert.term} is not our majority's")
        self.admitted(leader_addr, reply, cert, segments)

    def admitted(
        self, leader_addr: Address, reply: m.JoinReply, cert: LeaderCert, segments: list[bytes]
    ) -> None:
        self.authority.adopt_leader(cert, leader_addr)
        self.upkeep.adopt_roster(reply.roster, reply.rv)
        self.commits.store_model(reply.round, reply.digest, reply.content, segments, reply.proof)

    async def leave(self) -> None:
        """Leave cleanly: a member tells its leader; a leader tells members to elect now."""
        seat = self.seat
        timeout = min(1.0, seat.config.request_timeout)
        if seat.is_leader:
            # with the roster as it is now: members that joined a moment ago may not know each
            # other yet, and an election counted on an old roster can seat two leaders
            others = [m for m in seat.members() if m.key != seat.me]
            header = {
                "term": seat.term,
                "roster": [m.wire() for m in others],
                "rv": (seat.term, seat.roster_version[1] + 1),
            }
            await asyncio.gather(
                *(
                    self.link.request(m.key, m.addr, "g.resign", header, timeout=timeout)
                    for m in others
                ),
                return_exceptions=True,
            )
        elif seat.leader_key is not None and seat.leader_addr is not None:
            await asyncio.gather(
                self.link.request(
                    seat.leader_key, seat.leader_addr, "g.leave", {}, timeout=timeout
                ),
                return_exceptions=True,
            )

    async def yield_to(self, leader_addr: Address, cert: LeaderCert) -> bool:
        """As one of two leaders of this group (its history forked): if ``cert`` proves the
        other's newer term to our roster, join it, then send our members after us. False if it
        proves nothing or would not have us (we go on leading)."""
        seat = self.seat
        if not seat.is_leader or cert.term <= seat.term or not self.authority.proves(cert):
            return False
        others = [mb for mb in seat.members() if mb.key != seat.me]
        header = {"term": seat.term, "cert": seat.cert_blob, "addr": list(leader_addr)}
        try:
            await self.join(leader_addr, cert.leader, trusted=True)  # on success, its member
        except JoinRefused as exc:
            log.warning("group %s: the other leader refused us: %s", seat.group_id, exc)
            return False
        header["key"] = cert.leader
        await asyncio.gather(
            *(self.link.request(mb.key, mb.addr, "g.redirect", header) for mb in others),
            return_exceptions=True,
        )
        return True

    async def follow(self, leader_addr: Address, leader_key: bytes) -> None:
        """Our proven leader sent us to another leader of this group."""
        seat = self.seat
        try:
            await self.join(leader_addr, leader_key, trusted=True)
        except JoinRefused as exc:
            log.info("group %s: redirected but refused: %s", seat.group_id, exc)
            seat.lease_until = 0.0
            seat.leader_lost.set()

    async def heartbeat(self) -> None:
        seat = self.seat
        if seat.leader_key is None or seat.leader_addr is None:
            return
        leader, woken = seat.leader_key, seat.leader_lost.is_set()
        try:
            header, _ = await self.link.request(
                seat.leader_key,
                seat.leader_addr,
                "g.heartbeat",
                {"term": seat.term, "round": seat.model.round, "addr": list(seat.my_addr)},
                timeout=max(0.2, seat.config.lease_timeout / 2),
            )
        except RemoteError as exc:
            if exc.code == "not-member":
                await self._rejoin()
            elif exc.code == "not-leader":
                seat.lease_until = 0.0
            return
        except ChannelError as exc:
            if "cannot connect" in str(exc) or "connection" in str(exc):
                seat.lease_until = 0.0  # refused or reset: the leader is gone, not slow
            return
        if seat.leader_key != leader or (seat.leader_lost.is_set() and not woken):
            return  # it resigned, or another leader announced itself, while we waited
        try:
            reply = m.parse(m.HeartbeatReply, header)
        except BadMessage as exc:
            log.warning("group %s: leader's heartbeat reply refused: %s", seat.group_id, exc)
            return
        if (
            reply.term != seat.term
            and self.authority.authorize(leader, reply.term, reply.cert) is not None
        ):
            return  # a term it cannot prove to us: no lease renewed
        seat.lease_until = seat.now() + seat.config.lease_timeout
        self.upkeep.adopt_roster(reply.roster, reply.rv)
        if reply.round > seat.model.round and seat.leader_addr is not None:
            self.commits.fetch_model_soon(leader, seat.leader_addr)

    async def find_leader(self) -> bool:
        """Ask the other members who leads now, and join it (after being deposed). A leader is
        taken on a certificate that proves its term to our roster, or when a majority of our
        electorate names it (its certificate may count voters we have not heard of yet)."""
        seat = self.seat
        replacing = seat.leader_key or seat.last_leader
        others = [mb for mb in seat.members() if mb.key != seat.me]
        answers = await asyncio.gather(
            *(self.link.request(mb.key, mb.addr, "g.leader", {}, timeout=0.5) for mb in others),
            return_exceptions=True,
        )
        named: dict[tuple[int, bytes], list[Address]] = {}
        proven: list[tuple[int, bytes, Address]] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                continue
            try:
                reply = m.parse(m.LeaderReply, answer[0])
            except BadMessage:
                continue
            leader, addr = reply.leader, reply.addr
            if leader is None or addr is None or leader in (seat.me, replacing):
                continue  # nobody, or the one that failed
            if leader in seat.roster:  # where we know it to be, not where one answer says
                addr = seat.roster[leader].addr
            named.setdefault((reply.term, leader), []).append(addr)
            if reply.cert is not None and reply.term >= seat.term:
                try:
                    cert = decode_cert(reply.cert)
                except ProofError:
                    continue
                if (
                    cert.leader == leader
                    and cert.term == reply.term
                    and self.authority.proves(cert)
                ):
                    proven.append((reply.term, leader, addr))
        electors = len(electorate(seat.roster, replacing))
        vouched = [
            (term, key, addrs[0])
            for (term, key), addrs in named.items()
            if len(addrs) >= majority(electors)
        ]
        for term, key, addr in sorted(proven + vouched, reverse=True):
            try:
                await self.join(addr, key, trusted=(term, key, addr) in vouched)
            except JoinRefused as exc:
                log.info("group %s: the leader refused us back: %s", seat.group_id, exc)
                continue
            return True
        return False

    async def _rejoin(self) -> None:
        seat = self.seat
        if seat.leader_key is None or seat.leader_addr is None:
            return
        try:
            await self.join(seat.leader_addr, seat.leader_key)
        except JoinRefused as exc:
            log.warning("group %s dropped us and refused us back: %s", seat.group_id, exc)
