"""A group's charter: its founding facts, signed by its founder. The group id is their hash.

No key signs for a group. What never changes about a group (name, task, policy, capacity and
who founded it) is fixed at founding in the charter; anyone can check that a charter belongs to
a group id, and that its founder signed it. Who leads the group is proven separately, term by
term, by the members' votes (``authority``).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Annotated

import msgspec
from msgspec import Meta

from ..errors import ProofError
from ..identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify_signature

CHARTER_DOMAIN = b"mycelium-p2p/charter/v1\x00"
GROUP_ID_DOMAIN = b"mycelium-p2p/group-id/v2\x00"
GROUP_ID_HEX_LEN = 16
POLICIES = ("open", "invite-only")
#: A leader's certificate holds a majority of its group's votes and travels in the group's
#: advert, a DHT record of a few KB: this bounds how many members a group can have.
MAX_CAPACITY = 32
MAX_CHARTER_BYTES = 600  # 64-character names and tasks of any script fit

Key = Annotated[bytes, Meta(min_length=PUBLIC_KEY_SIZE, max_length=PUBLIC_KEY_SIZE)]
Signature = Annotated[bytes, Meta(min_length=SIGNATURE_SIZE, max_length=SIGNATURE_SIZE)]


class _Terms(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    version: Annotated[int, Meta(ge=1, le=1)]
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    task: Annotated[str, Meta(min_length=1, max_length=64)]
    policy: Annotated[str, Meta(min_length=1, max_length=16)]
    capacity: Annotated[int, Meta(ge=1, le=MAX_CAPACITY)]
    founder: Key
    created: Annotated[float, Meta(ge=0.0, le=1e11)]
    nonce: Annotated[bytes, Meta(min_length=8, max_length=8)]


class _Signed(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    terms: Annotated[bytes, Meta(max_length=MAX_CHARTER_BYTES)]
    signature: Signature


_TERMS = msgspec.msgpack.Decoder(_Terms)
_SIGNED = msgspec.msgpack.Decoder(_Signed)


def group_id_of(terms: bytes) -> str:
    """The id of the group whose charter terms are ``terms`` (the exact signed bytes)."""
    return hashlib.sha256(GROUP_ID_DOMAIN + terms).hexdigest()[:GROUP_ID_HEX_LEN]


def is_group_id(text: str) -> bool:
    """Is ``text`` shaped as a group id (lower-case hex, ``GROUP_ID_HEX_LEN`` digits)?"""
    return len(text) == GROUP_ID_HEX_LEN and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class GroupCharter:
    """A verified charter. ``blob`` is exactly what the founder signed and what travels."""

    group_id: str
    name: str
    task: str
    policy: str
    capacity: int
    founder: bytes
    created: float
    blob: bytes

    @classmethod
    def found(
        cls,
        founder: Identity,
        *,
        name: str,
        task: str,
        policy: str = "open",
        capacity: int = 10,
        now: float,
        nonce: bytes | None = None,
    ) -> GroupCharter:
        """A new group's charter, signed by ``founder``. Raises ``ProofError`` if invalid.
        ``nonce`` (8 bytes, random by default) makes each founding a new group."""
        nonce = os.urandom(8) if nonce is None else nonce
        terms = msgspec.msgpack.encode(
            _Terms(1, name, task, policy, capacity, founder.public_key, float(now), nonce)
        )
        signed = _Signed(terms, founder.sign(CHARTER_DOMAIN + terms))
        return cls.verify(msgspec.msgpack.encode(signed))

    @classmethod
    def verify(
        cls, blob: bytes, group_id: str | None = None, *, check_signature: bool = True
    ) -> GroupCharter:
        """The charter in ``blob``, checked (of ``group_id`` when given), or ``ProofError``.
        ``check_signature=False`` only for a blob already verified (a verified record's)."""
        if not isinstance(blob, bytes) or len(blob) > MAX_CHARTER_BYTES + 80:
            raise ProofError("a charter is a few hundred bytes")
        try:
            signed = _SIGNED.decode(blob)
            terms = _TERMS.decode(signed.terms)
        except msgspec.DecodeError as exc:
            raise ProofError(f"malformed charter: {exc}") from None
        if not (terms.name.isprintable() and terms.task.isprintable()):
            raise ProofError("a group's name and task are printable text (no control characters)")
        if terms.policy not in POLICIES:
            raise ProofError(f"charter policy {terms.policy!r} is not one of {POLICIES}")
        if not math.isfinite(terms.created):
            raise ProofError("charter creation time is not a number")
        gid = group_id_of(signed.terms)
        if group_id is not None and gid != group_id:
            raise ProofError(f"the charter is group {gid}'s, not {group_id}'s")
        if check_signature and not verify_signature(
            terms.founder, signed.signature, CHARTER_DOMAIN + signed.terms
        ):
            raise ProofError(f"group {gid}'s charter is not signed by its founder")
        return cls(
            gid,
            terms.name,
            terms.task,
            terms.policy,
            terms.capacity,
            terms.founder,
            terms.created,
            blob,
        )
