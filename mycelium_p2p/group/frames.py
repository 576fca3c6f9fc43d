"""Frames on a byte stream: ``u32 header length | msgpack header | segment 0 | segment 1 | ...``

The header lists the segment lengths (``"seg"``), so tensors travel as raw buffers, written from
where they lie and read into buffers of their own. A frame travels on a ``ByteStream``: the
plain socket (``SocketStream``, here) or a Noise session on top of one (``noise.NoiseStream``).
``transport`` builds channels on this.

A header is read within ``headers``' limits (``decode_header``); a frame of
``progress.PROGRESS_BYTES`` or more logs its progress as it moves (``progress.Progress``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import select
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgpack

from ..errors import ChannelError
from ..errors import HeaderRefused as HeaderRefused  # where it was first defined
from .headers import MAX_HEADER, decode_header
from .progress import PROGRESS_BYTES, Progress

_U32 = struct.Struct("!I")
THREAD_THRESHOLD = 1 << 20  # segments this large move in a worker thread
IO_TIMEOUT = 30.0  # a peer silent this long in the middle of a frame is gone
# Sent data unacknowledged this long drops the connection (Linux's TCP_USER_TIMEOUT): a dead
# host or a cut link. On Linux this also counts data held back by a zero window, so a peer
# that stops reading (a stalled event loop, a big transfer) trips it too: it is no shorter
# than IO_TIMEOUT, which a silent peer mid-frame already gets. Channels that go silent on a
# request close sooner (``transport.Channel.request``).
LINK_TIMEOUT = IO_TIMEOUT
_READ_CHUNK = 64 * 1024  # the read buffer (per socket): many small frames, or a model of ~60 KB
_GATHER = hasattr(socket.socket, "sendmsg")  # not on Windows: one send per part there
_IOV_MAX = 512  # buffers per sendmsg, well under any system's limit

Segments = Sequence[bytes | memoryview]
# PyBytes_FromStringAndSize(NULL, n): a bytes object of n uninitialized bytes. A prototype of
# our own, so ctypes.pythonapi's shared function object is left as others expect it.
_new_bytes = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_char_p, ctypes.c_ssize_t)(
    ("PyBytes_FromStringAndSize", ctypes.pythonapi)
)


def writable_bytes(n: int) -> tuple[bytes, memoryview]:
    """A new ``bytes`` of size ``n`` and a writable view of its buffer.

    Flower's ``Array`` only takes ``bytes``; receiving into a bytearray and converting would copy
    every tensor once more (as long as the transfer itself on loopback). Like CPython's own
    ``socket.recv``, we fill a fresh, uninitialized bytes object before anyone else can see or
    hash it (``bytes(n)`` would zero it first: a memset as long as the model); a read that
    fails drops it unseen.
    """
    buf = _new_bytes(None, n)  # uninitialized (no memset): every byte is written before use
    address = ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value
    if address is None:  # a bytes object always has a buffer: cannot happen
        raise MemoryError("no buffer for a new bytes object")
    return buf, memoryview((ctypes.c_char * n).from_address(address)).cast("B")


def wait_readable(sock: socket.socket) -> None:
    """Block (in a worker thread) until ``sock`` has bytes, or fail after ``IO_TIMEOUT``."""
    if not select.select([sock], [], [], IO_TIMEOUT)[0]:
        raise ConnectionError("peer stopped sending mid-frame")


def send_blocking(
    sock: socket.socket,
    data: bytes | bytearray | memoryview,
    progress: Progress | None = None,
    before: int = 0,
) -> None:
    """Send all of ``data`` on a non-blocking socket, from a worker thread; ``progress`` is
    told ``before`` plus the bytes sent after each send."""
    view = memoryview(data).cast("B")
    sent = 0
    while sent < len(view):
        try:
            sent += sock.send(view[sent:])
            if progress is not None:
                progress.update(before + sent)
        except BlockingIOError:
            if not select.select([], [sock], [], IO_TIMEOUT)[1]:
                raise ConnectionError("peer stopped reading mid-frame") from None


def close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class ByteStream(Protocol):
    """What frames travel on: an ordered, reliable stream of bytes. A ``progress``, when
    given, may be told (``Progress.update``) how many of the call's bytes are through."""

    peername: tuple[str, int]

    async def send(self, parts: list[memoryview], progress: Progress | None = None) -> None: ...

    async def recv_exactly(self, n: int, progress: Progress | None = None) -> bytes: ...

    def close(self) -> None: ...


