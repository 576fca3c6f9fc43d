"""Authenticated TCP channels between group members, with request/reply multiplexing.

Frames (``frames.FrameSocket`` on a ``frames.SocketStream``) carry a msgpack header and raw
segments: tensors travel without being copied into a larger message. Frames over ``max_frame``
bytes are refused before their body is read.

Both ends prove their Ed25519 identity when a connection opens: each sends its public key and a
fresh nonce, then signs ``CHANNEL_DOMAIN || peer nonce || own nonce || own key || peer key``.
A dialler that expects a particular peer (the leader named in a group advert) refuses any other.
The channel is authenticated, not encrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..aio import OwnerClosed, TaskOwner
from ..identity import PUBLIC_KEY_SIZE, Identity, verify_signature
from .frames import ChannelError, FrameSocket, Segments, SocketStream

__all__ = [
    "CHANNEL_DOMAIN",
    "Channel",
    "ChannelError",
    "ChannelServer",
    "RemoteError",
    "Reply",
    "Segments",
]

log = logging.getLogger(__name__)

CHANNEL_DOMAIN = b"mycelium-p2p/channel/v1\x00"
DEFAULT_MAX_FRAME = 512 * 2**20
HANDSHAKE_TIMEOUT = 5.0

Handler = Callable[["Channel", str, dict[str, Any], list[bytes]], Awaitable["Reply"]]


class RemoteError(ChannelError):
    """The peer handled the request and answered with an error (``code``, ``reason``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


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
    go to the handler. Either side may send requests."""

    def __init__(
        self,
        io: FrameSocket,
        peer_key: bytes,
        handler: Handler | None,
        *,
        max_frame: int,
        tasks: TaskOwner,
    ) -> None:
        self.peer_key = peer_key
        self.peer_address = io.peername
        self._io = io
        self._handler = handler
        self._max_frame = max_frame
        self._tasks = tasks
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], list[bytes]]]] = {}
        self._send_lock = asyncio.Lock()
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
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send a request and wait (at most ``timeout`` s) for its reply."""
        if self.closed:
            raise ChannelError("channel is closed")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with self._send_lock:
                await self._io.write_frame(
                    {"t": "q", "id": request_id, "m": method, "h": header or {}}, segments
                )
            header_in, segs = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ChannelError(f"{method}: no reply within {timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise ChannelError(f"{method}: connection lost ({exc})") from None
        finally:
            self._pending.pop(request_id, None)
        if "err" in header_in:
            code, reason = header_in["err"]
            raise RemoteError(str(code), str(reason))
        return header_in.get("h", {}), segs

    async def _read_loop(self) -> None:
        try:
            while True:
                header, segments = await self._io.read_frame(self._max_frame)
                kind = header.get("t")
                if kind == "r":
                    future = self._pending.get(header.get("id"))  # type: ignore[arg-type]
                    if future is not None and not future.done():
                        future.set_result((header, segments))
                elif kind == "q" and isinstance(header.get("m"), str):
                    self._tasks.spawn(self._answer(header, segments), name="channel-request")
                else:
                    raise ChannelError("frame is neither request nor reply")
        except (ConnectionError, OSError):
            pass
        except ChannelError as exc:
            log.warning("closing channel to %s: %s", self.peer_address, exc)
        finally:
            self._closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelError("connection closed"))
            self._io.close()

    async def _answer(self, header: dict[str, Any], segments: list[bytes]) -> None:
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
        with contextlib.suppress(ConnectionError, OSError):
            async with self._send_lock:
                await self._io.write_frame(out, reply.segments if not reply.error else ())

    async def close(self) -> None:
        self._closed.set()
        self._reader_task.cancel()
        self._io.close()


async def _handshake(io: FrameSocket, identity: Identity, expected: bytes | None) -> bytes:
    """Mutual signed-challenge handshake; returns the peer's verified public key."""
    nonce = os.urandom(32)
    await io.write_frame({"hello": 1, "key": identity.public_key, "nonce": nonce}, ())
    hello, _ = await io.read_frame(0)
    peer_key, peer_nonce = hello.get("key"), hello.get("nonce")
    if not (
        isinstance(peer_key, bytes)
        and len(peer_key) == PUBLIC_KEY_SIZE
        and isinstance(peer_nonce, bytes)
        and len(peer_nonce) == 32
    ):
        raise ChannelError("malformed handshake")
    if expected is not None and peer_key != expected:
        raise ChannelError(f"peer is {peer_key.hex()[:16]}…, expected {expected.hex()[:16]}…")
    proof = identity.sign(CHANNEL_DOMAIN + peer_nonce + nonce + identity.public_key + peer_key)
    await io.write_frame({"sig": proof}, ())
    answer, _ = await io.read_frame(0)
    signed = CHANNEL_DOMAIN + nonce + peer_nonce + peer_key + identity.public_key
    sig = answer.get("sig")
    if not isinstance(sig, bytes) or not verify_signature(peer_key, sig, signed):
        raise ChannelError("peer failed to prove its key")
    return peer_key


class ChannelServer:
    """Accepts authenticated channels on a TCP port and keeps one channel per peer key."""

    def __init__(
        self, identity: Identity, handler: Handler, *, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        self.identity = identity
        self.handler = handler
        self.max_frame = max_frame
        self.tasks = TaskOwner("channels")
        self._listener: socket.socket | None = None
        self._channels: dict[bytes, Channel] = {}
        self._dialing: dict[bytes, asyncio.Lock] = {}

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0 picks one); returns the bound address."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(addr)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self.tasks.spawn(self._accept_loop(listener), name="channel-accept")
        bound = listener.getsockname()
        return bound[0], bound[1]

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            self.tasks.spawn(self._accept(sock), name="channel-handshake")

    async def _accept(self, sock: socket.socket) -> None:
        try:
            io = FrameSocket(SocketStream(sock))
        except OSError:
            sock.close()
            return
        try:
            peer = await asyncio.wait_for(_handshake(io, self.identity, None), HANDSHAKE_TIMEOUT)
        except (ChannelError, asyncio.TimeoutError, OSError) as exc:
            log.debug("handshake from %s failed: %s", io.peername, exc)
            io.close()
            return
        self._adopt(Channel(io, peer, self.handler, max_frame=self.max_frame, tasks=self.tasks))

    def _adopt(self, channel: Channel) -> None:
        old = self._channels.get(channel.peer_key)
        self._channels[channel.peer_key] = channel
        if old is not None and old is not channel and not old.closed:
            self.tasks.spawn(old.close())

    def channel(self, peer_key: bytes) -> Channel | None:
        """The open channel to ``peer_key``, if any."""
        channel = self._channels.get(peer_key)
        return channel if channel is not None and not channel.closed else None

    async def connect(
        self, address: tuple[str, int], peer_key: bytes, *, timeout: float = HANDSHAKE_TIMEOUT
    ) -> Channel:
        """The open channel to ``peer_key``, dialling ``address`` if there is none."""
        if (channel := self.channel(peer_key)) is not None:
            return channel
        lock = self._dialing.setdefault(peer_key, asyncio.Lock())
        async with lock:
            if (channel := self.channel(peer_key)) is not None:
                return channel
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)
                family, kind, proto, _, addr = infos[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                try:
                    await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
                except BaseException:
                    sock.close()
                    raise
            except (OSError, asyncio.TimeoutError) as exc:
                raise ChannelError(
                    f"cannot connect to {address[0]}:{address[1]}: {str(exc) or 'timed out'}"
                ) from None
            io = FrameSocket(SocketStream(sock))
            try:
                await asyncio.wait_for(_handshake(io, self.identity, peer_key), timeout)
            except (asyncio.TimeoutError, OSError) as exc:
                io.close()
                raise ChannelError(
                    f"handshake with {address[0]}:{address[1]} failed: {exc!r}"
                ) from None
            except ChannelError:
                io.close()
                raise
            try:
                channel = Channel(
                    io, peer_key, self.handler, max_frame=self.max_frame, tasks=self.tasks
                )
            except OwnerClosed:  # this server is shutting down
                io.close()
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
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Connect if needed, then send one request to ``peer_key`` at ``address``."""
        channel = await self.connect(address, peer_key, timeout=timeout)
        return await channel.request(method, header, segments, timeout=timeout)

    async def close(self) -> None:
        """Stop accepting, close every channel, cancel every task."""
        if self._listener is not None:
            self._listener.close()
        for channel in list(self._channels.values()):
            await channel.close()
        self._channels.clear()
        await self.tasks.close()
