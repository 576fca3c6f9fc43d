"""``SimStreams``: group channels on a ``SimNetwork``'s made-up hosts, with its latency and
partitions.

A ``StreamNetwork`` (``group/streams.py``): give each node its own host's view,
``ChannelServer(..., streams=streams.host())``, and it listens and dials there instead of on
TCP. Each connection is two socket pairs with a relay between them; the node's ends are real
non-blocking sockets, so everything from the Noise handshake up runs the node's own code. The
relay delivers each chunk after the network's one-way latency, in order, and holds it while
the two hosts are on different sides of a partition or either is ``kill``ed (as TCP
retransmits); a chunk held ``link_timeout`` s resets the connection (as Linux's
``TCP_USER_TIMEOUT`` does, ``frames.LINK_TIMEOUT``). A dial waits out a partition as a
retried SYN does (the caller's timeout bounds it), and is refused one round trip later where
nothing listens. There is no flow control: a slow reader never holds a sender back.

Under ``VirtualClockLoop`` simulated seconds cost no wall time: an election's timeouts, a
5-s heartbeat, a 30-s link timeout pass at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ..addresses import Address
from ..aio import TaskOwner
from ..group.frames import LINK_TIMEOUT, SocketStream
from .network import _EPHEMERAL, _WILDCARDS, SimNetwork

__all__ = ["SimHostStreams", "SimListener", "SimStreams", "StreamStats"]

_CHUNK = 64 * 1024
_RETRY = 0.2  # how often held bytes (and SYNs) are tried again across a partition


@dataclass
class StreamStats:
    """What the simulated wire carried."""

    connected: int = 0
    refused: int = 0
    resets: int = 0  # connections dropped: bytes held ``link_timeout`` s, or a closed reader
    bytes_relayed: int = 0


class SimListener:
    """A listening address on a simulated host."""

    def __init__(self, streams: SimStreams, address: Address) -> None:
        self.address = address
        self._streams = streams
        self._pending: asyncio.Queue[tuple[SocketStream, str]] = asyncio.Queue()
        self.closed = False

    async def accept(self) -> tuple[SocketStream, str]:
        return await self._pending.get()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._streams._unbind(self)
        while not self._pending.empty():
            self._pending.get_nowait()[0].close()


class SimHostStreams:
    """One host's view of a ``SimStreams``: where its node listens and dials from."""

    def __init__(self, streams: SimStreams, host: str) -> None:
        self.streams = streams
        self.host = host

    async def listen(self, host: str, port: int) -> SimListener:
        if host not in _WILDCARDS and host != self.host:
            raise OSError(errno.EADDRNOTAVAIL, f"{host} is not this host ({self.host})")
        return self.streams._bind(self.host, port)

    async def dial(self, host: str, port: int) -> SocketStream:
        return await self.streams._dial(self.host, (host, port))


