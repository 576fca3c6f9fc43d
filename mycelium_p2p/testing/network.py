"""``SimNetwork``: datagrams in memory, with latency, loss, partitions and dead peers.

A ``DatagramNetwork`` (``dht/transport.py``): pass it as ``DhtNode(network=...)`` and the node
binds an in-memory endpoint instead of a UDP socket. Each endpoint that binds a wildcard or
loopback interface is a new host with a made-up address in ``198.18.0.0/15`` (RFC 2544's
benchmarking range: it is nobody's, and nothing here ever touches a socket).

A datagram arrives after a one-way delay from the latency model (``LAN``, ``WAN``, a fixed number
of seconds, or any ``Latency``), unless it is lost (probability ``loss``), its ends are on
different sides of a partition when it arrives, or either end was killed. All the randomness
comes from ``seed``: under ``VirtualClockLoop`` the same seed and the same code make the same
run, datagram for datagram (``fingerprint``).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..dht.rtt import Address

P = TypeVar("P", bound=asyncio.DatagramProtocol)

MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"})
_EPHEMERAL = 49152


class Latency(Protocol):
    """A one-way delay model: seconds for one datagram from host ``src`` to host ``dst``."""

    def __call__(self, src: str, dst: str, seed: int, rng: random.Random) -> float: ...


@dataclass(frozen=True)
class PairLatency:
    """Each pair of hosts has its own round trip, drawn once (from the seed and the pair) in
    ``[rtt_low, rtt_high]``; each datagram takes half of it, give or take ``jitter`` of that."""

    rtt_low: float
    rtt_high: float
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.rtt_low <= self.rtt_high or not 0 <= self.jitter < 1:
            raise ValueError(f"need 0 <= rtt_low <= rtt_high and 0 <= jitter < 1: {self}")

    def __call__(self, src: str, dst: str, seed: int, rng: random.Random) -> float:
        a, b = (src, dst) if src <= dst else (dst, src)
        digest = hashlib.blake2b(f"{seed}|{a}|{b}".encode(), digest_size=8).digest()
        unit = int.from_bytes(digest, "big") / 2**64
        one_way = (self.rtt_low + unit * (self.rtt_high - self.rtt_low)) / 2
        if self.jitter:
            one_way *= 1 + self.jitter * (2 * rng.random() - 1)
        return one_way


#: A switched LAN: round trips of 0.2-1 ms.
LAN = PairLatency(0.0002, 0.001)
#: The internet between sites: round trips of 20-200 ms.
WAN = PairLatency(0.020, 0.200)
_MODELS = {"lan": LAN, "wan": WAN}


@dataclass
class NetworkStats:
    """What happened to the datagrams sent."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0  # to ``loss``
    cut: int = 0  # across a partition
    undeliverable: int = 0  # to or from a killed endpoint, or to nobody
    bytes_delivered: int = 0


