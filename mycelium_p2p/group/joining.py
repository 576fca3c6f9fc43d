"""Asking a group's leader to be admitted (``g.join``), and finding the leader a member names
when the advert we followed is a term behind (``g.leader``): what a newcomer can check of the
answers before it is a member."""

from __future__ import annotations

import ipaddress

from ..addresses import Address
from ..errors import BadMessage, ChannelError, JoinRefused, ProofError, RemoteError
from ..records.charter import GroupCharter
from ..records.leadership import LeaderCert, check_cert, decode_cert
from . import messages as m
from .transport import ChannelServer


async def ask_to_join(
    channels: ChannelServer,
    leader_addr: Address,
    leader_key: bytes,
    group_id: str,
    my_addr: Address,
    invite: str | None,
    timeout: float,
    max_model: int | None = None,
) -> tuple[m.JoinReply, GroupCharter, LeaderCert, list[bytes]]:
    """Ask to be admitted; returns the leader's answer, checked as far as a newcomer can: the
    charter is the group's, and the certificate is the leader's, for its term, with valid
    votes. (Whether those voters are the group's real members a newcomer cannot know.) A
    model over ``max_model`` bytes is not read."""
    try:
        header, segments = await channels.request(
            leader_addr,
            leader_key,
            "g.join",
            {"gid": group_id, "addr": list(my_addr), "invite": invite or ""},
            timeout=timeout,
            max_reply=max_model,
        )
        reply = m.parse(m.JoinReply, header)
        charter = GroupCharter.verify(reply.charter, group_id)
        cert = decode_cert(reply.cert)
        check_cert(cert, group_id=group_id, founder=charter.founder)
    except RemoteError as exc:
        raise JoinRefused(exc.reason, code=exc.code) from None
    except ChannelError as exc:
        raise JoinRefused(f"cannot reach the group's leader: {exc}") from None
    except (BadMessage, ProofError) as exc:
        raise JoinRefused(f"the leader's answer is not valid: {exc}") from None
    if cert.leader != leader_key or cert.term != reply.term:
        raise JoinRefused("the leader's certificate is not for itself and its term")
    if not any(entry[0] == leader_key for entry in reply.roster):
        raise JoinRefused("the leader is not in the roster it sent")
    return reply, charter, cert, segments


async def leader_named_by(
    channels: ChannelServer,
    addr: Address,
    key: bytes,
    group_id: str,
    timeout: float,
    refusal: JoinRefused,
) -> tuple[bytes, Address]:
    """The leader a member of ``group_id`` follows (``g.leader``), or ``refusal`` raised."""
    try:
        header, _ = await channels.request(
            addr, key, "g.leader", {"gid": group_id}, timeout=timeout
        )
        named = m.parse(m.LeaderReply, header)
        cert = decode_cert(named.cert) if named.cert is not None else None
    except (ChannelError, BadMessage, ProofError):
        raise refusal from None
    if named.leader is None or named.addr is None or named.leader == key:
        raise refusal
    if cert is None or cert.leader != named.leader or cert.group_id != group_id:
        raise refusal  # what it names must at least claim the lead of this group
    if _local(named.addr[0]) and not _local(addr[0]):
        raise refusal  # a peer elsewhere sending us to our own host's services
    return named.leader, (named.addr[0], named.addr[1])


def _local(host: str) -> bool:
    """Loopback, link-local or unspecified."""
    ip = ipaddress.ip_address(host)
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified
