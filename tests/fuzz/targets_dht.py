"""Fuzz targets a DHT peer reaches: datagrams and replies, signed records and their proofs."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import strategies as st
from kademlia.node import Node

from mycelium_p2p.addresses import ip_literal
from mycelium_p2p.aio import TaskOwner
from mycelium_p2p.dht import MyceliumProtocol, RecordStore, RttEstimator
from mycelium_p2p.dht.wire import REQUEST, RESPONSE
from mycelium_p2p.errors import ProofError, RecordError
from mycelium_p2p.records import MAX_ENDED, GroupAdvert, index_topic, record_key, verify_record
from mycelium_p2p.records.charter import CHARTER_DOMAIN, GroupCharter, group_id_of
from mycelium_p2p.records.envelope import RECORD_DOMAIN
from mycelium_p2p.records.leadership import (
    check_cert,
    decode_cert,
    founding_cert,
    proves_leadership,
    vote_bytes,
)

from .corpus import NOW, corpus, identity
from .harness import Context, InvalidStored, Target
from .mutate import mutated_bytes, mutated_msgpack, mutated_tree, pack, unpack

PEER = ("127.0.0.1", 40000)
_PAYLOAD_FIELDS = {"v", "kind", "topic", "owned", "signer", "seq", "iat", "exp", "body"}


# -- an oracle of record validity, written apart from records/ ------------------------------------


def _signed_by(key: Any, signature: Any, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _numbers_sane(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, (list, tuple)):
        return all(map(_numbers_sane, value))
    if isinstance(value, dict):
        return all(map(_numbers_sane, value.values()))
    return True


def assert_valid_record(key: bytes, blob: bytes, now: float = NOW) -> None:
    """Raise ``InvalidStored`` unless ``blob`` is a record any honest node would keep."""
    try:
        raw, signature = unpack(blob)
        p = unpack(raw)
        problem = _record_problem(key, raw, signature, p, now)
    except Exception as exc:  # an unreadable stored blob is itself the finding
        problem = f"unreadable: {type(exc).__name__}: {exc}"
    if problem:
        raise InvalidStored(f"stored an invalid record ({problem}): {blob[:200]!r}")


def _record_problem(key: bytes, raw: bytes, signature: bytes, p: Any, now: float) -> str | None:
    if not isinstance(p, dict) or set(p) != _PAYLOAD_FIELDS:
        return "payload fields"
    if not _signed_by(p["signer"], signature, RECORD_DOMAIN + raw):
        return "signature"
    if not _numbers_sane(p):
        return "a number is not finite or over 64 bits"
    if not p["iat"] < p["exp"] or p["exp"] <= now or p["iat"] > now + 30:
        return "lifetime"
    if p["exp"] - p["iat"] > 3600:
        return "lifetime over an hour"
    if key != record_key(p["topic"], p["signer"] if p["owned"] else None):
        return "key binding"
    body = p["body"]
    if p["kind"] == "heartbeat":
        if p["topic"] != f"roster/{body['group_id']}":
            return "heartbeat topic"
        traffic = [body[k] for k in ("bytes_in", "bytes_out") if k in body]
        if len(traffic) == 1 or any(type(n) is not int or n < 0 for n in traffic):
            return "heartbeat bytes in/out: one alone, or not a count"
        return None
    if p["kind"] != "advert":
        return "kind"
    terms, charter_sig = unpack(body["charter"])
    t = unpack(terms)
    if not _signed_by(t[5], charter_sig, CHARTER_DOMAIN + terms):
        return "charter signature"
    gid = group_id_of(terms)
    if p["topic"] != index_topic(gid):
        return "advert topic"
    cert_gid, term, leader, votes = unpack(body["cert"])
    if cert_gid != gid or leader != p["signer"] or term != body["term"]:
        return "certificate"
    if not all(_signed_by(k, s, vote_bytes(gid, term, leader)) for k, s in votes):
        return "a vote"
    metrics = body["metrics"]
    if not (0 <= metrics["accuracy"] <= 1 and metrics["members"] <= metrics["capacity"] == t[4]):
        return "metrics"
    ended = [g for g, _term in body.get("ended", [])]
    if len(ended) > MAX_ENDED or len(set(ended)) != len(ended):
        return "ended groups: too many or repeated"
    if any(g == gid or index_topic(g) != p["topic"] for g in ended):
        return "ended groups: its own, or another shard's"
    return None


# -- records -------------------------------------------------------------------------------------


def _forge_charter(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """The advert with a mutated charter, re-signed by its founder, a term-1 certificate for
    the resulting group id and the matching topic: only the charter's own checks stand."""
    c = corpus()
    terms = draw(mutated_tree(unpack(unpack(payload["body"]["charter"])[0])))
    try:
        raw = pack(terms)
    except (ValueError, TypeError, OverflowError):
        return payload
    gid = group_id_of(raw)
    payload["body"]["charter"] = pack([raw, c.founder.sign(CHARTER_DOMAIN + raw)])
    payload["body"]["cert"] = founding_cert(c.founder, gid).encode()
    payload["topic"] = index_topic(gid)
    return payload


