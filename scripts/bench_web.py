#!/usr/bin/env python3
"""What the web view costs a group's rounds: the same group trains with and without a view
attached and polled, in turns, and the mean round time of each is compared.

A group of --nodes in-process nodes on loopback (digits, round pause 0) trains throughout.
Every --phase seconds the arm changes: "off" (no view), then "on" (a ``WebView`` on the
leader, and a client that follows the page's state, as a browser does, and fetches
``/metrics`` every 5 s, as Prometheus would, with --browsers such clients at once), and so on,
--phases times each, so that drift over the run falls on both arms alike. A client listens to
``/api/events`` (``--clients events``, what the page does) or fetches ``/api/state`` every 2 s
(``--clients poll``, the page's fallback). Prints the mean round seconds of each arm, their
ratio, and the ratio turn by turn (each "on" turn against the "off" turn before it) with a 95%
bootstrap interval of its mean: the goal is at most 1.02. The same for the process's CPU
seconds a round (nodes, view and clients alike, all in this process): other load on the
machine stretches wall time, much less what the process itself spends, so on a shared machine
this is the sharper of the two.

    python scripts/bench_web.py [--nodes 4] [--phase 20] [--phases 4] [--browsers 3]
                                [--clients events|poll] [--json]

Needs the package only (no extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp


async def _poll(base: str, stop: asyncio.Event) -> int:
    """Fetch the state every 2 s and the metrics every 5 s until ``stop``; requests made."""
    made = 0
    async with aiohttp.ClientSession() as http:
        tick = 0
        while not stop.is_set():
            async with http.get(base + "/api/state") as reply:
                await reply.read()
            made += 1
            if tick % 5 == 0:
                async with http.get(base + "/metrics") as reply:
                    await reply.read()
                made += 1
            tick += 2
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    return made


async def _listen(base: str, stop: asyncio.Event) -> int:
    """Read ``/api/events`` and fetch the metrics every 5 s until ``stop``; messages read and
    requests made."""
    made = 0
    async with aiohttp.ClientSession() as http, http.get(base + "/api/events") as stream:

        async def metrics() -> None:
            nonlocal made
            while not stop.is_set():
                async with http.get(base + "/metrics") as reply:
                    await reply.read()
                made += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5.0)

        scraping = asyncio.ensure_future(metrics())
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    if (await asyncio.wait_for(stream.content.readline(), 1.0)).startswith(b"data"):
                        made += 1
        finally:
            await scraping
    return made


@contextlib.asynccontextmanager
async def _view_and_clients(
    leader: Any, on: bool, args: argparse.Namespace
) -> AsyncIterator[list[int]]:
    """With ``on``: a ``WebView`` on ``leader`` and ``--browsers`` clients in a process of
    their own (a browser's work is not the node's); yields [messages served], filled at exit."""
    from mycelium_p2p.web import WebView

    served = [0]
    if not on:
        yield served
        return
    view = WebView(leader.dht, leader)
    host, port = await view.start()
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-clients",
        f"http://{host}:{port}",
        "--clients",
        args.clients,
        "--browsers",
        str(args.browsers),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield served
    finally:
        clients.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(clients.communicate(), 30)
        served[0] = int(out.decode().strip() or 0)
        await view.close()


async def _serve_clients(base: str, kind: str, browsers: int) -> int:
    """``browsers`` clients of ``base`` until SIGTERM; the messages they were served."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    client = _listen if kind == "events" else _poll
    return sum(await asyncio.gather(*(client(base, stop) for _ in range(browsers))))


