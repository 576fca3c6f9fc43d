"""Networks on loopback in one event loop: DHT swarms and full learning nodes, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..dht import DhtConfig, DhtNode

__all__ = ["FAST", "crash", "learning_network", "quiet_flower", "swarm"]


FAST = DhtConfig(maintenance_interval=0.5)


@contextlib.asynccontextmanager
async def swarm(n: int, config: DhtConfig = FAST) -> AsyncIterator[list[DhtNode]]:
    """``n`` joined DHT peers on 127.0.0.1; the first is everyone's bootstrap peer."""
    nodes = [DhtNode(config=config) for _ in range(n)]
    try:
        for node in nodes:
            await node.listen(0, "127.0.0.1")
        seed = nodes[0].address
        for start in range(1, n, 25):  # join in batches, as peers arrive in real life
            await asyncio.gather(*(node.bootstrap([seed]) for node in nodes[start : start + 25]))
        yield nodes
    finally:
        for node in nodes:
            await node.close()


def quiet_flower() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)


@contextlib.asynccontextmanager
async def learning_network(
    configs: list[dict[str, Any]],
    *,
    heartbeat: float = 0.3,
    compute: Any = None,
    together: bool = False,
    quiet: bool = True,
) -> AsyncIterator[list[Any]]:
    """A seed DHT peer plus one full ``Node`` per config dict, started in order (or all at
    once, ``together``), in-process (their ClientApps in ``compute``, when given). ``quiet``:
    Flower's logger at WARNING."""
    from ..node.node import Node, NodeConfig

    if quiet:
        quiet_flower()
    seed = DhtNode(config=FAST)
    await seed.listen(0, "127.0.0.1")
    nodes: list[Any] = []
    try:
        for overrides in configs:
            settings = {"heartbeat_interval": heartbeat, "round_pause": 0.05, **overrides}
            config = NodeConfig.from_flat(
                bootstrap=[seed.address], host="127.0.0.1", dht=FAST, **settings
            )
            nodes.append(Node(config, compute=compute))
            if not together:
                await nodes[-1].start()
        if together:
            await asyncio.gather(*(node.start() for node in nodes))
        yield [seed, *nodes]
    finally:
        for node in nodes:
            await node.stop()
        await seed.close()


async def crash(node: Any) -> None:
    """Stop a node the way SIGKILL would: no goodbyes, sockets just close."""
    node.tasks.cancel()
    node.leading.stop()
    if node.group is not None:
        node.group.tasks.cancel()
    await node.channels.close()
    node.dht.stop()
