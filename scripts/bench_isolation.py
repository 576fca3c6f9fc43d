#!/usr/bin/env python3
"""Does a ClientApp that holds the GIL stall the node? A thread against a worker process.

A node's event loop answers heartbeats, votes and model requests. Its ClientApp runs in a
thread of the node's process (``--isolation thread``, the default) or in a worker process
(``--isolation process``). This script runs a ClientApp whose training is one long C call that
never releases the GIL (``sum(range(n))``, like extension code that keeps the GIL), through a
real ``ClientRunner`` both ways, while a probe on the event loop measures how late its 10 ms
timers fire: the delay a heartbeat or a vote would see.

    python scripts/bench_isolation.py [--hold 0.5,2] [--calls 3] [--json]

With --json the last line is {"rows": [{"isolation", "hold_s", "lag_max_s", "lag_p99_s",
"ticks"}]}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from mycelium_p2p.fl.client import ClientRunner
from mycelium_p2p.fl.messages import leader_message
from mycelium_p2p.fl.worker import ClientProcess
from mycelium_p2p.identity import Identity

app = ClientApp()  # the worker imports it as bench_isolation:app


@app.train()
def train(msg: Message, context: Context) -> Message:
    sum(range(int(msg.content["config"]["n"])))  # one C call: the GIL is held throughout
    content = RecordDict(
        {"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content, reply_to=msg)


def calibrate() -> float:
    """Additions per second of ``sum(range(n))`` here."""
    n = 2_000_000
    start = time.perf_counter()
    sum(range(n))
    return n / (time.perf_counter() - start)


def message(runner: ClientRunner, n: int) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord(numpy_ndarrays=[np.zeros(4)]), "config": ConfigRecord({"n": n})}
    )
    return leader_message(runner.node_id, "train", content)


async def measure(isolation: str, n: int, calls: int) -> list[float]:
    """Timer lateness (s) on the event loop while ``calls`` ClientApp calls run."""
    worker = ClientProcess() if isolation == "process" else None
    runner = ClientRunner(
        app, Identity.generate().public_key, {}, executor=worker, app_spec="bench_isolation:app"
    )
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            start = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - start - 0.01)

    try:
        await runner.run(message(runner, 1))  # the worker is up: its start is not measured
        task = asyncio.create_task(probe())
        for _ in range(calls):
            reply = await runner.run(message(runner, n))
            assert not reply.has_error(), reply.error
        done.set()
        await task
    finally:
        runner.close()
        if worker is not None:
            await worker.close()
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", default="0.5,2", help="seconds each call holds the GIL")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    holds = [float(h) for h in args.hold.split(",") if h]
    if not holds or not all(0 < h <= 30 for h in holds) or not 1 <= args.calls <= 20:
        parser.error("--hold: seconds in (0, 30]; --calls: 1..20")
    # the worker imports this file as a module
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    rate = calibrate()
    rows = []
    print(
        "| isolation | ClientApp holds the GIL for | timer lateness, max | p99 | "
        "10 ms timers fired |\n|---|---|---|---|---|"
    )
    for hold in holds:
        for isolation in ("thread", "process"):
            lags = asyncio.run(measure(isolation, int(hold * rate), args.calls))
            lags.sort()
            row = {
                "isolation": isolation,
                "hold_s": hold,
                "lag_max_s": round(lags[-1], 4),
                "lag_p99_s": round(lags[int(0.99 * (len(lags) - 1))], 4),
                "ticks": len(lags),
            }
            rows.append(row)
            print(
                f"| {isolation} | {hold:g} s x {args.calls} | {row['lag_max_s'] * 1000:.0f} ms | "
                f"{row['lag_p99_s'] * 1000:.0f} ms | {row['ticks']} |",
                flush=True,
            )
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
