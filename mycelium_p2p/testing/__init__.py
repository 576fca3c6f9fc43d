"""Test aids shipped with the package, shared by the tests, the benchmarks and the scripts.

- ``network``: ``SimNetwork``, an in-memory datagram network (latency, loss, partitions, dead
  peers) that a ``DhtNode(network=...)`` binds to instead of UDP;
- ``clock``: ``VirtualClockLoop`` and ``run``, asyncio in virtual time, so simulated seconds
  cost no wall time and a seeded run repeats exactly;
- ``streams``: ``SimStreams``, group channels on a ``SimNetwork``'s hosts (a relay between socket
  pairs: the handshake and frames are the node's own code) that a ``ChannelServer(streams=...)``
  listens and dials on instead of TCP;
- ``simnodes``: ``sim_learning_network``, whole learning nodes on those two (in real time);
- ``swarm``: ``sim_dht_node``, ``sim_swarm``, DHT peers on a ``SimNetwork`` from a seed.
- ``aio``: ``run_async`` (an async test in a fresh loop, with a deadline) and ``wait_for``.
- ``records``: a new group's signed advert (``make_advert``) and ways to break one.
- ``loopback``: DHT swarms and full learning nodes on 127.0.0.1 in one event loop.
- ``procs``: node processes whose output is read with deadlines, stopped by PID.
- ``netns``: a LAN of network-namespace hosts (root), with cut links and partitions.
- ``chaos``: the chaos run (kills, stops, cuts, partitions; invariants checked throughout).
- ``hostile``: hostile DHT peers (``simhostile``: in a ``SimNetwork`` simulation);
  ``traffic``: hostile traffic; ``flood``: advert floods.

The simulation's names are exported here; nothing here is imported by the node itself.
"""

from .clock import DEFAULT_EPOCH, VirtualClockLoop, run
from .network import LAN, WAN, Latency, NetworkStats, PairLatency, SimEndpoint, SimNetwork
from .streams import SimHostStreams, SimListener, SimStreams, StreamStats
from .swarm import sim_dht_node, sim_swarm, wall_clock

__all__ = [
    "DEFAULT_EPOCH",
    "LAN",
    "WAN",
    "Latency",
    "NetworkStats",
    "PairLatency",
    "SimEndpoint",
    "SimHostStreams",
    "SimListener",
    "SimNetwork",
    "SimStreams",
    "StreamStats",
    "VirtualClockLoop",
    "run",
    "sim_dht_node",
    "sim_swarm",
    "wall_clock",
]
