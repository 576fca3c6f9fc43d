#!/usr/bin/env python3
"""Does migration learn better? Five arms on the real network code, several seeds.

N nodes (default 32) share one process, each a full ``Node`` (DHT, group, Flower, migration)
on loopback. scikit-learn's digits are split into K domains (rotations by 0/90/180/270 degrees,
or per-domain label permutations with --shift labels), N/K nodes per domain, each holding a
shard of its domain with a quarter held out. Arms:

  global   one group of all nodes            random   K static random groups
  migrate  K random groups, then migration    oracle   one group per domain
           and splitting are switched on      local    every node alone

Each arm runs until every group has completed --rounds rounds (or --max-seconds pass). Every
half second each node's accuracy is measured: its current group's model on its own held-out
data. Reported per arm, mean +- std over seeds: final per-node accuracy, rounds until the mean
reaches 90%, group purity (share of each group's majority domain), migrations. Plots accuracy
vs round per arm and the migration timeline to --out.

    python scripts/bench_learning.py [--seeds 5] [--rounds 40] [--shift rotate|labels]
        [--domains 4] [--nodes 32] [--json] [--overhead] [--compute process|thread] [--workers 1]

The nodes' ClientApps (training, evaluation) run in --workers worker processes they share
(``ClientProcess``; node i in worker i % W), or with --compute thread in one thread of this
process.

--overhead also times rounds of the oracle network (no pause between rounds, nothing else
running), with the ClientApps in a shared thread, one worker process and two, against a plain
in-process loop doing the same local training, averaging and evaluation (with one torch thread
and with two: the faster is the baseline), and prints the ratios; ``--arms '' --overhead``
measures only that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import statistics
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mycelium_p2p.dht import DhtConfig, DhtNode
from mycelium_p2p.fl import task
from mycelium_p2p.fl.leader import arrays_of
from mycelium_p2p.fl.worker import ClientProcess
from mycelium_p2p.node.node import Node, NodeConfig

ARMS = ("global", "random", "migrate", "oracle", "local")
TICK = 0.5
OVERHEAD_WARMUP = 3
OVERHEAD_WINDOW = 5  # rounds


@dataclass
class ArmRun:
    accuracy: float
    rounds_to_90: float | None
    purity: float
    migrations: int
    curve: dict[int, float] = field(default_factory=dict)  # round -> mean accuracy
    moves: list[tuple[float, int, int]] = field(default_factory=list)  # (t, node, new group #)
    seconds: float = 0.0
    rounds: int = 0
    in_transit: int = 0  # nodes between two groups when the run ended


def node_plan(arm: str, n: int, k: int, seed: int, start_groups: int = 0) -> list[dict[str, Any]]:
    """Per node: its domain, shard and how it enters a group in this arm.

    ``random`` and ``migrate`` start from ``start_groups`` random groups (default: ``k``).
    """
    per = n // k
    rng = random.Random(seed)
    random_group = [i % (start_groups or k) for i in range(n)]
    rng.shuffle(random_group)
    plans = []
    for i in range(n):
        plan: dict[str, Any] = {"domain": i % k, "data_shard": f"{i // k}/{per}"}
        if arm == "global":
            plan["group_name"] = "global"
        elif arm in ("random", "migrate"):
            plan["group_name"] = f"random-{random_group[i]}"
        elif arm == "oracle":
            plan["group_name"] = f"domain-{i % k}"
        else:
            plan["group_name"] = f"local-{i}"
        plans.append(plan)
    return plans


class Scorer:
    """Each node's accuracy of a model on its own held-out data (cached data, one MLP)."""

    def __init__(self, shift: str, seed: int) -> None:
        self.shift, self.seed = shift, seed
        self._data: dict[tuple[str, int], task.Dataset] = {}
        self._cache: dict[tuple[str, int, bytes], float] = {}

    def __call__(self, node: Node) -> tuple[int, float] | None:
        group = node.group
        if group is None or group.model.empty:
            return None
        key = (node.config.data_shard, node.config.domain)
        cached = self._cache.get((*key, group.model.digest))
        if cached is None:
            data = self._data.get(key)
            if data is None:
                data = self._data[key] = task.load_digits_task(
                    task.parse_shard(key[0]), key[1], shift=self.shift, seed=self.seed
                )
            model = task.MLP(data.num_features, data.num_classes)
            task.load_arrays(model, arrays_of(group.model))
            cached = task.evaluate(model, data.x_test, data.y_test)[1]
            self._cache[(*key, group.model.digest)] = cached
        return group.model.round, cached


