"""``Channel``: one authenticated connection, with request/reply multiplexing.

Frames (``frames.FrameSocket``) carry requests and replies, matched by the ids the requester
issued. A peer's requests are answered ``max_in_flight`` at a time per channel
(``MAX_IN_FLIGHT``): a request holds its slot until its reply is written, and while every slot
is taken the channel reads nothing more from that peer, so TCP flow control pushes back on it.
A peer that pipelines requests without reading the replies makes the node hold a few tasks and
replies, not one each. A reply over the cap its request set is not read: the channel closes.
A request that times out having heard nothing from the peer since it was sent closes the
channel, so the next one dials afresh (a cut link, TCP backing off its retransmissions).
``transport.ChannelServer`` makes channels and keeps one per peer key.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..aio import TaskOwner
from ..errors import ChannelError, RemoteError
from .frames import FrameSocket, Segments

_MAX_METHODS = 24  # method names counted apart; the rest are "other"

__all__ = ["DEFAULT_MAX_FRAME", "MAX_IN_FLIGHT", "Channel", "Handler", "Reply"]

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


def method_name(method: Any) -> str:
    """``method`` if it is a short, printable str, else "other": what a peer names is
    counted and logged under a name that cannot forge a log line or bloat a counter."""
    ok = isinstance(method, str) and len(method) <= 32 and method.isprintable()
    return method if ok else "other"


def peer_text(value: Any, limit: int) -> str:
    """A peer's text (an error's code or reason) as we may show it: printable characters
    only (others as "?"), at most ``limit`` of them."""
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    text = text[: limit + 1]
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


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
        self._methods: dict[int, str] = {}  # request id -> its method, to count its reply
        #: bytes of whole frames read and written, by the method they belong to (a request's,
        #: or the request a reply answers); at most ``_MAX_METHODS`` names, then "other"
        self.bytes_in: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
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
        self._methods[request_id] = method
        if max_reply is not None:
            self._reply_limits[request_id] = max_reply
        sent_at = loop.time()
        try:
            request = {"t": "q", "id": request_id, "m": method, "h": header or {}}
            await self._send(request, segments, method)
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
            self._methods.pop(request_id, None)
            limit = self._reply_limits.pop(request_id, None)
            if limit is not None and not future.done():
                self._expired_limits[request_id] = limit
                while len(self._expired_limits) > _EXPIRED_LIMITS:
                    self._expired_limits.popitem(last=False)
            if future.done() and not future.cancelled():
                future.exception()  # the channel closed while our send failed: already told
            future.cancel()
        if "err" in header_in:
            err = header_in["err"]
            if not (isinstance(err, list) and len(err) == 2):
                raise ChannelError(f"{method}: malformed error reply")
            # a peer's words: shown to users and logged, so printable and short
            raise RemoteError(peer_text(err[0], 32), peer_text(err[1], 300))
        return header_in.get("h", {}), segs

    async def _read_loop(self) -> None:
        why = "connection closed"  # what the requests still waiting are told
        try:
            while True:
                before = self._io.received
                header, segments = await self._io.read_frame(
                    self._max_frame, self._limit_of, self._what
                )
                self._last_heard = asyncio.get_running_loop().time()
                kind = header.get("t")
                self.count(self.bytes_in, self._method_of(header), self._io.received - before)
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
            why = str(exc)  # a reply over its cap, a frame of neither kind, ...
        finally:
            self._mark_closed()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelError(why))
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

    def _method_of(self, header: dict[str, Any]) -> Any:
        """The method a frame belongs to: a request's, or the one a reply answers (or None)."""
        if header.get("t") == "q":
            return header.get("m")
        request_id = header.get("id")
        return self._methods.get(request_id) if type(request_id) is int else None

    def _what(self, header: dict[str, Any]) -> str:
        """A big frame's name in progress lines: its method, if a short printable one."""
        return method_name(self._method_of(header))

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
                    log.exception("handler for %s failed", method_name(header["m"]))
                    reply = Reply.fail("internal", f"{type(exc).__name__}: {exc}")
            out: dict[str, Any] = {"t": "r", "id": header.get("id")}
            if reply.error is not None:
                out["err"] = list(reply.error)
            else:
                out["h"] = reply.header
            with contextlib.suppress(ConnectionError, OSError, ChannelError):
                method = method_name(header["m"])  # a peer's word: logged in progress lines
                await self._send(out, reply.segments if not reply.error else (), method)
        finally:
            self._slots.release()

    async def _send(self, header: dict[str, Any], segments: Segments, method: str) -> None:
        """Write one frame (counted under ``method``). A write that fails or is interrupted
        leaves the stream unusable (a frame cut short, a nonce spent): the channel closes."""
        async with self._send_lock:
            before = self._io.sent
            try:
                await self._io.write_frame(header, segments, method)
            except BaseException:
                self._shut()
                raise
            self.count(self.bytes_out, method, self._io.sent - before)

    @staticmethod
    def count(counter: Counter[str], method: Any, n: int) -> None:
        """Add ``n`` bytes under ``method``: a peer's made-up names add no keys past a few."""
        key = method_name(method)
        if key not in counter and len(counter) >= _MAX_METHODS:
            key = "other"
        counter[key] += n

    def _shut(self) -> None:
        self._mark_closed()
        reader = self._reader_task
        if reader.done() or reader is asyncio.current_task():
            self._io.close()
            return
        # the socket closes once the reader has let go of it: closed under a pending read,
        # asyncio later unregisters a dead (or by then reused) descriptor: "Bad file descriptor"
        reader.cancel()
        reader.add_done_callback(lambda _: self._io.close())

    async def close(self) -> None:
        self._shut()
