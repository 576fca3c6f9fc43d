#!/usr/bin/env python3
"""Soak: the chaos run (20 node processes) plus hostile traffic, for a long while, on loopback.

    python scripts/soak.py [--minutes 30] [--nodes 20] [--seed 0] [--json]

The chaos run (mycelium_p2p/testing/chaos/: SIGKILL and SIGSTOP of leaders, members and
seeds, restarts, every invariant checked all along) runs with hostile traffic from this same
process (mycelium_p2p/testing/traffic.py: a flood of validly signed adverts from fresh keys,
garbage datagrams, garbage and truncated frames, half-open connections, connection churn).
Every --probe seconds:

- listing: every honest group (one with a live leader that completed a round in the last 10 s,
  and whose first round is older than the 30 s a new group may take) must appear in the latest
  listing of each `groups --watch` observer (taken within the last 5 s), and some observer
  must have listed within those 5 s;
- RSS of every node process (psutil). Growth is measured per process, from its first sample
  once both the run and the process are --warmup old (default 5 minutes, or half the run if
  shorter) to its last sample, for processes watched that way for at least --warmup. The
  chaos kills a node every ~10 s, so few processes live that long: the last --steady nodes
  (default 3) are never killed, stopped or cut off (they still lead, move and take all the
  hostile traffic), so that long-lived processes are always measured.

Figures: probes with an honest group missing (goal 0), rounds lost (goal 0), invariant
violations, RSS growth per node (goal <= 10%), hostile traffic sent. Exits 1 when a goal is
missed. Stops by itself; it stops only the processes it started, by PID.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mycelium_p2p import events
from mycelium_p2p.testing.chaos import ChaosConfig, ChaosRun
from mycelium_p2p.testing.traffic import HostileRates, HostileTraffic

LISTING_FRESH = 5.0  # s: an observer listing older than this is not used by a probe
NEW_GROUP_GRACE = 30.0  # s: a new group may take this long to be listed (the chaos rule)


@dataclass
class SoakFigures:
    probes: int = 0
    probes_with_missing_group: int = 0
    probes_without_listing: int = 0  # no observer had listed anything for LISTING_FRESH s
    missing_examples: list[str] = field(default_factory=list)
    rss_growth_pct: dict[str, float] = field(default_factory=dict)  # node/pid -> growth
    rss_mb_end: dict[str, float] = field(default_factory=dict)
    rss_minutes: dict[str, float] = field(default_factory=dict)  # how long each was watched


class SoakRun(ChaosRun):
    """A chaos run that also aims hostile traffic at the nodes and probes them every few s."""

    def __init__(
        self,
        config: ChaosConfig,
        rates: HostileRates,
        probe_every: float,
        warmup: float,
        steady: int = 0,
    ) -> None:
        super().__init__(config)
        self.steady = {f"n{i:02d}" for i in range(max(0, config.nodes - steady), config.nodes)}
        self.rates = rates
        self.probe_every = probe_every
        self.warmup = warmup
        self.figures = SoakFigures()
        self.ports: dict[str, tuple[int, tuple[str, int]]] = {}  # node -> (udp, tcp addr)
        self.hostile: HostileTraffic | None = None
        self._next_probe = 0.0
        self._chaos_started = 0.0
        # pid -> (node, monotonic time, MB): first sample once settled, and the latest
        self._rss_start: dict[int, tuple[str, float, float]] = {}
        self._rss_last: dict[int, tuple[str, float, float]] = {}

    # -- hooks into the chaos run ----------------------------------------------------------------

    def start(self) -> None:
        super().start()
        self._chaos_started = time.monotonic()
        self.hostile = HostileTraffic(
            self._targets,
            self._bootstrap(),
            rates=self.rates,
            duration=self.config.duration,
            seed=self.config.seed,
        )
        self.hostile.start()

    def _on_event(self, e: dict[str, Any]) -> None:
        super()._on_event(e)
        if e.get("kind") == events.UP and "udp" in e and "tcp" in e:
            host, _, port = str(e["tcp"]).rpartition(":")
            self.ports[e["peer"]] = (int(e["udp"]), (host, int(port)))

    def _follow(self) -> None:
        super()._follow()
        now = time.monotonic()
        if self._chaos_started and now >= self._next_probe:
            self._next_probe = now + self.probe_every
            self._probe(now)

    def run(self, log: Any = print) -> Any:
        try:
            return super().run(log)
        finally:
            if self.hostile is not None:
                self.hostile.stop()

    def _leaders(self, min_members: int = 3) -> list[tuple[str, str]]:
        return [(g, p) for g, p in super()._leaders(min_members) if p not in self.steady]

    def _members(self) -> list[str]:
        return [p for p in super()._members() if p not in self.steady]

    # -- targets and probes ------------------------------------------------------------------------

    def _targets(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        udp = [(self._addr(s), self.seed_ports[s]) for s in self.seeds]
        tcp = []
        for name, (u, t) in list(self.ports.items()):
            if self._alive(name):
                udp.append((self._addr(name), u))
                tcp.append(t)
        return udp, tcp

    def _probe(self, now: float) -> None:
        if self.partitioned or now > self._chaos_started + self.config.duration:
            return
        f = self.figures
        f.probes += 1
        wall = time.time()
        honest = {
            gid
            for gid in self._live_groups()
            if wall - self.invariants.first_round.get(gid, wall) > NEW_GROUP_GRACE
        }
        fresh = {
            o: listed
            for o, (at, listed) in self.observed.listings.items()
            if now - at <= LISTING_FRESH
        }
        stamp = time.strftime("%H:%M:%S")
        if not fresh:
            f.probes_without_listing += 1
            if len(f.missing_examples) < 20:
                f.missing_examples.append(f"{stamp} no observer listed anything lately")
        for observer, listed in fresh.items():
            # a group whose last leader left it alone advertises 0 members before its leader
            # reports leaving: the listing is right, the probe's idea of "live" is behind
            missing = honest - listed - self.observed.dissolving.get(observer, set())
            if missing:
                f.probes_with_missing_group += 1
                if len(f.missing_examples) < 20:
                    f.missing_examples.append(f"{stamp} {observer}: {sorted(missing)}")
                break
        self._sample_rss(now)

    def _sample_rss(self, now: float) -> None:
        after_warmup = now >= self._chaos_started + self.warmup
        for name in self.nodes:
            peer = self.net.peers.get(name)
            if peer is None or not peer.alive:
                continue
            try:
                process = psutil.Process(peer.pid)
                if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped
                    continue
                mb = process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            if mb <= 0:  # a process on its way out reads as 0 (seen: a -100% "growth")
                continue
            settled = now - peer.started_at >= self.warmup  # a restarted node warms up too
            if after_warmup and settled:
                self._rss_start.setdefault(peer.pid, (name, now, mb))
                self._rss_last[peer.pid] = (name, now, mb)

    def finish_figures(self) -> SoakFigures:
        f = self.figures
        for pid, (name, start_at, start) in self._rss_start.items():
            _, last_at, last = self._rss_last[pid]
            if last_at - start_at >= self.warmup:  # watched at least as long as it warmed up
                label = f"{name}/{pid}"
                f.rss_growth_pct[label] = round(100.0 * (last - start) / start, 1)
                f.rss_mb_end[label] = round(last, 1)
                f.rss_minutes[label] = round((last_at - start_at) / 60, 1)
        return f


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of chaos and traffic")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", type=float, default=3.0, help="seconds between probes")
    parser.add_argument("--warmup", type=float, help="minutes before RSS growth is measured")
    parser.add_argument(
        "--steady", type=int, default=3, help="nodes never harmed (their RSS is watched longest)"
    )
    parser.add_argument("--flood", type=float, default=5.0, help="signed adverts per second")
    parser.add_argument("--garbage", type=float, default=50.0, help="garbage datagrams per s")
    parser.add_argument("--frames", type=float, default=5.0, help="garbage TCP frames per s")
    parser.add_argument("--churn", type=float, default=5.0, help="connect-close per second")
    parser.add_argument("--half-open", type=int, default=20, help="half-open connections held")
    parser.add_argument("--workdir", help="keep logs and events here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="last line: the figures as JSON")
    args = parser.parse_args()
    if not (0.5 <= args.minutes <= 24 * 60 and 3 <= args.nodes <= 97):
        parser.error("need 0.5 <= --minutes <= 1440 and 3 <= --nodes <= 97")
    rates = HostileRates(
        flood=min(args.flood, 100.0),
        garbage=min(args.garbage, 1000.0),
        frames=min(args.frames, 100.0),
        churn=min(args.churn, 100.0),
        half_open=min(args.half_open, 200),
    )
    warmup = 60.0 * (args.warmup if args.warmup is not None else min(5.0, args.minutes / 2))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mycelium-soak-"))
    config = ChaosConfig(
        workdir=workdir,
        nodes=args.nodes,
        duration=60.0 * args.minutes,
        seed=args.seed,
        use_netns=False,
    )
    run = SoakRun(config, rates, args.probe, warmup, steady=min(args.steady, args.nodes - 2))
    summary = run.run(log=lambda text: print(text, flush=True))
    f = run.finish_figures()
    hostile = asdict(run.hostile.stats) if run.hostile else {}
    growth = list(f.rss_growth_pct.values())
    out: dict[str, Any] = {
        "minutes": args.minutes,
        "nodes": args.nodes,
        "warmup_minutes": warmup / 60,
        "probes": f.probes,
        "probes_with_missing_group": f.probes_with_missing_group,
        "probes_without_listing": f.probes_without_listing,
        "rounds_completed": summary.rounds_completed,
        "rounds_lost": summary.rounds_lost,
        "invariant_violations": len(summary.violations),
        "kills": summary.kills,
        "restarts": summary.restarts,
        "rss_growth_pct_median": round(statistics.median(growth), 1) if growth else None,
        "rss_growth_pct_max": max(growth) if growth else None,
        "rss_nodes_measured": len(growth),
        "rss_mb_median_end": (
            round(statistics.median(f.rss_mb_end.values()), 1) if f.rss_mb_end else None
        ),
        "rss_growth_pct": f.rss_growth_pct,
        "rss_minutes_watched": f.rss_minutes,
        "hostile": hostile,
    }
    for key, value in out.items():
        if key not in ("hostile", "rss_growth_pct", "rss_minutes_watched"):
            print(f"{key:<28} {value}")
    print(f"{'rss growth % per node':<28} {f.rss_growth_pct}")
    print(f"{'hostile traffic':<28} {hostile}")
    for example in f.missing_examples:
        print(f"MISSING {example}")
    for violation in summary.violations:
        print(f"VIOLATION {violation}")
    print(f"logs and events: {workdir}")
    if args.json:
        print(json.dumps(out))
    failed = (
        f.probes_with_missing_group
        or f.probes_without_listing
        or summary.rounds_lost
        or summary.violations
        or not growth  # nothing measured: the memory goal is not shown to hold
        or max(growth) > 10.0
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
