"""The kinds of record the network stores: their payload and body types and topic rules.

Every record's signed payload is a ``Payload``: a msgpack map of exactly its fields, each
bounded. Each kind subclasses it, tagged by the payload's ``kind`` field, with the type of its
``body``; decoding a payload into the union of the kinds' payload types checks it all in one pass
and names the offending field on refusal (``$.body.metrics.accuracy``).

A record is stored under the DHT key derived from its topic (and, for an *owned* topic, its
signer), so each kind says which topics it may use. Cross-field rules (a group advert's
``group_id`` must be its signer's) live in each kind's ``check``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ..addresses import WireAddress
from ..errors import MalformedRecord
from .charter import MAX_CAPACITY, MAX_CHARTER_BYTES, GroupCharter, Key
from .leadership import MAX_CERT_BYTES, MAX_TERM, GroupId, Term, check_cert, decode_cert

RECORD_VERSION = 1
#: At most this many groups an advert may say its signer ended lately (``AdvertBody.ended``):
#: one, so that an advert speaks for no more groups than a forged advert of each would.
MAX_ENDED = 1
#: Group adverts are spread over this many index keys so no single DHT key holds them all.
INDEX_SHARDS = 4
MAX_INT64 = 2**63 - 1

Time = Annotated[float, Meta(ge=0.0, le=1e11)]  # both bounds: NaN and infinities fail


class Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    """The signed fields of every record; each kind's subclass adds its typed ``body``."""

    v: Annotated[int, Meta(ge=RECORD_VERSION, le=RECORD_VERSION)]
    topic: Annotated[str, Meta(min_length=1, max_length=128)]
    owned: bool
    signer: Key
    seq: Annotated[int, Meta(ge=0, le=MAX_INT64)]
    iat: Time
    exp: Time
    if TYPE_CHECKING:  # no field of the base: each kind's subclass declares it, typed
        body: msgspec.Struct


def index_topic(group_id: str) -> str:
    """The index topic a group advertises under: ``groups/<shard>``."""
    shard = int(hashlib.sha1(group_id.encode()).hexdigest(), 16) % INDEX_SHARDS
    return f"groups/{shard}"


def index_topics() -> list[str]:
    """Every index topic, for listing all groups."""
    return [f"groups/{shard}" for shard in range(INDEX_SHARDS)]


@dataclass(frozen=True)
class RecordKind:
    """What a kind of record looks like and where it may be stored. ``payload`` is its
    ``Payload`` subclass, tagged with ``name``; ``check`` gets its decoded ``body``."""

    name: str
    payload: type[Payload]
    owned: bool
    check: Callable[[bytes, str, Any], None]
    max_ttl: float = 3600.0
    max_bytes: int = 1000

    def __post_init__(self) -> None:
        if self.payload.__struct_config__.tag != self.name:
            raise ValueError(f"the {self.name} kind's payload type must be tagged {self.name!r}")


def payload_decoder(kinds: Mapping[str, RecordKind]) -> msgspec.msgpack.Decoder[Any]:
    """A decoder of payloads of exactly these kinds (an unknown ``kind`` is refused)."""
    payloads = tuple(kind.payload for kind in kinds.values())
    return msgspec.msgpack.Decoder(Union[payloads])  # noqa: UP007 - a union built at run time


class AdvertMetrics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a group's leader reports about it (self-reported)."""

    accuracy: Annotated[float, Meta(ge=0.0, le=1.0)]
    loss: Annotated[float, Meta(ge=0.0, le=1e9)]
    round: Annotated[int, Meta(ge=0, le=MAX_TERM)]
    members: Annotated[int, Meta(ge=0, le=MAX_CAPACITY)]
    capacity: Annotated[int, Meta(ge=1, le=MAX_CAPACITY)]


class AdvertBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    charter: Annotated[bytes, Meta(max_length=MAX_CHARTER_BYTES + 80)]
    leader: WireAddress  # peers send IP addresses, never names
    term: Term
    cert: Annotated[bytes, Meta(max_length=MAX_CERT_BYTES)]
    metrics: AdvertMetrics
    # groups of the same index shard that the signer led, alone, and ended lately:
    # (group id, term). A storing peer keeps one advert per shard and signer, so the advert
    # that said "0 members" is replaced by this one; this keeps saying it (see ``ended``).
    ended: Annotated[tuple[tuple[GroupId, Term], ...], Meta(max_length=MAX_ENDED)] = ()


class AdvertPayload(Payload, frozen=True, tag="advert"):
    body: AdvertBody


def _check_advert(signer: bytes, topic: str, body: AdvertBody) -> None:
    """An advert is signed by the leader it names, for the group of the charter it carries,
    with a certificate of the term it claims (see ``leadership.check_cert``)."""
    charter = GroupCharter.verify(body.charter)
    if topic != index_topic(charter.group_id):
        raise MalformedRecord(
            f"advert for {charter.group_id} filed under the wrong topic {topic!r}"
        )
    cert = decode_cert(body.cert)
    check_cert(cert, group_id=charter.group_id, founder=charter.founder)
    if cert.leader != signer or cert.term != body.term:
        raise MalformedRecord("an advert's signer must be the leader its certificate proves")
    metrics = body.metrics
    if metrics.capacity != charter.capacity or metrics.members > charter.capacity:
        raise MalformedRecord("advert's capacity or member count contradicts its charter")
    for group_id, _term in body.ended:
        if group_id == charter.group_id or index_topic(group_id) != topic:
            raise MalformedRecord(
                f"an advert may say it ended other groups of its own shard only, not {group_id}"
            )
    if len({group_id for group_id, _term in body.ended}) != len(body.ended):
        raise MalformedRecord("an advert names each group it ended once")


ADVERT = RecordKind(
    name="advert",
    payload=AdvertPayload,
    owned=False,
    check=_check_advert,
    max_bytes=4096,
)


def roster_topic(group_id: str) -> str:
    """The topic a group's members announce themselves under."""
    return f"roster/{group_id}"


class HeartbeatBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    group_id: GroupId
    addr: WireAddress  # where the member serves the group's model (TCP)
    role: Literal["member", "leader"]
    round: Annotated[int, Meta(ge=0, le=MAX_INT64)]  # the latest group-model round it holds
    model_hash: Annotated[bytes, Meta(min_length=32, max_length=32)]
    # its ClientApp's failures in a row (0: it trains); shown by ``mycelium-p2p nodes``
    app_errors: Annotated[int, Meta(ge=0, le=MAX_INT64)] = 0
    # bytes it received and sent since it started (channel frames and DHT datagrams): its own
    # word, for information only. Both or neither: UNSET in heartbeats of versions before them
    bytes_in: Annotated[int, Meta(ge=0, le=MAX_INT64)] | UnsetType = UNSET
    bytes_out: Annotated[int, Meta(ge=0, le=MAX_INT64)] | UnsetType = UNSET


class HeartbeatPayload(Payload, frozen=True, tag="heartbeat"):
    body: HeartbeatBody


def _check_heartbeat(signer: bytes, topic: str, body: HeartbeatBody) -> None:
    if topic != roster_topic(body.group_id):
        raise MalformedRecord(f"heartbeat for {body.group_id} filed under {topic!r}")
    if (body.bytes_in is UNSET) != (body.bytes_out is UNSET):
        raise MalformedRecord("a heartbeat has both bytes_in and bytes_out or neither")


HEARTBEAT = RecordKind(
    name="heartbeat",
    payload=HeartbeatPayload,
    owned=False,
    check=_check_heartbeat,
)

#: The kinds this version understands, by name. Read-only.
KINDS: Mapping[str, RecordKind] = MappingProxyType(
    {kind.name: kind for kind in (ADVERT, HEARTBEAT)}
)
#: Decodes and checks the payload of a record of any of ``KINDS``.
PAYLOAD_DECODER = payload_decoder(KINDS)