class SimNetwork:
    """An in-memory datagram network of made-up hosts. See the module docstring."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: str | float | Latency = "lan",
        loss: float = 0.0,
        subnet: str = "198.18.0.0/15",
    ) -> None:
        if not 0 <= loss < 1:
            raise ValueError(f"loss is a probability below 1, got {loss}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.latency = _latency_model(latency)
        self.loss = loss
        self.stats = NetworkStats()
        self._subnet = ipaddress.ip_network(subnet)
        self._next_host = 1
        self._ports: dict[str, int] = {}
        self._endpoints: dict[Address, SimEndpoint] = {}
        self._island: dict[str, int] = {}
        self._trace = hashlib.blake2b(digest_size=16)

    # -- hosts and endpoints -------------------------------------------------------------------

    def new_host(self) -> str:
        """A fresh made-up host address (the next one in the subnet)."""
        if self._next_host >= self._subnet.num_addresses - 1:
            raise OSError(errno.EADDRNOTAVAIL, f"no addresses left in {self._subnet}")
        host = str(self._subnet.network_address + self._next_host)
        self._next_host += 1
        return host

    async def create_endpoint(
        self, protocol_factory: Callable[[], P], local_addr: Address
    ) -> tuple[SimEndpoint, P]:
        """Bind ``local_addr``: a wildcard or loopback host is a new host; port 0 any free one."""
        host, port = local_addr
        if host in _WILDCARDS:
            host = self.new_host()
        if port == 0:
            port = self._ports.get(host, _EPHEMERAL)
            self._ports[host] = port + 1
        address = (host, int(port))
        if address in self._endpoints:
            raise OSError(errno.EADDRINUSE, f"{host}:{port} is in use")
        protocol = protocol_factory()
        endpoint = SimEndpoint(self, address, protocol, asyncio.get_running_loop())
        self._endpoints[address] = endpoint
        protocol.connection_made(endpoint)
        return endpoint, protocol

    def endpoint(self, address: Address) -> SimEndpoint | None:
        """The live endpoint bound at ``address``, if any."""
        return self._endpoints.get((address[0], address[1]))

    @property
    def bound(self) -> int:
        """How many endpoints are bound now."""
        return len(self._endpoints)

    # -- faults --------------------------------------------------------------------------------

    def kill(self, address: Address) -> None:
        """The endpoint at ``address`` goes silent: it receives and sends nothing from now on,
        and its owner is not told (a crash, a pulled cable). Closing it frees the address."""
        endpoint = self.endpoint(address)
        if endpoint is not None:
            endpoint.killed = True

    def partition(self, *groups: Iterable[str | Address]) -> None:
        """Split the network: each group of hosts (or addresses: their hosts) is an island,
        and every host in no group is one more. Datagrams do not cross islands."""
        self._island = {}
        for number, group in enumerate(groups, start=1):
            for member in group:
                self._island[member if isinstance(member, str) else member[0]] = number

    def heal(self) -> None:
        """End every partition (killed endpoints stay dead)."""
        self._island = {}

    def reachable(self, src: str, dst: str) -> bool:
        """Are hosts ``src`` and ``dst`` on the same side of every partition?"""
        return self._island.get(src, 0) == self._island.get(dst, 0)

    # -- delivery ------------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """A digest of every delivery so far (when, from, to, how many bytes): two runs with
        the same fingerprint delivered the same datagrams at the same times."""
        return self._trace.hexdigest()

    def _send(self, source: SimEndpoint, data: bytes, dst: Address) -> None:
        self.stats.sent += 1
        if source.killed:
            self.stats.undeliverable += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.stats.lost += 1
            return
        delay = self.latency(source.address[0], dst[0], self.seed, self.rng)
        source.loop.call_later(delay, self._deliver, source.address, dst, data)

    def _deliver(self, src: Address, dst: Address, data: bytes) -> None:
        sender, endpoint = self._endpoints.get(src), self._endpoints.get(dst)
        if endpoint is None or endpoint.killed or (sender is not None and sender.killed):
            self.stats.undeliverable += 1
            return
        if not self.reachable(src[0], dst[0]):
            self.stats.cut += 1
            return
        self.stats.delivered += 1
        self.stats.bytes_delivered += len(data)
        when = endpoint.loop.time()
        self._trace.update(f"{when!r}|{src[0]}:{src[1]}|{dst[0]}:{dst[1]}|{len(data)};".encode())
        endpoint.protocol.datagram_received(data, src)

    def _unbind(self, endpoint: SimEndpoint) -> None:
        if self._endpoints.get(endpoint.address) is endpoint:
            del self._endpoints[endpoint.address]


class SimEndpoint(asyncio.DatagramTransport):
    """One bound endpoint of a ``SimNetwork``: asyncio's datagram transport, in memory."""

    def __init__(
        self,
        network: SimNetwork,
        address: Address,
        protocol: asyncio.DatagramProtocol,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__()
        self.network = network
        self.address = address
        self.protocol = protocol
        self.loop = loop
        self.killed = False
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        if addr is None:
            raise ValueError("a SimEndpoint is not connected: sendto needs an address")
        if len(data) > MAX_DATAGRAM:
            self.protocol.error_received(OSError(errno.EMSGSIZE, "datagram too long"))
            return
        self.network._send(self, bytes(data), (addr[0], int(addr[1])))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.address if name == "sockname" else default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.network._unbind(self)
        self.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0


def _latency_model(latency: str | float | Latency) -> Latency:
    if isinstance(latency, str):
        try:
            return _MODELS[latency]
        except KeyError:
            raise ValueError(f"latency must be one of {sorted(_MODELS)}, got {latency!r}") from None
    if isinstance(latency, (int, float)):
        if latency < 0:
            raise ValueError(f"latency must be >= 0 s, got {latency}")
        fixed = float(latency)
        return lambda src, dst, seed, rng: fixed
    return latency
