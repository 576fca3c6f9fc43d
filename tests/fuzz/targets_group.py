"""Fuzz targets a group peer reaches: invites, ``g.*`` messages, frames, Noise."""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import struct
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import strategies as st

from mycelium_p2p.fl.wire import WireError, decode_content
from mycelium_p2p.group import messages as m
from mycelium_p2p.group.frames import ChannelError, FrameSocket, SocketStream
from mycelium_p2p.group.headers import MAX_HEADER_DEPTH, decode_header
from mycelium_p2p.group.invite import INVITE_DOMAIN, INVITE_PREFIX, InviteError, verify_invite
from mycelium_p2p.group.noise import NoiseCredentials, NoiseStream, Session, handshake
from mycelium_p2p.group.progress import Progress
from mycelium_p2p.node.splitting import SplitRequest

from .corpus import NOW, corpus, frame_bytes
from .harness import Context, InvalidStored, Target
from .mutate import _deep, mutated_bytes, mutated_msgpack, mutated_tree, pack

MAX_FRAME = 1 << 16


# -- invites ---------------------------------------------------------------------------------------


@st.composite
def invite_texts(draw: st.DrawFn) -> str:
    """Invites edited as text, or with edited fields signed by the founder (a NaN expiry...)."""
    c = corpus()
    if draw(st.booleans()):
        edited = draw(mutated_bytes([c.invite.encode()], max_random=500))
        return edited.decode("latin-1")
    fields = [c.charter.group_id, c.member.public_key, NOW + 600.0]
    fields = draw(mutated_tree(fields)) if draw(st.booleans()) else fields
    try:
        signature = c.founder.sign(INVITE_DOMAIN + pack(fields))
        full = [*fields, c.founder.public_key, signature] if isinstance(fields, list) else fields
        raw = pack(full)
    except (ValueError, TypeError, OverflowError):
        return c.invite
    return INVITE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def check_invite(text: str, _ctx: Context) -> str:
    c = corpus()
    invite = verify_invite(
        text,
        group_id=c.charter.group_id,
        member_key=c.member.public_key,
        inviters=[c.founder.public_key],
        now=NOW,
    )
    if not (math.isfinite(invite.expires_at) and invite.expires_at > NOW):
        raise InvalidStored(f"accepted an invite expiring at {invite.expires_at}")
    return "accepted"


# -- g.* messages ----------------------------------------------------------------------------------

_KINDS: dict[str, type[Any]] = {
    **{name: getattr(m, name) for name in corpus().headers},
    "SplitRequest": SplitRequest,
}


@st.composite
def message_cases(draw: st.DrawFn) -> tuple[str, Any]:
    """(message type, a header): a valid one edited as a tree, or another type's."""
    c = corpus()
    headers = {**c.headers, "SplitRequest": {"gid": c.charter.group_id, "term": 1, "found": "x"}}
    kind = draw(st.sampled_from(sorted(_KINDS)))
    header = headers[draw(st.sampled_from(sorted(headers)))] if draw(st.booleans()) else None
    header = draw(mutated_tree(header or headers[kind]))
    return kind, header


