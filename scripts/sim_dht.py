#!/usr/bin/env python3
"""The project's own DHT (``DhtNode``, its protocol, signed records) on an in-memory network.

N peers run in one process on ``testing.SimNetwork`` in virtual time (``testing.run``): no
socket, no sleep, and the same ``--seed`` makes the same run. Peers join through three seed
peers, ``--join-rate`` a second; ``--records`` publishers (never churned) each keep one signed
heartbeat record published (``DhtNode.keep_published``: 300 s lifetime, republished every
100 s). Then,
for ``--duration`` simulated seconds, ``--churn`` x N peers die (silent at once, as a crash)
and as many new ones join, at even intervals, while ``--gets`` reads (``get_records``) from
random live peers for random publishers' keys start at random times.

Printed: get success (the publisher's record came back), hops per read (to the first peer
that held the record, and the deepest peer asked), simulated read latency, memory per peer
(RSS growth over the build / N), and the wall time of the build and of the run. A hop is one
step away from the reader's own table: 1 for a peer it knew, else 1 + the hop of the peer
that named it (``LookupResult.hops``).

    python scripts/sim_dht.py --peers 1000 --latency lan --seed 1 [--json]
    python scripts/sim_dht.py --peers 10000 --churn 0.3 --latency wan
    python scripts/sim_dht.py --peers 1000 --hostile 0.25          # a hostile mix
    python scripts/sim_dht.py --peers 1000 --sybils 50 --sybils-first

Hostile peers (``mycelium_p2p.testing.simhostile``, never churned, never readers):
``--hostile F`` makes F x N of the N peers hostile, joined among the honest ones during the
build, their behaviours cycled over ``--behaviours`` (drop, empty, stale, forged, bogus, sybil;
the mix's sybils next to each record key in turn). ``--sybils S`` adds S sybils next to the
first ``--sybil-targets`` record keys, joined just after the first put (``--sybils-first``:
just before it). A sybil's key is ground until its proven id shares ``--sybil-bits`` leading
bits with its record's key. Then "target reads" are the reads of those keys, counted apart.

Needs ``psutil`` (``pip install -e .[bench]``). ``--max-wall`` (s) ends the run phase early
if the wall clock passes it: nothing more starts, what is under way is cancelled, and the
result says ``"cut_short": true`` (reads cancelled are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from mycelium_p2p.dht import DhtConfig, DhtNode
from mycelium_p2p.dht.lookup import LookupResult
from mycelium_p2p.errors import BootstrapError
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import Record, roster_topic, sign_record
from mycelium_p2p.testing import SimNetwork, run, sim_dht_node
from mycelium_p2p.testing.simhostile import SimAdversary, add_arguments, argument_error

SEEDS = 3
RECORD_TTL = 300.0
BITS_PER_HOP = 1  # b: each hop at least one more bit in common with the key (Kademlia's bound)
HOP_SLACK = 1  # c: the first hop, from our own table


class TracedDhtNode(DhtNode):
    """A ``DhtNode`` that keeps its last record lookup, for hop counts."""

    last_read: LookupResult | None = None

    async def _lookup(self, target: bytes, **kwargs: Any) -> LookupResult:
        result = await super()._lookup(target, **kwargs)
        if kwargs.get("records"):
            self.last_read = result
        return result


@dataclass
class Reads:
    latencies: list[float] = field(default_factory=list)
    hops_to_record: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    newest: int = 0  # found the version last published when the read began
    older: list[dict[str, Any]] = field(default_factory=list)  # found only an older one


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def heartbeat(identity: Identity, group_id: str, seq: int, now: float) -> Record:
    """A plain signed record: a member's heartbeat under its own roster topic."""
    body = {
        "group_id": group_id,
        "addr": ["198.18.0.1", 9000],
        "role": "member",
        "round": seq,
        "model_hash": bytes(32),
    }
    return sign_record(
        identity, "heartbeat", roster_topic(group_id), body, seq=seq, now=now, ttl=RECORD_TTL
    )


