"""S/Kademlia ids: a peer enters a routing table, or a reply, only after proving its id."""

from __future__ import annotations

import asyncio

import pytest
from kademlia.network import Server
from kademlia.node import Node
from kademlia.routing import RoutingTable

from mycelium_p2p.dht import DhtNode
from mycelium_p2p.dht.peers import AddressBook, ProofLimiter, check_proof, proof_message
from mycelium_p2p.dht.wire import REQUEST
from mycelium_p2p.errors import BootstrapError
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.loopback import FAST, swarm
from mycelium_p2p.testing.records import make_advert
from tests.dht.test_protocol import LOCAL, PEER, answer_challenge, make_protocol, request

NONCE = bytes(range(16))


def table_ids(router: RoutingTable) -> set[bytes]:
    return {n.id for bucket in router.buckets for n in bucket.get_nodes()}


def chosen_id_near(key: bytes, i: int) -> bytes:
    """An id a Sybil would pick: ``key`` with only its last byte changed."""
    return key[:-1] + bytes([key[-1] ^ (i + 1)])


def signed_proof(prover: Identity, challenger_id: bytes, seen=LOCAL, nonce=NONCE) -> list:
    message = proof_message(nonce, challenger_id, prover.node_id, seen)
    return [prover.public_key, prover.sign(message), list(seen)]


# -- the proof itself ----------------------------------------------------------------------------


def test_a_proof_is_accepted_only_for_our_nonce_our_address_and_its_own_key() -> None:
    prover, other = Identity.generate(), Identity.generate()
    me = Identity.generate().node_id
    good = signed_proof(prover, me)
    assert check_proof(good, nonce=NONCE, challenger_id=me, local=LOCAL) == prover.node_id
    assert check_proof(good, nonce=bytes(16), challenger_id=me, local=LOCAL) is None
    assert check_proof(good, nonce=NONCE, challenger_id=bytes(20), local=LOCAL) is None
    # relayed: the honest prover signed the relay's address, not ours
    relayed = signed_proof(prover, me, seen=("127.0.0.2", LOCAL[1]))
    assert check_proof(relayed, nonce=NONCE, challenger_id=me, local=LOCAL) is None
    other_port = signed_proof(prover, me, seen=(LOCAL[0], LOCAL[1] + 1))
    assert check_proof(other_port, nonce=NONCE, challenger_id=me, local=LOCAL) is None
    # bound to a wildcard we do not know our IP, but still our port
    assert check_proof(relayed, nonce=NONCE, challenger_id=me, local=("0.0.0.0", LOCAL[1]))
    # someone else's key under the signature
    swapped = [other.public_key, good[1], good[2]]
    assert check_proof(swapped, nonce=NONCE, challenger_id=me, local=LOCAL) is None
    for junk in (None, b"x", [], [1, 2, 3], [good[0], good[1], ["127.0.0.1", 0]], [*good, 1]):
        assert check_proof(junk, nonce=NONCE, challenger_id=me, local=LOCAL) is None


def test_proven_ids_expire_and_the_book_stays_bounded() -> None:
    now = [0.0]
    book = AddressBook(max_entries=10, proof_ttl=60.0, clock=lambda: now[0])
    book.prove(PEER, b"a" * 20)
    assert book.proven_id(PEER) == b"a" * 20
    assert book.prove(PEER, b"b" * 20) == b"a" * 20  # a new key at that address
    now[0] = 61.0
    assert book.proven_id(PEER) is None
    for port in range(1000, 1100):
        book.prove(("127.0.0.1", port), bytes(20))
        book.received(("10.0.0.1", port), 100)
    assert len(book._proven) == 10 and len(book._budget) == 10


def test_the_proof_limiter_bounds_each_address_and_everyone() -> None:
    now = [0.0]
    limiter = ProofLimiter(
        per_address_rate=1.0, burst=4, total_rate=10, total_burst=20, clock=lambda: now[0]
    )
    assert sum(limiter.allow(PEER) for _ in range(100)) == 4
    now[0] = 2.0
    assert sum(limiter.allow(PEER) for _ in range(100)) == 2
    strangers = sum(limiter.allow(("127.0.0.1", p)) for p in range(1000, 1100))
    assert strangers == 18  # the shared bucket: 20 + 2 s x 10/s - the 6 PEER took


# -- who enters the routing table --------------------------------------------------------------


