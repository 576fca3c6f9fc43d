"""Per-source rate limits on the DHT's RPCs: a flooding source is throttled, others served."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import msgpack
import pytest

from mycelium_p2p.dht import DhtConfig, DhtNode
from mycelium_p2p.dht.limits import RateLimiter, RpcGate, RpcLimits
from mycelium_p2p.dht.replies import parse_contacts
from mycelium_p2p.records import record_key
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.flood import flood_adverts
from mycelium_p2p.testing.records import make_advert


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock)
    assert [limiter.allow("a") for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("b")  # another source has its own bucket
    clock.now += 0.25  # 2.5 tokens
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    clock.now += 100  # refills to the burst, no more
    assert sum(limiter.allow("a") for _ in range(10)) == 5


def test_the_table_of_sources_is_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_sources=100, clock=Clock())
    for i in range(10_000):
        limiter.allow(("10.0.0.1", i))
    assert len(limiter) == 100


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=float("nan"), burst=1)


def test_stores_are_limited_per_address_and_per_network() -> None:
    clock = Clock()
    gate = RpcGate(
        RpcLimits(stores_per_s=1, stores_burst=3, network_stores_per_s=1, network_stores_burst=5),
        clock=clock,
    )
    a, b, c = ("127.0.9.1", 1), ("127.0.9.2", 1), ("127.0.10.1", 1)
    assert sum(gate.allow(a, "store") for _ in range(10)) == 3
    assert sum(gate.allow(b, "store") for _ in range(10)) == 2  # the network's 5, shared
    assert sum(gate.allow(c, "store") for _ in range(10)) == 3  # another network
    assert all(gate.allow(a, "ping") for _ in range(10))  # cheap RPCs have their own budget
    assert RpcGate(RpcLimits(enabled=False)).allow(a, "store")


def _store_request(key: bytes, blob: bytes) -> bytes:
    # a read-only sender (empty node id): it never enters the routing table
    return b"\x00" + os.urandom(20) + msgpack.packb(["store", [b"", key, blob]])


async def _flood(host: str, target: tuple[str, int], datagrams: list[bytes]) -> None:
    """Send ``datagrams`` from ``host`` in bursts the receiving socket can buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.setblocking(False)
        for start in range(0, len(datagrams), 25):
            for data in datagrams[start : start + 25]:
                sock.sendto(data, target)
            await asyncio.sleep(0.005)
    finally:
        sock.close()


@run_async(120)
async def test_a_flooding_source_is_throttled_and_others_are_still_served() -> None:
    limits = RpcLimits(
        stores_per_s=10, stores_burst=20, network_stores_per_s=10, network_stores_burst=30
    )
    node = DhtNode(config=DhtConfig(maintenance_interval=0.5, rpc_limits=limits))
    honest = DhtNode(config=DhtConfig(maintenance_interval=0.5, ksize=4))
    now = time.time()
    flood = [_store_request(record_key(t), b) for t, b in flood_adverts(600, now=now)]
    try:
        await node.listen(0, "127.0.0.1")
        await honest.listen(0, "127.0.3.1")
        start = time.monotonic()
        await _flood("127.0.9.1", node.address, flood[:300])
        await _flood("127.0.9.2", node.address, flood[300:])  # same /24, another host
        stats = node.stats
        await wait_for(
            lambda: stats.records_stored + stats.records_rejected + stats.rate_limited >= 500,
            30,
            "the flood to be read",
        )
        elapsed = time.monotonic() - start
        checked = stats.records_stored + stats.records_rejected
        # signatures were checked only within the limits: the network's burst, then its rate
        assert checked <= 30 + 10 * elapsed + 1, (checked, elapsed)
        assert stats.rate_limited >= 600 - checked - 100  # (a few may be lost in the kernel)
        # meanwhile an honest peer of another network joins and stores
        await honest.bootstrap([node.address])
        record = make_advert(now=time.time())
        assert await honest.put(record) >= 1
        assert record in node.storage.records(record.key)
    finally:
        await asyncio.gather(node.close(), honest.close())


def test_contacts_named_by_host_names_make_the_reply_malformed() -> None:
    """Peers send addresses; a UDP send to a name would block the loop in getaddrinfo. No
    honest peer names one: the whole reply counts as a liar's (None)."""
    ids = [bytes([i]) * 20 for i in range(1, 5)]
    good = [[ids[0], "127.0.0.2", 4000], [ids[3], "::1", 4000]]
    assert [n.ip for n in parse_contacts(good, exclude=b"")] == ["127.0.0.2", "::1"]
    for name in ("localhost", "example.invalid"):
        assert parse_contacts([*good, [ids[1], name, 4000]], exclude=b"") is None
    # one query per address however many ids it is given under (a restarted peer's old id)
    again = [*good, [ids[2], "127.0.0.2", 4000]]
    assert [n.id for n in parse_contacts(again, exclude=b"")] == [ids[0], ids[3]]