def _sane(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(map(_sane, value))
    if isinstance(value, dict):
        return all(map(_sane, value.values()))
    return True


def check_message(case: tuple[str, Any], _ctx: Context) -> str:
    kind, header = case
    if kind == "SplitRequest":
        import msgspec

        try:
            msgspec.convert(header, SplitRequest, strict=True)
        except msgspec.ValidationError as exc:
            raise m.BadMessage(str(exc)) from None
        return "accepted"
    message = m.parse(_KINDS[kind], header)
    fields = {f: getattr(message, f) for f in message.__struct_fields__ if f != "content"}
    if not _sane(fields):
        raise InvalidStored(f"accepted a {kind} with a non-finite number: {fields}")
    content = getattr(message, "content", None)
    if content is not None:
        decode_content(content, [b"\x93NUMPY" + bytes(60)] * 2)
    return "accepted"


# -- frames ----------------------------------------------------------------------------------------


def _frame_seeds() -> list[bytes]:
    c = corpus()
    records, segments = c.content
    return [
        frame_bytes({"m": "g.model", "id": 1, **c.headers["ModelReply"]}, segments),
        frame_bytes({"m": "g.join", "id": 2, **c.headers["Join"]}, []),
        frame_bytes({"ok": True, "id": 3, "content": records}, segments[:1]),
    ]


@st.composite
def header_bytes(draw: st.DrawFn) -> bytes:
    seeds = [frame[4 : 4 + struct.unpack("!I", frame[:4])[0]] for frame in _frame_seeds()]
    choice = draw(st.integers(0, 5))
    if choice == 0:  # deep or wide nests, the shapes that cost memory or recursion
        depth = draw(st.integers(MAX_HEADER_DEPTH - 2, 300))
        return pack({"a": _deep(min(depth, 500), {})}) if depth < 400 else b"\x91" * depth
    if choice == 1:
        return pack({"a": [{}] * draw(st.integers(1, 20_000))})
    return draw(mutated_msgpack(seeds))


def check_header(data: bytes, _ctx: Context) -> str:
    header = decode_header(data)
    if not isinstance(header, dict):
        raise AssertionError("decode_header returned a non-map")
    return "accepted"


class _BytesStream:
    """A ``ByteStream`` over fixed bytes: the end of them is the peer closing."""

    peername = ("127.0.0.1", 40000)

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    async def send(self, parts: list[memoryview], progress: Progress | None = None) -> None:
        pass

    async def recv_exactly(self, n: int, progress: Progress | None = None) -> bytes:
        if self.pos + n > len(self.data):
            raise ConnectionError("connection closed by peer")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def close(self) -> None:
        pass


def check_frames(data: bytes, ctx: Context) -> str:
    async def read_all() -> str:
        frames = FrameSocket(_BytesStream(data))
        for count in range(8):
            try:
                _, segments = await frames.read_frame(MAX_FRAME)
            except ConnectionError:
                return f"{count} frames"
            if sum(map(len, segments)) > MAX_FRAME:
                raise AssertionError("read a frame over max_frame")
        return "8 frames"

    return ctx.run(read_all())


# -- Noise -----------------------------------------------------------------------------------------


class _UnixSocket(socket.socket):
    """A socketpair end that takes (and ignores) SocketStream's TCP options."""

    def setsockopt(self, *args: Any) -> None:  # type: ignore[override]
        if args[0] != socket.IPPROTO_TCP:
            super().setsockopt(*args)

    def getpeername(self) -> tuple[str, int]:  # type: ignore[override]
        return ("127.0.0.1", 40000)


_KEYS = (bytes(range(32)), bytes(range(32, 64)))


def _sealed(plain: bytes) -> bytes:
    """``plain`` as Noise transport messages under the fuzz session's key."""
    sealer, out = AESGCM(_KEYS[0]), bytearray()
    for nonce, start in enumerate(range(0, len(plain), 1000)):
        chunk = sealer.encrypt(struct.pack("!4xQ", nonce), plain[start : start + 1000], None)
        out += struct.pack("!H", len(chunk)) + chunk
    return bytes(out)


def noise_stream_bytes() -> st.SearchStrategy[bytes]:
    return mutated_bytes([_sealed(b"".join(_frame_seeds()))], max_random=3000)


def check_noise_stream(data: bytes, ctx: Context) -> str:
    async def read_all() -> str:
        a, b = socket.socketpair()
        b = _UnixSocket(fileno=b.detach())
        try:
            a.sendall(data)
            a.shutdown(socket.SHUT_WR)
            stream = NoiseStream(SocketStream(b), Session(b"", _KEYS[1], _KEYS[0]))
            return await check_frames_on(FrameSocket(stream))
        finally:
            a.close()
            b.close()

    return ctx.run(read_all())


async def check_frames_on(frames: FrameSocket) -> str:
    for count in range(8):
        try:
            await frames.read_frame(MAX_FRAME)
        except ConnectionError:
            return f"{count} frames"
    return "8 frames"


class _Pipe:
    """One direction of an in-memory connection."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.changed = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self.buf += data
        self.changed.set()

    def close(self) -> None:
        self.eof = True
        self.changed.set()


class _End:
    """A handshake side's stream: what it sends may be edited on the way (``mutate``). When
    both sides wait for bytes that will never come, both see the connection close: what the
    handshake timeout does to a peer that stalls."""

    peername = ("127.0.0.1", 40000)

    def __init__(self, inbox: _Pipe, outbox: _Pipe, mutate: Any, waiting: list[_End]) -> None:
        self.inbox, self.outbox, self.mutate, self.sent = inbox, outbox, mutate, 0
        self.waiting, self.need = waiting, 0

    async def send(self, parts: list[memoryview]) -> None:
        data = b"".join(bytes(p) for p in parts)
        self.sent += 1
        self.outbox.feed(self.mutate(self.sent, data))

    def _stalled(self) -> bool:
        """The other side waits for more than we gave it, and we are about to wait too."""
        return any(e is not self and len(e.inbox.buf) < e.need for e in self.waiting)

    async def recv_exactly(self, n: int) -> bytes:
        while len(self.inbox.buf) < n:
            if self.inbox.eof:
                raise ConnectionError("connection closed by peer")
            if self._stalled():
                self.inbox.close()
                self.outbox.close()
                continue
            self.inbox.changed.clear()
            self.need = n
            self.waiting.append(self)
            try:
                await self.inbox.changed.wait()
            finally:
                self.waiting.remove(self)
        data = bytes(self.inbox.buf[:n])
        del self.inbox.buf[:n]
        return data


@st.composite
def handshake_cases(draw: st.DrawFn) -> tuple[str, int, bytes | None, bytes]:
    """(which side's message is edited, which message, its replacement or None to edit it
    as bytes with the given edit seed)."""
    side = draw(st.sampled_from(["initiator", "responder"]))
    number = draw(st.integers(1, 2))
    replacement = draw(st.one_of(st.none(), st.binary(max_size=300)))
    return side, number, replacement, draw(st.binary(min_size=1, max_size=8))


def _edit(data: bytes, edits: bytes) -> bytes:
    out = bytearray(data)
    for e in edits:
        where = (e * 7919) % max(1, len(out))
        if e % 4 == 0:
            del out[where:]
        elif e % 4 == 1 and out:
            out[where] ^= 1 << (e % 8)
        elif e % 4 == 2:
            out[where:where] = bytes([e])
        elif out:
            out[where] = e
    return bytes(out)


def check_handshake(case: tuple[str, int, bytes | None, bytes], ctx: Context) -> str:
    side, number, replacement, edits = case
    creds = [NoiseCredentials.for_identity(corpus().founder), _member_creds()]

    def mutate_for(role: str) -> Any:
        def mutate(count: int, data: bytes) -> bytes:
            if role != side or count != number:
                return data
            return replacement if replacement is not None else _edit(data, edits)

        return mutate

    async def scenario() -> str:
        to_resp, to_init, waiting = _Pipe(), _Pipe(), list[_End]()
        ends = [
            _End(to_init, to_resp, mutate_for("initiator"), waiting),
            _End(to_resp, to_init, mutate_for("responder"), waiting),
        ]

        async def side_run(i: int) -> Session:
            try:
                return await handshake(ends[i], creds[i], initiator=i == 0)  # type: ignore[arg-type]
            finally:
                to_resp.close()
                to_init.close()

        results = await asyncio.gather(side_run(0), side_run(1), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (ChannelError, ConnectionError)
            ):
                raise result
        if all(isinstance(r, Session) for r in results):
            init, resp = results
            if (init.send_key, init.recv_key) != (resp.recv_key, resp.send_key) or {
                init.peer_key,
                resp.peer_key,
            } != {creds[0].identity_key, creds[1].identity_key}:
                raise InvalidStored("a tampered handshake completed with mismatched sessions")
            return "completed"
        return "refused"

    return ctx.run(scenario())


def _member_creds() -> NoiseCredentials:
    return NoiseCredentials.for_identity(corpus().member)


def _frame_bytes_strategy() -> st.SearchStrategy[bytes]:
    seeds = _frame_seeds()
    return mutated_bytes([seeds[0] + seeds[1], seeds[2], *seeds], max_random=2000)


TARGETS = [
    Target("invite", "verify_invite", invite_texts, check_invite, (InviteError,)),
    Target(
        "message",
        "group/messages.parse (every g.* request and reply), n.split",
        message_cases,
        check_message,
        (m.BadMessage, WireError),
    ),
    Target("header", "headers.decode_header", header_bytes, check_header, (ChannelError,)),
    Target("frame", "FrameSocket.read_frame", _frame_bytes_strategy, check_frames, (ChannelError,)),
    Target(
        "noise-stream",
        "NoiseStream transport messages under FrameSocket",
        noise_stream_bytes,
        check_noise_stream,
        (ChannelError,),
    ),
    Target(
        "handshake",
        "noise.handshake, initiator and responder, one message tampered",
        handshake_cases,
        check_handshake,
        (ChannelError, ConnectionError),
    ),
]