class SocketStream:
    """Bytes straight on a non-blocking socket.

    Reads go through one buffer (a frame and its segments usually arrive in one ``recv``);
    writes gather small parts into one ``sendmsg``, tensors sent from where they lie. Parts of
    ``THREAD_THRESHOLD`` bytes or more move in a worker thread, off the event loop and the GIL.
    """

    def __init__(self, sock: socket.socket, peername: tuple[str, int] | None = None) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
                timeout = int(LINK_TIMEOUT * 1000)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout)
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        # a socket pair of a simulated wire (``streams``) is told where its far end "is"
        self.peername: tuple[str, int] = peername or tuple(sock.getpeername()[:2])
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

    def take_buffered(self) -> bytes:
        """Whatever was received but not read yet (a Noise session takes it over)."""
        return self._take(self._end - self._start)

    async def recv_exactly(self, n: int, progress: Progress | None = None) -> bytes:
        if n >= THREAD_THRESHOLD:  # big tensors: a worker thread, off the loop and the GIL
            return await asyncio.to_thread(self._recv_blocking, n, self._take(n), progress)
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

    def _recv_blocking(self, n: int, head: bytes = b"", progress: Progress | None = None) -> bytes:
        buf, view = writable_bytes(n)
        view[: len(head)] = head
        got = len(head)
        while got < n:
            try:
                count = self.sock.recv_into(view[got:])
            except BlockingIOError:
                wait_readable(self.sock)
                continue
            if count == 0:
                raise ConnectionError("connection closed by peer")
            got += count
            if progress is not None:
                progress.update(got)
        return buf

    async def _send_gathered(
        self, parts: list[memoryview], progress: Progress | None = None, done: int = 0
    ) -> int:
        """Send ``parts`` in order, as many at a time as one ``sendmsg`` takes; ``done``
        bytes went before them (``progress`` is told), and that plus theirs is returned."""
        while parts:
            sent = 0
            if _GATHER:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    sent = self.sock.sendmsg(parts[:_IOV_MAX])
            while parts and sent >= parts[0].nbytes:
                done += parts[0].nbytes
                sent -= parts.pop(0).nbytes
            if parts:  # the socket is full: wait for room, as sock_sendall does
                first = parts.pop(0)
                await self._loop.sock_sendall(self.sock, first[sent:])
                done += first.nbytes
            if progress is not None:
                progress.update(done)
        return done

    async def send(self, parts: list[memoryview], progress: Progress | None = None) -> None:
        small: list[memoryview] = []
        done = 0  # bytes of the parts before ``small``
        for view in parts:
            if view.nbytes >= THREAD_THRESHOLD:
                done = await self._send_gathered(small, progress, done)
                small = []
                await asyncio.to_thread(send_blocking, self.sock, view, progress, done)
                done += view.nbytes
            elif view.nbytes:
                small.append(view)
        await self._send_gathered(small, progress, done)

    def close(self) -> None:
        close_socket(self.sock)


class FrameSocket:
    """Frames on a ``ByteStream``. A write interrupted mid-frame closes the stream: what follows
    could not be read as frames any more. ``name``: the peer in progress lines (its address
    unless given)."""

    def __init__(self, stream: ByteStream, name: str | None = None) -> None:
        self.stream = stream
        self.peername = stream.peername
        self.name = name or f"{self.peername[0]}:{self.peername[1]}"
        self.sent = 0  # bytes of whole frames written (length, header, segments)
        self.received = 0  # ... and read

    async def write_frame(
        self, header: dict[str, Any], segments: Segments, what: str = "a frame"
    ) -> None:
        """Write one frame; ``what`` it carries names it in progress lines."""
        views = [memoryview(s).cast("B") for s in segments]
        header = {**header, "seg": [v.nbytes for v in views]}
        head = msgpack.packb(header, use_bin_type=True)
        size = 4 + len(head) + sum(v.nbytes for v in views)
        progress = None if size < PROGRESS_BYTES else Progress(False, self.name, what, size)
        try:
            await self.stream.send([memoryview(_U32.pack(len(head)) + head), *views], progress)
        except BaseException:
            if progress is not None:
                progress.fail()
            self.stream.close()
            raise
        self.sent += size
        if progress is not None:
            progress.finish()

    async def read_frame(
        self,
        max_frame: int,
        limit: Callable[[dict[str, Any]], int] | None = None,
        what: Callable[[dict[str, Any]], str] | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """One frame; its segments at most ``max_frame`` bytes in all, or ``limit(header)``
        when that is given (a frame's header is read before its segments). ``what(header)``
        names a frame in progress lines."""
        (size,) = _U32.unpack(await self.stream.recv_exactly(4))
        try:
            header, segments = await self._read_body(size, max_frame, limit, what)
        except ConnectionError as exc:
            raise ChannelError(f"stream truncated mid-frame ({exc})") from None
        self.received += 4 + size + sum(len(s) for s in segments)
        return header, segments

    async def _read_body(
        self,
        size: int,
        max_frame: int,
        limit: Callable[[dict[str, Any]], int] | None,
        what: Callable[[dict[str, Any]], str] | None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        if size > MAX_HEADER:
            raise ChannelError(f"frame header of {size} bytes refused (limit {MAX_HEADER})")
        header = decode_header(await self.stream.recv_exactly(size))
        lengths = header.pop("seg", [])
        most = max_frame if limit is None else min(max_frame, limit(header))
        body = -1
        if isinstance(lengths, list) and all(isinstance(n, int) and n >= 0 for n in lengths):
            body = sum(lengths)
        if not 0 <= body <= most:
            raise ChannelError(f"frame segment lengths refused (limit {most} bytes in all)")
        total = 4 + size + body  # the claim is within max_frame: nothing is sized by it
        if total < PROGRESS_BYTES:
            return header, [await self.stream.recv_exactly(n) for n in lengths]
        progress = Progress(True, self.name, what(header) if what else "a frame", total)
        progress.base = 4 + size
        segments = []
        try:
            for n in lengths:
                segments.append(await self.stream.recv_exactly(n, progress))
                progress.base += n
                progress.update(0)
        except BaseException:
            progress.fail()
            raise
        progress.finish()
        return header, segments

    def close(self) -> None:
        self.stream.close()
