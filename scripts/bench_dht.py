#!/usr/bin/env python3
"""Our DHT against stock kademlia, same workload, same run, loopback only.

Each implementation runs in its own child process (so RSS is its own): start N peers in that
process, some of them hostile, join them through one honest seed, publish M records (two
versions each, from random honest peers; a get must find the second), stop a fraction of the
honest peers (sockets closed: they go silent, as after a crash), then look every record up
from a random live honest peer, one lookup at a time (one slower than --get-deadline, 15 s,
counts as failed; publishing runs 25 puts at a time). Prints join time, get latency
p50/p95/max, success rate and RSS for both, and their ratio (stock / ours).

Hostile peers (``mycelium_p2p.testing.hostile``): ``--adversarial F`` makes a fraction F of
the peers a mix of droppers, liars (no records / a replayed first version / broken
signatures), bogus-contact senders (made-up ids next to the key at dead ports) and sybils
with ids next to the published keys. ``--eclipse N`` adds N sybils with ids next to the
first key, and every get then reads that key. Sybil ids are given, not ground: the worst
case of an attacker grinding keys for ids near the key.

    python scripts/bench_dht.py --peers 100 --kill 0.3 --keys 50 [--json]
    python scripts/bench_dht.py --peers 200 --kill 0 --adversarial 0.2
    python scripts/bench_dht.py --peers 200 --kill 0 --eclipse 20

With --json the last line is one JSON object:
{"peers", "killed_fraction", "adversarial", "eclipse", "ours": {"join_s", "get_p50_ms",
"get_p95_ms", "get_max_ms", "get_mean_ms", "get_success_rate", "rss_mb", "liars_dropped"},
"stock": {same keys}}
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
    "liars_dropped",
)
JOIN_BATCH = 25
ADVERSARIAL_MIX = ("drop", "empty", "stale", "forged", "bogus", "sybil")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Stock:
    """kademlia 2.2.3 exactly as shipped."""

    def __init__(self) -> None:
        from kademlia.network import Server

        self.make = Server

    def make_hostile(self, identity: Any) -> Any:
        from mycelium_p2p.testing.hostile import hostile_stock_server

        # stock ids are not proven: the sybil simply takes the id our sybils ground for
        return hostile_stock_server(identity.node_id if identity is not None else None)

    def plan(self, i: int, rng: random.Random) -> tuple[bytes, Any, Any]:
        """Key i's DHT key and its two versions (the second is the one a get must find)."""
        from kademlia.utils import digest

        key = f"bench-key-{i}"
        return digest(key), (key, rng.randbytes(300)), (key, rng.randbytes(300))

    async def publish(self, peer: Any, version: Any) -> None:
        await peer.set(*version)

    async def lookup(self, peer: Any, version: Any) -> bool:
        return await peer.get(version[0]) == version[1]

    async def close(self, peer: Any) -> None:
        peer.stop()


class Ours:
    """mycelium-p2p's DhtNode: signed records (~310 bytes), validated everywhere."""

    def __init__(self) -> None:
        from mycelium_p2p.dht import DhtNode

        self.make = DhtNode

    def make_hostile(self, identity: Any) -> Any:
        from mycelium_p2p.testing.hostile import hostile_dht_node

        return hostile_dht_node(identity)

    def plan(self, i: int, rng: random.Random) -> tuple[bytes, Any, Any]:
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
        topic = roster_topic(group_id)
        now = time.time()
        v1, v2 = (
            sign_record(member, "heartbeat", topic, body, seq=seq, now=now, ttl=600)
            for seq in (1, 2)
        )
        return v1.key, v1, v2

    async def publish(self, peer: Any, version: Any) -> None:
        await peer.put(version)

    async def lookup(self, peer: Any, version: Any) -> bool:
        return any(r.blob == version.blob for r in await peer.get_records(version.key))

    async def close(self, peer: Any) -> None:
        await peer.close()


