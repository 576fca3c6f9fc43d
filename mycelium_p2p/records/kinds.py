"""The kinds of record the network stores, their body schemas and their topic rules.

A record is stored under the DHT key derived from its topic (and, for an *owned* topic, its
signer), so each kind says which topics it may use. Cross-field rules (a group advert's
``group_id`` must be its signer's) live in each kind's ``check``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import MalformedRecord
from .charter import GROUP_ID_HEX_LEN, MAX_CAPACITY, MAX_CHARTER_BYTES, GroupCharter
from .leadership import MAX_CERT_BYTES, MAX_TERM, check_cert, decode_cert
from .schema import Blob, Bytes, Float, Int, Map, Str, Tuple

#: Group adverts are spread over this many index keys so no single DHT key holds them all.
INDEX_SHARDS = 4
MAX_PORT = 65535

GroupIdField = Str(max_len=GROUP_ID_HEX_LEN, min_len=GROUP_ID_HEX_LEN)
AddressField = Tuple((Str(max_len=253, min_len=1), Int(lo=0, hi=MAX_PORT)))


def index_topic(group_id: str) -> str:
    """The index topic a group advertises under: ``groups/<shard>``."""
    shard = int(hashlib.sha1(group_id.encode()).hexdigest(), 16) % INDEX_SHARDS
    return f"groups/{shard}"


def index_topics() -> list[str]:
    """Every index topic, for listing all groups."""
    return [f"groups/{shard}" for shard in range(INDEX_SHARDS)]


@dataclass(frozen=True)
class RecordKind:
    """What a kind of record looks like and where it may be stored."""

    name: str
    body: Map
    owned: bool
    check: Callable[[bytes, str, Mapping[str, Any]], None]
    max_ttl: float = 3600.0
    max_bytes: int = 1000


def _check_advert(signer: bytes, topic: str, body: Mapping[str, Any]) -> None:
    """An advert is signed by the leader it names, for the group of the charter it carries,
    with a certificate of the term it claims (see ``leadership.check_cert``)."""
    charter = GroupCharter.verify(body["charter"])
    if topic != index_topic(charter.group_id):
        raise MalformedRecord(
            f"advert for {charter.group_id} filed under the wrong topic {topic!r}"
        )
    cert = decode_cert(body["cert"])
    check_cert(cert, group_id=charter.group_id, founder=charter.founder)
    if cert.leader != signer or cert.term != body["term"]:
        raise MalformedRecord("an advert's signer must be the leader its certificate proves")
    metrics = body["metrics"]
    if metrics["capacity"] != charter.capacity or metrics["members"] > charter.capacity:
        raise MalformedRecord("advert's capacity or member count contradicts its charter")


ADVERT = RecordKind(
    name="advert",
    owned=False,
    check=_check_advert,
    max_bytes=4096,
    body=Map(
        {
            "charter": Blob(MAX_CHARTER_BYTES + 80),
            "leader": AddressField,
            "term": Int(1, MAX_TERM),
            "cert": Blob(MAX_CERT_BYTES),
            "metrics": Map(
                {
                    "accuracy": Float(0.0, 1.0),
                    "loss": Float(0.0, 1e9),
                    "round": Int(0, MAX_TERM),
                    "members": Int(0, MAX_CAPACITY),
                    "capacity": Int(1, MAX_CAPACITY),
                }
            ),
        }
    ),
)


def roster_topic(group_id: str) -> str:
    """The topic a group's members announce themselves under."""
    return f"roster/{group_id}"


def _check_heartbeat(signer: bytes, topic: str, body: Mapping[str, Any]) -> None:
    if topic != roster_topic(body["group_id"]):
        raise MalformedRecord(f"heartbeat for {body['group_id']} filed under {topic!r}")


HEARTBEAT = RecordKind(
    name="heartbeat",
    owned=False,
    check=_check_heartbeat,
    body=Map(
        {
            "group_id": GroupIdField,
            "addr": AddressField,  # where the member serves the group's model (TCP)
            "role": Str(max_len=16, choices=frozenset({"member", "leader"})),
            "round": Int(),  # the latest group-model round this member holds
            "model_hash": Bytes(32),
        }
    ),
)

#: The kinds this version understands, by name. Read-only.
KINDS: Mapping[str, RecordKind] = MappingProxyType(
    {kind.name: kind for kind in (ADVERT, HEARTBEAT)}
)
