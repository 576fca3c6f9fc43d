#!/usr/bin/env python3
"""Leader failover: SIGKILL the leader of a running group of processes, again and again.

A seed peer and --nodes `mycelium-p2p join` processes on loopback (--heartbeat 1 s by default)
form one group and train. Each kill: SIGKILL the leader's process, then time how long until a
survivor reports a completed round in a newer term, and compare the last round the dead leader
reported with the round its successor resumed from (rounds lost). A replacement node joins
after each kill so the group keeps its size. Flower alone has no automatic leader failover: its
run ends with its ServerApp.

    python scripts/bench_failover.py --kills 5 [--nodes 4] [--heartbeat 1.0] [--json]

With --json the last line is {"kills", "failover_s_p50", "failover_s_max", "rounds_lost"}.
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import signal
import statistics
import tempfile
import time
from pathlib import Path

from mycelium_p2p.testing.procs import Proc, start_join, start_seed

ROUND = re.compile(r"round (\d+) \(term (\d+)\)")


def wait_any(
    procs: list[Proc], pattern: re.Pattern[str], timeout: float, accept=lambda m: True
) -> tuple[Proc, re.Match[str], float]:
    """The first new output line of any process that matches (and is accepted)."""
    sel = selectors.DefaultSelector()
    for proc in procs:
        sel.register(proc.popen.stdout, selectors.EVENT_READ, proc)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                proc = key.data
                line = proc.popen.stdout.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    continue
                proc.lines.append(line.rstrip("\n"))
                if (m := pattern.search(line)) and accept(m):
                    return proc, m, time.monotonic()
    finally:
        sel.close()
    raise TimeoutError(f"nothing matched {pattern.pattern!r} within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.kills <= 100 and 2 <= args.nodes <= 20):
        parser.error("need 1 <= --kills <= 100 and 2 <= --nodes <= 20")

    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    procs: list[Proc] = []
    names = iter(range(1000))

    def start_node() -> Proc:
        i = next(names)
        return start_join(
            procs,
            port,
            tmp / f"n{i}",
            "--heartbeat",
            str(args.heartbeat),
            "--round-pause",
            "0.2",
            "--data-shard",
            f"{i % args.nodes}/{args.nodes}",
        )

    failovers: list[float] = []
    lost = 0
    try:
        port = start_seed(procs, tmp / "seed")
        nodes = [start_node() for _ in range(args.nodes)]
        leader, term = nodes[0], 1
        leader.expect(r"leader of group")
        for kill in range(args.kills):
            # let the group settle under this leader: a few rounds of the current term
            wait_any([leader], ROUND, 60, lambda m, t=term: int(m.group(2)) == t)
            wait_any([leader], ROUND, 60, lambda m, t=term: int(m.group(2)) == t)
            killed_at = time.monotonic()
            leader.signal(signal.SIGKILL)
            leader.popen.wait(10)
            leader.lines += leader.popen.stdout.read().splitlines()
            last = max(
                (
                    int(m.group(1))
                    for line in leader.lines
                    if (m := ROUND.search(line)) and int(m.group(2)) == term
                ),
                default=0,
            )
            survivors = [n for n in nodes if n is not leader]
            # the next round of a newer term, from whichever survivor leads it (a first winner
            # may lose its term to a rival before it completes a round)
            new, first, done_at = wait_any(
                survivors, ROUND, 60, lambda m, t=term: int(m.group(2)) > t
            )
            term = int(first.group(2))
            resumed = int(first.group(1)) - 1
            lost += max(0, last - resumed)
            failovers.append(done_at - killed_at)
            print(
                f"kill {kill + 1}: leader's last round {last}, successor resumed from "
                f"{resumed}, next round {first.group(1)} after {failovers[-1]:.2f} s",
                flush=True,
            )
            nodes = [*survivors, start_node()]
            leader = new
    finally:
        for proc in procs:
            proc.stop()
    p50 = statistics.median(failovers)
    print(
        f"\nleader failover, {args.nodes} processes, heartbeat {args.heartbeat} s, "
        f"{args.kills} SIGKILLs"
    )
    print("| measure | mycelium-p2p | Flower alone |")
    print("|---|---|---|")
    print(f"| kill -> next completed round, p50 | {p50:.2f} s | no failover (run ends) |")
    print(f"| kill -> next completed round, max | {max(failovers):.2f} s | - |")
    print(f"| rounds lost | {lost} | all after the kill |")
    if args.json:
        print(
            json.dumps(
                {
                    "kills": args.kills,
                    "failover_s_p50": round(p50, 3),
                    "failover_s_max": round(max(failovers), 3),
                    "rounds_lost": lost,
                }
            )
        )


if __name__ == "__main__":
    main()
