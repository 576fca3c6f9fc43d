"""How a group member answers its peers' ``g.*`` requests (part of ``GroupMember``).

``MemberRequests`` holds the request handlers; ``GroupMember`` (member.py) holds the state they
read and change and the loop that drives it. Malformed requests get an error reply, never an
exception.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .election import ElectionState
from .invite import InviteError, verify_invite
from .state import Address, GroupConfig, GroupInfo, Member, ModelSnapshot
from .transport import Channel, ChannelError, RemoteError, Reply

log = logging.getLogger(__name__)


def _addr(value: Any) -> Address:
    host, port = value
    if not isinstance(host, str) or not isinstance(port, int):
        raise ValueError("address must be [host, port]")
    return host, port


class MemberRequests:
    """The ``g.*`` request handlers of ``GroupMember``."""

    # state provided by GroupMember
    me: bytes
    info: GroupInfo
    config: GroupConfig
    election: ElectionState
    roster: dict[bytes, Member]
    model: ModelSnapshot
    leader_key: bytes | None
    leader_addr: Address | None
    my_addr: Address
    _lease_until: float

    # -- answering ---------------------------------------------------------------------------------

    async def handle(
        self, channel: Channel, method: str, header: dict[str, Any], segments: list[bytes]
    ) -> Reply:
        """Answer a ``g.*`` request. Malformed requests get an error reply, never an exception."""
        if header.get("gid") != self.group_id:
            return Reply.fail("wrong-group", f"this node is in group {self.group_id}")
        if method not in ("g.join", "g.model", "g.leader") and channel.peer_key not in self.roster:
            return Reply.fail("not-member", "not in this group's roster")
        try:
            handler = {
                "g.join": self._on_join,
                "g.heartbeat": self._on_heartbeat,
                "g.vote": self._on_vote,
                "g.announce": self._on_announce,
                "g.commit": self._on_commit,
                "g.model": self._on_model,
                "g.leave": self._on_leave,
                "g.resign": self._on_resign,
                "g.roster": self._on_roster,
                "g.redirect": self._on_redirect,
                "g.leader": self._on_leader_query,
            }[method]
        except KeyError:
            return Reply.fail("bad-request", f"unknown method {method}")
        try:
            return await handler(channel.peer_key, header, segments)
        except (KeyError, TypeError, ValueError) as exc:
            return Reply.fail("bad-request", f"{method}: {type(exc).__name__}: {exc}")

    def _not_leader(self) -> Reply:
        hint = list(self.leader_addr) if self.leader_addr else None
        return Reply.fail("not-leader", f"the leader is at {hint}" if hint else "no leader now")

    def _roster_wire(self) -> list[list[Any]]:
        return [m.wire() for m in self.members()]

    async def _on_join(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        if not self.is_leader:
            return self._not_leader()
        addr = _addr(header["addr"])
        if peer not in self.roster:
            if self.info.policy == "invite-only":
                try:
                    verify_invite(
                        str(header.get("invite") or ""),
                        group_key=self.info.key.public_key,
                        member_key=peer,
                        now=time.time(),
                    )
                except InviteError as exc:
                    return Reply.fail("invite", f"group {self.info.name} is invite-only: {exc}")
            if not self.has_quorum():  # admitting while cut off could build a second majority
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
        self.roster[peer] = Member(peer, addr, 0, self._now(), confirmed)
        self.roster_changed()
        reply = {
            "term": self.term,
            "roster": self._roster_wire(),
            "round": self.model.round,
            "digest": self.model.digest,
            "content": self.model.content,
            # the group's facts and key: any member may have to lead (and sign adverts) later
            "secret": self.info.key.private_bytes(),
            "name": self.info.name,
            "task": self.info.task,
            "policy": self.info.policy,
            "capacity": self.info.capacity,
        }
        return Reply(reply, self.model.segments)

    async def _on_heartbeat(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        term = int(header["term"])
        if term > self.term:
            self.step_down(term)
        if not self.is_leader:
            return self._not_leader()
        member = self.roster.get(peer)
        if member is None:
            return Reply.fail("not-member", "not in this group's roster")
        member.addr = _addr(header["addr"])
        member.round = int(header["round"])
        member.last_seen = self._now()
        if member.round > self.model.round:
            self._fetch_model_soon(peer, member.addr)  # a member is ahead: catch up
        return Reply({"term": self.term, "roster": self._roster_wire(), "round": self.model.round})

    async def _on_vote(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        term = int(header["term"])
        lapsed = self.lease_lapsed()
        if not lapsed and not self.is_leader and self.leader_key not in (None, peer):
            lapsed = not await self._probe_leader()
        granted, why = self.election.grant(
            term,
            peer,
            candidate_round=int(header["round"]),
            my_round=self.model.round,
            lease_lapsed=lapsed and not self.is_leader,
        )
        if granted:
            self.roster.setdefault(peer, Member(peer, _addr(header["addr"])))
        return Reply({"granted": granted, "term": self.term, "why": why})

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

    async def _on_announce(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        term = int(header["term"])
        if term < self.term:
            return Reply.fail("stale-term", f"my term is {self.term}")
        self._adopt_leader(peer, _addr(header["addr"]), term)
        self._leader_lost.set()  # wake the loop: heartbeat the new leader now
        return Reply({"term": self.term})

    async def _on_commit(self, peer: bytes, header: dict[str, Any], segments: list[bytes]) -> Reply:
        refusal = self.fence(int(header["term"]), peer)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.term}")
        if not self._store_model(header, segments):
            return Reply.fail("bad-model", "digest mismatch")
        return Reply({"round": self.model.round})

    async def _on_model(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        if peer not in self.roster and self.info.policy != "open":
            return Reply.fail("not-member", "the model goes to members only")
        return Reply(
            {"round": self.model.round, "digest": self.model.digest, "content": self.model.content},
            self.model.segments,
        )

    async def _on_leave(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        if self.is_leader and peer in self.roster and peer != self.me:
            del self.roster[peer]
            log.info("group %s: %s left", self.group_id, peer.hex()[:8])
            self.roster_changed()
        return Reply({})

    async def _on_leader_query(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        return Reply(
            {
                "term": self.term,
                "leader": self.leader_key,
                "addr": list(self.leader_addr) if self.leader_addr else None,
            }
        )

    async def _on_resign(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        if peer == self.leader_key and int(header.get("term", self.term)) >= self.term:
            if "roster" in header:  # elect among the members the leader knew, not our old view
                self._adopt_roster(header["roster"])
            self._lease_until = 0.0
            self._leader_lost.set()
        return Reply({})

    async def _on_redirect(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        addr, key = _addr(header["addr"]), header["key"]  # checked before anything changes
        if not isinstance(key, bytes) or len(key) != 32:
            raise ValueError("key must be 32 bytes")
        refusal = self.fence(int(header["term"]), peer)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.term}")
        if not self.is_leader:
            self.tasks.spawn(self._follow(addr, key), name="redirect")
        return Reply({})

    async def _on_roster(self, peer: bytes, header: dict[str, Any], _: list[bytes]) -> Reply:
        refusal = self.fence(int(header["term"]), peer)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {self.term}")
        if not self.is_leader:
            self._adopt_roster(header["roster"])
        return Reply({})
