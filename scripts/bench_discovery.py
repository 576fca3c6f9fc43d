#!/usr/bin/env python3
"""Discovery after a restart: how long until `groups` lists a restarted node's group.

One event loop on loopback: a seed peer, --peers DHT-only peers (so the k closest peers to a
key are a subset of the network, as in a real one) and --nodes full nodes, each alone in a
group of its own task. Then, --restarts times, one node is stopped (alternately crash-like,
sockets just closed, and graceful) and started again as a user would, with the same identity
and data directory (alternately on the same port and on a new one, and alternately with
`--create` and without it, when it first finds its old group's advert still listed). Its group
is a new one each time. With --seed-too the seed restarts as well (same id and address, its
saved contacts, an empty store). From the moment the restart begins, two readers poll until
they list every node's current group with its current address (the new one included): a fresh
one (a new read-only DHT client per
probe, what `mycelium-p2p groups` does) and a watching one (one client kept all along, what
`groups --watch` does).

    python scripts/bench_discovery.py --restarts 20 [--nodes 4] [--peers 30] [--json]

With --json the last line is {"restarts", "fresh_s_p50", "fresh_s_max", "watch_s_p50",
"watch_s_max", "start_s_p50", "not_listed"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mycelium_p2p.dht import DhtConfig, DhtNode, fetch_adverts
from mycelium_p2p.errors import NetworkError
from mycelium_p2p.node import dht_client
from mycelium_p2p.node.contacts import load_contacts, save_contacts
from mycelium_p2p.node.node import Node, NodeConfig
from mycelium_p2p.testing.loopback import crash

PROBE_EVERY = 0.1
PROBE_TIMEOUT = 5.0


def listed(adverts: list[Any], nodes: list[Node]) -> bool:
    """Whether ``adverts`` list every node's current group, led from its current address."""
    shown = {(a.group_id, tuple(a.leader)) for a in adverts}
    return all(
        n.group is not None and (n.group.group_id, tuple(n.tcp_addr)) in shown for n in nodes
    )


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.dht_config = DhtConfig()
        self.compute = ThreadPoolExecutor(1)
        self.seed = DhtNode(config=self.dht_config)
        self.seed_identity = self.seed.identity
        self.peers: list[DhtNode] = []
        self.nodes: list[Node] = []

    def config(self, i: int, *, port: int, create: bool) -> NodeConfig:
        return NodeConfig(
            bootstrap=[self.seed.address],
            host="127.0.0.1",
            port=port,
            data_dir=self.workdir / f"n{i}",
            task=f"task{i}",  # alone in its task: on restart it finds no other group to join
            create=f"g{i}" if create else None,
            heartbeat_interval=self.args.heartbeat,
            round_pause=0.5,
            migrate=False,
            dht=self.dht_config,
        )

    async def start(self) -> None:
        await self.seed.listen(0, "127.0.0.1")
        for _ in range(self.args.peers):
            peer = DhtNode(config=self.dht_config)
            await peer.listen(0, "127.0.0.1")
            self.peers.append(peer)
        await asyncio.gather(*(p.bootstrap([self.seed.address]) for p in self.peers))
        for i in range(self.args.nodes):
            node = Node(
                self.config(i, port=0, create=True), on_event=lambda e: None, compute=self.compute
            )
            await node.start()
            self.nodes.append(node)

    async def close(self) -> None:
        for node in self.nodes:
            await node.stop()
        for peer in [*self.peers, self.seed]:
            await peer.close()
        self.compute.shutdown(wait=False)

    async def restart(self, k: int) -> dict[str, Any]:
        """Stop and restart one node; time until both readers list its new group."""
        i = k % len(self.nodes)
        old = self.nodes[i]
        crashed = k % 2 == 0
        same_port = (k // 2) % 2 == 0
        create = (k // 4) % 2 == 0
        port = old.dht.address[1]
        if self.args.seed_too:  # the bootstrap peer restarts too (same id and address)
            address = self.seed.address
            save_contacts(self.workdir, self.seed.contacts())  # its last periodic save
            self.seed.stop()
            await self.seed.close()
            self.seed = DhtNode(self.seed_identity, self.dht_config)
            await self.seed.listen(address[1], address[0])
            await self.seed.bootstrap([], load_contacts(self.workdir))  # as run_seed does
        if crashed:
            await crash(old)
            assert old._lock is not None
            old._lock.release()  # what the dying process's exit does
        else:
            await old.stop()
        await asyncio.sleep(self.args.down)
        loop = asyncio.get_running_loop()
        began = loop.time()
        node = Node(
            self.config(i, port=port if same_port else 0, create=create),
            on_event=lambda e: None,
            compute=self.compute,
        )
        self.nodes[i] = node
        await node.start()
        started = loop.time() - began
        fresh, watched = await asyncio.gather(
            self._until_listed(node, began, fresh=True),
            self._until_listed(node, began, fresh=False),
        )
        if crashed:
            old.runner.close()  # what remained of the crashed node's resources
        return {
            "stop": "crash" if crashed else "graceful",
            "port": "same" if same_port else "new",
            "create": create,
            "start_s": started,
            "fresh_s": fresh,
            "watch_s": watched,
        }

    async def _until_listed(self, node: Node, began: float, *, fresh: bool) -> float | None:
        loop = asyncio.get_running_loop()
        while loop.time() - began < self.args.limit:
            try:
                if fresh:
                    async with dht_client([self.seed.address], timeout=PROBE_TIMEOUT) as dht:
                        adverts = await asyncio.wait_for(fetch_adverts(dht), PROBE_TIMEOUT)
                else:
                    adverts = await asyncio.wait_for(fetch_adverts(self.watcher), PROBE_TIMEOUT)
            except (NetworkError, asyncio.TimeoutError):
                adverts = []
            if listed(adverts, self.nodes):
                return loop.time() - began
            await asyncio.sleep(PROBE_EVERY)
        return None

    async def run(self) -> list[dict[str, Any]]:
        results = []
        await self.start()
        async with dht_client([self.seed.address]) as watcher:
            self.watcher = watcher
            for k in range(self.args.restarts):
                result = await self.restart(k)
                results.append(result)
                show = {
                    key: (f"{v:.2f}" if isinstance(v, float) else v) for key, v in result.items()
                }
                print(f"restart {k + 1}: {show}", flush=True)
        return results


def summarize(results: list[dict[str, Any]], limit: float) -> dict[str, Any]:
    def times(key: str) -> list[float]:
        return [r[key] if r[key] is not None else limit for r in results]

    return {
        "restarts": len(results),
        "fresh_s_p50": round(statistics.median(times("fresh_s")), 3),
        "fresh_s_max": round(max(times("fresh_s")), 3),
        "watch_s_p50": round(statistics.median(times("watch_s")), 3),
        "watch_s_max": round(max(times("watch_s")), 3),
        "start_s_p50": round(statistics.median(times("start_s")), 3),
        "not_listed": sum(1 for r in results if r["fresh_s"] is None or r["watch_s"] is None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--peers", type=int, default=30, help="DHT-only peers besides the seed")
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--down", type=float, default=1.0, help="seconds a node stays down")
    parser.add_argument("--limit", type=float, default=60.0, help="give up on a restart after")
    parser.add_argument(
        "--seed-too", action="store_true", help="restart the bootstrap peer with each node"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.restarts <= 200 and 1 <= args.nodes <= 20 and 0 <= args.peers <= 200):
        parser.error("need 1 <= --restarts <= 200, 1 <= --nodes <= 20, 0 <= --peers <= 200")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("kademlia").setLevel(logging.ERROR)

    async def go() -> list[dict[str, Any]]:
        bench = Bench(args, Path(tempfile.mkdtemp(prefix="bench-discovery-")))
        try:
            return await bench.run()
        finally:
            await bench.close()

    t0 = time.monotonic()
    results = asyncio.run(go())
    s = summarize(results, args.limit)
    print(
        f"\ndiscovery after restart: {s['restarts']} restarts, {args.nodes} nodes, "
        f"{args.peers + 1} DHT-only peers, {time.monotonic() - t0:.0f} s"
    )
    print("| reader | median | worst |")
    print("|---|---|---|")
    print(f"| fresh (`groups`) | {s['fresh_s_p50']:.2f} s | {s['fresh_s_max']:.2f} s |")
    print(f"| watching (`groups --watch`) | {s['watch_s_p50']:.2f} s | {s['watch_s_max']:.2f} s |")
    print(f"| node start() itself | {s['start_s_p50']:.2f} s | - |")
    print(f"not listed within {args.limit:g} s: {s['not_listed']}")
    if args.json:
        print(json.dumps(s))


if __name__ == "__main__":
    main()