def bootstrap_interval(ratios: list[float], rounds: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of the mean of ``ratios`` (seeded: the same figures again)."""
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from mycelium_p2p.testing.aio import wait_for  # here: the clients' process needs none
    from mycelium_p2p.testing.loopback import learning_network

    configs = [{"create": "bench", "round_pause": 0.0, "migrate": False, "split": False}]
    configs += [{"group": "bench", "migrate": False, "split": False}] * (args.nodes - 1)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    turns: dict[str, list[float]] = {"off": [], "on": []}  # each turn's mean round
    cpu: dict[str, list[float]] = {"off": [], "on": []}  # each turn's CPU seconds a round
    requests = 0
    async with learning_network(configs) as (_, leader, *_members):
        await wait_for(lambda: len(leader.group.roster) == args.nodes, 60, "the whole group")
        await wait_for(lambda: leader.group.model.round >= 5, 60, "a few rounds")
        for phase in range(2 * args.phases):
            arm = "off" if phase % 2 == 0 else "on"
            first = len(leader.rounds)
            cpu_start = time.process_time()
            async with _view_and_clients(leader, arm == "on", args) as served:
                await asyncio.sleep(args.phase)
            requests += served[0]
            took = [r.seconds for r in leader.rounds[first:]]
            seconds[arm] += took
            turns[arm].append(statistics.fmean(took) if took else float("nan"))
            cpu[arm].append((time.process_time() - cpu_start) / max(len(took), 1))
        # the view's own CPU, with the group's training paused: what the view and its
        # clients' requests cost this process a second, against the same idle without them
        leader.leading.training.clear()
        await asyncio.sleep(2.0)  # the round under way ends
        idle: dict[str, list[float]] = {"off": [], "on": []}
        for phase in range(4):
            arm = "off" if phase % 2 == 0 else "on"
            cpu_start, wall_start = time.process_time(), time.monotonic()
            async with _view_and_clients(leader, arm == "on", args):
                await asyncio.sleep(args.phase)
            idle[arm].append((time.process_time() - cpu_start) / (time.monotonic() - wall_start))
        leader.leading.training.set()
    mean = {arm: statistics.fmean(s) for arm, s in seconds.items()}
    paired = [on / off for off, on in zip(turns["off"], turns["on"], strict=True)]
    cpu_paired = [on / off for off, on in zip(cpu["off"], cpu["on"], strict=True)]
    view_cpu = statistics.fmean(idle["on"]) - statistics.fmean(idle["off"])
    busy = statistics.fmean(cpu["off"]) / statistics.fmean(turns["off"])  # CPU s a second
    return {
        "nodes": args.nodes,
        "idle_cpu_per_s": {arm: statistics.fmean(c) for arm, c in idle.items()},
        "view_cpu_per_s": view_cpu,
        "view_share_of_training_cpu": view_cpu / busy,
        "rounds": {arm: len(s) for arm, s in seconds.items()},
        "mean_round_s": mean,
        "median_round_s": {arm: statistics.median(s) for arm, s in seconds.items()},
        "ratio_on_off": mean["on"] / mean["off"],
        "ratio_by_turn": paired,
        "ratio_mean_95": [statistics.fmean(paired), *bootstrap_interval(paired)],
        "cpu_a_round_s": {arm: statistics.fmean(c) for arm, c in cpu.items()},
        "cpu_ratio_by_turn": cpu_paired,
        "cpu_ratio_mean_95": [statistics.fmean(cpu_paired), *bootstrap_interval(cpu_paired)],
        "requests": requests,
        "browsers": args.browsers,
        "clients": args.clients,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--phase", type=float, default=20.0, help="seconds an arm runs at a time")
    parser.add_argument("--phases", type=int, default=4, help="turns of each arm")
    parser.add_argument("--browsers", type=int, default=3, help="clients at once")
    parser.add_argument("--clients", choices=("events", "poll"), default="events")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-clients", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_clients:  # the clients' own process (see _view_and_clients)
        print(asyncio.run(_serve_clients(args.serve_clients, args.clients, args.browsers)))
        return 0
    if args.nodes < 2 or args.phases < 1 or args.phase <= 0 or args.browsers < 1:
        parser.error("--nodes >= 2, --phases >= 1, --phase > 0, --browsers >= 1")
    result = asyncio.run(_run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for arm in ("off", "on"):
            mean, median = result["mean_round_s"][arm], result["median_round_s"][arm]
            print(
                f"{arm:>3}: {result['rounds'][arm]} rounds,"
                f" mean {mean:.3f} s, median {median:.3f} s"
            )
        print(f"ratio on/off {result['ratio_on_off']:.3f} ({result['requests']} messages served)")
        mean, low, high = result["ratio_mean_95"]
        by_turn = " ".join(f"{r:.3f}" for r in result["ratio_by_turn"])
        print(f"turn by turn: {by_turn}; mean {mean:.3f}, 95% interval {low:.3f}..{high:.3f}")
        off, on = result["cpu_a_round_s"]["off"], result["cpu_a_round_s"]["on"]
        mean, low, high = result["cpu_ratio_mean_95"]
        by_turn = " ".join(f"{r:.3f}" for r in result["cpu_ratio_by_turn"])
        print(f"CPU a round: off {off:.4f} s, on {on:.4f} s; turn by turn: {by_turn}")
        print(f"CPU ratio on/off: mean {mean:.3f}, 95% interval {low:.3f}..{high:.3f}")
        off, on = result["idle_cpu_per_s"]["off"], result["idle_cpu_per_s"]["on"]
        print(
            f"training paused: CPU {off * 1000:.1f} ms/s without the view, {on * 1000:.1f} with:"
            f" the view costs {result['view_cpu_per_s'] * 1000:.1f} ms of CPU a second,"
            f" {result['view_share_of_training_cpu']:.2%} of what training uses"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
