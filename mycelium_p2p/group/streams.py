"""Where a node's channels come from: TCP (``TcpStreams``, the default), or anything else that
hands out connected sockets (``mycelium_p2p.testing.SimStreams``: a simulated wire).

The one seam between ``ChannelServer`` and the network. What crosses it is a ``SocketStream``
(a non-blocking socket and the address of its far end), so everything above it, the Noise
handshake and the encrypted frames included, is the same code whichever network is below:
a simulated network relays bytes between the two ends of socket pairs instead of a kernel
sending them as TCP segments.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from ..addresses import Address
from .frames import SocketStream

__all__ = ["StreamListener", "StreamNetwork", "TcpListener", "TcpStreams"]

log = logging.getLogger(__name__)


class StreamListener(Protocol):
    """A bound, listening endpoint."""

    address: Address

    async def accept(self) -> tuple[SocketStream, str]:
        """The next connection, and the IP address it came from."""
        ...

    def close(self) -> None: ...


class StreamNetwork(Protocol):
    """Listens and dials: all a ``ChannelServer`` asks of the network."""

    async def listen(self, host: str, port: int) -> StreamListener:
        """Listen on ``host:port`` (port 0: any free one)."""
        ...

    async def dial(self, host: str, port: int) -> SocketStream:
        """Connect to the IP literal ``host`` (never a name) at ``port``. It may wait as long
        as the network makes it (a dropped SYN): the caller bounds it with a timeout."""
        ...


class TcpListener:
    """A listening TCP socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        bound = sock.getsockname()
        self.address: Address = (bound[0], bound[1])

    async def accept(self) -> tuple[SocketStream, str]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(self.sock)
            except OSError as exc:  # out of descriptors, a connection reset before accept
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            try:
                return SocketStream(sock), peer[0]
            except OSError:  # reset between accept and setup
                sock.close()

    def close(self) -> None:
        self.sock.close()


class TcpStreams:
    """Real TCP sockets, through the running loop."""

    async def listen(self, host: str, port: int) -> TcpListener:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return TcpListener(sock)

    async def dial(self, host: str, port: int) -> SocketStream:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            return SocketStream(sock)
        except BaseException:
            sock.close()
            raise
