#!/usr/bin/env python3
"""Our DHT against stock kademlia, same workload, same run, loopback only.

Each implementation runs in its own child process (so RSS is its own): start N peers in that
process, join them through one seed, publish M records from random peers, stop a fraction F of
the peers (sockets closed: they go silent, as after a crash), then look every record up from a
random live peer, one lookup at a time. Prints join time, get latency p50/p95/max, success rate
and RSS for both, and their ratio (stock / ours).

    python scripts/bench_dht.py --peers 100 --kill 0.3 --keys 50 [--json]

With --json the last line is one JSON object:
{"peers", "killed_fraction", "ours": {"join_s", "get_p50_ms", "get_p95_ms", "get_max_ms",
"get_mean_ms", "get_success_rate", "rss_mb"}, "stock": {same keys}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from typing import Any

METRICS = (
    "join_s",
    "get_p50_ms",
    "get_p95_ms",
    "get_max_ms",
    "get_mean_ms",
    "get_success_rate",
    "rss_mb",
)
JOIN_BATCH = 25
GET_DEADLINE_S = 60.0  # one lookup that takes longer than this counts as failed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Stock:
    """kademlia 2.2.3 exactly as shipped."""

    def __init__(self) -> None:
        from kademlia.network import Server

        self.make = Server

    async def publish(self, peer: Any, i: int, rng: random.Random) -> tuple[Any, bytes]:
        key, value = f"bench-key-{i}", rng.randbytes(300)
        await peer.set(key, value)
        return key, value

    async def lookup(self, peer: Any, key: Any, value: bytes) -> bool:
        return await peer.get(key) == value

    async def close(self, peer: Any) -> None:
        peer.stop()


class Ours:
    """mycelium-p2p's DhtNode: signed records (~310 bytes), validated everywhere."""

    def __init__(self) -> None:
        from mycelium_p2p.dht import DhtNode

        self.make = DhtNode

    async def publish(self, peer: Any, i: int, rng: random.Random) -> tuple[Any, bytes]:
        from mycelium_p2p.identity import Identity
        from mycelium_p2p.records import roster_topic, sign_record

        member = Identity.from_seed(rng.randbytes(32))
        group_id = rng.randbytes(8).hex()  # any group id: 16 hex digits
        body = {
            "group_id": group_id,
            "addr": ["127.0.0.1", 9000 + i],
            "role": "member",
            "round": i,
            "model_hash": rng.randbytes(32),
        }
        record = sign_record(
            member, "heartbeat", roster_topic(group_id), body, seq=1, now=time.time(), ttl=600
        )
        await peer.put(record)
        return record.key, record.blob

    async def lookup(self, peer: Any, key: bytes, blob: bytes) -> bool:
        return any(r.blob == blob for r in await peer.get_records(key))

    async def close(self, peer: Any) -> None:
        await peer.close()


async def run_worker(impl_name: str, peers: int, kill: float, keys: int, seed: int) -> dict:
    import psutil

    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    impl = Ours() if impl_name == "ours" else Stock()
    rng = random.Random(seed)
    nodes = [impl.make() for _ in range(peers)]
    for node in nodes:
        await node.listen(0, "127.0.0.1")
    seed_addr = ("127.0.0.1", nodes[0].transport.get_extra_info("sockname")[1])

    start = time.perf_counter()
    for first in range(1, peers, JOIN_BATCH):
        await asyncio.gather(*(n.bootstrap([seed_addr]) for n in nodes[first : first + JOIN_BATCH]))
    join_s = time.perf_counter() - start

    published = [await impl.publish(rng.choice(nodes), i, rng) for i in range(keys)]
    dead = set(rng.sample(range(1, peers), int(kill * peers)))  # never the seed itself
    for i in sorted(dead):
        nodes[i].stop()
    live = [n for i, n in enumerate(nodes) if i not in dead]

    latencies, successes = [], 0
    for key, value in published:
        reader = rng.choice(live)
        start = time.perf_counter()
        try:
            ok = await asyncio.wait_for(impl.lookup(reader, key, value), GET_DEADLINE_S)
        except asyncio.TimeoutError:
            ok = False
        latencies.append((time.perf_counter() - start) * 1000)
        successes += ok
    rss_mb = psutil.Process().memory_info().rss / 2**20
    for n in live:
        await impl.close(n)
    return {
        "join_s": round(join_s, 3),
        "get_p50_ms": round(percentile(latencies, 0.50), 2),
        "get_p95_ms": round(percentile(latencies, 0.95), 2),
        "get_max_ms": round(max(latencies), 2),
        "get_mean_ms": round(statistics.fmean(latencies), 2),
        "get_success_rate": round(successes / len(published), 4),
        "rss_mb": round(rss_mb, 1),
    }


def run_child(impl: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--peers",
        str(args.peers),
        "--kill",
        str(args.kill),
        "--keys",
        str(args.keys),
        "--seed",
        str(args.seed),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    if out.returncode != 0:
        sys.exit(f"{impl} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(stock: float, ours: float) -> str:
    return f"{stock / ours:.1f}x" if ours else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--kill", type=float, default=0.3, help="fraction of peers stopped")
    parser.add_argument("--keys", type=int, default=50, help="records published and read")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("ours", "stock"), help="run one implementation")
    parser.add_argument("--timeout", type=float, default=1800, help="per implementation, s")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=("ours", "stock"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (2 <= args.peers <= 5000 and 0 <= args.kill < 1 and 1 <= args.keys <= 10_000):
        parser.error("need 2 <= --peers <= 5000, 0 <= --kill < 1, 1 <= --keys <= 10000")

    if args.worker:
        result = asyncio.run(run_worker(args.worker, args.peers, args.kill, args.keys, args.seed))
        print(json.dumps(result))
        return

    impls = [args.only] if args.only else ["ours", "stock"]
    results = {impl: run_child(impl, args) for impl in impls}
    print(
        f"DHT benchmark: {args.peers} peers in one process, {args.keys} records, "
        f"{args.kill:.0%} of peers stopped before the lookups (seed {args.seed})"
    )
    header = f"| {'metric':<17} | " + " | ".join(f"{i:>9}" for i in impls)
    print(header + (" | stock/ours |" if len(impls) == 2 else " |"))
    print("|" + "---|" * (len(impls) + 1 + (len(impls) == 2)))
    for metric in METRICS:
        row = f"| {metric:<17} | " + " | ".join(f"{results[i][metric]:>9}" for i in impls)
        if len(impls) == 2:
            row += f" | {ratio(results['stock'][metric], results['ours'][metric]):>10}"
        print(row + " |")
    if args.json:
        print(json.dumps({"peers": args.peers, "killed_fraction": args.kill, **results}))


if __name__ == "__main__":
    main()
