"""Invites to invite-only groups: a group key's signature over (group, member key, expiry)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import msgpack

from ..errors import MyceliumError
from ..identity import PUBLIC_KEY_SIZE, Identity, group_id_for, verify_signature

INVITE_DOMAIN = b"mycelium-p2p/invite/v1\x00"
INVITE_PREFIX = "myc-invite-"


class InviteError(MyceliumError):
    """An invite is malformed, expired, for someone else, or not signed by the group."""


@dataclass(frozen=True)
class Invite:
    group_id: str
    member_key: bytes
    expires_at: float
    group_key: bytes

    def text(self, signature: bytes) -> str:
        raw = msgpack.packb(
            [self.group_id, self.member_key, self.expires_at, self.group_key, signature]
        )
        return INVITE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signed_bytes(group_id: str, member_key: bytes, expires_at: float) -> bytes:
    return INVITE_DOMAIN + msgpack.packb([group_id, member_key, expires_at])


def issue_invite(group: Identity, member_key: bytes, *, now: float, ttl: float) -> str:
    """An invite for ``member_key`` into ``group``, valid for ``ttl`` seconds, as text."""
    if len(member_key) != PUBLIC_KEY_SIZE:
        raise InviteError(f"a node key is {PUBLIC_KEY_SIZE} bytes, got {len(member_key)}")
    invite = Invite(group_id_for(group.public_key), member_key, now + ttl, group.public_key)
    signature = group.sign(_signed_bytes(invite.group_id, member_key, invite.expires_at))
    return invite.text(signature)


def verify_invite(text: str, *, group_key: bytes, member_key: bytes, now: float) -> Invite:
    """The invite in ``text`` if it admits ``member_key`` to the group of ``group_key`` now."""
    if not isinstance(text, str) or not text.startswith(INVITE_PREFIX):
        raise InviteError("not an invite (it should start with 'myc-invite-')")
    body = text[len(INVITE_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        group_id, invited, expires_at, signer, signature = msgpack.unpackb(raw, raw=False)
    except (binascii.Error, ValueError, TypeError, msgpack.UnpackException):
        raise InviteError("the invite is garbled") from None
    if not (
        isinstance(group_id, str)
        and isinstance(invited, bytes)
        and isinstance(signer, bytes)
        and isinstance(signature, bytes)
        and isinstance(expires_at, (int, float))
    ):
        raise InviteError("the invite is garbled")
    if signer != group_key or group_id != group_id_for(group_key):
        raise InviteError(f"the invite is for group {group_id}, not this one")
    if invited != member_key:
        raise InviteError("the invite was issued to another node key")
    if expires_at <= now:
        raise InviteError("the invite has expired")
    if not verify_signature(signer, signature, _signed_bytes(group_id, invited, expires_at)):
        raise InviteError("the invite's signature is not the group's")
    return Invite(group_id, invited, float(expires_at), signer)
