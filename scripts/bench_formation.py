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

The partition arm (``--partition``; needs root and network namespaces) starts --nodes (20)
node processes of one task, each on a namespace host of one bridge (mycelium_p2p/testing/chaos/,
no other harm), and --runs times cuts 2-5 random nodes off for --seconds (20), heals, and
times how long until every node is in a group and the network is in as few groups as capacity
allows again (ceil(N / --capacity)); groups founded while cut off, groups at the end against
that ideal, rounds lost (forks and repeats, from the nodes' events). ``--no-merge`` runs the
same without consolidation (the product before it).

    sudo .venv/bin/python scripts/bench_formation.py --partition [--runs 20] [--capacity 20]

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
import tempfile
import time
from pathlib import Path
from typing import Any

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
            NodeConfig.from_flat(
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


def partition_arm(args: argparse.Namespace) -> None:
    """Cuts and heals on one network of node processes; prints a table (or JSON)."""
    from mycelium_p2p.testing.chaos import ChaosConfig, ChaosRun

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mycelium-formation-"))
    config = ChaosConfig(
        workdir=workdir,
        nodes=args.nodes or 20,
        seed=args.seed,
        domains=1,
        capacity=args.capacity,
        harm=False,
        merge=not args.no_merge,
        use_netns=True,
    )
    run = ChaosRun(config)
    trials = run.partition_trials(
        args.runs,
        seconds=args.seconds or 20.0,
        settle=args.settle,
        log=lambda text: print(text, file=sys.stderr, flush=True),
    )
    times = [t["consolidated_s"] for t in trials if t["consolidated_s"] is not None]
    table = {
        "trials": len(trials),
        "ideal_runs": sum(
            t["groups_end"] <= t["ideal"] and t["consolidated_s"] is not None for t in trials
        ),
        "founded_while_cut_mean": statistics.mean(t["founded_while_cut"] for t in trials),
        "groups_at_heal_max": max(t["groups_at_heal"] for t in trials),
        "groups_end_mean": statistics.mean(t["groups_end"] for t in trials),
        "groups_end_max": max(t["groups_end"] for t in trials),
        "consolidated_p50_s": statistics.median(times) if times else None,
        "consolidated_max_s": max(times) if times else None,
        "rounds_lost": run.summary.rounds_lost,
        "violations": run.summary.violations,
        "errors_logged": run.summary.errors_logged,
    }
    if args.json:
        print(json.dumps({"args": vars(args), "summary": table, "trials": trials}, indent=1))
        return
    ideal = trials[-1]["ideal"] if trials else "?"
    arm = "no merges" if args.no_merge else "formation (the product)"
    print(
        f"\n{config.nodes} nodes, capacity {config.capacity} (ideal {ideal} groups), "
        f"{len(trials)} partitions of 2-5 nodes for {args.seconds or 20.0:g} s"
    )
    print(
        "| arm | trials back to the ideal | groups founded while cut, mean | groups at heal, "
        "max | groups at end, mean / max | heal to ideal, p50 | max | rounds lost |"
    )
    print("|---|---|---|---|---|---|---|---|")
    p50 = "-" if table["consolidated_p50_s"] is None else f"{table['consolidated_p50_s']:.1f} s"
    worst = "-" if table["consolidated_max_s"] is None else f"{table['consolidated_max_s']:.1f} s"
    print(
        f"| {arm} | {table['ideal_runs']}/{len(trials)} | {table['founded_while_cut_mean']:.1f} | "
        f"{table['groups_at_heal_max']} | {table['groups_end_mean']:.2f} / "
        f"{table['groups_end_max']} | {p50} | {worst} | {table['rounds_lost']} |"
    )
    for violation in table["violations"]:
        print(f"violation: {violation}")
    print(f"(logs: {workdir})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nodes", type=int, help="default 8; 20 with --partition")
    parser.add_argument(
        "--seconds", type=float, help="watch each run this long (40); --partition: cut (20)"
    )
    parser.add_argument("--partition", action="store_true", help="the partition arm (netns)")
    parser.add_argument("--capacity", type=int, default=20, help="--partition: group capacity")
    parser.add_argument("--settle", type=float, default=60.0, help="--partition: s after a heal")
    parser.add_argument("--no-merge", action="store_true", help="--partition: no consolidation")
    parser.add_argument("--seed", type=int, default=0, help="--partition: which nodes are cut")
    parser.add_argument("--workdir", help="--partition: keep logs here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.partition:
        partition_arm(args)
        return
    args.nodes = args.nodes or 8
    args.seconds = args.seconds or 40.0
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
