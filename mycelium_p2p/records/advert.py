"""``GroupAdvert``: the typed view of a group's signed advertisement."""

from __future__ import annotations

from dataclasses import dataclass

from ..identity import Identity, group_id_for
from .envelope import Record, sign_record
from .kinds import index_topic


@dataclass(frozen=True)
class GroupMetrics:
    """What a group reports about itself. Self-reported: migration re-measures it."""

    accuracy: float = 0.0
    loss: float = 0.0
    round: int = 0
    members: int = 0
    capacity: int = 10


@dataclass(frozen=True)
class GroupAdvert:
    """A group's advertisement, as published in the DHT index."""

    group_id: str
    name: str
    task: str
    leader: tuple[str, int]
    leader_key: bytes
    term: int
    policy: str
    metrics: GroupMetrics
    seq: int = 0
    issued_at: float = 0.0
    expires_at: float = 0.0
    signer: bytes = b""

    @classmethod
    def from_record(cls, record: Record) -> GroupAdvert:
        """The advert a verified ``advert`` record carries."""
        body = record.body
        host, port = body["leader"]
        return cls(
            group_id=body["group_id"],
            name=body["name"],
            task=body["task"],
            leader=(host, port),
            leader_key=body["leader_key"],
            term=body["term"],
            policy=body["policy"],
            metrics=GroupMetrics(**body["metrics"]),
            seq=record.seq,
            issued_at=record.issued_at,
            expires_at=record.expires_at,
            signer=record.signer,
        )

    @property
    def free_slots(self) -> int:
        return max(0, self.metrics.capacity - self.metrics.members)

    def to_json(self) -> dict[str, object]:
        """A plain-JSON description (for ``groups --json``)."""
        m = self.metrics
        return {
            "group_id": self.group_id,
            "name": self.name,
            "task": self.task,
            "leader": f"{self.leader[0]}:{self.leader[1]}",
            "leader_key": self.leader_key.hex(),
            "term": self.term,
            "policy": self.policy,
            "accuracy": m.accuracy,
            "loss": m.loss,
            "round": m.round,
            "members": m.members,
            "capacity": m.capacity,
            "seq": self.seq,
            "expires_at": self.expires_at,
            "group_key": self.signer.hex(),
        }


def sign_advert(
    group: Identity,
    *,
    name: str,
    task: str,
    leader: tuple[str, int],
    leader_key: bytes,
    term: int,
    policy: str,
    metrics: GroupMetrics,
    seq: int,
    now: float,
    ttl: float,
) -> Record:
    """Sign a group's advert with the group key; raises ``RecordError`` if it is invalid."""
    group_id = group_id_for(group.public_key)
    body = {
        "group_id": group_id,
        "name": name,
        "task": task,
        "leader": [leader[0], int(leader[1])],
        "leader_key": leader_key,
        "term": int(term),
        "policy": policy,
        "metrics": {
            "accuracy": float(metrics.accuracy),
            "loss": float(metrics.loss),
            "round": int(metrics.round),
            "members": int(metrics.members),
            "capacity": int(metrics.capacity),
        },
    }
    return sign_record(group, "advert", index_topic(group_id), body, seq=seq, now=now, ttl=ttl)
