"""Test aids shipped with the package (public: tests, benchmarks and users import them).

- ``SimNetwork``: an in-memory datagram network (latency, loss, partitions, dead peers) that a
  ``DhtNode(network=...)`` binds to instead of UDP;
- ``VirtualClockLoop`` and ``run``: asyncio in virtual time, so simulated seconds cost no wall
  time and a seeded run repeats exactly;
- ``sim_dht_node``, ``sim_swarm``: DHT peers on a ``SimNetwork``, keys and all from a seed;
- ``hostile``: dishonest DHT peers over real sockets.
"""

from .clock import DEFAULT_EPOCH, VirtualClockLoop, run
from .network import LAN, WAN, Latency, NetworkStats, PairLatency, SimEndpoint, SimNetwork
from .swarm import sim_dht_node, sim_swarm, wall_clock

__all__ = [
    "DEFAULT_EPOCH",
    "LAN",
    "WAN",
    "Latency",
    "NetworkStats",
    "PairLatency",
    "SimEndpoint",
    "SimNetwork",
    "VirtualClockLoop",
    "run",
    "sim_dht_node",
    "sim_swarm",
    "wall_clock",
]
