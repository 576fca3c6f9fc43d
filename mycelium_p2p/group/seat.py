"""A member's seat in its group: what every part of ``GroupMember`` reads and changes.

Who we are, our term, whether we lead and whom we follow (with the certificate that proved
it), our lease on that leader, the roster and its version, and the group model. The parts
(roster.py, authority.py, commits.py, elections.py, following.py, handlers.py) share one
``Seat``; each keeps what only it needs to itself. Two changes of role live here because
several parts make them: stepping down when a newer term shows up, and resigning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..addresses import Address
from ..aio import loop_time
from ..identity import Identity
from ..records.leadership import LeaderCert
from .election import ElectionState
from .state import GroupConfig, GroupInfo, Member, ModelSnapshot
from .votes import VoteJournal

log = logging.getLogger(__name__)


class Seat:
    """The facts of one node's membership in one group, as leader or member."""

    def __init__(
        self,
        identity: Identity,
        info: GroupInfo,
        my_addr: Address,
        config: GroupConfig,
        votes: VoteJournal | None = None,
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.info = info
        self.my_addr = my_addr
        self.config = config
        # with a journal, votes survive a restart (Raft's votedFor on stable storage)
        self.election = ElectionState.restored(votes) if votes else ElectionState()
        self.highest_term = 0  # the newest term a voter or a leader showed us
        self.role = "member"
        self.closing = False  # we are leaving it: admit nobody new (``g.join``: "closing")
        self.leader_key: bytes | None = None
        self.leader_addr: Address | None = None
        self.cert: LeaderCert | None = None  # the current leader's proof of its term
        self.last_leader: bytes | None = None  # the leader a lapsed lease leaves behind
        self.lease_until = 0.0
        self.voted_until = 0.0  # we granted a candidate our vote: it may be winning
        self.led_at = loop_time()  # last moment this group had a leader we knew of
        self.leader_lost = asyncio.Event()  # wakes the member's loop: heartbeat or elect now
        self.roster: dict[bytes, Member] = {self.me: Member(self.me, my_addr)}
        self.roster_version = (0, 0)  # (term, changes): see RosterUpkeep.adopt_roster
        self.model = ModelSnapshot()
        # the layer above's hooks
        self.on_leader: Callable[[int], None] = lambda term: None
        self.on_follower: Callable[[], None] = lambda: None
        self.on_model: Callable[[ModelSnapshot], None] = lambda snapshot: None

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

    @property
    def cert_blob(self) -> bytes:
        """This node's leadership certificate, as it travels (empty when not leading)."""
        return self.cert.encode() if self.is_leader and self.cert is not None else b""

    @property
    def proven_round(self) -> int:
        """The round of our model that its commit proof shows (0 without one: a model brought
        from another group, or none yet). Elections compare proven rounds only."""
        return self.model.round if self.model.proof else 0

    def members(self) -> list[Member]:
        """The roster, this node included, ordered by key."""
        return [self.roster[k] for k in sorted(self.roster)]

    def roster_wire(self) -> list[list[Any]]:
        return [member.wire() for member in self.members()]

    def now(self) -> float:
        return loop_time()

    def lease_lapsed(self) -> bool:
        return not self.is_leader and self.now() >= self.lease_until

    def leaderless_for(self) -> float:
        """Seconds since this node last led or heard from a leader (0 while it has one)."""
        if self.is_leader or self.now() < self.lease_until:
            self.led_at = self.now()
        return self.now() - self.led_at

    # -- leaving office ------------------------------------------------------------------------

    def step_down(self, term: int) -> None:
        """A newer term exists: stop leading (the fl layer aborts its round)."""
        self.election.observe(term)
        self.highest_term = max(self.highest_term, term)
        if self.is_leader:
            log.info("group %s: stepping down, term %d is newer", self.group_id, term)
            self.resign()

    def resign(self) -> None:
        """Stop leading; as a member, find the leader or stand in the next election."""
        self.role = "member"
        self.leader_key = self.leader_addr = None
        self.lease_until = 0.0
        self.on_follower()