@st.composite
def record_blobs(draw: st.DrawFn) -> bytes:
    """Adverts and heartbeats edited as bytes, or as trees re-signed by their signer (so that
    the schema and semantic checks alone stand between them and a store)."""
    c = corpus()
    record, signer = draw(st.sampled_from([(c.advert, c.founder), (c.heartbeat, c.member)]))
    mode = draw(st.integers(0, 3))
    if mode == 0:
        return draw(mutated_bytes([record.blob], max_random=1200))
    raw, signature = unpack(record.blob)
    payload = unpack(raw)
    if mode == 3 and record.kind == "advert":
        payload = _forge_charter(draw, payload)
    else:
        for _ in range(draw(st.integers(1, 2))):
            payload = draw(mutated_tree(payload))
    try:
        raw = pack(payload)
    except (ValueError, TypeError, OverflowError):
        return record.blob
    if mode >= 2 or draw(st.booleans()):
        signature = signer.sign(RECORD_DOMAIN + raw)
    return pack([raw, signature])


def claimed_key(blob: bytes) -> bytes:
    """The key a blob would be stored under, read without checking it (20 bytes always)."""
    try:
        p = unpack(unpack(blob)[0])
        return record_key(p["topic"], p["signer"] if p["owned"] else None)
    except Exception:
        return bytes(20)


def check_record(blob: bytes, _ctx: Context) -> str:
    key = claimed_key(blob)
    record = verify_record(blob, now=NOW, key=key)
    assert_valid_record(key, blob)
    if record.kind == "advert":
        GroupAdvert.from_record(record)  # a verified advert always reads as one
    return "accepted"


def check_charter(blob: bytes, _ctx: Context) -> str:
    charter = GroupCharter.verify(blob)
    if not (math.isfinite(charter.created) and charter.name.isprintable()):
        raise InvalidStored(f"accepted a charter with bad fields: {charter}")
    return "accepted"


def check_certificate(blob: bytes, _ctx: Context) -> str:
    c = corpus()
    cert = decode_cert(blob)
    proves_leadership(
        cert,
        group_id=c.charter.group_id,
        roster=[c.founder.public_key, c.member.public_key],
        replacing=c.founder.public_key,
    )
    check_cert(cert, group_id=c.charter.group_id, founder=c.founder.public_key)
    return "accepted"


@st.composite
def charter_blobs(draw: st.DrawFn) -> bytes:
    """Charters edited as msgpack, or with edited terms re-signed by their founder."""
    c = corpus()
    if draw(st.booleans()):
        return draw(mutated_msgpack([c.charter.blob]))
    terms = draw(mutated_tree(unpack(unpack(c.charter.blob)[0])))
    try:
        raw = pack(terms)
    except (ValueError, TypeError, OverflowError):
        return c.charter.blob
    return pack([raw, c.founder.sign(CHARTER_DOMAIN + raw)])


# -- datagrams -----------------------------------------------------------------------------------


def _requests() -> list[list[Any]]:
    c = corpus()
    me = identity(2).node_id
    return [
        ["ping", [me]],
        ["stun", []],
        ["find_node", [me, c.advert.key]],
        ["find_value", [me, c.advert.key]],
        ["find_records", [me, c.advert.key, b""]],
        ["store", [me, c.heartbeat.key, c.heartbeat.blob]],
    ]


@st.composite
def datagram(draw: st.DrawFn) -> bytes:
    """A request as a peer sends it: a store of a fuzzed record, a request edited as a tree,
    a datagram edited as bytes, or noise."""
    head = REQUEST + draw(st.binary(min_size=20, max_size=20))
    choice = draw(st.integers(0, 4))
    if choice <= 1:
        blob = draw(record_blobs())
        key = draw(st.sampled_from([claimed_key(blob), corpus().advert.key, bytes(20)]))
        sender = draw(st.sampled_from([identity(2).node_id, b"", identity(3).node_id]))
        request: Any = ["store", [sender, key, blob]]
        if choice == 1:
            request = draw(mutated_tree(request))
    elif choice == 2:
        request = draw(mutated_tree(draw(st.sampled_from(_requests()))))
    else:
        seeds = [REQUEST + bytes(20) + pack(r) for r in _requests()]
        return draw(mutated_bytes(seeds, max_random=1500))
    try:
        return head + pack(request)
    except (ValueError, TypeError, OverflowError):
        return head


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 4000) if name == "sockname" else None


