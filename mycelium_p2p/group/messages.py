"""Every ``g.*`` request and reply, as a typed, bounded structure (``msgspec``).

A peer's header is decoded into one of these before any handler or loop reads it: types,
lengths, ranges and unknown fields are checked in one place (``parse``), so a malformed message
is refused with ``BadMessage`` and changes nothing. Who may send each request is said in
``handlers.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from ..addresses import IpHost, Port, WireAddress
from ..errors import BadMessage
from ..records.charter import MAX_CHARTER_BYTES, Key, Signature
from ..records.leadership import MAX_CERT_BYTES, MAX_PROOF_BYTES, MAX_TERM, GroupId

Round = Annotated[int, Meta(ge=0, le=MAX_TERM)]
TermNo = Annotated[int, Meta(ge=0, le=MAX_TERM)]
RosterEntry = tuple[Key, IpHost, Port, Round]
#: A roster's version: (the term of the leader that made it, its count of changes in that term)
RosterVersion = tuple[TermNo, Round]
Roster = Annotated[list[RosterEntry], Meta(max_length=64)]
Cert = Annotated[bytes, Meta(max_length=MAX_CERT_BYTES)]
Digest = Annotated[bytes, Meta(min_length=32, max_length=32)]
#: A leader's signed commit of the model a member holds (``CommitProof``); empty for round 0
Proof = Annotated[bytes, Meta(max_length=MAX_PROOF_BYTES)]
Reason = Annotated[str, Meta(max_length=200)]


class _Message(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Request(_Message):
    gid: GroupId


# -- requests ------------------------------------------------------------------------------------


class Join(Request):
    addr: WireAddress
    invite: Annotated[str, Meta(max_length=2000)] = ""


class Heartbeat(Request):
    term: TermNo
    round: Round
    addr: WireAddress


class VoteRequest(Request):
    term: TermNo
    round: Round  # checked against ``proof``: a candidate's round is never taken on its word
    rv: RosterVersion
    addr: WireAddress
    proof: Proof = b""


class Announce(Request):
    term: TermNo
    addr: WireAddress
    cert: Cert


class Commit(Request):
    term: TermNo
    cert: Cert
    round: Round
    digest: Digest
    content: Any
    proof: Proof


class RosterPush(Request):
    term: TermNo
    cert: Cert
    roster: Roster
    rv: RosterVersion


class Redirect(Request):
    term: TermNo
    cert: Cert
    addr: WireAddress
    key: Key


class Resign(Request):
    term: TermNo
    roster: Roster | None = None
    rv: RosterVersion = (0, 0)


class Empty(Request):
    """``g.model``, ``g.leave`` and ``g.leader`` carry nothing but the group id."""


# -- replies ---------------------------------------------------------------------------------------


class JoinReply(_Message):
    charter: Annotated[bytes, Meta(max_length=MAX_CHARTER_BYTES + 80)]
    term: TermNo
    cert: Cert
    roster: Roster
    rv: RosterVersion
    round: Round
    digest: Digest
    content: Any
    proof: Proof = b""


class HeartbeatReply(_Message):
    term: TermNo
    cert: Cert
    roster: Roster
    rv: RosterVersion
    round: Round


class VoteReply(_Message):
    granted: bool
    term: TermNo
    why: Reason = ""
    vote: Signature | None = None


class LeaderReply(_Message):
    term: TermNo
    leader: Key | None = None
    addr: WireAddress | None = None
    cert: Cert | None = None


class ModelReply(_Message):
    round: Round
    digest: Digest
    content: Any
    proof: Proof = b""


class RoundReply(_Message):
    round: Round


M = TypeVar("M", bound=_Message)


def parse(kind: type[M], header: Any) -> M:
    """``header`` (a decoded msgpack map) as a ``kind``, or ``BadMessage`` saying what is wrong."""
    try:
        return msgspec.convert(header, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise BadMessage(f"{kind.__name__}: {exc}") from None


def wire(message: _Message) -> dict[str, Any]:
    """A message as the header map a channel sends."""
    return msgspec.structs.asdict(message)
