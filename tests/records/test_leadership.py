"""Charters, votes and leadership certificates: what each proves, and to whom."""

from __future__ import annotations

import pytest

from mycelium_p2p.errors import ProofError
from mycelium_p2p.identity import Identity
from mycelium_p2p.records.charter import GroupCharter
from mycelium_p2p.records.leadership import (
    CommitProof,
    LeaderCert,
    check_cert,
    check_commit,
    decode_cert,
    founding_cert,
    proves_leadership,
    sign_commit,
    sign_vote,
)

NOW = 1_800_000_000.0


def cert_of(gid: str, term: int, leader: Identity, voters: list[Identity]) -> LeaderCert:
    votes = [(v.public_key, sign_vote(v, gid, term, leader.public_key)) for v in voters]
    return LeaderCert(gid, term, leader.public_key, votes)


def test_a_charter_binds_the_group_id_to_its_facts_and_founder() -> None:
    founder = Identity.generate()
    charter = GroupCharter.found(founder, name="lab", task="digits", capacity=5, now=NOW)
    again = GroupCharter.verify(charter.blob, charter.group_id)
    assert (again.name, again.capacity, again.founder) == ("lab", 5, founder.public_key)
    other = GroupCharter.found(founder, name="lab", task="digits", capacity=5, now=NOW)
    assert other.group_id != charter.group_id  # every founding is a new group
    with pytest.raises(ProofError, match="not"):
        GroupCharter.verify(charter.blob, other.group_id)
    forged = bytearray(charter.blob)
    forged[-1] ^= 1  # the founder's signature no longer verifies
    with pytest.raises(ProofError, match="not signed by its founder"):
        GroupCharter.verify(bytes(forged))


@pytest.mark.parametrize("name", ["evil\x1b[2J", "a\nb", "rtl\u202eexe", "\x00"])
def test_a_charter_refuses_names_that_are_not_printable_text(name: str) -> None:
    with pytest.raises(ProofError, match="printable"):
        GroupCharter.found(Identity.generate(), name=name, task="digits", now=NOW)


@pytest.mark.parametrize("capacity", [0, 33, 10**6])
def test_a_charter_refuses_capacities_a_certificate_cannot_carry(capacity: int) -> None:
    with pytest.raises(ProofError):
        GroupCharter.found(Identity.generate(), name="g", task="t", capacity=capacity, now=NOW)


def test_term_one_is_the_founders_alone() -> None:
    founder, other = Identity.generate(), Identity.generate()
    gid = GroupCharter.found(founder, name="g", task="t", now=NOW).group_id
    check_cert(founding_cert(founder, gid), group_id=gid, founder=founder.public_key)
    with pytest.raises(ProofError, match="founder"):
        check_cert(founding_cert(other, gid), group_id=gid, founder=founder.public_key)


def test_a_certificate_with_a_vote_that_does_not_verify_is_refused() -> None:
    a, b, leader = Identity.generate(), Identity.generate(), Identity.generate()
    gid = "0" * 16
    good = cert_of(gid, 3, leader, [leader, a])
    lying = LeaderCert(
        gid, 3, leader.public_key, [*good.votes[:1], (b.public_key, good.votes[1][1])]
    )
    with pytest.raises(ProofError, match="does not verify"):
        check_cert(lying, group_id=gid, founder=leader.public_key)
    twice = LeaderCert(gid, 3, leader.public_key, [good.votes[0], good.votes[0]])
    with pytest.raises(ProofError, match="once"):
        check_cert(twice, group_id=gid, founder=leader.public_key)
    other_term = cert_of(gid, 4, leader, [a])  # a's vote for term 4, offered for term 3
    moved = LeaderCert(gid, 3, leader.public_key, other_term.votes)
    with pytest.raises(ProofError, match="does not verify"):
        check_cert(moved, group_id=gid, founder=leader.public_key)


@pytest.mark.parametrize("blob", [b"", b"\x90", b"junk" * 10, b"\x94" + b"\xc0" * 4, bytes(10_000)])
def test_garbage_is_not_a_certificate(blob: bytes) -> None:
    with pytest.raises(ProofError):
        decode_cert(blob)