@contextlib.asynccontextmanager
async def network(
    arm: str,
    args: argparse.Namespace,
    seed: int,
    round_pause: float,
    compute: tuple[str, int] | None = None,
) -> AsyncIterator[list[Node]]:
    """The arm's nodes, started with training paused; everything stopped on exit.

    ``compute`` (default ``args.compute``, ``args.workers``): where the ClientApps run.
    ("thread", 1): one thread shared by every node (threads of their own would fight over
    the GIL: 3x the CPU for the same training, a cost of sharing one process only).
    ("process", W): W worker processes, node i in worker i % W: training and networking stop
    taking turns at one GIL, and with W > 1 the nodes train in parallel, as on many machines.
    """
    k, n = args.domains, args.nodes
    kind, count = compute or (args.compute, args.workers)
    dht = DhtConfig(maintenance_interval=2.0)
    pools: list[ThreadPoolExecutor | ClientProcess] = (
        [ClientProcess(torch_threads=1) for _ in range(count)]
        if kind == "process"
        else [ThreadPoolExecutor(1, thread_name_prefix="compute")]
    )
    seed_peer = DhtNode(config=dht)
    await seed_peer.listen(0, "127.0.0.1")
    nodes: list[Node] = []
    founded: set[str] = set()
    try:
        for plan in node_plan(arm, n, k, seed, args.start_groups):
            name = plan["group_name"]
            enter = {"group": name} if name in founded else {"create": name}
            founded.add(name)
            config = NodeConfig(
                bootstrap=[seed_peer.address],
                host="127.0.0.1",
                domain=plan["domain"],
                data_shard=plan["data_shard"],
                shift=args.shift,
                seed=seed,
                capacity=n,
                heartbeat_interval=1.0,
                round_pause=round_pause,
                dht=dht,
                migrate=False,  # migration and splitting start once every node is in
                split=False,
                merge=False,  # each arm keeps the groups it was given
                group_evaluation_interval=args.evaluation_interval,
                advert_ttl=60.0,
                **enter,
            )
            pool = pools[len(nodes) % len(pools)]
            node = Node(config, identity=None, on_event=lambda text: None, compute=pool)
            node.training.clear()  # nobody trains until every node is in
            await node.start()
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes:
            await node.stop()
        await seed_peer.close()
        for pool in pools:
            if isinstance(pool, ClientProcess):
                await pool.close()
            else:
                pool.shutdown(wait=True, cancel_futures=True)


def leader_rounds(nodes: list[Node]) -> list[int]:
    return [n.group.model.round for n in nodes if n.group is not None and n.group.is_leader]


async def run_arm(arm: str, args: argparse.Namespace, seed: int) -> ArmRun:
    scorer = Scorer(args.shift, seed)
    samples: list[tuple[int, int, float]] = []  # (node, round, accuracy)
    async with network(arm, args, seed, args.round_pause) as nodes:
        for node in nodes:
            if arm == "migrate":
                node.config.split = True
                node.start_migration()
            node.training.set()
        start, start_wall = time.monotonic(), time.time()
        while time.monotonic() - start < args.max_seconds:
            await asyncio.sleep(TICK)
            for i, node in enumerate(nodes):
                if (measured := scorer(node)) is not None:
                    samples.append((i, *measured))
            rounds = leader_rounds(nodes)
            if rounds and min(rounds) >= args.rounds:
                break
        seconds = time.monotonic() - start
        final = [scorer(node) for node in nodes]
        groups: dict[str, list[int]] = {}
        for node in nodes:
            if node.group is not None:
                groups.setdefault(node.group.group_id, []).append(node.config.domain)
        # over the nodes in a group: one caught between two groups is in transit, not misplaced
        grouped = sum(len(d) for d in groups.values()) or 1
        purity = sum(max(d.count(x) for x in set(d)) for d in groups.values()) / grouped
        in_transit = len(nodes) - sum(len(d) for d in groups.values())
        index = {gid: j for j, gid in enumerate(sorted(groups))}
        moves = [
            (t - start_wall, i, index.get(to, -1))
            for i, node in enumerate(nodes)
            for t, _, to in node.moves
        ]
        rounds = leader_rounds(nodes)
    curve = _curve(samples, len(nodes), args.rounds)
    reached = [r for r, acc in sorted(curve.items()) if acc >= 0.9]
    return ArmRun(
        accuracy=statistics.fmean(acc for _, acc in filter(None, final)),
        rounds_to_90=reached[0] if reached else None,
        purity=purity,
        in_transit=in_transit,
        migrations=sum(len(node.moves) for node in nodes),
        curve=curve,
        moves=moves,
        seconds=seconds,
        rounds=min(rounds) if rounds else 0,
    )


