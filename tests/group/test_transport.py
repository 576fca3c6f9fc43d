"""Noise channels: handshake, request/reply, limits, failures, wire format, the channel table.
Attacks on channels are in tests/security."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import socket
import struct

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

from mycelium_p2p.fl.wire import _MAX_ARRAYS, encode_content
from mycelium_p2p.group.frames import LINK_TIMEOUT
from mycelium_p2p.group.headers import MAX_HEADER, decode_header
from mycelium_p2p.group.noise import MAX_NONCE
from mycelium_p2p.group.transport import ChannelError, ChannelServer, RemoteError, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async, wait_for


async def echo(channel, method, header, segments):
    if method == "fail":
        return Reply.fail("nope", "asked to fail")
    if method == "boom":
        raise RuntimeError("handler bug")
    if method == "slow":
        await asyncio.sleep(5)
    if method == "forge":  # a hostile peer's error: a terminal escape, a long reason
        return Reply(error=("\x1b[31mcode", "line\nforged " + "x" * 10_000))
    if method == "misshapen":  # an error that is not [code, reason]
        return Reply(error=("only-a-code",))  # type: ignore[arg-type]
    return Reply({"method": method, "peer": channel.peer_key, **header}, segments[::-1])


@contextlib.asynccontextmanager
async def pair(max_frame: int = 2**20):
    """Two channel servers on loopback, closed on the way out: (a, b, server_a, server_b,
    a's address)."""
    a, b = Identity.generate(), Identity.generate()
    server_a = ChannelServer(a, echo, max_frame=max_frame)
    server_b = ChannelServer(b, echo, max_frame=max_frame)
    try:
        addr_a = await server_a.listen("127.0.0.1", 0)
        await server_b.listen("127.0.0.1", 0)
        yield a, b, server_a, server_b, addr_a
    finally:
        await server_a.close()
        await server_b.close()


@run_async()
async def test_requests_carry_headers_and_raw_segments_both_ways() -> None:
    async with pair() as (a, b, server_a, server_b, addr_a):
        header, segs = await server_b.request(
            addr_a, a.public_key, "hi", {"x": 1}, [b"one", memoryview(b"two")], timeout=5
        )
        assert header == {"method": "hi", "peer": b.public_key, "x": 1}
        assert segs == [b"two", b"one"]
        # a can now call b back over the same connection
        channel = server_a.channel(b.public_key)
        header, _ = await channel.request("back", timeout=5)
        assert header["peer"] == a.public_key


@run_async()
async def test_errors_are_replies_not_broken_connections() -> None:
    async with pair() as (a, _b, _server_a, server_b, addr_a):
        with pytest.raises(RemoteError, match="nope"):
            await server_b.request(addr_a, a.public_key, "fail", timeout=5)
        with pytest.raises(RemoteError, match="internal"):
            await server_b.request(addr_a, a.public_key, "boom", timeout=5)
        with pytest.raises(ChannelError, match="no reply"):
            await server_b.request(addr_a, a.public_key, "slow", timeout=0.2)
        header, _ = await server_b.request(addr_a, a.public_key, "still-fine", timeout=5)
        assert header["method"] == "still-fine"


@run_async()
async def test_a_peers_error_text_comes_back_printable_and_short() -> None:
    async with pair() as (a, _b, _server_a, server_b, addr_a):
        with pytest.raises(RemoteError) as caught:
            await server_b.request(addr_a, a.public_key, "forge", timeout=5)
        with pytest.raises(ChannelError, match="malformed error reply"):
            await server_b.request(addr_a, a.public_key, "misshapen", timeout=5)
    assert caught.value.code == "?[31mcode"
    assert caught.value.reason.startswith("line?forged xxx") and caught.value.reason.endswith("...")
    assert len(caught.value.reason) == 303


@run_async()
async def test_a_request_that_hears_nothing_back_drops_the_channel() -> None:
    """A link cut mid-request leaves TCP backing off its retransmissions: a request timed out
    with nothing at all heard from the peer drops the channel, so the next one dials afresh.
    A peer that is merely slow to answer, and talks meanwhile, keeps its channel."""
    async with pair() as (a, b, server_a, server_b, addr_a):
        with pytest.raises(ChannelError, match="no reply"):
            await server_b.request(addr_a, a.public_key, "slow", timeout=0.2)
        assert server_b.channel(a.public_key) is None

        await server_b.request(addr_a, a.public_key, "hi", timeout=5)
        channel = server_b.channel(a.public_key)
        await wait_for(lambda: server_a.channel(b.public_key) is not None, 5, "a's end")

        async def talk() -> None:  # a sends b a request while b waits for its slow reply
            await asyncio.sleep(0.05)
            await server_a.channel(b.public_key).request("chat", timeout=5)

        chat = asyncio.ensure_future(talk())
        with pytest.raises(ChannelError, match="no reply"):
            await channel.request("slow", timeout=0.3)
        await chat
        assert server_b.channel(a.public_key) is channel and not channel.closed


@run_async()
async def test_a_request_given_up_as_its_channel_dies_leaves_no_unretrieved_error() -> None:
    """The channel dies (and fails every waiting request) while a request still waits to
    send: the request, given up, leaves no "Future exception was never retrieved" behind."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
    try:
        async with pair() as (a, _b, server_a, server_b, addr_a):
            channel = await server_b.connect(addr_a, a.public_key)
            await channel._send_lock.acquire()  # another request's send holds the stream
            request = asyncio.ensure_future(channel.request("hi", timeout=5))
            await asyncio.sleep(0.05)
            await server_a.close()  # the peer goes: the reader fails every waiting request
            await wait_for(lambda: channel.closed, 5, "the channel to close")
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
            channel._send_lock.release()
            del request
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [m for m in seen if "never retrieved" in m]


@run_async()
async def test_a_peer_with_another_key_is_refused() -> None:
    other = Identity.generate().public_key
    async with pair() as (a, _b, server_a, server_b, addr_a):
        with pytest.raises(ChannelError, match="expected") as refused:
            await server_b.request(addr_a, other, "hi", timeout=5)
        assert a.public_key.hex() in str(refused.value) and other.hex() in str(refused.value)
        assert not server_b._channels
        await asyncio.sleep(0.05)  # a's side of the failed handshake
        assert not server_a._channels


@run_async()
async def test_oversized_frames_close_the_channel() -> None:
    async with pair(max_frame=1000) as (a, _b, _server_a, server_b, addr_a):
        with pytest.raises(ChannelError):
            await server_b.request(addr_a, a.public_key, "big", {}, [bytes(5000)], timeout=2)


@pytest.mark.parametrize("frame", [{"t": "x", "id": [1]}, {"t": "r", "id": {"a": 1}}])
@run_async()
async def test_a_frame_with_an_unhashable_id_closes_the_channel_quietly(frame, caplog) -> None:
    """A frame whose id is a list or map closes the channel with the one warning, not a
    reader task failing on the lookup of its method (an error with a traceback)."""
    async with pair() as (a, b, _server_a, server_b, addr_a):
        channel = await server_b.connect(addr_a, a.public_key)
        head = msgpack.packb({**frame, "h": {}})
        await channel._io.stream.send([memoryview(struct.pack("!I", len(head)) + head)])
        await wait_for(lambda: channel.closed, 5, "a to close the channel")
        await asyncio.sleep(0.05)  # a's reader task ends
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"closing channel to {b.public_key.hex()[:16]}" in w for w in warnings)


@run_async()
async def test_garbage_and_silent_clients_do_not_hurt_the_server() -> None:
    async with pair() as (a, _b, _server_a, server_b, addr_a):
        for junk in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x03abc", b"GET / HTTP/1.0\r\n\r\n"):
            _reader, writer = await asyncio.open_connection(*addr_a)
            writer.write(junk)
            await writer.drain()
            writer.close()
        header, _ = await server_b.request(addr_a, a.public_key, "ok", timeout=5)
        assert header["method"] == "ok"


@run_async()
async def test_unreachable_peer_is_a_channel_error() -> None:
    a = Identity.generate()
    server = ChannelServer(a, echo)
    try:
        with pytest.raises(ChannelError, match="cannot connect"):
            await server.request(("127.0.0.1", 9), a.public_key, "hi", timeout=1)
    finally:
        await server.close()


@run_async()
async def test_big_segments_arrive_intact_both_ways() -> None:
    async with pair(max_frame=64 * 2**20) as (a, _b, _server_a, server_b, addr_a):
        big = bytes(range(256)) * (12 * 2**12)  # 12 MiB: moved by the worker-thread path
        small = b"tail"
        _header, segs = await server_b.request(
            addr_a, a.public_key, "big", {}, [big, small], timeout=30
        )
        assert segs == [small, big]
        assert isinstance(segs[1], bytes) and hash(segs[1]) == hash(big)


@run_async()
async def test_many_frames_of_every_size_in_flight_arrive_intact() -> None:
    """Frames share one read buffer: back-to-back frames, a segment split across reads, one
    bigger than the buffer, one for the worker thread, empty ones, all in flight at once."""
    sizes = [0, 1, 3, 4096, 200_000, 300_000, 900_000, 2 * 2**20 + 7]
    async with pair(max_frame=64 * 2**20) as (a, _b, _server_a, server_b, addr_a):

        async def one(i: int) -> None:
            segs = [bytes([i % 251]) * n + i.to_bytes(4, "big") for n in sizes[i % 4 :: 3]]
            header, back = await server_b.request(
                addr_a, a.public_key, "echo", {"i": i}, [*segs, b""], timeout=30
            )
            assert header["i"] == i
            assert back == [b"", *segs[::-1]]

        await asyncio.gather(*(one(i) for i in range(40)))


async def _message(reader: asyncio.StreamReader) -> bytes:
    return await reader.readexactly(int.from_bytes(await reader.readexactly(2), "big"))


def _prefixed(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


@run_async()
async def test_the_wire_is_plain_noise_with_libp2p_payloads() -> None:
    """A client written with noiseprotocol's own NoiseConnection (its handshake, its encrypt and
    decrypt) and the libp2p payload talks to a ChannelServer: the formats agree both ways."""
    a, b = Identity.generate(), Identity.generate()
    server = ChannelServer(a, echo)
    addr = await server.listen("127.0.0.1", 0)
    static = X25519PrivateKey.generate()
    noise = NoiseConnection.from_name(b"Noise_XX_25519_AESGCM_SHA256")
    noise.set_prologue(b"mycelium-p2p/noise/v1")
    noise.set_keypair_from_private_bytes(Keypair.STATIC, static.private_bytes_raw())
    noise.set_as_initiator()
    noise.start_handshake()
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(_prefixed(bytes(noise.write_message())))
        payload = bytes(noise.read_message(await _message(reader)))
        assert payload[:32] == a.public_key and len(payload) == 96
        proof = b.sign(b"noise-libp2p-static-key:" + static.public_key().public_bytes_raw())
        writer.write(_prefixed(bytes(noise.write_message(b.public_key + proof))))
        assert noise.handshake_finished
        head = msgpack.packb({"t": "q", "id": 7, "m": "hi", "h": {"x": 1}, "seg": [3]})
        frame = struct.pack("!I", len(head)) + head + b"abc"
        writer.write(_prefixed(noise.encrypt(frame)))
        await wait_for(lambda: server.channel(b.public_key) is not None, 5, "the channel")
        reply = noise.decrypt(await _message(reader))
        (size,) = struct.unpack("!I", reply[:4])
        header = msgpack.unpackb(reply[4 : 4 + size])
        assert header["t"] == "r" and header["id"] == 7 and header["h"]["x"] == 1
        assert header["h"]["peer"] == b.public_key
        assert reply[4 + size :] == b"abc"
    finally:
        writer.close()
        await server.close()


@run_async(timeout=120)
async def test_closed_channels_leave_the_table() -> None:
    """1,000 connect/close cycles: neither end keeps a closed channel."""
    async with pair() as (a, _b, server_a, server_b, addr_a):
        for _ in range(1000):
            channel = await server_b.connect(addr_a, a.public_key)
            await channel.close()
            assert channel.closed and not server_b._channels
        await wait_for(lambda: not server_a._channels, 10, "a to drop closed channels")
        header, _ = await server_b.request(addr_a, a.public_key, "after", timeout=5)
        assert header["method"] == "after"
        assert [c.closed for c in server_a._channels.values()] == [False]


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
@run_async()
async def test_both_ends_drop_a_connection_whose_data_goes_unacknowledged() -> None:
    """After a cut link heals, a channel with unacknowledged data would wait for TCP's backed
    off retransmissions; the kernel drops it after LINK_TIMEOUT instead, dialler or listener."""
    async with pair() as (a, b, server_a, server_b, addr_a):
        await server_b.request(addr_a, a.public_key, "hi", timeout=5)
        ends = [server_b.channel(a.public_key), server_a.channel(b.public_key)]
        for channel in ends:
            sock = channel._io.stream.sock
            value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
            assert value == int(LINK_TIMEOUT * 1000)


@run_async()
async def test_a_reply_over_the_requests_own_limit_is_not_read_and_closes_the_channel() -> None:
    """A request may cap its reply (a candidate's model: no bigger than ours): the segments'
    declared lengths are refused before they are read; other requests keep ``max_frame``."""
    async with pair() as (a, _b, _server_a, server_b, addr_a):
        big = [b"x" * 50_000, b"y" * 50_000]
        _, segs = await server_b.request(
            addr_a, a.public_key, "echo", {}, big, timeout=5, max_reply=100_000
        )
        assert [len(s) for s in segs] == [50_000, 50_000]  # within the cap: read
        with pytest.raises(ChannelError):
            await server_b.request(
                addr_a, a.public_key, "echo", {}, big, timeout=5, max_reply=99_999
            )
        await wait_for(lambda: server_b.channel(a.public_key) is None, 5, "the channel to close")
        _header, segs = await server_b.request(addr_a, a.public_key, "echo", {}, big, timeout=5)
        assert len(segs) == 2  # a new channel; no cap without one asked for


@run_async()
async def test_a_channel_closes_before_its_nonces_run_out() -> None:
    async with pair() as (a, b, server_a, server_b, addr_a):
        channel = await server_b.connect(addr_a, a.public_key)
        await wait_for(lambda: server_a.channel(b.public_key) is not None, 5, "a to adopt")
        channel._io.stream._send_nonces = itertools.count(MAX_NONCE - 1)
        server_a.channel(b.public_key)._io.stream._recv_nonce = MAX_NONCE - 1
        header, _ = await channel.request("last", timeout=5)  # nonce 2**64 - 2: the last one
        assert header["method"] == "last"
        with pytest.raises(ChannelError, match="nonces exhausted"):
            await channel.request("one-too-many", timeout=5)
        await wait_for(lambda: channel.closed and not server_b._channels, 5, "the close")


@run_async(timeout=30)
async def test_a_channel_answers_at_most_max_in_flight_requests_at_once() -> None:
    """A peer's 20 concurrent requests to a handler that blocks: 3 run (the channel reads no
    further meanwhile), none is dropped, and all 20 are answered once the handler unblocks."""
    running, most = 0, 0
    release = asyncio.Event()

    async def blocking(channel, method, header, segments):
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await release.wait()
        finally:
            running -= 1
        return Reply({"i": header["i"]})

    a, b = Identity.generate(), Identity.generate()
    server_a = ChannelServer(a, blocking, max_in_flight=3)
    server_b = ChannelServer(b, echo)
    try:
        addr_a = await server_a.listen("127.0.0.1", 0)
        calls = [
            asyncio.create_task(server_b.request(addr_a, a.public_key, "w", {"i": i}, timeout=20))
            for i in range(20)
        ]
        await wait_for(lambda: running == 3, 5, "3 requests running")
        await asyncio.sleep(0.3)  # the others stay queued, unread
        assert running == 3 and most == 3
        assert len(server_a.tasks) <= 3 + 2  # 3 answers, a reader, the accept loop
        release.set()
        replies = await asyncio.gather(*calls)
        assert sorted(header["i"] for header, _ in replies) == list(range(20))
        assert most == 3
    finally:
        await server_a.close()
        await server_b.close()


def _nested(depth: int) -> list:
    inner: list = []
    for _ in range(depth - 1):
        inner = [inner]
    return inner


def _request(h: object) -> bytes:
    return msgpack.packb({"t": "q", "id": 1, "m": "x", "h": h, "seg": []}, use_bin_type=True)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(_request({str(i): 0 for i in range(2000)}), id="a-map-of-2000-keys"),
        pytest.param(_request({"a": [0] * 10_000}), id="a-list-of-10000"),
        pytest.param(_request({"a": "x" * 70_000}), id="a-string-of-70000"),
        pytest.param(_request({"a": [[{}] * 8000] * 10}), id="80000-values"),
        pytest.param(_request({"a": [[[]] * 2] * 8200}), id="24600-lists"),
        pytest.param(_request({"a": _nested(15)}), id="17-levels-deep"),
        pytest.param(
            _request({"a": None}).replace(b"\xa1a\xc0", b"\xa1a" + b"\x91" * 2999 + b"\x90"),
            id="3000-levels-deep",  # over msgpack's own limit (its packer stops at 512)
        ),
        pytest.param(_request({"a": ["x" * 60_000] * 9}), id="over-MAX_HEADER-bytes"),
    ],
)
@run_async()
async def test_a_header_over_its_bounds_closes_the_channel_and_runs_nothing(head, caplog) -> None:
    """Headers that would decode into more than a header may hold (too many entries, values,
    lists, levels, or bytes) close the channel with a warning naming the peer; the handler
    never runs, and the peer's next channel works."""
    calls: list[str] = []

    async def handler(channel, method, header, segments):
        calls.append(method)
        return Reply({})

    a, b = Identity.generate(), Identity.generate()
    server_a = ChannelServer(a, handler)
    server_b = ChannelServer(b, echo)
    try:
        addr_a = await server_a.listen("127.0.0.1", 0)
        channel = await server_b.connect(addr_a, a.public_key)
        await channel._io.stream.send([memoryview(struct.pack("!I", len(head)) + head)])
        await wait_for(lambda: channel.closed, 5, "a to close the channel")
        assert calls == []
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(f"closing channel to {b.public_key.hex()[:16]}" in w for w in warnings)
        await server_b.request(addr_a, a.public_key, "ok", {"a": _nested(14)}, timeout=5)
        assert calls == ["ok"]
    finally:
        await server_a.close()
        await server_b.close()


def test_a_model_of_4096_arrays_is_described_within_the_header_bounds() -> None:
    """fl.wire's own limit: 4,096 arrays, keys of 80 bytes, 2-D shapes, in a g.model reply."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    zeros = np.zeros((2, 3), "float32")
    arrays = {f"model.layers.{i:04d}.".ljust(80, "w"): Array(zeros) for i in range(4096)}
    assert len(arrays) == _MAX_ARRAYS
    content = RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord({"lr": 0.1})})
    records, segments = encode_content(content)
    frame = {
        "t": "r",
        "id": 1,
        "h": {"round": 3, "digest": bytes(32), "content": records},
        "seg": [len(s) for s in segments],
    }
    head = msgpack.packb(frame, use_bin_type=True)
    assert len(head) <= MAX_HEADER
    assert decode_header(head) == msgpack.unpackb(head, raw=False)