@run_async()
async def test_a_chosen_id_never_enters_the_table_nor_a_reply() -> None:
    protocol, transport, owner = make_protocol()
    key = Identity.generate().node_id
    chosen = chosen_id_near(key, 0)
    sybil = Identity.generate()  # its real key: its id is not ``chosen``
    protocol.datagram_received(request("ping", chosen), PEER)
    await answer_challenge(protocol, transport, sybil)
    ids = table_ids(protocol.router)
    assert chosen not in ids
    assert ids == {sybil.node_id}  # proven under its real, uncontrolled id
    protocol.datagram_received(request("find_node", b"", key), ("127.0.0.1", 5))
    assert all(contact[0] != chosen for contact in transport.replies()[-1])
    await owner.close()


@run_async()
async def test_a_bad_signature_or_a_relayed_proof_or_silence_gets_no_one_in() -> None:
    for answer in ("forged", "relayed", "silent"):
        protocol, transport, owner = make_protocol()
        peer = Identity.generate()
        protocol.rtt.min_timeout = 0.05
        protocol.datagram_received(request("ping", peer.node_id), PEER)
        if answer == "relayed":
            await answer_challenge(protocol, transport, peer, seen=("127.0.0.9", 7))
        elif answer == "forged":
            await answer_challenge(protocol, transport, Identity.generate())
            assert peer.node_id not in table_ids(protocol.router)
            await owner.close()
            continue
        else:
            await asyncio.sleep(0.3)  # the challenge times out
        assert table_ids(protocol.router) == set(), answer
        assert protocol.book.proven_id(PEER) is None
        await owner.close()


@run_async()
async def test_a_stranger_cannot_make_us_sign_or_challenge_without_limit() -> None:
    protocol, transport, owner = make_protocol()
    for _ in range(100):
        protocol.datagram_received(request("prove", b"", NONCE), PEER)
    signed = [r for r in transport.replies() if r is not None]
    assert len(signed) == protocol.limiter.burst
    transport.sent.clear()
    for _ in range(100):  # fresh ids, one address
        protocol.datagram_received(request("ping", Identity.generate().node_id), PEER)
    challenges = [d for d, _ in transport.sent if d[:1] == REQUEST]
    assert len(challenges) <= 1  # one in flight per address, and the bucket is empty anyway
    assert protocol.stats.proofs_throttled > 0
    await owner.close()


@run_async(timeout=120)
async def test_proven_peers_route_and_their_proofs_are_cached() -> None:
    async with swarm(30) as nodes:
        for node in nodes:
            assert node.routing_table_size() > 0
            for contact in (n for b in node.protocol.router.buckets for n in b.get_nodes()):
                assert node.protocol.book.proven_id((contact.ip, contact.port)) == contact.id
        record = make_advert()
        await nodes[3].put(record)
        assert await nodes[-1].get_records(record.key) == [record]
        before = sum(n.stats.proofs_ok for n in nodes)
        for reader in nodes[10:20]:
            assert await reader.get_records(record.key) == [record]
        after = sum(n.stats.proofs_ok for n in nodes)
        # mostly cached, not re-proven: a get asks ~20 peers over its 3 paths
        assert after - before < 10 * 10, (before, after)


@run_async(timeout=120)
async def test_contacts_from_a_liar_are_only_candidates_until_proven() -> None:
    async with swarm(15) as nodes:
        liar, reader = nodes[1], DhtNode(config=FAST)
        target = make_advert().key
        honest = nodes[2:12]
        bogus = [[chosen_id_near(target, i), *n.address] for i, n in enumerate(honest)]
        bogus += [[chosen_id_near(target, 20 + i), "127.0.0.1", 1 + i] for i in range(5)]
        liar.protocol._handlers["find_node"] = lambda *_: bogus
        liar.protocol._handlers["find_records"] = lambda *_: {
            "records": [],
            "more": False,
            "nodes": bogus,
        }
        await reader.listen(0, "127.0.0.1")
        try:
            await reader.bootstrap([liar.address])
            await reader.find_closest(target)
            chosen = {c[0] for c in bogus}
            for node in [reader, *nodes]:
                assert not chosen & table_ids(node.protocol.router)
            # the honest peers behind the lies got in, under their real ids
            assert {n.node.id for n in honest} <= table_ids(reader.protocol.router)
            # caught: by an address that proved another id, or by its dead contacts (blamed)
            assert reader.stats.bogus_ids + reader.stats.liars_dropped > 0
        finally:
            await reader.close()


