#!/usr/bin/env python3
"""Why slow reads are slow: runs ``sim_dht.py``'s simulation (same arguments) and sorts each
read that took longer than ``--slow-ms`` by what it waited for.

- ``starved``: ``quorum`` agreeing holders had answered, and each path had *asked or been
  named* one of them, yet the read went on (a path counted only the holders it asked);
- ``no holder``: ``quorum`` agreed, but some path had not even been named an agreeing holder;
- ``slow quorum``: ``quorum`` agreeing holders themselves came late (or never);
- ``timed out``: the lookup's deadline ended it.

Waits are in simulated ms (from the first time that condition held to the read's end);
``stalls``: queries of a slow read that went unanswered past their peer's stall time.

    python scripts/trace_reads.py --peers 1000 --latency lan --duration 120 --seed 1
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mycelium_p2p.dht.node as dht_node
from mycelium_p2p.dht.lookup import LookupResult, _Lookup
from mycelium_p2p.records import Record, best_per_signer
from mycelium_p2p.testing import run
from scripts.sim_dht import make_parser, percentile, simulate

SLACK = 0.001  # s: a condition that held less than this before the end does not count

_named: dict[int, dict[bytes, set[int]]] = {}  # id(result) -> node id -> paths that met it
_first: dict[int, dict[str, float]] = {}  # id(result) -> condition -> when it first held
_stalls: Counter[int] = Counter()  # id(result) -> queries that stalled
_learn = _Lookup.learn
_blame = _Lookup.blame
_agreed = dht_node.agreed
_lookup = dht_node.lookup


def learn(self: _Lookup, node: Any, path: int, voucher: bytes | None) -> None:
    _learn(self, node, path, voucher)
    if node.id in self.peers:
        _named.setdefault(id(self.result), {}).setdefault(node.id, set()).add(path)


def blame(self: _Lookup, peer: Any, outcome: str) -> None:
    _stalls[id(self.result)] += outcome == "stall"
    _blame(self, peer, outcome)


def agreed(result: LookupResult, check: Any, quorum: int) -> bool:
    """The real rule, noting when looser ones first held."""
    held: dict[bytes, list[Record]] = {
        rid: [r for b in blobs if (r := check(b))] for rid, blobs in result.blobs.items()
    }
    best = {r.blob for r in best_per_signer(r for rs in held.values() for r in rs).values()}
    agreeing = [
        rid
        for rid, records in held.items()
        if rid not in result.partial and {r.blob for r in records} == best
    ]
    named = _named.get(id(result), {})
    paths = {p for rid in agreeing for p in named.get(rid, {result.path_of[rid]})}
    now = asyncio.get_running_loop().time()
    first = _first.setdefault(id(result), {})
    if len(agreeing) >= quorum:
        first.setdefault("quorum", now)
        if len(paths) >= result.paths:
            first.setdefault("named", now)
    return _agreed(result, check, quorum)


async def lookup(*args: Any, **kwargs: Any) -> LookupResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await _lookup(*args, **kwargs)
    if kwargs.get("records") and kwargs.get("enough") is not None:
        first = _first.pop(id(result), {})
        _named.pop(id(result), None)
        end = loop.time()
        TRACES.append(
            {
                "ms": 1000 * (end - start),
                "timed_out": result.timed_out,
                "stalls": _stalls.pop(id(result), 0),
                **{k: 1000 * (end - t) for k, t in first.items()},
            }
        )
    return result


TRACES: list[dict[str, Any]] = []


def why(trace: dict[str, Any]) -> str:
    if trace["timed_out"]:
        return "timed out"
    if trace.get("named", 0.0) > 1000 * SLACK:
        return "starved"
    if trace.get("quorum", 0.0) > 1000 * SLACK:
        return "no holder"
    return "slow quorum"


def wasted(trace: dict[str, Any]) -> float:
    """How long the read went on after it could have ended (by the looser rule of its kind)."""
    return float(trace.get("named" if why(trace) == "starved" else "quorum", 0.0))


def main() -> None:
    parser = make_parser()
    parser.add_argument("--slow-ms", type=float, default=20.0, help="a read slower is slow")
    args = parser.parse_args()
    logging.getLogger("kademlia").setLevel(logging.ERROR)
    logging.getLogger("mycelium_p2p").setLevel(logging.ERROR)
    _Lookup.learn = learn  # type: ignore[method-assign]
    _Lookup.blame = blame  # type: ignore[method-assign]
    dht_node.agreed = agreed
    dht_node.lookup = lookup
    result = run(simulate(args))
    reads = TRACES
    slow = [t for t in reads if t["ms"] > args.slow_ms]
    kinds = Counter(why(t) for t in slow)
    summary = {
        "sim": {k: result[k] for k in ("peers", "latency", "seed", "get_p50_ms", "get_p95_ms")},
        "datagrams": result["datagrams"],
        "record_lookups": len(reads),
        "slow": len(slow),
        "why": dict(kinds),
        "wasted_ms_p50": {
            kind: percentile([wasted(t) for t in slow if why(t) == kind], 0.5) for kind in kinds
        },
        "stalls_p50": {
            kind: percentile([t["stalls"] for t in slow if why(t) == kind], 0.5) for kind in kinds
        },
        "slow_ms_p50": percentile([t["ms"] for t in slow], 0.5),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
