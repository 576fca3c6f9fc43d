"""A leader's rounds reaching the members (``Commits``): commits to a majority, and models
stored or fetched.

A leader's model counts only once a majority of the roster holds it; a member keeps a model
only from its proven leader, with the commit proof that makes it a round in elections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from ..addresses import Address
from ..aio import TaskOwner
from ..errors import BadMessage, ChannelError, ProofError, RemoteError, StepDown
from ..records.leadership import check_commit, majority, sign_commit
from . import messages as m
from .authority import Authority, may_be_deposed
from .link import Link
from .roster import RosterUpkeep
from .seat import Seat
from .state import ModelSnapshot

log = logging.getLogger(__name__)


class Commits:
    """The group model: committed by the leader, stored or fetched by members."""

    def __init__(
        self, seat: Seat, link: Link, authority: Authority, upkeep: RosterUpkeep, tasks: TaskOwner
    ) -> None:
        self.seat = seat
        self.link = link
        self.authority = authority
        self.upkeep = upkeep
        self.tasks = tasks
        self._fetching = False

    async def commit(self, snapshot: ModelSnapshot) -> bool:
        """Give a new model to the members; True once a majority of the roster holds it.

        Raises ``StepDown`` if a member proves a newer term.
        """
        seat = self.seat
        if not seat.is_leader:
            raise StepDown("not the leader")
        term = seat.term
        others = [member for member in seat.members() if member.key != seat.me]
        former = self.upkeep.former_majority()
        assert seat.cert is not None  # a leader holds the certificate of its term
        proof = sign_commit(seat.identity, seat.cert, snapshot.round, snapshot.digest).encode()
        snapshot = dataclasses.replace(snapshot, proof=proof)
        header = {
            "term": term,
            "cert": seat.cert_blob,
            "round": snapshot.round,
            "digest": snapshot.digest,
            "content": snapshot.content,
            "proof": proof,
        }
        replies = await asyncio.gather(
            *(
                self.link.request(mb.key, mb.addr, "g.commit", header, snapshot.segments)
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
            if may_be_deposed(reply) and await self.authority.heed_stale_term(member):
                raise StepDown(f"member {member.key.hex()[:8]} proved a newer term")
            if not isinstance(reply, BaseException):
                acks += counts
                held += 1
                member.round = snapshot.round
        if seat.term != term or not seat.is_leader:
            raise StepDown("deposed during the commit")
        if acks < majority(1 + sum(voting)) or held < former:
            return False
        self._set_model(snapshot)
        return True

    def _set_model(self, snapshot: ModelSnapshot) -> None:
        seat = self.seat
        if snapshot.round >= seat.model.round:
            seat.model = snapshot
            seat.roster[seat.me].round = snapshot.round
            seat.on_model(snapshot)

    def adopt_model(self, snapshot: ModelSnapshot) -> None:
        """Take a model that was produced or fetched outside a commit (a new leader's start)."""
        self._set_model(snapshot)

    def _check_proof(self, round_: int, digest: bytes, proof: bytes) -> bool:
        seat = self.seat
        try:
            check_commit(
                proof,
                group_id=seat.group_id,
                founder=seat.info.founder,
                round_=round_,
                digest=digest,
            )
        except ProofError as exc:
            log.warning("group %s: a model of round %d: %s", seat.group_id, round_, exc)
            return False
        return True

    def store_model(
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
            log.warning("group %s: unreadable model: %s", self.seat.group_id, exc)
            return False
        if snapshot.digest != digest:
            log.warning("group %s: model digest mismatch; ignored", self.seat.group_id)
            return False
        self._set_model(snapshot)
        return True

    def fetch_model_soon(self, key: bytes, addr: Address) -> None:
        if self._fetching or self.tasks.closed:
            return
        self._fetching = True

        async def fetch() -> None:
            try:
                header, segments = await self.link.request(key, addr, "g.model", {})
                reply = m.parse(m.ModelReply, header)
                self.store_model(reply.round, reply.digest, reply.content, segments, reply.proof)
            except (ChannelError, RemoteError, BadMessage) as exc:
                log.debug("model fetch failed: %s", exc)
            finally:
                self._fetching = False

        self.tasks.spawn(fetch(), name="fetch-model")
