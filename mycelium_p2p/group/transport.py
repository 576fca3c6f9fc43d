"""Authenticated TCP channels between group members, with request/reply multiplexing.

Wire format of one frame::

    u32 header length | msgpack header | segment 0 | segment 1 | ...

The header lists the segment lengths (``"seg"``), so tensors travel as raw buffers that are
written without being copied into a larger message. Frames over ``max_frame`` bytes are refused
before their body is read.

Both ends prove their Ed25519 identity when a connection opens: each sends its public key and a
fresh nonce, then signs ``CHANNEL_DOMAIN || peer nonce || own nonce || own key || peer key``.
A dialler that expects a particular peer (the leader named in a group advert) refuses any other.
The channel is authenticated, not encrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import select
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..aio import OwnerClosed, TaskOwner
from ..errors import MyceliumError
from ..identity import PUBLIC_KEY_SIZE, Identity, verify_signature

log = logging.getLogger(__name__)

CHANNEL_DOMAIN = b"mycelium-p2p/channel/v1\x00"
DEFAULT_MAX_FRAME = 512 * 2**20
MAX_HEADER = 1 * 2**20
HANDSHAKE_TIMEOUT = 5.0
_U32 = struct.Struct("!I")
_THREAD_THRESHOLD = 1 << 20  # segments this large move in a worker thread
_IO_TIMEOUT = 30.0  # a peer silent this long in the middle of a frame is gone
_READ_CHUNK = 256 * 1024  # the read buffer: many frames, or the start of a big one
_GATHER = hasattr(socket.socket, "sendmsg")  # not on Windows: one send per part there
_IOV_MAX = 512  # buffers per sendmsg, well under any system's limit

Segments = Sequence[bytes | memoryview]
Handler = Callable[["Channel", str, dict[str, Any], list[bytes]], Awaitable["Reply"]]


class ChannelError(MyceliumError):
    """A channel could not be opened, broke, or the peer answered with an error."""


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


def _writable_bytes(n: int) -> tuple[bytes, memoryview]:
    """A new ``bytes`` of size ``n`` and a writable view of its buffer.

    Flower's ``Array`` only takes ``bytes``; receiving into a bytearray and converting would copy
    every tensor once more (as long as the transfer itself on loopback). Like CPython's own
    ``socket.recv``, we fill a fresh bytes object before anyone else can see or hash it.
    """
    buf = bytes(n)  # n >= 1 MiB here: always a new object, zero pages mapped lazily
    address = ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value
    return buf, memoryview((ctypes.c_char * n).from_address(address)).cast("B")


class _Socket:
    """Frame I/O straight on a non-blocking socket.

    Reads go through one buffer (a frame and its segments usually arrive in one ``recv``);
    writes gather a frame's header and segments into one ``sendmsg``, tensors sent from
    where they lie. Segments of ``_THREAD_THRESHOLD`` bytes or more move in a worker thread,
    off the event loop and the GIL.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self.peername: tuple[str, int] = sock.getpeername()[:2]
        self._buf = bytearray(_READ_CHUNK)
        self._view = memoryview(self._buf)
        self._start = 0  # buffered bytes are _buf[_start:_end]
        self._end = 0

    def _take(self, n: int) -> bytes:
        """Up to ``n`` buffered bytes."""
        n = min(n, self._end - self._start)
        data = bytes(self._view[self._start : self._start + n])
        self._start += n
        if self._start == self._end:
            self._start = self._end = 0
        return data

    async def recv_exactly(self, n: int) -> bytes:
        if n >= _THREAD_THRESHOLD:  # big tensors: a worker thread, off the loop and the GIL
            return await asyncio.to_thread(self._recv_blocking, n, self._take(n))
        if n > _READ_CHUNK:
            head = self._take(n)
            buf = bytearray(n)
            buf[: len(head)] = head
            view, got = memoryview(buf), len(head)
            while got < n:
                count = await self._loop.sock_recv_into(self.sock, view[got:])
                if count == 0:
                    raise ConnectionError("connection closed by peer")
                got += count
            return bytes(buf)
        if self._end - self._start < n:
            if len(self._buf) - self._start < n:  # move what is buffered to the front
                size = self._end - self._start
                self._buf[:size] = self._buf[self._start : self._end]
                self._start, self._end = 0, size
            while self._end - self._start < n:
                count = await self._loop.sock_recv_into(self.sock, self._view[self._end :])
                if count == 0:
                    raise ConnectionError("connection closed by peer")
                self._end += count
        return self._take(n)

    def _recv_blocking(self, n: int, head: bytes = b"") -> bytes:
        buf, view = _writable_bytes(n)
        view[: len(head)] = head
        got = len(head)
        while got < n:
            try:
                count = self.sock.recv_into(view[got:])
            except BlockingIOError:
                if not select.select([self.sock], [], [], _IO_TIMEOUT)[0]:
                    raise ConnectionError("peer stopped sending mid-frame") from None
                continue
            if count == 0:
                raise ConnectionError("connection closed by peer")
            got += count
        return buf

    def _send_blocking(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            try:
                sent += self.sock.send(view[sent:])
            except BlockingIOError:
                if not select.select([], [self.sock], [], _IO_TIMEOUT)[1]:
                    raise ConnectionError("peer stopped reading mid-frame") from None

    async def _send_parts(self, parts: list[memoryview]) -> None:
        """Send ``parts`` in order, as many at a time as one ``sendmsg`` takes."""
        while parts:
            sent = 0
            if _GATHER:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    sent = self.sock.sendmsg(parts[:_IOV_MAX])
            while parts and sent >= parts[0].nbytes:
                sent -= parts.pop(0).nbytes
            if parts:  # the socket is full: wait for room, as sock_sendall does
                first = parts.pop(0)
                await self._loop.sock_sendall(self.sock, first[sent:])

    async def write_frame(self, header: dict[str, Any], segments: Segments) -> None:
        views = [memoryview(s).cast("B") for s in segments]
        header = {**header, "seg": [v.nbytes for v in views]}
        head = msgpack.packb(header, use_bin_type=True)
        parts = [memoryview(_U32.pack(len(head)) + head)]
        for view in views:
            if view.nbytes >= _THREAD_THRESHOLD:
                await self._send_parts(parts)
                parts = []
                await asyncio.to_thread(self._send_blocking, view)
            elif view.nbytes:
                parts.append(view)
        await self._send_parts(parts)

    async def read_frame(self, max_frame: int) -> tuple[dict[str, Any], list[bytes]]:
        (size,) = _U32.unpack(await self.recv_exactly(4))
        if size > MAX_HEADER:
            raise ChannelError(f"frame header of {size} bytes is over the limit")
        try:
            header = msgpack.unpackb(await self.recv_exactly(size), raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise ChannelError(f"unreadable frame header: {type(exc).__name__}") from None
        if not isinstance(header, dict):
            raise ChannelError("frame header is not a map")
        lengths = header.pop("seg", [])
        if (
            not isinstance(lengths, list)
            or not all(isinstance(n, int) and n >= 0 for n in lengths)
            or sum(lengths) > max_frame
        ):
            raise ChannelError(f"frame segments {lengths!r} refused (limit {max_frame} bytes)")
        return header, [await self.recv_exactly(n) for n in lengths]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Channel:
    """One authenticated connection. ``request`` sends and awaits a reply; incoming requests
    go to the handler. Either side may send requests."""

    def __init__(
        self,
        io: _Socket,
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


async def _handshake(io: _Socket, identity: Identity, expected: bytes | None) -> bytes:
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
            io = _Socket(sock)
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
            io = _Socket(sock)
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
