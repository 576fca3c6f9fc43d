"""What a source IP can make a channel server hold: pending handshakes, failures, channels.

Loopback sources 127.0.x.y stand for distinct hosts. Refusal is observed as the server closing
a connection at once (its handshake timeout is set far longer than the test waits)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from mycelium_p2p.addresses import Address
from mycelium_p2p.group.transport import ChannelError, ChannelServer, ConnectionLimits, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async, wait_for


async def echo(channel, method, header, segments):
    return Reply({"method": method})


@contextlib.asynccontextmanager
async def server(limits: ConnectionLimits) -> AsyncIterator[tuple[ChannelServer, Address]]:
    node = ChannelServer(Identity.generate(), echo, limits=limits)
    try:
        yield node, await node.listen("127.0.0.1", 0)
    finally:
        await node.close()


@contextlib.asynccontextmanager
async def silent(addr: Address, source: str) -> AsyncIterator[asyncio.StreamReader]:
    """A connection from ``source`` that sends nothing."""
    reader, writer = await asyncio.open_connection(*addr, local_addr=(source, 0))
    try:
        yield reader
    finally:
        writer.close()


async def refused(reader: asyncio.StreamReader) -> bool:
    """Did the server close this connection at once (within 2 s)?"""
    try:
        return await asyncio.wait_for(reader.read(), 2.0) == b""
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


async def dial(addr: Address, key: bytes) -> bool:
    dialler = ChannelServer(Identity.generate(), echo)
    try:
        header, _ = await dialler.request(addr, key, "hi", timeout=10)
        return header == {"method": "hi"}
    except ChannelError:
        return False
    finally:
        await dialler.close()


@run_async(90)
async def test_an_ip_holds_a_few_pending_handshakes_and_others_are_served() -> None:
    limits = ConnectionLimits(handshake_timeout=60, unproven_burst=4, unproven_per_s=0.01)
    async with server(limits) as (node, addr), contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(silent(addr, "127.0.9.1")) for _ in range(4)]
        await wait_for(lambda: node.admission.pending == 4, 10, "four pending handshakes")
        async with silent(addr, "127.0.9.1") as fifth:
            assert await refused(fifth)
        async with silent(addr, "127.0.9.2") as other_host:
            assert not await refused(other_host)  # another IP has its own budget
        assert await dial(addr, node.identity.public_key)  # and honest peers get through
        assert not any([await refused(r) for r in readers[:1]])
        assert node.admission.stats.refused_unproven == 1


@run_async(90)
async def test_failed_handshakes_are_paid_for_and_good_ones_given_back() -> None:
    limits = ConnectionLimits(handshake_timeout=0.3, unproven_burst=3, unproven_per_s=0.01)
    async with server(limits) as (node, addr):
        for _ in range(3):  # silent until the server gives up on them
            async with silent(addr, "127.0.9.1") as reader:
                assert await asyncio.wait_for(reader.read(), 10) == b""
        assert node.admission.pending == 0 and node.admission.stats.failed_handshakes == 3
        async with silent(addr, "127.0.9.1") as reader:
            assert await refused(reader)  # its failures are not forgiven yet
        for _ in range(20):  # 20 good handshakes from 127.0.0.1, one budget of 3
            assert await dial(addr, node.identity.public_key)
        await wait_for(lambda: node.admission.channels() == 0, 10, "channels to close")


@run_async(60)
async def test_handshake_input_is_small_and_time_limited() -> None:
    limits = ConnectionLimits(handshake_timeout=0.5)
    async with server(limits) as (node, addr):
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"\xff\xff")  # announces a 65,535-byte handshake message
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed on the length alone
        writer.close()
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"\x00\x20" + b"\x00" * 16)  # half a message, then nothing
        await writer.drain()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert loop.time() - start < 5  # the timeout, not the peer, ended it
        writer.close()
        await wait_for(lambda: node.admission.pending == 0, 5, "no handshake pending")
        assert node.admission.stats.failed_handshakes == 2


@run_async(90)
async def test_handshakes_pending_from_all_sources_are_bounded() -> None:
    limits = ConnectionLimits(handshake_timeout=60, max_handshakes=3)
    async with server(limits) as (node, addr), contextlib.AsyncExitStack() as stack:
        for i in range(3):
            await stack.enter_async_context(silent(addr, f"127.0.{10 + i}.1"))
        await wait_for(lambda: node.admission.pending == 3, 10, "three pending handshakes")
        async with silent(addr, "127.0.20.1") as reader:
            assert await refused(reader)
        assert node.admission.stats.refused_busy == 1


@run_async(90)
async def test_an_ip_holds_a_bounded_number_of_channels() -> None:
    limits = ConnectionLimits(channels_per_ip=3)
    async with server(limits) as (node, addr):
        key = node.identity.public_key
        peers = [ChannelServer(Identity.generate(), echo) for _ in range(4)]
        try:
            channels = [await p.connect(addr, key) for p in peers[:3]]
            await wait_for(lambda: node.admission.channels() == 3, 10, "three channels")
            fourth = await peers[3].connect(addr, key)  # authenticated, then dropped
            await wait_for(lambda: fourth.closed, 10, "the fourth channel to be closed")
            assert node.admission.stats.refused_channels == 1
            await channels[0].close()
            await wait_for(lambda: node.admission.channels() == 2, 10, "a channel to go")
            header, _ = await peers[3].request(addr, key, "again", timeout=10)
            assert header == {"method": "again"}
        finally:
            for p in peers:
                await p.close()


@run_async(180)
async def test_connect_disconnect_cycles_leave_nothing_behind() -> None:
    """600 cycles, a third completing the handshake, a third silent, a third garbage."""
    limits = ConnectionLimits(handshake_timeout=1.0, unproven_burst=1000, connects_burst=5000)
    async with server(limits) as (node, addr):
        key = node.identity.public_key
        dialler = ChannelServer(Identity.generate(), echo)
        idle_tasks = len(node.tasks)
        try:
            for i in range(600):
                if i % 3 == 0:
                    channel = await dialler.connect(addr, key)
                    await channel.close()
                else:
                    _reader, writer = await asyncio.open_connection(*addr)
                    if i % 3 == 2:
                        writer.write(b"\x00\x05hello")
                    writer.close()
        finally:
            await dialler.close()
        await wait_for(
            lambda: node.admission.pending == 0 and node.admission.channels() == 0,
            30,
            "every connection to be let go",
        )
        await wait_for(lambda: not node._channels, 10, "the channel table to empty")
        await wait_for(lambda: len(node.tasks) <= idle_tasks, 10, "tasks to finish")
