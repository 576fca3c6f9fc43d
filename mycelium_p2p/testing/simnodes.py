"""Full learning nodes on a simulated network (``SimNetwork`` + ``SimStreams``), in one event
loop: partitions and silent hosts without namespaces or root, no ports taken.

Run them on asyncio's own loop, in real time. A leader runs Flower's strategy (a blocking loop
that waits on the wall clock) in a thread, so under ``VirtualClockLoop`` rounds would race the
jumping clock: whole nodes are not simulated in virtual time, only their group and DHT layers
are (``simulated``, ``sim_swarm``).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any

from ..dht import DhtNode
from ..identity import Identity
from .loopback import FAST, quiet_flower
from .network import SimNetwork
from .streams import SimStreams

__all__ = ["sim_learning_network"]


@contextlib.asynccontextmanager
async def sim_learning_network(
    configs: list[dict[str, Any]],
    streams: SimStreams,
    *,
    heartbeat: float = 0.3,
    seed: int = 0,
    compute: Executor | None = None,
) -> AsyncIterator[list[Any]]:
    """A seed DHT peer plus one ``Node`` per config dict (``NodeConfig.from_flat`` names),
    each on a host of its own of ``streams.network``, started in order; keys from ``seed``;
    ClientApps in ``compute`` when given (else a thread per node)."""
    from ..node.node import Node, NodeConfig

    quiet_flower()
    network: SimNetwork = streams.network
    rng = random.Random(seed)
    dht_seed = DhtNode(
        Identity.from_seed(rng.randbytes(32)), FAST, clock=time.time, network=network
    )
    await dht_seed.listen()
    nodes: list[Any] = []
    try:
        for overrides in configs:
            host = network.new_host()
            settings = {"heartbeat_interval": heartbeat, "round_pause": 0.05, **overrides}
            config = NodeConfig.from_flat(
                bootstrap=[dht_seed.address],
                host=host,
                dht=FAST,
                seed=rng.getrandbits(31),
                **settings,
            )
            node = Node(
                config,
                Identity.from_seed(rng.randbytes(32)),
                compute=compute,
                network=network,
                streams=streams.host(host),
            )
            nodes.append(node)
            await node.start()
        yield [dht_seed, *nodes]
    finally:
        for node in nodes:
            await node.stop()
        await dht_seed.close()