def _protocol() -> tuple[MyceliumProtocol, _Transport, TaskOwner]:
    owner = TaskOwner()
    store = RecordStore(clock=lambda: NOW)
    protocol = MyceliumProtocol(
        Node(identity(9).node_id),
        store,
        20,
        rtt=RttEstimator(),
        spawn=owner.spawn,
        identity=identity(9),
    )
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport, owner


def check_datagrams(datagrams: list[bytes], ctx: Context) -> str:
    async def scenario() -> str:
        protocol, _, owner = _protocol()
        try:
            for data in datagrams:
                protocol.datagram_received(data, PEER)
            if protocol.stats.handler_errors:
                raise AssertionError(f"{protocol.stats.handler_errors} handler error(s)")
            for key in protocol.storage.stored_keys():
                for record in protocol.storage.records(key):
                    assert_valid_record(key, record.blob)
            return "stored" if protocol.stats.records_stored else "answered"
        finally:
            protocol.cancel_outstanding()
            await owner.close()

    return ctx.run(scenario())


# -- replies to our requests ----------------------------------------------------------------------


@st.composite
def reply(draw: st.DrawFn) -> tuple[bool, Any]:
    """(records query?, the reply payload a peer sends back)."""
    c = corpus()
    nodes = [
        [identity(4).node_id, "127.0.0.1", 9004],
        [identity(5).node_id, "::1", 9005],
        [identity(7).node_id, draw(st.sampled_from(["10.0.0.1", "localhost", "1.2.3"])), 1],
    ]
    if draw(st.booleans()):
        blobs = draw(st.lists(record_blobs(), max_size=3))
        value: Any = {"records": [c.advert.blob, *blobs], "more": False, "nodes": nodes}
        records = True
    else:
        value, records = nodes, False
    if draw(st.booleans()):
        edited = draw(mutated_tree(value))
        try:
            pack(edited)
            value = edited
        except (ValueError, TypeError, OverflowError):  # not msgpack: no peer can send it
            pass
    return records, value


def check_reply(case: tuple[bool, Any], ctx: Context) -> str:
    records, payload = case

    async def scenario() -> str:
        protocol, transport, owner = _protocol()
        target = Node(identity(6).node_id, *PEER)
        try:
            if records:
                task = owner.spawn(protocol.query_records(target, corpus().advert.key, 3))
            else:
                task = owner.spawn(protocol.query_nodes(target, corpus().advert.key))
            for _ in range(4):  # one reply per page asked for, up to 3 pages
                await _until(lambda: len(transport.sent) > 0 or task.done())
                if task.done():
                    break
                data, _ = transport.sent.pop()
                protocol.datagram_received(RESPONSE + data[1:21] + pack(payload), PEER)
                await _until(lambda: len(transport.sent) > 0 or task.done())
            protocol.cancel_outstanding()
            answer = await task  # an Answer (nodes, blobs, malformed) or None
            nodes = answer.nodes if answer is not None else []
            if any(type(n.port) is not int or not 0 < n.port < 65536 for n in nodes):
                raise InvalidStored(f"a contact with a bad port was taken: {nodes}")
            if any(ip_literal(n.ip) is None for n in nodes):
                raise InvalidStored(f"a contact named by a host name was taken: {nodes}")
            if answer is not None and not all(isinstance(b, bytes) for b in answer.blobs):
                raise AssertionError("a non-bytes blob was taken")
            if answer is None:
                return "no answer"
            return "malformed" if answer.malformed else "answered"
        finally:
            await owner.close()

    return ctx.run(scenario())


async def _until(predicate: Any) -> None:
    for _ in range(50):
        if predicate():
            return
        await asyncio.sleep(0)


TARGETS = [
    Target(
        "datagram",
        "MyceliumProtocol.datagram_received: requests, stores of fuzzed records, noise",
        lambda: st.lists(datagram(), min_size=1, max_size=3),
        check_datagrams,
    ),
    Target(
        "dht-reply",
        "replies to find_node / find_records (query_nodes, query_records)",
        reply,
        check_reply,
    ),
    Target(
        "record",
        "verify_record, GroupAdvert.from_record",
        record_blobs,
        check_record,
        (RecordError,),
    ),
    Target("charter", "GroupCharter.verify", charter_blobs, check_charter, (ProofError,)),
    Target(
        "cert",
        "decode_cert, check_cert, proves_leadership",
        lambda: mutated_msgpack([corpus().cert.encode(), corpus().cert2.encode()]),
        check_certificate,
        (ProofError,),
    ),
]
