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
import statistics
import sys
import time
from typing import Any

import aiohttp

from mycelium_p2p.testing.aio import wait_for
from mycelium_p2p.testing.loopback import learning_network
from mycelium_p2p.web import WebView


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


def bootstrap_interval(ratios: list[float], rounds: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of the mean of ``ratios`` (seeded: the same figures again)."""
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    configs = [{"create": "bench", "round_pause": 0.0, "migrate": False, "split": False}]
    configs += [{"group": "bench", "migrate": False, "split": False}] * (args.nodes - 1)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    turns: dict[str, list[float]] = {"off": [], "on": []}  # each turn's mean round
    cpu: dict[str, list[float]] = {"off": [], "on": []}  # each turn's CPU seconds a round
    client = _listen if args.clients == "events" else _poll
    requests = 0
    async with learning_network(configs) as (_, leader, *_members):
        await wait_for(lambda: len(leader.group.roster) == args.nodes, 60, "the whole group")
        await wait_for(lambda: leader.group.model.round >= 5, 60, "a few rounds")
        for phase in range(2 * args.phases):
            arm = "off" if phase % 2 == 0 else "on"
            first = len(leader.rounds)
            cpu_start = time.process_time()
            view, stop, pollers = None, asyncio.Event(), []
            if arm == "on":
                view = WebView(leader.dht, leader)
                host, port = await view.start()
                base = f"http://{host}:{port}"
                pollers = [asyncio.ensure_future(client(base, stop)) for _ in range(args.browsers)]
            await asyncio.sleep(args.phase)
            stop.set()
            requests += sum(await asyncio.gather(*pollers))
            if view is not None:
                await view.close()
            took = [r.seconds for r in leader.rounds[first:]]
            seconds[arm] += took
            turns[arm].append(statistics.fmean(took) if took else float("nan"))
            cpu[arm].append((time.process_time() - cpu_start) / max(len(took), 1))
    mean = {arm: statistics.fmean(s) for arm, s in seconds.items()}
    paired = [on / off for off, on in zip(turns["off"], turns["on"], strict=True)]
    cpu_paired = [on / off for off, on in zip(cpu["off"], cpu["on"], strict=True)]
    return {
        "nodes": args.nodes,
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
    args = parser.parse_args()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
