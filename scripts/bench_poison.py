#!/usr/bin/env python3
"""Can one bad member ruin a group? Accuracy under poisoned updates, per strategy.

--members full ``Node``s (default 5: DHT, group, channels, Flower ClientApps on digits shards
0/5..4/5) form one group on loopback. Their own training loops stay paused; the benchmark
drives the product's code path directly: the leader's ``GroupGrid`` (with its reply
screening), a stock strategy from ``make_strategy``, ``strategy.start`` for --rounds rounds,
members answering through ``ClientRunner.handle``. One member's ClientApp is swapped for an
attacker that trains honestly and then, per scenario:

  clean         nothing (the baseline)            noise     weights replaced by N(0, 1)
  scale100      its update times 100              signflip  its update times -1
  signflip4     its update times -4 (the largest flip under the screening's 5x median rule)
  nan           every weight NaN                  huge1e300 sign-flipped, num-examples 1e300
  hugeinf       sign-flipped, num-examples inf    signflip-cap  sign-flipped, num-examples at
                                                                the screening cap (1e6)

Reported: accuracy of the final model on the held-out digits of all members' shards (never trained
on), mean +- std over --seeds, per scenario and strategy. A strategy written ``raw:NAME`` runs
with the Grid's screening off (only Flower's structural checks): the product before screening.
Also printed: over clean rounds, the largest ratio of an honest update's norm to the round's
median (what ``Screening.norm_factor`` must leave room for).

    python scripts/bench_poison.py [--rounds 20] [--seeds 3] [--members 5] [--strategies ...]
        [--scenarios ...] [--json]

The defaults take about 3.5 minutes (207 s on 2 shared cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from mycelium_p2p.dht import DhtConfig, DhtNode
from mycelium_p2p.fl import task
from mycelium_p2p.fl.grid import GroupGrid
from mycelium_p2p.fl.limits import Screening
from mycelium_p2p.fl.npy import from_ndarray, to_ndarray
from mycelium_p2p.fl.screening import update_norm
from mycelium_p2p.fl.strategies import make_strategy
from mycelium_p2p.node.node import Node, NodeConfig

SCENARIOS = (
    "clean",
    "noise",
    "scale100",
    "signflip",
    "signflip4",
    "nan",
    "huge1e300",
    "hugeinf",
    "signflip-cap",
)
TRAIN_CONFIG = {"lr": 0.05, "local-epochs": 1}


def poison(
    kind: str, sent: ArrayRecord, trained: ArrayRecord, rng: np.random.Generator
) -> ArrayRecord:
    """The attacker's weights, from the weights it was sent and those it honestly trained."""
    out = ArrayRecord()
    for key, array in trained.items():
        base = to_ndarray(sent[key])
        weights = to_ndarray(array)
        update = weights - base
        if kind == "noise":
            weights = rng.normal(0.0, 1.0, weights.shape)
        elif kind == "scale100":
            weights = base + 100 * update
        elif kind == "signflip4":
            weights = base - 4 * update
        elif kind == "nan":
            weights = np.full_like(weights, np.nan)
        elif kind != "clean":  # signflip and the num-examples attacks carry a flipped update
            weights = base - update
        out[key] = from_ndarray(np.asarray(weights, dtype=base.dtype))
    return out


CLAIMS = {"huge1e300": 1e300, "hugeinf": float("inf"), "signflip-cap": Screening().max_examples}


def attacker(kind: str, honest: ClientApp, seed: int) -> ClientApp:
    """A ClientApp that trains as ``honest`` does, then poisons its training reply."""
    app = ClientApp()
    rng = np.random.default_rng(seed)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        metrics = MetricRecord(dict(reply.content["metrics"]))
        if kind in CLAIMS:
            metrics["num-examples"] = CLAIMS[kind]
        arrays = poison(kind, msg.content["arrays"], reply.content["arrays"], rng)
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return honest(msg, context)

    return app


class MeasuringGrid(GroupGrid):
    """The product's Grid, also noting each clean training round's largest norm / median."""

    spreads: list[tuple[float, float]]  # per clean training round: (largest / median, median)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        norms = [
            update_norm(m.content, r.content)
            for m, r in zip(messages, replies, strict=True)
            if r.has_content() and r.metadata.message_type.startswith("train")
        ]
        median = statistics.median(norms) if norms else 0.0
        if median > 0:
            self.spreads.append((max(norms) / median, median))
        return replies


