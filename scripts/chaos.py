#!/usr/bin/env python3
"""Kill peers for a while and check the network's invariants all the time.

    python scripts/chaos.py [--nodes 20] [--duration 600] [--seed 1] [--loopback] [--json]
    python scripts/chaos.py --calm --nodes 50 --duration 60     # scale: memory, time to groups
    python scripts/chaos.py --leaderless-trials 10              # kill a leader, split its group

Peers are separate processes, each on its own network-namespace host where namespaces are
available (root, `ip netns`), else on loopback (then without partitions). See
mycelium_p2p/testing/chaos/ for what is done and checked. Exits 1 if an invariant was
violated or a round was lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mycelium_p2p.testing.chaos import ChaosConfig, ChaosRun
from mycelium_p2p.testing.chaos.trials import leaderless_trials


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of chaos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=float, default=7.0, help="seconds between harms")
    parser.add_argument("--calm", action="store_true", help="do no harm: only watch (a scale run)")
    parser.add_argument("--loopback", action="store_true", help="no namespaces, even as root")
    parser.add_argument("--netns", action="store_true", help="fail if namespaces are missing")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=240.0,
        help="seconds for every node to be in a group before the run starts (or fails)",
    )
    parser.add_argument(
        "--partition-seconds",
        type=float,
        default=8.0,
        help="how long the LAN stays split (16: long enough for cut-off nodes to found groups)",
    )
    parser.add_argument(
        "--expect-consolidation",
        action="store_true",
        help="a heal not followed by consolidation is a violation (it is counted otherwise)",
    )
    parser.add_argument(
        "--leaderless-trials",
        type=int,
        default=0,
        metavar="N",
        help="instead of random harm: N times kill a leader and split its group's members "
        "across a partition at once (both halves regroup), heal, time consolidation",
    )
    parser.add_argument("--workdir", help="keep logs and events here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="last line: the summary as JSON")
    args = parser.parse_args()
    if not 3 <= args.nodes <= 97:
        parser.error("--nodes must be 3..97")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mycelium-chaos-"))
    config = ChaosConfig(
        workdir=workdir,
        nodes=args.nodes,
        duration=args.duration,
        seed=args.seed,
        action_every=args.every,
        harm=not args.calm,
        startup_timeout=args.startup_timeout,
        partition_seconds=args.partition_seconds,
        expect_consolidation=args.expect_consolidation,
        use_netns=False if args.loopback else (True if args.netns else None),
    )
    if args.leaderless_trials:
        return _leaderless(ChaosRun(config), args.leaderless_trials, args.json)
    summary = ChaosRun(config).run(log=lambda text: print(text, flush=True))
    out = summary.as_json()
    for key in (
        "mode",
        "nodes",
        "time_to_all_in_groups",
        "rss_mb_per_node",
        "kills",
        "restarts",
        "failovers",
        "regrouped",
        "partitions",
        "worst_discovery_gap",
        "worst_failover",
        "worst_heal",
        "founded_while_cut",
        "worst_consolidation",
        "rounds_completed",
        "rounds_lost",
        "errors_logged",
        "invariant_violations",
    ):
        value = out[key]
        print(f"{key:<24} {value:.2f}" if isinstance(value, float) else f"{key:<24} {value}")
    print(f"{'actions':<24} {out['actions']}")
    for violation in summary.violations:
        print(f"VIOLATION {violation}")
    for missed in summary.goals_missed:
        print(f"GOAL MISSED {missed}")
    print(f"logs and events: {workdir}")
    if args.json:
        print(json.dumps(out))
    return 1 if summary.violations or summary.rounds_lost else 0


def _leaderless(run: ChaosRun, trials: int, as_json: bool) -> int:
    results = leaderless_trials(
        run,
        trials,
        seconds=run.config.partition_seconds,
        log=lambda text: print(text, flush=True),
    )
    fewer = [r["as_few_groups_s"] for r in results]
    print(
        f"trials {len(results)}; founded while cut {sum(r['founded_while_cut'] for r in results)}; "
        f"back to as few groups {sum(f is not None for f in fewer)}/{len(results)}, worst "
        f"{max((f for f in fewer if f is not None), default=0.0):.1f} s; "
        f"violations {len(run.summary.violations)}; rounds lost {run.summary.rounds_lost}"
    )
    for violation in run.summary.violations:
        print(f"VIOLATION {violation}")
    print(f"logs and events: {run.config.workdir}")
    if as_json:
        print(json.dumps(results))
    return 1 if run.summary.violations or run.summary.rounds_lost else 0


if __name__ == "__main__":
    sys.exit(main())
