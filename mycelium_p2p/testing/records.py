"""Signed records for tests and benchmarks: a new group's advert, and ways to break one."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgpack

from ..identity import Identity
from ..records import GroupAdvert, GroupMetrics, Record, sign_advert
from ..records.charter import GroupCharter
from ..records.envelope import RECORD_DOMAIN
from ..records.leadership import founding_cert

__all__ = ["group_id_of_advert", "make_advert", "payload_of", "resign", "tampered"]


def make_advert(
    leader: Identity | None = None,
    *,
    seq: int = 1,
    now: float | None = None,
    ttl: float = 60.0,
    name: str = "g",
    task: str = "digits",
    accuracy: float = 0.5,
    members: int = 1,
    policy: str = "open",
    round_: int = 3,
    address: tuple[str, int] = ("127.0.0.1", 9000),
) -> Record:
    """A new group's advert: ``leader`` founded it and leads term 1."""
    leader = leader or Identity.generate()
    now = time.time() if now is None else now
    # the same leader and name: the same group (and so the same DHT key), whatever the time
    nonce = hashlib.sha256(leader.public_key + name.encode()).digest()[:8]
    charter = GroupCharter.found(
        leader, name=name, task=task, policy=policy, now=1.7e9, nonce=nonce
    )
    return sign_advert(
        leader,
        charter=charter,
        cert=founding_cert(leader, charter.group_id),
        address=address,
        metrics=GroupMetrics(
            accuracy=accuracy, loss=1.0, round=round_, members=members, capacity=10
        ),
        seq=seq,
        now=now,
        ttl=ttl,
    )


def group_id_of_advert(record: Record) -> str:
    return GroupAdvert.from_record(record).group_id


def resign(identity: Identity, payload: dict[str, Any]) -> bytes:
    """Encode and sign an arbitrary payload, bypassing ``sign_record``'s own checks."""
    raw: bytes = msgpack.packb(payload, use_bin_type=True)
    blob: bytes = msgpack.packb([raw, identity.sign(RECORD_DOMAIN + raw)], use_bin_type=True)
    return blob


def payload_of(blob: bytes) -> dict[str, Any]:
    raw, _ = msgpack.unpackb(blob, raw=False)
    payload: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    return payload


def tampered(record: Record, accuracy: float) -> bytes:
    """The record with its accuracy changed and its original signature kept."""
    _, sig = msgpack.unpackb(record.blob, raw=False)
    payload = payload_of(record.blob)
    payload["body"]["metrics"]["accuracy"] = accuracy
    blob: bytes = msgpack.packb([msgpack.packb(payload), sig])
    return blob
