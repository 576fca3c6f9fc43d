"""Where a DHT node's datagrams go: UDP sockets (``UdpNetwork``, the default), or anything else
that hands out an asyncio datagram endpoint (``mycelium_p2p.testing.SimNetwork``: in memory).

The node needs only what asyncio's datagram transports give: ``sendto``, ``close``,
``is_closing`` and ``get_extra_info("sockname")``; the protocol gets ``datagram_received``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVar

from .rtt import Address

P = TypeVar("P", bound=asyncio.DatagramProtocol)


class DatagramNetwork(Protocol):
    """Makes datagram endpoints: the one seam between the DHT and the network."""

    async def create_endpoint(
        self, protocol_factory: Callable[[], P], local_addr: Address
    ) -> tuple[asyncio.DatagramTransport, P]:
        """Bind an endpoint at ``local_addr`` (port 0: any free one) for a new protocol."""
        ...


class UdpNetwork:
    """Real UDP sockets, through the running loop's ``create_datagram_endpoint``."""

    async def create_endpoint(
        self, protocol_factory: Callable[[], P], local_addr: Address
    ) -> tuple[asyncio.DatagramTransport, P]:
        loop = asyncio.get_running_loop()
        return await loop.create_datagram_endpoint(protocol_factory, local_addr=local_addr)