class SimStreams:
    """Connections between a ``SimNetwork``'s hosts. See the module docstring."""

    def __init__(self, network: SimNetwork, *, link_timeout: float = LINK_TIMEOUT) -> None:
        self.network = network
        self.link_timeout = link_timeout
        self.stats = StreamStats()
        self.tasks = TaskOwner("sim-streams")
        self._listeners: dict[Address, SimListener] = {}
        self._ports: dict[str, int] = {}
        self._dead: set[str] = set()
        self._sockets: set[socket.socket] = set()

    def host(self, host: str | None = None) -> SimHostStreams:
        """The view of ``host`` (a new host of the network's when not given)."""
        return SimHostStreams(self, host or self.network.new_host())

    # -- faults --------------------------------------------------------------------------------

    def kill(self, host: str) -> None:
        """``host`` goes silent (a crash, a pulled cable): nothing it sends arrives, nothing
        sent to it is taken; its peers' connections reset after ``link_timeout``."""
        self._dead.add(host)

    def passable(self, src: str, dst: str) -> bool:
        """Do bytes from ``src`` reach ``dst`` now?"""
        live = src not in self._dead and dst not in self._dead
        return live and self.network.reachable(src, dst)

    async def close(self) -> None:
        """Stop every relay and close every socket of the wire."""
        for listener in list(self._listeners.values()):
            listener.close()
        await self.tasks.close()
        for sock in list(self._sockets):
            sock.close()
        self._sockets.clear()

    # -- binding and dialling ------------------------------------------------------------------

    def _bind(self, host: str, port: int) -> SimListener:
        address = (host, int(port) or self._next_port(host))
        if address in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{host}:{port} is in use")
        listener = SimListener(self, address)
        self._listeners[address] = listener
        return listener

    def _next_port(self, host: str) -> int:
        """The next free ephemeral port of ``host`` (listeners and dialled ends alike)."""
        port = self._ports.get(host, _EPHEMERAL)
        self._ports[host] = port + 1
        return port

    def _unbind(self, listener: SimListener) -> None:
        if self._listeners.get(listener.address) is listener:
            del self._listeners[listener.address]

    def _delay(self, src: str, dst: str) -> float:
        return self.network.latency(src, dst, self.network.seed, self.network.rng)

    async def _dial(self, src: str, dst: Address) -> SocketStream:
        while not self.passable(src, dst[0]):  # SYNs dropped: the caller's timeout ends it
            await asyncio.sleep(_RETRY)
        await asyncio.sleep(self._delay(src, dst[0]))
        listener = self._listeners.get((dst[0], int(dst[1])))
        if listener is None:
            self.stats.refused += 1
            await asyncio.sleep(self._delay(dst[0], src))
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"nothing listens on {dst[0]}:{dst[1]}"
            )
        port = self._next_port(src)
        mine, theirs = self._wire((src, port), listener.address)
        listener._pending.put_nowait((SocketStream(theirs, peername=(src, port)), src))
        self.stats.connected += 1
        try:
            await asyncio.sleep(self._delay(dst[0], src))
            return SocketStream(mine, peername=listener.address)
        except BaseException:
            mine.close()
            raise

    def _wire(self, a: Address, b: Address) -> tuple[socket.socket, socket.socket]:
        """A connection between ``a`` and ``b``: the ends their nodes hold."""
        a_node, a_relay = socket.socketpair()
        b_node, b_relay = socket.socketpair()
        for sock in (a_node, a_relay, b_node, b_relay):
            sock.setblocking(False)
        self._sockets.update((a_relay, b_relay))
        ends = (a_relay, b_relay)
        running = [4]  # the two directions' readers and writers

        def reset() -> None:
            """Both nodes see their connection end (the readers see it too, and stop)."""
            self.stats.resets += 1
            for sock in ends:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        def ended() -> None:
            running[0] -= 1
            if running[0] == 0:
                for sock in ends:
                    self._sockets.discard(sock)
                    sock.close()

        self._relay(a_relay, b_relay, a[0], b[0], reset, ended)
        self._relay(b_relay, a_relay, b[0], a[0], reset, ended)
        return a_node, b_node

    def _relay(
        self,
        src: socket.socket,
        dst: socket.socket,
        src_host: str,
        dst_host: str,
        reset: Callable[[], None],
        ended: Callable[[], None],
    ) -> None:
        """Carry what ``src``'s node writes to ``dst``'s node, late and in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def read() -> None:
            try:
                while True:
                    try:
                        data = await loop.sock_recv(src, _CHUNK)
                    except OSError:
                        data = b""
                    queue.put_nowait((loop.time() + self._delay(src_host, dst_host), data))
                    if not data:  # the node closed its end: the FIN follows the data
                        return
            finally:
                ended()

        async def write() -> None:
            try:
                while True:
                    due, data = await queue.get()
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    held = loop.time()
                    while not self.passable(src_host, dst_host):
                        if loop.time() - held >= self.link_timeout:
                            reset()
                            return
                        await asyncio.sleep(_RETRY)
                    if not data:
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        return
                    try:
                        await loop.sock_sendall(dst, data)
                    except OSError:  # the far node closed its end: a reset, as TCP's RST
                        reset()
                        return
                    self.stats.bytes_relayed += len(data)
            finally:
                ended()

        self.tasks.spawn(read(), name="sim-stream-read")
        self.tasks.spawn(write(), name="sim-stream-write")