def test_a_majority_of_my_roster_without_the_old_leader_proves_a_new_leader() -> None:
    old, *members = [Identity.generate() for _ in range(5)]  # roster of 5, the leader lapsed
    roster = {old.public_key, *(m.public_key for m in members)}
    gid, new = "f" * 16, members[0]
    two, three = cert_of(gid, 2, new, members[:2]), cert_of(gid, 2, new, members[:3])
    assert not proves_leadership(two, group_id=gid, roster=roster, replacing=old.public_key)
    assert proves_leadership(three, group_id=gid, roster=roster, replacing=old.public_key)
    # the old leader's own vote does not count toward replacing it
    with_old = cert_of(gid, 2, new, [old, *members[:2]])
    assert not proves_leadership(with_old, group_id=gid, roster=roster, replacing=old.public_key)


def test_sybils_ex_members_and_one_stolen_key_never_make_a_majority() -> None:
    leader, *members = [Identity.generate() for _ in range(5)]
    roster = {leader.public_key, *(m.public_key for m in members)}
    gid, rogue = "e" * 16, members[0]
    sybils = [Identity.generate() for _ in range(20)]
    assert not proves_leadership(
        cert_of(gid, 9, rogue, [rogue, *sybils]),
        group_id=gid,
        roster=roster,
        replacing=leader.public_key,
    )
    ex_members = [Identity.generate() for _ in range(3)]  # they left: not in our roster
    assert not proves_leadership(
        cert_of(gid, 9, rogue, [rogue, *ex_members]),
        group_id=gid,
        roster=roster,
        replacing=leader.public_key,
    )
    outsider = Identity.generate()  # a majority's votes, but for a leader we do not know
    assert not proves_leadership(
        cert_of(gid, 9, outsider, members), group_id=gid, roster=roster, replacing=leader.public_key
    )
    wrong_group = cert_of("d" * 16, 9, rogue, members)
    assert not proves_leadership(
        wrong_group, group_id=gid, roster=roster, replacing=leader.public_key
    )


def test_a_commit_proof_shows_which_round_the_leader_of_a_term_committed() -> None:
    founder, a, b = Identity.generate(), Identity.generate(), Identity.generate()
    charter = GroupCharter.found(founder, name="lab", task="digits", capacity=5, now=NOW)
    gid, digest = charter.group_id, bytes(range(32))
    cert = cert_of(gid, 4, a, [a, b])
    blob = sign_commit(a, cert, 17, digest).encode()
    proof = check_commit(blob, group_id=gid, founder=founder.public_key, round_=17, digest=digest)
    assert (proof.round, proof.cert.term, proof.cert.leader) == (17, 4, a.public_key)
    check = {"group_id": gid, "founder": founder.public_key}
    with pytest.raises(ProofError, match="not round 10"):
        check_commit(blob, **check, round_=10)  # a claimed round is bound
    with pytest.raises(ProofError, match="not round"):
        check_commit(blob, **check, round_=17, digest=bytes(32))  # ... and so is the model
    other = GroupCharter.found(founder, name="lab", task="digits", capacity=5, now=NOW)
    with pytest.raises(ProofError):
        check_commit(blob, group_id=other.group_id, founder=founder.public_key, round_=17)
    # b (a voter, not the leader) cannot sign a commit under a's certificate
    forged = CommitProof(17, digest, sign_commit(b, cert, 17, digest).signature, cert)
    with pytest.raises(ProofError, match="not signed by the leader"):
        check_commit(forged.encode(), **check, round_=17)
    # a rogue's own "term 1" certificate is refused: term 1 is the founder's
    rogue_cert = cert_of(gid, 1, b, [b])
    with pytest.raises(ProofError, match="founder"):
        check_commit(sign_commit(b, rogue_cert, 99, digest).encode(), **check, round_=99)
    for junk in (b"", b"\x93\x01", blob[:-3], b"x" * 10_000):
        with pytest.raises(ProofError):
            check_commit(junk, **check, round_=17)
