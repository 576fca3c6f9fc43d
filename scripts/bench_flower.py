#!/usr/bin/env python3
"""The same Flower App in Flower's Deployment Engine and in mycelium-p2p, in one run.

For each N in --nodes, on loopback and insecure:

- Deployment Engine: `flower-superlink --insecure` (one free port: its Control, Fleet and
  ServerAppIo HTTP APIs), N x `flower-supernode --insecure --node-config "partition-id=i
  num-partitions=N"` (each its own Runtime API port), then `flwr run <copy of the app> local
  --stream` with a SuperLink connection `local` in a throwaway FLWR_HOME. Seconds per round:
  the strategy's "Strategy execution finished in X s" from the ServerApp's streamed log, / R
  (and, as a check, the log lines' arrival from "[ROUND 1/R]" to that line, / R).
- mycelium-p2p: `mycelium-p2p bootstrap` + N x `mycelium-p2p join --app DIR --node-config ...
  --round-pause P --no-migrate --no-merge --events F`, started one after the other (each once
  it is in a group, so they form one group). Seconds per round: over --window rounds from the
  first round committed with all N members, read from the events files.

Both run the app with `num-server-rounds=R`. Accuracy is the ClientApps' evaluation averaged
by examples (Flower's `aggregate_evaluate` eval_acc; the round event's accuracy in mycelium,
the same average): for Flower after round R, for mycelium after R rounds with all N members
("acc") and at group round R, whoever the members were ("acc@R"); for Flower also the
ServerApp's evaluate_fn ("central"). Peak RSS: each process's high-water mark (VmHWM), sampled
every 0.2 s over the whole process trees, per kind of process; "node MB" is one node's
processes at their peaks, "total MB" the largest sum of all live processes' RSS in one sample.
Extra mycelium arms at the first N use --pauses (default: the default --round-pause).

    python scripts/bench_flower.py [--app tests/apps/numpy_app] [--nodes 4,8] [--rounds 3]
        [--timeout 900] [--no-flower] [--pauses 0.5] [--json]

Needs the `bench` extra (psutil). Linux only (reads /proc/PID/status). Every process started
is stopped by PID at the end, also on error or Ctrl-C; temp dirs are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mycelium_p2p.events import ROUND
from mycelium_p2p.node.config import NodeConfig
from scripts.proc_fleet import ANSI, Fleet, free_port, wait_log

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "mycelium_p2p"]
EVAL_ACC = re.compile(r"'eval_acc': ([0-9.eE+-]+)")
FINISHED = re.compile(r"Strategy execution finished in ([0-9.]+)s")
GLOBAL_ACC = re.compile(r"MetricRecord: \{'accuracy': ([0-9.eE+-]+)")


def flower_env(home: Path) -> dict[str, str]:
    """A throwaway FLWR_HOME/HOME; no telemetry, no update check (loopback only)."""
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # they spawn flower-superexec
    }


def run_flower(app: Path, n: int, rounds: int, timeout: float, tmp: Path) -> dict[str, Any]:
    """One Deployment Engine run of ``app`` with ``n`` SuperNodes."""
    deadline = time.monotonic() + timeout
    home = tmp / "flwr-home"
    home.mkdir()
    # `flwr run` migrates [tool.flwr.federations] out of the app's pyproject: run a copy
    app_copy = tmp / app.name
    shutil.copytree(app, app_copy, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    fleet = Fleet(tmp, flower_env(home))
    try:
        link = fleet.start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
        )
        wait_log(link, r"Uvicorn running on", deadline, fleet)
        nodes = [
            fleet.start(
                f"supernode{i}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"partition-id={i} num-partitions={n}",
                ],
            )
            for i in range(n)
        ]
        for log in nodes:  # all registered before the run samples its nodes
            wait_log(log, r"SuperNode ID: \d+", deadline, fleet)
        started = time.monotonic()
        lines = stream_run(fleet, app_copy, rounds, deadline)
        wall = time.monotonic() - started
        return {
            "engine": "flower",
            "n": n,
            **flower_figures(lines, rounds, wall),
            "rss": fleet.rss_by_kind(),
            "total_mb": round(fleet.peak_total_kb / 1024, 1),
        }
    finally:
        fleet.stop()


def stream_run(fleet: Fleet, app: Path, rounds: int, deadline: float) -> list[tuple[float, str]]:
    """`flwr run APP local --stream`: its log lines, each with its arrival time."""
    run = subprocess.Popen(
        [
            str(BIN / "flwr"),
            "run",
            str(app),
            "local",
            "--stream",
            "--run-config",
            f"num-server-rounds={rounds}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=fleet.env,
        cwd=fleet.tmp,
    )
    fleet.roots.append(run)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert run.stdout is not None
        for raw in run.stdout:
            lines.append((time.monotonic(), ANSI.sub("", raw.decode(errors="replace")).rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # stop at the strategy's summary (or when flwr run exits)
    while time.monotonic() < deadline:
        if (
            any("ServerApp-side Evaluate Metrics" in text for _, text in lines)
            or run.poll() is not None
        ):
            time.sleep(1.0)  # the summary's last lines
            break
        time.sleep(0.2)
    else:
        tail = "\n".join(text for _, text in lines[-30:])
        raise TimeoutError(f"flwr run did not finish {rounds} rounds in time:\n{tail}")
    return lines


def flower_figures(lines: list[tuple[float, str]], rounds: int, wall: float) -> dict[str, Any]:
    """Seconds per round from the strategy's own "finished in X s" (its clock: X includes the
    round-0 evaluate_fn, milliseconds here) and, as a check, from the lines' arrival times."""
    first = next((t for t, text in lines if "[ROUND 1/" in text), None)
    done = next(((t, m) for t, text in lines if (m := FINISHED.search(text))), None)
    if first is None or done is None:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"no rounds in the ServerApp's log:\n{tail}")
    eval_acc = [float(m.group(1)) for _, text in lines if (m := EVAL_ACC.search(text))]
    central = [float(m.group(1)) for _, text in lines if (m := GLOBAL_ACC.search(text))]
    return {
        "rounds": rounds,
        "s_per_round": float(done[1].group(1)) / rounds,
        "s_per_round_streamed": (done[0] - first) / rounds,
        "wall_s": wall,
        "accuracy": eval_acc[-1] if eval_acc else None,
        "central_accuracy": central[-1] if central else None,
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            out.append(json.loads(line))
    return out


def run_mycelium(
    app: Path, n: int, rounds: int, window: int, pause: float, timeout: float, tmp: Path
) -> dict[str, Any]:
    """One mycelium-p2p run of ``app``: a seed and ``n`` join --app nodes, one group, timed
    over ``window`` rounds with all members; accuracy after ``rounds`` of them."""
    deadline = time.monotonic() + timeout
    fleet = Fleet(tmp, {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    try:
        seed = fleet.start(
            "seed",
            [
                *CLI,
                "bootstrap",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(tmp / "seed"),
            ],
        )
        port = wait_log(seed, r"listening on udp 127\.0\.0\.1:(\d+)", deadline, fleet).group(1)
        events = [tmp / f"n{i}.jsonl" for i in range(n)]
        for i in range(n):
            log = fleet.start(
                f"n{i}",
                [
                    *CLI,
                    "join",
                    "-b",
                    f"127.0.0.1:{port}",
                    "--host",
                    "127.0.0.1",
                    "--data-dir",
                    str(tmp / f"n{i}"),
                    "--app",
                    str(app),
                    "--run-config",
                    f"num-server-rounds={rounds}",
                    "--node-config",
                    f"partition-id={i} num-partitions={n}",
                    "--round-pause",
                    str(pause),
                    "--no-migrate",
                    "--no-merge",
                    "--events",
                    str(events[i]),
                ],
            )
            wait_log(log, r"(joined|founded) group", deadline, fleet)
        seen, first, cpu, cpu_wall = wait_rounds(events, n, window, deadline, fleet)
        last = first + window
        return {
            "engine": "mycelium",
            "n": n,
            "round_pause": pause,
            "rounds": window,
            "group_rounds": [first, last],
            "s_per_round": (seen[last][0] - seen[first][0]) / window,
            "accuracy": seen[first + min(rounds, window)][1],
            "accuracy_at_round": seen.get(rounds, (0.0, None))[1],
            "round_s": [
                round(seen[r + 1][0] - seen[r][0], 3)
                for r in range(first, last)
                if r in seen and r + 1 in seen
            ],
            "accuracy_window_end": seen[last][1],
            "central_accuracy": None,
            "cpu_s_per_round_per_node": cpu / window / n,
            "cpu_cores_per_node": cpu / cpu_wall / n,
            "rss": fleet.rss_by_kind(),
            "total_mb": round(fleet.peak_total_kb / 1024, 1),
        }
    finally:
        fleet.stop()


def wait_rounds(
    events: list[Path], n: int, window: int, deadline: float, fleet: Fleet
) -> tuple[dict[int, tuple[float, float]], int, float, float]:
    """Wait for ``window`` rounds after the first round committed with all ``n`` members.

    Returns (time, accuracy) of each such round by group round (from any node's events: the
    leader reports rounds), the first of them, and the CPU seconds the nodes used and the wall
    seconds between first seeing one and seeing the last."""
    cpu0 = wall0 = 0.0
    while time.monotonic() < deadline:
        seen: dict[int, tuple[float, float]] = {}
        full: set[int] = set()
        for path in events:
            for ev in read_events(path):
                if ev.get("kind") == ROUND:
                    seen.setdefault(ev["round"], (ev["t"], ev["accuracy"]))
                    if ev.get("members") == n:
                        full.add(ev["round"])
        if full and not wall0:
            cpu0, wall0 = cpu_seconds(fleet), time.monotonic()
        if full and (first := min(full)) + window in seen:
            return seen, first, cpu_seconds(fleet) - cpu0, time.monotonic() - wall0
        if any(r.poll() is not None for r in fleet.roots):
            raise RuntimeError("a mycelium-p2p process exited early")
        time.sleep(0.2)
    raise TimeoutError(f"no {window} rounds with {n} members in time")


def cpu_seconds(fleet: Fleet) -> float:
    """CPU seconds (user + system) the join processes have used so far."""
    total = 0.0
    for root in fleet.roots:
        try:
            proc = psutil.Process(root.pid)
            if "join" in proc.cmdline():
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def arm(results: list[dict[str, Any]], name: str, fn: Any, *args: Any) -> None:
    """Run one arm in a temp dir of its own; a failure is reported, not fatal."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-flower-{name}-"))
    try:
        results.append(fn(*args, tmp))
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        print(f"{name}: failed: {exc}", file=sys.stderr)
        results.append({"engine": name.split("-")[0], "n": args[1], "error": str(exc)[:2000]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def per_node_mb(row: dict[str, Any]) -> float:
    """Peak RSS of one node: a SuperNode with its SuperExec and its largest ClientApp process,
    or a mycelium-p2p join process."""
    rss = row["rss"]
    if row["engine"] == "mycelium":
        return rss.get("mycelium join", {}).get("max_mb", 0.0)
    return sum(
        rss.get(k, {}).get("max_mb", 0.0) for k in ("flower-supernode", "flwr-clientapp")
    ) + (rss.get("flower-superexec", {}).get("max_mb", 0.0))


def table(results: list[dict[str, Any]]) -> str:
    head = f"{'engine':<9} {'N':>2} {'pause':>5} {'s/round':>8} {'acc':>6} {'acc@R':>6} "
    head += f"{'central':>7} "
    head += f"{'node MB':>8} {'total MB':>9} {'ratio':>7}"
    rows = [head]
    for r in results:
        if "error" in r:
            rows.append(f"{r['engine']:<9} {r['n']:>2}  error: {r['error'].splitlines()[0]}")
            continue
        ratio = r.get("ratio")
        central = r.get("central_accuracy")
        rows.append(
            f"{r['engine']:<9} {r['n']:>2} {r.get('round_pause', '-'):>5} "
            f"{r['s_per_round']:>8.3f} {r['accuracy'] or 0:>6.3f} "
            f"{r.get('accuracy_at_round', r['accuracy']) or 0:>6.3f} "
            f"{'-' if central is None else f'{central:.3f}':>7} {r['node_mb']:>8.0f} "
            f"{r['total_mb']:>9.0f} {'-' if ratio is None else f'{ratio:.0f}x':>7}"
        )
    return "\n".join(rows)


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", type=Path, default=REPO / "tests" / "apps" / "numpy_app")
    parser.add_argument("--nodes", default="4,8", help="comma-separated N")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--window", type=int, default=20, help="mycelium rounds timed (at least --rounds)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per arm")
    parser.add_argument("--no-flower", action="store_true", help="skip the Deployment Engine")
    parser.add_argument(
        "--pauses",
        default=str(NodeConfig.round_pause),
        help="extra mycelium arms at the first N with these --round-pause values ('' for none)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        sizes = [int(x) for x in args.nodes.split(",")]
        pauses = [float(x) for x in args.pauses.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--nodes {args.nodes!r} --pauses {args.pauses!r}: comma-separated numbers")
    if not all(2 <= n <= 32 for n in sizes) or not 1 <= args.rounds <= 100:
        parser.error("need 2 <= N <= 32 and 1 <= --rounds <= 100")
    if not all(0 <= p <= 10 for p in pauses):
        parser.error("need 0 <= each of --pauses <= 10")
    if not 10 <= args.timeout <= 7200:
        parser.error("need 10 <= --timeout <= 7200")
    window = max(args.window, args.rounds)
    app = args.app.resolve()
    if not (app / "pyproject.toml").is_file():
        parser.error(f"--app {app}: no pyproject.toml")
    # SIGTERM unwinds like Ctrl-C, through every arm's finally (which stops its processes)
    signal.signal(signal.SIGTERM, interrupt)

    results: list[dict[str, Any]] = []
    for n in sizes:
        if not args.no_flower:
            arm(results, f"flower-{n}", run_flower, app, n, args.rounds, args.timeout)
        arm(results, f"mycelium-{n}", run_mycelium, app, n, args.rounds, window, 0.0, args.timeout)
        for pause in pauses if n == sizes[0] else []:
            arm(
                results,
                f"mycelium-{n}-pause{pause}",
                run_mycelium,
                app,
                n,
                args.rounds,
                window,
                pause,
                args.timeout,
            )
    for r in results:
        if "error" in r:
            continue
        r["node_mb"] = per_node_mb(r)
        r["sum_of_peaks_mb"] = round(sum(k["sum_mb"] for k in r["rss"].values()), 1)
        flower = next(
            (
                f
                for f in results
                if f["engine"] == "flower" and f["n"] == r["n"] and "error" not in f
            ),
            None,
        )
        if r["engine"] == "mycelium" and flower is not None:
            r["ratio"] = flower["s_per_round"] / r["s_per_round"]
    print(table(results))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
