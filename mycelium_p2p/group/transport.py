"""Encrypted, mutually authenticated TCP channels between nodes, with request/reply multiplexing.

Every connection opens with a Noise XX handshake bound to both nodes' Ed25519 identity keys the
way libp2p does it (``noise``): the key a peer proves becomes ``Channel.peer_key``, and a
dialler that expects a particular peer (the leader named in a group advert) refuses any other.
After it, frames (``frames.FrameSocket``: a msgpack header and raw segments, tensors never copied
into a larger message) travel inside AES-GCM Noise transport messages; a message that fails
authentication closes the channel. Frames over ``max_frame`` bytes are refused before their
body is read. Before the handshake ends nothing is read but small handshake messages, on the
event loop, within ``HANDSHAKE_TIMEOUT``; which connections get that far, per source IP and
in all, is ``admission.Admission``'s decision (``ConnectionLimits``).

Each connection becomes a ``channel.Channel`` (requests and replies multiplexed on it, a few
of a peer's requests answered at a time); this module makes them and keeps one per peer key.

``insecure_plaintext=True`` (both ends, for measurement only) keeps the authenticating handshake
but sends frames unencrypted; its own prologue makes a mismatch fail the handshake, so the two
settings never talk to each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from ..addresses import ip_literal
from ..aio import TaskOwner
from ..errors import ChannelError, OwnerClosed, RemoteError
from ..identity import Identity
from .admission import HANDSHAKE_TIMEOUT, Admission, ConnectionLimits
from .channel import DEFAULT_MAX_FRAME, MAX_IN_FLIGHT, Channel, Handler, Reply
from .frames import ByteStream, FrameSocket, Segments, SocketStream
from .noise import PLAINTEXT_PROLOGUE, PROLOGUE, NoiseCredentials, NoiseStream, handshake
from .streams import StreamListener, StreamNetwork, TcpStreams

__all__ = [
    "Channel",
    "ChannelError",
    "ChannelServer",
    "ConnectionLimits",
    "RemoteError",
    "Reply",
    "Segments",
]

log = logging.getLogger(__name__)


class ChannelServer:
    """Accepts channels on a port and keeps the latest authenticated channel per peer key.

    ``max_in_flight``: see ``Channel``; ``limits``: see ``admission``. ``insecure_plaintext``
    (both ends must choose it; logged as a warning) leaves frames unencrypted, to measure what
    encryption costs. Never use it between real nodes. ``streams``: where connections come
    from (``streams.TcpStreams`` unless given: a simulated network in tests).
    """

    def __init__(
        self,
        identity: Identity,
        handler: Handler,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_in_flight: int = MAX_IN_FLIGHT,
        insecure_plaintext: bool = False,
        limits: ConnectionLimits | None = None,
        streams: StreamNetwork | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.identity = identity
        self.handler = handler
        self.max_frame = max_frame
        self.max_in_flight = max_in_flight
        self.insecure_plaintext = insecure_plaintext
        self.admission = Admission(limits or ConnectionLimits())
        self._handshake_timeout = self.admission.limits.handshake_timeout
        if insecure_plaintext:
            log.warning(
                "channel server of %s runs INSECURE PLAINTEXT channels: authenticated but not "
                "encrypted, readable and alterable on the wire (for measurement only)",
                identity.public_key.hex()[:16],
            )
        self._credentials = NoiseCredentials.for_identity(identity)
        self.tasks = TaskOwner("channels")
        self.streams: StreamNetwork = streams or TcpStreams()
        self._listener: StreamListener | None = None
        self._channels: dict[bytes, Channel] = {}
        # bytes moved by channels that have closed (open ones count their own)
        self._gone_in: Counter[str] = Counter()
        self._gone_out: Counter[str] = Counter()
        self._dialing: dict[bytes, asyncio.Lock] = {}

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0 picks one); returns the bound address."""
        listener = await self.streams.listen(host, port)
        self._listener = listener
        self.tasks.spawn(self._accept_loop(listener), name="channel-accept")
        return listener.address

    async def _accept_loop(self, listener: StreamListener) -> None:
        while True:
            raw, ip = await listener.accept()
            if not self.admission.admit(ip):
                raw.close()  # over its source's limits: refused unread
                continue
            self.tasks.spawn(self._accept(raw, ip), name="channel-handshake")

    async def _secure(self, raw: SocketStream, expected: bytes | None) -> tuple[ByteStream, bytes]:
        """Run the handshake (as initiator when ``expected`` is given); the stream frames
        travel on, and the peer's proven key."""
        try:
            session = await handshake(
                raw,
                self._credentials,
                initiator=expected is not None,
                expected=expected,
                prologue=PLAINTEXT_PROLOGUE if self.insecure_plaintext else PROLOGUE,
            )
        except (ChannelError, OSError):
            raise
        except Exception as exc:  # noiseprotocol's own errors on hostile input (a low-order key)
            raise ChannelError(f"handshake refused: {type(exc).__name__}: {exc}") from None
        stream = raw if self.insecure_plaintext else NoiseStream(raw, session)
        return stream, session.peer_key

    async def _accept(self, raw: SocketStream, ip: str) -> None:
        """Authenticate an admitted connection and adopt its channel, within the limits."""
        admission = self.admission
        try:
            stream, peer = await asyncio.wait_for(self._secure(raw, None), self._handshake_timeout)
        except (ChannelError, asyncio.TimeoutError, OSError) as exc:
            admission.failed(ip)
            log.debug("handshake from %s failed: %s", ip, str(exc) or "timed out")
            raw.close()
            return
        except BaseException:  # cancelled: this server is closing
            admission.failed(ip)
            raw.close()
            raise
        admission.proven(ip)
        if not admission.open_channel(ip):
            log.debug("refused a channel from %s: it holds its limit of channels", ip)
            stream.close()
            return
        try:
            self._adopt(self._channel(stream, peer, ip))
        except OwnerClosed:  # this server is shutting down
            admission.close_channel(ip)
            stream.close()

    def _channel(self, stream: ByteStream, peer: bytes, ip: str | None = None) -> Channel:
        """A channel on ``stream``; one accepted from ``ip`` counts against its limit."""

        def closed(channel: Channel) -> None:
            _merge(self._gone_in, channel.bytes_in)
            _merge(self._gone_out, channel.bytes_out)
            self._forget(channel)
            if ip is not None:
                self.admission.close_channel(ip)

        return Channel(
            FrameSocket(stream, peer.hex()[:16]),
            peer,
            self.handler,
            max_frame=self.max_frame,
            tasks=self.tasks,
            on_close=closed,
            max_in_flight=self.max_in_flight,
        )

    def _adopt(self, channel: Channel) -> None:
        """Keep ``channel`` (authenticated as its ``peer_key``) in place of an older one."""
        old = self._channels.get(channel.peer_key)
        self._channels[channel.peer_key] = channel
        if old is not None and old is not channel and not old.closed:
            self.tasks.spawn(old.close())

    def _forget(self, channel: Channel) -> None:
        if self._channels.get(channel.peer_key) is channel:
            del self._channels[channel.peer_key]

    def traffic(self) -> dict[str, Any]:
        """Open channels, and the bytes of frames read and written since this server started,
        in all and by method (``Channel.bytes_in``/``bytes_out``; at most a few dozen names)."""
        live = [c for c in self._channels.values() if not c.closed]
        read, written = Counter(self._gone_in), Counter(self._gone_out)
        for channel in live:
            _merge(read, channel.bytes_in)
            _merge(written, channel.bytes_out)
        return {
            "channels_open": len(live),
            "bytes_in": sum(read.values()),
            "bytes_out": sum(written.values()),
            "in_by_method": dict(read),
            "out_by_method": dict(written),
        }

    def channel(self, peer_key: bytes) -> Channel | None:
        """The open channel to ``peer_key``, if any."""
        channel = self._channels.get(peer_key)
        return channel if channel is not None and not channel.closed else None

    async def connect(
        self, address: tuple[str, int], peer_key: bytes, *, timeout: float = HANDSHAKE_TIMEOUT
    ) -> Channel:
        """The open channel to ``peer_key``, dialling ``address`` if there is none. The
        handshake gets at most ``HANDSHAKE_TIMEOUT`` of ``timeout``: an unauthenticated peer
        does not hold a dialler longer than a listener."""
        if (channel := self.channel(peer_key)) is not None:
            return channel
        lock = self._dialing.setdefault(peer_key, asyncio.Lock())
        async with lock:
            if (channel := self.channel(peer_key)) is not None:
                return channel
            ip = ip_literal(address[0])  # peers send addresses: a name is never looked up
            if ip is None:
                raise ChannelError(f"cannot connect to {address[0]!r}: not an IP address")
            try:
                raw = await asyncio.wait_for(self.streams.dial(str(ip), address[1]), timeout)
            except (OSError, OverflowError, asyncio.TimeoutError) as exc:
                raise ChannelError(
                    f"cannot connect to {address[0]}:{address[1]}: {str(exc) or 'timed out'}"
                ) from None
            where = f"{address[0]}:{address[1]}"
            try:
                stream, _ = await asyncio.wait_for(
                    self._secure(raw, peer_key), min(timeout, self._handshake_timeout)
                )
            except (asyncio.TimeoutError, OSError) as exc:
                raw.close()
                raise ChannelError(f"handshake with {where} failed: {exc!r}") from None
            except ChannelError as exc:
                raw.close()
                raise ChannelError(f"handshake with {where} failed: {exc}") from None
            try:
                channel = self._channel(stream, peer_key)
            except OwnerClosed:  # this server is shutting down
                stream.close()
                raise ChannelError("the channel server is closed") from None
            self._adopt(channel)
            return channel

    async def request(
        self,
        address: tuple[str, int],
        peer_key: bytes,
        method: str,
        header: dict[str, Any] | None = None,
        segments: Segments = (),
        *,
        timeout: float,
        max_reply: int | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Connect if needed, then send one request to ``peer_key`` at ``address``."""
        channel = await self.connect(address, peer_key, timeout=timeout)
        return await channel.request(method, header, segments, timeout=timeout, max_reply=max_reply)

    async def close(self) -> None:
        """Stop accepting, close every channel, cancel every task."""
        if self._listener is not None:
            self._listener.close()
        for channel in list(self._channels.values()):
            await channel.close()
        self._channels.clear()
        await self.tasks.close()


def _merge(into: Counter[str], counts: Counter[str]) -> None:
    """Add ``counts`` into ``into`` under the same cap on names as a channel's: the channels
    of many peers, each with made-up method names, add no more keys than one."""
    for method, n in counts.items():
        Channel.count(into, method, n)
