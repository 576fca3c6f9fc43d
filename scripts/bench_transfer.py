#!/usr/bin/env python3
"""Leader-to-member model transfer: our authenticated channel against raw loopback TCP.

Both sides live in one process on 127.0.0.1. "ours" sends a Flower ArrayRecord of --mb MB
through ``ChannelServer.request`` (handshake done once, as between group members), and the
receiver rebuilds the ``RecordDict`` (Flower Arrays) before answering. "raw" sends the same
number of bytes on a plain blocking TCP socket and a thread receives them with ``recv_into``
into a ready buffer: about the best one Python stream can do.
Each is repeated --repeats times; the best run counts (least disturbed by the machine).

    python scripts/bench_transfer.py --mb 100 [--json]

With --json the last line is {"model_mb", "ours_mb_s", "raw_mb_s", "ratio"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from mycelium_p2p.fl.wire import decode_content, encode_content
from mycelium_p2p.group.transport import ChannelServer, Reply
from mycelium_p2p.identity import Identity


def make_model(mb: float) -> RecordDict:
    """An ArrayRecord of float32 layers adding up to ``mb`` megabytes."""
    total = int(mb * 2**20 / 4)
    layers = [np.random.default_rng(0).random(total // 4, dtype=np.float32) for _ in range(4)]
    return RecordDict({"arrays": ArrayRecord(numpy_ndarrays=layers)})


async def bench_ours(content: RecordDict, repeats: int) -> float:
    nbytes = sum(len(a.data) for a in content["arrays"].values())

    async def receive(channel, method, header, segments):
        rebuilt = decode_content(header["records"], segments)
        return Reply({"arrays": len(rebuilt["arrays"])})

    leader, member = Identity.generate(), Identity.generate()
    member_server = ChannelServer(member, receive, max_frame=2**31)
    leader_server = ChannelServer(leader, receive, max_frame=2**31)
    addr = await member_server.listen("127.0.0.1", 0)
    await leader_server.listen("127.0.0.1", 0)
    try:
        await leader_server.connect(addr, member.public_key)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            records, segments = encode_content(content)
            await leader_server.request(
                addr, member.public_key, "model", {"records": records}, segments, timeout=600
            )
            best = min(best, time.perf_counter() - start)
    finally:
        await leader_server.close()
        await member_server.close()
    return nbytes / 2**20 / best


def bench_raw(nbytes: int, repeats: int) -> float:
    """The best one Python stream does: blocking sendall into recv_into a ready buffer."""
    payload = np.random.default_rng(0).bytes(nbytes)
    listener = socket.create_server(("127.0.0.1", 0))

    def receive() -> None:
        conn, _ = listener.accept()
        buf = memoryview(bytearray(nbytes))
        with conn:
            for _ in range(repeats):
                got = 0
                while got < nbytes:
                    got += conn.recv_into(buf[got:], nbytes - got)
                conn.sendall(b"k")

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    best = float("inf")
    with socket.create_connection(listener.getsockname()) as conn:
        for _ in range(repeats):
            start = time.perf_counter()
            conn.sendall(payload)
            conn.recv(1)
            best = min(best, time.perf_counter() - start)
    receiver.join(10)
    listener.close()
    return nbytes / 2**20 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="model size in MB")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (0 < args.mb <= 2000 and 1 <= args.repeats <= 100):
        parser.error("need 0 < --mb <= 2000 and 1 <= --repeats <= 100")
    content = make_model(args.mb)
    nbytes = sum(len(a.data) for a in content["arrays"].values())
    ours = asyncio.run(bench_ours(content, args.repeats))
    raw = bench_raw(nbytes, args.repeats)
    print(f"model transfer over loopback, {nbytes / 2**20:.1f} MB, best of {args.repeats}")
    print("| path | MB/s |")
    print("|---|---|")
    print(f"| raw TCP (blocking sendall / recv_into) | {raw:.0f} |")
    print(f"| mycelium channel (authenticated, Flower arrays rebuilt) | {ours:.0f} |")
    print(f"| ratio ours/raw | {ours / raw:.2f} |")
    if args.json:
        print(
            json.dumps(
                {
                    "model_mb": round(nbytes / 2**20, 1),
                    "ours_mb_s": round(ours, 1),
                    "raw_mb_s": round(raw, 1),
                    "ratio": round(ours / raw, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
