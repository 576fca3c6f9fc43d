"""Signed records: the wire envelope, signing, verification, key binding and selection.

A record on the wire is ``msgpack([payload, signature])``. ``payload`` is the msgpack map
``{v, kind, topic, owned, signer, seq, iat, exp, body}`` and the signature is Ed25519 over
``RECORD_DOMAIN + payload``: the exact bytes that travel, never a re-encoding.

The DHT key of a record is ``sha1(KEY_DOMAIN + b"o" + signer + topic)`` for an *owned* topic
(only that signer can ever write there) and ``sha1(KEY_DOMAIN + b"s" + topic)`` for a *shared*
topic, where each signer owns one entry. Either way a store holds at most one record per
(key, signer), so nobody can overwrite another's record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

import msgspec
from msgspec import Meta

from ..errors import (
    BadSignature,
    KeyBindingError,
    MalformedRecord,
    RecordExpired,
    RecordFromFuture,
    RecordTooLarge,
)
from ..identity import Identity, verify_signature
from .charter import Signature
from .kinds import KINDS, PAYLOAD_DECODER, RECORD_VERSION, Payload, RecordKind, payload_decoder

MAX_RECORD_BYTES = 4096  # the largest any kind allows (adverts); most allow 1000
#: Seconds a record's issued-at may be ahead of our clock (``RecordFromFuture`` beyond).
DEFAULT_CLOCK_SKEW = 30.0
RECORD_DOMAIN = b"mycelium-p2p/record/v1\x00"
KEY_DOMAIN = b"mycelium-p2p/key/v1\x00"

#: ``[payload bytes, signature]``: the payload stays the exact bytes that were signed.
_ENVELOPE = msgspec.msgpack.Decoder(
    tuple[Annotated[bytes, Meta(max_length=MAX_RECORD_BYTES)], Signature]
)


class _Claim(msgspec.Struct):
    """The one payload field ``signer_of`` reads; the rest is skipped unchecked."""

    signer: bytes


_CLAIM = msgspec.msgpack.Decoder(_Claim)


def record_key(topic: str, signer: bytes | None = None) -> bytes:
    """The 20-byte DHT key of a topic: owned by ``signer`` when given, shared otherwise."""
    scope = b"o" + signer if signer is not None else b"s"
    return hashlib.sha1(KEY_DOMAIN + scope + topic.encode()).digest()


@dataclass(frozen=True)
class Record:
    """A verified record. ``blob`` is exactly what was signed and sent."""

    kind: str
    topic: str
    owned: bool
    signer: bytes
    seq: int
    issued_at: float
    expires_at: float
    body: msgspec.Struct = field(repr=False)  # the kind's body type, e.g. ``AdvertBody``
    blob: bytes = field(repr=False)

    @property
    def key(self) -> bytes:
        return record_key(self.topic, self.signer if self.owned else None)

    @property
    def rank(self) -> tuple[int, float, bytes]:
        """Total order among one signer's versions: seq, then expiry, then bytes."""
        return (self.seq, self.expires_at, self.blob)

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


def sign_record(
    identity: Identity,
    kind: str,
    topic: str,
    body: Mapping[str, Any] | msgspec.Struct,
    *,
    seq: int,
    now: float,
    ttl: float,
    kinds: Mapping[str, RecordKind] = KINDS,
) -> Record:
    """Sign a record and return it verified, so a bad body fails here and not at every peer."""
    kind_def = _kind(kinds, kind)
    payload = msgspec.msgpack.encode(
        {
            "v": RECORD_VERSION,
            "kind": kind,
            "topic": topic,
            "owned": kind_def.owned,
            "signer": identity.public_key,
            "seq": seq,
            "iat": float(now),
            "exp": float(now + ttl),
            "body": body if isinstance(body, msgspec.Struct) else dict(body),
        }
    )
    blob = msgspec.msgpack.encode((payload, identity.sign(RECORD_DOMAIN + payload)))
    return verify_record(blob, now=now, kinds=kinds)


def _kind(kinds: Mapping[str, RecordKind], name: str) -> RecordKind:
    try:
        return kinds[name]
    except KeyError:
        raise MalformedRecord(f"unknown record kind {name!r}") from None