def hostile_plan(args: argparse.Namespace, keys: list[bytes], rng: random.Random) -> list:
    """(behaviour, key pair or None) of each hostile peer: the --adversarial mix (its sybils
    next to the published keys, in turn), then --eclipse sybils all next to the first key.
    A sybil's key is ground until its id shares --grind-bits leading bits with its key (ids
    come from keys and are proven: placing one costs ~2**bits key generations)."""
    from mycelium_p2p.testing.hostile import sybil_identity

    def sybil(near: bytes) -> Any:
        return sybil_identity(near, args.grind_bits, seed=rng.getrandbits(32))

    plan: list[tuple[str, Any]] = []
    for i in range(round(args.adversarial * args.peers)):
        behaviour = ADVERSARIAL_MIX[i % len(ADVERSARIAL_MIX)]
        near = keys[i // len(ADVERSARIAL_MIX) % len(keys)] if behaviour == "sybil" else None
        plan.append((behaviour, sybil(near) if near else None))
    plan += [("sybil", sybil(keys[0])) for _ in range(args.eclipse)]
    return plan


async def run_worker(impl_name: str, args: argparse.Namespace) -> dict:
    import psutil

    from mycelium_p2p.testing.hostile import HostileCrew, closed_udp_ports, make_hostile

    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    logging.getLogger("mycelium_p2p").setLevel(logging.CRITICAL)
    impl = Ours() if impl_name == "ours" else Stock()
    rng = random.Random(args.seed)
    plans = [impl.plan(i, rng) for i in range(args.keys)]
    hostile = hostile_plan(args, [key for key, _, _ in plans], rng)
    honest = [impl.make() for _ in range(args.peers - len(hostile))]
    liars = [impl.make_hostile(identity) for _, identity in hostile]
    for node in [*honest, *liars]:
        await node.listen(0, "127.0.0.1")
    crew = HostileCrew(closed_udp_ports())
    for node, (behaviour, _) in zip(liars, hostile, strict=True):
        make_hostile(node.protocol, behaviour, crew)
        crew.enlist(node.node.id, ("127.0.0.1", node.transport.get_extra_info("sockname")[1]))
    seed_addr = ("127.0.0.1", honest[0].transport.get_extra_info("sockname")[1])

    joiners = [*honest[1:], *liars]
    rng.shuffle(joiners)  # hostile peers arrive among the honest ones
    start = time.perf_counter()
    for first in range(0, len(joiners), JOIN_BATCH):
        batch = joiners[first : first + JOIN_BATCH]
        await asyncio.gather(*(n.bootstrap([seed_addr]) for n in batch))
    join_s = time.perf_counter() - start

    publishers = [rng.choice(honest) for _ in plans]
    for version in (1, 2):  # a get must find the second, not the first
        for first in range(0, len(plans), JOIN_BATCH):
            batch = range(first, min(first + JOIN_BATCH, len(plans)))
            await asyncio.gather(*(impl.publish(publishers[i], plans[i][version]) for i in batch))
    dead = set(rng.sample(range(1, len(honest)), int(args.kill * len(honest))))
    for i in sorted(dead):
        honest[i].stop()
    live = [n for i, n in enumerate(honest) if i not in dead]

    reads = [plans[0] if args.eclipse else plans[i] for i in range(args.keys)]
    latencies, successes = [], 0
    for _, _, v2 in reads:
        reader = rng.choice(live)
        start = time.perf_counter()
        try:
            ok = await asyncio.wait_for(impl.lookup(reader, v2), args.get_deadline)
        except asyncio.TimeoutError:
            ok = False
        latencies.append((time.perf_counter() - start) * 1000)
        successes += ok
    rss_mb = psutil.Process().memory_info().rss / 2**20
    dropped = sum(n.stats.liars_dropped for n in live) if impl_name == "ours" else 0
    for n in [*live, *liars]:
        await impl.close(n)
    return {
        "join_s": round(join_s, 3),
        "get_p50_ms": round(percentile(latencies, 0.50), 2),
        "get_p95_ms": round(percentile(latencies, 0.95), 2),
        "get_max_ms": round(max(latencies), 2),
        "get_mean_ms": round(statistics.fmean(latencies), 2),
        "get_success_rate": round(successes / len(reads), 4),
        "rss_mb": round(rss_mb, 1),
        "liars_dropped": dropped,
    }


def run_child(impl: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl]
    for name in ("peers", "kill", "keys", "seed", "adversarial", "eclipse", "get_deadline"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    if out.returncode != 0:
        sys.exit(f"{impl} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(stock: float, ours: float) -> str:
    return f"{stock / ours:.1f}x" if ours else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=100, help="all peers, hostile included")
    parser.add_argument("--kill", type=float, default=0.3, help="fraction of honest peers stopped")
    parser.add_argument("--keys", type=int, default=50, help="records published and read")
    parser.add_argument(
        "--adversarial", type=float, default=0.0, help="fraction of peers hostile (a mix)"
    )
    parser.add_argument(
        "--eclipse", type=int, default=0, help="sybils next to the first key; all gets read it"
    )
    parser.add_argument(
        "--get-deadline", type=float, default=15.0, help="a get slower than this failed, s"
    )
    parser.add_argument(
        "--grind-bits",
        type=int,
        default=12,
        help="leading bits a sybil's ground id shares with its key (~2**bits keys each)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("ours", "stock"), help="run one implementation")
    parser.add_argument("--timeout", type=float, default=1800, help="per implementation, s")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=("ours", "stock"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    hostile = round(args.adversarial * args.peers) + args.eclipse
    if not (
        2 <= args.peers <= 5000
        and 0 <= args.kill < 1
        and 1 <= args.keys <= 10_000
        and 0 <= args.adversarial < 1
        and args.eclipse >= 0
        and args.peers - hostile >= 2
    ):
        parser.error(
            "need 2 <= --peers <= 5000, 0 <= --kill < 1, 1 <= --keys <= 10000, "
            "0 <= --adversarial < 1, --eclipse >= 0 and at least 2 honest peers"
        )

    if args.worker:
        print(json.dumps(asyncio.run(run_worker(args.worker, args))))
        return

    impls = [args.only] if args.only else ["ours", "stock"]
    results = {impl: run_child(impl, args) for impl in impls}
    print(
        f"DHT benchmark: {args.peers} peers in one process ({hostile} hostile: "
        f"{args.adversarial:.0%} mixed, {args.eclipse} eclipsing the first key), "
        f"{args.keys} records, {args.kill:.0%} of honest peers stopped before the lookups "
        f"(seed {args.seed})"
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
        summary = {
            "peers": args.peers,
            "killed_fraction": args.kill,
            "adversarial": args.adversarial,
            "eclipse": args.eclipse,
            **results,
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
