#!/usr/bin/env python3
"""What an id costs: key generation, proof signing and checking, a proof round trip, and what
S/Kademlia's static crypto puzzle (c leading zero bits of H(id)) would add, measured here.

    python scripts/bench_ids.py [--seconds 2] [--rounds 200] [--json]

The puzzle is measured for small c (8, 10, 12 bits: mean keys tried until one passes, and the
time) and extrapolated for larger c from the measured keys per second (2^c keys on average).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import time

from mycelium_p2p.dht import DhtNode
from mycelium_p2p.dht.peers import ProofLimiter, check_proof, proof_message
from mycelium_p2p.identity import Identity, node_id_for


def per_second(fn: object, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()  # type: ignore[operator]
        count += 1
    return count / (time.perf_counter() - start)


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def mint_puzzle_key(bits: int) -> int:
    """Keys generated until H(node id) has ``bits`` leading zero bits (S/Kademlia's static)."""
    tried = 0
    while True:
        tried += 1
        node_id = Identity.generate().node_id
        if leading_zero_bits(hashlib.sha1(node_id).digest()) >= bits:
            return tried


async def proof_round_trips(rounds: int) -> list[float]:
    a, b = DhtNode(), DhtNode()
    await a.listen(0, "127.0.0.1")
    await b.listen(0, "127.0.0.1")
    b.protocol.limiter = ProofLimiter(per_address_rate=1e6, burst=1e6)  # one asker, many times
    times = []
    try:
        for _ in range(rounds):
            a.protocol.book = type(a.protocol.book)()  # forget: prove again each time
            start = time.perf_counter()
            node = await a.protocol.prove(b.address)
            times.append((time.perf_counter() - start) * 1000)
            assert node is not None and node.id == b.node.id
    finally:
        await a.close()
        await b.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per rate measured")
    parser.add_argument("--rounds", type=int, default=200, help="proof round trips")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (0 < args.seconds <= 60 and 1 <= args.rounds <= 10_000):
        parser.error("need 0 < --seconds <= 60 and 1 <= --rounds <= 10000")

    prover, me = Identity.generate(), Identity.generate().node_id
    nonce, seen = bytes(16), ("127.0.0.1", 4000)
    message = proof_message(nonce, me, prover.node_id, seen)
    reply = [prover.public_key, prover.sign(message), list(seen)]
    keys = per_second(lambda: node_id_for(Identity.generate().public_key), args.seconds)
    signs = per_second(lambda: prover.sign(message), args.seconds)
    checks = per_second(
        lambda: check_proof(reply, nonce=nonce, challenger_id=me, local=seen), args.seconds
    )
    puzzle = {}
    for bits in (8, 10, 12):
        start, tries = time.perf_counter(), [mint_puzzle_key(bits) for _ in range(8)]
        puzzle[bits] = {
            "mean_keys": round(statistics.fmean(tries)),
            "mean_s": round((time.perf_counter() - start) / len(tries), 3),
        }
    rtts = asyncio.run(proof_round_trips(args.rounds))
    result = {
        "keys_per_s": round(keys),
        "sign_us": round(1e6 / signs, 1),
        "check_proof_us": round(1e6 / checks, 1),
        "proof_rtt_p50_ms": round(statistics.median(rtts), 3),
        "proof_rtt_p95_ms": round(sorted(rtts)[int(0.95 * (len(rtts) - 1))], 3),
        "puzzle_measured": puzzle,
        "puzzle_extrapolated_s": {c: round(2**c / keys, 1) for c in (16, 20, 24)},
    }
    print(f"key generation + id:      {result['keys_per_s']} keys/s")
    print(f"sign a proof:             {result['sign_us']} us")
    print(f"check a proof:            {result['check_proof_us']} us")
    print(
        f"proof round trip (loopback, {args.rounds}x): p50 {result['proof_rtt_p50_ms']} ms, "
        f"p95 {result['proof_rtt_p95_ms']} ms"
    )
    for bits, row in puzzle.items():
        print(f"static puzzle c={bits:<2}: {row['mean_keys']} keys, {row['mean_s']} s (measured)")
    for bits, secs in result["puzzle_extrapolated_s"].items():
        print(f"static puzzle c={bits:<2}: {secs} s per id on one core (2^c / keys per s)")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
