#!/usr/bin/env python3
"""How the simulated DHT grows with N: a plot of ``scripts/sim_dht.py --json`` results.

Reads every ``*.json`` in ``--results`` (one ``sim_dht.py --json`` object each; runs with a
hostile mix are left out) and draws, for the LAN and the WAN latency model against the number
of peers: build CPU a peer, memory a peer, read latency p50/p95 (simulated), and hops (to the
record, the deepest peer asked, and Kademlia's bound).

    python scripts/sim_dht.py --peers 3000 --latency lan --duration 120 --seed 1 --json \\
        > scripts/results/sim/lan-3000.json
    python scripts/plot_sim.py                  # -> docs/img/sim_scaling.png

Needs ``matplotlib`` (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("lan", "wan")
STYLE = {"lan": ("tab:blue", "o"), "wan": ("tab:orange", "s")}


def load(results: Path) -> dict[str, list[dict[str, Any]]]:
    """Model -> its honest runs, by peers (a later file for the same size and model wins)."""
    runs: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in MODELS}
    for path in sorted(results.glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("hostile") or run.get("sybils") or run.get("latency") not in MODELS:
            continue
        runs[run["latency"]][int(run["peers"])] = run
    return {m: [by_n[n] for n in sorted(by_n)] for m, by_n in runs.items()}


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The plotted figures as text, one line a run."""
    lines = ["model   peers  build ms/peer  KB/peer  p50 ms  p95 ms  hops p95  deepest p95"]
    for model, rows in runs.items():
        for r in rows:
            lines.append(
                f"{model:<6} {r['peers']:>6} {1000 * r['build_cpu_s'] / r['peers']:>14.1f}"
                f" {r['rss_per_peer_kb']:>8.0f} {r['get_p50_ms']:>7.1f} {r['get_p95_ms']:>7.0f}"
                f" {r['hops_to_record_p95']:>9} {r['depth_p95']:>12}"
            )
    return "\n".join(lines)


def plot(runs: dict[str, list[dict[str, Any]]], out: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    build, memory, latency, hops = axes
    for model, rows in runs.items():
        if not rows:
            continue
        colour, marker = STYLE[model]
        n = [r["peers"] for r in rows]
        kw: dict[str, Any] = {"color": colour, "marker": marker}
        build.plot(n, [1000 * r["build_cpu_s"] / r["peers"] for r in rows], label=model, **kw)
        memory.plot(n, [r["rss_per_peer_kb"] for r in rows], label=model, **kw)
        latency.plot(n, [r["get_p50_ms"] for r in rows], label=f"{model} p50", **kw)
        latency.plot(n, [r["get_p95_ms"] for r in rows], label=f"{model} p95", ls="--", **kw)
        hops.plot(n, [r["hops_to_record_p95"] for r in rows], label=f"{model} to record", **kw)
        hops.plot(n, [r["depth_p95"] for r in rows], label=f"{model} deepest", ls="--", **kw)
    everything = [r for rows in runs.values() for r in rows]
    sizes = sorted({r["peers"] for r in everything})
    bounds = [_bound(everything, n) for n in sizes]
    hops.plot(sizes, bounds, color="grey", ls=":", label="bound ⌈log₂ N⌉ + 1")
    titles = (
        (build, "build CPU a peer (ms)"),
        (memory, "memory a peer (KB)"),
        (latency, "read latency, simulated (ms)"),
        (hops, "hops, p95"),
    )
    for ax, title in titles:
        ax.set_xscale("log")
        ax.set_xlabel("peers")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    latency.set_yscale("log")
    fig.suptitle("scripts/sim_dht.py: 30% churn, default DhtConfig, seed 1", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def _bound(runs: list[dict[str, Any]], peers: int) -> int:
    return next(r["hop_bound"] for r in runs if r["peers"] == peers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "scripts/results/sim")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/sim_scaling.png")
    args = parser.parse_args(argv)
    runs = load(args.results)
    if not any(runs.values()):
        print(f"no sim_dht.py --json results in {args.results}", file=sys.stderr)
        return 2
    print(table(runs))
    plot(runs, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
