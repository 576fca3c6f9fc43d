"""What a group member knows: the group, its members, and the latest group model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..addresses import Address
from ..records.charter import POLICIES, GroupCharter

# Address is addresses.Address, named here for node/ (which still imports it from here)
__all__ = ["POLICIES", "Address", "GroupConfig", "GroupInfo", "Member", "ModelSnapshot"]


@dataclass(frozen=True)
class GroupConfig:
    """Timing of membership and elections (seconds)."""

    heartbeat_interval: float = 1.0
    lease_factor: float = 2.5  # a leader silent this many heartbeats has lapsed
    member_factor: float = 5.0  # a member silent this many heartbeats leaves the roster
    request_timeout: float = 5.0

    @property
    def lease_timeout(self) -> float:
        return self.lease_factor * self.heartbeat_interval

    @property
    def member_timeout(self) -> float:
        return self.member_factor * self.heartbeat_interval

    @property
    def stagger(self) -> float:
        """How long each candidate rank waits before standing."""
        return 0.5 * self.heartbeat_interval


@dataclass(frozen=True)
class GroupInfo:
    """A group's fixed facts: its signed charter. No key signs for the group itself."""

    charter: GroupCharter

    @property
    def group_id(self) -> str:
        return self.charter.group_id

    @property
    def name(self) -> str:
        return self.charter.name

    @property
    def task(self) -> str:
        return self.charter.task

    @property
    def policy(self) -> str:
        return self.charter.policy

    @property
    def capacity(self) -> int:
        return self.charter.capacity

    @property
    def founder(self) -> bytes:
        return self.charter.founder


@dataclass
class Member:
    """One member as the roster knows it."""

    key: bytes
    addr: Address
    round: int = 0
    last_seen: float = 0.0
    # (leader's view) the other members know of this one: a majority of the members confirmed
    # before it acknowledged a roster naming it. Only then do its acks count toward the
    # majority of confirmed members a commit needs (a member that missed the join could win
    # an election on the roster without it); the whole roster's majority counts them always.
    confirmed: bool = True

    def wire(self) -> list[Any]:
        return [self.key, self.addr[0], self.addr[1], self.round]


@dataclass(frozen=True)
class ModelSnapshot:
    """A group model at a round: opaque to this layer (``content`` + raw ``segments``)."""

    round: int = 0
    digest: bytes = bytes(32)
    content: Any = None
    segments: tuple[bytes, ...] = field(default=(), repr=False)
    proof: bytes = field(default=b"", repr=False)  # the leader's signed commit (CommitProof)

    @staticmethod
    def digest_of(content: Any, segments: tuple[bytes, ...] | list[bytes]) -> bytes:
        """The hash of a model: its description and every buffer, in order."""
        h = hashlib.sha256(msgpack.packb(content, use_bin_type=True))
        for segment in segments:
            h.update(len(segment).to_bytes(8, "big"))
            h.update(segment)
        return h.digest()

    @classmethod
    def of(
        cls, round_: int, content: Any, segments: list[bytes], proof: bytes = b""
    ) -> ModelSnapshot:
        return cls(round_, cls.digest_of(content, segments), content, tuple(segments), proof)

    @property
    def empty(self) -> bool:
        return self.content is None