async def group_of(
    members: int, seed: int, compute: ThreadPoolExecutor
) -> tuple[DhtNode, list[Node]]:
    dht = DhtConfig(maintenance_interval=2.0)
    seed_peer = DhtNode(config=dht)
    await seed_peer.listen(0, "127.0.0.1")
    nodes: list[Node] = []
    for i in range(members):
        config = NodeConfig(
            bootstrap=[seed_peer.address],
            host="127.0.0.1",
            data_shard=f"{i}/{members}",
            seed=seed,
            heartbeat_interval=0.5,
            dht=dht,
            migrate=False,
            split=False,
            **({"create": "poison"} if i == 0 else {"group": "poison"}),
        )
        node = Node(config, on_event=lambda event: None, compute=compute)
        node.training.clear()  # the benchmark runs the rounds
        await node.start()
        nodes.append(node)
    deadline = time.monotonic() + 60
    while len(nodes[0].group.roster) < members:  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise RuntimeError("the group did not form within 60 s")
        await asyncio.sleep(0.1)
    return seed_peer, nodes


def held_out(members: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    shards = [task.load_digits_task((i, members), seed=seed) for i in range(members)]
    return np.concatenate([d.x_test for d in shards]), np.concatenate([d.y_test for d in shards])


async def run_seed(
    args: argparse.Namespace, seed: int, results: dict[str, Any]
) -> list[tuple[float, float]]:
    compute = ThreadPoolExecutor(1, thread_name_prefix="compute")
    seed_peer, nodes = await group_of(args.members, seed, compute)
    leader, bad = nodes[0], nodes[-1]
    assert leader.group is not None and leader.group.is_leader
    honest_app = bad.runner.app
    x_test, y_test = held_out(args.members, seed)
    spreads: list[tuple[float, float]] = []
    try:
        for scenario in args.scenarios:
            bad.runner.app = attacker(scenario, honest_app, seed)
            for name in args.strategies:
                raw, _, base = name.rpartition(":")
                grid = MeasuringGrid(
                    leader.group, asyncio.get_running_loop(), leader.runner.run, screen=not raw
                )
                grid.spreads = spreads if scenario == "clean" else []
                strategy = make_strategy(base)
                strategy.fraction_evaluate = 0.0  # accuracy is measured here, on held-out data
                result = await asyncio.to_thread(
                    strategy.start,
                    grid=grid,
                    initial_arrays=task.initial_arrays(seed=seed),
                    num_rounds=args.rounds,
                    timeout=60.0,
                    train_config=ConfigRecord(dict(TRAIN_CONFIG)),
                    evaluate_config=ConfigRecord({}),
                )
                model = task.MLP()
                accuracy = 0.0
                if len(result.arrays):
                    task.load_arrays(model, result.arrays)
                    accuracy = task.evaluate(model, x_test, y_test)[1]
                results.setdefault(scenario, {}).setdefault(name, []).append(accuracy)
                print(f"  seed {seed} {scenario:>12} {name:>14}: {accuracy:.3f}", file=sys.stderr)
    finally:
        bad.runner.app = honest_app
        for node in nodes:
            await node.stop()
        await seed_peer.close()
        compute.shutdown(wait=True, cancel_futures=True)
    return spreads


def table(results: dict[str, Any], strategies: list[str]) -> str:
    width = max(14, *(len(s) + 2 for s in strategies))
    lines = ["scenario".ljust(14) + "".join(s.rjust(width) for s in strategies)]
    for scenario, by_strategy in results.items():
        cells = []
        for name in strategies:
            values = [100 * v for v in by_strategy[name]]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):5.1f} +-{spread:4.1f}".rjust(width))
        lines.append(scenario.ljust(14) + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--members", type=int, default=5, help="group size, one of them bad")
    parser.add_argument(
        "--strategies",
        default=f"raw:fedavg,fedavg,{NodeConfig.strategy},fedtrimmedavg,fedmedian,multikrum",
        help="comma-separated; raw:NAME runs NAME without the Grid's screening",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.strategies = list(dict.fromkeys(s for s in args.strategies.split(",") if s))
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    logging.basicConfig(level=logging.ERROR)  # the screening's drop warnings are expected here
    logging.getLogger("flwr").setLevel(logging.WARNING)
    started = time.monotonic()
    results: dict[str, Any] = {}
    spreads: list[tuple[float, float]] = []
    for seed in range(args.seeds):
        spreads += asyncio.run(run_seed(args, seed, results))
    seconds = time.monotonic() - started
    print(
        f"final accuracy (%) on held-out digits, {args.members} members, 1 attacker, "
        f"{args.rounds} rounds, {args.seeds} seeds, mean +- std:"
    )
    print(table(results, args.strategies))
    ratios, medians = [r for r, _ in spreads], [m for _, m in spreads]
    if spreads:
        print(
            f"honest update norms, clean rounds: largest / median = {max(ratios):.2f} at most, "
            f"{statistics.median(ratios):.2f} typically; median norm "
            f"{min(medians):.2f} to {max(medians):.2f}"
        )
    print(f"took {seconds:.0f} s")
    if args.json:
        print(
            json.dumps(
                {
                    "rounds": args.rounds,
                    "seeds": args.seeds,
                    "members": args.members,
                    "accuracy": results,
                    "norm_spread_max": max(ratios, default=None),
                    "median_norm_range": [min(medians, default=0), max(medians, default=0)],
                    "seconds": round(seconds, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