@run_async(timeout=60)
async def test_a_restarted_peer_with_a_new_key_replaces_its_old_id() -> None:
    a, b = DhtNode(config=FAST), DhtNode(config=FAST)
    await a.listen(0, "127.0.0.1")
    await b.listen(0, "127.0.0.1")
    port = b.address[1]
    try:
        await a.bootstrap([b.address])
        assert table_ids(a.protocol.router) == {b.node.id}
        await b.close()
        b = DhtNode(config=FAST)
        await b.listen(port, "127.0.0.1")
        assert await a.protocol.prove(b.address) is not None
        assert table_ids(a.protocol.router) == {b.node.id}
    finally:
        await a.close()
        await b.close()


# -- stock kademlia ------------------------------------------------------------------------------


@run_async(timeout=60)
async def test_stock_kademlia_peers_are_answered_but_never_enter_our_tables() -> None:
    async with swarm(10) as nodes:
        stock = Server()
        await stock.listen(0, "127.0.0.1")
        try:
            await stock.bootstrap([nodes[0].address])  # it cannot prove: rpc_prove is ours
            assert stock.protocol.router.find_neighbors(Node(stock.node.id))  # answered
            await asyncio.sleep(0.5)
            assert all(stock.node.id not in table_ids(n.protocol.router) for n in nodes)
            stock_port = stock.transport.get_extra_info("sockname")[1]
            fresh = DhtNode(config=FAST)
            await fresh.listen(0, "127.0.0.1")
            try:
                with pytest.raises(BootstrapError):  # nor can a stock seed prove itself to us
                    await fresh.bootstrap([("127.0.0.1", stock_port)])
            finally:
                await fresh.close()
        finally:
            stock.stop()


@run_async()
async def test_a_liar_cannot_evict_a_peer_by_listing_its_id_at_a_dead_address() -> None:
    protocol, _transport, owner = make_protocol()
    honest = Node(Identity.generate().node_id, "127.0.0.1", 41000)
    protocol.book.prove((honest.ip, honest.port), honest.id)
    protocol.welcome_if_new(honest)
    protocol.handle_call_response((False, None), Node(honest.id, "127.0.0.1", 41999))
    assert table_ids(protocol.router) == {honest.id}  # the lie timed out, not the peer
    protocol.handle_call_response((False, None), honest)
    assert table_ids(protocol.router) == set()  # the peer itself timed out
    await owner.close()


@run_async()
async def test_an_address_that_claims_another_id_is_challenged_again() -> None:
    protocol, transport, owner = make_protocol()
    first, second = Identity.generate(), Identity.generate()
    protocol.datagram_received(request("ping", first.node_id), PEER)
    await answer_challenge(protocol, transport, first)
    transport.sent.clear()
    protocol.datagram_received(request("ping", second.node_id), PEER)  # restarted, new key
    await answer_challenge(protocol, transport, second)
    assert protocol.book.proven_id(PEER) == second.node_id
    assert table_ids(protocol.router) == {second.node_id}
    await owner.close()


@run_async(timeout=180)
async def test_twenty_sybils_with_chosen_ids_around_a_key_enter_no_table() -> None:
    """Real peers announcing ids next to a key (not derived from their keys) join a swarm,
    look the key up and store there; no honest table or reply ever holds their ids."""
    async with swarm(30) as nodes:
        record = make_advert()
        chosen = [chosen_id_near(record.key, i) for i in range(20)]
        sybils = []
        for node_id in chosen:
            sybil = DhtNode(config=FAST)
            sybil.node = Node(node_id)  # the id it announces; its key says otherwise
            await sybil.listen(0, "127.0.0.1")
            sybils.append(sybil)
        try:
            await asyncio.gather(*(s.bootstrap([nodes[0].address]) for s in sybils))
            await asyncio.gather(*(s.find_closest(record.key) for s in sybils))
            await nodes[5].put(record)
            for reader in nodes[10:20]:
                assert await reader.get_records(record.key) == [record]
            for node in nodes:
                assert not set(chosen) & table_ids(node.protocol.router)
                reply = node.protocol.rpc_find_node(("127.0.0.1", 9), b"", record.key)
                assert not set(chosen) & {contact[0] for contact in reply}
            assert sum(n.stats.proofs_failed for n in nodes) > 0  # they were asked, and failed
        finally:
            for sybil in sybils:
                await sybil.close()
