"""DHT peers on a ``SimNetwork``, from a seed: what the tests and ``scripts/sim_dht.py`` share."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable

from ..dht import DhtConfig, DhtNode
from ..dht.rtt import Address
from ..errors import BootstrapError
from ..identity import Identity
from .clock import VirtualClockLoop
from .network import SimNetwork


def wall_clock() -> Callable[[], float]:
    """The running loop's simulated wall clock under ``VirtualClockLoop``, else ``time.time``."""
    loop = asyncio.get_running_loop()
    return loop.wall_time if isinstance(loop, VirtualClockLoop) else time.time


def sim_dht_node(
    network: SimNetwork,
    rng: random.Random,
    config: DhtConfig | None = None,
    cls: type[DhtNode] = DhtNode,
    identity: Identity | None = None,
) -> DhtNode:
    """A DHT peer (a ``cls``) on ``network`` whose key (unless ``identity`` is given) and
    refresh ids come from ``rng``."""
    if identity is None:
        identity = Identity.from_seed(rng.randbytes(32))
    return cls(
        identity,
        config,
        clock=wall_clock(),
        rng=random.Random(rng.getrandbits(64)),
        network=network,
    )


@contextlib.asynccontextmanager
async def sim_swarm(
    n: int,
    network: SimNetwork,
    *,
    seed: int = 0,
    config: DhtConfig | None = None,
    batch: int = 25,
    interval: float = 0.5,
) -> AsyncIterator[list[DhtNode]]:
    """``n`` joined DHT peers on ``network``; the first is everyone's bootstrap peer. They
    join ``batch`` at a time every ``interval`` s, as peers arrive in real life (all at once,
    they would outrun the seed's proof rate limit), and are closed on exit. A join that
    finds no seed (a lossy network) is tried twice more, a second apart."""
    rng = random.Random(seed)
    nodes = [sim_dht_node(network, rng, config) for _ in range(n)]
    try:
        for node in nodes:
            await node.listen()
        seed_address = nodes[0].address
        for start in range(1, n, batch):
            began = asyncio.get_running_loop().time()
            await asyncio.gather(
                *(join(node, seed_address) for node in nodes[start : start + batch])
            )
            await asyncio.sleep(began + interval - asyncio.get_running_loop().time())
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def join(node: DhtNode, seed: Address, tries: int = 3) -> None:
    """``node.bootstrap([seed])``, tried ``tries`` times a second apart (the last raises)."""
    for attempt in range(tries):
        try:
            await node.bootstrap([seed])
            return
        except BootstrapError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(1.0)
