"""Hostile networks against Noise channels, over real loopback sockets: relays, reflection,
tampering, eavesdropping, mismatched modes, oversized handshake messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mycelium_p2p.addresses import Address
from mycelium_p2p.group.frames import SocketStream
from mycelium_p2p.group.noise import NoiseCredentials, handshake
from mycelium_p2p.group.transport import HANDSHAKE_TIMEOUT, ChannelError, ChannelServer, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async, wait_for

Mutate = Callable[[int, bytes], tuple[list[bytes], bool]]
SECRET = b"the-model-weights-are-0xC0FFEE-secret"
TRANSPORT_LOG = "mycelium_p2p.group.transport"
CHANNEL_LOG = "mycelium_p2p.group.channel"


class Relay:
    """A TCP forwarder on loopback in front of ``target`` that records every byte. With
    ``mutate``, the dialler's messages after its two handshake messages are parsed (u16
    length prefix) and ``mutate(index, message)`` says what to forward and whether to cut."""

    def __init__(self, target: Address, mutate: Mutate | None = None) -> None:
        self.target = target
        self.mutate = mutate
        self.upstream = bytearray()  # dialler -> target, as forwarded
        self.downstream = bytearray()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        upstream = self._messages if self.mutate else self._bytes
        await asyncio.gather(
            upstream(reader, up_writer, self.upstream),
            self._bytes(up_reader, writer, self.downstream),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            w.close()

    @staticmethod
    async def _bytes(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray
    ) -> None:
        while data := await reader.read(65536):
            record += data
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _messages(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray
    ) -> None:
        assert self.mutate is not None
        index = 0
        try:
            while True:
                head = await reader.readexactly(2)
                message = head + await reader.readexactly(int.from_bytes(head, "big"))
                pieces, cut = ([message], False) if index < 2 else self.mutate(index - 2, message)
                index += 1
                for piece in pieces:
                    record += piece
                    writer.write(piece)
                await writer.drain()
                if cut:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address: Address = self._server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


class Recorder:
    """A handler that remembers which requests ran and echoes them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, channel, method, header, segments):
        self.calls.append(method)
        return Reply({"peer": channel.peer_key, **header}, segments)


@dataclass
class Ends:
    """Two nodes on loopback: ``a`` listens at ``addr_a`` and records its handler's calls."""

    a: Identity
    b: Identity
    server_a: ChannelServer
    server_b: ChannelServer
    addr_a: Address
    calls: list[str]


@contextlib.asynccontextmanager
async def two_nodes(*, plaintext: tuple[bool, bool] = (False, False)) -> AsyncIterator[Ends]:
    a, b = Identity.generate(), Identity.generate()
    handler_a = Recorder()
    server_a = ChannelServer(a, handler_a, insecure_plaintext=plaintext[0])
    server_b = ChannelServer(b, Recorder(), insecure_plaintext=plaintext[1])
    try:
        addr_a = await server_a.listen("127.0.0.1", 0)
        await server_b.listen("127.0.0.1", 0)
        yield Ends(a, b, server_a, server_b, addr_a, handler_a.calls)
    finally:
        await server_a.close()
        await server_b.close()


