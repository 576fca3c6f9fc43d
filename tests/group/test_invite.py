"""Signed invites: who they admit, and every way they are refused."""

from __future__ import annotations

import base64
import math

import msgpack
import pytest

from mycelium_p2p.group.invite import InviteError, issue_invite, verify_invite
from mycelium_p2p.identity import Identity

NOW = 1_800_000_000.0
GID = "0123456789abcdef"


def test_the_founders_invite_admits_its_node_into_its_group_until_it_expires() -> None:
    member, node = Identity.generate(), Identity.generate()
    text = issue_invite(member, GID, node.public_key, now=NOW, ttl=60)
    founder = {member.public_key}

    def check(**kw):
        args = {"group_id": GID, "member_key": node.public_key, "inviters": founder, "now": NOW}
        return verify_invite(text, **{**args, **kw})

    invite = check()
    assert (invite.member_key, invite.inviter) == (node.public_key, member.public_key)
    with pytest.raises(InviteError, match="expired"):
        check(now=NOW + 61)
    with pytest.raises(InviteError, match="another node"):
        check(member_key=Identity.generate().public_key)
    with pytest.raises(InviteError, match="not this one"):
        check(group_id="f" * 16)
    with pytest.raises(InviteError, match="not signed by the group's founder"):
        check(inviters={Identity.generate().public_key})  # any other member, or anyone


@pytest.mark.parametrize(
    "text",
    ["", "hello", "myc-invite-", "myc-invite-!!!!", "myc-invite-AAAA", "myc-invite-" + "A" * 5000],
)
def test_garbage_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InviteError):
        verify_invite(text, group_id=GID, member_key=bytes(32), inviters={bytes(32)}, now=NOW)


def _fields(text: str) -> list:
    body = text[len("myc-invite-") :]
    return msgpack.unpackb(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def _text(fields: list) -> str:
    return "myc-invite-" + base64.urlsafe_b64encode(msgpack.packb(fields)).decode()


def test_an_invite_signed_by_someone_else_is_refused() -> None:
    member, forger, node = Identity.generate(), Identity.generate(), Identity.generate()
    genuine = issue_invite(member, GID, node.public_key, now=NOW, ttl=60)
    forged = issue_invite(forger, GID, node.public_key, now=NOW, ttl=60)
    # splice: the genuine invite's fields (naming the member) with the forger's signature
    text = _text([*_fields(genuine)[:4], _fields(forged)[4]])
    with pytest.raises(InviteError, match="signature"):
        verify_invite(
            text, group_id=GID, member_key=node.public_key, inviters={member.public_key}, now=NOW
        )


@pytest.mark.parametrize("expiry", [math.nan, math.inf, -1.0, "soon"])
def test_an_invite_whose_expiry_is_not_a_time_is_refused(expiry: object) -> None:
    member, node = Identity.generate(), Identity.generate()
    fields = _fields(issue_invite(member, GID, node.public_key, now=NOW, ttl=60))
    fields[2] = expiry
    with pytest.raises(InviteError):
        verify_invite(
            _text(fields),
            group_id=GID,
            member_key=node.public_key,
            inviters={member.public_key},
            now=NOW,
        )
