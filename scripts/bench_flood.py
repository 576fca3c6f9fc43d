#!/usr/bin/env python3
"""A flooder against the group index, with our store quotas and rate limits, and without.

One run, two arms with the same flood (loopback only, one process per arm in turn): build N DHT
peers on 127.0.0.1; G honest groups each publish their advert from a network of their own
(127.0.<i>.1), half before the flood and half after; a flooder on 127.0.9.0/24 (one host,
``--sockets`` source addresses) stores F validly signed adverts of F fresh keys at the ``k``
closest peers of each advert's index shard, paced at ``--rate`` datagrams/s. Then a fresh
reader lists the groups (``fetch_adverts``). Prints, per arm: honest groups listed (goal: all),
adverts listed, flood entries held by the peers, stores refused, requests rate-limited, the
reader's request timeouts (peers still busy with the flood answer late), and what the listing
cost (seconds, record pages the peers served it), and the same listing again at once (what a
``groups --watch`` refresh costs once the reader has checked those records: ``VerifiedBlobs``).

    python scripts/bench_flood.py [--peers 24] [--groups 8] [--flood 10000] [--ksize 8] [--json]

The ``baseline`` arm is the same code with quotas off (``StoreQuotas(fair=False)``: the store's
rules before them) and rate limits off (``RpcLimits(enabled=False)``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import Any

import msgpack

from mycelium_p2p.dht import DhtConfig, DhtNode, fetch_adverts
from mycelium_p2p.dht.limits import RpcLimits, source_network
from mycelium_p2p.dht.storage import StoreQuotas
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import GroupAdvert, record_key
from mycelium_p2p.testing.flood import flood_adverts
from mycelium_p2p.testing.records import make_advert

FLOOD_NET = "127.0.9"


def _request(key: bytes, blob: bytes) -> bytes:
    return b"\x00" + os.urandom(20) + msgpack.packb(["store", [b"", key, blob]])


async def _settle(peers: list[DhtNode], limit: float) -> None:
    """Wait until the peers stop handling requests (the flood is read), at most ``limit`` s."""

    def handled() -> int:
        return sum(
            p.stats.records_stored + p.stats.records_rejected + p.stats.rate_limited for p in peers
        )

    end = time.monotonic() + limit
    last = -1
    while time.monotonic() < end:
        now = handled()
        if now == last:
            return
        last = now
        await asyncio.sleep(0.5)


async def _flood(
    targets: dict[bytes, list[tuple[str, int]]],
    flood: list[tuple[bytes, bytes]],
    sockets: int,
    rate: float,
) -> int:
    """Send every advert to the closest peers of its key; returns datagrams sent."""
    socks = []
    for i in range(sockets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"{FLOOD_NET}.{1 + i % 250}", 0))
        sock.setblocking(False)
        socks.append(sock)
    sent = 0
    batch = max(1, int(rate / 100))
    try:
        for key, blob in flood:
            data = _request(key, blob)
            for addr in targets[key]:
                # a full socket buffer loses the datagram, as a network would
                with contextlib.suppress(BlockingIOError):
                    socks[sent % len(socks)].sendto(data, addr)
                sent += 1
                if sent % batch == 0:
                    await asyncio.sleep(0.01)
    finally:
        for sock in socks:
            sock.close()
    return sent


async def arm(name: str, args: argparse.Namespace, flood: list[tuple[bytes, bytes]]) -> dict:
    if name == "ours":
        config = DhtConfig(ksize=args.ksize, maintenance_interval=1.0)
    else:
        config = DhtConfig(
            ksize=args.ksize,
            maintenance_interval=1.0,
            quotas=StoreQuotas(fair=False),
            rpc_limits=RpcLimits(enabled=False),
        )
    peers = [DhtNode(config=config) for _ in range(args.peers)]
    publishers = [DhtNode(config=config) for _ in range(args.groups)]
    flooder = DhtNode(config=config)
    reader = DhtNode(config=config, read_only=True)
    everyone = [*peers, *publishers, flooder, reader]
    started = time.monotonic()
    try:
        for peer in peers:
            await peer.listen(0, "127.0.0.1")
        for i, pub in enumerate(publishers):
            await pub.listen(0, f"127.0.{1 + i}.1")
        await flooder.listen(0, f"{FLOOD_NET}.1")
        await reader.listen(0, "127.0.8.1")
        seed = peers[0].address
        await asyncio.gather(*(p.bootstrap([seed]) for p in [*peers[1:], *publishers, flooder]))
        now = time.time()
        honest = [
            make_advert(Identity.generate(), name=f"honest-{i}", now=now, ttl=args.honest_ttl)
            for i in range(args.groups)
        ]
        half = args.groups // 2
        first = zip(publishers[:half], honest[:half], strict=True)
        await asyncio.gather(*(p.put(r) for p, r in first))
        keys = {key for key, _ in flood}
        targets = {}
        for key in keys:
            closest = await flooder.find_closest(key)
            targets[key] = [(n.ip, n.port) for n in closest]
        flood_start = time.monotonic()
        sent = await _flood(targets, flood, args.sockets, args.rate)
        await _settle(peers, 60)
        flood_s = time.monotonic() - flood_start
        then = zip(publishers[half:], honest[half:], strict=True)
        await asyncio.gather(*(p.put(r) for p, r in then))
        await reader.bootstrap([seed])
        pages_before = sum(p.stats.served["find_records"] for p in peers)
        listing_start = time.monotonic()
        listed = await fetch_adverts(reader)
        listing_s = time.monotonic() - listing_start
        pages = sum(p.stats.served["find_records"] for p in peers) - pages_before
        again_start = time.monotonic()  # what a watch's next refresh costs: checks not repeated
        await fetch_adverts(reader)
        again_s = time.monotonic() - again_start
        ids = {a.group_id for a in listed}
        honest_listed = sum(1 for r in honest if GroupAdvert.from_record(r).group_id in ids)
        net = source_network(f"{FLOOD_NET}.1")
        return {
            "honest_listed": honest_listed,
            "honest_groups": args.groups,
            "adverts_listed": len(listed),
            "flood_held": sum(p.storage.held_by(net) for p in peers),
            "flood_sent": sent,
            "stored": sum(p.stats.records_stored for p in peers),
            "refused": sum(p.stats.records_rejected for p in peers),
            "rate_limited": sum(p.stats.rate_limited for p in peers),
            "reader_timeouts": reader.stats.timeouts,
            "listing_s": round(listing_s, 2),
            "listing_pages": pages,
            "listing_again_s": round(again_s, 2),
            "flood_s": round(flood_s, 1),
            "total_s": round(time.monotonic() - started, 1),
        }
    finally:
        for node in everyone:
            await node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=24)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--ksize", type=int, default=8)
    parser.add_argument("--sockets", type=int, default=32, help="flooder source addresses")
    parser.add_argument("--rate", type=float, default=4000, help="flood datagrams per second")
    parser.add_argument("--honest-ttl", type=float, default=600)
    parser.add_argument("--flood-ttl", type=float, default=3600)
    parser.add_argument("--arms", default="ours,baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    t = time.monotonic()
    flood = [
        (record_key(topic), blob)
        for topic, blob in flood_adverts(args.flood, now=time.time(), ttl=args.flood_ttl)
    ]
    print(f"signed {len(flood)} flood adverts of fresh keys in {time.monotonic() - t:.1f} s")
    results: dict[str, Any] = {}
    for name in args.arms.split(","):
        results[name] = asyncio.run(arm(name, args, flood))
        r = results[name]
        print(
            f"{name:>8}: honest groups listed {r['honest_listed']}/{r['honest_groups']}, "
            f"adverts listed {r['adverts_listed']}, flood entries held {r['flood_held']} "
            f"(sent {r['flood_sent']}), stores accepted {r['stored']}, refused {r['refused']}, "
            f"rate-limited {r['rate_limited']}; reader's timeouts {r['reader_timeouts']}; "
            f"listing {r['listing_s']} s, {r['listing_pages']} pages read, "
            f"again {r['listing_again_s']} s; "
            f"flood {r['flood_s']} s, arm {r['total_s']} s",
            flush=True,
        )
    if args.json:
        print(json.dumps({"peers": args.peers, "flood": args.flood, **results}))


if __name__ == "__main__":
    main()
