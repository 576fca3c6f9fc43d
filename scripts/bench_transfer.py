#!/usr/bin/env python3
"""Leader-to-member model transfer: Noise channels, plaintext channels and raw loopback TCP.

Three rows, measured in the same run on 127.0.0.1:
- "noise": a Flower ArrayRecord of --mb MB through ``ChannelServer.request`` (handshake done
  once, as between group members); the receiver rebuilds the ``RecordDict`` (Flower Arrays)
  before answering. Every byte is sealed in AES-GCM Noise transport messages.
- "plaintext": the same with ``insecure_plaintext=True`` on both ends (what encryption costs).
- "raw": the same number of bytes on a plain blocking TCP socket, received with ``recv_into``
  into a ready buffer: about the best one Python stream can do.
Each is repeated --repeats times; best and median are reported. By default both ends live in
one process (one GIL, as before); --two-processes puts the receiver of every row in a child
process, as a leader and a member are in a real group.

    python scripts/bench_transfer.py --mb 100 [--repeats 5] [--two-processes] [--json]

With --json the last line is {"model_mb", "processes", "repeats", "<row>_mb_s": {"best",
"median"}, "noise_over_raw": {"best", "median"}, "plaintext_over_raw": {...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import socket
import statistics
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from mycelium_p2p.addresses import Address
from mycelium_p2p.fl.wire import decode_content, encode_content
from mycelium_p2p.group.transport import ChannelServer, Reply
from mycelium_p2p.identity import Identity


def make_model(mb: float) -> RecordDict:
    """An ArrayRecord of float32 layers adding up to ``mb`` megabytes."""
    total = int(mb * 2**20 / 4)
    layers = [np.random.default_rng(0).random(total // 4, dtype=np.float32) for _ in range(4)]
    return RecordDict({"arrays": ArrayRecord(numpy_ndarrays=layers)})


async def receive(channel: Any, method: str, header: dict, segments: list[bytes]) -> Reply:
    rebuilt = decode_content(header["records"], segments)
    return Reply({"arrays": len(rebuilt["arrays"])})


async def serve_member(plaintext: bool, ready: Callable[[Address, bytes], None]) -> ChannelServer:
    member = Identity.generate()
    server = ChannelServer(member, receive, max_frame=2**31, insecure_plaintext=plaintext)
    ready(await server.listen("127.0.0.1", 0), member.public_key)
    return server


def member_process(pipe: Connection, plaintext: bool) -> None:
    """A member in its own process, until the pipe says stop."""

    async def run() -> None:
        server = await serve_member(plaintext, lambda addr, key: pipe.send((addr, key)))
        await asyncio.to_thread(pipe.recv)
        await server.close()

    logging.disable(logging.WARNING)  # the parent already warned about plaintext
    asyncio.run(run())


async def bench_channel(
    content: RecordDict, repeats: int, plaintext: bool, member: tuple[Address, bytes] | None
) -> list[float]:
    """MB/s of each repeat; ``member`` is the address and key of an outside member, if any."""
    nbytes = sum(len(a.data) for a in content["arrays"].values())
    local = None
    if member is None:
        found: list[tuple[Address, bytes]] = []
        local = await serve_member(plaintext, lambda addr, key: found.append((addr, key)))
        member = found[0]
    addr, key = member
    leader = ChannelServer(Identity.generate(), receive, insecure_plaintext=plaintext)
    figures = []
    try:
        await leader.connect(addr, key)
        for _ in range(repeats):
            start = time.perf_counter()
            records, segments = encode_content(content)
            await leader.request(addr, key, "model", {"records": records}, segments, timeout=600)
            figures.append(nbytes / 2**20 / (time.perf_counter() - start))
    finally:
        await leader.close()
        if local is not None:
            await local.close()
    return figures


def raw_receiver(listener: socket.socket, nbytes: int, repeats: int) -> None:
    conn, _ = listener.accept()
    buf = memoryview(bytearray(nbytes))
    with conn:
        for _ in range(repeats):
            got = 0
            while got < nbytes:
                got += conn.recv_into(buf[got:], nbytes - got)
            conn.sendall(b"k")


def raw_process(pipe: Connection, nbytes: int, repeats: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    pipe.send(listener.getsockname())
    raw_receiver(listener, nbytes, repeats)


def bench_raw(nbytes: int, repeats: int, two_processes: bool) -> list[float]:
    """The best one Python stream does: blocking sendall into recv_into a ready buffer."""
    payload = np.random.default_rng(0).bytes(nbytes)
    if two_processes:
        parent, child = multiprocessing.Pipe()
        receiver: Any = multiprocessing.Process(target=raw_process, args=(child, nbytes, repeats))
        receiver.start()
        address = parent.recv()
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        address = listener.getsockname()
        receiver = threading.Thread(target=raw_receiver, args=(listener, nbytes, repeats))
        receiver.start()
    figures = []
    with socket.create_connection(address) as conn:
        for _ in range(repeats):
            start = time.perf_counter()
            conn.sendall(payload)
            conn.recv(1)
            figures.append(nbytes / 2**20 / (time.perf_counter() - start))
    receiver.join(10)
    if not two_processes:
        listener.close()
    return figures


def bench_row(content: RecordDict, repeats: int, plaintext: bool, two_processes: bool):
    if not two_processes:
        return asyncio.run(bench_channel(content, repeats, plaintext, None))
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=member_process, args=(child, plaintext))
    process.start()
    try:
        return asyncio.run(bench_channel(content, repeats, plaintext, parent.recv()))
    finally:
        parent.send("stop")
        process.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="model size in MB")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--two-processes", action="store_true", help="receivers in a child")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (0 < args.mb <= 2000 and 1 <= args.repeats <= 100):
        parser.error("need 0 < --mb <= 2000 and 1 <= --repeats <= 100")
    multiprocessing.set_start_method("spawn")
    content = make_model(args.mb)
    nbytes = sum(len(a.data) for a in content["arrays"].values())
    rows = {
        "raw": bench_raw(nbytes, args.repeats, args.two_processes),
        "noise": bench_row(content, args.repeats, False, args.two_processes),
        "plaintext": bench_row(content, args.repeats, True, args.two_processes),
    }
    summary = {name: (max(f), statistics.median(f)) for name, f in rows.items()}
    where = "receiver in a child process" if args.two_processes else "one process"
    print(f"model transfer over loopback, {nbytes / 2**20:.1f} MB, {args.repeats} runs, {where}")
    print("| path | best MB/s | median MB/s | best / raw best | median / raw median |")
    print("|---|---|---|---|---|")
    labels = {
        "raw": "raw TCP (blocking sendall / recv_into)",
        "noise": "mycelium channel, Noise AES-GCM (Flower arrays rebuilt)",
        "plaintext": "mycelium channel, insecure plaintext (same, unencrypted)",
    }
    raw_best, raw_median = summary["raw"]
    for name, (best, median) in summary.items():
        print(
            f"| {labels[name]} | {best:.0f} | {median:.0f} | {best / raw_best:.2f} "
            f"| {median / raw_median:.2f} |"
        )
    if args.json:
        out: dict[str, Any] = {
            "model_mb": round(nbytes / 2**20, 1),
            "processes": 2 if args.two_processes else 1,
            "repeats": args.repeats,
        }
        for name, (best, median) in summary.items():
            out[f"{name}_mb_s"] = {"best": round(best, 1), "median": round(median, 1)}
            if name != "raw":
                out[f"{name}_over_raw"] = {
                    "best": round(best / raw_best, 3),
                    "median": round(median / raw_median, 3),
                }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
