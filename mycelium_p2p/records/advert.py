"""``GroupAdvert``: the typed view of a group's signed advertisement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..identity import Identity
from .charter import GroupCharter
from .envelope import Record, sign_record
from .kinds import AdvertBody, index_topic
from .leadership import LeaderCert, decode_cert


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
    """A group's advertisement, as published in the DHT index by the group's leader."""

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
    founder: bytes = b""
    cert: LeaderCert | None = None
    #: other groups of this shard its leader led alone and ended lately: (group id, term)
    ended: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_record(cls, record: Record) -> GroupAdvert:
        """The advert a verified ``advert`` record carries (its charter and certificate were
        checked when the record was)."""
        body = record.body
        if not isinstance(body, AdvertBody):
            raise TypeError(f"a {record.kind} record is not an advert")
        charter = GroupCharter.verify(body.charter, check_signature=False)  # checked already
        m = body.metrics
        return cls(
            group_id=charter.group_id,
            name=charter.name,
            task=charter.task,
            leader=body.leader,
            leader_key=record.signer,
            term=body.term,
            policy=charter.policy,
            metrics=GroupMetrics(m.accuracy, m.loss, m.round, m.members, m.capacity),
            seq=record.seq,
            issued_at=record.issued_at,
            expires_at=record.expires_at,
            founder=charter.founder,
            cert=decode_cert(body.cert),
            ended=tuple((group_id, term) for group_id, term in body.ended),
        )

    @property
    def free_slots(self) -> int:
        return max(0, self.metrics.capacity - self.metrics.members)

    @property
    def rank(self) -> tuple[int, int, int]:
        """Which of several adverts of one group is the current one: the newest term, then
        the most rounds, then the latest publication."""
        return (self.term, self.metrics.round, self.seq)

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
            "founder": self.founder.hex(),
        }


def sign_advert(
    leader: Identity,
    *,
    charter: GroupCharter,
    cert: LeaderCert,
    address: tuple[str, int],
    metrics: GroupMetrics,
    seq: int,
    now: float,
    ttl: float,
    ended: Sequence[tuple[str, int]] = (),
) -> Record:
    """The group's advert, signed by its leader; raises ``RecordError`` if it is invalid.

    ``ended``: groups of the same index shard that this leader led alone and ended (their
    last advert said 0 members) lately, as (group id, term). A storing peer keeps one advert
    per shard and signer, so this advert replaces that last word, and a reader would
    otherwise list the ended group again from an earlier leader's advert until it expires."""
    body: dict[str, object] = {
        "charter": charter.blob,
        "leader": [address[0], int(address[1])],
        "term": cert.term,
        "cert": cert.encode(),
        "metrics": {
            "accuracy": float(metrics.accuracy),
            "loss": float(metrics.loss),
            "round": int(metrics.round),
            "members": int(metrics.members),
            "capacity": int(metrics.capacity),
        },
    }
    if ended:
        body["ended"] = [[group_id, int(term)] for group_id, term in ended]
    topic = index_topic(charter.group_id)
    return sign_record(leader, "advert", topic, body, seq=seq, now=now, ttl=ttl)