def _decode(
    blob: bytes, kinds: Mapping[str, RecordKind]
) -> tuple[Payload, bytes, bytes, RecordKind]:
    """The decode and schema stages of ``verify_record``: ``(payload, payload bytes,
    signature, kind)``, or ``MalformedRecord`` naming the offending field."""
    if not isinstance(blob, bytes):
        raise MalformedRecord(f"a record is bytes, got {type(blob).__name__}")
    if len(blob) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"record is {len(blob)} bytes; the limit is {MAX_RECORD_BYTES}")
    try:
        payload_bytes, signature = _ENVELOPE.decode(blob)
    except msgspec.DecodeError as exc:
        raise MalformedRecord(f"record envelope [payload, signature]: {exc}") from None
    decoder = PAYLOAD_DECODER if kinds is KINDS else payload_decoder(kinds)
    try:
        payload: Payload = decoder.decode(payload_bytes)
    except msgspec.DecodeError as exc:
        raise MalformedRecord(f"record payload: {exc}") from None
    tag = cast(str, type(payload).__struct_config__.tag)  # its kind's name: see RecordKind
    kind_def = kinds[tag]
    if len(blob) > kind_def.max_bytes:
        raise RecordTooLarge(f"{kind_def.name} records are at most {kind_def.max_bytes} bytes")
    if payload.owned != kind_def.owned:
        raise MalformedRecord(f"{kind_def.name} records must have owned={kind_def.owned}")
    return payload, payload_bytes, signature, kind_def


class VerifiedBlobs:
    """The digests of the last ``size`` record blobs whose signature checked out.

    The same bytes verify the same way every time: the record's signature and its kind's
    checks (an advert's charter and certificate signatures) depend on nothing else. So a
    reader that lists the same keys again and again (each refresh reads mostly the records it
    read before) checks those once per blob; the lifetime and the key are checked at every
    read. Only a blob that verified gets in, so a peer can fill it only with valid records.
    One per reader and per ``kinds`` table.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._digests: dict[bytes, None] = {}  # insertion order: the oldest go first

    @staticmethod
    def digest(blob: bytes) -> bytes:
        return hashlib.blake2b(blob, digest_size=32).digest()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, digest: bytes) -> None:
        self._digests.pop(digest, None)
        self._digests[digest] = None
        while len(self._digests) > self.size:
            del self._digests[next(iter(self._digests))]


def verify_record(
    blob: bytes,
    *,
    now: float,
    key: bytes | None = None,
    skew: float = DEFAULT_CLOCK_SKEW,
    kinds: Mapping[str, RecordKind] = KINDS,
    verified: VerifiedBlobs | None = None,
) -> Record:
    """Check everything about ``blob`` and return the record, or raise a ``RecordError``.

    Checked, cheapest first: size, envelope, payload and body types (one decode), the kind's
    size limit and rules, key binding (when ``key`` is given), lifetime against ``now`` with
    ``skew`` tolerance, and signature. ``kinds`` other than ``KINDS`` cost a new decoder a call.
    ``verified``: blobs that verified before: their kind's checks and signature are skipped
    (a blob that verifies now is added).
    """
    payload, payload_bytes, signature, kind_def = _decode(blob, kinds)
    digest = verified.digest(blob) if verified is not None else b""
    known = verified is not None and digest in verified
    if not known:
        kind_def.check(payload.signer, payload.topic, payload.body)

    record = Record(
        kind=kind_def.name,
        topic=payload.topic,
        owned=payload.owned,
        signer=payload.signer,
        seq=payload.seq,
        issued_at=payload.iat,
        expires_at=payload.exp,
        body=payload.body,
        blob=blob,
    )
    if key is not None and key != record.key:
        raise KeyBindingError(
            f"record for topic {record.topic!r} does not belong under key {key.hex()}"
        )
    if record.expires_at <= record.issued_at:
        raise MalformedRecord("record expires before it is issued")
    if record.expires_at - record.issued_at > kind_def.max_ttl:
        raise MalformedRecord(f"{kind_def.name} records live at most {kind_def.max_ttl:.0f} s")
    if record.expired(now):
        raise RecordExpired(f"record expired {now - record.expires_at:.1f} s ago")
    if record.issued_at > now + skew:
        raise RecordFromFuture(
            f"record issued {record.issued_at - now:.1f} s in the future (skew limit {skew} s)"
        )
    if known:
        return record
    if not verify_signature(record.signer, signature, RECORD_DOMAIN + payload_bytes):
        raise BadSignature(f"bad signature on {record.kind} record from {record.signer.hex()}")
    if verified is not None:
        verified.add(digest)
    return record


def next_seq(previous: int, now: float) -> int:
    """A seq above ``previous`` that also grows across restarts: milliseconds since the epoch."""
    return max(previous + 1, int(now * 1000))


def signer_of(blob: bytes) -> bytes | None:
    """The signer a blob claims, unverified (for paging); None if it cannot be read."""
    try:
        payload_bytes, _ = _ENVELOPE.decode(blob)
        return _CLAIM.decode(payload_bytes).signer
    except (msgspec.DecodeError, TypeError):
        return None


def best_per_signer(records: Iterable[Record]) -> dict[bytes, Record]:
    """The highest-ranked record of each signer: deterministic whatever the arrival order."""
    best: dict[bytes, Record] = {}
    for record in records:
        current = best.get(record.signer)
        if current is None or record.rank > current.rank:
            best[record.signer] = record
    return best
