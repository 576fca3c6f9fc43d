"""``GroupMember``: one node's part in a group: joining, heartbeats, roster, election, commits.

Everything between members travels over authenticated channels (``ChannelServer``) as ``g.*``
requests. A leader's authority is a certificate of its members' signed votes (``LeaderCert``):
members follow a new leader only when its certificate holds a majority of their roster. The
training itself is the ``fl`` layer's; it asks this object who the members are, what the term
is, and to ``commit`` each new model to a majority before a round counts.

``GroupMember`` is the face the other layers use, and runs the member's loop. The work is done
by parts with one job each, wired here, each given only the parts it uses:

==============  ==============  ======================================================
``seat``        seat.py         the shared facts: who we are, term, role, leader, lease,
                                roster and model; stepping down and resigning
``link``        link.py         requests to peers (the group id, the timeout)
``authority``   authority.py    proofs of leadership and rounds; adopting a leader
``upkeep``      roster.py       quorum, dropping the silent, roster pushes and adoption
``commits``     commits.py      commits to a majority; models stored and fetched
``elections``   elections.py    standing for election, taking office
``following``   following.py    joining, heartbeats, finding the leader, leaving
``handlers``    handlers.py     answering ``g.*`` requests
==============  ==============  ======================================================

The newcomer's side of ``g.join`` is joining.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable
from typing import Any

from ..addresses import Address
from ..aio import TaskOwner
from ..errors import JoinRefused, StepDown
from ..identity import Identity
from ..records.leadership import LeaderCert, founding_cert
from .authority import Authority
from .commits import Commits
from .elections import Elections
from .following import Following
from .handlers import Handlers
from .joining import ask_to_join, leader_named_by
from .link import Link
from .roster import RosterUpkeep
from .seat import Seat
from .state import GroupConfig, GroupInfo, Member, ModelSnapshot
from .transport import Channel, ChannelServer, Reply
from .votes import VoteJournal

__all__ = ["GroupMember", "JoinRefused", "StepDown"]


class GroupMember:
    """A node's membership in one group, as leader or member."""

    def __init__(
        self,
        identity: Identity,
        channels: ChannelServer,
        info: GroupInfo,
        my_addr: Address,
        config: GroupConfig | None = None,
        votes: VoteJournal | None = None,
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.channels = channels
        self.info = info
        self.my_addr = my_addr
        self.config = config or GroupConfig()
        self.tasks = TaskOwner(f"group {info.group_id}")
        self.seat = seat = Seat(identity, info, my_addr, self.config, votes)
        self.link = link = Link(channels, info.group_id, self.config)
        self.authority = authority = Authority(seat, link)
        self.upkeep = upkeep = RosterUpkeep(seat, link, authority, self.tasks)
        self.commits = commits = Commits(seat, link, authority, upkeep, self.tasks)
        self.elections = Elections(seat, link, authority, upkeep, self.tasks)
        self.following = following = Following(seat, link, authority, upkeep, commits)
        self.handlers = Handlers(seat, link, authority, upkeep, commits, following, self.tasks)

    # -- the seat, as the other layers read it -------------------------------------------------

    @property
    def group_id(self) -> str:
        return self.seat.group_id

    @property
    def term(self) -> int:
        return self.seat.term

    @property
    def is_leader(self) -> bool:
        return self.seat.is_leader

    @property
    def role(self) -> str:
        return self.seat.role

    @property
    def leader_key(self) -> bytes | None:
        return self.seat.leader_key

    @property
    def leader_addr(self) -> Address | None:
        return self.seat.leader_addr

    @property
    def cert(self) -> LeaderCert | None:
        """The current leader's proof of its term."""
        return self.seat.cert

    @property
    def cert_blob(self) -> bytes:
        return self.seat.cert_blob

    @property
    def roster(self) -> dict[bytes, Member]:
        return self.seat.roster

    @property
    def roster_version(self) -> tuple[int, int]:
        return self.seat.roster_version

    @property
    def model(self) -> ModelSnapshot:
        return self.seat.model

    @property
    def proven_round(self) -> int:
        return self.seat.proven_round

    def members(self) -> list[Member]:
        """The roster, this node included, ordered by key."""
        return self.seat.members()

    def lease_lapsed(self) -> bool:
        return self.seat.lease_lapsed()

    def leaderless_for(self) -> float:
        """Seconds since this node last led or heard from a leader (0 while it has one)."""
        return self.seat.leaderless_for()

    # -- what the other layers set --------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """We are leaving the group: admit nobody new (``g.join``: "closing")."""
        return self.seat.closing

    @closing.setter
    def closing(self, value: bool) -> None:
        self.seat.closing = value

    @property
    def max_model(self) -> int | None:
        """The most a join reply's model may hold (here and on every rejoin)."""
        return self.following.max_model

    @max_model.setter
    def max_model(self, value: int | None) -> None:
        self.following.max_model = value

    @property
    def on_leader(self) -> Callable[[int], None]:
        return self.seat.on_leader

    @on_leader.setter
    def on_leader(self, hook: Callable[[int], None]) -> None:
        self.seat.on_leader = hook

    @property
    def on_follower(self) -> Callable[[], None]:
        return self.seat.on_follower

    @on_follower.setter
    def on_follower(self, hook: Callable[[], None]) -> None:
        self.seat.on_follower = hook

    @property
    def on_model(self) -> Callable[[ModelSnapshot], None]:
        return self.seat.on_model

    @on_model.setter
    def on_model(self, hook: Callable[[ModelSnapshot], None]) -> None:
        self.seat.on_model = hook

    # -- what the parts do for the other layers ---------------------------------------------------

    async def handle(
        self, channel: Channel, method: str, header: dict[str, Any], segments: list[bytes]
    ) -> Reply:
        """Answer a ``g.*`` request. Malformed requests get an error reply, never an exception."""
        return await self.handlers.handle(channel, method, header, segments)

    def proves(self, cert: LeaderCert) -> bool:
        return self.authority.proves(cert)

    def authorize(
        self, sender: bytes, term: int, cert_blob: bytes | None, addr: Address | None = None
    ) -> str | None:
        return self.authority.authorize(sender, term, cert_blob, addr)

    def adopt_leader(self, cert: LeaderCert, addr: Address | None = None) -> None:
        self.authority.adopt_leader(cert, addr)

    async def heed_stale_term(self, member: Member) -> bool:
        return await self.authority.heed_stale_term(member)

    def has_quorum(self) -> bool:
        return self.upkeep.has_quorum()

    async def confirm_quorum(self) -> bool:
        return await self.upkeep.confirm_quorum()

    def remove_members(self, left: Iterable[bytes]) -> None:
        """As leader: take off the roster the members that obeyed an order to go elsewhere
        (only those: ``RosterUpkeep.remove_members``)."""
        self.upkeep.remove_members(left)

    async def commit(self, snapshot: ModelSnapshot) -> bool:
        return await self.commits.commit(snapshot)

    def adopt_model(self, snapshot: ModelSnapshot) -> None:
        self.commits.adopt_model(snapshot)

    # -- starting and ending ---------------------------------------------------------------------

    def found(self) -> None:
        """Become the first leader of a new group (term 1): only its founder can."""
        if self.me != self.info.founder:
            raise ValueError("only a group's founder can found it")
        self.seat.election.won(1)
        self.seat.cert = founding_cert(self.identity, self.group_id)
        self.elections.become_leader(1)

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
        votes: VoteJournal | None = None,
    ) -> GroupMember:
        """Join the group advertised with ``leader_addr``/``leader_key``; the leader hands over
        the group's charter, its certificate, the roster and the latest model (refused unread
        over ``max_model`` bytes, here and on every rejoin). ``votes``: where this member's
        votes in the group are kept across restarts. Raises ``JoinRefused``."""
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
        member = cls(identity, channels, GroupInfo(charter), my_addr, config, votes)
        member.max_model = max_model
        member.following.admitted(leader_addr, reply, cert, segments)
        return member

    async def join(
        self,
        leader_addr: Address,
        leader_key: bytes,
        invite: str | None = None,
        *,
        trusted: bool = False,
    ) -> None:
        await self.following.join(leader_addr, leader_key, invite, trusted=trusted)

    async def yield_to(self, leader_addr: Address, cert: LeaderCert) -> bool:
        return await self.following.yield_to(leader_addr, cert)

    async def leave(self) -> None:
        await self.following.leave()

    def start(self) -> None:
        """Start heartbeats (as member) or roster upkeep (as leader)."""
        self.tasks.spawn(self._loop(), name="group-loop")

    async def close(self) -> None:
        await self.tasks.close()

    async def _loop(self) -> None:
        seat, hb = self.seat, self.config.heartbeat_interval
        # not ``while True``: on Python 3.11 ``wait_for`` returns instead of raising when it is
        # cancelled just as its event is set (a resigning leader while we shut down)
        while not self.tasks.closed:
            if seat.is_leader:
                self.upkeep.drop_silent_members()
                await asyncio.sleep(hb)
                continue
            if seat.leader_key is None and await self.following.find_leader():
                continue
            await self.following.heartbeat()
            if seat.lease_lapsed():
                await self.elections.elect()
                if seat.lease_lapsed():
                    # lost, or not in the winner's roster (joined just before the old leader
                    # died): ask around who leads now, and join it
                    await self.following.find_leader()
                continue
            seat.leader_lost.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(seat.leader_lost.wait(), hb)