class Simulation:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.network = SimNetwork(seed=args.seed, latency=args.latency)
        self.config = DhtConfig()
        self.live: list[DhtNode] = []
        self.protected: set[int] = set()  # seeds and publishers: never churned
        self.seeds: list[tuple[str, int]] = []
        self.busy: set[int] = set()  # readers with a read under way
        self.reads = Reads()
        self.join_failures = 0
        self.newest: dict[bytes, tuple[int, float]] = {}  # key -> last seq published, when
        self.planned: list[tuple[Identity, str]] = []  # publishers chosen before the build
        self.adversary: SimAdversary | None = None
        if args.hostile or args.sybils:  # (no draw from self.rng: honest runs stay as they were)
            plan = random.Random(f"records-{args.seed}")
            self.planned = [
                (Identity.from_seed(plan.randbytes(32)), plan.randbytes(8).hex())
                for _ in range(args.records)
            ]
            self.adversary = SimAdversary(
                self.network,
                self.config,
                args.seed,
                [heartbeat(i, g, 0, 0.0).key for i, g in self.planned],
                mix=round(args.hostile * args.peers),
                behaviours=args.behaviours,
                sybils=args.sybils,
                targets=args.sybil_targets,
                bits=args.sybil_bits,
            )

    async def add_peer(self, seed: tuple[str, int] | None) -> DhtNode:
        node = sim_dht_node(self.network, self.rng, self.config, cls=TracedDhtNode)
        await node.listen()
        if seed is not None:
            for _ in range(3):
                try:
                    await node.bootstrap([seed])
                    break
                except BootstrapError:
                    self.join_failures += 1
                    await asyncio.sleep(1.0)
        self.live.append(node)
        return node

    async def build(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        first = await self.add_peer(None)
        self.seeds = [first.address]
        for _ in range(SEEDS - 1):
            self.seeds.append((await self.add_peer(self.seeds[0])).address)
        batch = max(1, round(self.args.join_rate / 2))
        adversary = self.adversary
        hostile = adversary.build_slots(n - SEEDS) if adversary else set()
        joined = SEEDS
        while joined < n:
            began = loop.time()
            count = min(batch, n - joined)
            seeds = [self.rng.choice(self.seeds) for _ in range(count)]
            await asyncio.gather(
                *(
                    adversary.join_mix_peer(seed)
                    if adversary and joined - SEEDS + i in hostile
                    else self.add_peer(seed)
                    for i, seed in enumerate(seeds)
                )
            )
            joined += count
            await asyncio.sleep(max(0.0, began + 0.5 - loop.time()))
        self.protected = {id(node) for node in self.live[:SEEDS]}
        if adversary and self.args.sybils_first:
            await adversary.join_targeted(self.seeds, self.rng, batch)

    async def publish(self) -> list[tuple[Identity, bytes]]:
        loop = asyncio.get_running_loop()
        keys = []
        candidates = [n for n in self.live if id(n) not in self.protected]
        for n, node in enumerate(self.rng.sample(candidates, self.args.records)):
            if self.planned:
                identity, group_id = self.planned[n]
            else:
                identity = Identity.from_seed(self.rng.randbytes(32))
                group_id = self.rng.randbytes(8).hex()
            key = heartbeat(identity, group_id, 0, 0.0).key
            seq = iter(range(1, 10**9))

            def make(
                i: Identity = identity, g: str = group_id, s: Any = seq, k: bytes = key
            ) -> Record:
                self.newest[k] = (next(s), loop.time())
                return heartbeat(i, g, self.newest[k][0], loop.wall_time())

            node.keep_published(make, interval=RECORD_TTL / 3)
            self.protected.add(id(node))
            keys.append((identity, key))
        await asyncio.sleep(10.0)  # the first puts land
        if self.adversary and not self.args.sybils_first:
            await self.adversary.join_targeted(self.seeds, self.rng, round(self.args.join_rate / 2))
        return keys

    async def churn_one(self) -> None:
        victims = [n for n in self.live if id(n) not in self.protected and id(n) not in self.busy]
        victim = self.rng.choice(victims)
        self.live.remove(victim)
        self.network.kill(victim.address)  # silent at once, as a crash
        victim.stop()
        await self.add_peer(self.rng.choice(self.seeds))

    async def read(self, keys: list[tuple[Identity, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        reader = self.rng.choice([n for n in self.live if id(n) not in self.busy])
        identity, key = self.rng.choice(keys)
        self.busy.add(id(reader))
        start, (newest, made) = loop.time(), self.newest.get(key, (0, 0.0))
        try:
            records = await reader.get_records(key)
        finally:
            self.busy.discard(id(reader))
        self.reads.latencies.append(loop.time() - start)
        result = reader.last_read  # type: ignore[attr-defined]
        found = [r.seq for r in records if r.signer == identity.public_key]
        ok = bool(found)
        self.reads.ok += ok
        self.reads.failed += not ok
        self.reads.newest += ok and max(found) >= newest
        if ok and max(found) < newest:  # how long the newest had been out when the read began
            self.reads.older.append({"seq": max(found), "newest": newest, "age_s": start - made})
        if self.adversary:
            self.adversary.count_read(key, ok)
        if result is not None and result.hops:
            holders = [result.hops[rid] for rid in result.blobs if rid in result.hops]
            if holders:
                self.reads.hops_to_record.append(min(holders))
            self.reads.depth.append(max(result.hops.values()))

    async def run_phase(self, keys: list[tuple[Identity, bytes]], deadline: float) -> bool:
        """Churn and reads for ``--duration`` simulated s; False if the wall bound cut it."""
        loop = asyncio.get_running_loop()
        start, duration = loop.time(), self.args.duration
        churns = round(self.args.churn * self.args.peers)
        events = [(duration * (i + 0.5) / churns, "churn") for i in range(churns)]
        events += [(self.rng.uniform(0, duration), "read") for _ in range(self.args.gets)]
        events.sort()
        tasks = []
        for at, kind in events:
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            if time.perf_counter() > deadline:
                break
            work = self.churn_one() if kind == "churn" else self.read(keys)
            tasks.append(asyncio.ensure_future(work))
        pending = set(tasks)
        while pending and time.perf_counter() <= deadline:
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:  # past the wall bound: reads still open are not counted
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks) == len(events) and not pending


async def simulate(args: argparse.Namespace) -> dict[str, Any]:
    process = psutil.Process()
    deadline = time.perf_counter() + args.max_wall
    sim = Simulation(args)
    gc.collect()
    rss_before = process.memory_info().rss
    began, cpu = time.perf_counter(), time.process_time()
    await sim.build(args.peers)
    build_wall, build_cpu = time.perf_counter() - began, time.process_time() - cpu
    gc.collect()
    rss_per_peer = (process.memory_info().rss - rss_before) / args.peers
    print(  # on stderr, so that a run cut off later still tells what the build cost
        f"built {args.peers} peers: {build_wall:.0f} s wall ({build_cpu:.0f} s CPU), "
        f"{rss_per_peer / 1024:.0f} KB a peer",
        file=sys.stderr,
    )
    keys = await sim.publish()
    began, cpu = time.perf_counter(), time.process_time()
    whole = await sim.run_phase(keys, deadline)
    run_wall, run_cpu = time.perf_counter() - began, time.process_time() - cpu
    reads = sim.reads
    total = reads.ok + reads.failed
    n = args.peers
    return {
        "peers": n,
        "churn": args.churn,
        "latency": args.latency,
        "seed": args.seed,
        "duration_s": args.duration,
        "gets": total,
        "get_success": reads.ok / total if total else math.nan,
        "hops_to_record_p50": percentile(reads.hops_to_record, 0.5),
        "hops_to_record_p95": percentile(reads.hops_to_record, 0.95),
        "hops_to_record_max": max(reads.hops_to_record, default=math.nan),
        "depth_p50": percentile(reads.depth, 0.5),
        "depth_p95": percentile(reads.depth, 0.95),
        "depth_max": max(reads.depth, default=math.nan),
        "hop_bound": math.ceil(math.log2(n) / BITS_PER_HOP) + HOP_SLACK,
        "get_p50_ms": 1000 * percentile(reads.latencies, 0.5),
        "get_p95_ms": 1000 * percentile(reads.latencies, 0.95),
        "get_mean_ms": 1000 * statistics.fmean(reads.latencies) if reads.latencies else math.nan,
        "rss_per_peer_kb": rss_per_peer / 1024,
        "build_wall_s": build_wall,
        "build_cpu_s": build_cpu,
        "run_wall_s": run_wall,
        "run_cpu_s": run_cpu,
        "join_failures": sim.join_failures,
        "datagrams": sim.network.stats.sent,
        "fingerprint": sim.network.fingerprint(),
        "cut_short": not whole,
    } | (hostile_result(sim) if sim.adversary else {})


def hostile_result(sim: Simulation) -> dict[str, Any]:
    """What a run with hostile peers adds: who they were, the reads of targeted keys."""
    assert sim.adversary is not None
    reads, total = sim.reads, sim.reads.ok + sim.reads.failed
    return {
        "hostile_fraction": sim.args.hostile,
        "sybils_first": sim.args.sybils_first,
        "gets_ok": reads.ok,
        "get_newest": reads.newest / total if total else math.nan,
        "got_older": reads.older,
    } | sim.adversary.report(sim.live)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--churn", type=float, default=0.3, help="fraction of N replaced")
    parser.add_argument("--latency", choices=("lan", "wan"), default="lan")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--records", type=int, default=32, help="publishers, one record each")
    parser.add_argument("--duration", type=float, default=300.0, help="simulated s of churn")
    parser.add_argument("--join-rate", type=float, default=100.0, help="peers a simulated s")
    parser.add_argument("--max-wall", type=float, default=3600.0, help="wall s, at most")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(parser.add_argument_group("hostile peers"))
    return parser


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    if args.peers <= SEEDS + args.records or args.records < 1 or not 0 <= args.churn < 1:
        parser.error("need 1 <= --records < --peers - 3 and 0 <= --churn < 1")
    if error := argument_error(args, honest=SEEDS + args.records + 1):
        parser.error(error)
    logging.getLogger("kademlia").setLevel(logging.ERROR)
    logging.getLogger("mycelium_p2p").setLevel(logging.ERROR)
    result = run(simulate(args))
    if args.json:
        print(json.dumps(result))
        return
    r = result
    print(f"{r['peers']} peers, {r['latency']}, churn {r['churn']:.0%}, seed {r['seed']}")
    print(
        f"  build {r['build_wall_s']:.1f} s wall ({r['build_cpu_s']:.1f} s CPU), "
        f"{r['rss_per_peer_kb']:.0f} KB a peer"
    )
    print(
        f"  run   {r['run_wall_s']:.1f} s wall ({r['run_cpu_s']:.1f} s CPU) for "
        f"{r['duration_s']:.0f} simulated s, {r['datagrams']} datagrams"
    )
    print(f"  gets  {r['get_success']:.1%} of {r['gets']} found the record")
    print(
        f"  hops to the record p50/p95/max {r['hops_to_record_p50']}/"
        f"{r['hops_to_record_p95']}/{r['hops_to_record_max']}, deepest asked "
        f"{r['depth_p50']}/{r['depth_p95']}/{r['depth_max']}; "
        f"bound ceil(log2 N / {BITS_PER_HOP}) + {HOP_SLACK} = {r['hop_bound']}"
    )
    print(f"  read latency p50 {r['get_p50_ms']:.1f} ms, p95 {r['get_p95_ms']:.1f} ms (simulated)")
    if "hostile" in r:
        print(
            f"  hostile {r['hostile']}: {r['hostile_by_behaviour']}; in an honest table "
            f"{r['hostile_in_tables']}; liars dropped {r['liars_dropped']}"
        )
        print(
            f"  gets  {r['get_newest']:.1%} found the newest version; target reads "
            f"{r['target_gets_ok']} of {r['target_gets']} found the record"
        )
    if r["cut_short"]:
        print("  CUT SHORT by --max-wall")


if __name__ == "__main__":
    main()
