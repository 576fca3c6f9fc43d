"""The hardened protocol: garbage in, nothing out but counters; handlers never raise."""

from __future__ import annotations

import asyncio
import os
import time

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium_p2p.aio import TaskOwner
from mycelium_p2p.dht import MyceliumProtocol, RecordStore, RttEstimator
from mycelium_p2p.dht.peers import proof_message
from mycelium_p2p.dht.wire import REQUEST, RESPONSE
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.records import make_advert

PEER = ("127.0.0.1", 40000)
LOCAL = ("127.0.0.1", 40001)


class FakeTransport:
    """Collects what the protocol sends instead of putting it on a socket."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> object:
        return LOCAL if name == "sockname" else None

    def replies(self) -> list:
        return [msgpack.unpackb(d[21:], raw=False) for d, _ in self.sent if d[:1] == RESPONSE]


def make_protocol() -> tuple[MyceliumProtocol, FakeTransport, TaskOwner]:
    from kademlia.node import Node

    owner = TaskOwner()
    identity = Identity.generate()
    protocol = MyceliumProtocol(
        Node(identity.node_id),
        RecordStore(),
        20,
        rtt=RttEstimator(),
        spawn=owner.spawn,
        identity=identity,
    )
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport, owner


async def answer_challenge(
    protocol: MyceliumProtocol, transport: FakeTransport, prover: Identity, seen=LOCAL
) -> None:
    """Answer the last ``prove`` challenge sent to PEER as ``prover`` would (signing ``seen``)."""
    for _ in range(100):
        sent = [d for d, addr in transport.sent if d[:1] == REQUEST and addr == PEER]
        if sent:
            break
        await asyncio.sleep(0.01)
    data = sent[-1]
    name, (challenger_id, nonce), *_pad = msgpack.unpackb(data[21:], raw=False)
    assert name == "prove"
    message = proof_message(nonce, challenger_id, prover.node_id, seen)
    reply = [prover.public_key, prover.sign(message), list(seen)]
    protocol.datagram_received(RESPONSE + data[1:21] + msgpack.packb(reply), PEER)
    for _ in range(10):
        await asyncio.sleep(0)


def request(name: str, *args) -> bytes:
    return REQUEST + os.urandom(20) + msgpack.packb([name, list(args)])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_datagrams_never_raise(data: bytes) -> None:
    async def scenario() -> None:
        protocol, _, owner = make_protocol()
        protocol.datagram_received(data, PEER)
        protocol.datagram_received(REQUEST + os.urandom(20) + data, PEER)
        protocol.datagram_received(RESPONSE + os.urandom(20) + data, PEER)
        await asyncio.sleep(0)
        await owner.close()
        assert protocol.stats.handler_errors == 0

    asyncio.run(scenario())


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(
        ["ping", "store", "find_node", "find_value", "find_records", "stun", "prove"]
    ),
    args=st.lists(
        st.one_of(
            st.none(),
            st.integers(-(2**63), 2**63 - 1),
            st.binary(max_size=40),
            st.text(max_size=20),
            st.lists(st.integers(0, 9), max_size=3),
            st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
        ),
        max_size=5,
    ),
)
def test_requests_with_arguments_of_any_shape_get_an_answer_not_an_exception(
    name: str, args: list
) -> None:
    async def scenario() -> None:
        protocol, transport, owner = make_protocol()
        protocol.datagram_received(request(name, *args), PEER)
        await owner.close()
        assert protocol.stats.handler_errors == 0
        assert len(transport.replies()) == 1  # an answer (None when the shape was wrong)

    asyncio.run(scenario())


@run_async()
async def test_malformed_datagrams_are_counted_and_dropped() -> None:
    protocol, transport, owner = make_protocol()
    for data in (
        b"",
        b"\x00short",
        b"\x02" + bytes(40),
        REQUEST + bytes(20) + b"\xc1",
        REQUEST + bytes(20) + msgpack.packb({"not": "a request"}),
    ):
        protocol.datagram_received(data, PEER)
    assert protocol.stats.malformed_datagrams == 5
    assert transport.sent == []
    protocol.datagram_received(request("no_such_rpc"), PEER)
    assert protocol.stats.bad_requests == 1 and transport.sent == []
    await owner.close()


@run_async()
async def test_store_validates_and_answers_false_on_refusal() -> None:
    protocol, transport, owner = make_protocol()
    sender = Identity.generate().node_id
    record = make_advert()
    protocol.datagram_received(request("store", sender, record.key, record.blob), PEER)
    protocol.datagram_received(request("store", sender, record.key, b"forged"), PEER)
    protocol.datagram_received(request("store", sender, bytes(20), record.blob), PEER)
    assert transport.replies() == [True, False, False]
    assert protocol.stats.records_stored == 1 and protocol.stats.records_rejected == 2
    assert protocol.storage.records(record.key) == [record]
    await owner.close()


@run_async()
async def test_read_only_peers_are_never_added_to_the_routing_table() -> None:
    protocol, transport, owner = make_protocol()
    protocol.datagram_received(request("ping", b""), PEER)
    assert sum(len(b) for b in protocol.router.buckets) == 0
    assert not [d for d, _ in transport.sent if d[:1] == REQUEST]  # nobody to challenge
    peer = Identity.generate()
    protocol.datagram_received(request("ping", peer.node_id), PEER)
    await answer_challenge(protocol, transport, peer)  # a peer with an id enters once proven
    assert sum(len(b) for b in protocol.router.buckets) == 1
    await owner.close()


@run_async()
async def test_replies_from_the_wrong_address_are_ignored_and_late_ones_teach_rtt() -> None:
    protocol, transport, owner = make_protocol()
    protocol.rtt = RttEstimator(min_timeout=0.05, min_stall=0.01, initial_rtt=0.02)
    future = protocol.ping(PEER, b"")
    sent, _ = transport.sent[-1]
    msg_id = sent[1:21]
    protocol.datagram_received(RESPONSE + msg_id + msgpack.packb(b"x" * 20), ("127.0.0.1", 1))
    assert protocol.stats.foreign_replies == 1 and not future.done()
    assert await future == (False, None)  # timed out: the real peer never answered
    protocol.datagram_received(RESPONSE + msg_id + msgpack.packb(b"x" * 20), PEER)
    assert protocol.stats.late_replies == 1
    assert protocol.rtt.give_up_after(PEER) >= 0.05
    await owner.close()


@run_async()
async def test_records_are_handed_to_a_newly_seen_peer_under_their_own_key() -> None:
    """Stock kademlia hashes the (already hashed) key again here; we must not."""
    from mycelium_p2p.dht import DhtNode

    a, b = DhtNode(), DhtNode()
    await a.listen(0, "127.0.0.1")
    await b.listen(0, "127.0.0.1")
    try:
        record = make_advert()
        a.storage.offer(record.key, record.blob)  # a knows nobody: any newcomer is closer
        await b.bootstrap([a.address])
        for _ in range(100):
            if b.storage.records(record.key):
                break
            await asyncio.sleep(0.01)
        assert b.storage.records(record.key) == [record]
    finally:
        await a.close()
        await b.close()


def test_rtt_estimator_bounds() -> None:
    rtt = RttEstimator(min_timeout=0.25, max_timeout=5.0, min_stall=0.02)
    assert rtt.give_up_after() == 1.5 * 2  # nothing measured yet: 3 x 0.5 s initial, doubled
    for _ in range(50):
        rtt.observe(PEER, 0.001)
    assert rtt.give_up_after(PEER) == 0.25 and rtt.stall_after(PEER) == 0.02
    for _ in range(50):
        rtt.observe(PEER, 10.0)
    assert rtt.give_up_after(PEER) == 5.0
    assert time.time() > 0


def test_find_neighbors_returns_the_closest_contacts_even_beside_empty_buckets() -> None:
    """kademlia's walk by bucket index stops at an empty bucket and is not XOR order."""
    import random

    from kademlia.node import Node

    rng = random.Random(5)
    for _ in range(30):
        protocol, _, _ = make_protocol()
        router = protocol.router
        contacts = [Node(rng.randbytes(20), "127.0.0.1", 1000 + i) for i in range(150)]
        for contact in contacts:
            router.add_contact(contact)
        for contact in rng.sample(contacts, 60):  # departures leave buckets empty
            router.remove_contact(contact)
        held = [c for b in router.buckets for c in b.get_nodes()]
        for _ in range(10):
            target = Node(rng.randbytes(20))
            expected = sorted(held, key=target.distance_to)[:20]
            assert router.find_neighbors(target) == expected