def _curve(samples: list[tuple[int, int, float]], n: int, rounds: int) -> dict[int, float]:
    """Mean over nodes of each node's latest accuracy at each round."""
    latest: dict[int, float] = {}
    by_round: dict[int, list[tuple[int, float]]] = {}
    for node, rnd, acc in samples:
        by_round.setdefault(rnd, []).append((node, acc))
    curve = {}
    for rnd in range(0, rounds + 1):
        for node, acc in by_round.get(rnd, []):
            latest[node] = acc
        if latest:
            curve[rnd] = statistics.fmean(latest.values())
    return curve


def _workers_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the worker processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _now(workers: list[int] | None = None) -> tuple[float, float]:
    """(wall, CPU of the whole process: every thread, plus its ClientApp workers) seconds."""
    return time.perf_counter(), time.process_time() + _workers_cpu(workers or [])


def _per_round(
    start: tuple[float, float], rounds: int, workers: list[int] | None = None
) -> tuple[float, float]:
    wall, cpu = _now(workers)
    return (wall - start[0]) / rounds, (cpu - start[1]) / rounds


async def network_seconds_per_round(
    args: argparse.Namespace, warmup: int, windows: int, rounds: int, compute: tuple[str, int]
) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per round of the oracle network (K groups each completing one
    round), over ``windows`` consecutive windows of ``rounds`` rounds after ``warmup`` rounds.

    Leaders do not pause between rounds (the pause is a setting, not work) and nothing else
    runs in the process: no scoring. Groups run at their own pace, so a window ends when the
    groups together completed ``rounds`` more rounds each.
    """
    async with network("oracle", args, 0, round_pause=0.0, compute=compute) as nodes:
        for node in nodes:
            node.training.set()
        while min(leader_rounds(nodes), default=0) < warmup:
            await asyncio.sleep(0.01)
        workers = {node.runner.worker for node in nodes}
        pids = [w.pid for w in workers if w is not None and w.pid is not None]
        times, target = [], sum(leader_rounds(nodes))
        for _ in range(windows):
            start, target = _now(pids), target + rounds * args.domains
            while sum(leader_rounds(nodes)) < target:
                await asyncio.sleep(0.01)
            times.append(_per_round(start, rounds, pids))
        return times


def plain_loop_seconds_per_round(
    args: argparse.Namespace, warmup: int, windows: int, rounds: int, threads: int = 1
) -> list[tuple[float, float]]:
    """The oracle network's work without the network: the same nodes, data and groups; each
    round every node trains one local epoch from its group's model, the group averages the
    weights by sample count (FedAvg), and every node evaluates the new model on its test split.
    Timed like the network: per round, over windows of ``rounds`` rounds after ``warmup``;
    torch uses ``threads`` intra-op threads.
    """
    torch.set_num_threads(threads)
    try:
        return _plain_loop(args, warmup, windows, rounds)
    finally:
        torch.set_num_threads(1)


def _plain_loop(
    args: argparse.Namespace, warmup: int, windows: int, rounds: int
) -> list[tuple[float, float]]:
    k, n = args.domains, args.nodes
    datasets = [
        task.load_digits_task((i // k, n // k), i % k, shift=args.shift, seed=0) for i in range(n)
    ]
    models = [task.MLP() for _ in range(k)]
    times, start = [], _now()
    for r in range(warmup + windows * rounds):
        if r >= warmup and (r - warmup) % rounds == 0:
            if r > warmup:
                times.append(_per_round(start, rounds))
            start = _now()
        for g in range(k):
            states, weights = [], []
            for i in range(g, n, k):
                local = task.MLP()
                local.load_state_dict(models[g].state_dict())
                task.train_local(local, datasets[i], seed=r)
                states.append(local.state_dict())
                weights.append(len(datasets[i].x_train))
            total = sum(weights)
            models[g].load_state_dict(
                {
                    key: sum(s[key] * w / total for s, w in zip(states, weights, strict=True))
                    for key in states[0]
                }
            )
            for i in range(g, n, k):
                task.evaluate(models[g], datasets[i].x_test, datasets[i].y_test)
    times.append(_per_round(start, rounds))
    return times


OVERHEAD_SETUPS = (("thread", 1), ("process", 1), ("process", 2))


def report_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Time the network with its ClientApps in one shared thread, one shared worker process
    and two worker processes, and the plain loop with one and with two torch threads (before,
    between and after the networks), in windows. Each network is compared with the faster
    plain loop (by median wall time): both may use the machine's cores as they can. Wall time
    is what users wait for; the best window is the one least disturbed by whatever else runs
    on the machine. CPU time (every thread, and the workers) is the work done, less sensitive
    to that, and exceeds wall time when processes run in parallel."""
    windows = max(1, args.rounds // OVERHEAD_WINDOW)
    shape = (OVERHEAD_WARMUP, windows, OVERHEAD_WINDOW)
    # the machine's speed drifts over minutes: plain loops (1, 2, 1, 2 torch threads) run
    # before, between and after the networks, and their windows are pooled per thread count
    plains: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    measured = {}
    for i, (kind, count) in enumerate(OVERHEAD_SETUPS):
        plains[1 + i % 2] += plain_loop_seconds_per_round(args, *shape, threads=1 + i % 2)
        measured[f"{kind} x{count}"] = asyncio.run(
            network_seconds_per_round(args, *shape, (kind, count))
        )
    last = 1 + len(OVERHEAD_SETUPS) % 2
    plains[last] += plain_loop_seconds_per_round(args, *shape, threads=last)
    best_threads = min(plains, key=lambda t: statistics.median(w[0] for w in plains[t]))
    plain = plains[best_threads]
    rows, summary = [], {}
    for setup, network in measured.items():
        summary[setup] = {}
        for name, pick, column in (
            ("wall_best", min, 0),
            ("wall_median", statistics.median, 0),
            ("cpu_median", statistics.median, 1),
        ):
            n, p = pick(w[column] for w in network), pick(w[column] for w in plain)
            rows.append(
                f"| {setup} | {name.replace('_', ', ')} | {n:.3f} | {p:.3f} | {n / p:.2f} |"
            )
            summary[setup][name] = {
                "network_s": round(n, 4),
                "plain_s": round(p, 4),
                "ratio": round(n / p, 3),
            }
    plain_medians = ", ".join(
        f"{t} thread{'s' if t > 1 else ''} {statistics.median(w[0] for w in times):.3f} s"
        for t, times in plains.items()
    )
    print(
        f"\nper round, {windows} windows of {OVERHEAD_WINDOW} rounds after {OVERHEAD_WARMUP}; "
        f"plain loop median wall: {plain_medians} (compared: {best_threads}):\n"
        "| ClientApps in | seconds per round | network (oracle groups, no pause) | "
        "plain loop, same work | ratio |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )
    summary["plain_threads"] = best_threads
    summary["windows"] = {
        side: [[round(wall, 4), round(cpu, 4)] for wall, cpu in times]
        for side, times in (
            *measured.items(),
            *((f"plain {t} threads", times) for t, times in plains.items()),
        )
    }
    return summary


def plot(results: dict[str, list[ArmRun]], args: argparse.Namespace) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, runs in results.items():
        rounds = sorted(set().union(*(r.curve for r in runs)))
        means = [
            statistics.fmean(r.curve.get(x, np.nan) for r in runs if x in r.curve) for x in rounds
        ]
        ax.plot(rounds, means, label=arm)
    ax.set_xlabel("group round")
    ax.set_ylabel("per-node accuracy on its own domain")
    ax.set_title(
        f"digits, {args.domains} domains ({args.shift}), {args.nodes} nodes, {args.seeds} seed(s)"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    curves = out / f"learning_{args.shift}_{args.domains}.png"
    fig.savefig(curves, dpi=120, bbox_inches="tight")
    plt.close(fig)
    paths = [curves]
    if "migrate" in results:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        run = results["migrate"][0]
        for t, node, group in run.moves:
            ax.scatter(t, node, c=f"C{group % 10}", s=25)
        ax.set_xlabel("seconds")
        ax.set_ylabel("node")
        ax.set_title("migration timeline (first seed): each dot is a move, colour = new group")
        timeline = out / f"migrations_{args.shift}_{args.domains}.png"
        fig.savefig(timeline, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(timeline)
    return paths


def fmt(values: list[float], pct: bool = True) -> str:
    scale = 100 if pct else 1
    mean = statistics.fmean(values) * scale
    std = statistics.pstdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def report_arms(results: dict[str, list[ArmRun]], args: argparse.Namespace) -> dict[str, Any]:
    """Print the arms' table, save the plots; the summary per arm."""
    print(
        f"\nlearning benchmark: digits, {args.domains} domains by {args.shift}, "
        f"{args.nodes} nodes, {args.rounds} rounds, {args.seeds} seed(s)"
    )
    print("| arm | accuracy % (mean ± std) | rounds to 90% | purity | migrations |")
    print("|---|---|---|---|---|")
    summary: dict[str, dict[str, Any]] = {}
    for arm, runs in results.items():
        reached = [r.rounds_to_90 for r in runs if r.rounds_to_90 is not None]
        to90 = f"{statistics.fmean(reached):.0f} ({len(reached)}/{len(runs)})" if reached else "-"
        print(
            f"| {arm} | {fmt([r.accuracy for r in runs])} | {to90} | "
            f"{statistics.fmean(r.purity for r in runs):.2f} | "
            f"{statistics.fmean(r.migrations for r in runs):.1f} |"
        )
        summary[arm] = {
            "acc_mean": round(statistics.fmean(r.accuracy for r in runs), 4),
            "acc_std": round(statistics.pstdev(r.accuracy for r in runs), 4),
            "purity": round(statistics.fmean(r.purity for r in runs), 4),
            "migrations": round(statistics.fmean(r.migrations for r in runs), 2),
            "pure_runs": sum(r.purity == 1.0 for r in runs),
        }
    for path in plot(results, args):
        print(f"saved {path}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--domains", type=int, default=4)
    parser.add_argument("--shift", choices=("rotate", "labels"), default="rotate")
    parser.add_argument(
        "--start-groups",
        type=int,
        default=0,
        help="random groups the random and migrate arms start from (default: --domains, "
        "or 4 with --domains 1)",
    )
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--round-pause", type=float, default=0.4, help="seconds between rounds")
    parser.add_argument(
        "--evaluation-interval",
        type=float,
        default=1.0,
        help="seconds between a node's migration checks (migrate arm)",
    )
    parser.add_argument("--max-seconds", type=float, default=150.0, help="per arm and seed")
    parser.add_argument("--out", default="out/bench_learning")
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument(
        "--compute",
        choices=("thread", "process"),
        default="process",
        help="where the nodes' ClientApps run: one shared thread, or shared worker processes",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes with --compute process"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    if (
        set(arms) - set(ARMS)
        or not 1 <= args.domains <= 8
        or args.nodes % args.domains
        or not 1 <= args.seeds <= 20
        or not 1 <= args.rounds <= 1000
        or not 1 <= args.workers <= 16
    ):
        parser.error("bad --arms/--domains/--nodes/--seeds/--rounds/--workers")
    if args.start_groups == 0:
        args.start_groups = 4 if args.domains == 1 else args.domains
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    torch.set_num_threads(1)

    results: dict[str, list[ArmRun]] = {arm: [] for arm in arms}
    for seed in range(args.seeds):
        for arm in arms:
            run = asyncio.run(run_arm(arm, args, seed))
            results[arm].append(run)
            print(
                f"seed {seed} {arm:8s} acc {run.accuracy:.3f} purity {run.purity:.2f} "
                f"moves {run.migrations:3d} rounds {run.rounds} in {run.seconds:.0f} s"
                f"{f', {run.in_transit} in transit' if run.in_transit else ''}",
                flush=True,
            )
    summary = report_arms(results, args) if arms else {}
    if args.overhead:
        summary["overhead"] = report_overhead(args)
    if args.json:
        print(json.dumps({"arms": summary}))


if __name__ == "__main__":
    main()
