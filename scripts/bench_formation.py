#!/usr/bin/env python3
"""Do nodes started together end in as few groups as their data warrants?

Each run starts --nodes full ``Node``s of one task and one data domain (digits shards
0/N..N-1/N) at the same moment, in-process on loopback, with room for all in one group
(capacity = N), and watches for --seconds: how many groups exist, and when the network first
reached the ideal number (ceil(N / capacity) = 1) and stayed there. Three arms in one run:

  formation    the product: jitter before founding, consolidation of groups (merges)
  merges-only  no jitter: every node that sees no group founds one, merges consolidate them
  baseline     found at once when no group is seen, no merges (the product before them)

Rounds lost: a group's round counter going back (it never may) counts as a lost round.

    python scripts/bench_formation.py [--runs 20] [--nodes 8] [--seconds 40] [--json]

Needs the package only (no extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mycelium_p2p.dht import DhtConfig, DhtNode
from mycelium_p2p.node.node import Node, NodeConfig

ARMS = {
    "formation": {},
    "merges-only": {"found_jitter": 0.0},
    "baseline": {"merge": False, "found_jitter": 0.0},
}


async def one_run(arm: str, nodes_n: int, seconds: float, seed: int) -> dict[str, Any]:
    dht = DhtConfig(maintenance_interval=0.5)
    seed_peer = DhtNode(config=dht)
    await seed_peer.listen(0, "127.0.0.1")
    nodes = [
        Node(
            NodeConfig(
                bootstrap=[seed_peer.address],
                host="127.0.0.1",
                data_shard=f"{i}/{nodes_n}",
                capacity=nodes_n,
                heartbeat_interval=0.5,
                round_pause=0.1,
                migrate=False,
                split=False,
                seed=seed * 100 + i,
                dht=dht,
                **ARMS[arm],
            ),
            on_event=lambda event: None,
        )
        for i in range(nodes_n)
    ]
    ideal = math.ceil(nodes_n / nodes_n)
    started = time.monotonic()
    reached: float | None = None
    rounds: dict[str, int] = {}
    lost = 0
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        while time.monotonic() - started < seconds:
            groups = {n.group.group_id for n in nodes if n.group is not None}
            for node in nodes:
                group = node.group
                if group is not None and group.is_leader:
                    last = rounds.get(group.group_id, 0)
                    lost += max(0, last - group.model.round)
                    rounds[group.group_id] = max(last, group.model.round)
            if len(groups) <= ideal and all(n.group is not None for n in nodes):
                reached = reached if reached is not None else time.monotonic() - started
            else:
                reached = None
            await asyncio.sleep(0.25)
        final = len({n.group.group_id for n in nodes if n.group is not None})
    finally:
        for node in nodes:
            await node.stop()
        await seed_peer.close()
    return {"arm": arm, "groups": final, "ideal": ideal, "reached_s": reached, "lost": lost}


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["reached_s"] for r in results if r["reached_s"] is not None]
    return {
        "runs": len(results),
        "ideal_runs": sum(r["groups"] == r["ideal"] for r in results),
        "groups_mean": statistics.mean(r["groups"] for r in results),
        "groups_max": max(r["groups"] for r in results),
        "time_p50_s": statistics.median(times) if times else None,
        "time_max_s": max(times) if times else None,
        "rounds_lost": sum(r["lost"] for r in results),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for run in range(args.runs):
        for arm in ARMS:  # interleaved: both arms see the same machine load
            result = await one_run(arm, args.nodes, args.seconds, run)
            results[arm].append(result)
            print(f"run {run + 1} {arm}: {result}", file=sys.stderr, flush=True)
    table = {arm: summary(rs) for arm, rs in results.items()}
    if args.json:
        print(json.dumps({"args": vars(args), "summary": table, "runs": results}, indent=1))
        return
    print(f"\n{args.nodes} nodes started at once, room for all in one group, {args.runs} runs")
    print(
        "| arm | runs ending in 1 group | groups, mean | groups, max | time to 1 group, "
        "p50 | max | rounds lost |"
    )
    print("|---|---|---|---|---|---|---|")
    for arm, s in table.items():
        p50 = "-" if s["time_p50_s"] is None else f"{s['time_p50_s']:.1f} s"
        worst = "-" if s["time_max_s"] is None else f"{s['time_max_s']:.1f} s"
        print(
            f"| {arm} | {s['ideal_runs']}/{s['runs']} | {s['groups_mean']:.2f} | "
            f"{s['groups_max']} | {p50} | {worst} | {s['rounds_lost']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
