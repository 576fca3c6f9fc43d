#!/usr/bin/env python3
"""Memory per node: a node with a numpy-only ClientApp next to one with the default torch task.

A seed peer, --numpy `mycelium-p2p join` processes running ``tests.fl.numpy_app`` (task
``numpy-rss``) and --torch processes running the default digits MLP, all on loopback. RSS and
USS (memory only that process holds) are sampled every --every seconds until a node of each
kind has reported round --rounds, then for --steady more seconds. Printed per kind: peak RSS
and steady (mean of the last window) RSS and USS, per process. If ``flower-supernode`` sits
next to this Python, one idle SuperNode (against ``flower-superlink --insecure``, loopback) is
measured too, with its child processes; if it does not start, the reason is printed instead.
Needs the ``bench`` extra (psutil).

    python scripts/bench_rss.py [--numpy 4] [--torch 4] [--rounds 3] [--steady 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mycelium_p2p.testing.procs import CLI, Proc, start_seed

ROUND = re.compile(r"round (\d+) \(term")
MB = 1024 * 1024


@dataclass
class Watched:
    """A measured process (with its children), and what it printed."""

    kind: str
    proc: Proc
    rss: list[float] = field(default_factory=list)  # MB, every sample
    uss: list[float] = field(default_factory=list)
    rounds: int = 0

    def sample(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
            tree = [root, *root.children(recursive=True)]
            infos = [p.memory_full_info() for p in tree]
        except psutil.Error:
            return  # exited between two samples: its earlier samples stand
        self.rss.append(sum(i.rss for i in infos) / MB)
        self.uss.append(sum(i.uss for i in infos) / MB)


def pump(watched: list[Watched], seconds: float) -> None:
    """Read whatever the processes print for ``seconds``; note the highest round each reports."""
    sel = selectors.DefaultSelector()
    for w in watched:
        if w.proc.popen.stdout is not None and not w.proc.popen.stdout.closed:
            sel.register(w.proc.popen.stdout, selectors.EVENT_READ, w)
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0 and sel.get_map():
            for key, _ in sel.select(timeout=left):
                w = key.data
                line = w.proc.popen.stdout.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    continue
                w.proc.lines.append(line.rstrip("\n"))
                if m := ROUND.search(line):
                    w.rounds = max(w.rounds, int(m.group(1)))
    finally:
        sel.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_supernode(watched: list[Watched], procs: list[Proc], tmp: Path) -> str | None:
    """An idle SuperNode against a local SuperLink; the reason it could not run, or None."""
    bindir = Path(sys.executable).parent
    if not (bindir / "flower-supernode").exists():
        return f"no flower-supernode in {bindir}"
    link_port, node_port = free_port(), free_port()
    link_args = ["--insecure", "--host", "127.0.0.1", "--port", str(link_port)]
    link = Proc([str(bindir / "flower-superlink"), *link_args, "--database", str(tmp / "sl.db")])
    procs.append(link)
    node_args = ["--insecure", "--superlink", f"127.0.0.1:{link_port}", "--host", "127.0.0.1"]
    node = Proc([str(bindir / "flower-supernode"), *node_args, "--port", str(node_port)])
    procs.append(node)
    time.sleep(5)
    for proc, name in ((link, "flower-superlink"), (node, "flower-supernode")):
        if proc.popen.poll() is not None:
            proc.stop()
            return f"{name} exited with {proc.popen.returncode}: " + proc.output()[-300:]
    watched.append(Watched("supernode", node))
    return None


def summary(watched: list[Watched], window: int) -> dict[str, dict[str, float]]:
    """Per kind: the largest peak and mean steady RSS/USS of one process, and how many."""
    out: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(w.kind for w in watched):
        group = [w for w in watched if w.kind == kind and w.rss]
        if not group:
            continue
        out[kind] = {
            "processes": len(group),
            "peak_rss_mb": round(max(max(w.rss) for w in group), 1),
            "steady_rss_mb": round(
                statistics.mean(statistics.mean(w.rss[-window:]) for w in group), 1
            ),
            "steady_uss_mb": round(
                statistics.mean(statistics.mean(w.uss[-window:]) for w in group), 1
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numpy", type=int, default=4, help="nodes with the numpy ClientApp")
    parser.add_argument("--torch", type=int, default=4, help="nodes with the default digits task")
    parser.add_argument("--rounds", type=int, default=3, help="rounds each kind commits first")
    parser.add_argument("--steady", type=float, default=15.0, help="seconds of steady sampling")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after (s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON last")
    args = parser.parse_args()

    fast = ["--heartbeat", "1", "--round-pause", "0.5", "--threads", "1", "--no-migrate"]
    procs: list[Proc] = []
    watched: list[Watched] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            port = start_seed(procs, tmp / "seed")
            watched.append(Watched("bootstrap", procs[0]))
            join = [*CLI, "join", "-b", f"127.0.0.1:{port}", "--host", "127.0.0.1", *fast]
            numpy_app = ["--task", "numpy-rss", "--client-app", "tests.fl.numpy_app:app"]
            for i in range(args.numpy + args.torch):
                kind, extra = ("numpy", numpy_app) if i < args.numpy else ("torch", [])
                procs.append(Proc([*join, "--data-dir", str(tmp / f"n{i}"), *extra]))
                watched.append(Watched(kind, procs[-1]))
            skipped = start_supernode(watched, procs, tmp)
            if skipped:
                print(f"SuperNode skipped: {skipped}")
            start = time.monotonic()
            steady_from: float | None = None
            kinds = [k for k, n in (("numpy", args.numpy), ("torch", args.torch)) if n > 0]
            while time.monotonic() - start < args.timeout:
                pump(watched, args.every)
                for w in watched:
                    w.sample()
                done = all(
                    max((w.rounds for w in watched if w.kind == k), default=0) >= args.rounds
                    for k in kinds
                )
                if done and steady_from is None:
                    steady_from = time.monotonic()
                    print(f"{args.rounds} rounds of each kind after {steady_from - start:.0f} s")
                if steady_from is not None and time.monotonic() - steady_from >= args.steady:
                    break
            else:
                raise SystemExit(f"not {args.rounds} rounds of each kind in {args.timeout} s")
        finally:
            for proc in reversed(procs):
                proc.stop()
    window = max(1, round(args.steady / args.every))
    result = summary(watched, window)
    print(f"{'kind':<10} {'procs':>5} {'peak RSS MB':>12} {'steady RSS MB':>14} {'USS MB':>8}")
    for kind, row in result.items():
        print(
            f"{kind:<10} {row['processes']:>5} {row['peak_rss_mb']:>12} "
            f"{row['steady_rss_mb']:>14} {row['steady_uss_mb']:>8}"
        )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
