"""``GroupMember``: one node's part in a group: joining, heartbeats, roster, election, commits.

Everything between members travels over authenticated channels (``ChannelServer``) as ``g.*``
requests. A leader's authority is a certificate of its members' signed votes (``LeaderCert``):
members follow a new leader only when its certificate holds a majority of their roster. The
training itself is the ``fl`` layer's; it asks this object who the members are, what the term
is, and to ``commit`` each new model to a majority before a round counts. This module holds the
state, the loop, joining and finding the leader (the newcomer's side of ``g.join`` is
joining.py); its other parts are mixins: the request handlers (handlers.py), the roster rules
(roster.py), authority and model commits (commits.py) and standing for election
(elections.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from ..addresses import Address
from ..aio import TaskOwner, loop_time
from ..errors import BadMessage, ChannelError, JoinRefused, ProofError, RemoteError, StepDown
from ..identity import Identity
from ..records.leadership import (
    LeaderCert,
    decode_cert,
    founding_cert,
    majority,
)
from . import messages as m
from .commits import ModelCommits
from .election import ElectionState, electorate
from .elections import Elections
from .handlers import MemberRequests
from .joining import ask_to_join, leader_named_by
from .roster import RosterUpkeep
from .state import GroupConfig, GroupInfo, Member, ModelSnapshot
from .transport import ChannelServer

__all__ = ["GroupMember", "JoinRefused", "StepDown"]

log = logging.getLogger(__name__)


class GroupMember(MemberRequests, RosterUpkeep, ModelCommits, Elections):
    """A node's membership in one group, as leader or member."""

    def __init__(
        self,
        identity: Identity,
        channels: ChannelServer,
        info: GroupInfo,
        my_addr: Address,
        config: GroupConfig | None = None,
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.channels = channels
        self.info = info
        self.my_addr = my_addr
        self.config = config or GroupConfig()
        self.election = ElectionState()
        self.role = "member"
        self.closing = False  # we are leaving it: admit nobody new (``g.join``: "closing")
        self.max_model: int | None = None  # the most a join reply's model may hold
        self.leader_key: bytes | None = None
        self.leader_addr: Address | None = None
        self.cert: LeaderCert | None = None  # the current leader's proof of its term
        self._last_leader: bytes | None = None  # the leader a lapsed lease leaves behind
        self._leaders: dict[int, bytes] = {}  # term -> the leader that proved it to us
        self.roster: dict[bytes, Member] = {self.me: Member(self.me, my_addr)}
        self.roster_version = (0, 0)  # (term, changes): see RosterUpkeep._adopt_roster
        self.model = ModelSnapshot()
        self.on_leader: Callable[[int], None] = lambda term: None
        self.on_follower: Callable[[], None] = lambda: None
        self.on_model: Callable[[ModelSnapshot], None] = lambda snapshot: None
        self.tasks = TaskOwner(f"group {info.group_id}")
        self._lease_until = 0.0
        self._voted_until = 0.0  # we granted a candidate our vote: it may be winning
        self._highest_term = 0
        self._leader_lost = asyncio.Event()
        self._fetching = False
        self._quorum_lost_at: float | None = None
        self._roster_dirty = False
        self._dropped: set[bytes] = set()  # see RosterUpkeep.former_majority
        self._roster_push: asyncio.Task[None] | None = None
        self._led_at = loop_time()  # last moment this group had a leader we knew of

    # -- queries -------------------------------------------------------------------------------

    @property
    def group_id(self) -> str:
        return self.info.group_id

    @property
    def term(self) -> int:
        return self.election.term

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    def members(self) -> list[Member]:
        """The roster, this node included, ordered by key."""
        return [self.roster[k] for k in sorted(self.roster)]

    def _now(self) -> float:
        return loop_time()

    def lease_lapsed(self) -> bool:
        return not self.is_leader and self._now() >= self._lease_until

    def leaderless_for(self) -> float:
        """Seconds since this node last led or heard from a leader (0 while it has one)."""
        if self.is_leader or self._now() < self._lease_until:
            self._led_at = self._now()
        return self._now() - self._led_at

    # -- starting ------------------------------------------------------------------------------

    def found(self) -> None:
        """Become the first leader of a new group (term 1): only its founder can."""
        if self.me != self.info.founder:
            raise ValueError("only a group's founder can found it")
        self.election.won(1)
        self.cert = founding_cert(self.identity, self.group_id)
        self._become_leader(1)

    @classmethod
    async def join_group(
        cls,
        identity: Identity,
        channels: ChannelServer,
        my_addr: Address,
        *,
        group_id: str,
        leader_addr: Address,
        leader_key: bytes,
        invite: str | None = None,
        config: GroupConfig | None = None,
        max_model: int | None = None,
    ) -> GroupMember:
        """Join the group advertised with ``leader_addr``/``leader_key``; the leader hands over
        the group's charter, its certificate, the roster and the latest model (refused unread
        over ``max_model`` bytes, here and on every rejoin). Raises ``JoinRefused``."""
        config = config or GroupConfig()
        ask = functools.partial(ask_to_join, max_model=max_model)
        try:
            reply, charter, cert, segments = await ask(
                channels, leader_addr, leader_key, group_id, my_addr, invite, config.request_timeout
            )
        except JoinRefused as exc:
            if exc.code != "not-leader":
                raise
            # the advert is a term behind (a new leader was elected since it was published):
            # the member we asked names its leader, and we ask there, once; that leader's
            # answer is checked as any leader's is
            leader_key, leader_addr = await leader_named_by(
                channels, leader_addr, leader_key, group_id, config.request_timeout, exc
            )
            reply, charter, cert, segments = await ask(
                channels, leader_addr, leader_key, group_id, my_addr, invite, config.request_timeout
            )
        member = cls(identity, channels, GroupInfo(charter), my_addr, config)
        member.max_model = max_model
        member._admitted(leader_addr, reply, cert, segments)
        return member

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
        reply, _, cert, segments = await ask_to_join(
            self.channels,
            leader_addr,
            leader_key,
            self.group_id,
            self.my_addr,
            invite,
            self.config.request_timeout,
            self.max_model,
        )
        if not trusted:
            if cert.term < self.term:
                raise JoinRefused(f"it leads term {cert.term}, behind our term {self.term}")
            same = cert.term == self.term and leader_key == self.leader_key
            if not same and not self.proves(cert):
                raise JoinRefused(f"its certificate for term {cert.term} is not our majority's")
        self._admitted(leader_addr, reply, cert, segments)

    def _admitted(
        self, leader_addr: Address, reply: m.JoinReply, cert: LeaderCert, segments: list[bytes]
    ) -> None:
        self.adopt_leader(cert, leader_addr)
        self._adopt_roster(reply.roster, reply.rv)
        self._store_model(reply.round, reply.digest, reply.content, segments, reply.proof)

    def start(self) -> None:
        """Start heartbeats (as member) or roster upkeep (as leader)."""
        self.tasks.spawn(self._loop(), name="group-loop")

    async def leave(self) -> None:
        """Leave cleanly: a member tells its leader; a leader tells members to elect now."""
        timeout = min(1.0, self.config.request_timeout)
        if self.is_leader:
            # with the roster as it is now: members that joined a moment ago may not know each
            # other yet, and an election counted on an old roster can seat two leaders
            others = [m for m in self.members() if m.key != self.me]
            header = {
                "term": self.term,
                "roster": [m.wire() for m in others],
                "rv": (self.term, self.roster_version[1] + 1),
            }
            await asyncio.gather(
                *(
                    self._request(m.key, m.addr, "g.resign", header, timeout=timeout)
                    for m in others
                ),
                return_exceptions=True,
            )
        elif self.leader_key is not None and self.leader_addr is not None:
            await asyncio.gather(
                self._request(self.leader_key, self.leader_addr, "g.leave", {}, timeout=timeout),
                return_exceptions=True,
            )

    async def yield_to(self, leader_addr: Address, cert: LeaderCert) -> bool:
        """As one of two leaders of this group (its history forked): if ``cert`` proves the
        other's newer term to our roster, join it, then send our members after us. False if it
        proves nothing or would not have us (we go on leading)."""
        if not self.is_leader or cert.term <= self.term or not self.proves(cert):
            return False
        others = [mb for mb in self.members() if mb.key != self.me]
        header = {"term": self.term, "cert": self.cert_blob, "addr": list(leader_addr)}
        try:
            await self.join(leader_addr, cert.leader, trusted=True)  # on success, its member
        except JoinRefused as exc:
            log.warning("group %s: the other leader refused us: %s", self.group_id, exc)
            return False
        header["key"] = cert.leader
        await asyncio.gather(
            *(self._request(mb.key, mb.addr, "g.redirect", header) for mb in others),
            return_exceptions=True,
        )
        return True

    async def _follow(self, leader_addr: Address, leader_key: bytes) -> None:
        """Our proven leader sent us to another leader of this group."""
        try:
            await self.join(leader_addr, leader_key, trusted=True)
        except JoinRefused as exc:
            log.info("group %s: redirected but refused: %s", self.group_id, exc)
            self._lease_until = 0.0
            self._leader_lost.set()

    async def close(self) -> None:
        await self.tasks.close()

    # -- the loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        hb = self.config.heartbeat_interval
        # not ``while True``: on Python 3.11 ``wait_for`` returns instead of raising when it is
        # cancelled just as its event is set (a resigning leader while we shut down)
        while not self.tasks.closed:
            if self.is_leader:
                self._drop_silent_members()
                await asyncio.sleep(hb)
                continue
            if self.leader_key is None and await self._find_leader():
                continue
            await self._heartbeat()
            if self.lease_lapsed():
                await self._elect()
                if self.lease_lapsed():
                    # lost, or not in the winner's roster (joined just before the old leader
                    # died): ask around who leads now, and join it
                    await self._find_leader()
                continue
            self._leader_lost.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._leader_lost.wait(), hb)

    async def _request(
        self,
        key: bytes,
        addr: Address,
        method: str,
        header: dict[str, Any],
        segments: list[bytes] | tuple[bytes, ...] = (),
        *,
        timeout: float | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        header = {"gid": self.group_id, **header}
        return await self.channels.request(
            addr,
            key,
            method,
            header,
            segments,
            timeout=self.config.request_timeout if timeout is None else timeout,
        )

    async def _heartbeat(self) -> None:
        if self.leader_key is None or self.leader_addr is None:
            return
        leader, woken = self.leader_key, self._leader_lost.is_set()
        try:
            header, _ = await self._request(
                self.leader_key,
                self.leader_addr,
                "g.heartbeat",
                {"term": self.term, "round": self.model.round, "addr": list(self.my_addr)},
                timeout=max(0.2, self.config.lease_timeout / 2),
            )
        except RemoteError as exc:
            if exc.code == "not-member":
                await self._rejoin()
            elif exc.code == "not-leader":
                self._lease_until = 0.0
            return
        except ChannelError as exc:
            if "cannot connect" in str(exc) or "connection" in str(exc):
                self._lease_until = 0.0  # refused or reset: the leader is gone, not slow
            return
        if self.leader_key != leader or (self._leader_lost.is_set() and not woken):
            return  # it resigned, or another leader announced itself, while we waited
        try:
            reply = m.parse(m.HeartbeatReply, header)
        except BadMessage as exc:
            log.warning("group %s: leader's heartbeat reply refused: %s", self.group_id, exc)
            return
        if reply.term != self.term and self.authorize(leader, reply.term, reply.cert) is not None:
            return  # a term it cannot prove to us: no lease renewed
        self._lease_until = self._now() + self.config.lease_timeout
        self._adopt_roster(reply.roster, reply.rv)
        if reply.round > self.model.round and self.leader_addr is not None:
            self._fetch_model_soon(leader, self.leader_addr)

    async def _find_leader(self) -> bool:
        """Ask the other members who leads now, and join it (after being deposed). A leader is
        taken on a certificate that proves its term to our roster, or when a majority of our
        electorate names it (its certificate may count voters we have not heard of yet)."""
        replacing = self.leader_key or self._last_leader
        others = [mb for mb in self.members() if mb.key != self.me]
        answers = await asyncio.gather(
            *(self._request(mb.key, mb.addr, "g.leader", {}, timeout=0.5) for mb in others),
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
            if leader is None or addr is None or leader in (self.me, replacing):
                continue  # nobody, or the one that failed
            if leader in self.roster:  # where we know it to be, not where one answer says
                addr = self.roster[leader].addr
            named.setdefault((reply.term, leader), []).append(addr)
            if reply.cert is not None and reply.term >= self.term:
                try:
                    cert = decode_cert(reply.cert)
                except ProofError:
                    continue
                if cert.leader == leader and cert.term == reply.term and self.proves(cert):
                    proven.append((reply.term, leader, addr))
        electors = len(electorate(self.roster, replacing))
        vouched = [
            (term, key, addrs[0])
            for (term, key), addrs in named.items()
            if len(addrs) >= majority(electors)
        ]
        for term, key, addr in sorted(proven + vouched, reverse=True):
            try:
                await self.join(addr, key, trusted=(term, key, addr) in vouched)
            except JoinRefused as exc:
                log.info("group %s: the leader refused us back: %s", self.group_id, exc)
                continue
            return True
        return False

    async def _rejoin(self) -> None:
        if self.leader_key is None or self.leader_addr is None:
            return
        try:
            await self.join(self.leader_addr, self.leader_key)
        except JoinRefused as exc:
            log.warning("group %s dropped us and refused us back: %s", self.group_id, exc)
