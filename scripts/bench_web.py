#!/usr/bin/env python3
"""What the web view costs a group's rounds: the same group trains with and without a view
attached and polled, in turns, and the mean round time of each is compared.

A group of --nodes in-process nodes on loopback (digits, round pause 0) trains throughout.
Every --phase seconds the arm changes: "off" (no view), then "on" (a ``WebView`` on the
leader, and a client that fetches ``/api/state`` every 2 s, as the page does, and
``/metrics`` every 5 s, as Prometheus would, with --browsers such clients at once), and so on,
--phases times each, so that drift over the run falls on both arms alike. Prints the mean
round seconds of each arm and their ratio; the goal is at most 1.02.

    python scripts/bench_web.py [--nodes 4] [--phase 20] [--phases 4] [--browsers 3] [--json]

Needs the package only (no extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
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


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    configs = [{"create": "bench", "round_pause": 0.0, "migrate": False, "split": False}]
    configs += [{"group": "bench", "migrate": False, "split": False}] * (args.nodes - 1)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    requests = 0
    async with learning_network(configs) as (_, leader, *_members):
        await wait_for(lambda: len(leader.group.roster) == args.nodes, 60, "the whole group")
        await wait_for(lambda: leader.group.model.round >= 5, 60, "a few rounds")
        for phase in range(2 * args.phases):
            arm = "off" if phase % 2 == 0 else "on"
            first = len(leader.rounds)
            view, stop, pollers = None, asyncio.Event(), []
            if arm == "on":
                view = WebView(leader.dht, leader)
                host, port = await view.start()
                base = f"http://{host}:{port}"
                pollers = [asyncio.ensure_future(_poll(base, stop)) for _ in range(args.browsers)]
            await asyncio.sleep(args.phase)
            stop.set()
            requests += sum(await asyncio.gather(*pollers))
            if view is not None:
                await view.close()
            seconds[arm] += [r.seconds for r in leader.rounds[first:]]
    mean = {arm: statistics.fmean(s) for arm, s in seconds.items()}
    return {
        "nodes": args.nodes,
        "rounds": {arm: len(s) for arm, s in seconds.items()},
        "mean_round_s": mean,
        "median_round_s": {arm: statistics.median(s) for arm, s in seconds.items()},
        "ratio_on_off": mean["on"] / mean["off"],
        "requests": requests,
        "browsers": args.browsers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--phase", type=float, default=20.0, help="seconds an arm runs at a time")
    parser.add_argument("--phases", type=int, default=4, help="turns of each arm")
    parser.add_argument("--browsers", type=int, default=3, help="clients polling at once")
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
        print(f"ratio on/off {result['ratio_on_off']:.3f} ({result['requests']} requests served)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
