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

A peer's requests are answered ``max_in_flight`` at a time per channel (``MAX_IN_FLIGHT``): a
request holds its slot until its reply is written, and while every slot is taken the channel
reads nothing more from that peer, so TCP flow control pushes back on it. A peer that pipelines
requests without reading the replies makes the node hold a few tasks and replies, not one each.

``insecure_plaintext=True`` (both ends, for measurement only) keeps the authenticating handshake
but sends frames unencrypted; its own prologue makes a mismatch fail the handshake, so the two
settings never talk to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..addresses import ip_literal
from ..aio import TaskOwner
from ..errors import ChannelError, OwnerClosed, RemoteError
from ..identity import Identity
from .admission import HANDSHAKE_TIMEOUT, Admission, ConnectionLimits
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
_EXPIRED_LIMITS = 64  # capped requests whose late replies keep their cap

DEFAULT_MAX_FRAME = 512 * 2**20
MAX_IN_FLIGHT = 8  # requests per channel being answered (or their replies written) at once

Handler = Callable[["Channel", str, dict[str, Any], list[bytes]], Awaitable["Reply"]]


@dataclass
class Reply:
    """What a handler answers: a header and optional raw segments, or an error."""

    header: dict[str, Any] = field(default_factory=dict)
    segments: Segments = ()
    error: tuple[str, str] | None = None

    @classmethod
    def fail(cls, code: str, reason: str) -> Reply:
        return cls(error=(code, reason))


