"""Channels on ``SimStreams``: the real handshake and frames over a simulated wire, in virtual
time, with latency, partitions and silent hosts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mycelium_p2p.errors import ChannelError
from mycelium_p2p.group.transport import Channel, ChannelServer, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing import SimNetwork, SimStreams, run


async def _echo(channel: Channel, method: str, header: dict[str, Any], segs: list[bytes]) -> Reply:
    return Reply({"echo": header.get("x")}, segs)


async def _pair(streams: SimStreams) -> tuple[ChannelServer, ChannelServer, tuple[str, int]]:
    a = ChannelServer(Identity.generate(), _echo, streams=streams.host())
    b = ChannelServer(Identity.generate(), _echo, streams=streams.host())
    await a.listen("0.0.0.0", 0)
    b_addr = await b.listen("0.0.0.0", 0)
    return a, b, b_addr


def test_a_request_crosses_the_wire_in_simulated_round_trips() -> None:
    async def main() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        streams = SimStreams(SimNetwork(seed=1, latency=0.05))
        a, b, b_addr = await _pair(streams)
        began = loop.time()
        header, segs = await a.request(
            b_addr, b.identity.public_key, "echo", {"x": 7}, [b"w" * 100_000], timeout=5
        )
        first = loop.time() - began
        assert header == {"echo": 7} and segs == [b"w" * 100_000]
        began = loop.time()
        await a.request(b_addr, b.identity.public_key, "echo", {"x": 8}, timeout=5)
        again = loop.time() - began
        channel = b.channel(a.identity.public_key)
        assert channel is not None and channel.peer_address[0] != b_addr[0]
        await a.close()
        await b.close()
        await streams.close()
        return first, again, streams.stats.connected

    first, again, connected = run(main())
    # a dial (1 round trip), Noise XX's first two messages (1), then the third with the
    # request right behind it, and the reply (1)
    assert first == pytest.approx(0.3, abs=0.011)
    assert again == pytest.approx(0.1, abs=0.011)  # the channel is kept: one round trip
    assert connected == 1


def test_a_partition_holds_bytes_and_a_heal_in_time_delivers_them() -> None:
    async def main() -> None:
        network = SimNetwork(seed=2, latency=0.01)
        streams = SimStreams(network, link_timeout=30)
        a, b, b_addr = await _pair(streams)
        key = b.identity.public_key
        await a.request(b_addr, key, "echo", {"x": 1}, timeout=5)
        network.partition([b_addr[0]])
        with pytest.raises(ChannelError, match="no reply"):
            await a.request(b_addr, key, "echo", {"x": 2}, timeout=3)
        # that silent request closed the channel; a new dial waits out the cut
        pending = asyncio.ensure_future(a.request(b_addr, key, "echo", {"x": 3}, timeout=20))
        await asyncio.sleep(10)
        assert not pending.done()
        network.heal()
        header, _ = await pending
        assert header == {"echo": 3}
        assert streams.stats.resets == 0
        await a.close()
        await b.close()
        await streams.close()

    run(main())


def test_a_silent_host_resets_its_connections_after_the_link_timeout() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        streams = SimStreams(SimNetwork(seed=3, latency=0.01), link_timeout=12)
        a, b, b_addr = await _pair(streams)
        await a.request(b_addr, b.identity.public_key, "echo", {}, timeout=5)
        channel = b.channel(a.identity.public_key)
        assert channel is not None
        streams.kill(b_addr[0])
        began = loop.time()
        # b keeps talking to a, which no longer hears it: b's bytes are held, then reset
        with pytest.raises(ChannelError):
            await channel.request("echo", {}, timeout=60)
        took = loop.time() - began
        assert streams.stats.resets == 1
        await a.close()
        await b.close()
        await streams.close()
        return took

    assert run(main()) == pytest.approx(12, abs=0.5)


def test_nothing_listening_is_refused_in_one_round_trip() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        streams = SimStreams(SimNetwork(seed=4, latency=0.02))
        a, b, b_addr = await _pair(streams)
        began = loop.time()
        with pytest.raises(ChannelError, match="cannot connect"):
            await a.request((b_addr[0], b_addr[1] + 1), b.identity.public_key, "x", timeout=5)
        took = loop.time() - began
        assert streams.stats.refused == 1
        await a.close()
        await b.close()
        await streams.close()
        return took

    assert run(main()) == pytest.approx(0.04, abs=0.005)
