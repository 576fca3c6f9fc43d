"""A leader's rounds reaching the members (part of ``GroupMember``): fencing by term, commits
to a majority, and models stored or fetched."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..aio import TaskOwner
from ..errors import MyceliumError
from .election import ElectionState, majority
from .state import Address, GroupConfig, Member, ModelSnapshot
from .transport import ChannelError, RemoteError

log = logging.getLogger(__name__)


class StepDown(MyceliumError):
    """This leader has seen a newer term and must stop."""


class ModelCommits:
    """The model rules of ``GroupMember``."""

    # state and methods provided by GroupMember
    me: bytes
    config: GroupConfig
    election: ElectionState
    roster: dict[bytes, Member]
    model: ModelSnapshot
    tasks: TaskOwner
    group_id: str
    is_leader: bool
    term: int
    leader_key: bytes | None
    leader_addr: Address | None
    on_model: Callable[[ModelSnapshot], None]
    _lease_until: float
    _fetching: bool
    _now: Callable[[], float]
    step_down: Callable[[int], None]
    members: Callable[[], list[Member]]
    _request: Callable[..., Any]

    def fence(self, term: int, sender: bytes, sender_addr: Address | None = None) -> str | None:
        """Check a leader's request: None if it may proceed, else the refusal code."""
        if term < self.term:
            return "stale-term"
        if term > self.term or (self.leader_key is None and not self.is_leader):
            if self.is_leader:
                self.step_down(term)
            self.election.observe(term)
            self.leader_key = sender
            if sender_addr is not None:
                self.leader_addr = sender_addr
        elif sender != self.leader_key:
            return "not-leader"
        if not self.is_leader:
            self._lease_until = self._now() + self.config.lease_timeout
        return None

    async def commit(self, snapshot: ModelSnapshot) -> bool:
        """Give a new model to the members; True once a majority of the roster holds it.

        Raises ``StepDown`` if a member knows a newer term.
        """
        if not self.is_leader:
            raise StepDown("not the leader")
        term = self.term
        others = [m for m in self.members() if m.key != self.me]
        header = {
            "term": term,
            "round": snapshot.round,
            "digest": snapshot.digest,
            "content": snapshot.content,
        }
        replies = await asyncio.gather(
            *(self._request(m.key, m.addr, "g.commit", header, snapshot.segments) for m in others),
            return_exceptions=True,
        )
        # only members the others know of count (see Member.confirmed), against their number
        voting = [m.confirmed for m in others]
        acks = 1
        for member, reply, counts in zip(others, replies, voting, strict=True):
            if isinstance(reply, RemoteError) and reply.code == "stale-term":
                self.step_down(term + 1)
                raise StepDown(f"member {member.key.hex()[:8]} is in a newer term")
            if not isinstance(reply, BaseException):
                acks += counts
                member.round = snapshot.round
        if self.term != term or not self.is_leader:
            raise StepDown("deposed during the commit")
        if acks < majority(1 + sum(voting)):
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

    def _store_model(self, header: dict[str, Any], segments: list[bytes]) -> bool:
        if header.get("content") is None:
            return False
        snapshot = ModelSnapshot.of(int(header["round"]), header["content"], segments)
        if snapshot.digest != header.get("digest"):
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
                self._store_model(header, segments)
            except (ChannelError, RemoteError) as exc:
                log.debug("model fetch failed: %s", exc)
            finally:
                self._fetching = False

        self.tasks.spawn(fetch(), name="fetch-model")
