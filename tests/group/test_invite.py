"""Signed invites: who they admit, and every way they are refused."""

from __future__ import annotations

import pytest

from mycelium_p2p.group.invite import InviteError, issue_invite, verify_invite
from mycelium_p2p.identity import Identity

NOW = 1_800_000_000.0


def test_an_invite_admits_its_node_into_its_group_until_it_expires() -> None:
    group, node = Identity.generate(), Identity.generate()
    text = issue_invite(group, node.public_key, now=NOW, ttl=60)
    invite = verify_invite(text, group_key=group.public_key, member_key=node.public_key, now=NOW)
    assert invite.member_key == node.public_key
    with pytest.raises(InviteError, match="expired"):
        verify_invite(text, group_key=group.public_key, member_key=node.public_key, now=NOW + 61)
    with pytest.raises(InviteError, match="another node"):
        verify_invite(
            text, group_key=group.public_key, member_key=Identity.generate().public_key, now=NOW
        )
    with pytest.raises(InviteError, match="not this one"):
        verify_invite(
            text, group_key=Identity.generate().public_key, member_key=node.public_key, now=NOW
        )


@pytest.mark.parametrize("text", ["", "hello", "myc-invite-", "myc-invite-!!!!", "myc-invite-AAAA"])
def test_garbage_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InviteError):
        verify_invite(text, group_key=bytes(32), member_key=bytes(32), now=NOW)


def test_an_invite_signed_by_someone_else_is_refused() -> None:
    group, forger, node = Identity.generate(), Identity.generate(), Identity.generate()
    genuine = issue_invite(group, node.public_key, now=NOW, ttl=60)
    forged = issue_invite(forger, node.public_key, now=NOW, ttl=60)
    # splice: the genuine invite's group fields with the forger's signature
    import base64

    import msgpack

    def fields(text: str) -> list:
        body = text[len("myc-invite-") :]
        return msgpack.unpackb(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))

    spliced = [*fields(genuine)[:4], fields(forged)[4]]
    text = "myc-invite-" + base64.urlsafe_b64encode(msgpack.packb(spliced)).decode()
    with pytest.raises(InviteError, match="signature"):
        verify_invite(text, group_key=group.public_key, member_key=node.public_key, now=NOW)
