"""Node identities: key files, their permissions, and ids derived from keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mycelium_p2p.errors import IdentityError
from mycelium_p2p.identity import Identity, node_id_for, verify_signature


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path / "node")
    key_file = tmp_path / "node" / "node.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = Identity.load_or_create(tmp_path / "node")
    assert again.public_key == first.public_key
    assert again.node_id == first.node_id == node_id_for(first.public_key)
    assert len(first.node_id) == 20


def test_node_id_comes_from_the_key_not_chance() -> None:
    a, b = Identity.from_seed(b"a" * 32), Identity.from_seed(b"a" * 32)
    assert a.node_id == b.node_id
    assert Identity.generate().node_id != a.node_id


def test_world_readable_or_garbled_key_files_are_refused(tmp_path: Path) -> None:
    Identity.load_or_create(tmp_path)
    os.chmod(tmp_path / "node.key", 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(tmp_path / "node.key")
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"short")
    bad.chmod(0o600)
    with pytest.raises(IdentityError, match="not an Ed25519 key"):
        Identity.load(bad)


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path / "k")
    with pytest.raises(IdentityError, match="refusing"):
        Identity.generate().save(tmp_path / "k")


def test_signatures_verify_only_for_their_key_and_data() -> None:
    me, other = Identity.generate(), Identity.generate()
    sig = me.sign(b"data")
    assert verify_signature(me.public_key, sig, b"data")
    assert not verify_signature(other.public_key, sig, b"data")
    assert not verify_signature(me.public_key, sig, b"datA")
    assert not verify_signature(b"short", sig, b"data")