@contextlib.asynccontextmanager
async def listening(serve: Callable[[socket.socket], Any]) -> AsyncIterator[Address]:
    """A raw listener on loopback whose first connection goes to ``serve(sock)``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    async def accept() -> None:
        sock, _ = await asyncio.get_running_loop().sock_accept(listener)
        with sock:
            await serve(sock)

    task = asyncio.create_task(accept())
    try:
        yield listener.getsockname()[:2]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        listener.close()


def flip(message: bytes) -> bytes:
    return message[:-5] + bytes([message[-5] ^ 0x01]) + message[-4:]


def replay() -> Mutate:
    seen: list[bytes] = []

    def mutate(index: int, message: bytes) -> tuple[list[bytes], bool]:
        seen.append(message)
        return ([seen[0], message] if index == 1 else [message]), False

    return mutate


def reorder() -> Mutate:
    held: list[bytes] = []

    def mutate(index: int, message: bytes) -> tuple[list[bytes], bool]:
        if index == 1:
            held.append(message)
            return [], False
        return [message, *held] if index == 2 else [message], False

    return mutate


ATTACKS: dict[str, tuple[Mutate, str]] = {
    "tampered": (lambda i, m: ([flip(m) if i == 1 else m], False), "failed authentication"),
    "injected": (
        lambda i, m: ([b"\x00\x30" + os.urandom(48), m] if i == 1 else [m], False),
        "failed authentication",
    ),
    "truncated": (lambda i, m: ([m[: len(m) // 2] if i == 1 else m], i == 1), "truncated"),
}


@pytest.mark.parametrize("attack", ["replayed", "tampered", "reordered", "injected", "truncated"])
@run_async()
async def test_an_altered_stream_closes_the_channel_and_runs_nothing(attack, caplog) -> None:
    """The relay passes the first request, then alters what follows: the receiver logs why it
    closes, naming the peer, its handler never runs for the bad frames, and no exception
    reaches the event loop."""
    if attack == "replayed":
        mutate, reason = replay(), "failed authentication"
    elif attack == "reordered":
        mutate, reason = reorder(), "failed authentication"
    else:
        mutate, reason = ATTACKS[attack]
    escaped: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: escaped.append(ctx))
    async with two_nodes() as n, Relay(n.addr_a, mutate) as relay:
        header, _ = await n.server_b.request(relay.address, n.a.public_key, "first", timeout=5)
        assert header["peer"] == n.b.public_key
        with pytest.raises(ChannelError):
            await asyncio.gather(
                n.server_b.request(relay.address, n.a.public_key, "second", timeout=5),
                n.server_b.request(relay.address, n.a.public_key, "third", timeout=5),
            )
        await wait_for(lambda: n.server_a.channel(n.b.public_key) is None, 5, "a to close")
        assert n.calls == ["first"]
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == CHANNEL_LOG and r.levelname == "WARNING"
        ]
        assert any(n.b.public_key.hex()[:16] in w and reason in w for w in warnings), warnings
    assert not escaped and not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("plaintext", [False, True])
@run_async()
async def test_nothing_readable_on_the_wire(plaintext) -> None:
    """A relay sees neither the request, the reply, nor either identity key; the same capture
    in insecure plaintext mode does show the secret (so the capture would catch a leak)."""
    async with two_nodes(plaintext=(plaintext, plaintext)) as n, Relay(n.addr_a) as relay:
        header, segments = await n.server_b.request(
            relay.address,
            n.a.public_key,
            "store",
            {"note": SECRET.decode()},
            [SECRET * 3],
            timeout=5,
        )
        assert header["note"] == SECRET.decode() and segments == [SECRET * 3]
        wire = bytes(relay.upstream + relay.downstream)
        assert len(relay.upstream) > 3 * len(SECRET) and len(relay.downstream) > len(SECRET)
        if plaintext:
            assert SECRET in relay.upstream and SECRET in relay.downstream
        else:
            assert SECRET not in wire
            assert n.a.public_key not in wire and n.b.public_key not in wire


@run_async()
async def test_a_transparent_relay_authenticates_the_real_ends() -> None:
    async with two_nodes() as n, Relay(n.addr_a) as relay:
        channel = await n.server_b.connect(relay.address, n.a.public_key)
        assert channel.peer_key == n.a.public_key
        await wait_for(lambda: n.server_a.channel(n.b.public_key) is not None, 5, "a to adopt")


@run_async()
async def test_a_relay_that_handshakes_both_ways_holds_only_its_own_key() -> None:
    """Mallory accepts B's dial and dials A herself: B refuses her (naming both keys), and A
    knows her as Mallory, never as B."""
    mallory = Identity.generate()
    server_m = ChannelServer(mallory, Recorder())
    async with two_nodes() as n:
        try:
            addr_m = await server_m.listen("127.0.0.1", 0)
            with pytest.raises(ChannelError) as refused:
                await n.server_b.connect(addr_m, n.a.public_key)
            assert mallory.public_key.hex() in str(refused.value)
            assert n.a.public_key.hex() in str(refused.value)
            assert not n.server_b._channels
            channel = await server_m.connect(n.addr_a, n.a.public_key)
            assert channel.peer_key == n.a.public_key
            await wait_for(lambda: n.server_a.channel(mallory.public_key) is not None, 5, "a")
            assert n.server_a.channel(n.b.public_key) is None
        finally:
            await server_m.close()


def posing_as(server: ChannelServer) -> NoiseCredentials:
    """Credentials with ``server``'s real identity payload but a static key of our own."""
    fresh = NoiseCredentials.for_identity(Identity.generate())
    return NoiseCredentials(fresh.static_private, server._credentials.payload)


@run_async()
async def test_a_stolen_identity_payload_does_not_verify() -> None:
    """Mallory knows A's and B's handshake payloads (key + signature) but not their static
    keys: as A to C's dial, or as B dialling A, she is refused, and A's open channel to the
    real B is left alone."""
    async with two_nodes() as n:
        real = await n.server_b.connect(n.addr_a, n.a.public_key)
        await wait_for(lambda: n.server_a.channel(n.b.public_key) is not None, 5, "a to adopt")
        held_by_a = n.server_a.channel(n.b.public_key)

        async def pose_as_a(sock: socket.socket) -> None:
            with pytest.raises(ConnectionError):  # the dialler hangs up after message 2
                await handshake(SocketStream(sock), posing_as(n.server_a), initiator=False)

        server_c = ChannelServer(Identity.generate(), Recorder())
        try:
            async with listening(pose_as_a) as fake_a:
                with pytest.raises(ChannelError, match="did not sign this session's static key"):
                    await server_c.connect(fake_a, n.a.public_key)
            assert not server_c._channels
        finally:
            await server_c.close()

        raw = SocketStream(socket.create_connection(n.addr_a))
        await handshake(raw, posing_as(n.server_b), initiator=True, expected=n.a.public_key)
        with pytest.raises(ConnectionError):  # A hung up after message 3
            await asyncio.wait_for(raw.recv_exactly(1), 5)
        raw.close()
        assert n.server_a.channel(n.b.public_key) is held_by_a and not held_by_a.closed
        header, _ = await real.request("still-b", {}, timeout=5)
        assert header["peer"] == n.b.public_key


