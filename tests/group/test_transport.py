"""Authenticated channels: handshake, request/reply, limits, failures."""

from __future__ import annotations

import asyncio

import pytest

from mycelium_p2p.group.transport import ChannelError, ChannelServer, RemoteError, Reply
from mycelium_p2p.identity import Identity
from tests.conftest import run_async


async def echo(channel, method, header, segments):
    if method == "fail":
        return Reply.fail("nope", "asked to fail")
    if method == "boom":
        raise RuntimeError("handler bug")
    if method == "slow":
        await asyncio.sleep(5)
    return Reply({"method": method, "peer": channel.peer_key, **header}, segments[::-1])


async def pair(max_frame: int = 2**20):
    a, b = Identity.generate(), Identity.generate()
    server_a = ChannelServer(a, echo, max_frame=max_frame)
    server_b = ChannelServer(b, echo, max_frame=max_frame)
    addr_a = await server_a.listen("127.0.0.1", 0)
    await server_b.listen("127.0.0.1", 0)
    return a, b, server_a, server_b, addr_a


@run_async()
async def test_requests_carry_headers_and_raw_segments_both_ways() -> None:
    a, b, server_a, server_b, addr_a = await pair()
    try:
        header, segs = await server_b.request(
            addr_a, a.public_key, "hi", {"x": 1}, [b"one", memoryview(b"two")], timeout=5
        )
        assert header == {"method": "hi", "peer": b.public_key, "x": 1}
        assert segs == [b"two", b"one"]
        # a can now call b back over the same connection
        channel = server_a.channel(b.public_key)
        header, _ = await channel.request("back", timeout=5)
        assert header["peer"] == a.public_key
    finally:
        await server_a.close()
        await server_b.close()


@run_async()
async def test_errors_are_replies_not_broken_connections() -> None:
    a, _b, server_a, server_b, addr_a = await pair()
    try:
        with pytest.raises(RemoteError, match="nope"):
            await server_b.request(addr_a, a.public_key, "fail", timeout=5)
        with pytest.raises(RemoteError, match="internal"):
            await server_b.request(addr_a, a.public_key, "boom", timeout=5)
        with pytest.raises(ChannelError, match="no reply"):
            await server_b.request(addr_a, a.public_key, "slow", timeout=0.2)
        header, _ = await server_b.request(addr_a, a.public_key, "still-fine", timeout=5)
        assert header["method"] == "still-fine"
    finally:
        await server_a.close()
        await server_b.close()


@run_async()
async def test_a_peer_with_another_key_is_refused() -> None:
    _a, _b, server_a, server_b, addr_a = await pair()
    try:
        with pytest.raises(ChannelError, match="expected"):
            await server_b.request(addr_a, Identity.generate().public_key, "hi", timeout=5)
    finally:
        await server_a.close()
        await server_b.close()


@run_async()
async def test_oversized_frames_close_the_channel() -> None:
    a, _b, server_a, server_b, addr_a = await pair(max_frame=1000)
    try:
        with pytest.raises(ChannelError):
            await server_b.request(addr_a, a.public_key, "big", {}, [bytes(5000)], timeout=2)
    finally:
        await server_a.close()
        await server_b.close()


@run_async()
async def test_garbage_and_silent_clients_do_not_hurt_the_server() -> None:
    a, _b, server_a, server_b, addr_a = await pair()
    try:
        for junk in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x03abc", b"GET / HTTP/1.0\r\n\r\n"):
            _reader, writer = await asyncio.open_connection(*addr_a)
            writer.write(junk)
            await writer.drain()
            writer.close()
        header, _ = await server_b.request(addr_a, a.public_key, "ok", timeout=5)
        assert header["method"] == "ok"
    finally:
        await server_a.close()
        await server_b.close()


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
    a, _b, server_a, server_b, addr_a = await pair(max_frame=64 * 2**20)
    try:
        big = bytes(range(256)) * (12 * 2**12)  # 12 MiB: moved by the worker-thread path
        small = b"tail"
        _header, segs = await server_b.request(
            addr_a, a.public_key, "big", {}, [big, small], timeout=30
        )
        assert segs == [small, big]
        assert isinstance(segs[1], bytes) and hash(segs[1]) == hash(big)
    finally:
        await server_a.close()
        await server_b.close()


@run_async()
async def test_many_frames_of_every_size_in_flight_arrive_intact() -> None:
    """Frames share one read buffer: back-to-back frames, a segment split across reads, one
    bigger than the buffer, one for the worker thread, empty ones, all in flight at once."""
    a, _b, server_a, server_b, addr_a = await pair(max_frame=64 * 2**20)
    sizes = [0, 1, 3, 4096, 200_000, 300_000, 900_000, 2 * 2**20 + 7]
    try:

        async def one(i: int) -> None:
            segs = [bytes([i % 251]) * n + i.to_bytes(4, "big") for n in sizes[i % 4 :: 3]]
            header, back = await server_b.request(
                addr_a, a.public_key, "echo", {"i": i}, [*segs, b""], timeout=30
            )
            assert header["i"] == i
            assert back == [b"", *segs[::-1]]

        await asyncio.gather(*(one(i) for i in range(40)))
    finally:
        await server_a.close()
        await server_b.close()
