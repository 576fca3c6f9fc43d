"""QUIC's anti-amplification rule (RFC 9000 §8.1) for every RPC: to an address that has not
answered one of our requests, we send at most 3x the bytes it sent us."""

from __future__ import annotations

import asyncio
import os
import time

import msgpack
import pytest
from kademlia.node import Node

from mycelium_p2p.dht.peers import AMPLIFICATION, datagram_size, fit_reply
from mycelium_p2p.dht.protocol import MyceliumProtocol
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import Record, roster_topic, sign_record
from mycelium_p2p.testing.aio import run_async
from tests.dht.test_protocol import PEER, FakeTransport, answer_challenge, make_protocol

GROUP = "ab" * 8
KINDS = ("ping", "stun", "store", "find_node", "find_value", "find_records", "prove")


def heartbeat(i: int) -> Record:
    member = Identity.generate()
    body = {
        "group_id": GROUP,
        "addr": ["127.0.0.1", 9000 + i],
        "role": "member",
        "round": i,
        "model_hash": os.urandom(32),
    }
    return sign_record(
        member, "heartbeat", roster_topic(GROUP), body, seq=1, now=time.time(), ttl=600
    )


def loaded_protocol() -> tuple[MyceliumProtocol, FakeTransport, Record, object]:
    """A protocol whose answers would be as big as they get: a full routing table of proven
    peers with long (IPv6) addresses, and 24 records (~7 KB) under one key."""
    protocol, transport, owner = make_protocol()
    for i in range(protocol.router.ksize):
        node = Node(Identity.generate().node_id, f"fd00:1234:5678:9abc::{i + 1:x}", 40000 + i)
        protocol.book.prove((node.ip, node.port), node.id)
        protocol.router.add_contact(node)
    records = [heartbeat(i) for i in range(24)]
    for record in records:
        protocol.storage.offer(record.key, record.blob)
    return protocol, transport, records[0], owner


def request_for(kind: str, record: Record, sender_id: bytes, pad: int) -> bytes:
    args = {
        "ping": [sender_id],
        "stun": [],
        "store": [sender_id, record.key, record.blob],
        "find_node": [sender_id, record.key],
        "find_value": [sender_id, record.key],
        "find_records": [sender_id, record.key, b""],
        "prove": [sender_id, os.urandom(16)],
    }[kind]
    payload = [kind, args, bytes(pad)] if pad else [kind, args]
    return b"\x00" + os.urandom(20) + msgpack.packb(payload)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pad", [0, 2600])
@pytest.mark.parametrize("with_id", [True, False])
def test_every_rpc_sends_at_most_3x_to_an_unvalidated_address(
    kind: str, pad: int, with_id: bool
) -> None:
    @run_async()
    async def scenario() -> None:
        protocol, transport, record, owner = loaded_protocol()
        sender_id = Identity.generate().node_id if with_id else b""
        received = 0
        for _ in range(5):  # a spoofed source: it never answers our challenges
            data = request_for(kind, record, sender_id, pad)
            received += len(data)
            protocol.datagram_received(data, PEER)
            await asyncio.sleep(0.01)  # let challenges go out
        sent = sum(len(d) for d, addr in transport.sent if addr == PEER)
        factor = sent / received
        print(f"{kind:<13} pad={pad:<5} id={with_id!s:<5} factor {factor:.2f}")
        assert sent > 0, "an answer within the budget is still sent"
        assert factor <= AMPLIFICATION
        await owner.close()

    scenario()


@run_async()
async def test_a_padded_first_request_gets_a_whole_page_an_unpadded_one_a_trimmed_page() -> None:
    protocol, transport, record, owner = loaded_protocol()
    protocol.datagram_received(request_for("find_records", record, b"", 2600), PEER)
    page = transport.replies()[-1]
    assert len(page["nodes"]) == protocol.router.ksize and len(page["records"]) >= 15
    protocol.datagram_received(request_for("find_records", record, b"", 0), ("127.0.0.1", 2))
    trimmed = transport.replies()[-1]
    assert trimmed is None or (trimmed["records"] == [] and trimmed["more"] is True)
    assert protocol.stats.replies_trimmed >= 1
    await owner.close()


@run_async()
async def test_a_ping_no_longer_triggers_replication_until_the_pinger_proves_its_id() -> None:
    protocol, transport, owner = make_protocol()
    record = heartbeat(0)
    protocol.storage.offer(record.key, record.blob)  # we know nobody: any newcomer is closer
    peer = Identity.generate()
    ping = request_for("ping", record, peer.node_id, 0)
    protocol.datagram_received(ping, PEER)
    await asyncio.sleep(0.05)
    names = [msgpack.unpackb(d[21:], raw=False)[0] for d, _ in transport.sent if d[:1] == b"\x00"]
    assert names == ["prove"]  # a small challenge, not the records
    sent = sum(len(d) for d, addr in transport.sent if addr == PEER)
    assert sent <= AMPLIFICATION * len(ping)  # it was ~x1500 with stock welcome_if_new
    await answer_challenge(protocol, transport, peer)  # proven: now it gets what it should hold
    for _ in range(100):
        stores = [d for d, _ in transport.sent if b"store" in d[21:40]]
        if stores:
            break
        await asyncio.sleep(0.01)
    assert len(stores) == 1
    await owner.close()


def test_fit_reply_trims_pages_and_contact_lists_to_the_allowance() -> None:
    page = {"records": [bytes(300)] * 20, "more": False, "nodes": [[bytes(20), "::1", 1]] * 20}
    for allowance in (50, 400, 1000, 3000, 6000):
        fitted, cut = fit_reply(page, allowance)
        assert cut
        assert fitted is None or datagram_size(fitted) <= allowance
        if fitted is not None and len(fitted["records"]) < 20:
            assert fitted["more"] is True  # the requester pages on from the last signer
    assert fit_reply(page, 10**6) == (page, False)
    only_nodes, _ = fit_reply({**page, "records": []}, 300)
    assert only_nodes["more"] is False and 0 < len(only_nodes["nodes"]) < 20
    assert fit_reply({"value": bytes(900)}, 300) == (None, True)
