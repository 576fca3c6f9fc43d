"""Invites to invite-only groups: the founder's signature over (group, invited key, expiry).

No key signs for a group: the founder, who chose to make it invite-only, vouches with its own
node key (named in the charter). Only the founder may invite: were any member allowed to, one
member could invite keys of its own until they outvote everyone else.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated

import msgspec
from msgspec import Meta

from ..errors import InviteError
from ..identity import PUBLIC_KEY_SIZE, Identity, verify_signature
from ..records.charter import Key, Signature
from ..records.leadership import GroupId

INVITE_DOMAIN = b"mycelium-p2p/invite/v2\x00"
INVITE_PREFIX = "myc-invite-"
MAX_INVITE_CHARS = 400


class _Invite(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    group_id: GroupId
    member_key: Key
    expires_at: Annotated[float, Meta(ge=0.0, le=1e11)]
    inviter: Key
    signature: Signature


_DECODER = msgspec.msgpack.Decoder(_Invite)


@dataclass(frozen=True)
class Invite:
    group_id: str
    member_key: bytes
    expires_at: float
    inviter: bytes


def _signed_bytes(group_id: str, member_key: bytes, expires_at: float) -> bytes:
    return INVITE_DOMAIN + msgspec.msgpack.encode([group_id, member_key, expires_at])


def issue_invite(
    inviter: Identity, group_id: str, member_key: bytes, *, now: float, ttl: float
) -> str:
    """An invite, signed by ``inviter`` (the group's founder), for ``member_key`` into
    ``group_id``, valid for ``ttl`` seconds, as text."""
    if len(member_key) != PUBLIC_KEY_SIZE:
        raise InviteError(f"a node key is {PUBLIC_KEY_SIZE} bytes, got {len(member_key)}")
    if not (math.isfinite(ttl) and ttl > 0):
        raise InviteError(f"an invite lives a positive number of seconds, not {ttl}")
    expires_at = float(now + ttl)
    signature = inviter.sign(_signed_bytes(group_id, member_key, expires_at))
    raw = msgspec.msgpack.encode(
        _Invite(group_id, member_key, expires_at, inviter.public_key, signature)
    )
    return INVITE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def verify_invite(
    text: str, *, group_id: str, member_key: bytes, inviters: Collection[bytes], now: float
) -> Invite:
    """The invite in ``text`` if it admits ``member_key`` to ``group_id`` now, signed by one of
    ``inviters`` (the group's founder). Raises ``InviteError`` saying why not."""
    if not isinstance(text, str) or not text.startswith(INVITE_PREFIX):
        raise InviteError("not an invite (it should start with 'myc-invite-')")
    if len(text) > MAX_INVITE_CHARS:
        raise InviteError("the invite is too long to be one")
    body = text[len(INVITE_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        invite = _DECODER.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InviteError("the invite is garbled") from None
    if invite.group_id != group_id:
        raise InviteError(f"the invite is for group {invite.group_id}, not this one")
    if invite.member_key != member_key:
        raise InviteError("the invite was issued to another node key")
    if not invite.expires_at > now:  # also refuses NaN
        raise InviteError("the invite has expired")
    if invite.inviter not in inviters:
        raise InviteError("the invite was not signed by the group's founder")
    signed = _signed_bytes(invite.group_id, invite.member_key, invite.expires_at)
    if not verify_signature(invite.inviter, invite.signature, signed):
        raise InviteError("the invite's signature is not its inviter's")
    return Invite(invite.group_id, invite.member_key, invite.expires_at, invite.inviter)