@run_async()
async def test_reflected_handshakes_fail() -> None:
    """A dialling an echo server reads its own first message back; A dialled back to its own
    listener meets its own key. Both are refused and A's table stays empty."""

    async def echo(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while data := await loop.sock_recv(sock, 4096):
            await loop.sock_sendall(sock, data)

    async with two_nodes() as n, Relay(n.addr_a) as loop_back, listening(echo) as mirror:
        with pytest.raises(ChannelError, match="handshake message 2"):
            await n.server_a.connect(mirror, n.b.public_key)
        for expected in (n.a.public_key, n.b.public_key):
            with pytest.raises(ChannelError, match="our own key"):
                await n.server_a.connect(loop_back.address, expected)
        await asyncio.sleep(0.1)  # let the responder side finish failing too
        assert not n.server_a._channels


@pytest.mark.parametrize("modes", [(True, False), (False, True)])
@run_async()
async def test_plaintext_needs_both_ends_and_never_downgrades(modes, caplog) -> None:
    async with two_nodes(plaintext=modes) as n:
        with pytest.raises(ChannelError, match="handshake message 2 did not authenticate"):
            await n.server_b.request(n.addr_a, n.a.public_key, "hi", timeout=5)
        await asyncio.sleep(0.05)  # a's side of the failed handshake
        assert not n.server_a._channels and not n.server_b._channels
        assert n.calls == []
    assert any("INSECURE PLAINTEXT" in r.getMessage() for r in caplog.records)


@run_async()
async def test_oversized_handshake_messages_are_refused_on_their_length(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=TRANSPORT_LOG)

    async def bloated(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_recv(sock, 34)
        await loop.sock_sendall(sock, b"\xff\xff")  # and never the 65,535 bytes
        await loop.sock_recv(sock, 1)

    async with two_nodes() as n, listening(bloated) as fake:
        reader, writer = await asyncio.open_connection(*n.addr_a)
        writer.write(b"\xff\xff")
        # refused on the length: the server hangs up well before its handshake timeout
        assert await asyncio.wait_for(reader.read(), HANDSHAKE_TIMEOUT / 2) == b""
        writer.close()
        assert any("65535 bytes refused" in r.getMessage() for r in caplog.records)
        with pytest.raises(ChannelError, match="65535 bytes refused"):
            await n.server_b.connect(fake, n.a.public_key)


def replying(identity: Identity, reply_id: Any, size: int) -> Callable[[socket.socket], Any]:
    """A peer that answers the first request with ``reply_id`` and ``size`` bytes of segments."""
    from mycelium_p2p.group.frames import FrameSocket
    from mycelium_p2p.group.noise import NoiseStream

    async def serve(sock: socket.socket) -> None:
        raw = SocketStream(sock)
        session = await handshake(raw, NoiseCredentials.for_identity(identity), initiator=False)
        io = FrameSocket(NoiseStream(raw, session))
        await io.read_frame(2**20)
        await io.write_frame({"t": "r", "id": reply_id, "h": {}}, [b"z" * size])
        await asyncio.sleep(5)  # hold the line; the dialler hangs up

    return serve


@pytest.mark.parametrize(
    "reply_id", [1.0, True, -1, 99], ids=["float", "bool", "negative", "unsent"]
)
@run_async()
async def test_a_reply_cannot_dodge_its_requests_cap_with_an_id_that_is_not_ours(reply_id) -> None:
    """``1.0 == 1`` finds request 1 in a dict: a reply must carry exactly an id we sent, or its
    segments are refused unread (and the channel closes), whatever their size."""
    stranger = Identity.generate()
    server = ChannelServer(Identity.generate(), Recorder())
    try:
        async with listening(replying(stranger, reply_id, 200_000)) as where:
            with pytest.raises(ChannelError):
                await server.request(
                    where, stranger.public_key, "g.model", {}, timeout=3, max_reply=1_000
                )
    finally:
        await server.close()


@run_async()
async def test_a_capped_reply_within_its_cap_is_read() -> None:
    stranger = Identity.generate()
    server = ChannelServer(Identity.generate(), Recorder())
    try:
        async with listening(replying(stranger, 1, 900)) as where:
            _, segments = await server.request(
                where, stranger.public_key, "g.model", {}, timeout=3, max_reply=1_000
            )
            assert [len(s) for s in segments] == [900]
    finally:
        await server.close()
