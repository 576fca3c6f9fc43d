"""Signed votes and leadership certificates: a leader's authority, checkable by anyone.

A member votes for a candidate in a term by signing ``VOTE_DOMAIN || msgpack([group id, term,
candidate key])`` with its node key. A ``LeaderCert`` is the votes a leader won: it proves the
leadership of one term to whoever knows who may vote.

- A *member* knows: its own roster. It accepts a leader for a term newer than its own only when
  the certificate holds valid votes from a majority of its electorate, ``roster - {the leader
  being replaced}`` (``proves_leadership``). One member, an ex-member, sybil keys or a stolen
  key of one member never reach that majority.
- A *reader of an advert* knows only the charter: it can check that every vote is a valid
  signature by a distinct key and that term 1 belongs to the founder (``check_cert``); it cannot
  tell the real members' keys from keys made up for the purpose (see docs/threat-model.md).

Term 1 needs no election: its certificate is the founder's own vote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Annotated

import msgspec
from msgspec import Meta

from ..errors import ProofError
from ..identity import Identity, verify_signature
from .charter import GROUP_ID_HEX_LEN, MAX_CAPACITY, Key, Signature

VOTE_DOMAIN = b"mycelium-p2p/vote/v1\x00"
MAX_TERM = 2**53
MAX_CERT_BYTES = 120 + MAX_CAPACITY * 104

Term = Annotated[int, Meta(ge=1, le=MAX_TERM)]
GroupId = Annotated[str, Meta(min_length=GROUP_ID_HEX_LEN, max_length=GROUP_ID_HEX_LEN)]


def majority(n: int) -> int:
    """Votes needed among ``n`` electors."""
    return n // 2 + 1


def vote_bytes(group_id: str, term: int, candidate: bytes) -> bytes:
    """The exact bytes a vote signs."""
    return VOTE_DOMAIN + msgspec.msgpack.encode([group_id, term, candidate])


def sign_vote(voter: Identity, group_id: str, term: int, candidate: bytes) -> bytes:
    """``voter``'s vote for ``candidate`` in ``term``: an Ed25519 signature."""
    return voter.sign(vote_bytes(group_id, term, candidate))


class LeaderCert(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """The votes ``leader`` won for ``term`` in ``group_id``: ``(voter key, signature)`` pairs."""

    group_id: GroupId
    term: Term
    leader: Key
    votes: Annotated[list[tuple[Key, Signature]], Meta(max_length=MAX_CAPACITY)]

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    def voters(self) -> frozenset[bytes]:
        """The distinct keys whose vote in this certificate is a valid signature."""
        signed = vote_bytes(self.group_id, self.term, self.leader)
        return frozenset(
            key for key, signature in self.votes if verify_signature(key, signature, signed)
        )


_CERT = msgspec.msgpack.Decoder(LeaderCert)


def decode_cert(blob: bytes) -> LeaderCert:
    """The certificate in ``blob`` (not yet checked against anything), or ``ProofError``."""
    if not isinstance(blob, bytes) or len(blob) > MAX_CERT_BYTES:
        raise ProofError("a leadership certificate is at most a few KB of bytes")
    try:
        return _CERT.decode(blob)
    except msgspec.DecodeError as exc:
        raise ProofError(f"malformed leadership certificate: {exc}") from None


def founding_cert(founder: Identity, group_id: str) -> LeaderCert:
    """Term 1's certificate: the founder's vote for itself."""
    vote = sign_vote(founder, group_id, 1, founder.public_key)
    return LeaderCert(group_id, 1, founder.public_key, [(founder.public_key, vote)])


def check_cert(cert: LeaderCert, *, group_id: str, founder: bytes) -> None:
    """What anyone can check without knowing the roster: the certificate is for this group,
    every vote is a valid signature by a distinct key, and term 1 is the founder's.
    Raises ``ProofError``."""
    if cert.group_id != group_id:
        raise ProofError(f"the certificate is for group {cert.group_id}, not {group_id}")
    keys = [key for key, _ in cert.votes]
    if len(set(keys)) != len(keys):
        raise ProofError("a certificate counts each voter once")
    if len(cert.voters()) != len(keys):
        raise ProofError(f"a vote in the certificate of term {cert.term} does not verify")
    if cert.term == 1 and (cert.leader != founder or keys != [founder]):
        raise ProofError("term 1 belongs to the group's founder")


def proves_leadership(
    cert: LeaderCert, *, group_id: str, roster: Collection[bytes], replacing: bytes | None
) -> bool:
    """Whether ``cert`` proves its leader's term to a member whose roster is ``roster`` and
    whose leader until now was ``replacing``: valid votes from a majority of the electorate,
    the roster without ``replacing`` (the leader whose lease lapsed takes no part)."""
    if cert.group_id != group_id or cert.leader not in roster:
        return False
    electorate = {key for key in roster if key != replacing or key == cert.leader}
    return len(cert.voters() & electorate) >= majority(len(electorate))


# -- commits: which round a leader committed ------------------------------------------------------

COMMIT_DOMAIN = b"mycelium-p2p/commit/v1\x00"
MAX_PROOF_BYTES = MAX_CERT_BYTES + 160


def commit_bytes(group_id: str, term: int, round_: int, digest: bytes) -> bytes:
    """The exact bytes a leader signs when it commits model ``digest`` as round ``round_``."""
    return COMMIT_DOMAIN + msgspec.msgpack.encode([group_id, term, round_, digest])


class CommitProof(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """A leader's signature on a commit, with the certificate of the term it signed in.

    A member keeps the proof of the model it holds; a candidate shows it when it asks for votes,
    so its round is checked, not taken on its word (Raft compares logs the same way)."""

    round: Annotated[int, Meta(ge=1, le=MAX_TERM)]
    digest: Annotated[bytes, Meta(min_length=32, max_length=32)]
    signature: Signature
    cert: LeaderCert

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)


_PROOF = msgspec.msgpack.Decoder(CommitProof)


def sign_commit(leader: Identity, cert: LeaderCert, round_: int, digest: bytes) -> CommitProof:
    """``leader``'s proof that it committed ``digest`` as ``round_`` in ``cert``'s term."""
    signature = leader.sign(commit_bytes(cert.group_id, cert.term, round_, digest))
    return CommitProof(round_, digest, signature, cert)


def check_commit(
    blob: bytes, *, group_id: str, founder: bytes, round_: int, digest: bytes | None = None
) -> CommitProof:
    """The proof in ``blob`` if it is a well-formed commit of ``round_`` (and ``digest``) in
    ``group_id``, signed by the leader its certificate names. Whether that certificate proves
    its term to *you* is yours to check. Raises ``ProofError``."""
    if not isinstance(blob, bytes) or len(blob) > MAX_PROOF_BYTES:
        raise ProofError("a commit proof is at most a few KB of bytes")
    try:
        proof = _PROOF.decode(blob)
    except msgspec.DecodeError as exc:
        raise ProofError(f"malformed commit proof: {exc}") from None
    if proof.round != round_ or (digest is not None and proof.digest != digest):
        raise ProofError(f"the proof is for round {proof.round}, not round {round_}")
    cert = proof.cert
    check_cert(cert, group_id=group_id, founder=founder)
    signed = commit_bytes(group_id, cert.term, proof.round, proof.digest)
    if not verify_signature(cert.leader, proof.signature, signed):
        raise ProofError(f"round {round_} is not signed by the leader of term {cert.term}")
    return proof
