#!/usr/bin/env python3
"""Memory over many TCP connect/disconnect cycles against a channel server (loopback only).

Cycles, ``--concurrency`` at a time, rotate four kinds: a full Noise handshake, a request and a
close; a handshake then a close; a connect and a silent close; a connect, a bogus 65,535-byte
handshake length, and a close. The server's connection limits are relaxed (``--limits
relaxed``, the default) so that every connection is handled: the worst case for memory; with
``--limits default`` most are refused, as they would be from one host. Prints the process's RSS
and tracemalloc's current size (server and clients share the process) after a warm-up, after
1,000 and after all cycles, plus the channel table and task counts, which must return to idle.

    python scripts/bench_churn_connections.py [--cycles 10000] [--deadline 600] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import tracemalloc
from typing import Any

from mycelium_p2p.group.transport import ChannelError, ChannelServer, ConnectionLimits, Reply
from mycelium_p2p.identity import Identity

RELAXED = ConnectionLimits(
    handshake_timeout=2.0, unproven_burst=100_000, connects_burst=100_000, connects_per_s=1e6
)


async def echo(channel: Any, method: str, header: dict, segments: list) -> Reply:
    return Reply({"method": method})


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def cycle(i: int, addr: tuple[str, int], key: bytes, dialler: ChannelServer) -> None:
    kind = i % 4
    if kind < 2:
        try:
            channel = await dialler.connect(addr, key, timeout=10)
            if kind == 0:
                await channel.request("ping", {"i": i}, timeout=10)
            await channel.close()
        except ChannelError:
            pass  # refused (``--limits default``)
        return
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), 10)
    except (OSError, asyncio.TimeoutError):
        return
    if kind == 3:
        writer.write(b"\xff\xff")
    writer.close()
    del reader


async def measure(server: ChannelServer, label: str, done: int, t0: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while (server.admission.pending or server.admission.channels()) and loop.time() < end:
        await asyncio.sleep(0.05)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else 0.0
    row = {
        "at": label,
        "cycles": done,
        "rss_mb": round(rss_mb(), 1),
        "tracemalloc_mb": round(traced, 2),
        "channels": len(server._channels),
        "pending_handshakes": server.admission.pending,
        "tasks": len(server.tasks),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    print(
        f"{label:>8}: {done:>6} cycles, RSS {row['rss_mb']} MB, tracemalloc "
        f"{row['tracemalloc_mb']} MB, channels {row['channels']}, pending handshakes "
        f"{row['pending_handshakes']}, tasks {row['tasks']}, {row['elapsed_s']} s",
        flush=True,
    )
    return row


async def run(args: argparse.Namespace) -> dict[str, Any]:
    limits = RELAXED if args.limits == "relaxed" else ConnectionLimits()
    server = ChannelServer(Identity.generate(), echo, limits=limits)
    dialler = ChannelServer(Identity.generate(), echo)
    addr = await server.listen("127.0.0.1", 0)
    key = server.identity.public_key
    t0 = time.monotonic()
    deadline = t0 + args.deadline
    rows = []
    done = 0
    try:
        for target, label in ((args.warmup, "warm-up"), (1000, "1k"), (args.cycles, "all")):
            while done < target and time.monotonic() < deadline:
                batch = range(done, min(target, done + args.concurrency))
                await asyncio.gather(*(cycle(i, addr, key, dialler) for i in batch))
                done = batch[-1] + 1
            rows.append(await measure(server, label, done, t0))
    finally:
        await dialler.close()
        await server.close()
    stats = server.admission.stats
    base, last = rows[0], rows[-1]
    print(
        f"growth after warm-up: RSS {last['rss_mb'] - base['rss_mb']:+.1f} MB, tracemalloc "
        f"{last['tracemalloc_mb'] - base['tracemalloc_mb']:+.2f} MB over {done - base['cycles']} "
        f"cycles; refused: rate {stats.refused_rate}, unproven {stats.refused_unproven}, busy "
        f"{stats.refused_busy}; failed handshakes {stats.failed_handshakes}"
    )
    return {"limits": args.limits, "rows": rows, "complete": done >= args.cycles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=600, help="stop after this many s")
    parser.add_argument("--limits", choices=("relaxed", "default"), default="relaxed")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.no_tracemalloc:
        tracemalloc.start()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