class Channel:
    """One authenticated connection. ``request`` sends and awaits a reply; incoming requests
    go to the handler, ``max_in_flight`` at a time (the rest wait unread, in the peer's socket).
    Either side may send requests. ``on_close`` runs once, when it closes."""

    def __init__(
        self,
        io: FrameSocket,
        peer_key: bytes,
        handler: Handler | None,
        *,
        max_frame: int,
        tasks: TaskOwner,
        on_close: Callable[[Channel], None] | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.peer_key = peer_key
        self.peer_address = io.peername
        self._io = io
        self._handler = handler
        self._max_frame = max_frame
        self._tasks = tasks
        self._on_close = on_close
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], list[bytes]]]] = {}
        self._reply_limits: dict[int, int] = {}  # request id -> most its reply may hold
        # the limits of capped requests that timed out: a late reply keeps its cap
        self._expired_limits: OrderedDict[int, int] = OrderedDict()
        self._issued = 0  # the highest request id sent
        self._last_heard = asyncio.get_running_loop().time()  # when a frame last arrived
        self._send_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_in_flight)  # requests of the peer's being answered
        self._closed = asyncio.Event()
        self._reader_task = tasks.spawn(self._read_loop(), name="channel-reader")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def request(
        self,
        method: str,
        header: dict[str, Any] | None = None,
        segments: Segments = (),
        *,
        timeout: float,
        max_reply: int | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send a request and wait (at most ``timeout`` s) for its reply. A reply whose
        segments exceed ``max_reply`` bytes is not read: the channel closes."""
        if self.closed:
            raise ChannelError("channel is closed")
        request_id = self._issued = next(self._ids)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending[request_id] = future
        if max_reply is not None:
            self._reply_limits[request_id] = max_reply
        sent_at = loop.time()
        try:
            await self._send({"t": "q", "id": request_id, "m": method, "h": header or {}}, segments)
            header_in, segs = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            if self._last_heard < sent_at:
                # nothing at all came back while we waited: the link may be cut, with TCP
                # backing its retransmissions off; the next request dials afresh
                log.info("closing silent channel to %s after %s", self._peer_name(), method)
                self._shut()
            raise ChannelError(f"{method}: no reply within {timeout:g} s") from None
        except (ConnectionError, OSError, ChannelError) as exc:
            raise ChannelError(f"{method}: connection lost ({exc})") from None
        finally:
            self._pending.pop(request_id, None)
            limit = self._reply_limits.pop(request_id, None)
            if limit is not None and not future.done():
                self._expired_limits[request_id] = limit
                while len(self._expired_limits) > _EXPIRED_LIMITS:
                    self._expired_limits.popitem(last=False)
        if "err" in header_in:
            code, reason = header_in["err"]
            raise RemoteError(str(code), str(reason))
        return header_in.get("h", {}), segs

    async def _read_loop(self) -> None:
        try:
            while True:
                header, segments = await self._io.read_frame(self._max_frame, self._limit_of)
                self._last_heard = asyncio.get_running_loop().time()
                kind = header.get("t")
                if kind == "r":
                    future = self._pending.get(header.get("id"))  # type: ignore[arg-type]
                    if future is not None and not future.done():
                        future.set_result((header, segments))
                elif kind == "q" and isinstance(header.get("m"), str):
                    # backpressure: with every slot taken, read nothing more from this peer
                    # (replies to our own requests wait too; a request's timeout ends that)
                    await self._slots.acquire()
                    try:
                        self._tasks.spawn(self._answer(header, segments), name="channel-request")
                    except BaseException:
                        self._slots.release()
                        raise
                else:
                    raise ChannelError("frame is neither request nor reply")
        except (ConnectionError, OSError) as exc:
            log.debug("channel to %s closed: %s", self._peer_name(), exc)
        except ChannelError as exc:
            log.warning("closing channel to %s: %s", self._peer_name(), exc)
        finally:
            self._mark_closed()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelError("connection closed"))
            self._io.close()

    def _limit_of(self, header: dict[str, Any]) -> int:
        """The most a frame's segments may hold: a reply to a request that set a limit
        (``max_reply``, kept a while after it timed out), else ``max_frame``. A reply to no
        request we sent is refused before its segments are read."""
        if header.get("t") != "r":
            return self._max_frame
        request_id = header.get("id")
        if type(request_id) is not int or not 0 < request_id <= self._issued:
            # 1.0 would find request 1 in a dict: only the ints we issued answer requests
            raise ChannelError(f"a reply to no request of ours ({request_id!r})")
        limit = self._reply_limits.get(request_id, self._expired_limits.get(request_id))
        return self._max_frame if limit is None else limit

    def _peer_name(self) -> str:
        return f"{self.peer_key.hex()[:16]} at {self.peer_address[0]}:{self.peer_address[1]}"

    def _mark_closed(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            if self._on_close is not None:
                self._on_close(self)

    async def _answer(self, header: dict[str, Any], segments: list[bytes]) -> None:
        """Handle one request and write its reply, holding its in-flight slot until then (a
        peer that never reads cannot make the node queue more than a slot's worth of replies)."""
        try:
            payload = header.get("h")
            if self._handler is None or not isinstance(payload, dict):
                reply = Reply.fail("bad-request", "this end takes no requests")
            else:
                try:
                    reply = await self._handler(self, header["m"], payload, segments)
                except Exception as exc:  # a handler bug must not kill the connection
                    log.exception("handler for %s failed", header["m"])
                    reply = Reply.fail("internal", f"{type(exc).__name__}: {exc}")
            out: dict[str, Any] = {"t": "r", "id": header.get("id")}
            if reply.error is not None:
                out["err"] = list(reply.error)
            else:
                out["h"] = reply.header
            with contextlib.suppress(ConnectionError, OSError, ChannelError):
                await self._send(out, reply.segments if not reply.error else ())
        finally:
            self._slots.release()

    async def _send(self, header: dict[str, Any], segments: Segments) -> None:
        """Write one frame. A write that fails or is interrupted leaves the stream unusable
        (a frame cut short, a nonce spent): the channel closes."""
        async with self._send_lock:
            try:
                await self._io.write_frame(header, segments)
            except BaseException:
                self._shut()
                raise

    def _shut(self) -> None:
        self._mark_closed()
        self._reader_task.cancel()
        self._io.close()

    async def close(self) -> None:
        self._shut()


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
            self._forget(channel)
            if ip is not None:
                self.admission.close_channel(ip)

        return Channel(
            FrameSocket(stream),
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
